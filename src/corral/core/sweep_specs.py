"""A sweep's spec: a trial job's template, a search space, an objective, a sampler, a pruner and a budget
(``docs/sweeps.md``). Samplers and pruners are Optuna's; this module only says which, with their options checked
here, so that a wrong sweep is refused at creation with the field it names."""

from __future__ import annotations

import json
import math
import re
from typing import Annotated, Any, Literal

from pydantic import Field, StringConstraints, field_validator, model_validator

from corral.core.specs import Int, Name, ParamName, Strict, param_text

Scalar = bool | int | float | str
#: Trials of one sweep, and grid points.
MAX_TRIALS = 10_000


class FloatParam(Strict):
    type: Literal["float"]
    low: float
    high: float
    #: Sampled on a log scale (``low`` > 0).
    log: bool = False
    #: Only multiples of ``step`` from ``low`` (what a grid needs).
    step: float | None = Field(None, gt=0)

    @model_validator(mode="after")
    def _range(self) -> FloatParam:
        if not self.low < self.high:
            raise ValueError(f"low must be below high, got low={self.low}, high={self.high}")
        if self.log and self.low <= 0:
            raise ValueError(f"log: low must be > 0, got {self.low}")
        if self.log and self.step is not None:
            raise ValueError("log and step do not go together")
        return self


class IntParam(Strict):
    type: Literal["int"]
    low: Int
    high: Int
    log: bool = False
    step: Int = Field(1, ge=1)

    @model_validator(mode="after")
    def _range(self) -> IntParam:
        if not self.low <= self.high:
            raise ValueError(f"low must not be above high, got low={self.low}, high={self.high}")
        if self.log and (self.low < 1 or self.step != 1):
            raise ValueError("log: low must be >= 1 and step 1")
        return self


class ChoiceParam(Strict):
    type: Literal["choice"]
    values: list[Scalar] = Field(min_length=1, max_length=MAX_TRIALS)


class DictParam(Strict):
    """Batch AI's dict parameter: one of several sets of parameters chosen together; each key is a parameter of
    the trial (``${lr}``, ``CORRAL_PARAM_LR``), the set's index is this parameter."""

    type: Literal["dict"]
    values: list[dict[ParamName, Scalar]] = Field(min_length=1, max_length=MAX_TRIALS)


Param = Annotated[FloatParam | IntParam | ChoiceParam | DictParam, Field(discriminator="type")]


class Objective(Strict):
    #: A metric the trial reports (``corral.runtime.report``): its last value of rank 0 is the trial's.
    metric: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_][A-Za-z0-9_./:-]{0,127}$")]
    mode: Literal["min", "max"] = "min"


class Sampler(Strict):
    type: Literal["tpe", "random", "grid", "cmaes", "qmc"] = "tpe"
    seed: Int | None = None


class Pruner(Strict):
    type: Literal["none", "median", "percentile", "successive_halving", "hyperband", "threshold"] = "none"
    #: median, percentile: trials that must have completed, and steps a trial reports, before any is pruned.
    startup_trials: Int = Field(5, ge=0)
    warmup_steps: Int = Field(0, ge=0)
    interval_steps: Int = Field(1, ge=1)
    #: percentile: prune below this percentile (median is 50).
    percentile: float = Field(25.0, ge=0, le=100)
    #: successive_halving, hyperband.
    min_resource: Int = Field(1, ge=1)
    max_resource: Int | None = Field(None, ge=1)
    reduction_factor: Int = Field(3, ge=2)
    #: threshold: prune a value below ``lower`` or above ``upper``.
    lower: float | None = None
    upper: float | None = None

    @model_validator(mode="after")
    def _threshold(self) -> Pruner:
        if self.type == "threshold" and self.lower is None and self.upper is None:
            raise ValueError("threshold: give lower, upper or both")
        return self


