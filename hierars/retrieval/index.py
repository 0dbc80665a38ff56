"""The archive index: stage-1 embeddings + stage-2 class-proportion vectors of every archive image.

Everything a query needs is precomputed once, so a query never runs a network on archive images:

- ``embeddings`` — ``N × D`` float32 (TKANet, D = 32), searched through faiss: exact (``IndexFlatL2``, or
  ``IndexFlatIP`` on L2-normalised vectors for cosine) or IVF (``IndexIVFFlat``, ``nlist`` lists, ``nprobe``
  probed per query) for archives of millions;
- ``proportions`` — ``N × P`` float32, all levels of the tree concatenated (:mod:`.proportions`);
- ``files`` / ``labels`` — optional per-image names and labels (length ``N``);
- a header naming the segmenter, the embedder and the tree (with content fingerprints), the proportion
  mode and the input normalisation, so that an index used with a different segmenter or tree is a clear
  :class:`~hierars.retrieval.fingerprints.IndexMismatchError` rather than silently wrong distances
  (:mod:`.fingerprints`).

File format (one file, written atomically): an uncompressed NumPy ``.npz`` archive (``allow_pickle``
off) with ``header`` (UTF-8 JSON as uint8), ``embeddings``, ``proportions`` and, for IVF, ``faiss`` (the
serialised trained IVF index, so loading does not retrain it). The exact index is rebuilt on load.
"""

from __future__ import annotations

import io
import json
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import faiss
import numpy as np
from torch import nn
from tqdm.auto import tqdm

from hierars.atomic import atomic_write_bytes
from hierars.retrieval.features import batches, compute_features
from hierars.retrieval.fingerprints import IndexMismatchError, describe
from hierars.retrieval.proportions import MODES, ProportionLayout

if TYPE_CHECKING:
    from hierars.hierarchy import Hierarchy

__all__ = ["ArchiveIndex", "METRICS"]

FORMAT = "hierars.retrieval.index"
VERSION = 1
METRICS = ("euclidean", "cosine")


