"""The OWASP API Security Top 10 (2023) suite: attacks against a real Bastion on loopback."""
