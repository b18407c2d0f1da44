"""The latency a mirror step adds to users' requests: an HTTPRoute with and without RequestMirror.

    hack/bench mirror                          # 50 req/s, 20 s per case (about 2 minutes)
    hack/bench mirror --rate 100 --duration 30 --slow-latency 5

One local sandbox (``mdsandbox``, no Prometheus, no operator: what is measured is the data
plane a mirror step configures, not how the operator gets there). In one namespace:

- ``songs-stable``: song-analyzer, ``--replicas`` pods (2), the model answering at once;
- ``songs-canary``: one song-analyzer pod, another fine-tune, answering at once;
- ``songs-slow``: one song-analyzer pod whose model answers ``--slow-latency`` s (2 s) late
  (the fake upstream's latency for that model); both canaries take up to 256 requests and
  upstream calls at once, so each copy is held for the whole latency instead of refused;
- ``copy-sink``: one pod of the fake upstream, which answers ``POST /analyze`` 404 at once:
  a mirror target that costs next to nothing, so what remains is the data plane's copying;
- a Gateway and four HTTPRoutes, each with one rule sending every request to
  ``songs-stable``: ``songs-plain`` (no filter), ``songs-mirror`` (a ``RequestMirror``
  filter, ``percent: 100``, to ``songs-canary``), ``songs-mirror-slow`` (the same to
  ``songs-slow``) and ``songs-mirror-sink`` (to ``copy-sink``), as the operator writes the
  filter during ``mirror: {percent: 100}``.

Cases: (a) no mirror, (b) mirror to a canary answering normally, (c) mirror to the slow
canary, (d) mirror to the sink. Users' requests go at ``--rate`` per second through the
case's route (new songs throughout: song-analyzer caches, and a cache hit would skip the
model call): first ``--warmup`` s per case untimed, then ``--rounds`` rounds (4), each
running every case for ``--duration`` / ``--rounds`` s (20 s / 4), the order rotating
(abcd, bcda, ...), so that what else the machine does lands on every case alike. For each case it prints the
users' latency p50 / p95 / p99 / max / mean and each one's ratio to (a), checks every answer
was a 200 from a stable pod, and counts the copies the canary answered (its own
``model_requests_total``, read from its ``/metrics`` before and after, once its copies in
flight are done) and, for the slow one, the most model calls its copies held open at once
(the fake upstream's peak concurrency for that model). The noise row compares (a)'s own
even rounds with its odd rounds: how far two halves of one unchanged case differ here.

After each batch of a mirrored case it waits until the canary has answered the batch's
copies (the slow one holds each ``--slow-latency`` s), so that no case's copies run during
another case.

Everything runs on this machine, canaries included, so a copy's work (the canary's, the
fake upstream's, the data plane's) competes for the same CPUs as the users' requests: a
cluster would run the canary's pods elsewhere. To tell that apart from the mirror making
users wait, it also prints the CPU time per user request of each part (``/proc``: the data
plane, which runs in the sandbox's supervisor process; stable's pods; each mirror target's
pod; the fake upstream; this client), and how busy the whole machine was (``/proc/stat``).
A mirror that made users wait for the copy would show in (c), whose copies take 2 s, far
more than in (b); (d) is the data plane's copying with almost nothing else.

Users' latency is measured by the client (``mdsandbox.traffic.TrafficGenerator``: a thread
pool, keep-alive), so it includes the client's own overhead, the same in every case.
Exit status 1 when a user got anything but a 200 from a stable pod, or a canary answered no
copy (the mirror did not run); a copy lost now and then is reported, not failed (a copy is
fire and forget, never sent again).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from fakeupstream import FakeUpstreamClient
from mdsandbox.demo import DemoError, Manifest, apply, kubectl, prepare_namespace
from mdsandbox.sandbox import Sandbox, SandboxError
from mdsandbox.traffic import Response, TrafficGenerator, song_request
from prometheus_client.parser import text_string_to_metric_families

NAMESPACE = "bench-mirror"
IMAGE = "modeldeploy/song-analyzer:bench"
SECRET = "openai-credentials"  # what mdsandbox.demo.prepare_namespace creates
GATEWAY = "bench-gateway"
STABLE, CANARY, SLOW, SINK = "songs-stable", "songs-canary", "songs-slow", "copy-sink"
# The sink: the fake upstream as a pod; it answers POST /analyze 404 at once (counted, route
# "unmatched"), so a copy costs next to nothing but the data plane's work.
SINK_IMAGE = "modeldeploy/fake-upstream:bench"
MODELS = {
    STABLE: "ft:gpt-4o-mini-2024-07-18:modeldeploy:songs:v1",
    CANARY: "ft:gpt-4o-mini-2024-07-18:modeldeploy:songs:v2",
    SLOW: "ft:gpt-4o-mini-2024-07-18:modeldeploy:songs:v2-slow",
}
CANARY_LIMITS = {"MAX_CONCURRENT_REQUESTS": "256", "MAX_QUEUED_REQUESTS": "256",
                 "UPSTREAM_MAX_CONCURRENCY": "256"}
QUANTILES = (0.5, 0.95, 0.99)


@dataclass(frozen=True)
class Case:
    key: str
    text: str
    route: str
    mirror_to: str | None


CASES = (
    Case("a", "(a) no mirror", "songs-plain", None),
    Case("b", "(b) mirror 100% to a normal canary", "songs-mirror", CANARY),
    Case("c", "(c) mirror 100% to a slow canary", "songs-mirror-slow", SLOW),
    Case("d", "(d) mirror 100% to a 404 sink", "songs-mirror-sink", SINK),
)


@dataclass
class Tally:
    """One case's users' requests over every round (warm-up ones apart)."""

    case: Case
    seconds: list[float] = field(default_factory=list)  # timed requests, all rounds
    by_round: list[list[float]] = field(default_factory=list)
    timed_s: float = 0.0
    sent: int = 0  # every request, warm-up included: what the mirror copied
    statuses: Counter[int | None] = field(default_factory=Counter)
    not_stable: int = 0  # answers from a pod other than stable's
    copies: int | None = None  # requests the mirror's canary answered over the whole run
    copy_outcomes: dict[str, int] = field(default_factory=dict)
    peak_in_flight: int | None = None  # the slow canary's model calls open at once, at most
    cpu_s: Counter[str] = field(default_factory=Counter)  # CPU seconds by part, timed slices
    machine: list[float] = field(default_factory=lambda: [0.0, 0.0])  # /proc/stat busy, all ticks

    def add(self, responses: list[Response], timed: bool, seconds: float) -> None:
        self.sent += len(responses)
        self.statuses.update(r.status for r in responses)
        self.not_stable += sum(1 for r in responses
                               if not (r.pod or "").startswith(f"{NAMESPACE}/{STABLE}-"))
        if timed:
            self.seconds += [r.elapsed_s for r in responses]
            self.by_round.append([r.elapsed_s for r in responses])
            self.timed_s += seconds


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="hack/bench mirror", description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate", type=float, default=50.0, help="users' requests per second (50)")
    parser.add_argument("--duration", type=float, default=20.0, help="timed seconds per case (20)")
    parser.add_argument("--rounds", type=int, default=4,
                        help="rounds; each runs every case for --duration / --rounds s, the order "
                        "rotating (4)")
    parser.add_argument("--warmup", type=float, default=2.0, help="untimed seconds per case first (2)")
    parser.add_argument("--slow-latency", type=float, default=2.0,
                        help="seconds the slow canary's model takes per call (2)")
    parser.add_argument("--replicas", type=int, default=2, help="stable's pods (2)")
    parser.add_argument("--concurrency", type=int, default=32,
                        help="users' requests in flight at most (the client's threads; 32)")
    parser.add_argument("--dir", type=Path, default=None, help="sandbox folder (default: a temp dir)")
    args = parser.parse_args(argv)
    if args.rate <= 0 or args.duration <= 0 or args.warmup < 0 or args.slow_latency < 0 \
            or args.replicas < 1 or args.concurrency < 1 or args.rounds < 1:
        parser.error("--rate, --duration, --rounds, --replicas, --concurrency > 0; --warmup, "
                     "--slow-latency >= 0")
    return args


def deployment(name: str, replicas: int, upstream_url: str) -> list[Manifest]:
    env: list[dict[str, Any]] = [{"name": "LOG_LEVEL", "value": "WARNING"}]
    if name != SINK:
        env += [
            {"name": "LLM_MODEL", "value": MODELS[name]},
            {"name": "LLM_API_BASE_URL", "value": upstream_url},
            {"name": "LLM_TIMEOUT", "value": "30"},
            {"name": "OPENAI_API_KEY",
             "valueFrom": {"secretKeyRef": {"name": SECRET, "key": "api-key"}}},
        ]
    if name in (CANARY, SLOW):
        env += [{"name": key, "value": value} for key, value in CANARY_LIMITS.items()]
    labels = {"app": name}
    return [
        {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name, "namespace": NAMESPACE},
         "spec": {"replicas": replicas, "selector": {"matchLabels": labels},
                  "template": {"metadata": {"labels": labels}, "spec": {"containers": [{
                      "name": "song-analyzer" if name != SINK else "sink",
                      "image": IMAGE if name != SINK else SINK_IMAGE,
                      "ports": [{"name": "http", "containerPort": 8080}], "env": env,
                      "readinessProbe": {"httpGet": {"path": "/health", "port": "http"},
                                         "periodSeconds": 1}}]}}}},
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": NAMESPACE},
         "spec": {"selector": labels, "ports": [{"name": "http", "port": 80, "targetPort": "http"}]}},
    ]


def gateway() -> Manifest:
    return {"apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway",
            "metadata": {"name": GATEWAY, "namespace": NAMESPACE},
            "spec": {"gatewayClassName": "sandbox",
                     "listeners": [{"name": "http", "protocol": "HTTP", "port": 80}]}}


def route(name: str, mirror_to: str | None) -> Manifest:
    """One rule to stable; with ``mirror_to``, the RequestMirror filter a mirror step adds."""
    rule: dict[str, Any] = {"matches": [{"path": {"type": "PathPrefix", "value": "/"}}],
                            "backendRefs": [{"name": STABLE, "port": 80}]}
    if mirror_to is not None:
        rule["filters"] = [{"type": "RequestMirror",
                            "requestMirror": {"backendRef": {"name": mirror_to, "port": 80},
                                              "percent": 100}}]
    return {"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
            "metadata": {"name": name, "namespace": NAMESPACE},
            "spec": {"parentRefs": [{"name": GATEWAY}], "rules": [rule]}}


def requests_answered(client: httpx.Client, service_url: str) -> dict[str, int]:
    """The service's model_requests_total by outcome (its own count: probes are not in it)."""
    text = client.get(service_url + "/metrics").text
    outcomes: Counter[str] = Counter()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "model_requests_total":
                outcomes[sample.labels.get("outcome", "")] += int(sample.value)
    return dict(outcomes)


