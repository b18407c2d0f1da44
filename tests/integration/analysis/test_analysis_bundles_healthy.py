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

import copy
import math
import re
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from analysis_support import INTERVAL, JSON, apply, wait_stable, wait_status
from mdsandbox.sandbox import Sandbox
from mdsandbox.testing import KubeAPI
from mdsandbox.traffic import Body, TrafficGenerator, image_request
from modeldeploy import spec as s
from modeldeploy.analysis import presets
from modeldeploy.analysis.evaluate import INDICATOR_SUFFIX, describe_bounds
from modelkit.pricing import price_for
from operator_process import OperatorProcess, run
from song_analyzer.scoring import SYSTEM_PROMPT, user_message

pytestmark = pytest.mark.integration

EXAMPLES = Path(__file__).resolve().parents[3] / "examples"
GPU = "nvidia.com/gpu"
SCALED_DOWN = "1s"  # pauses, bake: every wait the example spells in minutes
PROGRESS_DEADLINE = "3m"
PROMOTION_TIMEOUT = 200  # seconds: past PROGRESS_DEADLINE, and within the traffic's max_seconds
# Every example reads its API_KEY from a Secret; the traffic sends it.
API_KEY = "example-test-key"

# A typical song: 2,300 prompt and 300 answer tokens. The fake upstream answers a score in
# about 40 tokens, so the rest of the answer's price is made up in prompt tokens (at the
# fine-tune's output/input price ratio): each song costs what a typical one does.
SONG_MODEL_PRICE = price_for("ft:gpt-4o-mini")
FAKE_ANSWER_TOKENS = 40


