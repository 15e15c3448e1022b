"""Request signing recipes and key formats.

Safe recipes live in ``httpsig`` (sign and verify a request), ``digest`` and ``keys``.
The only module that reaches below the standard library's safe API is ``_tls_groups``.
"""
