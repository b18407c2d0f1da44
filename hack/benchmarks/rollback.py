"""Seconds from a canary's upstream starting to fail to all traffic back on stable, over N runs.

    hack/bench rollback                        # 10 runs, the demo's settings (about 3 minutes)
    hack/bench rollback --settings fast        # = --scrape-interval 5s --interval 10s --weight 10
                                               #   --rate 20 --error-rate 0.3
    hack/bench rollback --settings realistic   # = --scrape-interval 15s --interval 60s --weight 10
                                               #   --rate 20 --error-rate 0.3
    hack/bench rollback --fault timeouts --runs 3
    hack/bench rollback --fault slow --runs 3

The three settings (an explicit flag overrides the one it names):

- demo (the default): scrape 1s, analysis interval 3s, weight 50, 10 req/s, 30% errors;
- fast: scrape 5s, interval 10s, weight 10, 20 req/s, 30% errors;
- realistic: scrape 15s, interval 60s, weight 10, 20 req/s, 30% errors.

One local sandbox and one operator process serve every run (as ./hack/demo starts them).
song-analyzer runs with 2 replicas under steady traffic; each run rolls out a new
revision (a new LLM_MODEL) with the steps ``setWeight: P`` (``--weight``, 50 by default)
then ``pause: {}``, so the canary holds at P% with background analysis.

Routing: with 2 replicas the replicas router can only split 50/50 (10% would be one canary
pod beside two stable ones: 33%), so any other weight is routed by the gatewayAPI router
through an HTTPRoute (the sandbox's data plane plays the Gateway and splits by the exact
weights) and the traffic goes to the route's address. ``--routing`` forces either; with
``replicas`` the canary's real share (the operator's effective weight) is what the
steady check and the arithmetic use, and the configuration line says so.

Once the canary is ready, has served traffic and passed two analysis rounds (plus a random
part of one more interval, so the fault lands at any phase of the analysis cycle), the
fake upstream starts failing that model's calls and the clock starts. ``--fault``:

- errors (default): ``--error-rate`` of the model's answers are unusable (content that is
  not JSON; song-analyzer answers 502 and never retries it); caught by song-analyzer's
  rollback indicator uncached-error-rate > 5%.
- timeouts: ``--error-rate`` of the model's calls hang (30 s) past song-analyzer's upstream
  deadline, which the bench manifests set to LLM_TIMEOUT=2 s (the service's default is
  120 s, examples/ 30 s): song-analyzer answers 504, counted outcome ``timeout``, which
  the same uncached-error-rate indicator counts (outcome error or timeout). A request is known to
  have failed only when its deadline passes, so the floor adds those 2 s.
- slow: every answer of the model takes 3 s (the fake upstream's latency). The preset's
  latency-p95 rollback indicator (> 20 s) would need a 20 s+ fault, too slow for a
  benchmark, so in this mode the bench manifests list their own rollback indicator
  latency-p95 > 1.5 s (a resource may override a preset's indicator by name; the
  healthy service answers in milliseconds here). Answers stay 200: "failed" below means
  answered slower than that 1.5 s threshold.

A run ends when no request has reached the canary for two seconds; what it reports:

- fault -> stable: until the last request the canary answered was sent (the data plane
  switched before the next one, at most 1/rate later);
- fault -> RolledBack: until the resource's status said RolledBack (polled every 0.25 s);
- the requests the bad canary served after the fault: count, share of all requests sent
  meanwhile, and their outcomes;
- the share of ALL requests sent between the fault and the revert that failed because of
  the bad canary (its failed answers / every request sent meanwhile).

Beside the measured figures it prints, for the same fault, traffic and weight:

- the floor: the canary's first failure (1 / (rate x weight x failing share), plus the
  2 s deadline for timeouts or the 3 s latency for slow: when the failure is recorded)
  plus one scrape interval: what a detector reading these metrics typically needs at
  least (a run can beat it when a scrape happens to land just after the first failure);
- Flagger with the analysis settings its docs use throughout (interval 1m, threshold 5
  failed checks; the rate window is the interval): about 5 x 1m = 300 s plus the floor;
- Argo Rollouts with a background AnalysisRun at this benchmark's ``--interval`` (an Argo
  metric's ``interval`` has no default) and its default ``failureLimit`` 0 (the run fails
  at the first failed measurement, failures > failureLimit): interval x (0 + 1) plus the
  floor. Both are estimates from their documented semantics, not measurements.

What bounds it: README.md, "How fast a bad canary is caught".
"""