def realistic_song(n: int) -> dict[str, str]:
    """A distinct song (no cache hits) whose analysis costs what a typical song's does."""
    assert SONG_MODEL_PRICE is not None
    ratio = SONG_MODEL_PRICE.output_per_million / SONG_MODEL_PRICE.input_per_million
    prompt_tokens = 2_300 + math.ceil((300 - FAKE_ANSWER_TOKENS) * ratio)
    artist, title = "Traffic", f"Song {n}"
    header = user_message(artist, title, "")
    verse = f"Verse {n}: under the neon rain we count the seconds till the morning comes\n"
    size = 4 * prompt_tokens - len(SYSTEM_PROMPT) - len(header)
    return {"artist": artist, "title": title, "lyrics": (verse * (size // len(verse) + 1))[:size]}


def chat_request(n: int) -> dict[str, Any]:
    return {"model": "gpt-4o-mini",
            "messages": [{"role": "user", "content": f"Summarise ticket {n} in one line."}]}


# The orchestrator is asked the same few questions again and again (that is what its
# cache is for): seven hot prompts, in an order that reaches every pod.
HOT_PROMPTS = 7


def orchestrator_query(n: int) -> dict[str, str]:
    return {"prompt": f"What are your opening hours? (variant {n * 3 % HOT_PROMPTS})"}


def textgen_request(n: int) -> dict[str, Any]:
    return {"seed": n, "temperature": 0.8, "num_chars": 16, "prompt": "The "}


@dataclass(frozen=True)
class Case:
    service: str
    path: str  # the model route the traffic posts to
    body: Body
    rate: float
    new_env: dict[str, str]  # what makes the new revision new
    headers: dict[str, str] = field(default_factory=lambda: {"X-API-Key": API_KEY})
    # Both revisions, for the sandbox's sake: pods share two CPU cores there.
    sandbox_env: dict[str, str] = field(default_factory=dict)
    interval: str = INTERVAL


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


def example(service: str) -> JSON:
    manifest: JSON = yaml.safe_load((EXAMPLES / f"{service}.yaml").read_text())
    return manifest


def in_sandbox(manifest: JSON, namespace: str, sandbox: Sandbox, data_dir: Path,
               env: dict[str, str] | None = None, interval: str = INTERVAL) -> JSON:
    """The example, run in the session sandbox and scaled down in time (not in thresholds)."""
    md = copy.deepcopy(manifest)
    md["metadata"]["namespace"] = namespace
    spec = md["spec"]
    pod = spec["template"]["spec"]
    for key in ("nodeSelector", "tolerations", "volumes"):
        pod.pop(key, None)
    for container in pod["containers"]:
        container.pop("volumeMounts", None)
        ((container.get("resources") or {}).get("limits") or {}).pop(GPU, None)
        container["readinessProbe"]["periodSeconds"] = 1
        overrides = {"ORCH_DATA_DIR": str(data_dir), **(env or {})}
        for var in container["env"]:
            if str(var.get("value", "")).startswith("https://api.openai.com"):
                var["value"] = sandbox.fake_upstream_url
            if var["name"] in overrides:
                var["value"] = overrides.pop(var["name"])
        container["env"] += [{"name": k, "value": v} for k, v in overrides.items()
                             if k != "ORCH_DATA_DIR"]
    strategy = spec["strategy"]
    for step in (strategy.get("canary") or {}).get("steps", []):
        if (step.get("pause") or {}).get("duration"):
            step["pause"]["duration"] = SCALED_DOWN
    if "blueGreen" in strategy:
        strategy["blueGreen"]["autoPromotionSeconds"] = 1
    analysis = spec["analysis"]
    analysis["interval"] = interval
    analysis["provider"] = {"prometheus": {"address": sandbox.prometheus_url, "timeout": "2s"}}
    spec.setdefault("rollback", {})["bakeTime"] = SCALED_DOWN
    spec["progressDeadline"] = PROGRESS_DEADLINE
    return md


def secrets_for(manifest: JSON, namespace: str) -> Iterator[JSON]:
    """The Secrets the example's env reads, with values the fakes accept."""
    for container in manifest["spec"]["template"]["spec"]["containers"]:
        for var in container["env"]:
            ref = (var.get("valueFrom") or {}).get("secretKeyRef")
            if ref:
                value = API_KEY if var["name"] == "API_KEY" else "placeholder"
                yield {"apiVersion": "v1", "kind": "Secret",
                       "metadata": {"name": ref["name"], "namespace": namespace},
                       "stringData": {ref["key"]: value}}


def gateway(namespace: str) -> JSON:
    return {
        "apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway",
        "metadata": {"name": "gateway", "namespace": namespace},
        "spec": {"gatewayClassName": "sandbox",
                 "listeners": [{"name": "http", "protocol": "HTTP", "port": 80}]},
    }


def http_route(name: str, namespace: str, route: str) -> JSON:
    return {
        "apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
        "metadata": {"name": route, "namespace": namespace},
        "spec": {"parentRefs": [{"name": "gateway"}], "rules": [{
            "matches": [{"path": {"type": "PathPrefix", "value": "/"}}],
            "backendRefs": [{"name": f"{name}-stable", "port": 80}],
        }]},
    }


def expected_gates(manifest: JSON) -> dict[str, str]:
    """Gate name -> threshold text, as the bundle and the example's overrides set them."""
    gates, _ = presets.resolve(s.Analysis.model_validate(manifest["spec"]["analysis"]))
    return {g.name: describe_bounds(g.threshold_range, g.relative_to_stable)
            for g in gates if not g.traffic_guard}


def gates_of(status: JSON) -> dict[str, JSON]:
    return {m["name"]: m for m in status.get("analysis") or []
            if not m["name"].endswith(INDICATOR_SUFFIX)}


ANALYSIS_STEP = re.compile(r"step \d+/\d+ analysis: analysis [1-9]")


class Rollout:
    """Polls the resource, remembering the last passing round of its analysis step (the
    rounds that decide promotion), and promotes
    past the example's indefinite pauses as its user would (``modeldeploy promote``)."""

    def __init__(self, sandbox: Sandbox, kube: KubeAPI, namespace: str, manifest: JSON,
                 stable: str) -> None:
        self.sandbox, self.kube, self.namespace, self.stable = sandbox, kube, namespace, stable
        self.name: str = manifest["metadata"]["name"]
        steps = (manifest["spec"]["strategy"].get("canary") or {}).get("steps", [])
        self.manual_pauses = {i for i, step in enumerate(steps) if step.get("pause") == {}}
        self.last_round: JSON = {}
        self.started = time.monotonic()
        # What the rollout went through, for the failure message: (s, phase, step, message).
        self.timeline: list[tuple[float, str, int, str]] = []

    def wait(self, predicate: Callable[[JSON], bool], what: str, timeout: float = 120) -> JSON:
        def seen(status: JSON) -> bool:
            moment = (status.get("phase", ""), status.get("currentStep", 0),
                      status.get("message", ""))
            if not self.timeline or self.timeline[-1][1:] != moment:
                self.timeline.append((round(time.monotonic() - self.started, 1), *moment))
            # The analysis step's rounds are the ones that decide promotion.
            if ANALYSIS_STEP.match(status.get("message", "")) and status.get("analysis"):
                self.last_round = status
            return predicate(status)

        try:
            return wait_status(self.kube, self.namespace, self.name, seen, what=what, timeout=timeout)
        except AssertionError as error:
            raise AssertionError(f"{error}\n{self.describe_timeline()}") from None

    def describe_timeline(self) -> str:
        return "\n".join(f"{at:6.1f}s {phase} step {step}: {message}"
                         for at, phase, step, message in self.timeline)

    def promoted(self) -> JSON:
        promoted_at: set[int] = set()

        def done(status: JSON) -> bool:
            step = status.get("currentStep")
            if (status.get("phase") == "Paused" and step in self.manual_pauses
                    and step not in promoted_at):
                promoted_at.add(step)
                run(["modeldeploy", "-n", self.namespace, "promote", self.name],
                    Path(self.sandbox.kubeconfig))
                return False
            # A pause for inconclusive rounds (a canary still starting) resumes on its own.
            return status.get("phase") in ("RolledBack", "Failed") or (
                status.get("phase") == "Succeeded" and status.get("stableRevision") != self.stable)

        # The operator gives up on its own after progressDeadline (3m here) without progress:
        # wait past it, so a slow but healthy rollout on a loaded machine is not cut short.
        return self.wait(done, "the new revision promoted", timeout=PROMOTION_TIMEOUT)


@pytest.mark.parametrize("case", CASES)
def test_a_healthy_new_revision_passes_every_gate_of_its_bundle_and_is_promoted(
    case: Case, sandbox: Sandbox, kube: KubeAPI, namespace: str, operator: OperatorProcess,
    tmp_path: Path,
) -> None:
    original = example(case.service)
    name = original["metadata"]["name"]
    for secret in secrets_for(original, namespace):
        kube.create(secret)
    canary_spec = original["spec"]["strategy"].get("canary") or {}
    route = ((canary_spec.get("trafficRouting") or {}).get("gatewayAPI") or {}).get("httpRoute")
    if route:
        apply(gateway(namespace), sandbox)
        apply(http_route(name, namespace, route), sandbox)
    apply(in_sandbox(original, namespace, sandbox, tmp_path, case.sandbox_env, case.interval),
          sandbox)
    stable = wait_stable(kube, namespace, name, timeout=120)
    url = (sandbox.route_url(namespace, route) if route else sandbox.service_url(namespace, name))
    preview = (original["spec"]["strategy"].get("blueGreen") or {}).get("previewService")
    rollout = Rollout(sandbox, kube, namespace, original, stable)

    def traffic(base_url: str, rate: float) -> TrafficGenerator:
        return TrafficGenerator(base_url + case.path, body=case.body, rate=rate,
                                headers=case.headers, max_seconds=300, timeout_s=15)

    with ExitStack() as running:
        served = [running.enter_context(traffic(url, case.rate))]
        apply(in_sandbox(original, namespace, sandbox, tmp_path,
                         {**case.sandbox_env, **case.new_env}, case.interval), sandbox)
        if preview:
            # Probes and scrapes reach the preview, no model request does: no verdict yet.
            idle = rollout.wait(
                lambda st: gates_of(st).get("error-rate", {}).get("verdict") == "Inconclusive",
                "an inconclusive pre-promotion round of the idle preview", timeout=90,
            )
            assert idle.get("stableRevision") == stable, "promoted on probes alone"
            assert "no model requests in the window" in gates_of(idle)["error-rate"]["message"]
            served.append(running.enter_context(
                traffic(sandbox.service_url(namespace, preview), case.rate / 2)))
        promoted = rollout.promoted()
    responses = [r for generator in served for r in generator.responses()]

    assert promoted["phase"] == "Succeeded", "\n".join(
        [rollout.describe_timeline(),
         *(f"{m['name']}: {m['verdict']} {m.get('message')}" for m in promoted.get("analysis") or [])])
    assert promoted["history"][0]["outcome"] == "Promoted"
    last = gates_of(rollout.last_round)
    assert {gate: m["threshold"] for gate, m in last.items()} == expected_gates(original)
    assert {gate: m["verdict"] for gate, m in last.items()} == dict.fromkeys(last, "Pass"), last
    assert not [m for m in rollout.last_round["analysis"] if m["verdict"] == "Fail"]
    # The analysis judged real traffic, and that traffic was served.
    answered = sum(r.ok for r in responses)
    assert answered >= 0.99 * len(responses) > 0, TrafficGenerator.statuses(responses)
