"""HIR-style two-stage retrieval (core layer: takes models, tensors and arrays; no files but its own).

- :mod:`.tkanet` — TKANet (32-d stage-1 embeddings), :func:`train_tkanet`, checkpoints;
- :mod:`.proportions` — class-proportion vectors from a hierarchical segmenter (one level or all);
- :mod:`.distances` — weighted Manhattan (stage 2), Euclidean / cosine (stage 1);
- :mod:`.features` — :func:`compute_features`: embeddings + proportions of raw images;
- :mod:`.index` — :class:`ArchiveIndex`: embeddings + proportions, faiss exact / IVF, atomic save / load;
- :mod:`.fingerprints` — model / tree fingerprints and :class:`IndexMismatchError`;
- :mod:`.search` — :func:`cbir`, :func:`lcbir`, :func:`hir` (top-K then re-rank to top-k);
- :mod:`.metrics` — P@k, the HIR / DeepHash mAP@k and the standard AP@k;
- :mod:`.evaluation` — :func:`evaluate_methods`: CBIR / LCBIR / HIR rows of HIR Tables IV and V.
"""

from hierars.retrieval.distances import cosine, euclidean, weighted_manhattan
from hierars.retrieval.evaluation import evaluate_methods, hir_methods, run_method
from hierars.retrieval.features import compute_features
from hierars.retrieval.fingerprints import IndexMismatchError, model_fingerprint, tree_fingerprint
from hierars.retrieval.index import ArchiveIndex
from hierars.retrieval.metrics import (
    average_precision_hir,
    map_at_k_hir,
    map_at_k_standard,
    precision_at_k,
    relevance,
    retrieval_metrics,
)
from hierars.retrieval.proportions import (
    ProportionLayout,
    proportions_from_labels,
    proportions_from_logits,
    segment_proportions,
)
from hierars.retrieval.search import SearchResult, cbir, hir, lcbir, rerank
from hierars.retrieval.tkanet import TKA, TKANet, TrainResult, embed, load_tkanet, save_tkanet, train_tkanet

__all__ = [
    "TKA", "TKANet", "TrainResult", "train_tkanet", "embed", "save_tkanet", "load_tkanet",
    "ProportionLayout", "proportions_from_labels", "proportions_from_logits", "segment_proportions",
    "weighted_manhattan", "euclidean", "cosine",
    "ArchiveIndex", "IndexMismatchError", "compute_features", "model_fingerprint", "tree_fingerprint",
    "SearchResult", "cbir", "lcbir", "hir", "rerank",
    "relevance", "precision_at_k", "map_at_k_hir", "map_at_k_standard", "average_precision_hir",
    "retrieval_metrics", "evaluate_methods", "hir_methods", "run_method",
]  # fmt: skip
