"""State: SQLAlchemy tables, sessions, Alembic migrations (SQLite by default, PostgreSQL)."""
