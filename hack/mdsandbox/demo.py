"""``./hack/demo``: the whole story in under a minute, on one machine, with nothing left running.

What it does, each step for real:

1. starts the local sandbox (API server, process kubelet, data plane, Prometheus scraping
   every second) in a fresh folder;
2. ``kubectl apply -f crds/`` and runs ``modeldeploy-operator --standalone`` as a process;
3. deploys song-analyzer (pointed at the sandbox's fake OpenAI upstream) and sends it live
   traffic: a few new songs a second through the Service's data-plane port;
4. rolls out a healthy new fine-tune (promoted) and then a failing one (its upstream
   model fails 30% of calls), which the rollback indicator ``uncached-error-rate > 5%`` reverts;
5. prints the timeline (elapsed time, step, weight, each metric against its thresholds,
   the decision) and a summary, then stops the operator and the sandbox.

On a terminal a single status line updates in place below the timeline; when the output
is not a terminal (CI, a pipe) progress comes as a plain line every few seconds instead.
Exit status: 0 when both rollouts ended as expected, 1 with the reason when a step did not
happen by its deadline, 130 on Ctrl-C (the clean-up runs in every case).

Why these settings: the analysis interval (3 s) is also the PromQL rate window, so it
must span a few scrapes (1 s); two replicas make the only intermediate weight 50%; the
bake is short because the demo's point is the decisions, not the wait.

The building blocks (operator process, manifest, traffic, rollout follower) are reused
by ``hack/bench rollback``.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import httpx
import yaml

from mdsandbox.prometheus import prometheus_binary
from mdsandbox.sandbox import REPO_ROOT, Sandbox, SandboxError
from mdsandbox.traffic import Response, TrafficGenerator, song_request

Manifest = dict[str, Any]

NAMESPACE = "ml"
NAME = "song-analyzer"
IMAGE = "modeldeploy/song-analyzer:1.4.0"
SECRET = "openai-credentials"
STABLE_MODEL = "ft:gpt-4o-mini-2024-07-18:modeldeploy:songs:v3"
GOOD_MODEL = "ft:gpt-4o-mini-2024-07-18:modeldeploy:songs:v4"
BAD_MODEL = "ft:gpt-4o-mini-2024-07-18:modeldeploy:songs:v5-broken"
BAD_MODEL_ERROR_RATE = 0.3

SCRAPE_INTERVAL = "1s"
ANALYSIS_INTERVAL = "3s"
REPLICAS = 2
BAKE_TIME = "6s"
REQUESTS_PER_SECOND = 6.0
DEMO_STEPS: list[Manifest] = [{"setWeight": 50}, {"analysis": {"measurements": 2}}]

# Deadlines per step, generous for a busy two-core machine: each pod is a Python process.
FIRST_DEPLOY_DEADLINE_S = 120.0
PROMOTION_DEADLINE_S = 150.0
ROLLBACK_DEADLINE_S = 90.0
TRAFFIC_SETTLE_S = 2.0  # how long no request may reach a reverted canary to call it drained
PLAIN_PROGRESS_EVERY_S = 10.0


class DemoError(RuntimeError):
    """A step did not happen (in time); the message says which and where to look."""


# --------------------------------------------------------------------------- output


class Timeline:
    """Timestamped lines, plus one progress line: updated in place on a TTY, plain otherwise."""

    def __init__(self, stream: TextIO, *, tty: bool | None = None) -> None:
        self.stream = stream
        self.tty = stream.isatty() if tty is None else tty
        self.started = time.monotonic()
        self._status_shown = False
        self._last_plain_progress = self.started
        self._lock = threading.Lock()

    def elapsed(self, at: float | None = None) -> float:
        return (time.monotonic() if at is None else at) - self.started

    def stamp(self, at: float | None = None) -> str:
        return f"[{self.elapsed(at):6.1f}s]"

    def _clear_status(self) -> None:
        if self._status_shown:
            self.stream.write("\r\033[K")
            self._status_shown = False

    def say(self, text: str, at: float | None = None) -> None:
        """One timeline line, stamped with the elapsed time."""
        self.plain(f"{self.stamp(at)} {text}")

    def plain(self, text: str = "") -> None:
        with self._lock:
            self._clear_status()
            self.stream.write(text + "\n")
            self.stream.flush()

    def progress(self, text: str) -> None:
        """The live status line; without a TTY, a plain line every PLAIN_PROGRESS_EVERY_S."""
        with self._lock:
            if self.tty:
                width = shutil.get_terminal_size((120, 20)).columns
                line = f"{self.stamp()} {text}"
                self.stream.write("\r\033[K" + line[: max(20, width - 1)])
                self.stream.flush()
                self._status_shown = True
                return
            now = time.monotonic()
            if now - self._last_plain_progress < PLAIN_PROGRESS_EVERY_S:
                return
            self._last_plain_progress = now
            self.stream.write(f"{self.stamp()} ... {text}\n")
            self.stream.flush()

    def close(self) -> None:
        with self._lock:
            self._clear_status()
            self.stream.flush()


# --------------------------------------------------------------------------- processes


def venv_bin() -> Path:
    return Path(sys.executable).parent


def tool_env(kubeconfig: Path) -> dict[str, str]:
    """The environment for kubectl and the operator: this venv's tools first on PATH."""
    return {
        **os.environ,
        "KUBECONFIG": str(kubeconfig),
        "PATH": f"{venv_bin()}{os.pathsep}{os.environ.get('PATH', '')}",
    }