class ArchiveIndex:
    """Embeddings + proportion vectors of an image archive, with a faiss stage-1 index.

    Args:
        embeddings: ``N × D`` stage-1 features.
        proportions: ``N × P`` all-level proportion vectors (``P = layout.size``).
        layout: the column layout of ``proportions`` (:class:`ProportionLayout`).
        files: optional ``N`` image names/paths; labels: optional ``N`` labels (str).
        metric: stage-1 distance, ``"euclidean"`` or ``"cosine"``.
        ivf_nlist: ``None`` for exact search, or the number of IVF lists (``1 <= nlist <= N``).
        nprobe: IVF lists probed per query (more = slower, closer to exact).
        segmenter, embedder, tree: header entries ``{"name", "fingerprint", ...}`` (see
            :func:`model_fingerprint`, :func:`tree_fingerprint`), or the model / Hierarchy objects.
        meta: any further plain-data header fields (e.g. ``mode``, ``in_channels``, normalisation).

    Raises:
        ValueError: an empty archive, mismatched lengths, non-finite values, a bad metric or nlist.
    """

    def __init__(
        self,
        embeddings: np.ndarray,
        proportions: np.ndarray,
        layout: ProportionLayout,
        *,
        files: Sequence[str] | None = None,
        labels: Sequence[str] | None = None,
        metric: str = "euclidean",
        ivf_nlist: int | None = None,
        nprobe: int = 16,
        segmenter: Any = None,
        embedder: Any = None,
        tree: Any = None,
        meta: Mapping[str, Any] | None = None,
        _faiss_index: Any = None,
    ) -> None:
        emb = np.ascontiguousarray(embeddings, dtype=np.float32)
        props = np.ascontiguousarray(proportions, dtype=np.float32)
        if emb.ndim != 2 or props.ndim != 2:
            raise ValueError(f"embeddings and proportions must be 2-D, got {emb.shape} and {props.shape}")
        if emb.shape[0] == 0:
            raise ValueError("empty archive: an index needs at least one image")
        if emb.shape[0] != props.shape[0]:
            raise ValueError(f"{emb.shape[0]} embeddings but {props.shape[0]} proportion vectors")
        if props.shape[1] != layout.size:
            raise ValueError(f"proportion vectors have {props.shape[1]} columns, the tree layout {layout.size}")
        if not (np.isfinite(emb).all() and np.isfinite(props).all()):
            raise ValueError("embeddings / proportions contain NaN or inf")
        if metric not in METRICS:
            raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")
        n = emb.shape[0]
        for name, seq in (("files", files), ("labels", labels)):
            if seq is not None and len(seq) != n:
                raise ValueError(f"{len(seq)} {name} for {n} archive images")
        if ivf_nlist is not None and not (isinstance(ivf_nlist, (int, np.integer)) and 1 <= ivf_nlist <= n):
            raise ValueError(f"ivf_nlist must be an int in [1, N={n}], got {ivf_nlist!r}")
        if nprobe < 1:
            raise ValueError(f"nprobe must be >= 1, got {nprobe}")
        self.embeddings, self.proportions, self.layout = emb, props, layout
        self.files = [str(f) for f in files] if files is not None else None
        self.labels = [str(x) for x in labels] if labels is not None else None
        self.metric, self.ivf_nlist, self.nprobe = metric, (int(ivf_nlist) if ivf_nlist else None), int(nprobe)
        self.segmenter = describe(segmenter, "model")
        self.embedder = describe(embedder, "model")
        self.tree = describe(tree, "tree")
        self.meta = dict(meta or {})
        self._vectors = self._stage1_vectors(emb)
        self._index = _faiss_index if _faiss_index is not None else self._build_faiss()
        if self.ivf_nlist:
            self._index.nprobe = self.nprobe

    # ------------------------------------------------------------------------------------ stage 1
    def __len__(self) -> int:
        return self.embeddings.shape[0]

    @property
    def dim(self) -> int:
        """Embedding size ``D``."""
        return self.embeddings.shape[1]

    def _stage1_vectors(self, x: np.ndarray) -> np.ndarray:
        if self.metric == "cosine":
            x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
        return np.ascontiguousarray(x, dtype=np.float32)

    def _build_faiss(self) -> Any:
        d = self.dim
        faiss_metric = faiss.METRIC_INNER_PRODUCT if self.metric == "cosine" else faiss.METRIC_L2
        if not self.ivf_nlist:
            index = faiss.IndexFlatIP(d) if self.metric == "cosine" else faiss.IndexFlatL2(d)
        else:
            quantizer = faiss.IndexFlatIP(d) if self.metric == "cosine" else faiss.IndexFlatL2(d)
            index = faiss.IndexIVFFlat(quantizer, d, self.ivf_nlist, faiss_metric)
            # k-means on at most 64 points per list (seeded sample): quick even for 1M vectors
            n_train = min(len(self), 64 * self.ivf_nlist)
            rng = np.random.default_rng(0)
            sample = self._vectors[np.sort(rng.choice(len(self), n_train, replace=False))]
            index.cp.min_points_per_centroid = 1
            index.cp.max_points_per_centroid = 64
            index.train(sample)
            index.quantizer_trains_alone = 0
        index.add(self._vectors)
        return index

    def _to_distance(self, raw: np.ndarray) -> np.ndarray:
        """faiss scores → distances: ``sqrt`` of squared L2, or ``1 − inner product`` for cosine."""
        if self.metric == "cosine":
            return (1.0 - raw).astype(np.float32)
        return np.sqrt(np.maximum(raw, 0.0)).astype(np.float32)

    def check_queries(self, queries: np.ndarray, what: str = "query embeddings") -> np.ndarray:
        q = np.asarray(queries, dtype=np.float32)
        if q.ndim == 1:
            q = q[None]
        if q.ndim != 2 or q.shape[1] != self.dim:
            raise ValueError(f"{what} must be Q×{self.dim} (the index's embedding size), got shape {q.shape}")
        if not np.isfinite(q).all():
            raise ValueError(f"{what} contain NaN or inf")
        return np.ascontiguousarray(q)

    def check_k(self, k: int, name: str = "k") -> int:
        if not isinstance(k, (int, np.integer)) or k < 1:
            raise ValueError(f"{name} must be a positive int, got {k!r}")
        if k > len(self):
            raise ValueError(f"{name}={k} is larger than the archive ({len(self)} images)")
        return int(k)

    def stage1(self, queries: np.ndarray, k: int, exact: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """Nearest archive images by embedding, batched.

        Args:
            queries: ``Q × D`` (or ``D``) query embeddings.
            k: results per query (``<= N``).
            exact: force exact search even on an IVF index (brute force over the stored vectors).

        Returns:
            ``(distances Q × k float32 ascending, indices Q × k int64)``. IVF rows that probe fewer than
            ``k`` vectors are completed by exact search for those queries.
        """
        q = self._stage1_vectors(self.check_queries(queries))
        k = self.check_k(k)
        if exact and self.ivf_nlist:
            flat = faiss.IndexFlatIP(self.dim) if self.metric == "cosine" else faiss.IndexFlatL2(self.dim)
            flat.add(self._vectors)
            raw, idx = flat.search(q, k)
        else:
            raw, idx = self._index.search(q, k)
            short = (idx < 0).any(1)
            if short.any():
                flat = faiss.IndexFlatIP(self.dim) if self.metric == "cosine" else faiss.IndexFlatL2(self.dim)
                flat.add(self._vectors)
                raw[short], idx[short] = flat.search(q[short], k)
        return self._to_distance(raw), idx.astype(np.int64)

    # --------------------------------------------------------------------------------- building
    @classmethod
    def build(
        cls,
        images: Iterable[Any],
        embedder: nn.Module,
        segmenter: nn.Module,
        hierarchy: Hierarchy,
        *,
        files: Sequence[str] | None = None,
        labels: Sequence[str] | None = None,
        mode: str = "jsps",
        seg_mean: Sequence[float] | None = None,
        seg_std: Sequence[float] | None = None,
        batch_size: int = 16,
        metric: str = "euclidean",
        ivf_nlist: int | None = None,
        nprobe: int = 16,
        segmenter_name: str | None = None,
        embedder_name: str | None = None,
        meta: Mapping[str, Any] | None = None,
        progress: bool = True,
    ) -> ArchiveIndex:
        """Embed and segment every archive image once and index the results (tqdm progress bar).

        Args:
            images: iterable of raw ``C × H × W`` images (arrays or tensors; consecutive same-size images
                are batched), e.g. a generator reading GeoTIFFs; ``len(images)`` sizes the bar if defined.
            embedder, segmenter, hierarchy, mode, seg_mean, seg_std: see :func:`compute_features`.
            files, labels: optional per-image names and labels stored in the index.
            metric, ivf_nlist, nprobe: stage-1 search (see the class).
            segmenter_name, embedder_name: names written in the header (e.g. checkpoint paths).
            meta: extra plain-data header fields.
        """
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        total = len(images) if hasattr(images, "__len__") else None  # type: ignore[arg-type]
        embs, props = [], []
        bands = None
        t0 = time.perf_counter()
        with tqdm(total=total, desc="index archive", unit="img", disable=not progress, dynamic_ncols=True) as bar:
            for xb in batches(images, batch_size):
                bands = bands or xb.shape[1]
                if xb.shape[1] != bands:
                    raise ValueError(f"archive images differ in band count: {xb.shape[1]} vs {bands}")
                e, p = compute_features(xb, embedder, segmenter, hierarchy, mode, seg_mean, seg_std, batch_size)
                embs.append(e)
                props.append(p)
                bar.update(xb.shape[0])
        if not embs:
            raise ValueError("empty archive: no images to index")
        seg = describe(segmenter, "model") | ({"name": segmenter_name} if segmenter_name else {})
        emb_d = describe(embedder, "model") | ({"name": embedder_name} if embedder_name else {})
        emb_d |= {"dim": int(embs[0].shape[1])}
        header_meta = {"mode": mode, "in_channels": int(bands or 0),
                       "seg_mean": None if seg_mean is None else [float(v) for v in seg_mean],
                       "seg_std": None if seg_std is None else [float(v) for v in seg_std],
                       "build_seconds": time.perf_counter() - t0, **dict(meta or {})}
        return cls(np.concatenate(embs), np.concatenate(props), ProportionLayout.from_hierarchy(hierarchy),
                   files=files, labels=labels, metric=metric, ivf_nlist=ivf_nlist, nprobe=nprobe,
                   segmenter=seg, embedder=emb_d, tree=hierarchy, meta=header_meta)

    # ---------------------------------------------------------------------------------- checking
    def check_compatible(self, segmenter: Any = None, embedder: Any = None, tree: Any = None,
                         source: str = "the index") -> None:
        """Raise :class:`IndexMismatchError` unless the given segmenter / embedder / tree (objects, header
        dicts or fingerprint strings) are the ones the index was built with (``None`` = not checked)."""
        for kind, given, stored in (("segmenter", segmenter, self.segmenter), ("embedder", embedder, self.embedder),
                                    ("tree", tree, self.tree)):
            if given is None:
                continue
            want = given if isinstance(given, str) else (describe(given, "tree" if kind == "tree" else "model")
                                                         or {}).get("fingerprint")
            have = (stored or {}).get("fingerprint")
            if have is None:
                raise IndexMismatchError(f"{source} records no {kind}; cannot check it against the one given")
            if want != have:
                name = (stored or {}).get("name", "?")
                given_name = given.get("name", "?") if isinstance(given, Mapping) else getattr(given, "name", "")
                raise IndexMismatchError(
                    f"{source} was built with {kind} {name!r} (fingerprint {have}) but the {kind} given "
                    f"{('(' + str(given_name) + ') ') if given_name else ''}has fingerprint {want}: "
                    f"rebuild the index with this {kind}, or use the {kind} it was built with")

    def check_bands(self, bands: int) -> None:
        """Raise ``ValueError`` when a query's band count differs from the archive's."""
        want = self.meta.get("in_channels")
        if want and bands != want:
            raise ValueError(f"the query has {bands} bands but the archive images have {want}")

    # ------------------------------------------------------------------------------------ files
    def header(self) -> dict[str, Any]:
        return {"format": FORMAT, "version": VERSION, "n": len(self), "dim": self.dim,
                "layout": self.layout.to_dict(), "metric": self.metric, "ivf_nlist": self.ivf_nlist,
                "nprobe": self.nprobe, "segmenter": self.segmenter, "embedder": self.embedder, "tree": self.tree,
                "files": self.files, "labels": self.labels, "meta": self.meta}

    def save(self, path: str | Path) -> Path:
        """Write the index to ``path`` atomically (module docstring: the file format)."""
        arrays = {"header": np.frombuffer(json.dumps(self.header()).encode(), dtype=np.uint8),
                  "embeddings": self.embeddings, "proportions": self.proportions}
        if self.ivf_nlist:
            arrays["faiss"] = faiss.serialize_index(self._index)
        buf = io.BytesIO()
        np.savez(buf, **arrays)
        path = Path(path)
        atomic_write_bytes(path, buf.getvalue())
        return path

    @classmethod
    def load(cls, path: str | Path, *, segmenter: Any = None, embedder: Any = None, tree: Any = None
             ) -> ArchiveIndex:
        """Read an index written by :meth:`save`; optionally check it against the models and tree in use.

        Raises:
            FileNotFoundError: no such file.
            ValueError: not an index file (or an unknown version).
            IndexMismatchError: ``segmenter`` / ``embedder`` / ``tree`` differ from the recorded ones.
        """
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"index file not found: {path}")
        try:
            with np.load(path, allow_pickle=False) as z:
                arrays = {k: z[k] for k in z.files}
            header = json.loads(arrays["header"].tobytes().decode())
        except Exception as e:  # noqa: BLE001 - any unreadable file gets the same clear message
            raise ValueError(f"{path} is not a hierars retrieval index ({type(e).__name__}: {e})") from None
        if header.get("format") != FORMAT:
            raise ValueError(f"{path} is not a hierars retrieval index (format {header.get('format')!r})")
        if header.get("version") != VERSION:
            raise ValueError(f"{path}: index format version {header.get('version')} (this code reads {VERSION})")
        fidx = faiss.deserialize_index(arrays["faiss"]) if "faiss" in arrays else None
        lay = header["layout"]
        index = cls(arrays["embeddings"], arrays["proportions"], ProportionLayout(lay["num_classes"], lay["names"]),
                    files=header["files"], labels=header["labels"], metric=header["metric"],
                    ivf_nlist=header["ivf_nlist"], nprobe=header["nprobe"], segmenter=header["segmenter"],
                    embedder=header["embedder"], tree=header["tree"], meta=header["meta"], _faiss_index=fidx)
        index.check_compatible(segmenter, embedder, tree, source=f"index {path}")
        return index

    def __repr__(self) -> str:
        kind = f"IVF{self.ivf_nlist}(nprobe={self.nprobe})" if self.ivf_nlist else "exact"
        tree = (self.tree or {}).get("name", "?")
        return (f"ArchiveIndex(n={len(self)}, dim={self.dim}, proportions={self.layout.size} "
                f"(tree {tree!r}, levels {self.layout.num_classes}), metric={self.metric}, {kind})")
