"""The kit's latency buckets let a relative p95 gate see a revision that answers slower.

Prometheus estimates a p95 by interpolating inside one histogram bucket, so the buckets
decide what a "within 1.2x of stable" gate can tell apart. Each case observes request
durations into the kit's own histogram (``ServiceMetrics``), hands the bucket counters to
Prometheus' own rule engine (``promtool test rules``), and evaluates the built-in
``latency-p95`` query the operator runs, for the canary and for stable.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from modeldeploy.analysis import presets, promql
from modelkit.metrics import ServiceMetrics

PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"
pytestmark = pytest.mark.skipif(
    not Path(PROMTOOL).exists(),
    reason="Debian's prometheus package (promtool) is not installed (hack/setup installs it)",
)
STABLE, CANARY = "stable0001", "canary0002"


def textgen_like(per_char_s: float) -> list[float]:
    """Durations of answers 16 to 63 characters long, as the textgen scenarios ask for."""
    return [0.004 + per_char_s * (16 + n * 37 % 48) for n in range(400)]


def bucket_series(revision: str, durations: list[float]) -> str:
    """The kit's bucket counters after ``durations``, as promtool input series: zero, then
    the counts a minute later (a rate over the minute sees every observation)."""
    metrics = ServiceMetrics()
    for duration in durations:
        metrics.observe_request("/generate", "success", duration)
    lines = []
    for family in metrics.registry.collect():
        for sample in family.samples:
            if sample.name != "model_request_duration_seconds_bucket":
                continue
            lines.append(
                f"  - series: 'model_request_duration_seconds_bucket{{namespace=\"ml\","
                f"modeldeploy_name=\"textgen\",modeldeploy_revision=\"{revision}\","
                f"le=\"{sample.labels['le']}\"}}'\n"
                f"    values: '0 {sample.value:g}'\n"
            )
    return "".join(lines)


def p95_ratio_exceeds(tmp_path: Path, stable: list[float], canary: list[float], ratio: float) -> bool:
    """Whether Prometheus finds canary p95 / stable p95 above ``ratio`` with the built-in query."""
    def p95(revision: str) -> str:
        context = promql.QueryContext("textgen", "ml", revision, STABLE, "1m")
        return promql.render(presets.BUILTIN_QUERIES["latency-p95"], context)

    verdicts = []
    for expected in (0, 1):
        tests = (
            "rule_files: []\nevaluation_interval: 1m\ntests:\n- interval: 1m\n  input_series:\n"
            + bucket_series(STABLE, stable) + bucket_series(CANARY, canary)
            + "  promql_expr_test:\n"
            + f"  - expr: 'vector(scalar({p95(CANARY)}) / scalar({p95(STABLE)}) > bool {ratio})'\n"
            + f"    eval_time: 1m\n    exp_samples:\n    - labels: '{{}}'\n      value: {expected}\n"
        )
        (tmp_path / "tests.yaml").write_text(tests)
        run = subprocess.run([PROMTOOL, "test", "rules", str(tmp_path / "tests.yaml")],
                             capture_output=True, text=True, timeout=60)
        verdicts.append(run.returncode == 0)
    assert verdicts.count(True) == 1, "promtool agreed with neither verdict (a broken test file?)"
    return verdicts[1]


@pytest.mark.parametrize("per_char_s", [0.0005, 0.002, 0.01, 0.05],
                         ids=["answers of 10-30 ms", "of 40-130 ms", "of 0.2-0.6 s", "of 1-3 s"])
def test_a_revision_1_7x_slower_fails_a_1_2x_relative_p95_gate(tmp_path: Path, per_char_s: float) -> None:
    """The textgen fault the integration scenario uses: weights 1.7x slower per character."""
    stable = textgen_like(per_char_s)
    slower = [duration * 1.7 for duration in stable]
    assert p95_ratio_exceeds(tmp_path, stable, slower, 1.2)


@pytest.mark.parametrize("per_char_s", [0.0005, 0.002, 0.01, 0.05],
                         ids=["answers of 10-30 ms", "of 40-130 ms", "of 0.2-0.6 s", "of 1-3 s"])
def test_the_same_revision_passes_a_1_2x_relative_p95_gate(tmp_path: Path, per_char_s: float) -> None:
    """The control: a canary as fast as stable, give or take 5%, is within 1.2x."""
    stable = textgen_like(per_char_s)
    jittered = [duration * (1.05 if n % 2 else 0.95) for n, duration in enumerate(stable)]
    assert not p95_ratio_exceeds(tmp_path, stable, jittered, 1.2)
