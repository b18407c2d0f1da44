"""How often a HEALTHY canary is rolled back or held under realistic noise, over N runs.

    hack/bench false-rollbacks --runs 20           # about 1.5-2 minutes a run
    hack/bench false-rollbacks --runs 5 --scrape-interval 15s --interval 60s

One local sandbox and one operator process serve every run (as ``hack/bench rollback``).
song-analyzer runs with 2 replicas under steady traffic (``--rate``, 15 req/s) of songs
drawn from a catalogue of ``--songs`` (300) with Zipf-like popularity, so a warm cache
matters (song-analyzer caches per pod, per model: every new revision, and every restarted
pod, starts with an empty cache). Each run rolls out a healthy new revision (a new
LLM_MODEL, which the fake upstream answers like any other) with these steps, routed by an
HTTPRoute (gatewayAPI router: with 2 replicas the replicas router cannot split 10%):

    setWeight 10 -> analysis {measurements: 2} -> setWeight 50 -> analysis {measurements: 2}
    -> 100% -> bake (--bake, 20s)

which at the default --scrape-interval 5s / --interval 10s takes 1-2 minutes. Noise, on
the fake upstream for every model (``*``: stable and canary alike), the whole time:

- 1% of upstream calls fail with 500 (``--upstream-error-rate``; song-analyzer retries a
  provider's 5xx up to 3 times, so few reach the callers);
- every upstream answer waits ``--latency`` (0.3 s) +-50% (``--jitter``), spread evenly
  (the fake upstream's ``latency_jitter``);
- once per run, at a random moment between 5 s and 75 s after the new revision is
  applied, a ``--burst`` (10 s) during which every upstream call is answered 429 with
  ``Retry-After: --retry-after`` (2 s); then the noise above again;
- once per run, at a random moment between 10 s and 50 s after the canary first appears,
  one canary pod is deleted (kubectl delete pod) so its Deployment makes a new one (if
  the rollout is still in progress then).

Each run ends when the rollout is decided or ``--run-deadline`` passes, and counts as:
Promoted (phase Succeeded with the new revision stable), RolledBack, Paused (held by
the operator: pauseCause inconclusive, analysisFailed or routeNotAccepted), or other
(phase Failed or Degraded, or no decision by the deadline). For each unexpected outcome
it prints what caused it: the analysis entries with verdict Fail (value against
threshold), the RolledBack condition's message, the pause reason, the status message.
Exit status 0 whatever the outcomes (a benchmark reports; it does not judge); 1 when the
benchmark itself could not run.
"""

from __future__ import annotations

import argparse
import random
import shutil
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from fakeupstream import FakeUpstreamClient
from mdsandbox.demo import (
    NAME,
    DemoError,
    Manifest,
    OperatorProcess,
    RolloutFollower,
    Timeline,
    apply,
    gateway_and_route,
    kubectl,
    outcome_mix,
    prepare_namespace,
    served_by,
    since,
    song_analyzer,
)
from mdsandbox.prometheus import parse_duration, prometheus_binary
from mdsandbox.sandbox import REPO_ROOT, Sandbox, SandboxError
from mdsandbox.traffic import Response, TrafficGenerator, song_request

NAMESPACE = "bench"
MODEL_PREFIX = "ft:gpt-4o-mini-2024-07-18:modeldeploy:healthy"
REPLICAS = 2
ROUTE = "song-analyzer-route"
GATEWAY = "bench-gateway"
STEPS: list[Manifest] = [
    {"setWeight": 10}, {"analysis": {"measurements": 2}},
    {"setWeight": 50}, {"analysis": {"measurements": 2}},
]
HELD_CAUSES = ("inconclusive", "analysisFailed", "routeNotAccepted")
BURST_WINDOW_S = (5.0, 75.0)  # after kubectl apply
RESTART_WINDOW_S = (10.0, 50.0)  # after the canary first appears
POLL_S = 0.25


