"""Declared configuration: pydantic models checked once at load, whose typed
result every consumer uses as it is.

A field's bounds live in its declaration (``Annotated[int, Field(ge=1,
le=8)]``), cross-field rules in the model, and ``parse`` turns pydantic's
first complaint into one sentence that names the key the way the file
spells it (``upstream.batch_max_events: must be an integer from 1 to
100000, got 0``), because the person reading it is editing a TOML file.
Device firmware has its own small validator (MicroPython has no pydantic).

The person editing the file may read Chinese, so a problem is kept as a
catalogue key and its fields (:class:`Problem`, text in
``common/text_config.toml``) and rendered in the reader's language only
when printed (:meth:`ConfigError.text`); ``str()`` stays English for logs
and tests. The problems pydantic finds (required, unknown key, wrong type,
out of bounds) and the common cross-field rules (a file that does not
exist, a key given without the one it needs, a cap below its base) are
catalogued; a validator's own one-off sentence is carried as it is.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from common.text import beside

M = TypeVar("M", bound=BaseModel)

TEXT = beside(__file__, "text_config.toml")


class Problem(ValueError):
    """What is wrong with one value, as a catalogue entry and its fields
    (``Problem("no_file", path="ca.pem")``), so it can be shown in either
    language. Raise it from a validator like a ValueError."""

    def __init__(self, code: str, /, **fields: object) -> None:
        self.code = code
        self.fields = fields
        super().__init__(self.text("en"))

    def text(self, lang: str) -> str:
        fields = {k: v.text(lang) if isinstance(v, Problem) else v for k, v in self.fields.items()}
        return TEXT.t(f"problem.{self.code}", lang, **fields)


def _text(problem: Problem | str, lang: str) -> str:
    return problem.text(lang) if isinstance(problem, Problem) else problem


class ConfigError(ValueError):
    """A configuration that cannot be used; the message names the key.

    ``ConfigError("plain sentence")`` carries a one-off sentence;
    ``ConfigError.at("upstream.port", Problem(...))`` a catalogued one.
    :meth:`within` puts the file's name in front, :meth:`text` renders it
    for a reader."""

    def __init__(self, message: str = "", /, *, where: tuple[str, ...] = (),
                 problem: Problem | str | None = None) -> None:
        self.where = where
        self.problem: Problem | str = message if problem is None else problem
        super().__init__(self.text("en"))

    @classmethod
    def at(cls, where: str, problem: Problem | str) -> ConfigError:
        return cls(where=(where,) if where else (), problem=problem)

    def within(self, prefix: str | Path) -> ConfigError:
        """The same error with ``prefix`` (a file, a section) in front."""
        return type(self)(where=(str(prefix), *self.where), problem=self.problem)

    def text(self, lang: str) -> str:
        return ": ".join([*self.where, _text(self.problem, lang)])


def describe(exc: BaseException, lang: str) -> str:
    """Any error as one line in ``lang``: a config error in the reader's
    language, anything else as it says itself."""
    text = getattr(exc, "text", None)
    return text(lang) if callable(text) else str(exc)


class KeyProblem(ValueError):
    """Raised inside a model validator to blame a key other than the one
    being validated (``KeyProblem("backoff_cap_s", Problem("not_below", ...))``)."""

    def __init__(self, key: str, problem: Problem | str) -> None:
        super().__init__(str(problem))
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


def _bounds(field: Any) -> tuple[Any, Problem | None]:
    """A field's annotation and its bounds as a problem ("from 1 to 8")."""
    if field is None:
        return None, None
    lo = hi = None
    for m in field.metadata:
        for attr in ("ge", "gt"):
            if getattr(m, attr, None) is not None:
                lo = (attr, getattr(m, attr))
        for attr in ("le", "lt"):
            if getattr(m, attr, None) is not None:
                hi = (attr, getattr(m, attr))
    if not lo and not hi:
        return field.annotation, None
    if lo and hi:
        return field.annotation, Problem(f"range.{lo[0]}_{hi[0]}", lo=lo[1], hi=hi[1])
    bound = lo or hi
    assert bound is not None
    return field.annotation, Problem(f"range.{bound[0]}", n=bound[1])


