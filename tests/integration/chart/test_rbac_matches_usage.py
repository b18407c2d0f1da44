"""The RBAC the chart grants is exactly what the operator uses (issue 7, acceptance 2).

The real operator runs rollouts against the sandbox while its API server writes an audit
log; the operator's requests are told apart by their User-Agent (``modeldeploy-operator/…``
for its kubernetes client, ``kopf/…`` for Kopf), the ``modeldeploy`` CLI's by the
kubernetes client's default (``OpenAPI-Generator/…``). The chart is rendered with Helm's
own engine in each mode (one ClusterRole; a Role per watched namespace; each with HA's
leader election, a Role for the one Lease in the release namespace), and:

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
  chart's HA mode: as many operator processes as the rendered Deployment's replicas (two),
  each with its own pod name, electing a leader on the chart's Lease (created afresh in each
  HA mode, held, renewed): a first deployment each.

In each mode the operator runs with the arguments and environment of the rendered chart's
container (downward-API values filled in as the kubelet would; Kopf's health endpoint left
out), so a change to how the chart runs the operator is checked too.
"""

from __future__ import annotations

import functools
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
from operator_process import model_deployment as shared_model_deployment
from rbac_rules import (
    RELEASE,
    RELEASE_NAMESPACE,
    AuditLog,
    Grant,
    Request,
    operator_grants,
    render,
    service_account_name,
)

# One worker runs the whole module (tests/conftest.py, ONE_WORKER_MODULES): its module
# fixture plays every chart mode's scenario, about two minutes, and must not run once per worker.
pytestmark = pytest.mark.integration

TOKEN_SECRET = "prometheus-token"
# HA modes: a short Lease, so the holder renews it (every second) within a short scenario.
LEASE_SECONDS = 3

# Granted, needed, and not exercised by the scenarios above: (apiGroup, resource, verb) -> why.
NOT_EXERCISED: dict[tuple[str, str, str], str] = {
    ("modeldeploy.io", "modeldeployments", "get"): "the one object read again after a status "
    "write conflicts (the cache was behind a user's write): timing-dependent, rare by design",
    ("", "configmaps", "get"): "an evaluation step reads its case set, the user's ConfigMap "
    "(tests/integration/analysis/test_evaluation_step.py); these scenarios run no evaluation",
}
# The entries above that a run exercises now and then, by timing alone.
TIMING_DEPENDENT = {("modeldeploy.io", "modeldeployments", "get")}
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
    return shared_model_deployment(
        name, namespace, env={"MARK": mark}, config={"MARK": mark},
        rollback={"bakeTime": "0s"}, **spec,
    )


def canary(router: dict[str, Any]) -> dict[str, Any]:
    steps = [{"setWeight": 50}, {"pause": {}}, {"setWeight": 100}]
    return {"canary": {"steps": steps, "trafficRouting": router}}


MODES = ["cluster-wide", "namespaced", "ha", "ha-namespaced"]


def prometheus_address(sandbox: Sandbox) -> str:
    """Where the scenario's analysis queries (the chart must allow it)."""
    return sandbox.prometheus_url or "http://127.0.0.1:9"


def chart_values(mode: str, namespace: str, provider_address: str | None = None) -> dict[str, Any]:
    """The chart's values for a mode, with the scenario's analysis Secret readable and, when
    given, its Prometheus in the allow-list."""
    values: dict[str, Any] = {"rbac": {"analysisSecretNames": [TOKEN_SECRET]}}
    if provider_address is not None:
        values["analysis"] = {"allowedProviderAddresses": [provider_address]}
    if mode.startswith("ha"):
        values["ha"] = {"enabled": True, "leaseSeconds": LEASE_SECONDS}
    if mode.endswith("namespaced"):
        values["watchNamespaces"] = [namespace]
    return values


@dataclass
class Run:
    """What the operator did in one of the chart's modes."""

    requests: list[Request]
    namespace: str  # the namespace it rolled out in (and watched, when namespaced)
    replicas: list[str]  # the operator processes' pod names (POD_NAME)
    lease_holder: str | None  # HA modes: who held the chart's Lease at the end

    def values(self, mode: str) -> dict[str, Any]:
        return chart_values(mode, self.namespace)


@dataclass
class Observed:
    """The requests each party made while the scenarios ran."""

    runs: dict[str, Run]  # by mode
    cli: list[Request]

    def used(self) -> set[tuple[str, str, str]]:
        return {r.key for run in self.runs.values() for r in run.requests}


def operator_deployment(objects: list[dict[str, Any]]) -> dict[str, Any]:
    workloads = [o for o in objects if o["kind"] in ("Deployment", "StatefulSet")]
    assert len(workloads) == 1, "the chart renders one operator workload"
    assert workloads[0]["kind"] == "Deployment"
    return workloads[0]