@dataclass
class RunResult:
    revision: str | None
    outcome: str  # Promoted | RolledBack | Paused | other
    took_s: float
    phase: str
    requests: int = 0
    failed: int = 0
    canary_requests: int = 0
    canary_failed: int = 0
    burst_at_s: float | None = None
    restart_at_s: float | None = None
    restarted_pod: str = ""
    failures: str = "none"  # the failed requests' outcomes, whichever pod answered
    causes: list[str] = field(default_factory=list)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="hack/bench false-rollbacks", description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--rate", type=float, default=15.0, help="requests per second (default 15)")
    parser.add_argument("--songs", type=int, default=300, help="catalogue size; popular songs repeat")
    parser.add_argument("--scrape-interval", default="5s", help="Prometheus scrape interval (5s)")
    parser.add_argument("--interval", default="10s", help="analysis interval and rate window (10s)")
    parser.add_argument("--bake", default="20s", help="bakeTime after 100%% (20s)")
    parser.add_argument("--upstream-error-rate", type=float, default=0.01,
                        help="share of upstream calls answered 500 (0.01)")
    parser.add_argument("--latency", type=float, default=0.3, help="base upstream latency, s (0.3)")
    parser.add_argument("--jitter", type=float, default=0.5, help="latency jitter, +- share (0.5)")
    parser.add_argument("--burst", type=float, default=10.0, help="seconds of upstream 429s per run (10)")
    parser.add_argument("--retry-after", type=int, default=2, help="Retry-After of the 429s, s (2)")
    parser.add_argument("--no-restart", action="store_true", help="do not delete a canary pod")
    parser.add_argument("--run-deadline", type=float, default=300.0, help="seconds per run (300)")
    parser.add_argument("--seed", type=int, default=None, help="random seed (default: random)")
    parser.add_argument("--dir", type=Path, default=None, help="sandbox folder (default: a temp dir)")
    args = parser.parse_args(argv)
    if args.runs < 1 or args.rate <= 0 or args.songs < 1 or not 0 <= args.upstream_error_rate <= 1:
        parser.error("--runs >= 1, --rate > 0, --songs >= 1 and 0 <= --upstream-error-rate <= 1")
    if not 0 <= args.jitter <= 1 or args.latency < 0 or args.burst < 0:
        parser.error("0 <= --jitter <= 1, --latency >= 0 and --burst >= 0")
    try:
        for duration in (args.scrape_interval, args.interval, args.bake):
            parse_duration(duration)
    except ValueError as error:
        parser.error(str(error))
    if args.seed is None:
        args.seed = random.randrange(1_000_000)
    return args


# --------------------------------------------------------------------------- set-up


def manifest(model: str, args: argparse.Namespace, sandbox: Sandbox) -> Manifest:
    assert sandbox.prometheus_url is not None and sandbox.fake_upstream_url is not None
    body = song_analyzer(model, prometheus_url=sandbox.prometheus_url,
                         upstream_url=sandbox.fake_upstream_url, namespace=NAMESPACE,
                         replicas=REPLICAS, steps=STEPS, analysis_interval=args.interval,
                         bake_time=args.bake)
    body["spec"]["strategy"]["canary"]["trafficRouting"] = {"gatewayAPI": {"httpRoute": ROUTE}}
    return body


class Noise:
    """The upstream noise on the fake upstream's ``*`` fault: steady, or a 429 burst."""

    def __init__(self, upstream: FakeUpstreamClient, args: argparse.Namespace) -> None:
        self.upstream = upstream
        self.args = args
        self.bursting = False

    def steady(self) -> None:
        a = self.args
        self.upstream.set_fault("*", latency_s=a.latency, latency_jitter=a.jitter,
                                error_rate=a.upstream_error_rate, status_code=500)
        self.bursting = False

    def burst(self) -> None:
        a = self.args
        self.upstream.set_fault("*", latency_s=a.latency, latency_jitter=a.jitter, error_rate=1.0,
                                status_code=429, retry_after_s=a.retry_after)
        self.bursting = True


