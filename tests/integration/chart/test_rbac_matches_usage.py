"""The RBAC the chart grants is exactly what the operator uses (issue 7, acceptance 2).

The real operator runs rollouts against the sandbox while its API server writes an audit
log; the operator's requests are told apart by their User-Agent (``modeldeploy-operator/…``
for its kubernetes client, ``kopf/…`` for Kopf), the ``modeldeploy`` CLI's by the
kubernetes client's default (``OpenAPI-Generator/…``). The chart is rendered with Helm's
own engine in each mode (one ClusterRole; a Role per watched namespace; each with HA's Kopf
peering), and:

(a) every request the operator made is allowed by the rules bound to its ServiceAccount;
(b) every (apiGroup, resource, verb) those rules grant was used, or is listed in
    ``NOT_EXERCISED`` below with the reason a short scenario cannot show it;
(c) the CLI's requests are allowed to a user holding the built-in ``edit`` role, i.e. by
    the chart's ClusterRoles aggregated into it (for modeldeploy.io), or by what ``view``
    itself grants (for the built-in kinds ``modeldeploy status`` reads).

Scenarios (all of them real: the operator process, kubectl, the CLI, the sandbox):
- cluster-wide operator: a replicas-routed ModelDeployment deployed, canaried to a pause,
  and aborted with ``modeldeploy abort``; a gatewayAPI-routed one, with analysis that
  authenticates to Prometheus with a bearer token from a Secret, deployed, canaried to a
  pause and promoted with ``modeldeploy promote`` (bakeTime 0s, so the old revision's
  Deployment and ConfigMap are deleted);
- an operator watching one namespace (the chart's namespaced mode), and the same two in the
  chart's HA mode (with the peering objects the chart creates): a first deployment each.

In each mode the operator runs with the arguments and environment of the rendered chart's
container (downward-API values filled in as the kubelet would; Kopf's health endpoint left
out), so a change to how the chart runs the operator is checked too.
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from mdsandbox.sandbox import Sandbox
from mdsandbox.testing import KubeAPI, wait_until
from operator_process import BIN, OperatorProcess, kubectl_apply, run
from rbac_rules import (
    RELEASE,
    RELEASE_NAMESPACE,
    REPO_ROOT,
    AuditLog,
    Grant,
    Request,
    operator_grants,
    render,
    service_account_name,
)

pytestmark = pytest.mark.integration

TOKEN_SECRET = "prometheus-token"

# Granted, needed, and not exercised by the scenarios above: (apiGroup, resource, verb) -> why.
# Empty today: the scenarios exercise every rule of every mode.
NOT_EXERCISED: dict[tuple[str, str, str], str] = {}
# Requests the namespaced mode deliberately does not grant: Kopf tries them, is refused
# (403) on a real cluster, logs it once, and carries on (charts/modeldeploy/README.md).
REFUSED_IN_NAMESPACED_MODE: dict[tuple[str, str, str], str] = {
    ("apiextensions.k8s.io", "customresourcedefinitions", "list"): "Kopf's CRD watch: "
    "new resources are then seen at the next restart",
    ("apiextensions.k8s.io", "customresourcedefinitions", "watch"): "as above",
    ("", "namespaces", "list"): "Kopf falls back to the namespaces it was given (--namespace)",
    ("", "namespaces", "watch"): "as above",
}
# What Kubernetes' built-in `view` role grants on the built-in kinds the CLI reads.
BUILTIN_VIEW: set[tuple[str, str, str]] = {
    (group, resource, verb)
    for group, resource in [("apps", "deployments"), ("", "events"), ("", "pods")]
    for verb in ("get", "list", "watch")
}


def is_operator(agent: str) -> bool:
    return agent.startswith(("modeldeploy-operator/", "kopf/"))


def is_cli(agent: str) -> bool:
    return agent.startswith("OpenAPI-Generator/")


def model_deployment(name: str, namespace: str, mark: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "modeldeploy.io/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "replicas": 2,
            "template": {"spec": {"containers": [{
                "name": "app", "image": "modeldeploy/fake-upstream:v1",
                "env": [{"name": "MARK", "value": mark}],
                "readinessProbe": {"httpGet": {"path": "/health", "port": 8080}, "periodSeconds": 1},
            }]}},
            "config": {"MARK": mark},
            "rollback": {"bakeTime": "0s"},
            **spec,
        },
    }


def canary(router: dict[str, Any]) -> dict[str, Any]:
    steps = [{"setWeight": 50}, {"pause": {}}, {"setWeight": 100}]
    return {"canary": {"steps": steps, "trafficRouting": router}}


MODES = ["cluster-wide", "namespaced", "ha", "ha-namespaced"]


def chart_values(mode: str, namespace: str) -> dict[str, Any]:
    """The chart's values for a mode, with the scenario's analysis Secret readable."""
    values: dict[str, Any] = {"rbac": {"analysisSecretNames": [TOKEN_SECRET]}}
    if mode.startswith("ha"):
        values["ha"] = {"enabled": True}
    if mode.endswith("namespaced"):
        values["watchNamespaces"] = [namespace]
    return values


@dataclass
class Run:
    """What the operator did in one of the chart's modes."""

    requests: list[Request]
    namespace: str  # the namespace it rolled out in (and watched, when namespaced)

    def values(self, mode: str) -> dict[str, Any]:
        return chart_values(mode, self.namespace)