def pod_names(objects: list[dict[str, Any]]) -> list[str]:
    """Names like the Deployment's pods would get, one per replica."""
    replicas = int(operator_deployment(objects)["spec"]["replicas"])
    return [f"{RELEASE}-modeldeploy-5d8f7c9b4-{index:05d}" for index in range(replicas)]


def container_command(
    objects: list[dict[str, Any]], pod_name: str
) -> tuple[list[str], dict[str, str]]:
    """The operator container's arguments and environment, as the kubelet would start it."""
    container = next(c for c in operator_deployment(objects)["spec"]["template"]["spec"]["containers"]
                     if c["name"] == "operator")
    # What the downward API gives the chart's env.
    downward = {"metadata.name": pod_name, "metadata.namespace": RELEASE_NAMESPACE}
    env: dict[str, str] = {}
    for var in container.get("env", []):
        if "value" in var:
            env[var["name"]] = str(var["value"])
        else:
            env[var["name"]] = downward[var["valueFrom"]["fieldRef"]["fieldPath"]]
    args = [re.sub(r"\$\((\w+)\)", lambda m: env[m.group(1)], arg) for arg in container["args"]]
    # Kopf's health endpoint binds a fixed port and makes no API call: left out here.
    return [a for a in args if not a.startswith("--liveness")], env


class ChartModeOperator(OperatorProcess):
    """``modeldeploy-operator`` with the arguments and environment the rendered chart gives it."""

    def __init__(
        self, kubeconfig: Path, log_dir: Path, objects: list[dict[str, Any]], pod_name: str
    ) -> None:
        super().__init__(kubeconfig, log_dir, name=pod_name)
        self.args, self.env = container_command(objects, pod_name)

    def start(self) -> None:
        self.starts += 1
        env = {**os.environ, **self.env, "KUBECONFIG": str(self.kubeconfig),
               "MODELDEPLOY_METRICS_PORT": str(self.metrics_port)}
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
            "address": prometheus_address(sandbox),
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
        if mark == "1":
            attach_to_a_gateway(kube, kubeconfig, namespace, "promoted")
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


def attach_to_a_gateway(kube: KubeAPI, kubeconfig: Path, namespace: str, route: str) -> None:
    """The operator created the HTTPRoute with no parentRefs: the platform team attaches it
    to a Gateway (until a Gateway accepts it, a canary's weights serve nothing)."""
    kubectl_apply({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway",
                   "metadata": {"name": "gateway", "namespace": namespace},
                   "spec": {"gatewayClassName": "sandbox",
                            "listeners": [{"name": "http", "protocol": "HTTP", "port": 80}]}},
                  kubeconfig)
    kubectl_apply({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
                   "metadata": {"name": route, "namespace": namespace},
                   "spec": {"parentRefs": [{"name": "gateway"}]}}, kubeconfig)

    def accepted() -> bool:
        parents = ((kube.get("HTTPRoute", namespace, route) or {}).get("status") or {}).get("parents")
        return any(c["type"] == "Accepted" and c["status"] == "True"
                   for p in parents or [] for c in p["conditions"])

    wait_until(accepted, timeout=30, what=f"HTTPRoute {route} to be accepted")


def first_deployment(sandbox: Sandbox, kube: KubeAPI, namespace: str) -> None:
    kubectl_apply(model_deployment("first", namespace, "1", strategy=canary({"replicas": {}})),
                  Path(sandbox.kubeconfig))
    wait_phase(kube, namespace, "first", "Succeeded")


def lease_path(objects: list[dict[str, Any]]) -> str | None:
    """The chart's Lease (HA mode), where the rendered env tells the operator to keep it."""
    env = container_command(objects, "any")[1]
    if env.get("MODELDEPLOY_LEADER_ELECTION") != "true":
        return None
    namespace, name = env["POD_NAMESPACE"], env["MODELDEPLOY_LEASE_NAME"]
    return f"/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases/{name}"


def renewals(audit: AuditLog, start: int) -> list[Request]:
    """The operator's Lease updates since ``start`` (the holder's renewals)."""
    update = ("coordination.k8s.io", "leases", "update")
    return [r for r in audit.requests_since(start, is_operator) if r.key == update]


