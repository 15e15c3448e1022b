"""Venue adapters: one package per venue; wire formats become domain types at this boundary."""
