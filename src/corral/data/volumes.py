"""Which volume a job's input names, and what a node needs to stage it in (the store, with its credentials)."""

from __future__ import annotations

import posixpath
from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from corral.core.errors import InvalidSpec
from corral.core.specs import InputSpec, JobSpec, MountSpec, OutputSpec, store_location
from corral.data.stores import store_for
from corral.store.tables import VolumeRow

#: The volume kind each URL scheme names.
SCHEME_KINDS = {"s3": "s3", "az": "azureblob"}


class VolumeNotFound(LookupError):
    """An input, output or mount names a volume the workspace lacks (``loc``: the spec's field)."""

    def __init__(self, loc: str, message: str) -> None:
        super().__init__(f"{loc}: {message}")
        self.loc = loc

    def invalid_spec(self, source: str) -> InvalidSpec:
        """The error a submission (``source``: ``job``, ``cluster``) gets, naming the field."""
        return InvalidSpec(f"{source}: {self}", details=[{"loc": self.loc, "message": str(self)}])


def volume_rows(session: Session, workspace_ids: Iterable[int]) -> dict[int, list[VolumeRow]]:
    """The volumes of each workspace."""
    found: dict[int, list[VolumeRow]] = {}
    ids = set(workspace_ids)
    if ids:
        for row in session.scalars(select(VolumeRow).where(VolumeRow.workspace_id.in_(ids))):
            found.setdefault(row.workspace_id, []).append(row)
    return found


def resolve(location: str, volumes: list[VolumeRow]) -> tuple[VolumeRow, str]:
    """The volume ``location`` (``vol://``, ``s3://``, ``az://``) is in, and the path under the volume's root;
    raise ``LookupError`` saying what is missing."""
    found = store_location(location)
    assert found is not None
    scheme, first, key = found
    if scheme == "vol":
        for row in volumes:
            if row.name == first:
                return row, key
        raise LookupError(f"the workspace has no volume {first!r} (corral volume list)")
    kind = SCHEME_KINDS[scheme]
    field = "bucket" if kind == "s3" else "container"
    best: tuple[VolumeRow, str] | None = None
    for row in volumes:
        if row.kind != kind or row.spec.get(field) != first:
            continue
        prefix = row.spec.get("prefix", "")
        if prefix and key != prefix and not key.startswith(prefix + "/"):
            continue
        if best is None or len(prefix) > len(best[0].spec.get("prefix", "")):
            best = (row, key[len(prefix) :].lstrip("/"))
    if best is None:
        raise LookupError(
            f"no volume of the workspace holds {scheme}://{first}/{key}: create one of kind {kind} for the {field} "
            f"{first!r} (its credentials are the volume's)"
        )
    return best


def staged(
    items: Sequence[InputSpec | OutputSpec], volumes: list[VolumeRow], field: str = "inputs"
) -> tuple[dict[str, Any], ...]:
    """What the nodes stage in for these inputs, or upload for these outputs (those on volumes): each one's id,
    its location as the spec gives it (``source``), its store and its path there; raise ``LookupError`` naming
    the item (``field``: ``inputs`` or ``outputs``)."""
    out = []
    for index, item in enumerate(items):
        if store_location(item.path) is None:
            continue
        try:
            row, relative = resolve(item.path, volumes)
        except LookupError as exc:
            raise VolumeNotFound(f"{field}.{index}.path", str(exc)) from None
        store = store_for(row.spec, row.credentials or {})
        path = store.path(relative)
        out.append({"id": item.id, "source": item.path, "store": store.to_json(), "path": path})
    return tuple(out)


def staged_mounts(
    cluster: Sequence[MountSpec], job: Sequence[MountSpec], volumes: list[VolumeRow]
) -> tuple[dict[str, Any], ...]:
    """What the nodes stage for a cluster's and a job's mounts: as inputs, each linked where it is mounted
    (``at``: the root it is under, ``mount_root`` or ``job_mount_root``, and the path there); ``LookupError``
    naming the mount."""
    by_name = {row.name: row for row in volumes}
    out = []
    for where, mounts in (("mount_root", cluster), ("job_mount_root", job)):
        for index, mount in enumerate(mounts):
            row = by_name.get(mount.volume)
            if row is None:
                message = f"the workspace has no volume {mount.volume!r} (corral volume list)"
                raise VolumeNotFound(f"mounts.{index}.volume", message)
            if mount.mode == "mount" and row.kind == "azureblob":
                message = (
                    f"mount is available for s3 volumes in this version ({mount.volume!r} is azureblob): use mode: copy"
                )
                raise VolumeNotFound(f"mounts.{index}.mode", message)
            store = store_for(row.spec, row.credentials or {})
            item = {"id": mount.path, "source": f"vol://{row.name}", "store": store.to_json(), "path": store.root}
            fuse = mount.mode == "mount" and row.kind == "s3"
            out.append({**item, "at": [where, mount.path], "mode": "mount" if fuse else "copy"})
    return tuple(out)


def check_locations(session: Session, workspace_id: int, spec: JobSpec) -> None:
    """At submission: every input, output and mount on a volume names one the workspace has (``VolumeNotFound``
    otherwise)."""
    volumes = volume_rows(session, [workspace_id]).get(workspace_id, [])
    staged(spec.inputs, volumes, "inputs")
    staged(spec.outputs, volumes, "outputs")
    staged_mounts((), spec.mounts, volumes)


def relative_path(value: str) -> str:
    """A path under a volume's root as a request gives it: ``/``-separated, no ``.`` or ``..`` segment."""
    parts = [p for p in value.split("/") if p]
    if any(p in (".", "..") or "\x00" in p for p in parts):
        raise ValueError(f"path: must not have '.' or '..' segments, got {value!r}")
    return posixpath.join(*parts) if parts else ""
