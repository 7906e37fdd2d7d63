"""A sweep's spec on its own: parameters, the grid, a trial's job spec, and every sampler and pruner built and
driven through a short study (Optuna's, in memory) as the server's driver builds them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from corral.client.sweeps import file_parameters
from corral.core.errors import InvalidSpec
from corral.core.sweep_specs import SweepSpec, first_values, grid, grid_size, trial_spec, trial_values
from corral.server.sweep_driver import _distributions, _pruner, _sampler


def sweep(**changes: Any) -> SweepSpec:
    data: dict[str, Any] = {
        "trial": {"cluster": "c", "custom": {"command": "train --lr ${lr} --layers ${layers} --opt ${opt}"}},
        "parameters": {
            "lr": {"type": "float", "low": 0.001, "high": 0.1, "log": True},
            "arch": {"type": "dict", "values": [{"layers": 2, "width": 64}, {"layers": 4, "width": 32}]},
            "opt": {"type": "choice", "values": ["sgd", "adam", True]},
        },
        "objective": {"metric": "val/loss"},
    }
    data.update(changes)
    return SweepSpec.model_validate(data)


def test_a_trial_gets_its_parameters_a_dict_spread_into_its_keys() -> None:
    spec = sweep()
    values = trial_values(spec, {"lr": 0.01, "arch": 1, "opt": True})
    assert values == {"lr": 0.01, "layers": 4, "width": 32, "opt": True}
    job = trial_spec(spec, values)
    assert job["custom"]["command"] == "train --lr 0.01 --layers 4 --opt true"
    assert job["params"] == values and spec.trial["custom"]["command"].count("${") == 3  # the template unchanged
    assert first_values(spec) == {"lr": 0.001, "layers": 2, "width": 64, "opt": "sgd"}


def test_the_grid_of_each_kind_of_parameter() -> None:
    spec = sweep(
        parameters={
            "x": {"type": "float", "low": 0, "high": 1, "step": 0.25},
            "n": {"type": "int", "low": 2, "high": 8, "step": 3},
            "arch": {"type": "dict", "values": [{"a": 1}, {"a": 2}]},
        },
        trial={"cluster": "c", "custom": {"command": "echo ${x} ${n} ${a}"}},
        sampler={"type": "grid"},
    )
    assert grid(spec) == {"x": [0.0, 0.25, 0.5, 0.75, 1.0], "n": [2, 5, 8], "arch": [0, 1]}
    assert grid_size(spec) == 30


@pytest.mark.parametrize(
    ("changes", "says"),
    [
        ({"parameters": {"x": {"type": "float", "low": 1, "high": 0}}}, "low must be below high"),
        ({"parameters": {"x": {"type": "float", "low": 0, "high": 1, "log": True}}}, "log: low must be > 0"),
        ({"parameters": {"x": {"type": "int", "low": 0, "high": 9, "log": True}}}, "log: low must be >= 1"),
        ({"parameters": {"x": {"type": "choice", "values": []}}}, "at least 1 item"),
        ({"parameters": {"x": {"type": "float", "low": 0, "high": 1}}, "sampler": {"type": "grid"}}, "give a step"),
        ({"parameters": {"1x": {"type": "choice", "values": [1]}}}, "parameters.1x"),
        ({"trial": {"cluster": "c", "name": "fixed", "custom": {"command": "x"}}}, "set by the sweep"),
        ({"pruner": {"type": "threshold"}}, "give lower, upper or both"),
        ({"objective": {"metric": "loss", "mode": "best"}}, "objective.mode"),
    ],
)
def test_a_wrong_spec_names_what_is_wrong(changes: dict[str, Any], says: str) -> None:
    base = {"parameters": {"x": {"type": "choice", "values": [1]}},
            "trial": {"cluster": "c", "custom": {"command": "echo ${x}"}}}  # fmt: skip
    with pytest.raises(ValidationError, match=says.replace(".", r"\.")):
        sweep(**{**base, **changes})


def test_a_file_parameter_is_read_by_the_client_into_a_choice(tmp_path: Path) -> None:
    (tmp_path / "seeds.txt").write_text("# seeds\n1\n\n7\n")
    data = {"parameters": {"seed": {"type": "file", "path": "seeds.txt"}, "x": {"type": "choice", "values": [1]}}}
    assert file_parameters(data, tmp_path)["parameters"]["seed"] == {"type": "choice", "values": ["1", "7"]}
    with pytest.raises(InvalidSpec, match=r"parameters\.seed\.path: cannot read"):
        file_parameters({"parameters": {"seed": {"type": "file", "path": "none.txt"}}}, tmp_path)


@pytest.mark.parametrize("sampler", ["tpe", "random", "grid", "cmaes", "qmc"])
@pytest.mark.parametrize("pruner", ["none", "median", "percentile", "successive_halving", "hyperband", "threshold"])
def test_every_sampler_and_pruner_drives_a_study(sampler: str, pruner: str) -> None:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    spec = sweep(
        parameters={
            "x": {"type": "float", "low": 0, "high": 4, "step": 0.5},
            "n": {"type": "int", "low": 1, "high": 3},
        },
        trial={"cluster": "c", "custom": {"command": "echo ${x} ${n}"}},
        sampler={"type": sampler, "seed": 1},
        pruner={"type": pruner, "startup_trials": 1, "upper": 3.0, "max_resource": 5},
    )
    study = optuna.create_study(sampler=_sampler(spec), pruner=_pruner(spec))
    distributions = _distributions(spec)
    pruned = 0
    for _ in range(6):
        trial = study.ask(distributions)
        for step in range(5):
            trial.report((trial.params["x"] - 2) ** 2 + 1 / (step + 1), step)
            if trial.should_prune():
                study.tell(trial, state=optuna.trial.TrialState.PRUNED)
                pruned += 1
                break
        else:
            study.tell(trial, (trial.params["x"] - 2) ** 2)
    assert len(study.trials) == 6
    if pruner == "none":
        assert pruned == 0
