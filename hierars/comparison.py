"""Paired comparison of two methods over seeds: mean difference, 95 % interval, and an honest verdict.

Two runs trained with the same seeds share their data order and, where architectures match, their
initialisation draw, so the per-seed differences are paired. With ``n`` seeds the interval is Student's t on
the ``n`` differences (``n - 1`` degrees of freedom); with fewer than 2 seeds it is undefined (NaN). A
difference whose interval contains 0 is reported as "no measurable difference".
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["PairedDifference", "paired_difference", "paired_by_seed"]


@dataclass(frozen=True)
class PairedDifference:
    """Mean of ``a - b`` over paired seeds with its two-sided interval (``level``, t on ``n - 1`` d.o.f.)."""

    mean: float
    lo: float
    hi: float
    n: int
    level: float = 0.95

    @property
    def verdict(self) -> str:
        """``"better"`` / ``"worse"`` when the interval excludes 0, else ``"no measurable difference"``
        (for scores, where higher is better; see :meth:`verdict_as`)."""
        return self.verdict_as("better", "worse")

    def verdict_as(self, higher: str, lower: str) -> str:
        """``higher`` when the interval lies above 0, ``lower`` when below, else ``"no measurable difference"``;
        e.g. ``verdict_as("slower", "faster")`` for a difference of times."""
        if not (math.isfinite(self.lo) and math.isfinite(self.hi)) or self.lo <= 0.0 <= self.hi:
            return "no measurable difference"
        return higher if self.mean > 0 else lower

    def format(self, scale: float = 100.0, digits: int = 1, verdicts: tuple[str, str] = ("better", "worse")) -> str:
        """E.g. ``"+1.2 [-0.4, +2.8] no measurable difference"`` (values × ``scale``; ``verdicts`` as in
        :meth:`verdict_as`)."""
        f = f"{{:+.{digits}f}}"
        return (f"{f.format(scale * self.mean)} [{f.format(scale * self.lo)}, {f.format(scale * self.hi)}] "
                f"{self.verdict_as(*verdicts)}")


def paired_difference(a: Sequence[float], b: Sequence[float], level: float = 0.95) -> PairedDifference:
    """Paired difference ``a - b`` (equal-length sequences, element ``i`` of each from the same seed).

    Raises:
        ValueError: the sequences differ in length, are empty, or ``level`` is not in (0, 1).
    """
    a_, b_ = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a_.shape != b_.shape or a_.ndim != 1 or a_.size == 0:
        raise ValueError(f"paired_difference needs two equal-length, non-empty 1-D sequences, got {a_.shape} and "
                         f"{b_.shape}")
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")
    d = a_ - b_
    mean, n = float(d.mean()), int(d.size)
    if n < 2:
        return PairedDifference(mean, math.nan, math.nan, n, level)
    from scipy.stats import t  # scipy is a declared dependency; imported here to keep `import hierars` light

    half = float(t.ppf(0.5 + level / 2, n - 1)) * float(d.std(ddof=1)) / math.sqrt(n)
    return PairedDifference(mean, mean - half, mean + half, n, level)


def paired_by_seed(a: Mapping[int, float], b: Mapping[int, float], level: float = 0.95) -> PairedDifference:
    """:func:`paired_difference` over the seeds present in both ``{seed: value}`` mappings.

    Raises:
        ValueError: no seed in common.
    """
    seeds = sorted(set(a) & set(b))
    if not seeds:
        raise ValueError(f"no seed in common: {sorted(a)} vs {sorted(b)}")
    return paired_difference([a[s] for s in seeds], [b[s] for s in seeds], level)
