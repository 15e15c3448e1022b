"""Schemathesis for a fixed time against a real Bastion, every request signed.

    .venv/bin/python bench/fuzz.py [--minutes 10] [--examples 50] [--seed 0] [--fraud quiet|shipped]

The long run behind `make fuzz`; `tests/security/test_schemathesis.py` runs the same thing
bounded in `make test`.  A `bastion serve` over TLS on 127.0.0.1, initialised by its CLI in a
temporary home (rate limits and ban thresholds raised; the fraud stage's actions quiet unless
``--fraud shipped``), then round after round over every operation of its /openapi.json:
positive and negative cases from schemathesis, cases steered to existing symbols, orders and
ledger sizes, and arbitrary query values, each request signed by
``tests/security/signing_hook.py`` just before it is sent.  Checks: no 5xx, every status
documented, content type, headers and body as the schema says, schema-violating requests
refused, an unsigned copy of each operation's first success refused with 401.

Prints the summary (cases, requests, operations, every status and error code seen per
operation, the known undocumented statuses, failures with a curl reproduction) and exits 1 on
any 5xx or failure.  ``--strict`` also counts the known undocumented statuses
(``KNOWN_UNDOCUMENTED``) as failures.  The run is bounded by ``--minutes`` (a round in
progress finishes the operation it is on) and talks only to 127.0.0.1.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.security.signing_hook import KNOWN_UNDOCUMENTED, fuzz, running_target  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0, help="how long to fuzz (default 10)")
    parser.add_argument("--examples", type=int, default=50, help="cases per operation variant a round")
    parser.add_argument("--seed", type=int, default=0, help="hypothesis seed of the first round")
    parser.add_argument("--fraud", choices=("quiet", "shipped"), default="quiet")
    parser.add_argument("--strict", action="store_true", help="count known undocumented statuses too")
    args = parser.parse_args()
    started = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    with (
        tempfile.TemporaryDirectory(prefix="bastion-fuzz-") as home,
        running_target(Path(home), quiet_fraud=args.fraud == "quiet") as target,
    ):
        report = fuzz(
            target,
            seconds=args.minutes * 60,
            examples=args.examples,
            seed=args.seed,
            tolerate=frozenset() if args.strict else KNOWN_UNDOCUMENTED,
            log=lambda line: print(line, flush=True),
        )
    print(
        f"\nstarted {started}; --minutes {args.minutes} --examples {args.examples} --seed {args.seed} "
        f"--fraud {args.fraud}{' --strict' if args.strict else ''}"
    )
    print(report.summary())
    sys.exit(1 if report.failures or report.server_errors() else 0)


if __name__ == "__main__":
    main()
