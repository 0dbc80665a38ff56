"""Project paths and parameters: ``PROJ_ROOT``, path resolution, and ``params.yaml`` loading (project layer).

Every path in hierars resolves from :data:`PROJ_ROOT`, so notebooks behave the same whether
JupyterLab starts the kernel in ``notebooks/`` or ``dvc repro`` runs from the repository root.
Each stage validates its own section of the loaded dict with a pydantic model that lives next to
the stage's code (e.g. ``hierars.data.PrepareConfig``).
"""

from __future__ import annotations

import copy
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

__all__ = ["PROJ_ROOT", "resolve_path", "deep_merge", "load_params", "stage_paths"]


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

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: the file is not a YAML mapping, or ``overrides`` is not a mapping.
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
    if overrides is None:
        return dict(params)
    if not isinstance(overrides, Mapping):
        raise ValueError(f"overrides must be a mapping, got {type(overrides).__name__}")
    return deep_merge(params, overrides)


def stage_paths(params: Mapping) -> dict[str, Path]:
    """The ``paths`` section (data, models, reports) resolved to absolute paths."""
    defaults = {"data": "data", "models": "models", "reports": "reports"}
    given = dict(params.get("paths") or {})
    unknown = set(given) - set(defaults)
    if unknown:
        raise ValueError(f"unknown key(s) in params 'paths': {sorted(unknown)}")
    return {k: resolve_path(given.get(k, v)) for k, v in defaults.items()}
