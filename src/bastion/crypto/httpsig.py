"""HTTP Message Signatures, RFC 9421 — signing and verifying requests.

https://www.rfc-editor.org/rfc/rfc9421

Implements, for requests only: the signature base (§2.5) over derived components
(§2.2: ``@method``, ``@authority``, ``@scheme``, ``@target-uri``, ``@request-target``,
``@path``, ``@query``) and HTTP fields (§2.1, without component parameters); the
``Signature-Input`` and ``Signature`` fields (§4); and the algorithms ``ed25519`` (§3.3.6)
and ``hmac-sha256`` (§3.3.3).  Response signatures and component parameters (``;sf``,
``;key``, ``;bs``, ``;req``, ``;name``) are refused.

Nothing here imports a web framework: callers pass a :class:`RequestView`.  Every failure
raises :class:`~bastion.errors.SignatureError` with an internal reason that must not be
shown to the caller.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from bastion.crypto import sfv
from bastion.crypto.digest import content_digest
from bastion.errors import SignatureError

ED25519 = "ed25519"
HMAC_SHA256 = "hmac-sha256"
DERIVED = frozenset({"@method", "@authority", "@scheme", "@target-uri", "@request-target", "@path", "@query"})
_MAX_COMPONENTS = 16
_NONCE_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.~+/=")


@dataclass(frozen=True, slots=True)
class RequestView:
    """The parts of a request a signature can cover.  ``headers`` maps lower-case names to
    the list of field lines received under that name."""

    method: str
    scheme: str
    authority: str
    path: str
    query: str
    headers: Mapping[str, Sequence[str]]


@dataclass(frozen=True, slots=True)
class ParsedSignature:
    label: str
    components: tuple[str, ...]
    params_text: str
    keyid: str
    created: int
    nonce: str
    alg: str | None
    expires: int | None
    signature: bytes


def _one_field(headers: Mapping[str, Sequence[str]], name: str) -> str:
    lines = headers.get(name, ())
    if not lines:
        raise SignatureError(f"missing {name} header")
    if len(lines) > 1:
        raise SignatureError(f"{name} header sent more than once")
    return lines[0]


def parse_signature(headers: Mapping[str, Sequence[str]]) -> ParsedSignature:
    """Parse exactly one signature from ``Signature-Input`` and ``Signature``."""
    try:
        inputs = sfv.parse_dictionary(_one_field(headers, "signature-input"))
        signatures = sfv.parse_dictionary(_one_field(headers, "signature"))
    except sfv.SFVError as exc:
        raise SignatureError(f"malformed signature field: {exc}") from None
    if len(inputs) != 1 or len(signatures) != 1:
        raise SignatureError("exactly one signature is accepted")
    label, spec = next(iter(inputs.items()))
    sig_member = signatures.get(label)
    if sig_member is None:
        raise SignatureError("Signature and Signature-Input labels differ")
    if not isinstance(spec, sfv.InnerList):
        raise SignatureError("Signature-Input member is not an inner list")
    if not isinstance(sig_member, sfv.Item) or not isinstance(sig_member.value, bytes):
        raise SignatureError("Signature member is not a byte sequence")
    components: list[str] = []
    for item in spec.items:
        if not isinstance(item.value, str) or isinstance(item.value, sfv.Token):
            raise SignatureError("component identifier is not a string")
        if item.params:
            raise SignatureError("component parameters are not supported")
        name = item.value
        if name != name.lower() or (name.startswith("@") and name not in DERIVED):
            raise SignatureError(f"unsupported component {name!r}")
        if name in components:
            raise SignatureError(f"component {name!r} covered twice")
        components.append(name)
    if len(components) > _MAX_COMPONENTS:
        raise SignatureError("too many covered components")
    params = spec.params
    keyid, created, nonce = params.get("keyid"), params.get("created"), params.get("nonce")
    alg, expires = params.get("alg"), params.get("expires")
    if not isinstance(keyid, str) or isinstance(keyid, bool):
        raise SignatureError("keyid parameter missing or not a string")
    if not isinstance(created, int) or isinstance(created, bool):
        raise SignatureError("created parameter missing or not an integer")
    if not isinstance(nonce, str) or not 16 <= len(nonce) <= 128 or not set(nonce) <= _NONCE_CHARS:
        raise SignatureError("nonce parameter missing or malformed")
    if alg is not None and not (isinstance(alg, str) and alg in (ED25519, HMAC_SHA256)):
        raise SignatureError("alg parameter not supported")
    if expires is not None and (not isinstance(expires, int) or isinstance(expires, bool)):
        raise SignatureError("expires parameter not an integer")
    return ParsedSignature(
        label=label,
        components=tuple(components),
        params_text=sfv.serialize_inner_list(spec),
        keyid=keyid,
        created=created,
        nonce=nonce,
        alg=alg,
        expires=expires,
        signature=sig_member.value,
    )


def _authority(view: RequestView) -> str:
    host = view.authority.lower()
    if view.scheme == "https" and host.endswith(":443"):
        host = host[:-4]
    elif view.scheme == "http" and host.endswith(":80"):
        host = host[:-3]
    return host


def _component_value(name: str, view: RequestView) -> str:
    if name == "@method":
        return view.method.upper()
    if name == "@authority":
        return _authority(view)
    if name == "@scheme":
        return view.scheme
    path = view.path or "/"
    if name == "@path":
        return path
    if name == "@query":
        return "?" + view.query
    if name == "@request-target":
        return path + ("?" + view.query if view.query else "")
    if name == "@target-uri":
        return f"{view.scheme}://{_authority(view)}{path}" + ("?" + view.query if view.query else "")
    lines = view.headers.get(name)
    if not lines:
        raise SignatureError(f"covered header {name!r} is absent")
    return ", ".join(line.strip() for line in lines)


def signature_base(components: Sequence[str], params_text: str, view: RequestView) -> bytes:
    """The signature base of RFC 9421 §2.5."""
    lines = []
    for name in components:
        value = _component_value(name, view)
        if "\n" in value or "\r" in value:
            raise SignatureError("component value contains a line break")
        lines.append(f'"{name}": {value}')
    lines.append(f'"@signature-params": {params_text}')
    try:
        return "\n".join(lines).encode("ascii")
    except UnicodeEncodeError:
        raise SignatureError("signature base is not ASCII") from None


def verify_ed25519(public_key: Ed25519PublicKey, base: bytes, signature: bytes) -> None:
    try:
        public_key.verify(signature, base)
    except InvalidSignature:
        raise SignatureError("signature does not verify") from None


def verify_hmac_sha256(secret: bytes, base: bytes, signature: bytes) -> None:
    expected = hmac.new(secret, base, hashlib.sha256).digest()
    if not hmac.compare_digest(expected, signature):
        raise SignatureError("signature does not verify")


def sign_request(
    *,
    private_key: Ed25519PrivateKey | None = None,
    hmac_secret: bytes | None = None,
    key_id: str,
    method: str,
    url_scheme: str,
    authority: str,
    path: str,
    query: str,
    body: bytes,
    created: int,
    nonce: str | None = None,
    label: str = "bastion",
) -> dict[str, str]:
    """Headers that sign a request with Ed25519 (``private_key``) or HMAC-SHA256
    (``hmac_secret``): ``Signature-Input``, ``Signature`` and, for a body, ``Content-Digest``."""
    sign: Callable[[bytes], bytes]
    if private_key is not None and hmac_secret is None:
        sign, alg = private_key.sign, ED25519
    elif hmac_secret is not None and private_key is None:
        secret = hmac_secret
        sign, alg = (lambda base: hmac.new(secret, base, hashlib.sha256).digest()), HMAC_SHA256
    else:
        raise ValueError("sign with exactly one of private_key or hmac_secret")
    headers: dict[str, str] = {}
    components = ["@method", "@target-uri"]
    if body:
        headers["content-digest"] = content_digest(body)
        components.append("content-digest")
    params: sfv.Params = {
        "created": created,
        "keyid": key_id,
        "nonce": nonce or secrets.token_urlsafe(24),
        "alg": alg,
    }
    inner = sfv.InnerList(tuple(sfv.Item(c, {}) for c in components), params)
    params_text = sfv.serialize_inner_list(inner)
    view = RequestView(
        method=method,
        scheme=url_scheme,
        authority=authority,
        path=path,
        query=query,
        headers={k: [v] for k, v in headers.items()},
    )
    base = signature_base(components, params_text, view)
    signature = sign(base)
    headers["signature-input"] = f"{label}={params_text}"
    headers["signature"] = f"{label}={sfv.serialize_bare_item(signature)}"
    return headers