def kubectl(args: list[str], kubeconfig: Path, stdin: str | None = None) -> str:
    """Run the real kubectl against the sandbox; DemoError with its output on failure."""
    command = ["kubectl", *args]
    done = subprocess.run(
        command, env=tool_env(kubeconfig), input=stdin, capture_output=True, text=True, timeout=60,
        check=False,
    )
    if done.returncode != 0:
        raise DemoError(f"`{' '.join(command)}` failed ({done.returncode}):\n{done.stdout}{done.stderr}")
    return done.stdout.strip()


def apply(manifest: Manifest, kubeconfig: Path) -> str:
    return kubectl(["apply", "-f", "-"], kubeconfig, stdin=yaml.safe_dump(manifest, sort_keys=False))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class OperatorProcess:
    """``modeldeploy-operator --standalone``, as users run it, with its log in ``log_path``."""

    READY_LINE = "Activity 'configure' succeeded"

    def __init__(self, kubeconfig: Path, log_path: Path) -> None:
        self.kubeconfig = kubeconfig
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 60.0) -> None:
        env = {
            **tool_env(self.kubeconfig),
            "MODELDEPLOY_METRICS_PORT": str(free_port()),
            # Outside the sandbox's "cluster": Services by the address their status publishes.
            "MODELDEPLOY_SERVICE_ADDRESSES": "loadBalancerStatus",
        }
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("wb") as log:
            # Its own session, so stop() can end it and anything it started as one group.
            self.process = subprocess.Popen(
                [str(venv_bin() / "modeldeploy-operator"), "--standalone"],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise DemoError(f"the operator exited at start ({self.process.returncode}):\n"
                                + self.log_tail())
            if self.READY_LINE in self.log_path.read_text(errors="replace"):
                return
            time.sleep(0.2)
        raise DemoError(f"the operator did not start within {timeout:.0f}s:\n{self.log_tail()}")

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    def stop(self) -> None:
        process = self.process
        if process is None or process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)

    def log_tail(self, lines: int = 25) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return "(no operator log)"


# --------------------------------------------------------------------------- the resource