class SweepSpec(Strict):
    name: Name | None = None
    experiment: Name | None = None
    #: The trial job: a job spec in which ``${name}`` stands for each parameter (any toolkit, many nodes too).
    trial: dict[str, Any]
    parameters: dict[ParamName, Param] = Field(min_length=1, max_length=64)
    objective: Objective
    sampler: Sampler = Sampler()
    pruner: Pruner = Pruner()
    max_trials: Int = Field(10, ge=1, le=MAX_TRIALS)
    #: Trials running at once.
    parallelism: Int = Field(1, ge=1, le=1000)
    #: The sweep stops once this many trials failed.
    max_failed_trials: Int = Field(3, ge=1)
    #: The trial's ``code``, packed and uploaded once by the client (its SHA-256).
    code_archive: str | None = Field(None, pattern=r"^[0-9a-f]{64}$")

    @field_validator("trial")
    @classmethod
    def _trial_is_a_job(cls, trial: dict[str, Any]) -> dict[str, Any]:
        for key in ("name", "params"):
            if key in trial:
                raise ValueError(f"{key}: set by the sweep for each trial, leave it out")
        return trial

    @model_validator(mode="after")
    def _checked(self) -> SweepSpec:
        names = set(self.parameters)
        for spec in self.parameters.values():
            if isinstance(spec, DictParam):
                names |= {k for values in spec.values for k in values}
        used = set(re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}", json.dumps(self.trial)))
        if unknown := sorted(used - names):
            raise ValueError(f"trial: ${{{unknown[0]}}} is no parameter of the sweep ({', '.join(sorted(names))})")
        if self.sampler.type == "grid":
            size = len(grid(self))
            if size == 0:
                raise ValueError("sampler: grid: the grid has no point")
        return self


def grid(sweep: SweepSpec) -> dict[str, list[Scalar]]:
    """Each parameter's values in a grid sweep: a choice's values, an int's range, a float's steps."""
    found: dict[str, list[Scalar]] = {}
    for name, spec in sweep.parameters.items():
        if isinstance(spec, ChoiceParam):
            found[name] = list(spec.values)
        elif isinstance(spec, DictParam):
            found[name] = list(range(len(spec.values)))
        elif isinstance(spec, IntParam):
            if spec.log:
                raise ValueError(f"sampler: grid: parameters.{name}: a log int has no grid; list its values")
            found[name] = list(range(spec.low, spec.high + 1, spec.step))
        else:
            if spec.step is None:
                raise ValueError(f"sampler: grid: parameters.{name}: give a step, or list its values (a choice)")
            count = math.floor((spec.high - spec.low) / spec.step + 1e-9) + 1
            found[name] = [round(spec.low + i * spec.step, 12) for i in range(count)]
        if len(found[name]) > MAX_TRIALS:
            raise ValueError(f"sampler: grid: parameters.{name}: more than {MAX_TRIALS} values")
    total = math.prod(len(v) for v in found.values())
    if total > MAX_TRIALS:
        raise ValueError(f"sampler: grid: {total} points, more than {MAX_TRIALS}")
    return found


def grid_size(sweep: SweepSpec) -> int:
    return math.prod(len(v) for v in grid(sweep).values())


def trial_values(sweep: SweepSpec, params: dict[str, Any]) -> dict[str, Scalar]:
    """What a trial sees: its parameters, a dict parameter's set spread into its keys."""
    values: dict[str, Scalar] = {}
    for name, value in params.items():
        spec = sweep.parameters[name]
        if isinstance(spec, DictParam):
            values.update(spec.values[int(value)])
        else:
            values[name] = value
    return values


def trial_spec(sweep: SweepSpec, values: dict[str, Scalar]) -> dict[str, Any]:
    """The trial's job spec: ``${name}`` replaced in every string, its parameters in ``params``."""

    def fill(item: Any) -> Any:
        if isinstance(item, str):
            return re.sub(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}", lambda m: param_text(values.get(m[1], m[0])), item)
        if isinstance(item, list):
            return [fill(x) for x in item]
        if isinstance(item, dict):
            return {k: fill(v) for k, v in item.items()}
        return item

    return {**fill(sweep.trial), "params": values}


def first_values(sweep: SweepSpec) -> dict[str, Scalar]:
    """Each parameter at a value of its range (its low, or its first): a trial to check the template with."""
    params: dict[str, Any] = {}
    for name, spec in sweep.parameters.items():
        params[name] = (
            0 if isinstance(spec, DictParam) else spec.values[0] if isinstance(spec, ChoiceParam) else spec.low
        )
    return trial_values(sweep, params)