def unknown_key(key: str, known: list[str] | tuple[str, ...] | set[str]) -> Problem:
    """The problem for a key the table does not have, with the closest
    known key when one is near (a typo such as ``brokr``)."""
    names = sorted(known)
    near = difflib.get_close_matches(str(key), names, n=1, cutoff=0.6)
    if near:
        return Problem("unknown_key_near", near=repr(near[0]), known=", ".join(names))
    return Problem("unknown_key", known=", ".join(names))


def key_path(loc: tuple[str | int, ...] | list[str | int]) -> str:
    """("faults", 0, "kind") -> "faults[0].kind", as a reader of the file says it."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


_TYPES = {"int_type": "int", "float_type": "number", "string_type": "str", "bool_type": "bool",
          "list_type": "list", "dict_type": "table", "model_type": "table", "tuple_type": "list",
          "int_from_float": "int"}


_BOUND_KINDS = {"greater_than_equal": "ge", "greater_than": "gt", "less_than_equal": "le", "less_than": "lt"}


def _sentence(model: type[BaseModel], err: dict[str, Any]) -> tuple[str, Problem | str]:
    loc = list(err["loc"])
    kind = err["type"]
    got = err.get("input")
    ctx = err.get("ctx") or {}
    cause = ctx.get("error")
    if isinstance(cause, KeyProblem):
        return key_path([*loc, cause.key]), cause.problem
    where = key_path(loc)
    if kind == "missing":
        return where, Problem("required")
    if kind == "extra_forbidden":
        parent = _field(model, loc[:-1])
        owner = model if parent is None else parent.annotation
        for inner in getattr(owner, "__args__", ()) or ():
            if isinstance(inner, type) and issubclass(inner, BaseModel):
                owner = inner
        return where, unknown_key(str(loc[-1]), list(getattr(owner, "model_fields", {})))
    if kind == "value_error" and cause is not None:
        return where, cause if isinstance(cause, Problem) else str(cause)
    ann, bounds = _bounds(_field(model, loc))
    if ann is not None and bounds is not None and kind in (
            "greater_than_equal", "less_than_equal", "greater_than", "less_than", "int_type", "float_type"):
        integer = "int" in str(ann) and "float" not in str(ann)
        return where, Problem("number.int" if integer else "number.any", bounds=bounds, got=repr(got))
    # A bound on a value with no field of its own (a table's values,
    # ``dict[str, Annotated[int, Field(ge=0)]]``): pydantic names the bound.
    bound = _BOUND_KINDS.get(kind)
    if bound is not None and bound in ctx:
        return where, Problem("number.any", bounds=Problem(f"range.{bound}", n=ctx[bound]), got=repr(got))
    if kind == "string_too_short":
        n = ctx.get("min_length", 1)
        return where, Problem("empty") if n == 1 else Problem("too_short", n=n, got=repr(got))
    if kind in _TYPES:
        return where, Problem(f"type.{_TYPES[kind]}", got=repr(got))
    if kind == "literal_error":
        choices = str(ctx.get("expected", "")).replace(" or ", ", ")
        return where, Problem("one_of", choices=choices, got=repr(got))
    return where, f"{err['msg'][0].lower()}{err['msg'][1:]}, got {got!r}"


def parse(model: type[M], data: Any, section: str, **context: Any) -> M:
    """``model`` from a TOML table, or ConfigError naming ``section.key``
    (just ``key`` for a whole file, ``section=""``)."""
    if not isinstance(data, dict):
        raise ConfigError.at(section or "config", Problem("type.table", got=repr(data)))
    try:
        return model.model_validate(data, context=context or None)
    except ValidationError as e:
        # A misspelt key first: "sise: did you mean 'size'?" explains the
        # "size: required" pydantic would otherwise report before it.
        errors = sorted(e.errors(), key=lambda err: err["type"] != "extra_forbidden")
        key, problem = _sentence(model, errors[0])
        where = ".".join(p for p in (section, key) if p) or "config"
        raise ConfigError.at(where, problem) from None