def song_analyzer(
    model: str,
    *,
    prometheus_url: str,
    upstream_url: str,
    namespace: str = NAMESPACE,
    replicas: int = REPLICAS,
    steps: list[Manifest] | None = None,
    analysis_interval: str = ANALYSIS_INTERVAL,
    bake_time: str = BAKE_TIME,
) -> Manifest:
    """examples/song-analyzer.yaml, scaled down for one machine and pointed at the sandbox."""
    return {
        "apiVersion": "modeldeploy.io/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": NAME, "namespace": namespace},
        "spec": {
            "replicas": replicas,
            "template": {"spec": {"containers": [{
                "name": NAME,
                "image": IMAGE,
                "ports": [{"name": "http", "containerPort": 8080}],
                "env": [
                    {"name": "LLM_MODEL", "value": model},
                    {"name": "LLM_API_BASE_URL", "value": upstream_url},
                    {"name": "LLM_TIMEOUT", "value": "30"},
                    {"name": "OPENAI_API_KEY",
                     "valueFrom": {"secretKeyRef": {"name": SECRET, "key": "api-key"}}},
                ],
                "readinessProbe": {"httpGet": {"path": "/health", "port": "http"}, "periodSeconds": 1},
            }]}},
            "service": {"port": 80, "targetPort": "http"},
            "strategy": {"canary": {
                "steps": steps if steps is not None else DEMO_STEPS,
                "trafficRouting": {"replicas": {}},
            }},
            "analysis": {
                "interval": analysis_interval,
                "provider": {"prometheus": {"address": prometheus_url}},
                "presets": ["song-analyzer"],
            },
            "rollback": {"automatic": True, "bakeTime": bake_time},
            "progressDeadline": "90s",
        },
    }


def gateway_and_route(namespace: str, gateway: str, route: str) -> list[Manifest]:
    """A Gateway (the sandbox's data plane accepts any) and the HTTPRoute the operator steers
    for song-analyzer (the gatewayAPI router: exact weights where pods cannot split them)."""
    group = "gateway.networking.k8s.io/v1"
    return [
        {"apiVersion": group, "kind": "Gateway", "metadata": {"name": gateway, "namespace": namespace},
         "spec": {"gatewayClassName": "sandbox",
                  "listeners": [{"name": "http", "protocol": "HTTP", "port": 80}]}},
        {"apiVersion": group, "kind": "HTTPRoute", "metadata": {"name": route, "namespace": namespace},
         "spec": {"parentRefs": [{"name": gateway}],
                  "rules": [{"matches": [{"path": {"type": "PathPrefix", "value": "/"}}],
                             "backendRefs": [{"name": f"{NAME}-stable", "port": 80}]}]}},
    ]


def prepare_namespace(namespace: str, kubeconfig: Path) -> None:
    """The namespace and the (placeholder) provider key the pods read from a Secret."""
    kubectl(["create", "namespace", namespace], kubeconfig)
    kubectl(["-n", namespace, "create", "secret", "generic", SECRET,
             "--from-literal=api-key=sk-sandbox-placeholder"], kubeconfig)


# --------------------------------------------------------------------------- traffic


def answered_at(response: Response) -> float:
    return response.started + response.elapsed_s


def outcome(response: Response) -> str:
    if response.status is None:
        return "no answer"
    return "ok" if response.ok else f"HTTP {response.status}"


def since(responses: list[Response], moment: float) -> list[Response]:
    return [r for r in responses if r.started >= moment]


def start_traffic(service_url: str, rate: float = REQUESTS_PER_SECOND,
                  max_seconds: float = 900.0) -> TrafficGenerator:
    """New songs to /analyze (never a cache hit, so every request reaches the model).

    ``max_seconds`` bounds it even if the caller never stops it; stop() ends it sooner.
    """
    return TrafficGenerator(f"{service_url}/analyze", body=song_request, rate=rate,
                            max_requests=1_000_000, max_seconds=max_seconds).start()


def served_by(responses: list[Response], revision: str, namespace: str = NAMESPACE) -> list[Response]:
    """The requests a revision's pods answered (pods are named ``<name>-<revision>-...``)."""
    prefix = f"{namespace}/{NAME}-{revision}-"
    return [r for r in responses if r.pod is not None and r.pod.startswith(prefix)]


def outcome_mix(responses: list[Response]) -> str:
    counts = Counter(outcome(r) for r in responses)
    return ", ".join(f"{n} {outcome}" for outcome, n in counts.most_common()) or "none"


# --------------------------------------------------------------------------- following a rollout


VERDICT_WORDS = {"Pass": "pass", "Fail": "FAIL", "Inconclusive": "no data"}


def short(value: float | None) -> str:
    return "-" if value is None else f"{value:.3g}"


def verdict_word(metric: Manifest) -> str:
    return VERDICT_WORDS.get(str(metric.get("verdict")), str(metric.get("verdict")))


