"""The pure domain model: no I/O, no framework imports."""
