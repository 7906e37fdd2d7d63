"""Reading specs: YAML (with YAML 1.2's booleans) or JSON into a mapping, a mapping into a spec model, and
pydantic's errors into :class:`~corral.core.errors.InvalidSpec` whose message names each field path and
what was expected (``node_count: must be >= 1, got 0``), with a "did you mean" for a misspelt field.

The models themselves are in :mod:`corral.core.specs`.
"""

from __future__ import annotations

import difflib
import json
import re
from pathlib import Path
from types import UnionType
from typing import Annotated, Any, TypeVar, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, ValidationError

from corral.core.errors import InvalidSpec

_MESSAGES = {
    "missing": "required",
    "extra_forbidden": "unknown field",
    "int_parsing": "must be an integer",
    "int_type": "must be an integer",
    "float_parsing": "must be a number",
    "string_type": "must be a string",
    "bool_parsing": "must be true or false",
    "dict_type": "must be a mapping",
    "list_type": "must be a list",
    "model_type": "must be a mapping",
    "model_attributes_type": "must be a mapping",
    "finite_number": "must be a finite number",
    "too_long": "is too long",
    "string_too_long": "is too long",
}

SpecT = TypeVar("SpecT", bound=BaseModel)


def describe_error(error: Any) -> str:
    kind = error["type"]
    ctx = error.get("ctx") or {}
    if kind in ("greater_than_equal", "greater_than", "less_than_equal", "less_than"):
        op = {"greater_than_equal": ">=", "greater_than": ">", "less_than_equal": "<=", "less_than": "<"}
        bound = next(iter(ctx.values()))
        message = f"must be {op[kind]} {bound}"
    elif kind == "literal_error":
        message = f"must be one of {ctx.get('expected', '')}"
    elif kind == "string_pattern_mismatch":
        message = f"must match {ctx.get('pattern')}"
    elif kind == "string_too_short":
        message = "must not be empty"
    elif kind == "value_error":
        message = str(ctx.get("error", error["msg"]))
    else:
        message = _MESSAGES.get(kind, error["msg"])
    if kind not in ("missing", "extra_forbidden") and not kind.startswith("model_") and kind != "value_error":
        message += f", got {error['input']!r}"
    return message


def _fields_at(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    """The field names of the model that ``loc`` (a path into ``model``, its last part excluded) leads to."""
    current: Any = model
    for part in loc[:-1]:
        if isinstance(current, type) and issubclass(current, BaseModel):
            field = current.model_fields.get(str(part))
            if field is None:
                return []
            current = field.annotation
        else:  # a list's index or a mapping's key: step into the item type
            args = [a for a in get_args(current) if a is not type(None)]
            current = args[-1] if args else None
        while get_origin(current) in (Union, UnionType) or get_origin(current) is Annotated:
            args = [a for a in get_args(current) if a is not type(None)]
            current = args[0] if args else None
    if isinstance(current, type) and issubclass(current, BaseModel):
        return list(current.model_fields)
    return []


def spec_errors(exc: ValidationError, model: type[BaseModel] | None = None) -> list[dict[str, Any]]:
    """Each error as ``{"loc": "scale.nodes", "message": "must be >= 0, got -1"}``; an unknown field gets
    a "did you mean" when ``model`` has a field of a close name."""
    out = []
    for error in exc.errors():
        loc = ".".join(str(part) for part in error["loc"]) or "(spec)"
        message = describe_error(error)
        if error["type"] == "extra_forbidden" and model is not None and error["loc"]:
            close = difflib.get_close_matches(str(error["loc"][-1]), _fields_at(model, error["loc"]), n=1)
            if close:
                message += f" (did you mean {close[0]!r}?)"
        out.append({"loc": loc, "message": message})
    return out


def exc_summary(exc: ValidationError, model: type[BaseModel] | None = None) -> str:
    """``loc: message; loc: message`` of a validation error, as :func:`parse_spec` words it."""
    return "; ".join(f"{d['loc']}: {d['message']}" for d in spec_errors(exc, model))


def unloadable(exc: ValidationError) -> str:
    """Why a stored spec (a job's or a cluster's) does not load, each field at fault named."""
    return f"its stored spec does not load in this version of Corral: {exc_summary(exc)}"


def parse_spec(model: type[SpecT], data: Any, *, source: str = "spec") -> SpecT:
    """Validate ``data`` as ``model``; on failure raise InvalidSpec naming every bad field."""
    if not isinstance(data, dict):
        raise InvalidSpec(f"{source}: expected a mapping at the top level, got {type(data).__name__}")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise InvalidSpec(f"{source}: {exc_summary(exc, model)}", details=spec_errors(exc, model)) from None


class SpecLoader(yaml.SafeLoader):
    """YAML as YAML 1.2 reads booleans: only ``true`` and ``false``. PyYAML follows YAML 1.1, where ``on``,
    ``off``, ``yes``, ``no`` (and ``y``, ``n``) are booleans too, so ``retry: {on: [node_failure]}`` became
    ``retry: {true: [...]}``; here they stay strings."""


SpecLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
SpecLoader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)


def load_spec_text(text: str, *, json_text: bool = False) -> Any:
    """Parse a spec's text: JSON, or YAML with YAML 1.2's booleans (:class:`SpecLoader`)."""
    return json.loads(text) if json_text else yaml.load(text, Loader=SpecLoader)


def load_spec_file(path: str | Path) -> dict[str, Any]:
    """Read a YAML or JSON spec file into a mapping (validation is :func:`parse_spec`'s)."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise InvalidSpec(f"{path}: cannot read: {exc.strerror}") from None
    try:
        data = load_spec_text(text, json_text=path.suffix == ".json")
    except (yaml.YAMLError, json.JSONDecodeError) as exc:
        raise InvalidSpec(f"{path}: not valid {'JSON' if path.suffix == '.json' else 'YAML'}: {exc}") from None
    if not isinstance(data, dict):
        raise InvalidSpec(f"{path}: expected a mapping at the top level, got {type(data).__name__}")
    return data