def analysis_line(metrics: list[Manifest]) -> str:
    """One analysis round: each gate's value against its threshold, then the rollback indicators."""
    gates = [m for m in metrics if "(rollback indicator)" not in m.get("name", "")]
    indicators = {
        m["name"].replace(" (rollback indicator)", ""): m
        for m in metrics if "(rollback indicator)" in m.get("name", "")
    }
    parts: list[str] = []
    for gate in gates:
        text = (f"{gate['name']} {short(gate.get('value'))} "
                f"[gate {gate.get('threshold') or '-'}: {verdict_word(gate)}")
        indicator = indicators.pop(gate["name"], None)
        if indicator is not None:
            text += f" | rollback {indicator.get('threshold')}: {indicator_word(indicator)}"
        parts.append(text + "]")
    for name, indicator in indicators.items():  # an indicator with no gate of its name
        parts.append(f"{name} {short(indicator.get('value'))} "
                     f"[rollback {indicator.get('threshold')}: {indicator_word(indicator)}]")
    return "  ".join(parts)


def indicator_word(indicator: Manifest) -> str:
    verdict = str(indicator.get("verdict"))
    if verdict == "Inconclusive" and indicator.get("value") is not None:
        # Out of range, but not the canary's to answer for yet (stable troubled too, or
        # no stable to compare with): the status message says which.
        return "not acted on"
    return {"Pass": "ok", "Fail": "BREACHED"}.get(verdict, "no data")


def round_decision(metrics: list[Manifest]) -> str:
    verdicts = {m["name"]: m.get("verdict") for m in metrics}
    if any(v == "Fail" and "(rollback indicator)" in n for n, v in verdicts.items()):
        return "revert now"
    gate_verdicts = [v for n, v in verdicts.items() if "(rollback indicator)" not in n]
    if "Fail" in gate_verdicts:
        return "gate failed (counts toward failureLimit)"
    if "Inconclusive" in gate_verdicts:
        return "inconclusive (no data yet: never promotes)"
    return "pass"


@dataclass
class Snapshot:
    phase: str
    message: str
    step: int | None
    weight: int | None
    stable: str | None
    canary: str | None
    baking: bool
    round_time: str | None
    analysis: list[Manifest] = field(default_factory=list)

    @classmethod
    def of(cls, body: Manifest) -> Snapshot:
        status = body.get("status") or {}
        analysis = list(status.get("analysis") or [])
        return cls(
            phase=status.get("phase") or "Pending",
            message=status.get("message") or "",
            step=status.get("currentStep"),
            weight=status.get("canaryWeight"),
            stable=status.get("stableRevision"),
            canary=status.get("canaryRevision"),
            baking=bool(status.get("bakeUntil")),
            round_time=max((m.get("time") or "" for m in analysis), default=None),
            analysis=analysis,
        )

    def key(self) -> tuple[Any, ...]:
        # What makes a new timeline line: not the message's countdowns and counters.
        waiting = "waiting for" in self.message
        return (self.phase, self.step, self.weight, self.stable, self.canary, self.baking, waiting)


