"""Every migration upgrades and downgrades, on SQLite and PostgreSQL, and head matches the tables."""

from __future__ import annotations

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect

from corral.store.db import Database, alembic_config
from corral.store.tables import Base


def test_upgrade_downgrade_and_head_matches_models(database: str) -> None:
    db = Database(database)
    try:
        db.migrate()
        with db.write_engine.connect() as conn:
            diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
            assert diff == [], diff
            assert {"jobs", "attempts", "job_events", "nodes", "clusters"} <= set(inspect(conn).get_table_names())
            cfg = alembic_config()
            cfg.attributes["connection"] = conn
            command.downgrade(cfg, "base")
            conn.commit()
            assert set(inspect(conn).get_table_names()) <= {"alembic_version"}
        db.migrate()
        db.migrate()  # idempotent
    finally:
        db.dispose()
