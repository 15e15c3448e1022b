"""The request pipeline: ordered single-purpose stages (ARCHITECTURE §2); order in ``chain``."""