class RolloutFollower:
    """Polls the ModelDeployment and turns what changed into timeline lines."""

    def __init__(self, api_url: str, timeline: Timeline, namespace: str = NAMESPACE,
                 traffic: TrafficGenerator | None = None) -> None:
        self.timeline = timeline
        self.traffic = traffic
        self.namespace = namespace
        self.path = f"/apis/modeldeploy.io/v1alpha1/namespaces/{namespace}/modeldeployments/{NAME}"
        self._http = httpx.Client(base_url=api_url, timeout=10)
        self.last: Snapshot | None = None

    def close(self) -> None:
        self._http.close()

    def read(self) -> Snapshot | None:
        response = self._http.get(self.path)
        if response.status_code == 404:
            return None
        response.raise_for_status()
        return Snapshot.of(response.json())

    def poll(self) -> Snapshot | None:
        snapshot = self.read()
        if snapshot is None:
            return None
        previous = self.last
        if snapshot.round_time and (previous is None or snapshot.round_time != previous.round_time):
            self.timeline.say(f"  analysis: {analysis_line(snapshot.analysis)}"
                              f"  => {round_decision(snapshot.analysis)}")
        if not snapshot.message:
            return snapshot  # the operator has not written a status yet
        if previous is None or snapshot.key() != previous.key():
            self.timeline.say(self.describe(snapshot))
        self.last = snapshot
        self.timeline.progress(self.progress_text(snapshot))
        return snapshot

    @staticmethod
    def describe(snapshot: Snapshot) -> str:
        weight = "-" if snapshot.weight is None else f"{snapshot.weight}%"
        return f"{snapshot.phase:<11} canary weight {weight:>4}  {snapshot.message}"

    def progress_text(self, snapshot: Snapshot) -> str:
        weight = "-" if snapshot.weight is None else f"{snapshot.weight}%"
        where = snapshot.message.split(":", 1)[0][:40]  # "step 2/3 analysis", "baking <rev>"
        text = f"{snapshot.phase}, {where}, canary {weight}"
        if self.traffic is not None:
            recent = since(self.traffic.responses(), time.monotonic() - 5.0)
            failed = sum(1 for r in recent if not r.ok)
            canary = len(served_by(recent, snapshot.canary, self.namespace)) if snapshot.canary else 0
            text += (f" | traffic last 5s: {len(recent)} requests, {failed} failed, "
                     f"{canary} served by the canary")
        return text

    def wait_for(
        self, done: Callable[[Snapshot], bool], deadline_s: float, what: str, operator: OperatorProcess
    ) -> Snapshot:
        deadline = time.monotonic() + deadline_s
        while True:
            snapshot = self.poll()
            if snapshot is not None and done(snapshot):
                return snapshot
            if time.monotonic() > deadline:
                last = f"{snapshot.phase}: {snapshot.message}" if snapshot else "no resource"
                raise DemoError(
                    f"{what} did not happen within {deadline_s:.0f}s (last status: {last})\n"
                    f"--- operator log ({operator.log_path}), last lines:\n{operator.log_tail()}"
                )
            time.sleep(0.25)


# --------------------------------------------------------------------------- the demo


@dataclass
class BadRollout:
    revision: str
    applied_at: float
    rolled_back_at: float
    message: str


def wait_until_drained(
    traffic: TrafficGenerator, revision: str, settle_s: float, deadline_s: float,
    namespace: str = NAMESPACE,
) -> float:
    """Wait until no request reached ``revision`` for ``settle_s``; the last one's answer time."""
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        responses = traffic.responses()
        last = max((answered_at(r) for r in served_by(responses, revision, namespace)), default=0.0)
        # Proof that traffic still flows: requests sent since then, answered by other pods.
        answered_since = [r for r in since(responses, last) if r.pod]
        if answered_since and time.monotonic() - last >= settle_s:
            return last
        time.sleep(0.25)
    raise DemoError(f"requests still reached revision {revision} {deadline_s:.0f}s after the rollback")


