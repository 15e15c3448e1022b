"""Restricting TLS key-exchange groups: the one place Bastion reaches below ``ssl``.

Python before 3.15 can only set a single ECDH curve on an ``SSLContext``.  Mozilla's
intermediate profile wants a list (X25519, prime256v1, secp384r1), so this module calls
OpenSSL's ``SSL_CTX_ctrl(SSL_CTRL_SET_GROUPS_LIST)`` on the context's own ``SSL_CTX``,
resolved through the ``_ssl`` extension module so it is the same OpenSSL build.  If that is
impossible (another interpreter, another layout) it falls back to the single curve X25519,
which is still inside the profile; :func:`set_groups` reports which one happened.
"""

from __future__ import annotations

import ctypes
import ssl

_SSL_CTRL_SET_GROUPS_LIST = 92


def _ssl_ctx_pointer(context: ssl.SSLContext) -> int | None:
    # CPython's PySSLContext is {PyObject_HEAD; SSL_CTX *ctx; ...}.
    pointer = ctypes.c_void_p.from_address(id(context) + object.__basicsize__).value
    return pointer or None


def set_groups(context: ssl.SSLContext, groups: str) -> bool:
    """Set the group list; True if the whole list applies, False if only X25519 was set."""
    try:
        import _ssl

        library = ctypes.CDLL(_ssl.__file__)
        ctrl = library.SSL_CTX_ctrl
        ctrl.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_long, ctypes.c_char_p]
        ctrl.restype = ctypes.c_long
        pointer = _ssl_ctx_pointer(context)
        if pointer is not None and ctrl(pointer, _SSL_CTRL_SET_GROUPS_LIST, 0, groups.encode()) == 1:
            return True
    except (OSError, AttributeError, ImportError):
        pass
    context.set_ecdh_curve("X25519")
    return False