@dataclass
class Observed:
    """The requests each party made while the scenarios ran."""

    runs: dict[str, Run]  # by mode
    cli: list[Request]

    def used(self) -> set[tuple[str, str, str]]:
        return {r.key for run in self.runs.values() for r in run.requests}


# What the downward API would give the chart's env (a StatefulSet's first replica in HA mode).
DOWNWARD_API = {
    "metadata.name": f"{RELEASE}-modeldeploy-0",
    "metadata.namespace": RELEASE_NAMESPACE,
    "metadata.labels['apps.kubernetes.io/pod-index']": "0",
}


def container_command(objects: list[dict[str, Any]]) -> tuple[list[str], dict[str, str]]:
    """The operator container's arguments and environment, as the kubelet would start it."""
    workloads = [o for o in objects if o["kind"] in ("Deployment", "StatefulSet")]
    assert len(workloads) == 1, "the chart renders one operator workload"
    container = next(c for c in workloads[0]["spec"]["template"]["spec"]["containers"]
                     if c["name"] == "operator")
    env: dict[str, str] = {}
    for var in container.get("env", []):
        if "value" in var:
            env[var["name"]] = str(var["value"])
        else:
            env[var["name"]] = DOWNWARD_API[var["valueFrom"]["fieldRef"]["fieldPath"]]
    args = [re.sub(r"\$\((\w+)\)", lambda m: env[m.group(1)], arg) for arg in container["args"]]
    # Kopf's health endpoint binds a fixed port and makes no API call: left out here.
    return [a for a in args if not a.startswith("--liveness")], env


class ChartModeOperator(OperatorProcess):
    """``modeldeploy-operator`` with the arguments and environment the rendered chart gives it."""

    def __init__(self, kubeconfig: Path, log_dir: Path, objects: list[dict[str, Any]]) -> None:
        super().__init__(kubeconfig, log_dir)
        self.args, self.env = container_command(objects)

    def start(self) -> None:
        self.starts += 1
        env = {**os.environ, **self.env, "KUBECONFIG": str(self.kubeconfig),
               "MODELDEPLOY_TICK_SECONDS": "1", "MODELDEPLOY_METRICS_PORT": str(self.metrics_port)}
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                [str(BIN / "modeldeploy-operator"), *self.args],
                stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True,
            )
        wait_until(lambda: "Activity 'configure' succeeded" in self.log_path.read_text(errors="replace")
                   or self.process is None or self.process.poll() is not None,
                   timeout=60, what=f"the operator ({' '.join(self.args)}) to start")
        assert self.process.poll() is None, f"operator exited at start:\n{self.log_tail()}"


def wait_phase(kube: KubeAPI, namespace: str, name: str, wanted: str) -> dict[str, Any]:
    """The status once it reaches ``wanted``; on timeout, the error shows the last status."""
    seen: list[dict[str, Any]] = [{}]

    def reached() -> dict[str, Any] | None:
        path = f"/apis/modeldeploy.io/v1alpha1/namespaces/{namespace}/modeldeployments/{name}"
        seen[0] = kube.http.get(path).json().get("status") or {}
        return seen[0] if seen[0].get("phase") == wanted else None

    try:
        return wait_until(reached, timeout=90, what=f"{name} to reach {wanted}", interval=0.25)
    except AssertionError as error:
        raise AssertionError(f"{error}; last status: {seen[0]}") from None


def fresh_namespace(kube: KubeAPI, name: str) -> str:
    kube.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
    return name


