"""Sweeps: made from a spec (a mapping, or a YAML/JSON file whose ``file`` parameters are read here), listed,
shown with their trials best first, terminated."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from corral.client.http import ClientBase
from corral.core.errors import InvalidSpec
from corral.core.models import Sweep
from corral.core.spec_parsing import load_spec_file


def file_parameters(data: dict[str, Any], base: Path) -> dict[str, Any]:
    """Batch AI's file parameter, ``{type: file, path: values.txt}``: one value a line (blank lines and ``#``
    comments left out), read here into a choice; a path is relative to the spec's folder."""
    params = data.get("parameters")
    if not isinstance(params, dict):
        return data
    changed = dict(params)
    for name, spec in params.items():
        if isinstance(spec, dict) and spec.get("type") == "file":
            path = base / str(spec.get("path", ""))
            try:
                lines = path.read_text().splitlines()
            except OSError as exc:
                raise InvalidSpec(f"parameters.{name}.path: cannot read {path}: {exc.strerror}") from None
            values = [line.strip() for line in lines if line.strip() and not line.strip().startswith("#")]
            if not values:
                raise InvalidSpec(f"parameters.{name}.path: {path} has no values (one a line)")
            changed[name] = {"type": "choice", "values": values}
    return {**data, "parameters": changed}


class SweepsMixin(ClientBase):
    if TYPE_CHECKING:  # the Client's (client.py): a job spec's code uploaded, its paths made absolute

        def job_files(self, data: dict[str, Any], base: Path, *, workspace: str | None = None) -> str | None: ...

    def create_sweep(
        self, spec: str | Path | dict[str, Any], *, experiment: str | None = None, workspace: str | None = None
    ) -> Sweep:
        """A new sweep from a spec; its trials start at once (``docs/sweeps.md``)."""
        base = Path.cwd() if isinstance(spec, dict) else Path(spec).resolve().parent
        data = file_parameters(dict(spec) if isinstance(spec, dict) else load_spec_file(spec), base)
        if isinstance(data.get("trial"), dict):  # its code uploaded once for every trial, its paths made absolute
            trial = dict(data["trial"])
            archive = self.job_files(trial, base, workspace=workspace)
            data = {**data, "trial": trial, **({"code_archive": archive} if archive else {})}
        exp = experiment or data.get("experiment") or self.experiment or "default"
        path = f"{self._ws(workspace)}/experiments/{exp}/sweeps"
        return Sweep.model_validate(self._request("POST", path, json=data).json())

    def list_sweeps(self, *, experiment: str | None = None, workspace: str | None = None) -> list[Sweep]:
        path = f"{self._ws(workspace)}/experiments/{experiment or self.experiment or 'default'}/sweeps"
        return [Sweep.model_validate(s) for s in self._request("GET", path).json()]

    def get_sweep(self, name: str, *, experiment: str | None = None, workspace: str | None = None) -> Sweep:
        """The sweep with every trial, the best first."""
        path = f"{self._ws(workspace)}/experiments/{experiment or self.experiment or 'default'}/sweeps/{name}"
        return Sweep.model_validate(self._request("GET", path).json())

    def terminate_sweep(self, name: str, *, experiment: str | None = None, workspace: str | None = None) -> Sweep:
        path = f"{self._ws(workspace)}/experiments/{experiment or self.experiment or 'default'}/sweeps/{name}"
        return Sweep.model_validate(self._request("POST", path + "/terminate").json())