def song_picker(songs: int, seed: int) -> Callable[[int], dict[str, str]]:
    """A body function: song k (0-based) with weight 1/(k+1), so the popular ones repeat."""
    rng = random.Random(seed)
    population = list(range(songs))
    weights = [1.0 / (k + 1) for k in population]

    def body(n: int) -> dict[str, str]:
        return song_request(rng.choices(population, weights)[0])

    return body


# --------------------------------------------------------------------------- one run


def read_status(http: httpx.Client) -> dict[str, Any]:
    response = http.get(f"/apis/modeldeploy.io/v1alpha1/namespaces/{NAMESPACE}/modeldeployments/{NAME}")
    response.raise_for_status()
    status: dict[str, Any] = response.json().get("status") or {}
    return status


def classify(status: dict[str, Any], revision: str | None) -> str | None:
    """The run's outcome once decided, else None."""
    phase = status.get("phase")
    if revision is None:
        return None
    if phase == "Succeeded" and status.get("stableRevision") == revision:
        return "Promoted"
    if phase == "RolledBack":
        return "RolledBack"
    if phase == "Paused" and status.get("pauseCause") in HELD_CAUSES:
        return "Paused"
    if phase in ("Failed", "Degraded"):
        return "other"
    return None


def causes_of(status: dict[str, Any]) -> list[str]:
    """What the status says made the decision: failed metrics, conditions, pause reason."""
    causes = [
        f"analysis {m.get('name')}: value {m.get('value')} vs {m.get('threshold') or '-'} "
        f"({m.get('message') or 'Fail'})"
        for m in status.get("analysis") or [] if m.get("verdict") == "Fail"
    ]
    for condition in status.get("conditions") or []:
        if condition.get("type") == "RolledBack" or condition.get("reason") in ("RolledBack", "Paused"):
            causes.append(f"condition {condition.get('type')}={condition.get('status')} "
                          f"({condition.get('reason')}): {condition.get('message')}")
    if status.get("pauseReason"):
        causes.append(f"pause ({status.get('pauseCause')}): {status.get('pauseReason')}")
    if status.get("message"):
        causes.append(f"status message: {status.get('message')}")
    return causes


def delete_one_pod(revision: str, kubeconfig: Path) -> str:
    """Delete one pod of ``revision`` (its Deployment makes a new one); its name, or ""."""
    names = kubectl(["-n", NAMESPACE, "get", "pods", "-l", f"modeldeploy.io/revision={revision}",
                     "-o", "name"], kubeconfig).split()
    if not names:
        return ""
    kubectl(["-n", NAMESPACE, "delete", names[0], "--wait=false"], kubeconfig)
    return names[0].removeprefix("pod/")


