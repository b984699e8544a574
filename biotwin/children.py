"""Child processes of biotwin commands: started in their own process group, stopped with it.

A command that starts services (``biotwin dashboard``: Streamlit; ``biotwin up``: the OPC
UA twin, the ingest, the scoring and the dashboard) starts each one as the leader of a new
process group (:func:`start_group`), so that a Ctrl-C in the terminal reaches the command
only, which then stops every group it started (:func:`stop_groups`): SIGTERM to the whole
group (grandchildren too: the ingest's workers, a scenario pool), then SIGKILL to what is
left after ``timeout_s``. SIGTERM and SIGINT sent to the command itself do the same
(:func:`stop_signals`).

A child started this way also gets ``BIOTWIN_PARENT_PID``; :func:`stop_with_parent` (called
by every biotwin command and by ``python -m dashboard.serve``) asks Linux to send it
SIGTERM when that parent dies, even by SIGKILL, so no service outlives its supervisor.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence

__all__ = [
    "PARENT_ENV",
    "STOP_TIMEOUT_S",
    "run_group",
    "start_group",
    "stop_groups",
    "stop_signals",
    "stop_with_parent",
]

logger = logging.getLogger(__name__)

#: Environment variable naming the pid of the supervisor a child must not outlive.
PARENT_ENV = "BIOTWIN_PARENT_PID"
_PR_SET_PDEATHSIG = 1
#: Seconds a stopped group gets between SIGTERM and SIGKILL.
STOP_TIMEOUT_S = 5.0


def start_group(argv: Sequence[str], *, env: dict, **popen) -> subprocess.Popen:
    """Start ``argv`` as the leader of a new process group (and session), told to stop
    with this process (``BIOTWIN_PARENT_PID``)."""
    env = {**env, PARENT_ENV: str(os.getpid())}
    return subprocess.Popen(list(argv), env=env, start_new_session=True, **popen)


def _signal_group(proc: subprocess.Popen, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, sig)


def stop_groups(procs: Sequence[subprocess.Popen], *, timeout_s: float = STOP_TIMEOUT_S) -> None:
    """SIGTERM every process group in ``procs`` (in that order), wait up to ``timeout_s``
    for them all, then SIGKILL what is left; reaps the leaders.

    A group whose leader has exited is still signalled: its other members (grandchildren)
    may live on.
    """
    for proc in procs:
        _signal_group(proc, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    for proc in procs:
        try:
            proc.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            logger.warning(
                "pid %d did not stop within %.0f s of SIGTERM: killed", proc.pid, timeout_s
            )
        _signal_group(proc, signal.SIGKILL)
        proc.wait()


@contextlib.contextmanager
def stop_signals(handler: Callable[[int], None]) -> Iterator[None]:
    """Call ``handler(signum)`` on SIGTERM and SIGINT inside the block (the handlers before
    are restored after)."""
    before = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    for sig in before:
        signal.signal(sig, lambda signum, _frame: handler(signum))
    try:
        yield
    finally:
        for sig, old in before.items():
            signal.signal(sig, old)


def run_group(argv: Sequence[str], *, env: dict) -> int:
    """Run ``argv`` in its own process group until it exits, or until this process gets
    SIGTERM or SIGINT; the group is stopped either way (:func:`stop_groups`).

    Returns the child's exit code, or 128 + the signal number when a signal stopped it.
    """
    received: list[int] = []
    proc = start_group(argv, env=env)
    with stop_signals(received.append):
        try:
            while not received and proc.poll() is None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=0.5)
        finally:
            stop_groups([proc])
    return 128 + received[0] if received else proc.returncode


def stop_with_parent() -> None:
    """When started by :func:`start_group`, have Linux send SIGTERM to this process when its
    parent dies (``prctl(PR_SET_PDEATHSIG)``); exit now if the parent is already gone.
    Does nothing elsewhere (no ``BIOTWIN_PARENT_PID``, not Linux)."""
    parent = os.environ.pop(PARENT_ENV, None)
    if not parent or not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    except (OSError, AttributeError):
        logger.debug("prctl(PR_SET_PDEATHSIG) not available")
        return
    if parent.isdigit() and os.getppid() != int(parent):
        logger.warning("parent %s is gone before this process started: exiting", parent)
        sys.exit(1)
