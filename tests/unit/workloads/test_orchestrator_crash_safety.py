"""The orchestrator's data file survives kill -9 at any moment of a write, and pods that
share its directory (a ReadWriteMany claim) never sweep away each other's writes.

A real writer process rewrites the confidence file continuously with the
orchestrator's own store; the test SIGKILLs it at a varying moment and loads the
file with the orchestrator's own loader. The delay before the kill is the point
of the test (it moves the kill across the write), not a synchronisation: the
test first waits, by polling a condition, until the writer has saved once.
"""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from orchestrator.confidence import FILE_NAME, ConfidenceStore, load_confidence_file
from orchestrator.persistence import FOREIGN_TEMP_STALE_S

MODEL_COUNT = 300  # a file of a few tens of kB, so a kill often lands mid-write

WRITER = f"""
import sys
from pathlib import Path
from orchestrator.confidence import ConfidenceStore

models = [f"model-{{i:03d}}" for i in range({MODEL_COUNT})]
store = ConfidenceStore.open(Path(sys.argv[1]), models)
store.save()
print("saved", flush=True)
i = 0
while True:
    store.record(models[i % len(models)], success=i % 3 != 0)
    store.save()
    i += 1
"""


def _assert_complete(data_dir: Path) -> int:
    document = load_confidence_file(data_dir / FILE_NAME)
    assert document is not None, "the data file vanished"
    assert len(document.models) == MODEL_COUNT
    outcomes = sum(entry.successes + entry.failures for entry in document.models.values())
    # Every update bumps the generation and exactly one counter: a file mixing two
    # versions would break this equality.
    assert outcomes == document.generation
    return document.generation


def test_kill_9_during_writes_never_leaves_a_file_that_fails_to_load(tmp_path: Path) -> None:
    rng = random.Random(6)
    last_generation = 0
    for _ in range(30):
        writer = subprocess.Popen(
            [sys.executable, "-c", WRITER, str(tmp_path)],
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert writer.stdout is not None
            assert writer.stdout.readline().strip() == "saved"
            time.sleep(rng.uniform(0.0, 0.05))
        finally:
            os.kill(writer.pid, signal.SIGKILL)
            writer.wait(timeout=10)
            if writer.stdout is not None:
                writer.stdout.close()
        generation = _assert_complete(tmp_path)
        assert generation >= last_generation, "a restart lost updates already on disk"
        last_generation = generation

    # The service's own start-up path loads it too, and sweeps the orphaned temp files.
    store = ConfidenceStore.open(tmp_path)
    assert store.snapshot().generation == last_generation
    assert not list(tmp_path.glob(".*.tmp"))


def test_a_pod_sharing_the_data_dir_sweeps_only_orphans_never_another_pods_write(tmp_path: Path) -> None:
    this_host = socket.gethostname()
    store = ConfidenceStore.open(tmp_path, ["model-a"])
    store.record("model-a", success=True)
    store.save()

    def temp_file(writer: str, age_s: float = 0.0) -> Path:
        path = tmp_path / f".{FILE_NAME}.{writer}.x1y2z3.tmp"
        path.write_text("{partial")
        if age_s:
            stamp = time.time() - age_s
            os.utime(path, (stamp, stamp))
        return path

    # Every pod's process may be PID 1, so a PID alone says nothing about another pod.
    other_pod_writing = temp_file("1@orchestrator-7d9f-abcde")
    other_pod_orphan = temp_file("1@orchestrator-7d9f-fghij", age_s=FOREIGN_TEMP_STALE_S + 60)
    live_local_writer = temp_file(f"{os.getppid()}@{this_host}")
    dead_local_writer = temp_file(f"{_dead_pid()}@{this_host}")
    before_hosts_were_named = temp_file(str(_dead_pid()))

    reopened = ConfidenceStore.open(tmp_path)

    assert other_pod_writing.exists(), "another pod's write in progress was removed"
    assert live_local_writer.exists(), "a live local writer's file was removed"
    assert not other_pod_orphan.exists() and not dead_local_writer.exists()
    assert not before_hosts_were_named.exists()
    assert reopened.snapshot().models["model-a"].successes == 1


def _dead_pid() -> int:
    """The PID of a process that has exited (and been reaped)."""
    finished = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                              capture_output=True, text=True, check=True)
    return int(finished.stdout)
