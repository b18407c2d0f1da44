"""`hack/bench chat-proxy`, run tiny to prove it works (its timings are never asserted)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[3]


def test_the_chat_proxy_benchmark_measures_both_paths_and_checks_the_answers() -> None:
    result = subprocess.run(
        [str(REPO_ROOT / "hack" / "bench"), "chat-proxy", "--requests", "5", "--warmup", "1"],
        capture_output=True, text=True, timeout=180, cwd=REPO_ROOT,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )
    assert result.returncode == 0, result.stdout + result.stderr
    rows = {line.split()[0]: line.split()[1:] for line in result.stdout.splitlines()
            if line.split() and line.split()[0] in ("direct", "chat-proxy", "added")}
    assert set(rows) == {"direct", "chat-proxy", "added"}, result.stdout
    assert all(len(figures) == 4 for figures in rows.values()), result.stdout
    assert "same completion both ways: yes" in result.stdout


def test_a_bad_argument_is_refused_naming_it() -> None:
    result = subprocess.run(
        [str(REPO_ROOT / "hack" / "bench"), "chat-proxy", "--requests", "0"],
        capture_output=True, text=True, timeout=60, cwd=REPO_ROOT,
    )
    assert result.returncode == 2
    assert "--requests must be at least 1" in result.stderr