from __future__ import annotations

import argparse
import random
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fakeupstream import FakeUpstreamClient
from mdsandbox.demo import (
    NAME,
    DemoError,
    Manifest,
    OperatorProcess,
    RolloutFollower,
    Snapshot,
    Timeline,
    apply,
    gateway_and_route,
    kubectl,
    outcome_mix,
    prepare_namespace,
    served_by,
    since,
    song_analyzer,
    start_traffic,
    wait_until_drained,
)
from mdsandbox.prometheus import parse_duration, prometheus_binary
from mdsandbox.sandbox import REPO_ROOT, Sandbox, SandboxError
from mdsandbox.traffic import Response
from modeldeploy.engine import REPLICAS_ROUTER
from modeldeploy.engine.replicas import plan_replicas

NAMESPACE = "bench"
MODEL_PREFIX = "ft:gpt-4o-mini-2024-07-18:modeldeploy:bench"
REPLICAS = 2
# The demo's held step; hack/benchmarks/scale.py imports it (and one_run) for its detection runs.
HOLD_AT_HALF: list[dict[str, object]] = [{"setWeight": 50}, {"pause": {}}]
STEADY_ROUNDS = 2  # analysis rounds the canary passes before the fault goes on
ROUTE = "song-analyzer-route"
GATEWAY = "bench-gateway"
# --fault timeouts: song-analyzer's upstream deadline in the bench manifests, and how long
# the fake upstream hangs (well past it).
TIMEOUT_LLM_S = 2.0
TIMEOUT_HANG_S = 30.0
# --fault slow: the bad model's latency, and the latency-p95 rollback indicator the bench
# manifests set in that mode (instead of the preset's 20 s).
SLOW_LATENCY_S = 3.0
SLOW_INDICATOR_S = 1.5
# Flagger, as its docs configure analysis throughout: checks every 1m, 5 failed checks.
FLAGGER_INTERVAL_S = 60.0
FLAGGER_THRESHOLD = 5
ARGO_FAILURE_LIMIT = 0  # AnalysisTemplate metric failureLimit default
SETTINGS: dict[str, dict[str, Any]] = {
    "demo": {"scrape_interval": "1s", "interval": "3s", "weight": 50, "rate": 10.0, "error_rate": 0.3},
    "fast": {"scrape_interval": "5s", "interval": "10s", "weight": 10, "rate": 20.0, "error_rate": 0.3},
    "realistic": {"scrape_interval": "15s", "interval": "60s", "weight": 10, "rate": 20.0,
                  "error_rate": 0.3},
}


