"""Schemathesis against a real Bastion, every request signed the way a bot signs it.

Cases are generated from the served ``/openapi.json`` with schemathesis's Python API
(``schemathesis.openapi.from_url``, ``APIOperation.as_strategy``, ``Case.call``,
``Case.validate_response``).  :class:`BastionSigner` is a ``requests`` auth hook: it runs on
the prepared request, after schemathesis has serialised the case, so it signs exactly the
method, target URI and body bytes that go on the wire (RFC 9421 with Bastion's own
``sign_request``, a fresh ``created`` and nonce, ``Content-Digest`` for a body).  Every
request therefore gets past authentication and replay protection and reaches the firewall,
the risk and fraud stages and the handlers.

Checks on every response: no 5xx (``not_a_server_error``), the status code is documented for
the operation, the content type, headers and body match the schema, and a case generated to
violate the schema is refused with a 4xx (``negative_data_rejection``).  Two of schemathesis's
checks are off, with what replaces them: ``positive_data_acceptance`` (a schema-valid order
for an unknown symbol, or one over a risk limit, is refused on purpose) and ``ignored_auth``
(it probes by removing the generated ``Signature`` header, which this hook puts back; instead
:func:`fuzz` sends, for each operation, its first successful case again unsigned and requires
``401``).

Used by ``tests/security/test_schemathesis.py`` (a bounded run in ``make test``) and
``bench/fuzz.py`` (``make fuzz``: the same run for a fixed time).
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Callable, Collection, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from decimal import ROUND_DOWN, ROUND_UP, Decimal
from pathlib import Path
from typing import Any, TypeAlias
from urllib.parse import urlsplit

import requests
import schemathesis
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import HealthCheck, Phase, Verbosity, given, settings
from hypothesis import seed as hypothesis_seed
from hypothesis import strategies as st
from requests.auth import AuthBase
from schemathesis import GenerationMode
from schemathesis.core.failures import FailureGroup
from schemathesis.core.result import Ok
from schemathesis.generation.case import Case as _Case
from schemathesis.schemas import APIOperation
from schemathesis.specs.openapi.checks import status_code_conformance

from bastion.crypto.httpsig import sign_request
from bastion.crypto.keys import load_ed25519_private
from bastion.schema import ROUTES
from tests.e2e.conftest import Gateway, Key, _configure, cli, cli_json, free_port, raise_limits, serve, stop

Operation: TypeAlias = APIOperation[Any, Any, Any, Any]
Case: TypeAlias = _Case[Operation]
SYMBOLS = ("BTC-USD", "EUR-USD", "GOOG")
_SIGNATURE_HEADERS = ("signature", "signature-input", "content-digest")


class BastionSigner(AuthBase):
    """Signs a prepared request with an Ed25519 Bastion key, as the SDK does."""

    def __init__(self, key_id: str, private_key: Ed25519PrivateKey) -> None:
        self.key_id = key_id
        self.private_key = private_key
        self.signed = 0

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        url = urlsplit(request.url or "")
        body = request.body
        if body is None:
            raw = b""
        elif isinstance(body, bytes):
            raw = body
        elif isinstance(body, str):
            raw = body.encode()
        else:  # a stream: schemathesis sends JSON bodies as bytes, so this never happens
            raise TypeError(f"cannot sign a streamed body ({type(body).__name__})")
        for name in _SIGNATURE_HEADERS:  # e.g. a `Signature` value generated from the apiKey scheme
            request.headers.pop(name, None)
        request.headers.update(
            sign_request(
                private_key=self.private_key,
                key_id=self.key_id,
                method=request.method or "GET",
                url_scheme=url.scheme,
                authority=url.netloc,
                path=url.path or "/",
                query=url.query,
                body=raw,
                created=int(time.time()),
            )
        )
        self.signed += 1
        return request


# -- the server under test ---------------------------------------------------------------------
@dataclass
class FuzzTarget:
    gateway: Gateway
    signer: BastionSigner  # alice's key (read, trade, cancel)
    markets: dict[str, dict[str, str]]  # symbol: tick_size, lot_size, min_notional, bid
    order_ids: list[str]  # alice's orders: get and cancel cases steered to them reach an order
    foreign_order_ids: list[str]  # bob's: for alice they must be answered exactly like missing ones


def start_target(home: Path, *, quiet_fraud: bool = True) -> FuzzTarget:
    """`bastion serve` on 127.0.0.1, set up by its own CLI in ``home``, with a few orders.

    Rate limits are raised (a fuzzer sends hundreds of requests a second from one address),
    and so are the ban thresholds.  With ``quiet_fraud`` (the default) the fraud stage's
    actions only record, as on the shared e2e server: as shipped, its probing rule halts a key
    whose requests are refused again and again, which is what a fuzzer's are, and after that
    every order is refused before a handler sees it.  ``quiet_fraud=False`` runs it as shipped
    (holds are ``403 STEP_UP_REQUIRED``, denials ``403 SUSPICIOUS_ACTIVITY``, a halted key's
    orders ``422 RISK_REJECTED``)."""
    cli(home, "init")
    port = free_port()
    _configure(home, port, quiet_fraud=quiet_fraud)
    config = home / "bastion.toml"
    config.write_text(raise_limits(config.read_text()))
    keys: dict[str, Key] = {}
    for account in ("alice", "bob"):
        cli(home, "accounts", "create", account)
        data = cli_json(
            home, "keys", "create", "--account", account, "--scopes", "read,trade,cancel", "--generate"
        )
        keys[account] = Key(data["key_id"], Path(data["private_key_path"]))
    gateway = serve(home, port, keys)
    try:
        markets: dict[str, dict[str, str]] = {}
        for market in gateway.call("alice", "GET", "/v1/markets").body["markets"]:
            ticker = gateway.call("alice", "GET", f"/v1/markets/{market['symbol']}/ticker").body
            markets[market["symbol"]] = {**market, "bid": ticker["bid"]}
        target = FuzzTarget(
            gateway,
            _signer(keys["alice"]),
            markets,
            _seed_orders(gateway, "alice", markets),
            _seed_orders(gateway, "bob", markets),
        )
    except BaseException:
        stop(gateway)
        raise
    return target


def _signer(key: Key) -> BastionSigner:
    if key.private_key_path is None:
        raise ValueError("an Ed25519 key is needed")
    return BastionSigner(key.key_id, load_ed25519_private(key.private_key_path.read_bytes()))


def _seed_orders(gateway: Gateway, who: str, markets: dict[str, dict[str, str]]) -> list[str]:
    """A resting buy on each market at about a tenth of the bid (it never fills), twice the
    minimum notional: orders for get and cancel cases to find."""
    ids: list[str] = []
    for n, symbol in enumerate(SYMBOLS):
        tick, lot = Decimal(markets[symbol]["tick_size"]), Decimal(markets[symbol]["lot_size"])
        price = max(tick, (Decimal(markets[symbol]["bid"]) / 10 / tick).to_integral_value(ROUND_DOWN) * tick)
        lots = (2 * Decimal(markets[symbol]["min_notional"]) / price / lot).to_integral_value(ROUND_UP)
        body = {
            "client_order_id": f"seed-{who}-{n}",
            "symbol": symbol,
            "side": "buy",
            "type": "limit",
            "quantity": format(max(lot, lots * lot), "f"),
            "price": format(price, "f"),
            "label": "fuzz seed",
        }
        placed = gateway.call(who, "POST", "/v1/orders", body)
        if placed.status == 201:  # as shipped, the fraud stage may hold a new key's first orders
            ids.append(placed.body["id"])
    return ids or ["ord_" + "0" * 24]


@contextmanager
def running_target(home: Path, *, quiet_fraud: bool = True) -> Iterator[FuzzTarget]:
    target = start_target(home, quiet_fraud=quiet_fraud)
    try:
        yield target
    finally:
        stop(target.gateway)


# -- the run ----------------------------------------------------------------------------------
@dataclass
class Failure:
    operation: str
    mode: str
    kind: str  # e.g. "ST103 Undocumented status code (200)": the same kind in later rounds is counted
    message: str  # the first occurrence's, with schemathesis's curl reproduction
    count: int = 1


@dataclass
class Report:
    cases: int = 0  # generated cases, each sent once (shrinking a failure sends more)
    requests: int = 0  # every request sent, unsigned probes included
    statuses: Counter[tuple[str, int]] = field(default_factory=Counter)
    failures: list[Failure] = field(default_factory=list)
    operations: set[str] = field(default_factory=set)
    codes: Counter[tuple[str, int, str]] = field(default_factory=Counter)  # refusals by error code
    tolerated: Counter[tuple[str, int]] = field(default_factory=Counter)  # known undocumented statuses
    unsigned_probes: dict[str, int] = field(default_factory=dict)  # operation: status of the unsigned copy
    rounds: int = 0
    seconds: float = 0.0

    def server_errors(self) -> int:
        return sum(n for (_, status), n in self.statuses.items() if status >= 500)

    def summary(self) -> str:
        lines = [
            f"schemathesis {schemathesis.__version__}: {self.cases} cases, {self.requests} requests, "
            f"{len(self.operations)} operations, {self.rounds} rounds in {self.seconds:.0f} s",
            f"5xx responses: {self.server_errors()}; failures: {len(self.failures)}",
            "| operation | status | responses | refusals by code |",
            "|---|---|---|---|",
        ]
        for (operation, status), n in sorted(self.statuses.items()):
            codes = sorted((c, k) for (o, s, c), k in self.codes.items() if (o, s) == (operation, status))
            lines.append(f"| {operation} | {status} | {n} | {', '.join(f'{c} {k}' for c, k in codes)} |")
        for operation, status in sorted(self.unsigned_probes.items()):
            lines.append(f"unsigned copy of a successful {operation}: {status}")
        for (operation, status), n in sorted(self.tolerated.items()):
            lines.append(f"known finding, tolerated: {operation} answered {status} (undocumented) {n} times")
        for failure in self.failures:
            lines.append(
                f"FAILURE {failure.operation}, {failure.mode} cases, in {failure.count} rounds: "
                f"{failure.kind}\n{failure.message}"
            )
        return "\n".join(lines)


CONFIG: dict[str, Any] = {
    # The Signature header is the signer's: generating it (or dropping it as a "negative" case)
    # would only test that the hook puts it back.
    "generation": {"with-security-parameters": False},
    "checks": {
        "not_a_server_error": {"enabled": True},
        "status_code_conformance": {"enabled": True},
        "content_type_conformance": {"enabled": True},
        "response_headers_conformance": {"enabled": True},
        "response_schema_conformance": {"enabled": True},
        # Refusing a schema-violating request as too large (a body, a URL, the headers) is a
        # refusal too; schemathesis's default list lacks those three.
        "negative_data_rejection": {
            "enabled": True,
            "expected-statuses": [
                *("400", "401", "403", "404", "405", "406", "409", "413", "414", "415", "422", "428"),
                *("429", "431", "5xx"),  # a 5xx is not_a_server_error's to report
            ],
        },
        "positive_data_acceptance": {"enabled": False},
        "ignored_auth": {"enabled": False},
    },
}


def load_schema(target: FuzzTarget) -> schemathesis.BaseSchema:
    gateway = target.gateway
    config = schemathesis.Config.from_dict(
        {**CONFIG, "base-url": gateway.url, "tls-verify": str(gateway.cert), "request-timeout": 30}
    )
    return schemathesis.openapi.from_url(
        gateway.url + "/openapi.json", config=config, verify=str(gateway.cert)
    )


# Undocumented statuses that the fuzzer finds, reported (docs/security-testing.md) and not
# yet fixed in the document: tolerated by the status-code check only, and counted apart.
# Statuses the document did not list, tolerated (and counted) while they were open findings;
# all documented now (the ledger's 404s, and 414 on every operation).
KNOWN_UNDOCUMENTED: frozenset[tuple[str, int]] = frozenset()

_QUERY_JUNK = st.one_of(
    st.sampled_from(["", "0", "1", "-1", "500", "501", "1e3", "0x10", " 1", "1.0", "١", "null", "true"]),
    st.sampled_from(
        ["open", "closed", "all", "OPEN", "GOOG", "BTC-USD", "%00", "' OR 1=1--", "\u0000", "\n"]
    ),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.text(max_size=24),
)


def _query_fields(operation_id: object) -> list[str]:
    for route in ROUTES:
        if route.name == operation_id and route.query is not None:
            return list(route.query.__struct_fields__)
    return []


def _variants(target: FuzzTarget, operation: Operation) -> list[tuple[str, st.SearchStrategy[Case]]]:
    """Strategies for one operation.

    - ``positive`` and ``negative``: schemathesis's own, from the document (negative only where
      the operation has parameters or a body: else there is nothing to get wrong);
    - ``steered``: positive cases pointed at things that exist (real symbols, alice's and bob's
      order ids, small ledger indexes and tree sizes, well-formed orders on each market's tick
      and lot), so that the handlers past the lookups are reached too, not only the refusals
      of unknown names;
    - ``query``: for routes that take a query, arbitrary values (and unknown names) for its
      fields: the served document lists no query parameters (a finding, see
      docs/security-testing.md), so schemathesis alone never sends any;
    - ``re-search``: orders whose pattern-constrained strings are drawn by ``st.from_regex``
      from the document's own patterns (see :func:`_body_patterns`).
    """
    positive = operation.as_strategy(generation_mode=GenerationMode.POSITIVE)
    out: list[tuple[str, st.SearchStrategy[Case]]] = [("positive", positive)]
    raw = operation.definition.raw
    if raw.get("parameters") or raw.get("requestBody"):
        out.append(("negative", operation.as_strategy(generation_mode=GenerationMode.NEGATIVE)))
    name = raw.get("operationId")
    symbols = st.sampled_from(SYMBOLS)
    # Tree sizes that exist and, now and then, ones that do not (yet).
    small = st.integers(min_value=1, max_value=64) | st.integers(min_value=1, max_value=2**62)
    steered: st.SearchStrategy[Case] | None = None
    if name in ("get_order", "cancel_order"):
        ids = st.sampled_from(target.order_ids + target.foreign_order_ids)
        steered = st.builds(_with, positive, st.just("path_parameters"), st.fixed_dictionaries({"id": ids}))
    elif name == "get_ticker":
        steered = st.builds(
            _with, positive, st.just("path_parameters"), st.fixed_dictionaries({"symbol": symbols})
        )
    elif name == "list_orders":
        query = st.fixed_dictionaries(
            {},
            optional={
                "symbol": symbols,
                "status": st.sampled_from(["open", "closed", "all"]),
                "limit": st.integers(min_value=1, max_value=500),
            },
        )
        steered = st.builds(_with, positive, st.just("query"), query)
    elif name == "place_order":
        steered = st.builds(_with, positive, st.just("body"), _orders(target))
    elif name == "ledger_proof":
        steered = st.builds(_proof, positive, small, small)
    elif name == "ledger_consistency":
        steered = st.builds(_consistency, positive, small, small)
    if steered is not None:
        out.append(("steered", steered))
    fields = _query_fields(name)
    if fields:
        junk = st.dictionaries(st.sampled_from([*fields, "extra"]), _QUERY_JUNK, max_size=4)
        out.append(("query", st.builds(_with, positive, st.just("query"), junk)))
    patterns = _body_patterns(operation)
    if patterns and name == "place_order":
        edges = st.fixed_dictionaries({}, optional={k: st.from_regex(v) for k, v in patterns.items()})
        base = steered if steered is not None else positive
        out.append(("re-search", st.builds(_with, base, st.just("body"), edges)))
    return out


def _body_patterns(operation: Operation) -> dict[str, str]:
    """The body's string properties that carry a ``pattern`` in the served document.

    ``st.from_regex(pattern)`` draws strings that Python's ``re.search`` accepts, which for an
    anchored ``^...$`` includes a final newline.  JSON Schema patterns are ECMA-262, where
    ``$`` never matches before a final newline, so by the document these strings are invalid
    and must be refused with a 4xx; a validator built on Python's ``re`` lets them through to
    whatever comes after it."""
    content = operation.definition.raw.get("requestBody", {}).get("content", {})
    ref = content.get("application/json", {}).get("schema", {}).get("$ref", "")
    components = operation.schema.raw_schema.get("components", {}).get("schemas", {})
    body = components.get(ref.rsplit("/", 1)[-1], {})
    out: dict[str, str] = {}
    for name, prop in body.get("properties", {}).items():
        for candidate in [prop, *prop.get("anyOf", [])]:
            if isinstance(candidate.get("pattern"), str):
                out[name] = candidate["pattern"]
    return out


def _orders(target: FuzzTarget) -> st.SearchStrategy[dict[str, object]]:
    """Well-formed orders on the paper markets: lot multiples, limit prices on the tick around
    the bid, every time in force, client order ids that sometimes repeat (idempotent retries
    and conflicts)."""

    @st.composite
    def order(draw: st.DrawFn) -> dict[str, object]:
        symbol = draw(st.sampled_from(SYMBOLS))
        rules = target.markets[symbol]
        lot, tick, bid = (Decimal(rules[k]) for k in ("lot_size", "tick_size", "bid"))
        body: dict[str, object] = {
            "client_order_id": draw(
                st.sampled_from(["fz-a", "fz-b"]) | st.from_regex(r"fz-[a-z0-9]{1,20}", fullmatch=True)
            ),
            "symbol": symbol,
            "side": draw(st.sampled_from(["buy", "sell"])),
            "type": draw(st.sampled_from(["market", "limit"])),
            "quantity": format(lot * draw(st.integers(1, 50) | st.integers(1, 5000)), "f"),
        }
        if body["type"] == "limit":
            ticks = (
                bid * Decimal(draw(st.integers(min_value=50, max_value=150))) / 100 / tick
            ).to_integral_value()
            body["price"] = format(max(tick, ticks * tick), "f")
        tif = draw(st.sampled_from([None, "gtc", "ioc", "fok"]))
        if tif is not None:
            body["time_in_force"] = tif
        if draw(st.booleans()):
            body["label"] = draw(st.sampled_from(["fuzz", "mean-reversion v2", "grid:BTC"]))
        return body

    return order()


def _with(case: Case, part: str, values: dict[str, object]) -> Case:
    """The case with ``values`` merged into its path parameters, query or body."""
    current = getattr(case, part)
    setattr(case, part, {**(current if isinstance(current, dict) else {}), **values})
    return case


def _proof(case: Case, size: int, extra: int) -> Case:
    return _with(
        _with(case, "path_parameters", {"index": str(size - 1)}), "query", {"tree_size": size + extra}
    )


def _consistency(case: Case, a: int, b: int) -> Case:
    return _with(case, "query", {"first": min(a, b), "second": max(a, b)})


def fuzz(
    target: FuzzTarget,
    *,
    seconds: float = 0.0,
    examples: int = 10,
    seed: int = 0,
    tolerate: frozenset[tuple[str, int]] = frozenset(),
    modes: Collection[str] | None = None,
    operations: Collection[str] | None = None,
    log: Callable[[str], None] | None = None,
) -> Report:
    """Every operation in turn, ``examples`` cases of each of its variants a round; rounds go
    on while ``seconds`` have not passed, and there is always one (every operation covered).
    Round r runs with hypothesis seed ``seed + r``: a run is reproducible up to the server's
    own state (time, replayed prices, the orders it holds).

    ``tolerate`` lists (operation, status) pairs known to be undocumented (reported findings;
    operation ``"*"``: any):
    their responses are counted apart and still get every other check.  ``modes`` (of
    :func:`_variants`) and ``operations`` (labels such as ``"POST /v1/orders"``) narrow the run."""
    run = _Fuzzer(target, load_schema(target), examples, tolerate)
    started = time.monotonic()
    deadline = started + seconds
    try:
        while run.report.rounds == 0 or time.monotonic() < deadline:
            for operation in run.operations:
                if operations is not None and operation.label not in operations:
                    continue
                # Rebuilt each round: the ids of orders placed since are steered to as well.
                for mode, strategy in _variants(target, operation):
                    if modes is None or mode in modes:
                        run.variant(operation, mode, strategy, seed + run.report.rounds)
                if run.report.rounds and time.monotonic() >= deadline:
                    break
            run.report.rounds += 1
            if log is not None:
                report = run.report
                log(
                    f"round {report.rounds}: {report.cases} cases, {report.server_errors()} 5xx, "
                    f"{len(report.failures)} failures, {time.monotonic() - started:.0f} s"
                )
    finally:
        run.session.close()
        run.report.seconds = time.monotonic() - started
    return run.report


_MAX_IDS = 200


def _kind(exc: BaseException) -> str:
    if isinstance(exc, FailureGroup):
        parts = []
        for failure in exc.exceptions:
            status = getattr(failure, "status_code", None)
            parts.append(f"{failure.code} {failure.title}" + ("" if status is None else f" ({status})"))
        return "; ".join(sorted(parts))
    return f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"


def _error_code(content: bytes) -> str:
    try:
        error = json.loads(content)["error"]
        return str(error["code"]) + (f" ({error['reason']})" if error.get("reason") else "")
    except (ValueError, KeyError, TypeError):
        return "?"


class _Fuzzer:
    def __init__(
        self,
        target: FuzzTarget,
        schema: schemathesis.BaseSchema,
        examples: int,
        tolerate: frozenset[tuple[str, int]],
    ) -> None:
        self.target = target
        self.cert = str(target.gateway.cert)
        self.examples = examples
        self.tolerate = tolerate
        self.operations = [r.ok() for r in schema.get_all_operations() if isinstance(r, Ok)]
        self.session = requests.Session()
        self.report = Report()

    def variant(self, operation: Operation, mode: str, strategy: st.SearchStrategy[Case], seed: int) -> None:
        label = operation.label
        self.report.operations.add(label)
        test = settings(
            max_examples=self.examples,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
            phases=[Phase.generate, Phase.shrink],
            verbosity=Verbosity.quiet,
            report_multiple_bugs=False,
        )(given(strategy)(lambda case: self.one(operation, case)))
        try:
            hypothesis_seed(seed)(test)()
        except (Exception, BaseExceptionGroup) as exc:  # a check's FailureGroup, or the transport's error
            kind = _kind(exc)
            for failure in self.report.failures:
                if (failure.operation, failure.mode, failure.kind) == (label, mode, kind):
                    failure.count += 1
                    return
            message = str(exc).strip() or type(exc).__name__
            self.report.failures.append(Failure(label, mode, kind, message[:4000]))

    def one(self, operation: Operation, case: Case) -> None:
        report, label = self.report, operation.label
        report.cases += 1
        report.requests += 1
        response = case.call(session=self.session, auth=self.target.signer, verify=self.cert, timeout=30)
        status = response.status_code
        report.statuses[(label, status)] += 1
        if status >= 400:
            report.codes[(label, status, _error_code(response.content))] += 1
        excluded = []
        if {(label, status), ("*", status)} & self.tolerate:  # known to be undocumented: the rest still runs
            report.tolerated[(label, status)] += 1
            excluded.append(status_code_conformance)
        case.validate_response(
            response,
            excluded_checks=excluded,
            transport_kwargs={"auth": self.target.signer, "verify": self.cert},
        )
        if label == "POST /v1/orders" and status in (200, 201):
            self.target.order_ids.append(json.loads(response.content)["id"])
            del self.target.order_ids[:-_MAX_IDS]
        protected = bool(operation.definition.raw.get("security"))
        if protected and 200 <= status < 300 and label not in report.unsigned_probes:
            report.requests += 1
            unsigned = case.call(session=self.session, verify=self.cert, timeout=30)
            report.unsigned_probes[label] = unsigned.status_code
            if unsigned.status_code != 401:
                raise AssertionError(f"{label} answered {unsigned.status_code} to an unsigned copy")
