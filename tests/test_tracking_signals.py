"""A process that SIGTERM or SIGHUP ends leaves its MLflow run KILLED, not RUNNING; a forked child
(a data loader worker) that gets the signal leaves the run alone."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest
from mlflow import MlflowClient

from tests.conftest import REPO_ROOT

# Opens a run and waits, as a training stage building its nets before any step and checkpoint.
WAITING = """\
import sys
from pipeline.tracking.runs import open_tracker
tracker = open_tracker(True, "killed", "train")
print(tracker.run_id, flush=True)
sys.stdin.read()
"""

# Forks a child that SIGTERM ends, then reports the child's exit code and the run's status.
FORKING = """\
import os, signal
from mlflow import MlflowClient
from pipeline.tracking.runs import open_tracker
tracker = open_tracker(True, "forked", "train")
ready, told = os.pipe()
child = os.fork()
if child == 0:
    os.write(told, b"1")  # signalled only once the child runs: one landing mid-fork can be lost
    signal.pause()
    os._exit(0)
os.read(ready, 1)
os.kill(child, signal.SIGTERM)
code = os.waitstatus_to_exitcode(os.waitpid(child, 0)[1])
print(code, MlflowClient().get_run(tracker.run_id).info.status, flush=True)
tracker.finish()
"""

# Two runs; the handlers come back when the last one finishes.
HANDLERS = """\
import signal
from pipeline.tracking.runs import open_tracker
before = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGHUP)
first, second = (open_tracker(True, "handlers", name) for name in ("a", "b"))
now = lambda: (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGHUP))
replaced = now() != before
first.finish()
still = now() != before
second.finish()
print(replaced, still, now() == before)
"""


def _python(code: str, **kwargs) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    return subprocess.Popen(
        [sys.executable, "-c", code],
        env=env,
        stdout=subprocess.PIPE,
        text=True,
        # As a process started from a terminal: under nohup (or a background job) the suite
        # inherits SIGHUP / SIGINT ignored, and so would the child.
        preexec_fn=_default_signals,
        **kwargs,
    )


def _default_signals() -> None:
    for signum in (signal.SIGHUP, signal.SIGINT):
        signal.signal(signum, signal.SIG_DFL)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP], ids=["SIGTERM", "SIGHUP"])
def test_a_run_killed_before_any_checkpoint_ends_killed(signum):
    process = _python(WAITING, stdin=subprocess.PIPE)
    run_id = process.stdout.readline().strip()
    process.send_signal(signum)
    assert process.wait(timeout=60) == -signum  # it still dies of the signal
    store = MlflowClient(os.environ["MLFLOW_TRACKING_URI"])  # the child's, this test's own
    assert store.get_run(run_id).info.status == "KILLED"


def test_a_forked_child_ending_leaves_the_run_running():
    process = _python(FORKING)
    out, _ = process.communicate(timeout=60)
    assert process.returncode == 0
    assert out.split() == [str(-signal.SIGTERM), "RUNNING"]


def test_the_signal_handlers_come_back_when_the_last_run_finishes():
    process = _python(HANDLERS)
    out, _ = process.communicate(timeout=60)
    assert out.split() == ["True", "True", "True"]