@pytest.fixture(scope="module")
def observed(
    sandbox: Sandbox, kube: KubeAPI, crds_installed: None,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Observed]:
    audit = AuditLog(sandbox.workdir / "audit.log")
    kubeconfig = Path(sandbox.kubeconfig)
    logs = tmp_path_factory.mktemp("rbac-operators")
    suffix = os.urandom(3).hex()
    namespaces = {mode: fresh_namespace(kube, f"rbac-{mode}-{suffix}") for mode in MODES}
    runs: dict[str, Run] = {}
    cli: list[Request] = []
    created_release_namespace = kube.get("Namespace", "", RELEASE_NAMESPACE) is None
    if created_release_namespace:  # where the operator's pod would live (POD_NAMESPACE)
        fresh_namespace(kube, RELEASE_NAMESPACE)
    try:
        for mode, namespace in namespaces.items():
            objects = render(chart_values(mode, namespace, prometheus_address(sandbox)))
            lease = lease_path(objects)
            start = audit.offset()
            operators = [ChartModeOperator(kubeconfig, logs, objects, pod) for pod in pod_names(objects)]
            holder: str | None = None
            try:
                for operator in operators:
                    operator.start()
                if mode == "cluster-wide":
                    cli_start = cluster_wide_scenario(sandbox, kube, namespace, audit)
                else:
                    first_deployment(sandbox, kube, namespace)
                if lease is not None:
                    # The holder keeps renewing: wait for a renewal (not only the creation).
                    wait_until(functools.partial(renewals, audit, start), timeout=5 * LEASE_SECONDS,
                               what=f"the Lease holder to renew {lease}")
                    holder = kube.http.get(lease).json()["spec"].get("holderIdentity")
            except BaseException:
                for operator in (o for o in operators if o.process is not None):
                    print(f"operator's log ({mode}, {operator.name}):\n{operator.log_tail()}")
                raise
            finally:
                for operator in operators:
                    operator.stop()
                if lease is not None:  # the next HA mode starts with no Lease, and creates it
                    kube.http.delete(lease)
            runs[mode] = Run(audit.requests_since(start, is_operator), namespace,
                             [o.name for o in operators], holder)
            if mode == "cluster-wide":
                cli = audit.requests_since(cli_start, is_cli)
        yield Observed(runs, cli)
    finally:
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
    assert ("modeldeploy.io", "modeldeployments/status", "patch") in {r.key for r in observed.cli}


@pytest.mark.parametrize("mode", MODES)
def test_kopf_runs_standalone_and_only_ha_modes_elect_a_leader(observed: Observed, mode: str) -> None:
    run_ = observed.runs[mode]
    assert [str(r) for r in run_.requests if r.group == "kopf.dev"] == [], "no Kopf peering"
    lease_requests = [r for r in run_.requests if r.resource == "leases"]
    if not mode.startswith("ha"):
        assert run_.replicas == [f"{RELEASE}-modeldeploy-5d8f7c9b4-00000"] and lease_requests == []
        return
    assert len(run_.replicas) == 2, "HA mode runs the rendered Deployment's two replicas"
    assert run_.lease_holder in run_.replicas, "one replica holds the Lease under its pod name"
    # Created once (by whichever replica came first), read by both, renewed by the holder.
    assert {r.verb for r in lease_requests} == {"create", "get", "update"}
    assert {(r.group, r.namespace) for r in lease_requests} == {("coordination.k8s.io", RELEASE_NAMESPACE)}
    assert {r.name for r in lease_requests if r.verb != "create"} == {f"{RELEASE}-modeldeploy"}


@pytest.mark.parametrize("mode", ["ha", "ha-namespaced"])
def test_lease_access_is_limited_to_the_charts_lease_in_the_release_namespace(
    observed: Observed, mode: str
) -> None:
    run_ = observed.runs[mode]
    lease_requests = [r for r in run_.requests if r.resource == "leases"]
    lease_grants = [g for g in grants_in(run_.values(mode)) if is_lease_grant(g)]
    assert [g.namespace for g in lease_grants] == [RELEASE_NAMESPACE]
    assert lease_requests and refused(lease_requests, lease_grants) == []
    other_name = grants_in({**run_.values(mode), "ha": {"enabled": True, "leaseName": "another-lease"}})
    assert {r.split()[0] for r in refused(lease_requests, other_name)} == {"get", "update"}, (
        "get and update reach the named Lease only (create cannot be limited by name)"
    )


def is_lease_grant(grant: Grant) -> bool:
    return any("coordination.k8s.io" in rule.get("apiGroups", []) for rule in grant.rules)


@pytest.mark.parametrize("mode", MODES)
def test_every_request_the_operator_makes_is_allowed_in_each_mode(observed: Observed, mode: str) -> None:
    run_ = observed.runs[mode]
    grants = grants_in(run_.values(mode))
    lease_grants = [g for g in grants if is_lease_grant(g)]
    expected = [RELEASE_NAMESPACE] if mode.startswith("ha") else []
    assert [g.namespace for g in lease_grants] == expected, "HA: one Role, for the Lease"
    if mode.endswith("namespaced"):
        assert [g.namespace for g in grants if g not in lease_grants] == [run_.namespace], (
            "one Role, in the watched namespace"
        )
        tolerated = [r for r in run_.requests if not r.namespace and r.key in REFUSED_IN_NAMESPACED_MODE]
    else:
        assert all(g.namespace is None for g in grants if g not in lease_grants), (
            "cluster-wide mode binds a ClusterRole"
        )
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
    # A timing-dependent need may be exercised by a run now and then (a status write that
    # conflicted): only the others must never be.
    assert (set(NOT_EXERCISED) - TIMING_DEPENDENT) & observed.used() == set()


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
