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


def _bounds(model: type[BaseModel], name: str) -> tuple[Any, str]:
    """A field's annotation and its bounds as words ("from 1 to 8")."""
    field = model.model_fields.get(name)
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


def _sentence(model: type[BaseModel], err: dict[str, Any]) -> tuple[str, str]:
    loc = [str(p) for p in err["loc"]]
    kind = err["type"]
    got = err.get("input")
    ctx = err.get("ctx") or {}
    cause = ctx.get("error")
    if isinstance(cause, KeyProblem):
        return cause.key, cause.problem
    if kind == "missing":
        return ".".join(loc), "required"
    if kind == "extra_forbidden":
        known = ", ".join(sorted(model.model_fields))
        return ".".join(loc), f"unknown key (known: {known})"
    if kind == "value_error" and cause is not None:
        return ".".join(loc), str(cause)
    ann, bounds = _bounds(model, loc[0]) if len(loc) == 1 else (None, "")
    if ann is not None and bounds:
        what = "an integer" if "int" in str(ann) and "float" not in str(ann) else "a number"
        return ".".join(loc), f"must be {what} {bounds}, got {got!r}"
    return ".".join(loc), f"{err['msg'][0].lower()}{err['msg'][1:]}, got {got!r}"


def parse(model: type[M], data: Any, section: str, **context: Any) -> M:
    """``model`` from a TOML table, or ConfigError naming ``section.key``."""
    if not isinstance(data, dict):
        raise ConfigError(f"{section}: must be a table")
    try:
        return model.model_validate(data, context=context or None)
    except ValidationError as e:
        key, problem = _sentence(model, e.errors()[0])
        where = f"{section}.{key}" if key else section
        raise ConfigError(f"{where}: {problem}") from None
