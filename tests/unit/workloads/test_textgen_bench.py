"""`hack/bench`, the benchmark dispatcher, and its textgen benchmark (run tiny, not timed)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parents[3]
BENCH = REPO_ROOT / "hack" / "bench"


def bench(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BENCH), *args],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO_ROOT,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )


def test_help_lists_the_textgen_benchmark_with_its_summary() -> None:
    result = bench("--help")
    assert result.returncode == 0, result.stderr
    assert "textgen" in result.stdout
    assert "naive vs key/value-cached decoding" in result.stdout


def test_an_unknown_benchmark_is_refused_with_the_list() -> None:
    result = bench("no-such-benchmark")
    assert result.returncode == 2
    assert "unknown benchmark 'no-such-benchmark'" in result.stderr
    assert "textgen" in result.stderr


def test_the_textgen_benchmark_reports_both_rates_and_that_the_texts_agree() -> None:
    result = bench(
        "textgen", "--lengths", "4,6", "--repeats", "1", "--threads", "1",
        "--concurrency", "3", "--batch-chars", "5",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    single, batched = result.stdout.split("requests sent together")
    rows = [line.split() for line in single.splitlines() if line.strip()[:1].isdigit()]
    assert [row[0] for row in rows] == ["4", "6"]
    for row in rows:
        naive, cached, ratio = float(row[1]), float(row[2]), float(row[3].rstrip("x"))
        assert naive > 0 and cached > 0 and ratio > 0
    assert "produced the same text: yes" in single
    # Throughput through the service's batcher, for 1 request and for --concurrency together.
    rows = [line.split() for line in batched.splitlines() if line.strip()[:1].isdigit()]
    assert [row[0] for row in rows] == ["1", "3"]
    for row in rows:
        rate, ratio = float(row[1]), float(row[2].rstrip("x"))
        assert rate > 0 and ratio > 0
    assert "batched requests got the text each gets alone: yes" in batched


@pytest.mark.parametrize(
    ("args", "message"),
    [
        pytest.param(["--lengths", "0"], "--lengths", id="a zero length is refused by name"),
        pytest.param(["--lengths", "ten"], "--lengths", id="a non-numeric length is refused"),
        pytest.param(["--repeats", "0"], "--repeats", id="zero repeats are refused"),
        pytest.param(["--concurrency", "0"], "--concurrency", id="zero concurrency is refused"),
        pytest.param(["--batch-chars", "0"], "--batch-chars", id="zero batched chars are refused"),
    ],
)
def test_bad_benchmark_options_are_named(args: list[str], message: str) -> None:
    result = bench("textgen", *args)
    assert result.returncode == 2
    assert message in result.stderr


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_asking_for_cuda_without_a_gpu_says_so() -> None:
    result = bench("textgen", "--device", "cuda")
    assert result.returncode == 2
    assert "torch.cuda.is_available() is False" in result.stderr
