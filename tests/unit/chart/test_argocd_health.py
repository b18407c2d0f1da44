"""The Argo CD health check maps a ModelDeployment's status to Argo CD's health, in real Lua 5.1
(the dialect of Argo CD's gopher-lua)."""

from __future__ import annotations

import re
from typing import Any

import pytest
import yaml
from chart_harness import CHART, REPO
from lupa import lua51

HEALTH_LUA = (CHART / "files" / "argocd-health.lua").read_text()
DOCS = (REPO / "docs" / "argocd.md").read_text()


def _to_lua(runtime: Any, value: Any) -> Any:
    if isinstance(value, dict):
        return runtime.table_from({k: _to_lua(runtime, v) for k, v in value.items()})
    if isinstance(value, list):
        return runtime.table_from([_to_lua(runtime, v) for v in value])
    return value


def assess(obj: dict[str, Any], script: str = HEALTH_LUA) -> tuple[str, str]:
    """Run the health script as Argo CD does: `obj` is a global, the script returns `hs`."""
    runtime = lua51.LuaRuntime(unpack_returned_tuples=True)
    runtime.globals().obj = _to_lua(runtime, obj)
    hs = runtime.execute(script)
    return hs["status"], hs["message"]


SAME = -1


def md(generation: int | float = 3, observed: int | None = SAME, **status: Any) -> dict[str, Any]:
    """A ModelDeployment at `generation` with this status, observed at generation `observed`
    (by default the current one; None leaves observedGeneration out)."""
    body: dict[str, Any] = {
        "apiVersion": "modeldeploy.io/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": "song-analyzer", "namespace": "ml", "generation": generation},
    }
    if status:
        body["status"] = dict(status)
        if observed is not None:
            body["status"]["observedGeneration"] = generation if observed == SAME else observed
    return body


def invalid_spec(message: str, observed: int | None) -> dict[str, Any]:
    condition: dict[str, Any] = {
        "type": "Ready",
        "status": "False",
        "reason": "InvalidSpec",
        "message": message,
        "lastTransitionTime": "2026-01-01T00:00:00Z",
    }
    if observed is not None:
        condition["observedGeneration"] = observed
    return condition


CASES = [
    pytest.param(
        md(),
        ("Progressing", "waiting for the operator to observe generation 3"),
        id="a new resource with no status is progressing until observed",
    ),
    pytest.param(
        md(generation=4, observed=3, phase="Succeeded", message="promoted 41ab"),
        ("Progressing", "waiting for the operator to observe generation 4"),
        id="a spec change not yet observed is progressing even if the last rollout succeeded",
    ),
    pytest.param(
        md(generation=5.0, observed=None, phase="Progressing"),
        ("Progressing", "waiting for the operator to observe generation 5"),
        id="a status without observedGeneration is progressing, generation printed as an integer",
    ),
    pytest.param(
        md(phase="Succeeded", message="revision 41ab promoted after 5/5 analyses"),
        ("Healthy", "revision 41ab promoted after 5/5 analyses"),
        id="a succeeded rollout is healthy with its message",
    ),
    pytest.param(
        md(phase="Succeeded"),
        ("Healthy", "phase Succeeded"),
        id="a succeeded rollout without a message says its phase",
    ),
    pytest.param(
        md(phase="Progressing", message="step 1/5: weight 10; analysis 3/5 passed"),
        ("Progressing", "step 1/5: weight 10; analysis 3/5 passed"),
        id="a progressing rollout is progressing",
    ),
    pytest.param(
        md(phase="Pending"), ("Progressing", "phase Pending"), id="a pending rollout is progressing"
    ),
    pytest.param(
        md(phase="Promoting", message="scaling stable to 41ab"),
        ("Progressing", "scaling stable to 41ab"),
        id="a promoting rollout is progressing",
    ),
    pytest.param(
        md(phase="Paused", message="paused at step 3: waiting for promote"),
        ("Suspended", "paused at step 3: waiting for promote"),
        id="a paused rollout is suspended",
    ),
    pytest.param(
        md(phase="Paused", pauseReason="analysis inconclusive: no data"),
        ("Suspended", "paused: analysis inconclusive: no data"),
        id="a paused rollout without a message gives its pause reason",
    ),
    pytest.param(
        md(phase="RolledBack", message="rolled back: success-rate 0.71 < 0.85"),
        ("Degraded", "rolled back: success-rate 0.71 < 0.85"),
        id="a rolled back rollout is degraded with the reason",
    ),
    pytest.param(
        md(phase="Failed", message="progress deadline exceeded"),
        ("Degraded", "progress deadline exceeded"),
        id="a failed rollout is degraded",
    ),
    pytest.param(
        md(phase="Degraded", message="stable has 0/4 ready pods"),
        ("Degraded", "stable has 0/4 ready pods"),
        id="a degraded resource is degraded",
    ),
    pytest.param(
        md(phase="Progressing", conditions=[invalid_spec("steps[2].setWeight: 120 > 100", 3)]),
        ("Degraded", "steps[2].setWeight: 120 > 100"),
        id="an invalid spec is degraded with the condition's message",
    ),
    pytest.param(
        md(generation=4, observed=3, conditions=[invalid_spec("bad duration 5x", None)]),
        ("Degraded", "bad duration 5x"),
        id="an invalid spec the operator could not record as observed is still degraded",
    ),
    pytest.param(
        md(generation=4, observed=3, phase="Succeeded", conditions=[invalid_spec("old problem", 2)]),
        ("Progressing", "waiting for the operator to observe generation 4"),
        id="an invalid spec condition about an older generation is ignored",
    ),
    pytest.param(
        md(
            phase="Succeeded",
            conditions=[
                {
                    "type": "Ready",
                    "status": "True",
                    "reason": "Promoted",
                    "message": "ok",
                    "lastTransitionTime": "2026-01-01T00:00:00Z",
                }
            ],
        ),
        ("Healthy", "phase Succeeded"),
        id="a ready condition does not change the phase mapping",
    ),
    pytest.param(
        {"metadata": {"name": "x"}},
        ("Progressing", "waiting for the operator to observe the resource"),
        id="an object without generation or status is progressing",
    ),
]


