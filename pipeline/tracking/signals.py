"""A run whose process is ended by SIGTERM or SIGHUP (which would kill it before any cleanup) is
ended KILLED first: `watch` a run when it opens, `unwatch` it when it finishes."""

from __future__ import annotations

import os
import signal
import sys
import threading
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pipeline.tracking.runs import MlflowTracker

# MLflow runs this process opened and has not finished, and the handlers `watch` replaced.
# SIGINT is not among the signals: it raises KeyboardInterrupt, and the code unwinding from it
# ends the run (pipeline.train.run.stage_run ends it KILLED).
TERMINATING = (signal.SIGTERM, signal.SIGHUP)
_unfinished: set[MlflowTracker] = set()
_replaced: dict[int, Any] = {}
_handler_pid: int | None = None


def watch(tracker: MlflowTracker) -> None:
    global _handler_pid
    _unfinished.add(tracker)
    if threading.current_thread() is not threading.main_thread():
        return  # signal handlers can only be set from the main thread
    for signum in TERMINATING:
        current = signal.getsignal(signum)
        # An ignored signal kills nothing; None: a handler not set from Python, left alone.
        if current in (end_runs_on_signal, signal.SIG_IGN, None):
            continue
        _replaced[signum] = current
        signal.signal(signum, end_runs_on_signal)
    _handler_pid = os.getpid()


def unwatch(tracker: MlflowTracker) -> None:
    _unfinished.discard(tracker)
    if _unfinished or threading.current_thread() is not threading.main_thread():
        return
    for signum in TERMINATING:
        # A handler set over ours (a training loop's) puts ours back later; ours then passes the
        # signal on to the one it replaced.
        if signal.getsignal(signum) is end_runs_on_signal:
            signal.signal(signum, _replaced.pop(signum))


def end_runs_on_signal(signum: int, frame: Any) -> None:
    """End this process's unfinished runs KILLED, then let the signal act as it would have
    (by default: the process dies of it)."""
    # A forked child (a data loader worker) inherits the handler, not the runs.
    if os.getpid() == _handler_pid:
        for tracker in list(_unfinished):
            _end_killed(tracker, signum)
            _unfinished.discard(tracker)
    previous = _replaced.pop(signum, signal.SIG_DFL)
    signal.signal(signum, previous)
    if callable(previous):
        previous(signum, frame)
    else:
        os.kill(os.getpid(), signum)


def _end_killed(tracker: MlflowTracker, signum: int) -> None:
    """From the signal handler: one attempt (no retry sleeps while being killed)."""
    name = signal.Signals(signum).name
    try:
        tracker.client.set_terminated(tracker.run_id, status="KILLED")
        print(f"MLflow run {tracker.run_id}: KILLED by {name}", file=sys.stderr)
    except Exception as err:  # the process dies next whatever went wrong
        print(f"MLflow run {tracker.run_id}: not ended on {name} ({err})", file=sys.stderr)
