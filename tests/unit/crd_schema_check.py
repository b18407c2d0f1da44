"""Check an object against a CRD's openAPIV3Schema as the API server would, without one.

The sandbox API server's own validator (``mdsandbox.apiserver.validate_manifest``), so
the unit tier and the sandbox refuse the same manifests: the schema as the server
stores it, unknown fields (kubectl's default strict field validation), defaults,
keywords, then ``x-kubernetes-validations`` CEL rules with Kubernetes' value
conversion. Errors are ``(field path, message)`` in Kubernetes' path style
(``spec.steps[1].setWeight``) and wording.
"""

from __future__ import annotations

from typing import Any

from mdsandbox.apiserver import validate_manifest


def schema_errors(crd: dict[str, Any], obj: dict[str, Any]) -> list[tuple[str, str]]:
    """Every problem the CRD's schema (keywords and CEL rules) finds in ``obj``."""
    schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return [(cause.field, cause.message) for cause in validate_manifest(schema, obj)]
