"""A faulty new revision of chat-proxy, orchestrator or textgen is reverted by its bundle.

Each case deploys the service's own example (``bundle_support``: its bundle, its steps, scaled
down in time only, never in thresholds), sends traffic shaped like the service's own through
the Service (or the HTTPRoute), and rolls out a new revision carrying a fault made the way it
happens in production:

- chat-proxy: the new revision points at a new upstream endpoint that fails the way the
  deployment guide says upstreams fail: 15% of the calls answer 503 and another 15% answer
  200 with a malformed body (JSON cut short, no ``choices``, ``choices: []``, a gateway's HTML
  page, in turn); the proxy answers 502 to both, 30% of the calls in all. The example is
  blue-green: the pre-promotion analysis of the preview, which gets its own share of traffic
  (half the Service's rate), reverts it by the error-rate indicator (> 10%) before it is
  ever promoted;
- orchestrator: the new revision registers a third model and turns off two feature flags
  (``FF_MODEL_SELECTION``: ask every registered model instead of the two most confident;
  ``FF_PARALLEL_EXECUTION``: one by one instead of at once), so each cache miss waits for
  three slow models in turn and pays for all three: p95 and the cost per hour jump, and
  the latency-p95 indicator (> 10 s) reverts it at the first step (5%);
- textgen: new weights of a bigger network (8 layers of 256 instead of 4 of 128) answer
  about 3 times slower than stable per character (1 thread: 261 vs 84 ms for 40 characters):
  the latency-p95 gate (within 1.2x stable) fails failureLimit + 1 rounds in a row and the
  analysis reverts it. (A 1.7x slower revision once passed that gate: the kit's histogram
  buckets were too coarse; test_kit_duration_buckets.py holds that case.)

image-gen's and song-analyzer's reverts have their own modules
(test_analysis_image_gen.py, test_analysis_song_analyzer_rollback.py). Each case records
how long the faulty revision lived, from its apply to the revert's condition
(printed as ``detection_seconds``, with the timeline: ``pytest -s``; it includes the new
pods' start-up): the README's
table of the five services is read from those figures, never asserted here.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from analysis_support import JSON, apply, condition, report_detection
from bundle_support import (
    API_KEY,
    HOT_PROMPTS,
    Case,
    chat_request,
    deploy_example,
    in_sandbox,
    textgen_request,
)
from fakeupstream import FakeUpstreamClient, running_fake_upstream
from mdsandbox.sandbox import Sandbox
from mdsandbox.testing import KubeAPI
from mdsandbox.traffic import TrafficGenerator
from operator_process import OperatorProcess

pytestmark = pytest.mark.integration


def orchestrator_mixed_query(n: int) -> dict[str, str]:
    """Two of three questions are the hot ones the cache answers; the third is new."""
    if n % 3:
        return {"prompt": f"What are your opening hours? (variant {n * 3 % HOT_PROMPTS})"}
    return {"prompt": f"Which of your plans fits a team of {n} people who travel?"}


def bigger_weights(path: Path) -> Path:
    """New weights of a network twice as deep and as wide as the packaged one, for the
    same alphabet: they load and answer like the old ones, only slower."""
    import torch
    from textgen.model import CharGPT, GPTConfig
    from textgen.weights import load_weights, save_weights

    packaged = load_weights()
    torch.manual_seed(7)
    config = GPTConfig(vocab_size=packaged.model.config.vocab_size,
                       block_size=packaged.model.config.block_size, n_layer=8, n_head=4, n_embd=256)
    save_weights(path, CharGPT(config), packaged.tokenizer, {"note": "bigger, slower weights"})
    return path


@dataclass(frozen=True)
class Fault:
    case: Case
    # What the new revision changes: its env (besides the case's sandbox_env) and its
    # spec.config (feature flags), given a directory for files and the bad upstream's URL.
    new_env: Callable[[Path, str], dict[str, str]]
    reason: str  # the Degraded condition's reason
    metrics: tuple[str, ...]  # the revert's message names one of these
    new_config: dict[str, str] = field(default_factory=dict)
    # Faults on the session's fake upstream, by model (FakeUpstreamClient.set_fault's).
    upstream_faults: dict[str, dict[str, Any]] = field(default_factory=dict)


FAULTS = [
    pytest.param(Fault(
        Case("chat-proxy", "/api/v1/chat/completions", chat_request, 10, {}),
        lambda _dir, bad_upstream: {"UPSTREAM_BASE_URL": bad_upstream},
        "RollbackIndicatorBreached", ("error-rate",),
    ), id="chat-proxy"),
    pytest.param(Fault(
        Case("orchestrator", "/query", orchestrator_mixed_query, 30, {}),
        lambda _dir, _bad: {"ORCH_MODELS": "gpt-4o-mini,gpt-4o,gpt-4.1-mini"},
        "RollbackIndicatorBreached", ("latency-p95", "cost-per-hour"),
        new_config={"FF_MODEL_SELECTION": "false", "FF_PARALLEL_EXECUTION": "false"},
        # Models as slow as they are in production: stable asks its two most confident ones
        # at once (about 4 s a miss); the new revision asks all three one by one (11 s).
        upstream_faults={"gpt-4o-mini": {"latency_s": 3.0}, "gpt-4o": {"latency_s": 4.0},
                         "gpt-4.1-mini": {"latency_s": 4.0}},
    ), id="orchestrator"),
    pytest.param(Fault(
        Case("textgen", "/generate", textgen_request, 3, {}, sandbox_env={"OMP_NUM_THREADS": "1"},
             interval="10s"),
        lambda directory, _bad: {"TEXTGEN_WEIGHTS": str(bigger_weights(directory / "v2.safetensors"))},
        "AnalysisFailed", ("latency-p95",),
    ), id="textgen"),
]


@contextmanager
def bad_upstream() -> Iterator[str]:
    """A second fake upstream (a new endpoint that is overloaded or half broken): 15% of the
    calls fail with 503 and 15% answer 200 with a malformed body. The rates run on the same
    request index and an error wins a request both hit, so ``malformed_body_rate=0.2``, which
    shares every 20th request with ``error_rate=0.15``, leaves 15% malformed bodies."""
    with running_fake_upstream() as url, FakeUpstreamClient(url) as client:
        client.set_fault("*", error_rate=0.15, status_code=503, malformed_body_rate=0.2)
        yield url
        # What it answered, by model and outcome (error, malformed, success): pytest -s.
        print(f"bad upstream answered: {client.stats()}")


def finished(stable: str) -> Callable[[JSON], bool]:
    """The rollout of the new revision is over: reverted (and the revert done), failed, or
    promoted (a fault that went unnoticed)."""
    def done(status: JSON) -> bool:
        phase = status.get("phase")
        return (phase == "RolledBack" and not status.get("revertingFrom")) or phase == "Failed" or (
            phase == "Succeeded" and status.get("stableRevision") != stable)
    return done


@pytest.mark.parametrize("fault", FAULTS)
def test_a_faulty_new_revision_is_reverted_by_its_bundle(
    fault: Fault, sandbox: Sandbox, kube: KubeAPI, namespace: str, operator: OperatorProcess,
    upstream: FakeUpstreamClient, tmp_path: Path,
) -> None:
    case = fault.case
    for model, settings in fault.upstream_faults.items():
        upstream.set_fault(model, **settings)
    deployed = deploy_example(case, sandbox, kube, namespace, tmp_path)
    rollout = deployed.rollout

    def traffic(base_url: str, rate: float) -> TrafficGenerator:
        return TrafficGenerator(base_url + case.path, body=case.body, rate=rate,
                                headers={"X-API-Key": API_KEY}, max_seconds=300, timeout_s=30)

    with ExitStack() as running:
        running.enter_context(traffic(deployed.url, case.rate))
        new = in_sandbox(deployed.original, namespace, sandbox, tmp_path,
                         {**case.sandbox_env,
                          **fault.new_env(tmp_path, running.enter_context(bad_upstream()))},
                         case.interval)
        new["spec"]["config"] = {**(new["spec"].get("config") or {}), **fault.new_config}
        applied = dt.datetime.now(dt.UTC)
        apply(new, sandbox)
        if deployed.preview:
            running.enter_context(
                traffic(sandbox.service_url(namespace, deployed.preview), case.rate / 2))
        status = rollout.wait(finished(deployed.stable), "the faulty revision reverted", timeout=200)

    timeline = rollout.describe_timeline()
    assert status["phase"] == "RolledBack", timeline
    assert status["stableRevision"] == deployed.stable, timeline
    degraded = condition(status, "Degraded")
    assert degraded["reason"] == fault.reason, (degraded, timeline)
    assert any(metric in status["message"] for metric in fault.metrics), (status["message"], timeline)
    reverted = status["history"][0]
    assert reverted["outcome"] == "RolledBack" and reverted["revision"] != deployed.stable
    report_detection(case.service, applied, status)
    print(timeline)
    # Afterwards stable serves everything again, answering every request.
    sample = TrafficGenerator(deployed.url + case.path,
                              body=lambda n: case.body(10_000 + n),
                              rate=10, max_requests=20, headers={"X-API-Key": API_KEY},
                              timeout_s=30).run()
    assert all(r.ok for r in sample), TrafficGenerator.statuses(sample)

