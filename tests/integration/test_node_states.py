"""Nodes change state through one writer, by one table (issue 11), on SQLite and PostgreSQL."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import select

from corral.backends.registry import create_backends
from corral.core.errors import Conflict
from corral.core.states import NODE_TRANSITIONS, NodeState, node_sources
from corral.server.services import clusters
from corral.server.services.workspaces import ensure_defaults
from corral.store.db import Database
from corral.store.tables import NodeRow
from corral.store.transitions import transition_node, transition_nodes_each


def test_the_table_lets_every_state_but_leaving_go_somewhere() -> None:
    assert NODE_TRANSITIONS[NodeState.LEAVING] == frozenset()
    assert node_sources(NodeState.RUNNING) == {NodeState.IDLE}  # only an idle node takes a job
    assert NodeState.LEAVING not in node_sources(NodeState.IDLE)  # a leaving node never comes back
    assert all(NodeState.LEAVING in targets for s, targets in NODE_TRANSITIONS.items() if s != NodeState.LEAVING)


def test_moves_are_checked_and_compare_and_set(database: str, tmp_path: Path) -> None:
    db = Database(database)
    db.migrate()
    backends = create_backends(home=tmp_path, code_dir=tmp_path / "code")
    try:
        with db.write() as session:
            ensure_defaults(session)
            clusters.create_cluster(
                session, workspace="default", spec_data={"name": "c", "scale": {"nodes": 3}}, max_nodes=10,
                provider=backends.nodes,
            )  # fmt: skip
        with db.write() as session:
            a, b, c = session.scalars(select(NodeRow).order_by(NodeRow.index)).all()
            assert {a.state, b.state, c.state} == {NodeState.IDLE}
            # Two placements race for node a: the second finds it running and moves nothing.
            rows = [{"id": a.id, "job_id": None}, {"id": b.id, "job_id": None}]
            assert transition_nodes_each(session, NodeState.RUNNING, rows, only_from=[NodeState.IDLE]) == 2
            assert transition_nodes_each(session, NodeState.RUNNING, rows[:1], only_from=[NodeState.IDLE]) == 0
            freed = [{"id": a.id, "job_id": None}, {"id": c.id, "job_id": None}]
            moved = transition_nodes_each(session, NodeState.IDLE, freed, only_from=[NodeState.RUNNING])
            assert moved == 1  # a was running; c was idle already
            transition_node(c, NodeState.LEAVING)
            with pytest.raises(Conflict, match="node 'node-2' is leaving; it cannot become idle"):
                transition_node(c, NodeState.IDLE)
            with pytest.raises(ValueError, match="cannot become running from"):
                transition_nodes_each(session, NodeState.RUNNING, rows[:1], only_from=[NodeState.UNUSABLE])
        with db.read() as session:
            states = dict(session.execute(select(NodeRow.name, NodeRow.state)).all())
        assert states == {"node-0": "idle", "node-1": "running", "node-2": "leaving"}
    finally:
        backends.close()
        db.dispose()