@dataclass(frozen=True)
class RunResult:
    to_stable_s: float
    to_rolled_back_s: float
    canary_requests: int
    requests: int
    outcomes: str
    failed: int  # the bad canary's failed answers (slow: answered over SLOW_INDICATOR_S)

    @property
    def share(self) -> float:
        return self.canary_requests / self.requests if self.requests else 0.0

    @property
    def failed_share(self) -> float:
        return self.failed / self.requests if self.requests else 0.0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="hack/bench rollback", description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="settings: " + "; ".join(
                                         f"{name}: " + ", ".join(f"{k}={v}" for k, v in values.items())
                                         for name, values in SETTINGS.items()))
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--settings", choices=sorted(SETTINGS), default="demo",
                        help="defaults for --scrape-interval, --interval, --weight, --rate, --error-rate "
                        "(flags given win); default demo")
    parser.add_argument("--rate", type=float, default=None, help="requests per second to the Service")
    parser.add_argument("--error-rate", type=float, default=None,
                        help="share of the bad model's calls that fail (errors, timeouts)")
    parser.add_argument("--scrape-interval", default=None, help="Prometheus scrape interval")
    parser.add_argument("--interval", default=None,
                        help="analysis interval, also the PromQL rate window")
    parser.add_argument("--weight", type=int, default=None,
                        help="the canary's setWeight in the held step (1-99)")
    parser.add_argument("--fault", choices=("errors", "slow", "timeouts"), default="errors",
                        help="what the bad model does (see the description); default errors")
    parser.add_argument("--routing", choices=("auto", "replicas", "gatewayAPI"), default="auto",
                        help="auto: replicas when 2 pods split at exactly --weight, else gatewayAPI")
    parser.add_argument("--dir", type=Path, default=None, help="sandbox folder (default: a temp dir)")
    args = parser.parse_args(argv)
    args.overrides = []  # flags given beside --settings, for the configuration line
    for key, value in SETTINGS[args.settings].items():
        if getattr(args, key) is None:
            setattr(args, key, value)
        elif getattr(args, key) != value:
            args.overrides.append(f"--{key.replace('_', '-')} {getattr(args, key):g}"
                                  if isinstance(value, float | int) else f"--{key.replace('_', '-')} "
                                  f"{getattr(args, key)}")
    if args.runs < 1 or args.rate <= 0 or not 0 < args.error_rate <= 1 or not 1 <= args.weight <= 99:
        parser.error("--runs >= 1, --rate > 0, 0 < --error-rate <= 1 and 1 <= --weight <= 99")
    try:
        parse_duration(args.scrape_interval)
        parse_duration(args.interval)
    except ValueError as error:
        parser.error(str(error))
    replicas_weight = plan_replicas(args.weight, REPLICAS, REPLICAS_ROUTER, False).effective_weight
    if args.routing == "auto":
        args.routing = "replicas" if replicas_weight == args.weight else "gatewayAPI"
    # The canary's real share of the traffic: what status reports and the arithmetic uses.
    args.effective_weight = replicas_weight if args.routing == "replicas" else args.weight
    return args


def with_defaults(args: argparse.Namespace) -> argparse.Namespace:
    """``args`` with this benchmark's defaults for what a caller that builds its own namespace
    (hack/benchmarks/scale.py passes only interval and error_rate) leaves out: the demo's."""
    defaults = {"weight": 50, "fault": "errors", "routing": "replicas", "effective_weight": 50}
    return argparse.Namespace(**{**defaults, **vars(args)})


def hold_steps(args: argparse.Namespace) -> list[Manifest]:
    return [{"setWeight": args.weight}, {"pause": {}}]


def manifest(model: str, args: argparse.Namespace, sandbox: Sandbox) -> Manifest:
    """song_analyzer()'s manifest with this benchmark's steps, routing and fault settings."""
    assert sandbox.prometheus_url is not None and sandbox.fake_upstream_url is not None
    body = song_analyzer(model, prometheus_url=sandbox.prometheus_url,
                         upstream_url=sandbox.fake_upstream_url, namespace=NAMESPACE,
                         replicas=REPLICAS, steps=hold_steps(args), analysis_interval=args.interval)
    spec = body["spec"]
    if args.routing == "gatewayAPI":
        spec["strategy"]["canary"]["trafficRouting"] = {"gatewayAPI": {"httpRoute": ROUTE}}
    if args.fault == "timeouts":
        env = spec["template"]["spec"]["containers"][0]["env"]
        timeout = next(e for e in env if e["name"] == "LLM_TIMEOUT")
        timeout["value"] = f"{TIMEOUT_LLM_S:g}"
    if args.fault == "slow":
        spec["analysis"]["rollbackIndicators"] = [
            {"metric": "uncached-error-rate", "thresholdRange": {"max": 0.05}},
            {"metric": "latency-p95", "thresholdRange": {"max": SLOW_INDICATOR_S}},
        ]
    return body


