"""The revision: a short, stable name for what the pods run.

A revision is the first 10 hex characters of sha256 over the canonical JSON
(sorted keys, no whitespace, UTF-8) of ``{"template": ..., "config": ...}``, with
the template dumped by its camelCase aliases and unset fields left out.

In the revision: everything that changes the pods, i.e. the pod template and the
config (feature flags reach the pods as environment variables, so a flag change is
canaried like an image change). Not in it: replicas, the Service, the strategy,
analysis and rollback settings, which change how a rollout runs, not what runs.
An absent config and an empty one give the same revision (the pods see the same
environment).

10 hex characters (40 bits) keep `<name>-<revision>` short; a collision needs about
a million revisions of one ModelDeployment.
"""

from __future__ import annotations

import hashlib
import json

from modeldeploy.spec import ModelDeploymentSpec

REVISION_LENGTH = 10


def revision_of(spec: ModelDeploymentSpec) -> str:
    """The revision of a spec: 10 hex chars of sha256 over template + config."""
    payload = {
        "template": spec.template.model_dump(mode="json", by_alias=True, exclude_none=True),
        "config": spec.config or {},
    }
    canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:REVISION_LENGTH]
