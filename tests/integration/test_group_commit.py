"""The group commit of submissions (``services.submission.GroupCommit``) on a real database: the submissions that
wait while a transaction holds the database go in together, each request stays all or none, and a name taken
refuses only the request that gave it."""

from __future__ import annotations

import threading
from concurrent.futures import Future
from pathlib import Path

import pytest
from sqlalchemy import func, select

from corral.backends.registry import create_backends
from corral.core.errors import AlreadyExists
from corral.core.models import JobCreate
from corral.server.services import clusters, submission
from corral.server.services.lookup import NameCache
from corral.server.services.submission import GroupCommit, Stored
from corral.server.services.workspaces import ensure_defaults
from corral.server.settings import get_settings
from corral.store.db import Database
from corral.store.tables import JobEventRow, JobRow
from tests.conftest import until


def test_waiting_submissions_are_stored_together_and_refused_alone(database: str, tmp_path: Path) -> None:
    db = Database(database)
    db.migrate()
    backends = create_backends(home=tmp_path, code_dir=tmp_path / "code")
    names = NameCache()
    settings = get_settings(home=tmp_path, max_env_bytes=1 << 16)
    with db.write() as session:
        ensure_defaults(session)
        clusters.create_cluster(session, workspace="default", spec_data={"name": "c", "scale": {"nodes": 1}},
                                max_nodes=4, provider=backends.nodes)  # fmt: skip
    commits: list[list[str]] = []
    gate = threading.Event()  # closed: the writer waits after its commit, and the next submissions queue

    def stored_then_wait(made: list[Stored]) -> None:
        commits.append([job.name for job, _ in made])
        assert gate.wait(30)

    writer = GroupCommit(db, names, stored_then_wait)
    writer.start()

    def checked(*job_names: str, experiment: str = "e") -> list[submission.Submission]:
        spec = {"cluster": "c", "custom": {"command": "true"}}
        requests = [JobCreate(spec=spec, name=name, experiment=experiment) for name in job_names]
        return [
            submission.check(db, names, workspace="default", submitted_by="test", settings=settings, request=r)
            for r in requests
        ]

    try:
        # The writer stores the first request alone, and waits at the gate; the others queue meanwhile.
        futures: list[Future[list[Stored]]] = [writer.submit(checked("a"))]
        until(lambda: commits == [["a"]])
        futures += [writer.submit(checked("b", "c")), writer.submit(checked("d")),
                    writer.submit(checked("x", experiment="new"))]  # fmt: skip
        gate.set()
        stored = [f.result(timeout=30) for f in futures]
        assert [[job.name for job, _ in made] for made in stored] == [["a"], ["b", "c"], ["d"], ["x"]]
        assert commits == [["a"], ["b", "c", "d", "x"]]  # three requests in one transaction
        assert all(queued is not None and queued.job_id > 0 for made in stored for _, queued in made)
        assert stored[3][0][0].experiment == "new"  # an experiment made by the group's own transaction

        # A name taken in a group: that request alone is refused, whole; the others are stored.
        commits.clear()
        gate.clear()
        first = writer.submit(checked("f"))
        until(lambda: commits == [["f"]])
        later = [writer.submit(checked("g", "b")), writer.submit(checked("h")), writer.submit(checked("i", "i2"))]
        gate.set()
        assert [j.name for j, _ in first.result(timeout=30)] == ["f"]
        with pytest.raises(AlreadyExists, match="'b'"):
            later[0].result(timeout=30)
        assert [[j.name for j, _ in f.result(timeout=30)] for f in later[1:]] == [["h"], ["i", "i2"]]
        assert commits == [["f"], ["h"], ["i", "i2"]]  # the group failed, then each request alone
        with db.read() as session:
            stored_names = set(session.scalars(select(JobRow.name)))
            events = session.scalar(select(func.count()).select_from(JobEventRow))
        assert stored_names == {"a", "b", "c", "d", "x", "f", "h", "i", "i2"}  # no "g": its request was refused
        assert events == len(stored_names)  # each job's first event: queued
    finally:
        gate.set()
        writer.stop()
        # Once stopped, a submission is stored by its caller.
        assert [j.name for j, _ in writer.submit(checked("late")).result(timeout=0)] == ["late"]
        backends.close()
        db.dispose()
