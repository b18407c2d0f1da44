"""An evaluation step judges the canary's answers, which error rates and latency cannot see.

song-analyzer with the example case set (examples/evaluation/song-analyzer.yaml: 50 labelled
songs, a JSON Schema): a fine-tune that answers every request 200, fast and cheap, with
scores 30 points off is rolled back by its evaluation step while the error-rate and
latency gates pass; a correct fine-tune is promoted, and its evaluation's tokens and cost
are in status. Real operator, real song-analyzer processes behind the sandbox's Services,
real Prometheus, the fake upstream playing the provider.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from analysis_support import (
    SONG_V1,
    apply,
    condition,
    metric_status,
    revisions_served,
    song_analyzer,
    wait_canary,
    wait_stable,
    wait_status,
)
from fakeupstream import FakeUpstreamClient
from mdsandbox.sandbox import Sandbox
from mdsandbox.testing import KubeAPI
from mdsandbox.traffic import TrafficGenerator, song_request
from operator_process import OperatorProcess, run

pytestmark = pytest.mark.integration
NAME = "songs-eval"
REPO = Path(__file__).resolve().parents[3]
CASES = REPO / "examples" / "evaluation" / "song-analyzer.yaml"
MISCALIBRATED = "ft:gpt-4o-mini-2024-07-18:acme:songs:v2-miscalibrated"
RETRAINED = "ft:gpt-4o-mini-2024-07-18:acme:songs:v3"
EVALUATION = {"configMap": "song-analyzer-eval", "schemaKey": "schema.json", "path": "/analyze",
              "minScore": 0.9, "concurrency": 8, "timeoutSeconds": 20}
# Exposed to half of the users, judged by analysis, then by its answers, then promoted.
STEPS = [{"setWeight": 50}, {"analysis": {"measurements": 2}}, {"evaluation": EVALUATION},
         {"setWeight": 100}]


def case_set(namespace: str) -> dict[str, Any]:
    config_map: dict[str, Any] = yaml.safe_load(CASES.read_text())
    config_map["metadata"]["namespace"] = namespace
    return config_map


def stable_with_a_miscalibrated_model_ready(
    manifest: dict[str, Any], sandbox: Sandbox, kube: KubeAPI, namespace: str,
    upstream: FakeUpstreamClient,
) -> tuple[str, str]:
    """The case set and the first revision applied, stable, and MISCALIBRATED's scores
    shifted by 30 at the fake upstream: (stable revision, the Service's /analyze URL)."""
    apply(case_set(namespace), sandbox)
    apply(manifest, sandbox)
    stable = wait_stable(kube, namespace, NAME)
    upstream.set_fault(MISCALIBRATED, score_offset=30)
    return stable, sandbox.service_url(namespace, NAME) + "/analyze"


def test_wrong_scores_are_rolled_back_by_the_evaluation_and_a_correct_fine_tune_is_promoted(
    sandbox: Sandbox, kube: KubeAPI, namespace: str, operator: OperatorProcess,
    upstream: FakeUpstreamClient,
) -> None:
    def manifest(model: str, tag: str) -> dict[str, Any]:
        return song_analyzer(NAME, namespace, sandbox, model=model, tag=tag, steps=STEPS)

    stable, url = stable_with_a_miscalibrated_model_ready(
        manifest(SONG_V1, "1.0.0"), sandbox, kube, namespace, upstream)

    with TrafficGenerator(url, body=song_request, rate=8, max_seconds=240, timeout_s=15) as users:
        apply(manifest(MISCALIBRATED, "1.1.0"), sandbox)
        canary = wait_canary(kube, namespace, NAME, stable)
        status = wait_status(kube, namespace, NAME, lambda s: s.get("phase") == "RolledBack",
                             what="phase RolledBack", timeout=150)
        served = users.responses()

    assert condition(status, "Degraded")["reason"] == "EvaluationFailed", status["message"]
    evaluation = status["evaluation"]
    assert evaluation["revision"] == canary and evaluation["verdict"] == "Fail"
    assert evaluation["cases"] == 50 and evaluation["passed"] < 45, evaluation
    assert evaluation["failures"] and "$.score" in evaluation["failures"][0]["reason"]
    assert "below minScore" in status["message"]
    # What error rates and latency said of the same revision: healthy.
    for gate in ("error-rate", "latency-p95"):
        assert metric_status(status, gate)["verdict"] == "Pass", status["analysis"]
    # Users were served by both revisions meanwhile, every answer a 200.
    assert canary in revisions_served(served, NAME)
    assert {r.status for r in served if r.status is not None} == {200}

    with TrafficGenerator(url, body=song_request, rate=8, max_seconds=240, timeout_s=15):
        apply(manifest(RETRAINED, "1.2.0"), sandbox)
        retrained = wait_canary(kube, namespace, NAME, stable)
        promoted = wait_status(
            kube, namespace, NAME,
            lambda s: s.get("stableRevision") == retrained and not s.get("canaryRevision"),
            what="the retrained revision promoted", timeout=150)
    evaluation = promoted["evaluation"]
    assert (evaluation["revision"], evaluation["verdict"]) == (retrained, "Pass"), evaluation
    assert evaluation["passed"] >= 45 and evaluation["score"] >= 0.9
    # Each case cost upstream tokens, counted from the service's own answer headers.
    assert evaluation["tokens"] > 0 and evaluation["costUsd"] > 0, evaluation
    assert any(line.startswith("evaluation ") and "passed" in line
               for line in promoted["history"][0]["steps"]), promoted["history"][0]
    # `kubectl get -o wide` shows the last evaluation; the default view does not.
    wide = run(["kubectl", "get", "md", NAME, "-n", namespace, "-o", "wide"],
               Path(sandbox.kubeconfig)).splitlines()
    header, row = wide[0].split(), wide[1].split()
    assert header[-2:] == ["EVALUATION", "SCORE"] and row[-2] == "Pass", wide
    assert "EVALUATION" not in run(["kubectl", "get", "md", NAME, "-n", namespace],
                                   Path(sandbox.kubeconfig))


def test_blue_green_evaluates_green_through_the_preview_service_against_blue(
    sandbox: Sandbox, kube: KubeAPI, namespace: str, operator: OperatorProcess,
    upstream: FakeUpstreamClient,
) -> None:
    """prePromotionEvaluation with compareToStable: green (the preview Service) and blue (the
    Service) answer the same cases; green's scores 30 points off disagree, and the switch
    never happens: every user answer came from blue."""
    compare = {**EVALUATION, "minScore": 0.0,
               "compareToStable": {"path": "$.score", "tolerance": 10, "minAgreement": 0.9}}

    def manifest(model: str, tag: str) -> dict[str, Any]:
        body = song_analyzer(NAME, namespace, sandbox, model=model, tag=tag)
        body["spec"]["strategy"] = {"blueGreen": {"prePromotionEvaluation": compare,
                                                  "autoPromotionSeconds": 0}}
        return body

    blue, url = stable_with_a_miscalibrated_model_ready(
        manifest(SONG_V1, "1.0.0"), sandbox, kube, namespace, upstream)
    with TrafficGenerator(url, body=song_request, rate=4, max_seconds=150, timeout_s=15) as users:
        apply(manifest(MISCALIBRATED, "1.1.0"), sandbox)
        green = wait_canary(kube, namespace, NAME, blue)
        status = wait_status(kube, namespace, NAME, lambda s: s.get("phase") == "RolledBack",
                             what="phase RolledBack", timeout=120)
        served = [r for r in users.responses() if r.status is not None]

    evaluation = status["evaluation"]
    assert (evaluation["revision"], evaluation["verdict"]) == (green, "Fail"), evaluation
    assert evaluation["agreement"] < 0.9 and "disagrees with stable" in evaluation["message"]
    assert condition(status, "Degraded")["reason"] == "EvaluationFailed"
    assert revisions_served(served, NAME) == {blue}


def test_a_missing_case_set_holds_the_rollout_until_it_exists_and_resume_runs_it(
    sandbox: Sandbox, kube: KubeAPI, namespace: str, operator: OperatorProcess,
    upstream: FakeUpstreamClient,
) -> None:
    """An evaluation that cannot run says what to fix and holds (nothing about the revision
    is known); with the ConfigMap created, `modeldeploy resume` runs it, and the canary (one
    pod that served no user) goes on."""
    steps = [{"evaluation": EVALUATION}, {"setWeight": 100}]

    def manifest(model: str, tag: str) -> dict[str, Any]:
        return song_analyzer(NAME, namespace, sandbox, model=model, tag=tag, steps=steps)

    apply(manifest(SONG_V1, "1.0.0"), sandbox)
    stable = wait_stable(kube, namespace, NAME)
    apply(manifest(RETRAINED, "1.1.0"), sandbox)
    canary = wait_canary(kube, namespace, NAME, stable)
    held = wait_status(kube, namespace, NAME, lambda s: s.get("phase") == "Paused",
                       what="held: no case set", timeout=90)
    assert held["pauseCause"] == "evaluationInconclusive"
    assert (f"ConfigMap {namespace}/song-analyzer-eval not found: create it with the cases "
            "under key cases.jsonl") in held["message"]
    assert "`modeldeploy resume` runs the evaluation again" in held["message"]
    assert held["evaluation"]["verdict"] == "Inconclusive" and held["evaluation"]["cases"] == 0

    apply(case_set(namespace), sandbox)
    run(["modeldeploy", "-n", namespace, "resume", NAME], Path(sandbox.kubeconfig))
    promoted = wait_status(
        kube, namespace, NAME,
        lambda s: s.get("stableRevision") == canary and not s.get("canaryRevision"),
        what="evaluated, then promoted", timeout=120)
    assert promoted["evaluation"]["verdict"] == "Pass", promoted["evaluation"]