def one_run(
    number: int,
    args: argparse.Namespace,
    sandbox: Sandbox,
    follower: RolloutFollower,
    http: httpx.Client,
    noise: Noise,
    traffic: TrafficGenerator,
    rng: random.Random,
    seen: set[str],
) -> RunResult:
    """One healthy rollout; ``seen`` holds every revision of earlier runs (and the first), so a
    status still naming one of them is never taken for this run's."""
    model = f"{MODEL_PREFIX}:r{number}-{int(time.time())}"
    progress = follower.timeline
    applied = time.monotonic()
    apply(manifest(model, args, sandbox), sandbox.kubeconfig)
    burst_at = applied + rng.uniform(*BURST_WINDOW_S) if args.burst > 0 else None
    burst_end: float | None = None
    restart_at: float | None = None
    result = RunResult(revision=None, outcome="other", took_s=0.0, phase="Pending")
    deadline = applied + args.run_deadline
    try:
        while True:
            now = time.monotonic()
            follower.poll()
            status = read_status(http)
            canary = status.get("canaryRevision")
            if result.revision is None and canary and canary not in seen:
                result.revision = canary
                seen.add(canary)
                if not args.no_restart:
                    restart_at = now + rng.uniform(*RESTART_WINDOW_S)
            result.phase = str(status.get("phase") or "Pending")
            outcome = classify(status, result.revision)
            if outcome is not None:
                result.outcome = outcome
                if outcome != "Promoted":
                    result.causes = causes_of(status)
                break
            if now > deadline:
                result.causes = [f"no decision within {args.run_deadline:.0f}s", *causes_of(status)]
                break
            if burst_at is not None and now >= burst_at and burst_end is None:
                noise.burst()
                burst_end = now + args.burst
                result.burst_at_s = now - applied
                progress.say(f"run {number}: upstream 429 burst for {args.burst:g}s "
                             f"(Retry-After {args.retry_after}s)")
            if burst_end is not None and noise.bursting and now >= burst_end:
                noise.steady()
                progress.say(f"run {number}: burst over")
            in_progress = result.phase in ("Progressing", "Paused") and canary == result.revision
            if restart_at is not None and now >= restart_at and result.restart_at_s is None:
                restart_at = None
                if in_progress and result.revision is not None and (status.get("canaryWeight") or 0) < 100:
                    result.restarted_pod = delete_one_pod(result.revision, sandbox.kubeconfig)
                    result.restart_at_s = now - applied
                    progress.say(f"run {number}: deleted canary pod {result.restarted_pod or '(none found)'}")
            time.sleep(POLL_S)
    finally:
        if noise.bursting:
            noise.steady()
            progress.say(f"run {number}: burst cut short by the end of the run")
    ended = time.monotonic()
    result.took_s = ended - applied
    window = [r for r in since(traffic.responses(), applied) if r.started <= ended]
    result.requests = len(window)
    result.failed = sum(1 for r in window if not r.ok)
    result.failures = outcome_mix([r for r in window if not r.ok])
    if result.revision is not None:
        on_canary: list[Response] = served_by(window, result.revision, NAMESPACE)
        result.canary_requests = len(on_canary)
        result.canary_failed = sum(1 for r in on_canary if not r.ok)
    return result


# --------------------------------------------------------------------------- report


