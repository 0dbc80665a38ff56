"""Shared fixtures: the real data beside the checkout (skipped cleanly when absent), tree files."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
import torch

from hierars.hierarchy import _TREES_DIR
from hierars.project import PROJ_ROOT

torch.set_num_threads(int(os.environ.get("HIERARS_TEST_THREADS", "2")))

SHARED_DATA = Path(os.environ.get("HIERARS_SHARED_DATA", PROJ_ROOT.parent / "shared" / "data"))
TREES = _TREES_DIR


@pytest.fixture(autouse=True, scope="session")
def _default_sigint() -> None:
    """Python's default Ctrl-C handling for the whole session. A test runner started in the background (``cmd &`` in
    a non-interactive shell, ``nohup``) inherits SIGINT *ignored*, and so does every process it starts (SIG_IGN
    survives exec): the tests that send SIGINT to ``fit`` or to a real ``dvc repro`` would then see nothing happen.
    (Found in a fresh-clone CI trial started with ``nohup ... &``: both failed there and passed in a terminal.)"""
    previous = signal.getsignal(signal.SIGINT)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous if previous is not None else signal.SIG_DFL)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data`` (or ``$HIERARS_SHARED_DATA``); skips the test when it is not there."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data not available at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(scope="session")
def trees_dir() -> Path:
    return TREES