def fault_text(args: argparse.Namespace) -> str:
    if args.fault == "errors":
        return (f"{args.error_rate:.0%} of the model's answers unusable (502) | "
                "rollback indicator uncached-error-rate > 5%")
    if args.fault == "timeouts":
        return (f"{args.error_rate:.0%} of the model's calls hang {TIMEOUT_HANG_S:g}s past LLM_TIMEOUT="
                f"{TIMEOUT_LLM_S:g}s (504, outcome timeout) | rollback indicator uncached-error-rate > 5%")
    return (f"every answer of the model {SLOW_LATENCY_S:g}s slow | the bench's own rollback indicator "
            f"latency-p95 > {SLOW_INDICATOR_S:g}s (the preset's is > 20s)")


def failing_share(args: argparse.Namespace) -> float:
    return 1.0 if args.fault == "slow" else float(args.error_rate)


def recorded_after_s(args: argparse.Namespace) -> float:
    """How long after it is sent a failing request is known (and counted) as one."""
    return {"errors": 0.0, "timeouts": TIMEOUT_LLM_S, "slow": SLOW_LATENCY_S}[args.fault]


def is_bad(response: Response, args: argparse.Namespace) -> bool:
    """A canary answer that failed because of the fault (slow: answered over the indicator)."""
    if args.fault == "slow":
        return not response.ok or response.elapsed_s > SLOW_INDICATOR_S
    return not response.ok


def steady(snapshot: Snapshot, stable: str | None, weight: int) -> bool:
    """The new canary holds at ``weight``%, ready, with STEADY_ROUNDS passing error-rate rounds."""
    if snapshot.canary is None or snapshot.stable != stable or snapshot.weight != weight:
        return False
    if "paused until" not in snapshot.message:
        return False
    errors = next((m for m in snapshot.analysis if m.get("name") == "error-rate"), None)
    return errors is not None and int(errors.get("consecutivePasses") or 0) >= STEADY_ROUNDS


def one_run(
    number: int,
    args: argparse.Namespace,
    sandbox: Sandbox,
    follower: RolloutFollower,
    operator: OperatorProcess,
    stable: str | None,
) -> RunResult:
    assert sandbox.prometheus_url is not None and sandbox.fake_upstream_url is not None
    args = with_defaults(args)
    model = f"{MODEL_PREFIX}:r{number}-{int(time.time())}"
    apply(manifest(model, args, sandbox), sandbox.kubeconfig)
    weight = args.effective_weight
    ready = follower.wait_for(
        lambda s: steady(s, stable, weight), 120 + STEADY_ROUNDS * parse_duration(args.interval),
        f"run {number}: the canary holding at {weight}% with passing analysis", operator)
    revision = ready.canary
    assert revision is not None
    traffic = follower.traffic
    assert traffic is not None
    # Analysis rounds run every interval; `steady` is seen right after one. Switching the
    # fault on at a random phase of the round samples the whole range of waits.
    time.sleep(random.uniform(0.0, parse_duration(args.interval)))
    with FakeUpstreamClient(sandbox.fake_upstream_url) as upstream:
        fault_on = time.monotonic()
        if args.fault == "errors":
            # Unusable answers (a 502 each): song-analyzer retries a provider's 5xx, never these.
            upstream.set_fault(model, malformed_rate=args.error_rate)
        elif args.fault == "timeouts":
            upstream.set_fault(model, timeout_rate=args.error_rate, hang_s=TIMEOUT_HANG_S)
        else:
            upstream.set_fault(model, latency_s=SLOW_LATENCY_S)
    rolled_back = follower.wait_for(lambda s: s.phase == "RolledBack", 60 + 3 * parse_duration(args.interval),
                                    f"run {number}: the rollback of {revision}", operator)
    rolled_back_at = time.monotonic()
    if rolled_back.stable != stable:
        raise DemoError(f"run {number}: stable is {rolled_back.stable} after the rollback, not {stable}")
    wait_until_drained(traffic, revision, settle_s=2.0, deadline_s=30, namespace=NAMESPACE)
    after = since(traffic.responses(), fault_on)
    canary = served_by(after, revision, NAMESPACE)
    last_sent = max((r.started for r in canary), default=fault_on)
    meanwhile = [r for r in after if r.started <= last_sent]
    return RunResult(
        to_stable_s=last_sent - fault_on,
        to_rolled_back_s=rolled_back_at - fault_on,
        canary_requests=len(canary),
        requests=len(meanwhile),
        outcomes=outcome_mix(canary),
        failed=sum(1 for r in canary if is_bad(r, args)),
    )