def run_demo(workdir: Path, timeline: Timeline, keep: bool) -> int:
    say = timeline.say
    if prometheus_binary() is None:
        raise DemoError("Prometheus is not installed (the analysis needs it): run ./hack/setup")
    timeline.plain("modeldeploy demo: song-analyzer canaries judged by Prometheus, on a local sandbox")
    timeline.plain(f"  sandbox folder {workdir} (logs in {workdir / 'logs'})")
    timeline.plain(f"  scrape {SCRAPE_INTERVAL}, analysis every {ANALYSIS_INTERVAL} over a "
                   f"{ANALYSIS_INTERVAL} rate window, "
                   f"{REPLICAS} replicas; steps: setWeight 50 -> analysis (2 passing rounds in a "
                   f"row) -> 100% -> bake {BAKE_TIME}")
    timeline.plain("")
    say(f"starting the sandbox (scrape interval {SCRAPE_INTERVAL}) ...")
    with Sandbox(workdir, scrape_interval=SCRAPE_INTERVAL) as sandbox:
        kubeconfig = sandbox.kubeconfig
        assert sandbox.prometheus_url is not None and sandbox.fake_upstream_url is not None
        say(f"sandbox up: API {sandbox.api_url}, Prometheus {sandbox.prometheus_url}, "
            f"fake OpenAI upstream {sandbox.fake_upstream_url}")
        for line in kubectl(["apply", "-f", str(REPO_ROOT / "crds")], kubeconfig).splitlines():
            say(f"kubectl apply -f crds/: {line}")
        operator = OperatorProcess(kubeconfig, workdir / "logs" / "operator.log")
        traffic: TrafficGenerator | None = None
        follower: RolloutFollower | None = None
        try:
            operator.start()
            say(f"operator running: modeldeploy-operator --standalone (pid {operator.pid})")
            prepare_namespace(NAMESPACE, kubeconfig)
            follower = RolloutFollower(sandbox.api_url, timeline)

            def manifest(model: str) -> Manifest:
                assert sandbox.prometheus_url is not None and sandbox.fake_upstream_url is not None
                return song_analyzer(model, prometheus_url=sandbox.prometheus_url,
                                     upstream_url=sandbox.fake_upstream_url)

            say(f"kubectl apply: {apply(manifest(STABLE_MODEL), kubeconfig)} (LLM_MODEL={STABLE_MODEL})")
            first = follower.wait_for(lambda s: s.phase == "Succeeded", FIRST_DEPLOY_DEADLINE_S,
                                      "the first deployment", operator)
            traffic = start_traffic(sandbox.service_url(NAMESPACE, NAME))
            follower.traffic = traffic
            say(f"live traffic: {REQUESTS_PER_SECOND:g} new songs/s to {traffic.url} "
                f"(stable revision {first.stable})")

            timeline.plain("")
            timeline.plain(f"== 1. a healthy new fine-tune: LLM_MODEL={GOOD_MODEL}")
            say(f"kubectl apply: {apply(manifest(GOOD_MODEL), kubeconfig)}")
            good = follower.wait_for(
                lambda s: s.canary is not None or s.stable != first.stable, 30,
                "the operator starting the healthy rollout", operator)
            good_revision = good.canary or good.stable
            promoted = follower.wait_for(
                lambda s: s.phase == "Succeeded" and s.stable == good_revision,
                PROMOTION_DEADLINE_S, f"the promotion of the healthy revision {good_revision}",
                operator)
            say(f"PROMOTED: revision {promoted.stable} serves all traffic")

            timeline.plain("")
            timeline.plain(f"== 2. a failing fine-tune: LLM_MODEL={BAD_MODEL}; it answers "
                           f"{BAD_MODEL_ERROR_RATE:.0%} of its calls with text that is not the JSON "
                           "asked for")
            from fakeupstream import FakeUpstreamClient

            with FakeUpstreamClient(sandbox.fake_upstream_url) as upstream:
                # Unusable answers, not provider 5xx: song-analyzer retries those (they are
                # the provider's hiccups), while a broken fine-tune's output fails every try.
                upstream.set_fault(BAD_MODEL, malformed_rate=BAD_MODEL_ERROR_RATE)
            applied_at = time.monotonic()
            say(f"kubectl apply: {apply(manifest(BAD_MODEL), kubeconfig)}")
            bad = follower.wait_for(lambda s: s.canary is not None and s.canary != promoted.stable, 30,
                                    "the operator starting the failing rollout", operator)
            bad_revision = bad.canary
            assert bad_revision is not None
            reverted = follower.wait_for(
                lambda s: s.phase == "RolledBack", ROLLBACK_DEADLINE_S,
                f"the automatic rollback of the failing revision {bad_revision}", operator)
            rolled_back_at = time.monotonic()
            say(f"ROLLED BACK automatically: {reverted.message}")
            if reverted.stable != promoted.stable:
                raise DemoError(f"stable is {reverted.stable} after the rollback, not {promoted.stable}")
            last_served = wait_until_drained(traffic, bad_revision, TRAFFIC_SETTLE_S, 30)
            say(f"all traffic back on stable {reverted.stable}: the failing canary's last answer "
                f"was at {timeline.elapsed(last_served):.1f}s")
            traffic.stop()
            records = traffic.responses()
            traffic = None
            summary(timeline, records, promoted, BadRollout(bad_revision, applied_at, rolled_back_at,
                                                            reverted.message), last_served)
            if keep:
                hold_for_exploration(timeline, kubeconfig)
        finally:
            if traffic is not None:
                traffic.stop()
            if follower is not None:
                follower.close()
            operator.stop()
            timeline.close()
    if keep:
        timeline.plain(f"stopped: the operator and the sandbox (logs: {workdir / 'logs'}).")
    else:
        explore_instructions(timeline, workdir)
    return 0