@pytest.mark.parametrize(("obj", "expected"), CASES)
def test_health_of_a_model_deployment(obj: dict[str, Any], expected: tuple[str, str]) -> None:
    assert assess(obj) == expected


def test_docs_snippet_is_the_charts_health_check() -> None:
    match = re.search(
        r"resource\.customizations\.health\.modeldeploy\.io_ModelDeployment: \|\n(.*?)```", DOCS, re.DOTALL
    )
    assert match, "docs/argocd.md lacks the argocd-cm snippet"
    snippet = "".join(line.removeprefix("    ") for line in match[1].splitlines(True))
    assert snippet == HEALTH_LUA
    assert assess(md(phase="Paused"), snippet)[0] == "Suspended"


def test_example_applications_sync_paths_that_exist_here_with_self_heal() -> None:
    apps = [d for d in yaml.safe_load_all((REPO / "docs" / "argocd-application.yaml").read_text()) if d]
    assert {a["kind"] for a in apps} == {"Application"}
    paths = {a["spec"]["source"]["path"] for a in apps}
    assert paths == {"charts/modeldeploy", "examples"}
    for app in apps:
        assert (REPO / app["spec"]["source"]["path"]).is_dir()
        assert app["spec"]["syncPolicy"]["automated"]["selfHeal"] is True


def test_a_rollout_reverted_by_its_evaluation_says_so_with_the_score() -> None:
    evaluation = {"revision": "abc", "verdict": "Fail", "passed": 30, "cases": 50, "score": 0.6}
    health, message = assess(md(phase="RolledBack", message="evaluation of revision abc failed",
                                evaluation=evaluation))
    assert health == "Degraded"
    assert message == "evaluation of revision abc failed; evaluation Fail: 30/50 passed (score 0.60)"


def test_a_held_inconclusive_evaluation_is_suspended_and_a_passing_one_adds_nothing() -> None:
    held = {"revision": "abc", "verdict": "Inconclusive", "passed": 0, "cases": 50}
    health, message = assess(md(phase="Paused", message="step 1/4 evaluation: held",
                                evaluation=held))
    assert (health, message) == ("Suspended", "step 1/4 evaluation: held; evaluation "
                                 "Inconclusive: 0/50 passed")
    passed = {**held, "verdict": "Pass", "passed": 50, "score": 1.0}
    assert assess(md(phase="Progressing", message="step 2/4", evaluation=passed)) == (
        "Progressing", "step 2/4")


def test_a_mirror_in_flight_shows_its_extra_upstream_cost() -> None:
    mirror = {"revision": "abc", "percent": 50, "since": "2026-01-01T00:00:00Z", "costUsd": 0.0421}
    health, message = assess(md(phase="Progressing", message="step 1/3 mirror",
                                canaryRevision="abc", mirror=mirror))
    assert (health, message) == ("Progressing", "step 1/3 mirror; mirror extra upstream cost $0.0421")
    done = assess(md(phase="Succeeded", message="done", stableRevision="abc", mirror=mirror))
    assert done == ("Healthy", "done")
