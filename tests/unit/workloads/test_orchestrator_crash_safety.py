"""The orchestrator's data file survives kill -9 at any moment of a write.

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
import subprocess
import sys
import time
from pathlib import Path

from orchestrator.confidence import FILE_NAME, ConfidenceStore, load_confidence_file

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