def cluster_wide_scenario(sandbox: Sandbox, kube: KubeAPI, namespace: str, audit: AuditLog) -> int:
    """Both routers, `modeldeploy promote` and `abort`, analysis with a token, revision clean-up.

    Returns the audit offset where the CLI's commands began.
    """
    kubeconfig = Path(sandbox.kubeconfig)
    kubectl_apply({"apiVersion": "v1", "kind": "Secret",
                   "metadata": {"name": TOKEN_SECRET, "namespace": namespace},
                   "stringData": {"token": "the-sandbox-prometheus-ignores-it"}}, kubeconfig)
    analysis = {
        "interval": "1s",
        "provider": {"prometheus": {
            "address": sandbox.prometheus_url or "http://127.0.0.1:9",
            "bearerTokenSecret": {"name": TOKEN_SECRET, "key": "token"},
        }},
        "metrics": [{"name": "always-one", "query": "vector(1)", "thresholdRange": {"max": 2}}],
    }
    manifests: dict[str, Callable[[str], dict[str, Any]]] = {
        "aborted": lambda mark: model_deployment(
            "aborted", namespace, mark, strategy=canary({"replicas": {}})),
        "promoted": lambda mark: model_deployment(
            "promoted", namespace, mark, strategy=canary({"gatewayAPI": {"httpRoute": "promoted"}}),
            analysis=analysis),
    }
    for mark, phase in (("1", "Succeeded"), ("2", "Paused")):
        for manifest in manifests.values():
            kubectl_apply(manifest(mark), kubeconfig)
        paused = {name: wait_phase(kube, namespace, name, phase) for name in manifests}
    cli_start = audit.offset()
    run(["modeldeploy", "-n", namespace, "status", "aborted"], kubeconfig)
    run(["modeldeploy", "-n", namespace, "abort", "aborted"], kubeconfig)
    run(["modeldeploy", "-n", namespace, "promote", "promoted"], kubeconfig)
    wait_phase(kube, namespace, "aborted", "Degraded")
    wait_phase(kube, namespace, "promoted", "Succeeded")
    # A new spec forgets the aborted revision: its Deployment and ConfigMap are deleted.
    aborted = paused["aborted"]["canaryRevision"]
    kubectl_apply(manifests["aborted"]("3"), kubeconfig)
    wait_until(lambda: kube.get("Deployment", namespace, f"aborted-{aborted}") is None,
               timeout=60, what="the aborted revision's Deployment to be deleted")
    return cli_start


def first_deployment(sandbox: Sandbox, kube: KubeAPI, namespace: str) -> None:
    kubectl_apply(model_deployment("first", namespace, "1", strategy=canary({"replicas": {}})),
                  Path(sandbox.kubeconfig))
    wait_phase(kube, namespace, "first", "Succeeded")


@pytest.fixture(scope="module")
def peering(sandbox: Sandbox, kube: KubeAPI) -> Iterator[None]:
    """Kopf's peering CRDs, as the chart installs them in HA mode (removed after, if added)."""
    crds = REPO_ROOT / "charts" / "modeldeploy" / "files" / "crds" / "kopf-peering.yaml"
    crd_path = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/clusterkopfpeerings.kopf.dev"
    present = kube.http.get(crd_path).status_code == 200
    run(["kubectl", "apply", "-f", str(crds)], Path(sandbox.kubeconfig))
    yield
    if not present:
        run(["kubectl", "delete", "-f", str(crds), "--wait=false"], Path(sandbox.kubeconfig))


@pytest.fixture(scope="module")
def observed(
    sandbox: Sandbox, kube: KubeAPI, crds_installed: None, peering: None,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Observed]:
    audit = AuditLog(sandbox.workdir / "audit.log")
    kubeconfig = Path(sandbox.kubeconfig)
    logs = tmp_path_factory.mktemp("rbac-operators")
    suffix = os.urandom(3).hex()
    namespaces = {mode: fresh_namespace(kube, f"rbac-{mode}-{suffix}") for mode in MODES}
    runs: dict[str, Run] = {}
    cli: list[Request] = []
    cluster_peerings: list[str] = []
    created_release_namespace = kube.get("Namespace", "", RELEASE_NAMESPACE) is None
    if created_release_namespace:  # where the operator's pod would live (POD_NAMESPACE)
        fresh_namespace(kube, RELEASE_NAMESPACE)
    try:
        for mode, namespace in namespaces.items():
            objects = render(chart_values(mode, namespace))
            # The peering objects the chart creates for HA mode (Kopf does not create them).
            for peering_object in (o for o in objects if o["apiVersion"].startswith("kopf.dev/")):
                kubectl_apply(peering_object, kubeconfig)
                if peering_object["kind"] == "ClusterKopfPeering":
                    cluster_peerings.append(peering_object["metadata"]["name"])
            start = audit.offset()
            operator = ChartModeOperator(kubeconfig, logs, objects)
            operator.start()
            try:
                if mode == "cluster-wide":
                    cli_start = cluster_wide_scenario(sandbox, kube, namespace, audit)
                else:
                    first_deployment(sandbox, kube, namespace)
            except BaseException:
                print(f"operator's log ({mode}):\n{operator.log_tail()}")
                raise
            finally:
                operator.stop()
            runs[mode] = Run(audit.requests_since(start, is_operator), namespace)
            if mode == "cluster-wide":
                cli = audit.requests_since(cli_start, is_cli)
        yield Observed(runs, cli)
    finally:
        for name in cluster_peerings:
            run(["kubectl", "delete", "clusterkopfpeering", name], kubeconfig)
        for namespace in namespaces.values():
            kube.delete("Namespace", "", namespace)
        if created_release_namespace:
            kube.delete("Namespace", "", RELEASE_NAMESPACE)


