"""Seconds from a canary's upstream starting to fail to all traffic back on stable, over N runs.

    hack/bench rollback                        # 10 runs, the demo's settings (about 3 minutes)
    hack/bench rollback --runs 10 --rate 20
    hack/bench rollback --scrape-interval 2s --interval 6s

One local sandbox and one operator process serve every run (as ./hack/demo starts them).
song-analyzer runs with 2 replicas under steady traffic; each run rolls out a new
revision (a new LLM_MODEL) with the steps ``setWeight: 50`` then ``pause: {}``, so the
canary holds at 50% with background analysis. Once the canary is ready, has served
traffic and passed two analysis rounds (plus a random part of one more interval, so the
fault lands at any phase of the analysis cycle), the fake upstream starts failing a share
of that model's calls (song-analyzer answers 502 for them) and the clock starts. A run ends
when no request has reached the canary for two seconds; what it reports:

- fault -> stable: until the last request the canary answered was sent (the data plane
  switched before the next one, at most 1/rate later);
- fault -> RolledBack: until the resource's status said RolledBack (polled every 0.25 s);
- the requests the bad canary served after the fault: count, share of all requests sent
  meanwhile, and their outcomes.

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

from fakeupstream import FakeUpstreamClient
from mdsandbox.demo import (
    NAME,
    DemoError,
    OperatorProcess,
    RolloutFollower,
    Snapshot,
    Timeline,
    apply,
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

NAMESPACE = "bench"
MODEL_PREFIX = "ft:gpt-4o-mini-2024-07-18:modeldeploy:bench"
HOLD_AT_HALF: list[dict[str, object]] = [{"setWeight": 50}, {"pause": {}}]
STEADY_ROUNDS = 2  # analysis rounds the canary passes before the fault goes on


@dataclass(frozen=True)
class RunResult:
    to_stable_s: float
    to_rolled_back_s: float
    canary_requests: int
    requests: int
    outcomes: str

    @property
    def share(self) -> float:
        return self.canary_requests / self.requests if self.requests else 0.0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="hack/bench rollback", description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--rate", type=float, default=10.0, help="requests per second to the Service")
    parser.add_argument("--error-rate", type=float, default=0.3,
                        help="share of the bad model's answers that are unusable (a 502 each)")
    parser.add_argument("--scrape-interval", default="1s", help="Prometheus scrape interval")
    parser.add_argument("--interval", default="3s",
                        help="analysis interval, also the PromQL rate window")
    parser.add_argument("--dir", type=Path, default=None, help="sandbox folder (default: a temp dir)")
    args = parser.parse_args(argv)
    if args.runs < 1 or args.rate <= 0 or not 0 < args.error_rate <= 1:
        parser.error("--runs >= 1, --rate > 0 and 0 < --error-rate <= 1")
    try:
        parse_duration(args.scrape_interval)
        parse_duration(args.interval)
    except ValueError as error:
        parser.error(str(error))
    return args


def steady(snapshot: Snapshot, stable: str | None) -> bool:
    """The new canary holds at 50%, ready, with STEADY_ROUNDS passing error-rate rounds."""
    if snapshot.canary is None or snapshot.stable != stable or snapshot.weight != 50:
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
    model = f"{MODEL_PREFIX}:r{number}-{int(time.time())}"
    apply(song_analyzer(model, prometheus_url=sandbox.prometheus_url,
                        upstream_url=sandbox.fake_upstream_url, namespace=NAMESPACE,
                        steps=HOLD_AT_HALF, analysis_interval=args.interval), sandbox.kubeconfig)
    ready = follower.wait_for(lambda s: steady(s, stable), 120,
                              f"run {number}: the canary holding at 50% with passing analysis", operator)
    revision = ready.canary
    assert revision is not None
    traffic = follower.traffic
    assert traffic is not None
    # Analysis rounds run every interval; `steady` is seen right after one. Switching the
    # fault on at a random phase of the round samples the whole range of waits.
    time.sleep(random.uniform(0.0, parse_duration(args.interval)))
    with FakeUpstreamClient(sandbox.fake_upstream_url) as upstream:
        fault_on = time.monotonic()
        # Unusable answers (a 502 each): song-analyzer retries a provider's 5xx, never these.
        upstream.set_fault(model, malformed_rate=args.error_rate)
    rolled_back = follower.wait_for(lambda s: s.phase == "RolledBack", 60,
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
    )


def spread(values: list[float], unit: str = "s", digits: int = 1) -> str:
    return (f"min {min(values):.{digits}f}{unit}  median {statistics.median(values):.{digits}f}{unit}  "
            f"max {max(values):.{digits}f}{unit}")


def report(args: argparse.Namespace, results: list[RunResult], took_s: float) -> None:
    print(f"rollback detection: {len(results)} run{'s' if len(results) != 1 else ''} in {took_s:.0f}s")
    print(f"configuration: scrape interval {args.scrape_interval} | rate window = analysis interval "
          f"{args.interval} | traffic {args.rate:g} req/s | "
          f"2 replicas, canary at 50% | fault: {args.error_rate:.0%} of the model's answers "
          f"unusable | rollback indicator error-rate > 5%")
    print()
    rows = [["run", "fault->stable", "fault->RolledBack", "canary requests", "share", "their outcomes"]]
    for i, r in enumerate(results, 1):
        rows.append([str(i), f"{r.to_stable_s:.1f}s", f"{r.to_rolled_back_s:.1f}s",
                     f"{r.canary_requests}/{r.requests}", f"{r.share:.0%}", r.outcomes])
    widths = [max(len(row[c]) for row in rows) for c in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
    print()
    print(f"fault -> all traffic on stable: {spread([r.to_stable_s for r in results])}")
    print(f"fault -> status RolledBack:     {spread([r.to_rolled_back_s for r in results])}")
    print(f"requests the bad canary served: "
          f"{spread([float(r.canary_requests) for r in results], unit='', digits=0)}; share "
          f"{spread([100 * r.share for r in results], unit='%', digits=0)}")
    scrape = parse_duration(args.scrape_interval)
    window = parse_duration(args.interval)
    first_failure = 1.0 / (args.rate * 0.5 * args.error_rate)  # the canary takes half the traffic
    bound = first_failure + scrape + window
    print(f"bound: the canary's first failure (~{first_failure:.1f}s at this rate) + its scrape "
          f"(<= {scrape:g}s) + the next analysis round (<= interval {window:g}s, "
          f"scheduled at its time) + the switch (same reconcile) = {bound:.1f}s for a fault far "
          "above the threshold; "
          f"one near it also waits for the {window:g}s rate window to fill: {bound + window:.1f}s "
          "(README.md, 'How fast a bad canary is caught')")


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
                apply(song_analyzer(f"{MODEL_PREFIX}:base", prometheus_url=sandbox.prometheus_url,
                                    upstream_url=sandbox.fake_upstream_url, namespace=NAMESPACE,
                                    steps=HOLD_AT_HALF, analysis_interval=args.interval),
                      sandbox.kubeconfig)
                first = follower.wait_for(lambda s: s.phase == "Succeeded", 120,
                                          "the first deployment", operator)
                follower.traffic = start_traffic(sandbox.service_url(NAMESPACE, NAME), rate=args.rate)
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
