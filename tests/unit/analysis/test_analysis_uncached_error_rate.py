"""A provider's trouble shows on stable too once revisions are compared on uncached requests.

A new revision starts with an empty cache. When the provider fails a share of calls (a
burst of 429s), a cold canary, sending most of its requests to the provider, fails a
larger share of them than a warm stable that answers most from its cache: judged on the
plain ``error-rate`` the canary breaches its indicator while stable looks fine, and a
healthy canary is reverted (the false rollbacks ``hack/bench false-rollbacks`` counted).
``uncached-error-rate``, the indicator of the bundles of the services with a cache, puts
both on the same footing, so the operator's ``stable_troubled`` rule sees the trouble on
stable and lets the gates judge instead.

Each case counts requests and cache lookups with the kit's own ``ServiceMetrics`` (what a
service exports), evaluates the built-in queries in Prometheus' own rule engine
(``promtool test rules``), and hands the values to the operator's rule.
"""

from __future__ import annotations

import datetime as dt
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from modeldeploy.analysis import evaluate, presets, promql
from modeldeploy.measurement import Measurement
from modelkit.metrics import ServiceMetrics

PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"
pytestmark = pytest.mark.skipif(
    not Path(PROMTOOL).exists(),
    reason="Debian's prometheus package (promtool) is not installed (hack/setup installs it)",
)
STABLE, CANARY = "stable0001", "canary0002"
NOW = dt.datetime(2026, 12, 2, tzinfo=dt.UTC)


def served(requests: int, miss_share: float, provider_failure_share: float) -> ServiceMetrics:
    """A song-analyzer pod's counters after ``requests``: a hit is answered from the cache;
    a miss goes to the provider, and every ``1 / provider_failure_share``-th fails."""
    metrics = ServiceMetrics()
    misses = failed = 0
    for n in range(requests):
        if n * miss_share >= misses:  # spread evenly
            misses += 1
            metrics.record_cache(hit=False)
            if misses * provider_failure_share >= failed + 1:
                failed += 1
                metrics.observe_request("/analyses", "error", 0.5)
            else:
                metrics.observe_request("/analyses", "success", 0.5)
        else:
            metrics.record_cache(hit=True)
            metrics.observe_request("/analyses", "success", 0.001)
    return metrics


def series(revision: str, metrics: ServiceMetrics) -> str:
    """The counters as promtool input series: zero, then their values a minute later."""
    lines = []
    for family in metrics.registry.collect():
        for sample in family.samples:
            if sample.name not in {"model_requests_total", "model_cache_requests_total",
                                   "model_upstream_requests_total"}:
                continue
            labels = "".join(f',{k}="{v}"' for k, v in sample.labels.items())
            lines.append(
                f"  - series: '{sample.name}{{namespace=\"ml\",modeldeploy_name=\"song-analyzer\","
                f"modeldeploy_revision=\"{revision}\"{labels}}}'\n    values: '0 {sample.value:g}'\n"
            )
    return "".join(lines)


def measured(tmp_path: Path, metric: str, revisions: dict[str, ServiceMetrics]) -> dict[str, float]:
    """Each revision's value of the built-in ``metric``, as Prometheus computes it (to 3 places)."""
    inputs = "".join(series(revision, metrics) for revision, metrics in revisions.items())
    values = {}
    for revision in revisions:
        query = promql.render(presets.BUILTIN_QUERIES[metric],
                              promql.QueryContext("song-analyzer", "ml", revision, STABLE, "1m"))
        # An expectation no ratio meets: promtool's failure report prints what it got.
        tests = (
            "rule_files: []\nevaluation_interval: 1m\ntests:\n- interval: 1m\n"
            "  input_series:\n" + inputs + "  promql_expr_test:\n"
            f"  - expr: 'vector(scalar({query}))'\n    eval_time: 1m\n    exp_samples:\n"
            "    - labels: '{}'\n      value: -1\n"
        )
        (tmp_path / "tests.yaml").write_text(tests)
        run = subprocess.run([PROMTOOL, "test", "rules", str(tmp_path / "tests.yaml")],
                             capture_output=True, text=True, timeout=60)
        got = re.search(r"got: \{\} (\S+)", run.stdout + run.stderr)
        assert got is not None, run.stdout + run.stderr
        values[revision] = round(float(got.group(1)), 3)
    return values


