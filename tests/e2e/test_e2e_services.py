"""The five model services' own examples on a real cluster: for each of image-gen,
song-analyzer, chat-proxy, orchestrator and textgen, the service's example
(examples/<service>.yaml) is deployed, a healthy new revision is promoted by its preset bundle
with every gate of its last analysis round passing, then a faulty new revision is reverted
(the integration tier's test_analysis_bundles_healthy.py, test_analysis_bundles_faulty.py,
test_analysis_image_gen.py and test_analysis_song_analyzer_rollback.py, through the Kubernetes
API only).

One test per service does both rollouts, one after the other on the same resource: the
faulty revision is measured against a stable that was itself promoted by the bundle.

What the example keeps, and what is changed (:func:`manifest`):
- Its preset bundle, its overrides, its steps, its replicas, its memory limits and every
  threshold. Only time is scaled down: timed pauses and the bake take 5 s, blue-green's
  autoPromotionSeconds 5, analysis.interval is 15s, progressDeadline 2m, readiness
  probes run every second. Pauses without a duration (``pause: {}``) are
  promoted with the CLI, as a user would (``modeldeploy promote``), during the healthy
  rollout only.
- The provider is E2E_PROMETHEUS (as test_rollouts.py). The model provider is the fake
  upstream deployed beside the service: any env value starting with https://api.openai.com
  becomes its Service link variables, ``http://$(FAKEUPSTREAM_SERVICE_HOST):...`` (no DNS
  name needed). OPENAI_API_KEY is a plain "not-set" and API_KEY is dropped (the examples read
  both from Secrets; the traffic sends no key).
- No nodeSelector, tolerations or nvidia.com/gpu limit (kind has no GPU: textgen runs on CPU,
  one torch thread per pod, OMP_NUM_THREADS=1, as the integration tier runs it, since its
  pods share CPUs), no volumes or volumeMounts (the sandbox mounts none): the orchestrator's
  ORCH_DATA_DIR is a per-pod directory, ``/tmp/orchestrator-$(POD_NAME)`` (POD_NAME from the
  fieldRef metadata.name), and it runs without its config.json (its env and spec.config name
  the models and flags).
- The orchestrator routes by ``trafficRouting: {replicas: {}}`` instead of its example's
  gatewayAPI HTTPRoute: traffic through a Gateway cannot be sent through the Kubernetes API
  (test_e2e_gateway_api.py covers that router).

Traffic is shaped like each service's own (the integration tier's bodies), sent back to back
through the API server's Service proxy by a few workers while both rollouts run; chat-proxy's
preview Service gets its own traffic once the preview is up (its pre-promotion analysis
measures the preview's model requests; probes are not traffic).

The healthy revision changes what the integration tier's healthy case changes (image-gen:
IMAGE_TIMEOUT_S 180 -> 120; song-analyzer: a new fine-tune; chat-proxy: UPSTREAM_TIMEOUT_S
120 -> 30; orchestrator: a third model; textgen: TEXTGEN_MAX_CHARS 2000 -> 1000). The faults:
- image-gen: the first revision runs dall-e-3 (the example's comment: the canonical canary is
  dall-e-3 -> gpt-image-1); the faulty revision switches IMAGE_MODEL to gpt-image-1, which the
  upstream is told to hang on half the calls (timeout_rate 0.5, hang_s 5), with
  IMAGE_TIMEOUT_S scaled down from 180 to 1: the timeout-rate indicator (max 10%) reverts it.
- song-analyzer: a bad fine-tune: the new LLM_MODEL answers 30% of the songs with content
  that is not the JSON asked for (malformed_rate 0.3) and a second slower (latency_s 1): the
  uncached-error-rate indicator (max 5%) reverts it.
- chat-proxy: the new revision's UPSTREAM_BASE_URL points at a second fake upstream
  ("badupstream", created before the first revision, so its link variables exist) that
  answers 15% of the calls 503 and 15% with a 200 whose body is not a chat completion
  (error_rate 0.15, malformed_body_rate 0.2: the rates run on one request index and equal
  ones would overlap, see hack/fakeupstream/faults.py): the pre-promotion analysis of the
  preview reverts it by the error-rate indicator (max 10%) before it is ever promoted.
- orchestrator: the new revision turns off FF_MODEL_SELECTION and FF_PARALLEL_EXECUTION
  (spec.config): each cache miss asks all three models one by one (the upstream is told to
  take 3-4 s a model), and one question in three is new: latency-p95 (max 10 s) or
  cost-per-hour reverts it.
- textgen: the integration tier's fault (new, bigger and slower weights in a file the test
  writes) cannot reach a pod on a cluster without a volume, and the sandbox mounts none.
  Here the faulty revision is a botched weights release: TEXTGEN_WEIGHTS names a file the
  image does not have, the canary's pod exits at start (CrashLoopBackOff), and the operator
  reverts it when progressDeadline passes: phase Degraded, condition Degraded with
  reason ProgressDeadlineExceeded, history outcome Aborted (the operator's words for a
  revision that never became ready; RolledBack is kept for analysis verdicts). The rounds of
  analysis meanwhile find no model requests (the canary has no ready pod), and they never
  hold the rollout as inconclusive: progressDeadline decides.

Environment: E2E_PROMETHEUS (default kube-prometheus-stack's
``http://prometheus-operated.monitoring:9090``); the images as e2e_scenario.py says
(``modeldeploy/<service>:E2E_IMAGE_TAG``).
"""

