"""SQLAlchemy tables and repositories.  Portable SQL only: SQLite by default, PostgreSQL later."""
