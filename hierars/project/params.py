"""Project paths and parameters: ``PROJ_ROOT``, path resolution, and ``params.yaml`` loading (project layer).

Every path in hierars resolves from :data:`PROJ_ROOT`, so notebooks behave the same whether
JupyterLab starts the kernel in ``notebooks/`` or ``dvc repro`` runs from the repository root.
Each stage validates its own section of the loaded dict with a pydantic model that lives next to
the stage's code (e.g. ``hierars.data.PrepareConfig``).
"""

from __future__ import annotations

import copy
import os
import sys
from collections.abc import Iterator, Mapping, MutableMapping
from pathlib import Path
from typing import Any

import yaml

from hierars.validation import SettingsError, unknown_key_message

__all__ = ["PROJ_ROOT", "resolve_path", "deep_merge", "load_params", "stage_paths", "params_read", "files_read",
           "TRACK_ENV"]

#: Set this environment variable (to any non-empty value) and :func:`load_params` returns a mapping that records
#: every key read (:func:`params_read`); files opened under the package are recorded too (:func:`files_read`).
#: ``tests/test_notebooks.py`` sets it in the notebook kernels to check that ``dvc.yaml`` declares what each stage
#: reads (``tests/test_pipeline_decl.py``). Off by default: :func:`load_params` then returns a plain dict.
TRACK_ENV = "HIERARS_TRACK_READS"

#: top-level keys of ``params.yaml`` (each stage validates its own section); anything else is a typo
SECTIONS = frozenset({"seed", "paths", "prepare", "train", "transfer", "retrieval", "fidelity"})

_READS: set[str] = set()
_FILES: set[str] = set()
_PACKAGE_DIR = str(Path(__file__).resolve().parents[1])


class _TrackedParams(MutableMapping):
    """A view of a params mapping that records the dotted path of every value read.

    A read is recorded when a non-mapping value is returned (``params["train"]["lr"]`` records ``train.lr``;
    ``dict(section)``, ``section.items()`` and pydantic validation read every value, so they record every leaf),
    or when a missing key is asked for (``params.get("seed")`` without ``seed`` records ``seed``: adding the key
    would change what the stage does). Nested mappings come back wrapped, so only what is used inside them counts.
    The log is module-global, so copies made by ``copy.deepcopy`` keep recording.
    """

    def __init__(self, data: MutableMapping, prefix: str = "") -> None:
        self._data = data
        self._prefix = prefix

    def __getitem__(self, key: Any) -> Any:
        path = f"{self._prefix}{key}"
        try:
            value = self._data[key]
        except KeyError:
            _READS.add(path)
            raise
        if isinstance(value, Mapping):
            return _TrackedParams(value, path + ".")
        _READS.add(path)
        return value

    def __setitem__(self, key: Any, value: Any) -> None:
        self._data[key] = value

    def __delitem__(self, key: Any) -> None:
        del self._data[key]

    def __iter__(self) -> Iterator:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._data!r})"


def _audit_open(event: str, args: tuple) -> None:
    if event == "open" and isinstance(args[0], str) and args[0].startswith(_PACKAGE_DIR) and not args[0].endswith(
            (".py", ".pyc")):
        _FILES.add(args[0])


if os.environ.get(TRACK_ENV):
    sys.addaudithook(_audit_open)


def params_read() -> list[str]:
    """Dotted params keys read so far through :func:`load_params` results (empty unless :data:`TRACK_ENV` is set)."""
    return sorted(_READS)


def files_read() -> list[str]:
    """Package data files (not modules) opened since import, e.g. built-in trees (only with :data:`TRACK_ENV`)."""
    return sorted(_FILES)


def _find_root() -> Path:
    env = os.environ.get("HIERARS_ROOT")
    if env:
        return Path(env).resolve()
    here = Path(__file__).resolve().parents[2]  # the checkout, when hierars is installed editable
    for cand in (here, Path.cwd(), *Path.cwd().parents):
        if (cand / "params.yaml").exists() and (cand / "hierars").is_dir():
            return cand
    return here


PROJ_ROOT: Path = _find_root()


def resolve_path(p: str | os.PathLike) -> Path:
    """Absolute path for ``p``; relative paths resolve from :data:`PROJ_ROOT` (``~`` is expanded)."""
    path = Path(p).expanduser()
    return path if path.is_absolute() else (PROJ_ROOT / path)


def deep_merge(base: Mapping, override: Mapping) -> dict:
    """Recursively merge ``override`` into a copy of ``base`` (mappings merge, everything else replaces)."""
    out = copy.deepcopy(dict(base))
    for k, v in override.items():
        if isinstance(v, Mapping) and isinstance(out.get(k), Mapping):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def load_params(params_file: str | os.PathLike = "params.yaml", overrides: Mapping | None = None) -> dict[str, Any]:
    """Read ``params_file`` (relative to :data:`PROJ_ROOT` unless absolute) and deep-merge ``overrides``.

    Returns a plain dict; with :data:`TRACK_ENV` set, a mutable mapping over it that records the keys read.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: the file is not a YAML mapping, ``overrides`` is not a mapping, or a top-level key is not one
            of :data:`SECTIONS` (the message names the key and the closest section).
    """
    path = resolve_path(params_file)
    if not path.exists():
        raise FileNotFoundError(f"params file not found: {path}")
    try:
        params = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ValueError(f"{path}: not valid YAML: {e}") from None
    if not isinstance(params, Mapping):
        raise ValueError(f"{path}: expected a mapping of sections at the top level")
    if overrides is not None and not isinstance(overrides, Mapping):
        raise ValueError(f"overrides must be a mapping, got {type(overrides).__name__}")
    merged = dict(params) if overrides is None else deep_merge(params, overrides)
    unknown = [k for k in merged if k not in SECTIONS]
    if unknown:
        raise SettingsError(f"{path}: " + "; ".join(unknown_key_message(str(k), str(k), sorted(SECTIONS))
                                                     for k in unknown))
    return _TrackedParams(merged) if os.environ.get(TRACK_ENV) else merged  # type: ignore[return-value]


def stage_paths(params: Mapping) -> dict[str, Path]:
    """The ``paths`` section (data, models, reports) resolved to absolute paths."""
    defaults = {"data": "data", "models": "models", "reports": "reports"}
    given = dict(params.get("paths") or {})
    unknown = sorted(set(given) - set(defaults))
    if unknown:
        raise SettingsError("; ".join(unknown_key_message(f"paths.{k}", str(k), list(defaults)) for k in unknown))
    bad = {k: v for k, v in given.items() if not isinstance(v, (str, os.PathLike))}
    if bad:
        raise SettingsError("; ".join(f"paths.{k}: must be a folder path (a string), got {v!r}" for k, v in bad.items()))
    return {k: resolve_path(given.get(k, v)) for k, v in defaults.items()}
