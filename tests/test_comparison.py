"""Paired comparison over seeds: t interval values, verdicts, pairing by seed, bad input."""

from __future__ import annotations

import math

import pytest

from hierars.comparison import paired_by_seed, paired_difference


def test_interval_matches_t_table():
    d = paired_difference([1.0, 2.0, 3.0], [0.0, 0.0, 0.0])
    half = 4.302652729911275 / math.sqrt(3)  # t_{0.975, 2} * sd(=1) / sqrt(3)
    assert d.mean == pytest.approx(2.0) and d.n == 3
    assert (d.lo, d.hi) == (pytest.approx(2.0 - half), pytest.approx(2.0 + half))
    assert d.verdict == "no measurable difference"  # the interval [-0.48, 4.48] contains 0


def test_verdicts_and_format():
    better = paired_difference([0.30, 0.32, 0.31], [0.20, 0.21, 0.22])
    assert better.lo > 0 and better.verdict == "better"
    worse = paired_difference([0.20, 0.21, 0.22], [0.30, 0.32, 0.31])
    assert worse.hi < 0 and worse.verdict == "worse"
    assert better.format() == "+10.0 [+7.5, +12.5] better"  # sd 0.01, half-width 4.30 * 0.01 / sqrt(3)
    assert better.verdict_as("slower", "faster") == "slower" and worse.verdict_as("slower", "faster") == "faster"
    assert worse.format(scale=1e3, digits=0, verdicts=("slower", "faster")) == "-100 [-125, -75] faster"
    single = paired_difference([0.5], [0.4])
    assert math.isnan(single.lo) and single.verdict == "no measurable difference"


def test_pairing_by_seed_uses_common_seeds_only():
    d = paired_by_seed({0: 0.5, 1: 0.6, 2: 0.7, 5: 9.0}, {2: 0.5, 1: 0.5, 0: 0.5})
    assert d.n == 3 and d.mean == pytest.approx(0.1)
    with pytest.raises(ValueError, match="no seed in common"):
        paired_by_seed({0: 1.0}, {1: 1.0})


def test_bad_input():
    with pytest.raises(ValueError, match="equal-length"):
        paired_difference([1.0, 2.0], [1.0])
    with pytest.raises(ValueError, match="equal-length"):
        paired_difference([], [])
    with pytest.raises(ValueError, match="level"):
        paired_difference([1.0, 2.0], [0.0, 0.0], level=1.5)
