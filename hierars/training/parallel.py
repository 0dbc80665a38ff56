"""Train independent seeds at the same time, one process each (``train.seed_workers``).

Why: the default CPU profile trains small models on 64-px tiles, where a second torch thread inside one step
buys almost nothing (measured on the 2-core machine, FPN-64 / ConvNeXt-atto, batch 8: flat 0.153 s per step on
1 thread vs 0.177 s wall on 2 threads; BHCCM + HSC 0.180 s vs 0.281 s), while two single-thread processes side by
side each keep their 1-thread speed (0.132-0.142 s and 0.171-0.172 s measured concurrently). So a run's seeds go
to ``seed_workers`` processes with ``num_threads // seed_workers`` torch threads each.

How: the workers are **forked** (Linux), so the seed tasks (closures over datasets, trees and models) need no
pickling; each returns :func:`~hierars.training.loop.fit`'s metrics, or its exception, through a pipe. A seed's
result does not depend on which worker ran it or on the order: every seed seeds its own generators and writes to
its own folder, so one worker process per seed gives the same checkpoints as the sequential loop run with the
same thread count (``tests/test_parallel_seeds.py`` checks this with ``torch.equal``). Where fork is not available
(Windows, macOS' default) or under torchrun, the seeds run one after another.

Signals: each worker runs in a process group of its own, so signals reach it from one place only, its parent:
the parent's first SIGINT / SIGTERM (Ctrl-C in the terminal, or papermill / Jupyter interrupting the kernel) is
forwarded as SIGTERM, on which :class:`~hierars.training.signals.StopOnSignal` in the worker's ``fit`` finishes the
step, writes a checkpoint and stops; a second SIGINT is forwarded as SIGINT (stop at once, as Ctrl-C twice does in
one process). The parent then raises the first worker's :class:`~hierars.training.signals.TrainingInterrupted`.
A worker whose parent dies (papermill's SIGKILL 5 s after its SIGINT) gets SIGTERM (Linux ``PR_SET_PDEATHSIG``),
so it still checkpoints, however long its step takes. (With the workers in the parent's group, a group signal
would reach a worker twice, directly and forwarded, in an order that depends on scheduling.)

Progress: workers do not draw bars (their output would interleave); they count steps in a shared counter and the
parent draws one bar for the whole run (every seed's iterations).
"""

from __future__ import annotations

import ctypes
import logging
import multiprocessing as mp
import os
import signal
import sys
import traceback
from collections.abc import Callable, Sequence
from multiprocessing.connection import Connection, wait
from typing import Any

from tqdm.auto import tqdm

__all__ = ["SeedTask", "can_fork", "run_seed_tasks"]

log = logging.getLogger(__name__)

#: ``task(on_step) -> result``: trains one seed; ``on_step(n)`` is called after every optimiser step.
SeedTask = Callable[[Callable[[int], None] | None], Any]

_PR_SET_PDEATHSIG = 1  # linux/prctl.h


def can_fork() -> bool:
    """Whether seed workers can be forked here (Linux; macOS forks are unsafe with Objective-C/Accelerate)."""
    return sys.platform.startswith("linux") and "fork" in mp.get_all_start_methods()