def summary(timeline: Timeline, records: list[Response], promoted: Snapshot, bad: BadRollout,
            last_served: float) -> None:
    canary_records = served_by(records, bad.revision)
    first_served = min((r.started for r in canary_records), default=bad.applied_at)
    window = [r for r in records if first_served <= r.started <= last_served]
    share = len(canary_records) / len(window) if window else 0.0
    errors = sum(1 for r in records if not r.ok)
    timeline.plain("")
    timeline.plain("== summary")
    timeline.plain(f"  healthy revision {promoted.stable}: promoted step by step (50%, analysis passed "
                   f"2 rounds in a row, 100%, baked {BAKE_TIME}).")
    timeline.plain(f"  failing revision {bad.revision}: rolled back automatically, {bad.message}.")
    timeline.plain(f"  detection: {bad.rolled_back_at - first_served:.1f}s from its first request to "
                   f"the rollback (its new pod needs two scrapes before rate() sees it); all traffic "
                   f"back on stable {last_served - first_served:.1f}s after its first request "
                   f"({bad.rolled_back_at - bad.applied_at:.1f}s after kubectl apply, pod start "
                   "included).")
    timeline.plain(f"  meanwhile it served {len(canary_records)} requests ({share:.0%} of the traffic: "
                   f"{outcome_mix(canary_records)}); {len(records)} requests in the whole demo, "
                   f"{errors} failed.")
    timeline.plain("  `hack/bench rollback` measures the detection time over many runs "
                   "(README.md, 'How fast a bad canary is caught').")


def explore_instructions(timeline: Timeline, workdir: Path) -> None:
    timeline.plain("")
    timeline.plain(f"Done in {timeline.elapsed():.0f}s. The sandbox and the operator are already "
                   f"stopped (logs: {workdir / 'logs'}). To explore:")
    timeline.plain("  ./hack/demo --keep                          # the same demo, left running until "
                   "Ctrl-C; it prints the KUBECONFIG to export")
    timeline.plain("  kubectl get md -n ml                        # phase, weight, stable and canary "
                   "revisions")
    timeline.plain("  modeldeploy -n ml status song-analyzer      # steps, each metric vs its threshold, "
                   "conditions, events")
    timeline.plain("  modeldeploy -n ml history song-analyzer     # every revision's outcome and why")
    timeline.plain("  kubectl get deploy,pods -n ml -l modeldeploy.io/name=song-analyzer")
    timeline.plain("  or by hand: hack/sandbox up --scrape-interval 1s; kubectl apply -f crds/; "
                   "modeldeploy-operator --standalone")


def hold_for_exploration(timeline: Timeline, kubeconfig: Path) -> None:
    timeline.plain("")
    timeline.plain("--keep: the sandbox and the operator stay up until Ctrl-C. In another shell:")
    timeline.plain(f"  export KUBECONFIG={kubeconfig} PATH={venv_bin()}:$PATH")
    timeline.plain("  kubectl get md -n ml; modeldeploy -n ml status song-analyzer; "
                   "modeldeploy -n ml history song-analyzer")
    with contextlib.suppress(KeyboardInterrupt):
        while True:
            time.sleep(3600)


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM (a CI job cancelled) runs the same clean-up as Ctrl-C."""

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="./hack/demo", description=__doc__.splitlines()[0])
    parser.add_argument("--dir", type=Path, default=None,
                        help="sandbox folder (default: a new folder under the system's temp dir)")
    parser.add_argument("--keep", action="store_true",
                        help="leave the sandbox and operator running at the end, until Ctrl-C")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    workdir: Path = (args.dir or Path(tempfile.mkdtemp(prefix="modeldeploy-demo-"))).resolve()
    timeline = Timeline(sys.stdout)
    try:
        with sigterm_as_interrupt():
            return run_demo(workdir, timeline, args.keep)
    except (DemoError, SandboxError) as error:
        timeline.close()
        print(f"\ndemo failed: {error}\n(everything it started is stopped; logs in "
              f"{workdir / 'logs'})", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        timeline.close()
        print("\ninterrupted: everything the demo started is stopped.", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
