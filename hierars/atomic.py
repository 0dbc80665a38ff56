"""Atomic file writes: a temporary file in the target folder, fsync, then ``os.replace``.

A crash, a full disk or Ctrl-C never leaves a half-written file under the final name. Every output of
hierars (checkpoints, metrics, curves, indexes, figures, rasters, predictions' sidecars) goes through here:
bytes and text through :func:`atomic_write_bytes` and friends, writers that need a file name (``savefig``,
rasterio) through :func:`atomic_path`. A full disk or a permission error raises an ``OSError`` of the same
class whose message names the output path (not the temporary name) and what to do.
"""

from __future__ import annotations

import csv
import errno
import io
import json
import os
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

__all__ = ["atomic_write_bytes", "atomic_write_text", "atomic_write_json", "atomic_write_csv", "temporary_path",
           "atomic_path", "atomic_savefig", "named_os_error"]

_HINTS = {errno.ENOSPC: "the disk is full: free some space, or point the output (params.yaml `paths`) at another disk",
          errno.EDQUOT: "the disk quota is exceeded: free some space, or write elsewhere",
          errno.EACCES: "permission denied: make the folder writable, or write elsewhere",
          errno.EPERM: "operation not permitted: make the folder writable, or write elsewhere",
          errno.EROFS: "the file system is read-only: write elsewhere"}


def named_os_error(err: OSError, path: str | os.PathLike) -> OSError:
    """The same kind of ``OSError`` (e.g. ``PermissionError``), whose message names ``path`` and what to do."""
    hint = _HINTS.get(err.errno or 0, "")
    msg = f"cannot write {path}: {err.strerror or err}" + (f" ({hint})" if hint else "")
    new = type(err)(err.errno, msg, str(path)) if err.errno is not None else OSError(msg)
    return new


def _umask() -> int:
    """The process umask (read from /proc on Linux; elsewhere set and restored at once)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def temporary_path(path: str | os.PathLike, keep_suffix: bool = False) -> Path:
    """A fresh temporary file name beside ``path`` (same folder, so ``os.replace`` is atomic); the file exists.

    Its mode is that of a file created by ``open`` (``0o666`` less the umask), not ``mkstemp``'s owner-only
    ``0o600``, so the renamed output is readable by the group and others as the umask allows. ``keep_suffix``
    ends the name with ``path``'s suffix (``.tmp.png``), for writers that pick the format from it.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp" + (path.suffix if keep_suffix else ""),
                                   dir=path.parent)
    except OSError as err:
        raise named_os_error(err, path) from None
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_umask())
    return Path(tmp)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (temp file in the same folder, fsync, ``os.replace``)."""
    with atomic_path(path, keep_suffix=False) as tmp, open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


@contextmanager
def atomic_path(path: str | os.PathLike, keep_suffix: bool = True) -> Iterator[Path]:
    """A temporary file name beside ``path`` (same suffix) to write to; renamed to ``path`` when the block ends
    without an error, deleted otherwise::

        with atomic_path(out_dir / "curve.png") as tmp:
            fig.savefig(tmp)
    """
    path = Path(path)
    tmp = temporary_path(path, keep_suffix=keep_suffix)
    try:
        yield tmp
        os.replace(tmp, path)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        raise named_os_error(err, path) from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Text version of :func:`atomic_write_bytes` (UTF-8)."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    """``obj`` as indented JSON (NaN allowed, as Python's json writes it), written atomically."""
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, allow_nan=True) + "\n")


def atomic_write_csv(path: str | os.PathLike, rows: Sequence[Mapping[str, Any]]) -> None:
    """Rows of dicts as CSV (columns: every key in first-seen order; missing cells empty), written atomically."""
    fields: list[str] = []
    for row in rows:
        fields += [k for k in row if k not in fields]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=fields or ["iteration"], lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(path, buf.getvalue())


def atomic_savefig(fig: Any, path: str | os.PathLike, **kwargs: Any) -> None:
    """``fig.savefig`` (a matplotlib figure; not imported here) through :func:`atomic_path`; the format comes
    from ``path``'s suffix. Defaults: ``dpi=110, bbox_inches="tight"``."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, **{"dpi": 110, "bbox_inches": "tight", "format": Path(path).suffix.lstrip(".") or None,
                            **kwargs})
