"""Content fingerprints of models and trees, recorded in index headers and checked on use."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

if TYPE_CHECKING:
    from hierars.hierarchy import Hierarchy

__all__ = ["IndexMismatchError", "model_fingerprint", "tree_fingerprint", "describe"]


class IndexMismatchError(ValueError):
    """An index file used with a segmenter, embedder or tree other than the one it was built with."""


def model_fingerprint(model: nn.Module) -> str:
    """SHA-256 (first 16 hex digits) of a model's state dict: parameter names, dtypes, shapes and values."""
    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        t = t.detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()[:16]


def tree_fingerprint(hierarchy: Hierarchy) -> str:
    """SHA-256 (16 hex digits) of a tree's class names per level and its root-to-leaf paths."""
    blob = json.dumps({"names": [list(n) for n in hierarchy.names], "paths": hierarchy.paths.tolist()})
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def describe(obj: Any, kind: str) -> dict[str, Any] | None:
    """Header entry for a model / tree / ready-made dict (``None`` stays ``None``)."""
    if obj is None:
        return None
    if isinstance(obj, Mapping):
        return dict(obj)
    if kind == "tree":
        return {"name": obj.name, "fingerprint": tree_fingerprint(obj), "num_classes": list(obj.num_classes)}
    return {"name": type(obj).__name__, "fingerprint": model_fingerprint(obj)}
