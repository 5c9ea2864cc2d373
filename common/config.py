"""Declared configuration: pydantic models checked once at load, whose typed
result every consumer uses as it is.

A field's bounds live in its declaration (``Annotated[int, Field(ge=1,
le=8)]``), cross-field rules in the model, and ``parse`` turns pydantic's
first complaint into one sentence that names the key the way the file
spells it (``upstream.batch_max_events: must be an integer from 1 to
100000, got 0``), because the person reading it is editing a TOML file.
Device firmware has its own small validator (MicroPython has no pydantic).
"""

from __future__ import annotations

import difflib
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

M = TypeVar("M", bound=BaseModel)


class ConfigError(ValueError):
    """A configuration that cannot be used; the message names the key."""


class KeyProblem(ValueError):
    """Raised inside a model validator to blame a key other than the one
    being validated (``KeyProblem("backoff_cap_s", "must not be below ...")``)."""

    def __init__(self, key: str, problem: str) -> None:
        super().__init__(problem)
        self.key = key
        self.problem = problem


class Section(BaseModel):
    """Base of every config table: unknown keys refused, no silent coercion
    of "8080" to 8080 or of true to 1."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


def _field(model: type[BaseModel], loc: list[str | int]) -> Any:
    """The pydantic field a location names, walking nested sections and
    lists of sections; None when the location is not a declared field."""
    field = None
    current: Any = model
    for part in loc:
        if isinstance(part, int):
            continue
        if not (isinstance(current, type) and issubclass(current, BaseModel)):
            return None
        field = current.model_fields.get(part)
        if field is None:
            return None
        current = field.annotation
        for inner in getattr(current, "__args__", ()) or ():
            if isinstance(inner, type) and issubclass(inner, BaseModel):
                current = inner
    return field


def _bounds(field: Any) -> tuple[Any, str]:
    """A field's annotation and its bounds as words ("from 1 to 8")."""
    if field is None:
        return None, ""
    lo = hi = None
    for m in field.metadata:
        for attr in ("ge", "gt"):
            if getattr(m, attr, None) is not None:
                lo = (attr, getattr(m, attr))
        for attr in ("le", "lt"):
            if getattr(m, attr, None) is not None:
                hi = (attr, getattr(m, attr))
    if lo and hi and lo[0] == "ge" and hi[0] == "le":
        return field.annotation, f"from {lo[1]} to {hi[1]}"
    words = []
    if lo:
        words.append(f"at least {lo[1]}" if lo[0] == "ge" else f"above {lo[1]}")
    if hi:
        words.append(f"at most {hi[1]}" if hi[0] == "le" else f"below {hi[1]}")
    return field.annotation, " and ".join(words)


def unknown_key(key: str, known: list[str] | tuple[str, ...] | set[str]) -> str:
    """The problem sentence for a key the table does not have, with the
    closest known key when one is near (a typo such as ``brokr``)."""
    names = sorted(known)
    near = difflib.get_close_matches(str(key), names, n=1, cutoff=0.6)
    hint = f"; did you mean {near[0]!r}?" if near else ""
    return f"unknown key{hint} (known: {', '.join(names)})"


def key_path(loc: tuple[str | int, ...] | list[str | int]) -> str:
    """("faults", 0, "kind") -> "faults[0].kind", as a reader of the file says it."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _sentence(model: type[BaseModel], err: dict[str, Any]) -> tuple[str, str]:
    loc = list(err["loc"])
    kind = err["type"]
    got = err.get("input")
    ctx = err.get("ctx") or {}
    cause = ctx.get("error")
    if isinstance(cause, KeyProblem):
        return key_path([*loc, cause.key]), cause.problem
    where = key_path(loc)
    if kind == "missing":
        return where, "required"
    if kind == "extra_forbidden":
        parent = _field(model, loc[:-1])
        owner = model if parent is None else parent.annotation
        for inner in getattr(owner, "__args__", ()) or ():
            if isinstance(inner, type) and issubclass(inner, BaseModel):
                owner = inner
        return where, unknown_key(str(loc[-1]), list(getattr(owner, "model_fields", {})))
    if kind == "value_error" and cause is not None:
        return where, str(cause)
    ann, bounds = _bounds(_field(model, loc))
    if ann is not None and bounds and kind in ("greater_than_equal", "less_than_equal", "greater_than",
                                               "less_than", "int_type", "float_type"):
        what = "an integer" if "int" in str(ann) and "float" not in str(ann) else "a number"
        return where, f"must be {what} {bounds}, got {got!r}"
    return where, f"{err['msg'][0].lower()}{err['msg'][1:]}, got {got!r}"


def parse(model: type[M], data: Any, section: str, **context: Any) -> M:
    """``model`` from a TOML table, or ConfigError naming ``section.key``
    (just ``key`` for a whole file, ``section=""``)."""
    if not isinstance(data, dict):
        raise ConfigError(f"{section or 'config'}: must be a table")
    try:
        return model.model_validate(data, context=context or None)
    except ValidationError as e:
        # A misspelt key first: "sise: did you mean 'size'?" explains the
        # "size: required" pydantic would otherwise report before it.
        errors = sorted(e.errors(), key=lambda err: err["type"] != "extra_forbidden")
        key, problem = _sentence(model, errors[0])
        where = ".".join(p for p in (section, key) if p) or "config"
        raise ConfigError(f"{where}: {problem}") from None