def run_seed_tasks(tasks: Sequence[SeedTask], labels: Sequence[str], workers: int, threads: int, total_steps: int,
                   desc: str = "train", progress: bool = True) -> list[Any]:
    """Run ``tasks`` (one per seed) on ``workers`` forked processes with ``threads`` torch threads each.

    Args:
        tasks: callables ``task(on_step) -> result`` (result must be picklable: fit's metrics dict).
        labels: one per task, for messages (e.g. ``"seed 1"``).
        workers: processes at once (``>= 2``; callers run ``workers == 1`` in process themselves).
        threads: ``torch.set_num_threads`` in each worker.
        total_steps: sum of the tasks' iterations still to run, for the progress bar.
        desc, progress: the progress bar's label; ``progress=False`` hides it.

    Returns:
        The tasks' results, in task order.

    Raises:
        The first failing task's exception (a worker's TrainingInterrupted first, if any), re-raised in this
        process with the worker's traceback text attached as its ``__cause__``'s message.
    """
    if len(tasks) != len(labels):
        raise ValueError(f"{len(tasks)} tasks but {len(labels)} labels")
    ctx = mp.get_context("fork")
    counter = ctx.Value("q", 0)
    results: dict[int, Any] = {}
    errors: dict[int, tuple[BaseException, str]] = {}
    pending = list(range(len(tasks)))
    running: dict[Connection, tuple[int, Any]] = {}
    received: list[int] = []

    def forward(signum: int, frame: Any) -> None:
        received.append(signum)
        name = signal.Signals(signum).name
        # first signal: SIGTERM to the workers (each checkpoints once, ignoring repeats); a second SIGINT: SIGINT
        # again, which stops a worker at once (as Ctrl-C twice does in one process)
        fwd = signal.SIGINT if signum == signal.SIGINT and received.count(signal.SIGINT) > 1 else signal.SIGTERM
        log.warning("%s received: the seed workers write their checkpoints and stop", name)
        for _, proc in running.values():
            if proc.is_alive():
                try:
                    os.kill(proc.pid, fwd)
                except ProcessLookupError:
                    pass

    previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    in_main = _in_main_thread()
    if in_main:
        for s in previous:
            signal.signal(s, forward)
    pbar = tqdm(total=total_steps, desc=f"{desc} ({len(tasks)} seeds, {workers} at once)", disable=not progress,
                mininterval=2.0, dynamic_ncols=True)
    try:
        while pending or running:
            while pending and len(running) < workers and not received:
                i = pending.pop(0)
                parent_end, child_end = ctx.Pipe(duplex=False)
                proc = ctx.Process(target=_worker, args=(tasks[i], child_end, counter, threads),
                                   name=f"hierars-{labels[i].replace(' ', '')}", daemon=False)
                proc.start()
                child_end.close()
                running[parent_end] = (i, proc)
            if not running:
                break
            for conn in wait(list(running), timeout=1.0):
                i, proc = running.pop(conn)
                try:
                    ok, payload, text = conn.recv()
                except EOFError:  # the worker died without answering (killed, out of memory)
                    proc.join()
                    ok, payload, text = False, RuntimeError(
                        f"{labels[i]}: the worker process exited with code {proc.exitcode} without a result"), ""
                conn.close()
                proc.join()
                if ok:
                    results[i] = payload
                else:
                    errors[i] = (payload, text)
                    received.append(0)  # stop starting new seeds after a failure
            pbar.n = counter.value
            pbar.refresh()
        pbar.n = counter.value
    finally:
        pbar.close()
        for _, proc in running.values():  # only on an exception here: do not leave workers behind
            proc.terminate()
            proc.join()
        if in_main:
            for s, h in previous.items():
                signal.signal(s, h)
    if errors:
        from hierars.training.signals import TrainingInterrupted

        order = sorted(errors, key=lambda i: (not isinstance(errors[i][0], TrainingInterrupted), i))
        exc, text = errors[order[0]]
        if text:
            raise exc from _WorkerTraceback(f"in the worker of {labels[order[0]]}:\n{text}")
        raise exc
    if len(results) != len(tasks):
        missing = [labels[i] for i in range(len(tasks)) if i not in results]
        raise RuntimeError(f"stopped by a signal before training {', '.join(missing)}; run the same command again")
    return [results[i] for i in range(len(tasks))]


class _WorkerTraceback(Exception):
    """Carries a worker's formatted traceback (exceptions lose theirs when pickled across processes)."""


def _in_main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


def _worker(task: SeedTask, conn: Connection, counter: Any, threads: int) -> None:
    """Body of a forked seed worker: single-threaded torch, plain stderr, result or exception to ``conn``."""
    import torch

    os.setpgid(0, 0)  # signals come from the parent only (forwarded), never from the terminal's group as well
    _die_with_parent()
    # a Jupyter kernel's sys.stdout/stderr forward to the parent's sockets; a fork must not write to them
    sys.stdout, sys.stderr = sys.__stdout__, sys.__stderr__
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.StreamHandler) and not isinstance(handler, logging.FileHandler):
            handler.setStream(sys.__stderr__)
    for s in (signal.SIGINT, signal.SIGTERM):  # the parent's forwarding handler is not for us
        signal.signal(s, signal.default_int_handler if s == signal.SIGINT else signal.SIG_DFL)
    torch.set_num_threads(max(1, threads))

    def on_step(n: int = 1) -> None:
        with counter.get_lock():
            counter.value += n

    try:
        result = task(on_step)
        conn.send((True, result, ""))
    except BaseException as exc:  # noqa: BLE001 — every failure goes back to the parent, which re-raises it
        text = traceback.format_exc()
        try:
            conn.send((False, exc, text))
        except Exception:  # an exception that does not pickle: send its text
            conn.send((False, RuntimeError(f"{type(exc).__name__}: {exc}"), text))
    finally:
        conn.close()
        # skip atexit handlers and buffered-IO flushes inherited from the parent (kernel sockets, tqdm locks)
        os._exit(0)


def _die_with_parent() -> None:
    """Ask Linux to send SIGTERM to this worker when its parent dies (then fit checkpoints and stops)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    except (OSError, AttributeError):  # not Linux / no prctl: the worker finishes its seed, then exits
        pass