from __future__ import annotations

import copy
import os
import re
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml
from e2e_cluster import Body, Cluster
from e2e_scenario import TAG, UPSTREAM_IMAGE, deploy_first, modeldeploy, phase, settled

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
PROMETHEUS = os.environ.get("E2E_PROMETHEUS", "http://prometheus-operated.monitoring:9090")
GPU = "nvidia.com/gpu"
UPSTREAM, BAD_UPSTREAM = "fakeupstream", "badupstream"
SCALED_DOWN = "5s"  # timed pauses and the bake: every wait the examples spell in minutes
INTERVAL = "15s"
PROGRESS_DEADLINE = "2m"
INDICATOR_SUFFIX = " (rollback indicator)"
MANUAL_PAUSE = "paused until `modeldeploy promote`"
# An analysis step's message between its rounds, e.g. "step 2/5 analysis: analysis 1/4 passed".
ANALYSIS_ROUND = re.compile(r"^step \d+/\d+ analysis: analysis \d+/\d+ passed")


def link(service: str) -> str:
    """A Service's OpenAI base URL from the link variables every kubelet gives a pod."""
    prefix = service.upper().replace("-", "_")
    return f"http://$({prefix}_SERVICE_HOST):$({prefix}_SERVICE_PORT)/v1"


# -- traffic shaped like each service's own (tests/integration/analysis/bundle_support.py) --

# A typical song: 2,300 prompt and 300 answer tokens. The fake upstream answers in about 40
# tokens, so the rest of the answer's price is made up in prompt tokens at the fine-tune's
# output/input price ratio (4): 3,340 prompt tokens of about 4 characters, less the
# service's system prompt (732 characters) and header (38). Each song costs what a typical
# one does (about $0.00105), well within the example's cost-per-request gate ($0.002).
LYRICS_CHARS = 4 * (2_300 + (300 - 40) * 4) - 732 - 38


