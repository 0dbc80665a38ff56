"""Settings validation whose errors name the dotted key: ``train.lr: must be > 0 (got -0.1)``.

Every section of ``params.yaml`` is validated by a pydantic model next to the code it configures. pydantic's own
error text names a location inside the model and points at its documentation; :func:`validate` re-words each
problem as one line that names the full dotted key, says what is allowed, and, for an unknown key or choice,
suggests the closest valid one (difflib)::

    validate(TrainConfig, {"batchsize": 4, "lr": -1}, "train")
    # SettingsError: invalid settings (2 problems):
    #   train.batchsize: unknown key (did you mean 'batch_size'? valid keys: ...)
    #   train.lr: must be > 0.0 (got -1)
"""

from __future__ import annotations

import difflib
import re
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

__all__ = ["SettingsError", "validate", "describe_errors", "closest", "unknown_key_message"]

M = TypeVar("M", bound=BaseModel)

_BOUNDS = {"greater_than": (">", "gt"), "greater_than_equal": (">=", "ge"), "less_than": ("<", "lt"),
           "less_than_equal": ("<=", "le"), "multiple_of": ("a multiple of", "multiple_of")}


class SettingsError(ValueError):
    """Invalid settings. The message has one line per problem, each naming the dotted key."""


def closest(name: str, valid: Sequence[str]) -> str | None:
    """The valid name closest to ``name`` (difflib, case-insensitive), or None when nothing is close."""
    lowered = {v.lower(): v for v in valid}
    match = difflib.get_close_matches(str(name).lower(), list(lowered), n=1, cutoff=0.6)
    return lowered[match[0]] if match else None


def unknown_key_message(key: str, name: str, valid: Sequence[str]) -> str:
    """``"<key>: unknown key (did you mean '<x>'?)"`` with the valid keys listed (at most 20)."""
    hint = closest(name, valid)
    listed = ", ".join(sorted(valid)[:20]) + (", ..." if len(valid) > 20 else "")
    guess = f"did you mean {hint!r}? " if hint else ""
    return f"{key}: unknown key ({guess}valid keys: {listed})"


def _model_of(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    return None


def _fields_at(model: type[BaseModel], loc: Sequence[Any]) -> list[str] | None:
    """Valid keys of the mapping at ``loc`` inside ``model`` (None when the location cannot be followed)."""
    current: Any = model
    for part in loc:
        sub = _model_of(current)
        if sub is not None:
            if part not in sub.model_fields:
                return None
            current = sub.model_fields[part].annotation
            continue
        origin, args = typing.get_origin(current), typing.get_args(current)
        if origin in (typing.Union, types.UnionType):
            models = [a for a in args if _model_of(a)]
            current = models[0] if len(models) == 1 else None
            if current is None:
                return None
            if part in _model_of(current).model_fields:  # type: ignore[union-attr]
                current = _model_of(current).model_fields[part].annotation  # type: ignore[union-attr]
            continue
        if origin in (dict, Mapping, list, Sequence, tuple):  # a key / index into a container: its values
            current = args[-1] if args else None
            continue
        return None
    while typing.get_origin(current) in (typing.Union, types.UnionType):
        models = [a for a in typing.get_args(current) if _model_of(a)]
        current = models[0] if len(models) == 1 else None
    sub = _model_of(current)
    return list(sub.model_fields) if sub is not None else None


def _problem(err: Mapping[str, Any], key: str, model: type[BaseModel]) -> str:
    kind, ctx, got = err["type"], err.get("ctx") or {}, err.get("input")
    msg = re.sub(r"^(Value|Assertion) error, ", "", str(err["msg"]))
    if kind == "extra_forbidden":
        valid = _fields_at(model, err["loc"][:-1]) or []
        return unknown_key_message(key, str(err["loc"][-1]), valid) if valid else f"{key}: unknown key"
    if kind == "missing":
        return f"{key}: required, but not given"
    if kind in _BOUNDS:
        word, field = _BOUNDS[kind]
        return f"{key}: must be {word} {ctx.get(field)} (got {got!r})"
    if kind == "literal_error":
        choices = re.findall(r"'([^']*)'", str(ctx.get("expected", "")))
        hint = closest(str(got), choices)
        return (f"{key}: must be one of {', '.join(choices)} (got {got!r})"
                + (f"; did you mean {hint!r}?" if hint else ""))
    if kind in ("value_error", "assertion_error"):
        return f"{key}: {msg}" if key else msg
    return f"{key}: {msg[:1].lower() + msg[1:]} (got {got!r})"


def describe_errors(err: ValidationError, model: type[BaseModel],
                    where: str | Callable[[tuple], str] = "") -> list[str]:
    """One line per problem in ``err``, each starting with its dotted key.

    Args:
        err: what ``model.model_validate`` raised.
        model: the validated model (to list the valid keys near an unknown one).
        where: dotted prefix of the section (``"train"``), or a function of an error's location tuple that
            returns it (e.g. ``train`` vs ``train.runs.flat`` depending on where a key came from).
    """
    lines = []
    for e in err.errors(include_url=False):
        loc = tuple(e["loc"])
        prefix = where(loc) if callable(where) else where
        key = ".".join([prefix, *map(str, loc)] if prefix else map(str, loc))
        lines.append(_problem(e, key, model))
    return lines


def validate(model: type[M], data: Any, where: str | Callable[[tuple], str] = "", *, source: str = "") -> M:
    """``model.model_validate(data)``, raising :class:`SettingsError` that names every bad dotted key.

    ``source`` (e.g. the params file) is named in the first line of the message.
    """
    if data is not None and not isinstance(data, Mapping):
        prefix = where(()) if callable(where) else where
        raise SettingsError(f"{prefix or 'settings'}: expected a mapping of keys, got {type(data).__name__} "
                            f"{data!r}" + (f" (in {source})" if source else ""))
    try:
        return model.model_validate(dict(data or {}))
    except ValidationError as err:
        lines = describe_errors(err, model, where)
        head = f"invalid settings{' in ' + source if source else ''} ({len(lines)} problem{'s' * (len(lines) > 1)}):"
        raise SettingsError("\n  ".join([head, *lines])) from None
