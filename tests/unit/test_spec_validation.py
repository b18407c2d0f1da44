"""Bad manifests are refused with a message naming the field, by the CRD and by the models.

The CRD's schema is what `kubectl apply` meets; the pydantic models are what the
operator meets. Each invalid manifest below is refused by both, and each example
under examples/ is accepted by both.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from crd_schema_check import schema_errors
from modeldeploy import spec
from pydantic import ValidationError

REPO = Path(__file__).resolve().parents[2]
CRD = yaml.safe_load((REPO / "crds" / "modeldeployment.yaml").read_text())
EXAMPLES = sorted((REPO / "examples").glob("*.yaml"))

Manifest = dict[str, Any]


def base() -> Manifest:
    """A small valid ModelDeployment each case breaks in one place."""
    return {
        "apiVersion": "modeldeploy.io/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": "song-analyzer", "namespace": "ml"},
        "spec": {
            "replicas": 2,
            "template": {
                "spec": {
                    "containers": [{"name": "app", "image": "modeldeploy/song-analyzer:1.0"}]
                }
            },
            "strategy": {
                "canary": {
                    "steps": [{"setWeight": 10}, {"pause": {"duration": "1m"}}, {"setWeight": 100}],
                    "trafficRouting": {"replicas": {}},
                }
            },
            "analysis": {
                "interval": "30s",
                "provider": {"prometheus": {"address": "http://prometheus:9090"}},
                "presets": ["song-analyzer"],
                "metrics": [
                    {"name": "cost-per-song", "query": "sum(x)", "thresholdRange": {"max": 0.001}}
                ],
                "rollbackIndicators": [{"metric": "error-rate", "thresholdRange": {"max": 0.05}}],
            },
            "rollback": {"automatic": True, "bakeTime": "5m"},
        },
    }


def edit(change: Callable[[Manifest], None]) -> Manifest:
    manifest = copy.deepcopy(base())
    change(manifest)
    return manifest


def _steps(m: Manifest) -> list[dict[str, Any]]:
    steps: list[dict[str, Any]] = m["spec"]["strategy"]["canary"]["steps"]
    return steps


def _analysis(m: Manifest) -> dict[str, Any]:
    analysis: dict[str, Any] = m["spec"]["analysis"]
    return analysis


# (id, change, a word both error messages must contain: the field's name)
INVALID: list[tuple[str, Callable[[Manifest], None], str]] = [
    ("negative replicas", lambda m: m["spec"].update(replicas=-1), "replicas"),
    ("replicas given as a word", lambda m: m["spec"].update(replicas="three"), "replicas"),
    ("no pod template", lambda m: m["spec"].pop("template"), "template"),
    ("template without containers", lambda m: m["spec"]["template"]["spec"].pop("containers"),
     "containers"),
    ("empty container list", lambda m: m["spec"]["template"]["spec"].update(containers=[]),
     "containers"),
    ("container without image",
     lambda m: m["spec"]["template"]["spec"]["containers"][0].pop("image"), "image"),
    ("weight above 100", lambda m: _steps(m)[0].update(setWeight=101), "setWeight"),
    ("negative weight", lambda m: _steps(m)[0].update(setWeight=-5), "setWeight"),
    ("a step that both sets a weight and pauses", lambda m: _steps(m)[0].update(pause={}),
     "setWeight, pause, analysis"),
    ("an empty step", lambda m: _steps(m).append({}), "setWeight, pause, analysis"),
    ("no steps at all", lambda m: m["spec"]["strategy"]["canary"].update(steps=[]), "steps"),
    ("pause duration in words",
     lambda m: _steps(m)[1]["pause"].update(duration="5 minutes"), "duration"),
    ("analysis interval without a unit", lambda m: _analysis(m).update(interval="30"), "interval"),
    ("both canary and blue-green",
     lambda m: m["spec"]["strategy"].update(blueGreen={}), "canary, blueGreen"),
    ("neither canary nor blue-green", lambda m: m["spec"].update(strategy={}), "canary, blueGreen"),
    ("two traffic routers",
     lambda m: m["spec"]["strategy"]["canary"]["trafficRouting"].update(
         gatewayAPI={"httpRoute": "r"}), "replicas, gatewayAPI"),
    ("gateway routing without a route name",
     lambda m: m["spec"]["strategy"]["canary"].update(trafficRouting={"gatewayAPI": {}}),
     "httpRoute"),
    ("threshold range without bounds",
     lambda m: _analysis(m)["metrics"][0].update(thresholdRange={}), "min or max"),
    ("threshold min above max",
     lambda m: _analysis(m)["rollbackIndicators"][0].update(thresholdRange={"min": 2, "max": 1}),
     "min"),
    ("bake time in words", lambda m: m["spec"]["rollback"].update(bakeTime="10 min"), "bakeTime"),
    ("analysis without a provider", lambda m: _analysis(m).pop("provider"), "provider"),
    ("misspelt preset", lambda m: _analysis(m).update(presets=["sucess-rate"]), "presets"),
    ("noData set to pass", lambda m: _analysis(m).update(noData="pass"), "noData"),
    ("prometheus address without a scheme",
     lambda m: _analysis(m)["provider"]["prometheus"].update(address="prometheus:9090"),
     "address"),
    ("service port out of range", lambda m: m["spec"].update(service={"port": 70000}), "port"),
    ("metric name with capitals", lambda m: _analysis(m)["metrics"][0].update(name="Cost_Per"),
     "name"),
    ("negative failure limit", lambda m: _analysis(m)["metrics"][0].update(failureLimit=-1),
     "failureLimit"),
    ("progress deadline in words", lambda m: m["spec"].update(progressDeadline="soon"),
     "progressDeadline"),
    ("config value that is not a string", lambda m: m["spec"].update(config={"FF_X": 1}),
     "FF_X"),
    ("negative auto-promotion delay",
     lambda m: m["spec"].update(strategy={"blueGreen": {"autoPromotionSeconds": -1}}),
     "autoPromotionSeconds"),
]

# Rules the schema cannot express: caught by the operator, reported in status.
OPERATOR_ONLY: list[tuple[str, Callable[[Manifest], None], str]] = [
    ("unknown placeholder in a query",
     lambda m: _analysis(m)["metrics"][0].update(query="sum(x{pod=~'{{podname}}'})"),
     "{{podname}}"),
    ("rollback indicator naming no metric",
     lambda m: _analysis(m)["rollbackIndicators"][0].update(metric="latency-p99"), "latency-p99"),
    ("custom metric without a query",
     lambda m: _analysis(m)["metrics"][0].pop("query"), "cost-per-song"),
    ("analysis step with no analysis configured",
     lambda m: (m["spec"].pop("analysis"), _steps(m).append({"analysis": {}})), "analysis"),
    ("config key that is not an env var name",
     lambda m: m["spec"].update(config={"1-flag": "on"}), "1-flag"),
]


def _model_errors(manifest: Manifest) -> list[str]:
    try:
        spec.ModelDeployment.model_validate(manifest)
    except ValidationError as error:
        return spec.explain(error)
    return []


def test_the_base_manifest_is_valid() -> None:
    assert schema_errors(CRD, base()) == []
    assert _model_errors(base()) == []


@pytest.mark.parametrize(("change", "field"), [c[1:] for c in INVALID], ids=[c[0] for c in INVALID])
def test_invalid_manifest_is_refused_by_the_crd_schema_naming_the_field(
    change: Callable[[Manifest], None], field: str
) -> None:
    errors = schema_errors(CRD, edit(change))
    assert errors, "the CRD schema accepted an invalid manifest"
    assert any(field in path or field in message for path, message in errors), errors


@pytest.mark.parametrize(("change", "field"), [c[1:] for c in INVALID], ids=[c[0] for c in INVALID])
def test_invalid_manifest_is_refused_by_the_models_naming_the_field(
    change: Callable[[Manifest], None], field: str
) -> None:
    errors = _model_errors(edit(change))
    assert errors, "the models accepted an invalid manifest"
    assert any(field in line for line in errors), errors


@pytest.mark.parametrize(
    ("change", "field"), [c[1:] for c in OPERATOR_ONLY], ids=[c[0] for c in OPERATOR_ONLY]
)
def test_rule_beyond_the_schema_is_caught_by_the_models(
    change: Callable[[Manifest], None], field: str
) -> None:
    manifest = edit(change)
    # It passes the API server, so the operator is the one that must catch it.
    assert schema_errors(CRD, manifest) == []
    errors = _model_errors(manifest)
    assert any(field in line for line in errors), errors


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_example_is_accepted_by_schema_and_models(path: Path) -> None:
    for doc in yaml.safe_load_all(path.read_text()):
        if doc.get("kind") != "ModelDeployment":
            continue
        assert schema_errors(CRD, doc) == []
        assert _model_errors(doc) == []


def test_there_is_an_example_for_each_model_service() -> None:
    images = set()
    for path in EXAMPLES:
        for doc in yaml.safe_load_all(path.read_text()):
            if doc.get("kind") == "ModelDeployment":
                for container in doc["spec"]["template"]["spec"]["containers"]:
                    images.add(container["image"].split(":")[0])
    assert images >= {
        f"modeldeploy/{service}"
        for service in ("image-gen", "song-analyzer", "chat-proxy", "orchestrator", "textgen")
    }


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("30s", 30), ("5m", 300), ("1h", 3600), ("1h30m", 5400), ("250ms", 0.25), ("1.5s", 1.5)],
)
def test_durations_parse(text: str, seconds: float) -> None:
    assert spec.parse_duration(text).total_seconds() == seconds


@pytest.mark.parametrize("text", ["", "30", "5 m", "m5", "-1s", "1d"])
def test_bad_durations_say_how_to_write_one(text: str) -> None:
    with pytest.raises(ValueError, match=r"e\.g\. 30s, 5m"):
        spec.parse_duration(text)
