"""The committed CRD is exactly what the models generate."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml
from mdsandbox.apiserver.validation import stored_schema
from modeldeploy import crd, spec

REPO = Path(__file__).resolve().parents[2]
CRD_FILE = REPO / "crds" / "modeldeployment.yaml"


def test_committed_crd_matches_the_generator_byte_for_byte() -> None:
    printed = subprocess.run(
        [sys.executable, "-m", "modeldeploy.crd"], check=True, capture_output=True, text=True
    ).stdout
    assert printed == CRD_FILE.read_text(), (
        "crds/modeldeployment.yaml is stale: run `python -m modeldeploy.crd > "
        "crds/modeldeployment.yaml` after changing operator/modeldeploy/spec.py"
    )


def test_a_model_change_changes_the_generated_schema() -> None:
    """Guards the guard: the generator reads the models, so an edit shows up in its output."""

    class WiderSpec(spec.ModelDeploymentSpec):
        max_surge: int = 1

    assert "maxSurge" in crd.model_schema(WiderSpec)["properties"]
    assert "maxSurge" not in crd.model_schema(spec.ModelDeploymentSpec)["properties"]


def test_crd_names_and_columns_match_the_design() -> None:
    doc = yaml.safe_load(CRD_FILE.read_text())
    assert doc["metadata"]["name"] == "modeldeployments.modeldeploy.io"
    assert doc["spec"]["names"]["shortNames"] == ["md"]
    assert doc["spec"]["scope"] == "Namespaced"
    version = doc["spec"]["versions"][0]
    assert version["name"] == "v1alpha1"
    assert version["subresources"] == {"status": {}}
    columns = version["additionalPrinterColumns"]
    # `kubectl get md` shows the first six; `-o wide` adds the last evaluation's verdict and score.
    assert [c["name"] for c in columns if not c.get("priority")] == [
        "Phase", "Weight", "Stable", "Canary", "Age", "Message"]
    assert [(c["name"], c["jsonPath"]) for c in columns if c.get("priority") == 1] == [
        ("Evaluation", ".status.evaluation.verdict"), ("Score", ".status.evaluation.score")]


def _walk(node: object, path: str = "") -> list[tuple[str, dict[str, object]]]:
    found: list[tuple[str, dict[str, object]]] = []
    if isinstance(node, dict):
        found.append((path, node))
        for key, value in node.items():
            found += _walk(value, f"{path}/{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            found += _walk(value, f"{path}/{i}")
    return found


def test_schema_is_structural() -> None:
    """No $ref, no type-less unions, preserve-unknown-fields only inside the pod template
    and on objects that must stay empty (``maxProperties: 0``, see modeldeploy.crd)."""
    schema = yaml.safe_load(CRD_FILE.read_text())["spec"]["versions"][0]["schema"]
    for path, node in _walk(schema):
        assert "$ref" not in node, path
        assert "anyOf" not in node and "oneOf" not in node, path
        if node.get("x-kubernetes-preserve-unknown-fields"):
            assert "/template/" in path or node.get("maxProperties") == 0, (
                f"free-form schema outside the pod template at {path}")
        if "properties" in node:
            assert node.get("type") == "object", f"{path} has properties but no type: object"


def test_every_object_has_a_cel_type_once_the_api_server_has_stored_the_crd() -> None:
    """The server stores the schema without empty maps (``properties: {}`` goes), and CEL
    cannot read an object value whose schema then has neither properties, nor
    additionalProperties, nor preserve-unknown-fields: a rule reading it fails on a real
    server ("invalid object type, expected either Properties or AdditionalProperties")."""
    schema = stored_schema(yaml.safe_load(CRD_FILE.read_text())["spec"]["versions"][0]["schema"]
                           ["openAPIV3Schema"])
    untyped = [
        path for path, node in _walk(schema)
        if node.get("type") == "object" and "properties" not in node
        and not isinstance(node.get("additionalProperties"), dict)
        and not node.get("x-kubernetes-preserve-unknown-fields")
        and not path.endswith("/properties/metadata")
    ]
    assert untyped == [], f"objects CEL cannot read on a real server: {untyped}"