def realistic_song(n: int) -> Body:
    """A distinct song (no cache hits) of a typical song's length."""
    verse = f"Verse {n}: under the neon rain we count the seconds till the morning comes\n"
    lyrics = (verse * (LYRICS_CHARS // len(verse) + 1))[:LYRICS_CHARS]
    return {"artist": "Traffic", "title": f"Song {n}", "lyrics": lyrics}


def image_request(n: int) -> Body:
    return {"prompt": f"a lighthouse in a storm, study {n}"}


def chat_request(n: int) -> Body:
    return {"model": "gpt-4o-mini",
            "messages": [{"role": "user", "content": f"Summarise ticket {n} in one line."}]}


HOT_PROMPTS = 7  # the orchestrator is asked the same few questions again and again


def orchestrator_query(n: int) -> Body:
    return {"prompt": f"What are your opening hours? (variant {n * 3 % HOT_PROMPTS})"}


def orchestrator_mixed_query(n: int) -> Body:
    """Two of three questions are the hot ones the cache answers; the third is new."""
    if n % 3:
        return orchestrator_query(n)
    return {"prompt": f"Which of your plans fits a team of {n} people who travel?"}


def textgen_request(n: int) -> Body:
    """Lengths from 16 to 63 characters, as callers ask for (one length only would put every
    answer near one histogram bucket edge, and p95 would swing between rounds)."""
    return {"seed": n, "temperature": 0.8, "num_chars": 16 + n * 37 % 48, "prompt": "The "}


# -- the cases ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Fault:
    """The faulty revision and what its revert must look like."""

    env: dict[str, str]  # what the new revision changes in its env
    names: tuple[str, ...]  # the status message names one of these
    config: dict[str, str] = field(default_factory=dict)  # and in its spec.config
    upstream: dict[str, Body] = field(default_factory=dict)  # faults by model, on the upstream
    bad_upstream: Body | None = None  # a second upstream with this fault on every model
    body: Callable[[int], Body] | None = None  # the traffic, if shaped otherwise
    failing: str | None = None  # this indicator's last measurement is Fail
    phase: str = "RolledBack"
    outcome: str = "RolledBack"
    reason: str = "RollbackIndicatorBreached"
    timeout_s: int = 240


@dataclass(frozen=True)
class Service:
    name: str  # examples/<name>.yaml, its metadata.name and image
    path: str  # the model route, through the Service proxy
    body: Callable[[int], Body]
    healthy_env: dict[str, str]  # what makes the healthy revision new
    gates: dict[str, str]  # the bundle's gates with the example's thresholds, as status says
    fault: Fault
    workers: int = 2
    first_env: dict[str, str] = field(default_factory=dict)  # the first revision's, kept later
    upstream: bool = True  # whether it calls the fake upstream
    promote_timeout_s: int = 480


SONG_MODEL = "ft:gpt-4o-mini-2024-07-18:modeldeploy:songs:{}"  # priced as a gpt-4o-mini fine-tune
SERVICES = [
    pytest.param(Service(
        "image-gen", "submit", image_request, {"IMAGE_TIMEOUT_S": "120"},
        {"success-rate": "min 0.95", "timeout-rate": "max 0.02", "mean-latency": "max 150"},
        Fault({"IMAGE_MODEL": "gpt-image-1", "IMAGE_TIMEOUT_S": "1"},
              ("timeout-rate", "success-rate", "error-rate"),
              upstream={"gpt-image-1": {"timeout_rate": 0.5, "hang_s": 5}},
              failing="timeout-rate"),
        first_env={"IMAGE_MODEL": "dall-e-3"},
    ), id="image-gen"),
    pytest.param(Service(
        "song-analyzer", "analyze", realistic_song, {"LLM_MODEL": SONG_MODEL.format("v4")},
        {"error-rate": "max 0.02", "latency-p95": "max 10", "cost-per-request": "max 0.002"},
        Fault({"LLM_MODEL": SONG_MODEL.format("v5")}, ("uncached-error-rate",),
              upstream={SONG_MODEL.format("v5"): {"malformed_rate": 0.3, "latency_s": 1.0}},
              failing="uncached-error-rate"),
    ), id="song-analyzer"),
    pytest.param(Service(
        "chat-proxy", "api/v1/chat/completions", chat_request, {"UPSTREAM_TIMEOUT_S": "30"},
        {"error-rate": "max 0.05", "availability": "min 1"},
        Fault({"UPSTREAM_BASE_URL": link(BAD_UPSTREAM)}, ("error-rate",),
              bad_upstream={"error_rate": 0.15, "malformed_body_rate": 0.2, "status_code": 503},
              failing="error-rate"),
    ), id="chat-proxy"),
    pytest.param(Service(
        "orchestrator", "query", orchestrator_query,
        {"ORCH_MODELS": "gpt-4o-mini,gpt-4o,gpt-4.1-mini"},
        {"error-rate": "max 0.05", "latency-p95": "<= 1.2x stable", "cache-hit-rate": "min 0.5",
         "cost-per-hour": "max 10"},
        # Models as slow as they are in production: stable asks its two most confident ones at
        # once (about 4 s a miss); the new revision asks all three one by one (11 s). Enough
        # workers that misses reach the canary within each 15 s window.
        Fault({}, ("latency-p95", "cost-per-hour"),
              config={"FF_MODEL_SELECTION": "false", "FF_PARALLEL_EXECUTION": "false"},
              upstream={"gpt-4o-mini": {"latency_s": 3.0}, "gpt-4o": {"latency_s": 4.0},
                        "gpt-4.1-mini": {"latency_s": 4.0}},
              body=orchestrator_mixed_query),
        workers=8,
    ), id="orchestrator"),
    pytest.param(Service(
        "textgen", "generate", textgen_request, {"TEXTGEN_MAX_CHARS": "1000"},
        {"error-rate": "max 0.01", "latency-p95": "<= 1.2x stable"},
        Fault({"TEXTGEN_WEIGHTS": "/opt/textgen/weights/v2.safetensors"},
              ("not ready within progressDeadline",),
              phase="Degraded", outcome="Aborted", reason="ProgressDeadlineExceeded",
              timeout_s=300),
        first_env={"OMP_NUM_THREADS": "1"}, upstream=False,
    ), id="textgen"),
]


# -- the manifests ------------------------------------------------------------------------


def fake_upstream(namespace: str, name: str) -> tuple[Body, Body]:
    """The fake OpenAI-compatible upstream as a Deployment and its Service."""
    labels = {"app.kubernetes.io/name": name}
    container = {
        "name": "fakeupstream", "image": UPSTREAM_IMAGE, "command": ["python", "-m", "fakeupstream"],
        "env": [{"name": "PORT", "value": "8080"}],
        "ports": [{"name": "http", "containerPort": 8080}],
        "readinessProbe": {"httpGet": {"path": "/health", "port": "http"}, "periodSeconds": 1},
    }
    deployment = {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "spec": {"replicas": 1, "selector": {"matchLabels": labels},
                 "template": {"metadata": {"labels": labels}, "spec": {"containers": [container]}}},
    }
    service = {
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "spec": {"selector": labels, "ports": [{"name": "http", "port": 8080, "targetPort": "http"}]},
    }
    return deployment, service


def container_env(env: list[Body], overrides: dict[str, str]) -> list[Body]:
    """The example's env made to run here (see the module docstring), then ``overrides``."""
    result: list[Body] = []
    for var in env:
        name = var["name"]
        if name == "API_KEY":
            continue
        if name == "OPENAI_API_KEY":
            var = {"name": name, "value": "not-set"}
        elif str(var.get("value", "")).startswith("https://api.openai.com"):
            var = {"name": name, "value": link(UPSTREAM)}
        elif name == "ORCH_DATA_DIR":
            result.append({"name": "POD_NAME",
                           "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}})
            var = {"name": name, "value": "/tmp/orchestrator-$(POD_NAME)"}
        result.append(var)
    return with_env(result, overrides)


def with_env(env: list[Body], overrides: dict[str, str]) -> list[Body]:
    """``env`` with ``overrides`` set in place, the new ones last."""
    result = [{"name": v["name"], "value": overrides[v["name"]]} if v["name"] in overrides else v
              for v in env]
    present = {v["name"] for v in env}
    return result + [{"name": k, "value": v} for k, v in overrides.items() if k not in present]


def manifest(service: Service, namespace: str) -> Body:
    """examples/<service>.yaml, made to run here and scaled down in time only."""
    example = yaml.safe_load((REPO / "examples" / f"{service.name}.yaml").read_text())
    md: Body = copy.deepcopy(example)
    md["metadata"] = {"name": example["metadata"]["name"], "namespace": namespace}
    spec = md["spec"]
    pod = spec["template"]["spec"]
    for key in ("nodeSelector", "tolerations", "volumes"):
        pod.pop(key, None)
    for container in pod["containers"]:
        container["image"] = f"modeldeploy/{service.name}:{TAG}"
        container.pop("volumeMounts", None)
        ((container.get("resources") or {}).get("limits") or {}).pop(GPU, None)
        container["readinessProbe"]["periodSeconds"] = 1
        container["env"] = container_env(container.get("env", []), service.first_env)
    strategy = spec["strategy"]
    canary = strategy.get("canary")
    if canary is not None:
        for step in canary["steps"]:
            if (step.get("pause") or {}).get("duration"):
                step["pause"]["duration"] = SCALED_DOWN
        if "gatewayAPI" in (canary.get("trafficRouting") or {}):
            canary["trafficRouting"] = {"replicas": {}}
    if "blueGreen" in strategy:
        strategy["blueGreen"]["autoPromotionSeconds"] = 5
    spec["analysis"]["interval"] = INTERVAL
    spec["analysis"]["provider"] = {"prometheus": {"address": PROMETHEUS}}
    spec.setdefault("rollback", {})["bakeTime"] = SCALED_DOWN
    spec["progressDeadline"] = PROGRESS_DEADLINE
    return md


# -- watching a rollout -------------------------------------------------------------------


class Rollout:
    """Watches one rollout of a new revision: remembers the last round of its analysis steps
    (the rounds that decide promotion) and what it went through, for failure messages."""

    def __init__(self, cluster: Cluster, namespace: str, md: Body, stable: str) -> None:
        self.cluster, self.namespace, self.stable = cluster, namespace, stable
        self.name: str = md["metadata"]["name"]
        self.last_round: Body = {}
        self.started = time.monotonic()
        self.timeline: list[tuple[float, str, int, str]] = []
        self.promoted_at: set[int] = set()

    def seen(self, obj: Body) -> None:
        status: Body = obj.get("status") or {}
        if (obj["metadata"].get("generation") != status.get("observedGeneration")
                or status.get("stableRevision") != self.stable):
            return  # the previous rollout's, or the next one's
        moment = (status.get("phase", ""), status.get("currentStep", 0), status.get("message", ""))
        if not self.timeline or self.timeline[-1][1:] != moment:
            self.timeline.append((round(time.monotonic() - self.started, 1), *moment))
        if ANALYSIS_ROUND.search(status.get("message", "")) and status.get("analysis"):
            self.last_round = status

    def describe(self) -> str:
        return "\n".join(f"{at:6.1f}s {phase_} step {step}: {message}"
                         for at, phase_, step, message in self.timeline)

    def wait(self, done: Callable[[Body], bool], timeout_s: int) -> Body:
        def observed(obj: Body) -> bool:
            self.seen(obj)
            return done(obj)

        try:
            found = self.cluster.wait_for_model_deployment(self.namespace, self.name, observed, timeout_s)
        except AssertionError as error:
            raise AssertionError(f"{error}\n{self.describe()}") from None
        self.seen(found)
        return found

    def promoted(self, timeout_s: int) -> Body:
        """Wait for the end of a healthy rollout, promoting past its indefinite pauses."""

        def done(obj: Body) -> bool:
            status = obj.get("status") or {}
            step: int = status.get("currentStep") or 0
            if (phase(obj) == "Paused" and MANUAL_PAUSE in status.get("message", "")
                    and step not in self.promoted_at):
                self.promoted_at.add(step)
                modeldeploy(self.cluster, self.namespace, "promote", self.name)
                return False
            return settled(obj) and not status.get("revertingFrom")

        return self.wait(done, timeout_s)

    def reverted(self, timeout_s: int) -> Body:
        """Wait for the end of a faulty rollout (or its manual pause: it got that far)."""

        def done(obj: Body) -> bool:
            status = obj.get("status") or {}
            return (settled(obj) and not status.get("revertingFrom")) or (
                phase(obj) == "Paused" and MANUAL_PAUSE in status.get("message", ""))

        return self.wait(done, timeout_s)


@contextmanager
def preview_traffic(cluster: Cluster, namespace: str, preview: str, service: Service,
                    body: Callable[[int], Body], rollout: Rollout) -> Iterator[dict[int, int]]:
    """Traffic to blue-green's preview Service, once the preview is up (its pre-promotion
    analysis measures the preview's model requests; probes are not traffic)."""

    def previewing(obj: Body) -> bool:
        status = obj.get("status") or {}
        return settled(obj) or (
            status.get("observedGeneration") == obj["metadata"].get("generation")
            and bool(status.get("canaryRevision")) and (status.get("currentStep") or 0) >= 1)

    rollout.wait(previewing, 180)
    with cluster.traffic(namespace, preview, "http", service.path, body,
                         workers=service.workers) as counts:
        yield counts


def new_revision(cluster: Cluster, namespace: str, name: str, env: dict[str, str],
                 config: dict[str, str]) -> None:
    """Apply a new template (env) and spec.config in one write: one new revision."""
    spec = copy.deepcopy(cluster.get_model_deployment(namespace, name)["spec"])
    container = spec["template"]["spec"]["containers"][0]
    container["env"] = with_env(container.get("env", []), env)
    if config:
        spec["config"] = {**(spec.get("config") or {}), **config}
    cluster.replace_model_deployment_spec(namespace, name, spec)


def gates_of(status: Body) -> dict[str, Body]:
    """The gates measured, without the rollback indicators and the traffic guard."""
    return {m["name"]: m for m in status.get("analysis") or []
            if not m["name"].endswith(INDICATOR_SUFFIX) and not m["name"].startswith("(")}


def condition(status: Body, type_: str) -> Body:
    found: Body = next(c for c in status.get("conditions") or [] if c["type"] == type_)
    return found


def set_fault(cluster: Cluster, namespace: str, upstream: str, model: str, fault: Body) -> None:
    code = cluster.proxy(namespace, upstream, "http", "PUT", f"admin/faults/{model}", fault)
    assert code == 200, f"{upstream} refused the fault on {model}: {code}"


def answered(counts: dict[int, int]) -> tuple[int, int]:
    return counts.get(200, 0), sum(counts.values())


# -- the scenario -------------------------------------------------------------------------


@pytest.mark.parametrize("service", SERVICES)
def test_a_services_example_promotes_a_healthy_revision_and_reverts_a_faulty_one(
    cluster: Cluster, namespace: str, service: Service
) -> None:
    fault = service.fault
    if service.upstream:
        cluster.create_deployment_and_service(namespace, *fake_upstream(namespace, UPSTREAM))
        if fault.bad_upstream is not None:  # before the first revision: its link variables
            cluster.create_deployment_and_service(namespace, *fake_upstream(namespace, BAD_UPSTREAM))
            cluster.wait_for_deployment_ready(namespace, BAD_UPSTREAM)
        cluster.wait_for_deployment_ready(namespace, UPSTREAM)
    md = manifest(service, namespace)
    name = md["metadata"]["name"]
    preview: str | None = (md["spec"]["strategy"].get("blueGreen") or {}).get("previewService")
    first = deploy_first(cluster, md)

    # A healthy new revision: promoted by the bundle, every gate of its last round passing.
    rollout = Rollout(cluster, namespace, md, first)
    previewed: dict[int, int] = {}
    with cluster.traffic(namespace, name, "http", service.path, service.body,
                         workers=service.workers) as served:
        new_revision(cluster, namespace, name, service.healthy_env, {})
        if preview:
            with preview_traffic(cluster, namespace, preview, service, service.body,
                                 rollout) as previewed:
                done = rollout.promoted(service.promote_timeout_s)
        else:
            done = rollout.promoted(service.promote_timeout_s)
    timeline = rollout.describe()
    status = done["status"]
    analysis = "\n".join(f"{m['name']}: {m['verdict']} {m.get('message')}"
                         for m in status.get("analysis") or [])
    assert phase(done) == "Succeeded", f"{timeline}\n{analysis}"
    promoted = status["stableRevision"]
    assert promoted != first, timeline
    assert status["history"][0]["outcome"] == "Promoted", status["history"][0]
    assert status["history"][0]["revision"] == promoted
    last = gates_of(rollout.last_round)
    assert {gate: m["threshold"] for gate, m in last.items()} == service.gates, timeline
    assert {gate: m["verdict"] for gate, m in last.items()} == dict.fromkeys(last, "Pass"), last
    assert not [m for m in rollout.last_round["analysis"] if m["verdict"] == "Fail"], last
    ok, total = answered(served)
    assert ok >= 0.99 * total > 0, f"the Service's traffic: {served}"
    if preview:
        ok, total = answered(previewed)
        assert ok >= 0.99 * total > 0, f"the preview's traffic: {previewed}"

    # A faulty new revision: reverted, the stable revision kept.
    for model, settings in fault.upstream.items():
        set_fault(cluster, namespace, UPSTREAM, model, settings)
    if fault.bad_upstream is not None:
        set_fault(cluster, namespace, BAD_UPSTREAM, "*", fault.bad_upstream)
    rollout = Rollout(cluster, namespace, md, promoted)
    body = fault.body or service.body
    with cluster.traffic(namespace, name, "http", service.path, body,
                         workers=service.workers) as served:
        new_revision(cluster, namespace, name, fault.env, fault.config)
        if preview:
            with preview_traffic(cluster, namespace, preview, service, body, rollout):
                done = rollout.reverted(fault.timeout_s)
        else:
            done = rollout.reverted(fault.timeout_s)
    timeline = rollout.describe()
    status = done["status"]
    assert phase(done) == fault.phase, timeline
    assert status["stableRevision"] == promoted, "the stable revision must not change"
    assert not status.get("canaryRevision") and not status.get("canaryWeight"), status
    reverted = status["history"][0]
    assert reverted["outcome"] == fault.outcome and reverted["revision"] != promoted, reverted
    degraded = condition(status, "Degraded")
    assert (degraded["status"], degraded["reason"]) == ("True", fault.reason), (degraded, timeline)
    assert any(n in status["message"] for n in fault.names), (status["message"], timeline)
    if fault.failing is not None:
        indicator = gates_of_indicators(status)[fault.failing]
        assert indicator["verdict"] == "Fail", indicator
    assert served.get(200, 0) > 0, f"no request answered during the faulty rollout: {served}"


def gates_of_indicators(status: Body) -> dict[str, Body]:
    return {m["name"].removesuffix(INDICATOR_SUFFIX): m for m in status.get("analysis") or []
            if m["name"].endswith(INDICATOR_SUFFIX)}