def report(args: argparse.Namespace, results: list[RunResult], took_s: float) -> None:
    print(f"false rollbacks: {len(results)} run{'s' if len(results) != 1 else ''} in {took_s:.0f}s "
          f"(seed {args.seed})")
    print(f"configuration: scrape interval {args.scrape_interval} | analysis interval = rate window "
          f"{args.interval} | traffic {args.rate:g} req/s over {args.songs} songs (Zipf-like) | "
          f"{REPLICAS} replicas, gatewayAPI route | steps setWeight 10 -> analysis x2 -> setWeight 50 "
          f"-> analysis x2 -> 100% -> bake {args.bake} | song-analyzer preset (rollback indicators "
          "uncached-error-rate > 5%, latency-p95 > 20s; gates error-rate <= 2%, latency-p95 <= 10s, cost)")
    print(f"noise (stable and canary): upstream errors {args.upstream_error_rate:.0%} (500) | latency "
          f"{args.latency:g}s +-{args.jitter:.0%} | one {args.burst:g}s burst of 429 (Retry-After "
          f"{args.retry_after}s) per run | "
          f"{'no pod restart' if args.no_restart else 'one canary pod deleted per run'} | cold cache "
          "per new pod")
    print()
    rows = [["run", "outcome", "took", "phase", "burst at", "pod deleted at", "requests failed",
             "canary failed", "failures"]]
    for i, r in enumerate(results, 1):
        rows.append([
            str(i), r.outcome, f"{r.took_s:.0f}s", r.phase,
            "-" if r.burst_at_s is None else f"{r.burst_at_s:.0f}s",
            "-" if r.restart_at_s is None else f"{r.restart_at_s:.0f}s",
            f"{r.failed}/{r.requests}", f"{r.canary_failed}/{r.canary_requests}", r.failures,
        ])
    widths = [max(len(row[c]) for row in rows) for c in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
    counts = Counter(r.outcome for r in results)
    print()
    print("totals: " + ", ".join(f"{counts.get(o, 0)} {o}" for o in ("Promoted", "RolledBack", "Paused",
                                                                    "other")))
    unexpected = [(i, r) for i, r in enumerate(results, 1) if r.outcome != "Promoted"]
    if unexpected:
        print()
        print("unexpected outcomes, and what the status says caused them:")
        for i, r in unexpected:
            print(f"  run {i} ({r.outcome}, revision {r.revision}, after {r.took_s:.0f}s):")
            for cause in r.causes or ["(the status names no cause)"]:
                print(f"    - {cause}")
    print()
    print(f"false rollbacks: {counts.get('RolledBack', 0)}/{len(results)} runs rolled back, "
          f"{counts.get('Paused', 0)} paused, {counts.get('Promoted', 0)} promoted"
          + (f", {counts['other']} other" if counts.get("other") else ""))


# --------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if prometheus_binary() is None:
        print("hack/bench false-rollbacks: Prometheus is not installed; run ./hack/setup", file=sys.stderr)
        return 1
    workdir = (args.dir or Path(tempfile.mkdtemp(prefix="modeldeploy-bench-"))).resolve()
    progress = Timeline(sys.stderr)
    rng = random.Random(args.seed)
    started = time.monotonic()
    results: list[RunResult] = []
    try:
        with Sandbox(workdir, scrape_interval=args.scrape_interval) as sandbox:
            assert sandbox.fake_upstream_url is not None
            kubectl(["apply", "-f", str(REPO_ROOT / "crds")], sandbox.kubeconfig)
            operator = OperatorProcess(sandbox.kubeconfig, workdir / "logs" / "operator.log")
            follower = RolloutFollower(sandbox.api_url, progress, namespace=NAMESPACE)
            http = httpx.Client(base_url=sandbox.api_url, timeout=10)
            upstream = FakeUpstreamClient(sandbox.fake_upstream_url)
            traffic: TrafficGenerator | None = None
            try:
                operator.start()
                prepare_namespace(NAMESPACE, sandbox.kubeconfig)
                for part in gateway_and_route(NAMESPACE, GATEWAY, ROUTE):
                    apply(part, sandbox.kubeconfig)
                noise = Noise(upstream, args)
                noise.steady()
                apply(manifest(f"{MODEL_PREFIX}:base", args, sandbox), sandbox.kubeconfig)
                first = follower.wait_for(lambda s: s.phase == "Succeeded", 120,
                                          "the first deployment", operator)
                traffic = TrafficGenerator(
                    f"{sandbox.route_url(NAMESPACE, ROUTE)}/analyze",
                    body=song_picker(args.songs, args.seed), rate=args.rate, concurrency=64,
                    max_requests=10_000_000, max_seconds=args.runs * (args.run_deadline + 30) + 600,
                ).start()
                follower.traffic = traffic
                seen: set[str] = {first.stable} if first.stable else set()
                for number in range(1, args.runs + 1):
                    progress.plain(f"--- run {number}/{args.runs}")
                    result = one_run(number, args, sandbox, follower, http, noise, traffic, rng, seen)
                    progress.say(f"run {number}: {result.outcome} after {result.took_s:.0f}s")
                    results.append(result)
            finally:
                if traffic is not None:
                    traffic.stop()
                upstream.close()
                http.close()
                follower.close()
                operator.stop()
                progress.close()
    except (DemoError, SandboxError, httpx.HTTPError) as error:
        print(f"hack/bench false-rollbacks failed: {error}\n(logs in {workdir / 'logs'})", file=sys.stderr)
        if results:
            report(args, results, time.monotonic() - started)
        return 1
    except KeyboardInterrupt:
        print("\ninterrupted: the sandbox and the operator are stopped", file=sys.stderr)
        if results:
            report(args, results, time.monotonic() - started)
        return 130
    report(args, results, time.monotonic() - started)
    if args.dir is None:
        shutil.rmtree(workdir, ignore_errors=True)  # a temp folder of ours; kept only on failure
    return 0


if __name__ == "__main__":
    sys.exit(main())
