"""The services' own examples, run by the operator in the session sandbox: shared by the
bundle scenarios (a healthy new revision promoted, a faulty one reverted).

Each example (examples/<service>.yaml) keeps its preset bundle, its overrides and its steps,
made to run in the session sandbox and scaled down in time only (:func:`in_sandbox`). What
the sandbox cannot do is replaced, never a threshold: the model provider is the fake
upstream, the orchestrator's data volume is a temporary directory (the sandbox mounts no
volumes) and textgen runs on CPU (the session sandbox has no GPUs). Traffic is shaped like
each service's own (:class:`Case`).
"""

from __future__ import annotations

import copy
import math
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from analysis_support import INTERVAL, JSON, apply, wait_stable, wait_status
from mdsandbox.sandbox import Sandbox
from mdsandbox.testing import KubeAPI
from mdsandbox.traffic import Body
from modeldeploy import spec as s
from modeldeploy.analysis import presets
from modeldeploy.analysis.evaluate import INDICATOR_SUFFIX, describe_bounds
from modelkit.pricing import price_for
from operator_process import run
from song_analyzer.scoring import SYSTEM_PROMPT, user_message

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
    """Lengths from 16 to 63 characters, as callers ask for: with one length only, every
    answer takes about as long, and a p95 near a histogram bucket's edge (0.05 s, 0.1 s)
    swings between the edges' interpolations from round to round (0.048 vs 0.083 measured
    for one revision), which no relative check can tell from a slower canary."""
    return {"seed": n, "temperature": 0.8, "num_chars": 16 + n * 37 % 48, "prompt": "The "}


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


@dataclass(frozen=True)
class Deployed:
    """An example deployed and Succeeded in the sandbox, before its new revision."""

    original: JSON  # the example as written in examples/
    name: str
    stable: str
    url: str  # where its traffic goes: the Service, or the HTTPRoute's gateway
    preview: str | None  # blue-green's preview Service
    rollout: Rollout


def deploy_example(case: Case, sandbox: Sandbox, kube: KubeAPI, namespace: str,
                   data_dir: Path) -> Deployed:
    """The service's example, its Secrets and (for gatewayAPI routing) its Gateway and
    HTTPRoute, applied and waited on until its first revision is stable."""
    original = example(case.service)
    name = original["metadata"]["name"]
    for secret in secrets_for(original, namespace):
        kube.create(secret)
    canary_spec = original["spec"]["strategy"].get("canary") or {}
    route = ((canary_spec.get("trafficRouting") or {}).get("gatewayAPI") or {}).get("httpRoute")
    if route:
        apply(gateway(namespace), sandbox)
        apply(http_route(name, namespace, route), sandbox)
    apply(in_sandbox(original, namespace, sandbox, data_dir, case.sandbox_env, case.interval),
          sandbox)
    stable = wait_stable(kube, namespace, name, timeout=120)
    url = (sandbox.route_url(namespace, route) if route else sandbox.service_url(namespace, name))
    preview = (original["spec"]["strategy"].get("blueGreen") or {}).get("previewService")
    return Deployed(original, name, stable, url, preview,
                    Rollout(sandbox, kube, namespace, original, stable))
