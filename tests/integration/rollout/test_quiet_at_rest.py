"""Quiet at rest, quick on drift: what a shared cluster's API server sees of the operator.

A ModelDeployment that has succeeded costs the API server nothing while nothing changes
(the operator reads from its watch caches and writes only what differs), and an owned
object someone changes by hand is put back as soon as its watch event arrives. Counted
from the sandbox's audit log, by the operator's user agent, as on a real cluster.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from mdsandbox.audit import read_audit, verb_class
from mdsandbox.sandbox import Sandbox
from mdsandbox.testing import KubeAPI, wait_until
from operator_process import OperatorProcess, kubectl_apply, model_deployment, run
from scenario import md_status

pytestmark = pytest.mark.integration

OPERATOR_AGENT = "modeldeploy-operator/"
# Far shorter than the resync period (10 min) and far longer than the old 1-5 s tick.
REST_WINDOW = 15.0
# "Within a couple of seconds" of the watch event.
DRIFT_DEADLINE = 5.0


def operator_requests(sandbox: Sandbox, since: float) -> list[dict[str, Any]]:
    """The operator's API requests since ``since`` (epoch seconds), watches left out."""
    records = read_audit(Path(sandbox.workdir) / "audit.log", since=since,
                         user_agent_prefix=OPERATOR_AGENT)
    return [r for r in records if verb_class(r["verb"]) != "watches"]


def settled(kube: KubeAPI, namespace: str, name: str) -> str:
    """Wait until the ModelDeployment succeeded; its stable revision."""

    def revision() -> str | None:
        status = md_status(kube, namespace, name)
        return status.get("stableRevision") if status.get("phase") == "Succeeded" else None

    found: str = wait_until(revision, timeout=60, what=f"{name} to succeed")
    return found


def test_a_succeeded_model_deployment_costs_no_request_at_rest(
    sandbox: Sandbox, kube: KubeAPI, namespace: str, operator: OperatorProcess
) -> None:
    kubectl_apply(model_deployment("quiet", namespace, env={"MARK": "1"}), Path(sandbox.kubeconfig))
    settled(kube, namespace, "quiet")
    # Settling ends with the last status write and pod labels: wait until the operator
    # has sent nothing for a moment, then watch a whole window.
    wait_until(lambda: not operator_requests(sandbox, time.time() - 2.0), timeout=30,
               what="the operator to finish settling")
    window_start = time.time()
    time.sleep(REST_WINDOW)  # the measurement window itself, not a synchronisation
    requests = operator_requests(sandbox, window_start)
    writes = [r for r in requests if verb_class(r["verb"]) == "writes"]
    reads = [r for r in requests if verb_class(r["verb"]) == "reads"]
    shown = "\n".join(f"{r['verb']} {r['requestURI']}" for r in requests[:20])
    assert not writes, f"{len(writes)} writes at rest in {REST_WINDOW:g}s:\n{shown}"
    assert not reads, f"{len(reads)} reads at rest in {REST_WINDOW:g}s (a tick polls):\n{shown}"


def test_an_owned_deployment_scaled_by_hand_is_scaled_back_within_seconds(
    sandbox: Sandbox, kube: KubeAPI, namespace: str, operator: OperatorProcess
) -> None:
    kubeconfig = Path(sandbox.kubeconfig)
    kubectl_apply(model_deployment("drift", namespace, env={"MARK": "1"}), kubeconfig)
    revision = settled(kube, namespace, "drift")
    run(["kubectl", "-n", namespace, "scale", f"deployment/drift-{revision}", "--replicas=5"],
        kubeconfig)

    def scaled_back() -> bool:
        found = kube.get("Deployment", namespace, f"drift-{revision}")
        return found is not None and found["spec"]["replicas"] == 2

    wait_until(scaled_back, timeout=DRIFT_DEADLINE, what="the operator to scale drift back to 2")


def test_a_deleted_or_edited_service_is_restored_within_seconds(
    sandbox: Sandbox, kube: KubeAPI, namespace: str, operator: OperatorProcess
) -> None:
    kubeconfig = Path(sandbox.kubeconfig)
    kubectl_apply(model_deployment("svc", namespace, env={"MARK": "1"}), kubeconfig)
    settled(kube, namespace, "svc")
    expected = kube.get("Service", namespace, "svc")
    assert expected is not None
    selector = expected["spec"]["selector"]

    kube.merge_patch("Service", namespace, "svc", {"spec": {"selector": {"app": "someone-else"}}})
    wait_until(lambda: (kube.get("Service", namespace, "svc") or {}).get("spec", {}).get("selector")
               == selector, timeout=DRIFT_DEADLINE, what="the Service's selector to be restored")

    old_uid = expected["metadata"]["uid"]
    kube.delete("Service", namespace, "svc")

    def recreated() -> bool:
        found = kube.get("Service", namespace, "svc")
        return found is not None and found["metadata"]["uid"] != old_uid \
            and found["spec"]["selector"] == selector

    wait_until(recreated, timeout=DRIFT_DEADLINE, what="the deleted Service to be recreated")
