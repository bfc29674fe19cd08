"""Reusable pieces of the params models: the YAML reader, the strict base, field types with their
checks, and the translation of pydantic's errors into one line per problem that names the key.

Field checks that pydantic's own constraints express (bounds, choices) stay as constraints, so
the JSON Schema shows them too; those it cannot (a [height, width] pair, an int or a list) raise
`PydanticCustomError` with the wording users see.
"""

from __future__ import annotations

import difflib
import re
from typing import Annotated, Any, Literal, get_args

import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, Tag, ValidationError
from pydantic_core import PydanticCustomError


class _Loader(yaml.SafeLoader):
    """PyYAML's safe loader with YAML 1.2's floats and booleans, as DVC reads params.yaml: `1e-5` is a
    number (DVC writes it so for `dvc exp run -S train.lr=1e-5`), not the string YAML 1.1 makes of
    an exponent without a dot; `yes`, `no`, `on` and `off` are strings (class names), only `true`
    and `false` booleans."""


_Loader.yaml_implicit_resolvers = {
    first: [(tag, pattern) for tag, pattern in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float", re.compile(r"^[-+]?[0-9][0-9_]*(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"), list("-+0123456789")
)


def read_yaml(text: str) -> Any:
    """params.yaml's (or dvc.lock's) values as DVC reads them; yaml.YAMLError where it is no YAML."""
    return yaml.load(text, Loader=_Loader)  # noqa: S506 - a SafeLoader


class Strict(BaseModel):
    """A mapping of params.yaml: unknown keys are errors, values keep their YAML types (no "5" -> 5)."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


def show(value: Any) -> str:
    return "nothing" if value is None else f"{value!r} ({type(value).__name__})"


def custom(kind: str, message: str, key: str | None = None) -> PydanticCustomError:
    """An error in our wording; `key` names a field below the model that raised it (cross-field checks)."""
    return PydanticCustomError(kind, message, {"key": key} if key else None)


def number_list(value: Any, lengths: tuple[int, ...], kinds: type | tuple[type, ...] = (int, float)) -> bool:
    """Whether `value` is a list (or tuple) of one of `lengths` numbers of `kinds` (a YAML true is no number)."""
    numbers = isinstance(value, (list, tuple)) and len(value) in lengths
    return numbers and all(isinstance(v, kinds) and not isinstance(v, bool) for v in value)


def _shape(value: Any) -> tuple[int, ...]:
    if number_list(value, (2, 3), int) and all(v > 0 for v in value):
        return tuple(value)
    raise custom(
        "size",
        "expected [height, width] (images) or [depth, height, width] (volumes) as positive integers, "
        f"got {show(value)}",
    )


# an image's [height, width] or a volume's [depth, height, width]
Shape = Annotated[tuple[Annotated[int, Field(ge=1)], ...], BeforeValidator(_shape)]


def _spacing(value: Any) -> str | tuple[float, float, float]:
    if value == "auto":
        return value
    if number_list(value, (3,)) and all(v > 0 for v in value):
        return (float(value[0]), float(value[1]), float(value[2]))
    raise custom(
        "spacing", f"expected auto or [depth, height, width] in mm as three positive numbers, got {show(value)}"
    )


# a volume's target voxel spacing: auto, or mm per (depth, height, width)
Spacing = Annotated[Literal["auto"] | tuple[float, float, float], BeforeValidator(_spacing)]


def _window(value: Any) -> tuple[float, float] | None:
    if value is None:
        return None
    if number_list(value, (2,)) and value[0] < value[1]:
        return (float(value[0]), float(value[1]))
    raise custom(
        "window", f"expected null or [low, high] intensities with low < high, e.g. [-100, 240], got {show(value)}"
    )


Window = Annotated[tuple[float, float] | None, BeforeValidator(_window)]


def problems(err: ValidationError, root: type[BaseModel]) -> list[str]:
    """One line per error: `key: what is wrong; what is expected`."""
    lines = []
    for e in err.errors(include_url=False):
        if e["type"] == "lines":  # cross-section checks: each line names its keys
            lines += e["msg"].splitlines()
            continue
        loc, model, reached = _walk(root, e["loc"])
        ctx = e.get("ctx") or {}
        if ctx.get("key"):
            loc = [*loc, ctx["key"]]
        elif e["type"].startswith("union_tag") and isinstance(e.get("input"), dict):
            loc = [*loc, "type"]  # the key that picks a kind: an output's `type`
        if e["type"] == "union_tag_invalid" and isinstance(reached, dict):
            # the `type` values the union's models accept, not its tags (two kinds may share a type)
            types = dict.fromkeys(t for m in reached.values() for t in get_args(m.model_fields["type"].annotation))
            e = {**e, "ctx": {**ctx, "expected_tags": ", ".join(map(repr, types))}}
        key = ".".join(map(str, loc)) or "params"
        lines.append(f"{key}: {_describe(e, model, loc)}")
    return lines


def _walk(root: type[BaseModel], loc: tuple) -> tuple[list, type[BaseModel] | None, Any]:
    """The key path without pydantic's union tags, the model class holding its last part, and the
    annotation the path leads to (a model class, or {tag: model} for a tagged union)."""
    path: list = []
    current: Any = root
    parent: type[BaseModel] | None = None
    for part in loc:
        if isinstance(current, dict) and part in current:  # a union's tag, as pydantic puts it in loc
            current = current[part]
            continue
        if part == "[key]":  # a mapping's key rather than its value: the path already names it
            continue
        path.append(part)
        parent = current if isinstance(current, type) and issubclass(current, BaseModel) else None
        current = _child(current, part)
    return path, parent, current


def _child(current: Any, part: Any) -> Any:
    if isinstance(current, type) and issubclass(current, BaseModel):
        field = current.model_fields.get(str(part))
        return _unwrap(field.annotation) if field else None
    if getattr(current, "__origin__", None) is dict:
        return _unwrap(current.__args__[1])
    if isinstance(current, type) and issubclass(current, dict):  # a mapping of its own (outputs.Outputs)
        return _unwrap(getattr(current, "value_type", None))
    return None


def _unwrap(annotation: Any) -> Any:
    """The model class, or {tag: model} for a tagged union of models, behind an annotation."""
    while getattr(annotation, "__metadata__", None) is not None:  # Annotated[...]
        annotation = annotation.__origin__
    args = getattr(annotation, "__args__", ())
    tagged = {}
    for arg in args:
        tags = [m.tag for m in getattr(arg, "__metadata__", ()) if isinstance(m, Tag)]  # Annotated[model, Tag(...)]
        model = arg.__origin__ if tags else arg
        if isinstance(model, type) and issubclass(model, BaseModel) and "type" in model.model_fields:
            tagged.update({tag: model for tag in tags or get_args(model.model_fields["type"].annotation)})
    if tagged and len(tagged) >= len(args):
        return tagged
    return annotation


def _describe(e: Any, model: type[BaseModel] | None, loc: list) -> str:
    kind, value, ctx = e["type"], e.get("input"), e.get("ctx") or {}
    if kind == "missing":
        return "missing; add it to params.yaml"
    if kind == "extra_forbidden":
        valid = sorted(model.model_fields) if model else []
        close = difflib.get_close_matches(str(loc[-1]), valid, n=1)
        where = ".".join(map(str, loc[:-1]))
        hint = f"; did you mean {'.'.join(filter(None, [where, close[0]]))!r}?" if close else ""
        return f"unknown key{hint} (valid here: {', '.join(valid)})"
    if kind in ("int_type", "int_parsing", "int_from_float"):
        return f"expected an integer, got {show(value)}"
    if kind in ("float_type", "float_parsing"):
        return f"expected a number, got {show(value)}"
    if kind in ("bool_type", "bool_parsing"):
        return f"expected true or false, got {show(value)}"
    if kind in ("string_type", "string_too_short"):
        return f"expected a non-empty string, got {show(value)}"
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        return f"expected a mapping of keys, got {show(value)}"
    if kind == "literal_error":
        return f"unknown value {value!r}; expected one of {_choices(ctx['expected'])}"
    if kind == "union_tag_invalid":
        return f"unknown value {ctx['tag']!r}; expected one of {_choices(ctx['expected_tags'])}"
    if kind == "string_pattern_mismatch":
        return f"expected a plain file name without folders, got {value!r}"
    if kind == "union_tag_not_found":
        if not isinstance(value, dict):  # no `type` to read: not a mapping at all
            return f"expected a mapping of keys, got {show(value)}"
        return "missing; add it to params.yaml"
    integer = isinstance(value, int) and not isinstance(value, bool)
    what = "an integer" if integer and kind == "greater_than_equal" else "a number"
    bounds = {
        "greater_than_equal": ">= {ge}",
        "greater_than": "> {gt}",
        "less_than": "below {lt}",
        "less_than_equal": "<= {le}",
    }
    if kind in bounds:
        plain = {k: int(v) if isinstance(v, float) and v.is_integer() else v for k, v in ctx.items()}
        return f"expected {what} {bounds[kind].format(**plain)}, got {value}"
    return e["msg"]  # our own errors (PydanticCustomError) carry their message


def _choices(expected: str) -> str:
    """pydantic's "'a', 'b' or 'c'" (or "1 or 3") as "a, b, c"."""
    return ", ".join(part.strip("'") for part in re.split(r", | or ", expected))