def wait_ready(url: str, what: str, timeout_s: float = 60.0) -> None:
    """Until ``url`` answers 200 (the route accepted by the Gateway, its pods ready)."""
    deadline = time.monotonic() + timeout_s
    last = ""
    while time.monotonic() < deadline:
        try:
            answer = httpx.get(url, timeout=5)
            if answer.status_code == 200:
                return
            last = f"{answer.status_code} {answer.text[:200]}"
        except httpx.HTTPError as error:
            last = str(error)
        time.sleep(0.25)
    raise DemoError(f"{what} did not answer 200 within {timeout_s:.0f}s (last: {last})")


def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1)]


def process_cpu_s(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` so far (0 where /proc has no answer)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return 0.0


def machine_ticks() -> tuple[float, float]:
    """(busy, all) CPU ticks of the whole machine so far, from /proc/stat (0s elsewhere)."""
    try:
        with open("/proc/stat", encoding="ascii") as stat:
            values = [float(v) for v in stat.readline().split()[1:]]
    except (OSError, ValueError):
        return 0.0, 0.0
    idle = values[3] + (values[4] if len(values) > 4 else 0.0)  # idle + iowait
    return sum(values) - idle, sum(values)


class CpuMeter:
    """CPU seconds of each part of the setup: the processes it started and this client."""

    def __init__(self, sandbox: Sandbox) -> None:
        state = sandbox.state
        assert state is not None
        self.parts: dict[str, list[int]] = {
            # The supervisor runs the data plane (and the kubelet, idle but for its probes).
            "data plane": [state.supervisor_pid],
            "fake upstream": [state.pids["fake-upstream"]] if "fake-upstream" in state.pids else [],
        }
        pods = json.loads(kubectl(["-n", NAMESPACE, "get", "pods", "-o", "json"], sandbox.kubeconfig))
        for name in (STABLE, CANARY, SLOW, SINK):
            self.parts[PARTS[name]] = [
                int(status["containerID"].removeprefix("process://"))
                for pod in pods["items"] if pod["metadata"]["labels"].get("app") == name
                for status in (pod.get("status") or {}).get("containerStatuses") or []
                if str(status.get("containerID", "")).startswith("process://")
            ]

    def read(self) -> dict[str, float]:
        seconds = {part: sum(process_cpu_s(pid) for pid in pids) for part, pids in self.parts.items()}
        times = os.times()
        seconds["client"] = times.user + times.system
        return seconds


PARTS = {STABLE: "stable pods", CANARY: "canary pod", SLOW: "slow canary pod", SINK: "sink pod"}
CPU_COLUMNS = ("data plane", "stable pods", "canary pod", "slow canary pod", "sink pod", "fake upstream",
               "client")


class Users:
    """Users' requests, new songs in every batch (song-analyzer caches: a hit would skip the model)."""

    def __init__(self, args: argparse.Namespace, sandbox: Sandbox) -> None:
        self.args = args
        self.urls = {case.key: sandbox.route_url(NAMESPACE, case.route) + "/analyze" for case in CASES}
        self.batches = 0

    def send(self, case: Case, seconds: float) -> list[Response]:
        self.batches += 1
        offset = self.batches * 10_000_000
        traffic = TrafficGenerator(self.urls[case.key], body=lambda n: song_request(offset + n),
                                   rate=self.args.rate, concurrency=self.args.concurrency,
                                   max_requests=max(1, math.ceil(self.args.rate * seconds)),
                                   max_seconds=seconds + 5, timeout_s=30)
        return traffic.run()


def figures(seconds: list[float]) -> list[float]:
    """p50, p95, p99, max and mean."""
    return [quantile(seconds, q) for q in QUANTILES] + [max(seconds), statistics.fmean(seconds)]


def ratios(values: list[float], base: list[float]) -> str:
    return "/".join(f"{v / b:.2f}" for v, b in zip(values[:4], base[:4], strict=True))


def report(args: argparse.Namespace, tallies: list[Tally], took_s: float) -> int:
    print(f"mirror step: users' latency through an HTTPRoute, {args.rate:g} req/s, {args.duration:g}s "
          f"per case in {args.rounds} rounds of {args.duration / args.rounds:g}s (the cases' order "
          f"rotating), after {args.warmup:g}s untimed per case; up to {args.concurrency} requests in "
          f"flight; song-analyzer, stable {args.replicas} pods; the slow canary's model "
          f"{args.slow_latency:g}s per call; the sandbox's data plane plays the Gateway; took "
          f"{took_s:.0f}s\n")
    base = figures(tallies[0].seconds)
    columns = [f"p{round(q * 100)} ms" for q in QUANTILES] + ["max ms", "mean ms"]
    rows = [["case", "requests", "rate/s", *columns, "ratio p50/p95/p99/max", "all 200 from stable",
             "copies the mirror target answered"]]
    problems: list[str] = []
    notes: list[str] = []
    for tally in tallies:
        values = figures(tally.seconds)
        clean = set(tally.statuses) == {200} and tally.not_stable == 0
        if not clean:
            problems.append(f"{tally.case.text}: statuses {dict(tally.statuses)}, "
                            f"{tally.not_stable} not from stable")
        copies = "-"
        if tally.copies is not None:
            outcomes = ", ".join(f"{k} {v}" for k, v in sorted(tally.copy_outcomes.items()))
            copies = f"{tally.copies}/{tally.sent} ({outcomes})"
            if tally.peak_in_flight is not None:
                copies += f"; up to {tally.peak_in_flight} of its model calls open at once"
            if tally.copies == 0:
                problems.append(f"{tally.case.text}: the mirror target answered no copy: the "
                                "mirror did not run")
            elif tally.copies < tally.sent:
                notes.append(f"{tally.case.text}: the mirror target answered {tally.copies} of {tally.sent} "
                             "copies (a copy is fire and forget: one the data plane could not deliver "
                             "is not sent again)")
        rate = len(tally.seconds) / tally.timed_s if tally.timed_s else 0.0
        rows.append([tally.case.text, str(len(tally.seconds)), f"{rate:.1f}",
                     *(f"{v * 1000:.1f}" for v in values), ratios(values, base),
                     "yes" if clean else "NO", copies])
    plain = tallies[0].by_round
    if len(plain) >= 2:
        odd = [s for i, batch in enumerate(plain) if i % 2 == 0 for s in batch]
        even = [s for i, batch in enumerate(plain) if i % 2 == 1 for s in batch]
        rows.append(["noise: (a) even rounds / odd", str(len(even)), "",
                     *(f"{v * 1000:.1f}" for v in figures(even)), ratios(figures(even), figures(odd)),
                     "", ""])
    widths = [max(len(row[c]) for row in rows) for c in range(len(rows[0]))]
    for i, row in enumerate(rows):
        print("  ".join(cell.ljust(w) if c in (0, len(row) - 1, len(row) - 2) else cell.rjust(w)
                        for c, (cell, w) in enumerate(zip(row, widths, strict=True))).rstrip())
        if i == 0:
            print("  ".join("-" * w for w in widths))
    print("\nratio: the case's figure / (a)'s. noise: (a)'s own rounds 2, 4, ... against rounds 1, 3, "
          "... (the same route, no mirror): how far two halves of one case differ on this machine")
    print(f"\nCPU per user request, ms (user + system, from /proc, timed rounds only; the machine has "
          f"{os.cpu_count()} CPUs; machine busy: all its CPUs, whatever runs on them):")
    cpu_rows = [["case", *CPU_COLUMNS, "total", "machine busy"]]
    for tally in tallies:
        count = len(tally.seconds) or 1
        per_request = [tally.cpu_s[part] * 1000 / count for part in CPU_COLUMNS]
        busy = tally.machine[0] / tally.machine[1] if tally.machine[1] else 0.0
        cpu_rows.append([tally.case.text, *(f"{v:.2f}" for v in per_request), f"{sum(per_request):.2f}",
                         f"{busy:.0%}"])
    cpu_widths = [max(len(row[c]) for row in cpu_rows) for c in range(len(cpu_rows[0]))]
    for i, row in enumerate(cpu_rows):
        print("  ".join(cell.ljust(w) if c == 0 else cell.rjust(w)
                        for c, (cell, w) in enumerate(zip(row, cpu_widths, strict=True))).rstrip())
        if i == 0:
            print("  ".join("-" * w for w in cpu_widths))
    print()
    for tally in tallies[1:]:
        added = [(v - b) * 1000 for v, b in zip(figures(tally.seconds), base, strict=True)]
        print(f"added by {tally.case.text}: p50 {added[0]:+.1f} ms, p95 {added[1]:+.1f} ms, "
              f"p99 {added[2]:+.1f} ms, max {added[3]:+.1f} ms, mean {added[4]:+.1f} ms")
    for line in notes + problems:
        print(line)
    print(f"\nevery user got a 200 from stable and each mirror target answered copies: "
          f"{'no' if problems else 'yes'}")
    return 1 if problems else 0


def measure(args: argparse.Namespace, sandbox: Sandbox, upstream: FakeUpstreamClient,
            metrics: httpx.Client) -> list[Tally]:
    users = Users(args, sandbox)
    meter = CpuMeter(sandbox)
    tallies = {case.key: Tally(case) for case in CASES}
    canary_urls = {case.key: sandbox.service_url(NAMESPACE, case.mirror_to) for case in CASES
                   if case.mirror_to is not None}
    before = {key: requests_answered(metrics, url) for key, url in canary_urls.items()}

    def drain(key: str) -> None:
        """Until the case's canary has answered its copies so far (the slow one holds each
        --slow-latency s), so that none of its work spills into the next case."""
        if key not in canary_urls:
            return
        tally = tallies[key]
        deadline = time.monotonic() + args.slow_latency + 10
        last, unchanged_since = -1, time.monotonic()
        while True:
            after = requests_answered(metrics, canary_urls[key])
            tally.copy_outcomes = {k: v - before[key].get(k, 0) for k, v in after.items()
                                   if v - before[key].get(k, 0)}
            tally.copies = sum(tally.copy_outcomes.values())
            now = time.monotonic()
            if tally.copies != last:
                last, unchanged_since = tally.copies, now
            # Done when every copy is answered; a copy the data plane could not deliver is
            # never answered: then when nothing more came for a second.
            if tally.copies >= tally.sent or now - unchanged_since > 1.0 or now > deadline:
                return
            time.sleep(0.1)

    upstream.reset_stats()  # the slow model's peak concurrency, from here on
    for case in CASES:
        print(f"warm-up {case.text}: {args.warmup:g}s", file=sys.stderr, flush=True)
        tallies[case.key].add(users.send(case, args.warmup), timed=False, seconds=args.warmup)
        drain(case.key)
    slice_s = args.duration / args.rounds
    for round_index in range(args.rounds):
        order = CASES[round_index % len(CASES):] + CASES[:round_index % len(CASES)]
        print(f"round {round_index + 1}/{args.rounds}: " + ", ".join(c.key for c in order),
              file=sys.stderr, flush=True)
        for case in order:
            tally = tallies[case.key]
            cpu_before, ticks_before = meter.read(), machine_ticks()
            tally.add(users.send(case, slice_s), timed=True, seconds=slice_s)
            ticks_after = machine_ticks()
            drain(case.key)  # the copies' CPU counts for this case, and lands in no other
            cpu_after = meter.read()
            tally.cpu_s.update({part: cpu_after[part] - cpu_before[part] for part in cpu_after})
            tally.machine[0] += ticks_after[0] - ticks_before[0]
            tally.machine[1] += ticks_after[1] - ticks_before[1]
    tallies["c"].peak_in_flight = upstream.concurrency(MODELS[SLOW])[1]
    return [tallies[case.key] for case in CASES]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    workdir = (args.dir or Path(tempfile.mkdtemp(prefix="modeldeploy-bench-mirror-"))).resolve()
    started = time.monotonic()
    try:
        with Sandbox(workdir, prometheus=False) as sandbox:
            assert sandbox.fake_upstream_url is not None
            print(f"sandbox up in {workdir}", file=sys.stderr, flush=True)
            prepare_namespace(NAMESPACE, sandbox.kubeconfig)
            for name, replicas in ((STABLE, args.replicas), (CANARY, 1), (SLOW, 1), (SINK, 1)):
                for part in deployment(name, replicas, sandbox.fake_upstream_url):
                    apply(part, sandbox.kubeconfig)
            apply(gateway(), sandbox.kubeconfig)
            for case in CASES:
                apply(route(case.route, case.mirror_to), sandbox.kubeconfig)
            kubectl(["-n", NAMESPACE, "wait", "--for=condition=Available", "deployment", "--all",
                     "--timeout=120s"], sandbox.kubeconfig)
            for name in (STABLE, CANARY, SLOW, SINK):
                wait_ready(sandbox.service_url(NAMESPACE, name) + "/health", f"Service {name}")
            for case in CASES:
                wait_ready(sandbox.route_url(NAMESPACE, case.route) + "/health", f"HTTPRoute {case.route}")
            with FakeUpstreamClient(sandbox.fake_upstream_url) as upstream, \
                    httpx.Client(timeout=10) as metrics:
                upstream.set_fault(MODELS[SLOW], latency_s=args.slow_latency)
                tallies = measure(args, sandbox, upstream, metrics)
    except (DemoError, SandboxError, httpx.HTTPError) as error:
        print(f"hack/bench mirror failed: {error}\n(logs in {workdir / 'logs'})", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\ninterrupted: the sandbox is stopped", file=sys.stderr)
        return 130
    status = report(args, tallies, time.monotonic() - started)
    if args.dir is None:
        shutil.rmtree(workdir, ignore_errors=True)  # a temp folder of ours; kept only on failure
    return status


if __name__ == "__main__":
    sys.exit(main())
