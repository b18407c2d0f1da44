"""textgen on a GPU node: `python -m textgen` with TEXTGEN_DEVICE=auto must pick CUDA and stay
deterministic there. Marked ``gpu``; skipped, with the reason, where torch sees no GPU.

Run on a GPU node: ``python -m pytest -m gpu tests/unit/workloads/test_textgen_gpu.py``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import torch
from modelkit.testing import ServiceProcess, running_module

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(
        not torch.cuda.is_available(),
        reason="no CUDA device: torch.cuda.is_available() is False; run on a GPU node",
    ),
]

API_KEY = "test-key-gpu"
AUTH = {"X-API-Key": API_KEY}


@pytest.fixture(scope="module")
def gpu_server() -> Iterator[ServiceProcess]:
    # auto, not cuda: what a GPU node's pod runs with the default setting.
    env = {"API_KEY": API_KEY, "TEXTGEN_DEVICE": "auto", "PYTHONWARNINGS": "ignore"}
    # Importing torch, initialising CUDA and loading the weights takes a while.
    with running_module("textgen", env, timeout_s=180) as service:
        yield service


def generate(server: ServiceProcess, body: dict[str, Any]) -> dict[str, Any]:
    response = httpx.post(f"{server.base_url}/generate", json=body, headers=AUTH, timeout=120)
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


def test_health_reports_the_model_on_cuda(gpu_server: ServiceProcess) -> None:
    response = httpx.get(f"{gpu_server.base_url}/health", timeout=10)
    assert response.status_code == 200, response.text
    model = response.json()["checks"]["model"]
    assert model["status"] == "ok"
    assert "cuda" in model["detail"], model["detail"]


def test_generation_runs_on_cuda_and_the_same_seed_gives_the_same_text(gpu_server: ServiceProcess) -> None:
    request = {"seed": 2024, "temperature": 0.9, "num_chars": 300, "prompt": "The keeper "}
    first = generate(gpu_server, request)
    second = generate(gpu_server, request)
    assert first["device"] == "cuda"
    assert len(first["text"]) == 300
    # 300 characters cross the 128-character context window: the refill path runs too.
    assert first["text"] == second["text"]


def test_different_seeds_give_different_text_on_cuda(gpu_server: ServiceProcess) -> None:
    bodies = [{"seed": seed, "temperature": 1.0, "num_chars": 40} for seed in (1, 2, 3)]
    texts = {generate(gpu_server, body)["text"] for body in bodies}
    assert len(texts) == 3
