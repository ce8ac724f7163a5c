"""Engine cores die with the service: the parent watchdog kills a child whose parent was
SIGKILLed, and vLLM's engine-core entry is routed through it for spawned children."""

from __future__ import annotations

import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parents[3]

# A parent that starts a spawned child running the watchdog (as an engine core would), prints
# the child's pid, and waits to be killed.
PARENT = """
import multiprocessing as mp, sys, time
from service.lifeline import watch_parent

def child() -> None:
    watch_parent(poll_s=0.05)  # the parent may already be dead: the first check catches it
    time.sleep(600)

if __name__ == "__main__":
    p = mp.get_context("spawn").Process(target=child, daemon=False)
    p.start()
    print(p.pid, flush=True)
    time.sleep(600)
"""


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def test_a_child_dies_when_its_parent_is_killed(tmp_path: Path) -> None:
    script = tmp_path / "parent.py"
    script.write_text(PARENT)
    parent = subprocess.Popen(
        [sys.executable, str(script)], stdout=subprocess.PIPE, text=True, cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    try:
        assert parent.stdout is not None
        child = int(parent.stdout.readline())
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait(timeout=30)
        deadline = time.monotonic() + 30
        while not gone(child) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert gone(child), "the orphaned child is still running"
    finally:
        parent.kill()
        parent.wait(timeout=30)


def test_vllm_engine_core_entry_goes_through_the_watchdog() -> None:
    from vllm.v1.engine.core import EngineCoreProc

    from service import lifeline

    lifeline.install()
    lifeline.install()  # idempotent
    entry = EngineCoreProc.run_engine_core
    assert entry is lifeline.run_engine_core
    assert getattr(EngineCoreProc, lifeline._ORIGINAL) is not entry  # vLLM's own entry
    # A spawned child unpickles the target by reference: it must resolve to our wrapper.
    assert pickle.loads(pickle.dumps(entry)) is lifeline.run_engine_core