def excused(metric: str, canary: float, stable: float) -> str | None:
    """What the operator decides on a breach of the song-analyzer bundle's indicator."""
    indicator = next(i for i in presets.BUNDLES["song-analyzer"][1] if i.metric == metric)
    assert indicator.threshold_range is not None and indicator.threshold_range.max is not None
    assert canary > indicator.threshold_range.max, "the case is meant to breach"
    return evaluate.stable_troubled(indicator, Measurement(stable, NOW))


def test_a_provider_burst_on_a_cold_canary_is_seen_on_stable_too(tmp_path: Path) -> None:
    # The same provider trouble (1 call in 5 fails) on both; the canary's cache is cold
    # (80% misses), stable's warm (10%).
    revisions = {CANARY: served(300, 0.8, 0.2), STABLE: served(1200, 0.1, 0.2)}

    plain = measured(tmp_path, "error-rate", revisions)
    uncached = measured(tmp_path, "uncached-error-rate", revisions)

    assert plain == {CANARY: 0.16, STABLE: 0.02}, "the cold canary fails 8x as often"
    assert uncached == {CANARY: 0.2, STABLE: 0.2}, "on what reached the provider, alike"
    assert presets.BUNDLES["song-analyzer"][1][0].metric == "uncached-error-rate"
    reason = excused("uncached-error-rate", uncached[CANARY], uncached[STABLE])
    assert reason is not None and reason.startswith("stable is troubled too (0.2,"), reason


def test_a_canary_failing_on_its_own_breaches_whatever_its_cache(tmp_path: Path) -> None:
    # A bad fine-tune: 30% of the canary's model answers unusable; the provider is fine.
    revisions = {CANARY: served(300, 0.8, 0.3), STABLE: served(1200, 0.1, 0.0)}

    uncached = measured(tmp_path, "uncached-error-rate", revisions)

    assert uncached == {CANARY: 0.3, STABLE: 0.0}
    assert excused("uncached-error-rate", uncached[CANARY], uncached[STABLE]) is None


def test_without_a_cache_it_is_the_error_rate(tmp_path: Path) -> None:
    metrics = ServiceMetrics()
    for n in range(200):
        metrics.observe_request("/analyses", "error" if n % 10 == 0 else "success", 0.5)
    metrics.observe_request("/analyses", "rejected", 0.001)  # the caller's fault: left out

    values = {metric: measured(tmp_path, metric, {CANARY: metrics})[CANARY]
              for metric in ("error-rate", "uncached-error-rate")}

    assert values == {"error-rate": 0.1, "uncached-error-rate": 0.1}


def test_a_warm_stable_that_lost_no_request_shows_the_burst_on_its_calls(tmp_path: Path) -> None:
    """Its few misses during a provider's burst of 429s are each saved by retries (two
    refused tries, then an answer): no request failed, but most of its calls did."""
    stable = ServiceMetrics()
    for n in range(200):
        if n % 20 == 0:  # 5% misses
            stable.record_cache(hit=False)
            for outcome in ("error", "error", "success"):
                stable.record_upstream("ft:songs", outcome)
        else:
            stable.record_cache(hit=True)
        stable.observe_request("/analyses", "success", 0.5)
    canary = served(20, 0.8, 0.2)  # 16 misses reached the provider: 3 ran out of retries

    values = measured(tmp_path, "uncached-error-rate", {CANARY: canary, STABLE: stable})
    calls = measured(tmp_path, "upstream-error-rate", {STABLE: stable})

    assert values == {CANARY: 0.188, STABLE: 0.0}, "stable lost nothing"
    assert calls == {STABLE: 0.667}
    indicator = presets.BUNDLES["song-analyzer"][1][0]
    reason = evaluate.stable_troubled(indicator, Measurement(values[STABLE], NOW),
                                      Measurement(calls[STABLE], NOW))
    assert reason is not None and reason.startswith("stable's calls to the model provider fail too")
