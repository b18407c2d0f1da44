"""Every service's preset bundle promotes a healthy new revision under that service's traffic.

Each case applies the service's own example (examples/<service>.yaml) with its preset
bundle, its overrides and its steps, made to run in the session sandbox and scaled down
in time only: the analysis interval is 3 s, pauses, bake and auto-promotion 1 s. What
the sandbox cannot do is replaced, never a threshold: the model provider is the fake
upstream, the orchestrator's emptyDir is a temporary directory (the sandbox mounts no
volumes) and textgen runs on CPU (the session sandbox has no GPUs). The new revision is
healthy (same fake upstream, no faults), real traffic shaped like the service's own
flows through the Service (or HTTPRoute; for blue-green, also through the preview
Service), and the rollout must end Promoted with every gate of its last round passing,
at the bundle's (or the example's) thresholds.

chat-proxy also shows that probes are not traffic: its preview is probed but sent no
model request at first, and its pre-promotion analysis stays inconclusive until real
requests reach it.
"""

from __future__ import annotations

from contextlib import ExitStack
from pathlib import Path

import pytest
from analysis_support import apply
from bundle_support import (
    Case,
    chat_request,
    deploy_example,
    expected_gates,
    gates_of,
    in_sandbox,
    orchestrator_query,
    realistic_song,
    textgen_request,
)
from mdsandbox.sandbox import Sandbox
from mdsandbox.testing import KubeAPI
from mdsandbox.traffic import TrafficGenerator, image_request
from operator_process import OperatorProcess

pytestmark = pytest.mark.integration

CASES = [
    pytest.param(Case("image-gen", "/submit", image_request, 10,
                      {"IMAGE_TIMEOUT_S": "120"}), id="image-gen"),
    pytest.param(Case("song-analyzer", "/analyze", realistic_song, 10,
                      {"LLM_MODEL": "ft:gpt-4o-mini-2024-07-18:modeldeploy:songs:v4"}),
                 id="song-analyzer"),
    pytest.param(Case("chat-proxy", "/api/v1/chat/completions", chat_request, 10,
                      {"UPSTREAM_TIMEOUT_S": "30"}), id="chat-proxy"),
    pytest.param(Case("orchestrator", "/query", orchestrator_query, 30,
                      {"ORCH_MODELS": "gpt-4o-mini,gpt-4o,gpt-4.1-mini"}), id="orchestrator"),
    # On CPU, a textgen pod loading torch slows the pods serving beside it for ~10 s
    # (on a GPU node it would not): one torch thread per pod, and a 10 s interval, so
    # failureLimit spans that start-up as the example's 30 s interval does in production.
    pytest.param(Case("textgen", "/generate", textgen_request, 3, {"TEXTGEN_MAX_CHARS": "1000"},
                      sandbox_env={"OMP_NUM_THREADS": "1"}, interval="10s"), id="textgen"),
]


@pytest.mark.parametrize("case", CASES)
def test_a_healthy_new_revision_passes_every_gate_of_its_bundle_and_is_promoted(
    case: Case, sandbox: Sandbox, kube: KubeAPI, namespace: str, operator: OperatorProcess,
    tmp_path: Path,
) -> None:
    deployed = deploy_example(case, sandbox, kube, namespace, tmp_path)
    original, stable, rollout = deployed.original, deployed.stable, deployed.rollout

    def traffic(base_url: str, rate: float) -> TrafficGenerator:
        return TrafficGenerator(base_url + case.path, body=case.body, rate=rate,
                                headers=case.headers, max_seconds=300, timeout_s=15)

    with ExitStack() as running:
        served = [running.enter_context(traffic(deployed.url, case.rate))]
        apply(in_sandbox(original, namespace, sandbox, tmp_path,
                         {**case.sandbox_env, **case.new_env}, case.interval), sandbox)
        if deployed.preview:
            # Probes and scrapes reach the preview, no model request does: no verdict yet.
            idle = rollout.wait(
                lambda st: gates_of(st).get("error-rate", {}).get("verdict") == "Inconclusive",
                "an inconclusive pre-promotion round of the idle preview", timeout=90,
            )
            assert idle.get("stableRevision") == stable, "promoted on probes alone"
            assert "no model requests in the window" in gates_of(idle)["error-rate"]["message"]
            served.append(running.enter_context(
                traffic(sandbox.service_url(namespace, deployed.preview), case.rate / 2)))
        promoted = rollout.promoted()
    responses = [r for generator in served for r in generator.responses()]

    assert promoted["phase"] == "Succeeded", "\n".join(
        [rollout.describe_timeline(),
         *(f"{m['name']}: {m['verdict']} {m.get('message')}" for m in promoted.get("analysis") or [])])
    assert promoted["history"][0]["outcome"] == "Promoted"
    last = gates_of(rollout.last_round)
    assert {gate: m["threshold"] for gate, m in last.items()} == expected_gates(original), (
        rollout.describe_timeline())
    assert {gate: m["verdict"] for gate, m in last.items()} == dict.fromkeys(last, "Pass"), last
    assert not [m for m in rollout.last_round["analysis"] if m["verdict"] == "Fail"]
    # The analysis judged real traffic, and that traffic was served.
    answered = sum(r.ok for r in responses)
    assert answered >= 0.99 * len(responses) > 0, TrafficGenerator.statuses(responses)