def grants_in(values: dict[str, Any]) -> list[Grant]:
    objects = render(values)
    grants = operator_grants(objects, service_account_name(objects))
    assert grants, "the chart binds rules to the operator's ServiceAccount"
    return grants


def refused(requests: list[Request], grants: list[Grant]) -> list[str]:
    return sorted({str(r) for r in requests if not any(g.allows(r) for g in grants)})


def test_the_scenarios_saw_the_operator_and_the_cli_at_work(observed: Observed) -> None:
    """Guards the filters below: an empty audit would make every other check pass."""
    for mode, run_ in observed.runs.items():
        assert {r.user_agent.split("/")[0] for r in run_.requests} == {"kopf", "modeldeploy-operator"}, mode
    peering = {r.resource for mode in ("ha", "ha-namespaced") for r in observed.runs[mode].requests
               if r.group == "kopf.dev"}
    assert peering == {"clusterkopfpeerings", "kopfpeerings"}
    assert ("modeldeploy.io", "modeldeployments/status", "patch") in {r.key for r in observed.cli}


@pytest.mark.parametrize("mode", MODES)
def test_every_request_the_operator_makes_is_allowed_in_each_mode(observed: Observed, mode: str) -> None:
    run_ = observed.runs[mode]
    grants = grants_in(run_.values(mode))
    if mode.endswith("namespaced"):
        assert [g.namespace for g in grants] == [run_.namespace], "one Role, in the watched namespace"
        tolerated = [r for r in run_.requests if not r.namespace and r.key in REFUSED_IN_NAMESPACED_MODE]
    else:
        assert all(g.namespace is None for g in grants), "cluster-wide mode binds a ClusterRole"
        tolerated = []
    assert refused([r for r in run_.requests if r not in tolerated], grants) == []


@pytest.mark.parametrize("mode", MODES)
def test_the_operator_is_granted_nothing_it_does_not_use(observed: Observed, mode: str) -> None:
    granted = set().union(*(g.triples() for g in grants_in(observed.runs[mode].values(mode))))
    assert sorted(granted - observed.used() - set(NOT_EXERCISED)) == []


def test_every_allow_listed_need_is_granted_and_really_not_exercised(observed: Observed) -> None:
    """Keeps NOT_EXERCISED honest: an entry the chart dropped, or the scenarios now use, goes."""
    for mode, run_ in observed.runs.items():
        granted = set().union(*(g.triples() for g in grants_in(run_.values(mode))))
        assert set(NOT_EXERCISED) <= granted, mode
    assert set(NOT_EXERCISED) & observed.used() == set()


def test_analysis_secrets_are_readable_only_when_listed_and_only_by_name(observed: Observed) -> None:
    reads = [r for r in observed.runs["cluster-wide"].requests if r.key == ("", "secrets", "get")]
    assert reads and {r.name for r in reads} == {TOKEN_SECRET}
    assert refused(reads, grants_in({})) != [], "no analysisSecretNames: no Secret at all"
    other = grants_in({"rbac": {"analysisSecretNames": ["another-secret"]}})
    assert refused(reads, other) != [], "a listed name grants that Secret only"
    assert refused(reads, grants_in({"rbac": {"analysisSecretNames": [TOKEN_SECRET]}})) == []


def test_the_cli_needs_only_what_the_edit_role_aggregates(observed: Observed) -> None:
    """`modeldeploy status|abort|promote` run as a user, not as the operator: a user bound to
    the built-in `edit` role gets the chart's aggregated ClusterRoles plus what `view` grants."""
    objects = render({})
    aggregated = [
        Grant.of(o) for o in objects
        if o["kind"] == "ClusterRole"
        and (o["metadata"].get("labels") or {}).get("rbac.authorization.k8s.io/aggregate-to-edit") == "true"
    ]
    assert aggregated, "the chart aggregates ModelDeployment rights into the edit role"
    ours = [r for r in observed.cli if r.group == "modeldeploy.io"]
    builtin = [r for r in observed.cli if r.group != "modeldeploy.io"]
    assert ours and refused(ours, aggregated) == []
    assert sorted({str(r) for r in builtin if r.key not in BUILTIN_VIEW}) == []
