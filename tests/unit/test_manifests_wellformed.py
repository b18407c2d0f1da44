"""Every file in crds/ and examples/ is a well-formed Kubernetes object."""

from __future__ import annotations

from pathlib import Path

import kubernetes_validate
import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
FILES = sorted([*REPO.glob("crds/*.yaml"), *REPO.glob("examples/*.yaml")])
K8S_VERSION = "1.30.0"


@pytest.mark.parametrize("path", FILES, ids=[str(p.relative_to(REPO)) for p in FILES])
def test_file_holds_well_formed_kubernetes_objects(path: Path) -> None:
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
    assert docs, f"{path} is empty"
    for doc in docs:
        assert (isinstance(doc.get("apiVersion"), str) and "/" in doc["apiVersion"]) or doc[
            "apiVersion"
        ] == "v1"
        assert isinstance(doc.get("kind"), str)
        assert doc["metadata"]["name"]
        if doc["kind"] == "CustomResourceDefinition" or doc["apiVersion"] in {"v1", "apps/v1"}:
            # Built-in kinds are checked against Kubernetes' own published schema.
            kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
