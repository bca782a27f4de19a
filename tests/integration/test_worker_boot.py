"""A Dramatiq worker process killed while it boots: `market worker` notices and exits promptly, so the
platform restarts it, instead of its parent sitting out Dramatiq's 30 s wait for a "booted" signal."""

import os
import signal
from pathlib import Path

from tests.integration.conftest import base_env, wait_until

BOOT_WAIT_S = 30  # Dramatiq's default --worker-fork-timeout: what a stalled parent sits out


def children(pid: int) -> list[int]:
    """The live child processes of `pid` (Linux /proc)."""
    try:
        return [int(child) for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except FileNotFoundError:
        return []


def test_a_worker_process_killed_while_booting_ends_the_worker_command_well_before_the_boot_wait(
        tmp_path, databases, processes):
    processes.env = base_env(tmp_path, databases)
    processes.run("migrate")
    worker = processes.start("worker", "worker", "billing")

    # Importing the service's modules takes the child far longer than this poll, so it dies mid-boot.
    forked = wait_until("the worker process to be forked", lambda: children(worker.pid), timeout=60, interval=0.005)
    for child in forked:  # the worker process, and any helper process Dramatiq or multiprocessing started
        os.kill(child, signal.SIGKILL)

    wait_until("`market worker` to exit", lambda: worker.poll() is not None, timeout=BOOT_WAIT_S / 2)
    assert worker.returncode != 0
    log = processes.log("worker")
    assert "exited unexpectedly" in log and "ready for action" not in log, log