def spread(values: list[float], unit: str = "s", digits: int = 1) -> str:
    return (f"min {min(values):.{digits}f}{unit}  median {statistics.median(values):.{digits}f}{unit}  "
            f"max {max(values):.{digits}f}{unit}")


def report(args: argparse.Namespace, results: list[RunResult], took_s: float) -> None:
    weight = args.effective_weight
    routing = (f"gatewayAPI route at exactly {weight}%" if args.routing == "gatewayAPI" else
               f"replicas router: setWeight {args.weight} is {weight}% of the pods")
    print(f"rollback detection: {len(results)} run{'s' if len(results) != 1 else ''} in {took_s:.0f}s")
    settings = " ".join([f"--settings {args.settings}", *args.overrides])
    print(f"configuration: {settings} | scrape interval {args.scrape_interval} | rate window "
          f"= analysis interval {args.interval} | traffic {args.rate:g} req/s | "
          f"{REPLICAS} replicas, canary at {weight}% ({routing}) | fault {args.fault}: {fault_text(args)}")
    print()
    rows = [["run", "fault->stable", "fault->RolledBack", "canary requests", "share", "failed/all",
             "their outcomes"]]
    for i, r in enumerate(results, 1):
        rows.append([str(i), f"{r.to_stable_s:.1f}s", f"{r.to_rolled_back_s:.1f}s",
                     f"{r.canary_requests}/{r.requests}", f"{r.share:.0%}",
                     f"{r.failed}/{r.requests} ({r.failed_share:.1%})", r.outcomes])
    widths = [max(len(row[c]) for row in rows) for c in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
    print()
    print(f"fault -> all traffic on stable: {spread([r.to_stable_s for r in results])}")
    print(f"fault -> status RolledBack:     {spread([r.to_rolled_back_s for r in results])}")
    print(f"requests the bad canary served: "
          f"{spread([float(r.canary_requests) for r in results], unit='', digits=0)}; share "
          f"{spread([100 * r.share for r in results], unit='%', digits=0)}")
    failed_what = f"answered over {SLOW_INDICATOR_S:g}s" if args.fault == "slow" else "failed"
    print(f"requests {failed_what} because of the bad canary, of ALL requests sent between fault and "
          f"revert: {spread([100 * r.failed_share for r in results], unit='%', digits=1)} "
          f"(total {sum(r.failed for r in results)}/{sum(r.requests for r in results)})")
    scrape = parse_duration(args.scrape_interval)
    window = parse_duration(args.interval)
    # The canary takes `weight`% of the traffic, of which a `failing_share` fails.
    first_failure = 1.0 / (args.rate * weight / 100 * failing_share(args)) + recorded_after_s(args)
    floor = first_failure + scrape
    recorded = (f" incl. the {recorded_after_s(args):g}s until it is known" if recorded_after_s(args) else "")
    print(f"floor: the canary's first failure (~{first_failure:.1f}s at {args.rate:g} req/s x {weight}% x "
          f"{failing_share(args):.0%} failing{recorded}) + one scrape ({scrape:g}s) = {floor:.1f}s "
          "(typical, not a strict minimum: a run may beat it when a scrape lands just after "
          "the first failure)")
    flagger = FLAGGER_INTERVAL_S * FLAGGER_THRESHOLD
    print(f"Flagger for the same fault (assumed: its documented analysis interval 1m x threshold "
          f"{FLAGGER_THRESHOLD} failed checks): ~{flagger:.0f}s + floor = {flagger + floor:.0f}s")
    argo = window * (ARGO_FAILURE_LIMIT + 1)
    print(f"Argo Rollouts for the same fault (assumed: background AnalysisRun, metric interval = this "
          f"--interval {window:g}s, default failureLimit {ARGO_FAILURE_LIMIT}, so it fails at the first "
          f"failed measurement): interval x (failureLimit + 1) = {argo:g}s + floor = {argo + floor:.1f}s")
    if scrape < window:
        # The rollback indicators are also checked at each scrape interval between rounds.
        check, how = scrape, f"the next check of the indicators between rounds (<= scrape {scrape:g}s)"
    else:
        check, how = window, f"the next analysis round (<= interval {window:g}s)"
    bound = floor + check
    print(f"bound: the canary's first failure (~{first_failure:.1f}s at this rate) + its scrape "
          f"(<= {scrape:g}s) + {how} + the switch (same reconcile) = {bound:.1f}s for a fault far "
          "above the threshold (README.md, 'How fast a bad canary is caught')")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if prometheus_binary() is None:
        print("hack/bench rollback: Prometheus is not installed; run ./hack/setup", file=sys.stderr)
        return 1
    workdir = (args.dir or Path(tempfile.mkdtemp(prefix="modeldeploy-bench-"))).resolve()
    progress = Timeline(sys.stderr)
    started = time.monotonic()
    results: list[RunResult] = []
    try:
        with Sandbox(workdir, scrape_interval=args.scrape_interval) as sandbox:
            assert sandbox.prometheus_url is not None and sandbox.fake_upstream_url is not None
            kubectl(["apply", "-f", str(REPO_ROOT / "crds")], sandbox.kubeconfig)
            operator = OperatorProcess(sandbox.kubeconfig, workdir / "logs" / "operator.log")
            follower = RolloutFollower(sandbox.api_url, progress, namespace=NAMESPACE)
            try:
                operator.start()
                prepare_namespace(NAMESPACE, sandbox.kubeconfig)
                if args.routing == "gatewayAPI":
                    for part in gateway_and_route(NAMESPACE, GATEWAY, ROUTE):
                        apply(part, sandbox.kubeconfig)
                apply(manifest(f"{MODEL_PREFIX}:base", args, sandbox), sandbox.kubeconfig)
                first = follower.wait_for(lambda s: s.phase == "Succeeded", 120,
                                          "the first deployment", operator)
                url = (sandbox.route_url(NAMESPACE, ROUTE) if args.routing == "gatewayAPI"
                       else sandbox.service_url(NAMESPACE, NAME))
                follower.traffic = start_traffic(url, rate=args.rate)
                for number in range(1, args.runs + 1):
                    progress.plain(f"--- run {number}/{args.runs}")
                    results.append(one_run(number, args, sandbox, follower, operator, first.stable))
            finally:
                if follower.traffic is not None:
                    follower.traffic.stop()
                follower.close()
                operator.stop()
                progress.close()
    except (DemoError, SandboxError) as error:
        print(f"hack/bench rollback failed: {error}\n(logs in {workdir / 'logs'})", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\ninterrupted: the sandbox and the operator are stopped", file=sys.stderr)
        return 130
    report(args, results, time.monotonic() - started)
    if args.dir is None:
        shutil.rmtree(workdir, ignore_errors=True)  # a temp folder of ours; kept only on failure
    return 0


if __name__ == "__main__":
    sys.exit(main())
