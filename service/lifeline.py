"""Engine-core processes die with the service, even when the service is killed with SIGKILL.

vLLM runs each engine's core in a child process (spawned on CPU) and stops it from the
parent's shutdown path. A parent killed with SIGKILL runs no shutdown path, and vLLM's engine
core has no parent-death check of its own (only its multi-process executor's workers do), so
the core would live on, orphaned, holding its memory and cores.

:func:`install` points vLLM's engine-core entry at :func:`run_engine_core`, which starts a
watchdog thread in the child before running vLLM's own entry. The watchdog notices that the
parent is gone (the child was re-parented: ``os.getppid()`` changed) and kills the child.
It polls instead of using ``prctl(PR_SET_PDEATHSIG)`` on purpose: that signal follows the
*thread* that started the child, and the supervisor starts replacement engines from a worker
thread, which may end long before the engine should.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import threading
import time
from typing import Any

log = logging.getLogger(__name__)

POLL_S = 0.5
_ORIGINAL = "_forecast_original_run_engine_core"


def install() -> None:
    """Make every engine core started from now on watch its parent (idempotent)."""
    from vllm.v1.engine.core import EngineCoreProc

    if getattr(EngineCoreProc, _ORIGINAL, None) is not None:
        return
    setattr(EngineCoreProc, _ORIGINAL, EngineCoreProc.run_engine_core)
    # The target is pickled by reference for the spawned child: this module's function.
    EngineCoreProc.run_engine_core = staticmethod(run_engine_core)


def run_engine_core(*args: Any, **kwargs: Any) -> None:
    """vLLM's engine-core entry, with a watchdog on the parent (runs in the child)."""
    from vllm.v1.engine.core import EngineCoreProc

    watch_parent()
    original = getattr(EngineCoreProc, _ORIGINAL, EngineCoreProc.run_engine_core)  # fork vs spawn
    original(*args, **kwargs)


def watch_parent(parent_pid: int | None = None, poll_s: float = POLL_S) -> threading.Thread:
    """Start a daemon thread that SIGKILLs this process once ``parent_pid`` (default: the
    process that started this one, as multiprocessing recorded it) is no longer its parent.
    Taking the pid from the starter, not from ``os.getppid()`` now, catches a parent that
    died while this child was still importing."""
    if parent_pid is None:
        starter = multiprocessing.parent_process()
        parent_pid = starter.pid if starter is not None and starter.pid else os.getppid()

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(poll_s)
        log.warning("parent %d is gone: engine core %d exits", parent_pid, os.getpid())
        os.kill(os.getpid(), signal.SIGKILL)

    thread = threading.Thread(target=watch, name="parent-watchdog", daemon=True)
    thread.start()
    return thread
