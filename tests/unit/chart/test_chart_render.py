"""The chart lints, renders valid Kubernetes objects in every documented mode, and does what
each mode promises: one Recreate replica, least-privilege RBAC, HA by Lease-based leader
election (never Kopf peering), monitoring and CRDs on or off."""

from __future__ import annotations

import json
import os
from typing import Any

import helm_python as helm
import kubernetes_validate  # type: ignore[import-untyped]
import pytest
import yaml
from chart_harness import (
    CHART,
    NAMESPACE,
    RELEASE,
    SCENARIOS,
    objects,
    of_kind,
    only,
    operator_container,
    render,
    scenario_values,
)
from modeldeploy.controller import OperatorConfig

KUBERNETES_VERSIONS = ["1.28.0", "1.31.0"]

# Kinds kubernetes-validate has no schema for: they come from prometheus-operator's CRDs, so
# Kubernetes' published OpenAPI cannot check them. Their shape is asserted by the behaviour
# tests below instead.
CRD_KINDS = {"PodMonitor", "ServiceMonitor", "PrometheusRule"}

MONITORING_KINDS = {"PodMonitor", "ServiceMonitor", "PrometheusRule"}


def test_every_documented_mode_has_a_ci_values_file() -> None:
    assert {"default", "namespaced", "ha", "no-monitoring", "no-crds"} <= set(SCENARIOS)


@pytest.mark.parametrize("kube_version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("scenario", SCENARIOS)
def test_chart_lints_cleanly_in_strict_mode(scenario: str, kube_version: str) -> None:
    report = helm.lint(
        CHART,
        scenario_values(scenario),
        strict=True,
        namespace=NAMESPACE,
        kube_version=f"v{kube_version}",
    )
    problems = [m for m in report["messages"] if m["severity"] >= 2]
    assert not report["errors"] and not problems, report


@pytest.mark.parametrize("kube_version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("scenario", SCENARIOS)
def test_every_rendered_object_is_valid_for_the_kubernetes_version(scenario: str, kube_version: str) -> None:
    objs = objects(scenario_values(scenario))
    assert objs
    for obj in objs:
        if obj["kind"] in CRD_KINDS:
            continue
        kubernetes_validate.validate(obj, kube_version, strict=True)


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_every_namespaced_object_lands_in_a_named_namespace(scenario: str) -> None:
    cluster_scoped = {"ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition"}
    for obj in objects(scenario_values(scenario)):
        if obj["kind"] not in cluster_scoped:
            assert obj["metadata"].get("namespace"), f"{obj['kind']} has no namespace"


def test_default_mode_runs_one_operator_with_the_recreate_strategy() -> None:
    deployment = only(objects(), "Deployment")
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    container = operator_container(objects())
    assert "--standalone" in container["args"]
    assert "MODELDEPLOY_LEADER_ELECTION" not in {e["name"] for e in container["env"]}
    assert not of_kind(objects(), "PodDisruptionBudget")
    assert "affinity" not in deployment["spec"]["template"]["spec"]


def test_operator_pod_is_hardened() -> None:
    deployment = only(objects(), "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    container = operator_container([deployment])
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["securityContext"]["capabilities"]["drop"] == ["ALL"]
    assert container["resources"]["requests"] and container["resources"]["limits"]


def test_probes_hit_kopfs_health_endpoint_that_the_operator_is_told_to_serve() -> None:
    container = operator_container(objects())
    assert "--liveness=http://0.0.0.0:8080/healthz" in container["args"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"health": 8080, "metrics": 9090}
    for probe in ("livenessProbe", "readinessProbe"):
        assert container[probe]["httpGet"] == {"path": "/healthz", "port": "health"}
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["MODELDEPLOY_METRICS_PORT"] == "9090"


def test_watch_streams_are_ended_by_the_server_so_stalled_watches_recover() -> None:
    env = {e["name"]: e.get("value") for e in operator_container(objects())["env"]}
    assert env["MODELDEPLOY_WATCH_TIMEOUT"] == "300"
    custom = objects({"operator": {"watchTimeoutSeconds": 120}})
    assert {e["name"]: e.get("value") for e in operator_container(custom)["env"]}[
        "MODELDEPLOY_WATCH_TIMEOUT"
    ] == "120"


def _rules(role: dict[str, Any]) -> list[dict[str, Any]]:
    rules: list[dict[str, Any]] = role["rules"]
    return rules


def _grants(rules: list[dict[str, Any]], group: str, resource: str) -> list[dict[str, Any]]:
    return [r for r in rules if group in r["apiGroups"] and resource in r["resources"]]


def operator_cluster_roles(objs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """ClusterRoles bound to the operator (not the ones aggregated into users' roles)."""
    bound = {b["roleRef"]["name"] for b in of_kind(objs, "ClusterRoleBinding")}
    return [r for r in of_kind(objs, "ClusterRole") if r["metadata"]["name"] in bound]


def operator_cluster_role(objs: list[dict[str, Any]]) -> dict[str, Any]:
    roles = operator_cluster_roles(objs)
    assert len(roles) == 1, f"expected one operator ClusterRole, found {len(roles)}"
    return roles[0]


def test_cluster_wide_mode_uses_one_cluster_role_and_watches_all_namespaces() -> None:
    objs = objects()
    role = operator_cluster_role(objs)
    binding = only(objs, "ClusterRoleBinding")
    assert not of_kind(objs, "Role")
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    assert binding["subjects"][0]["name"] == only(objs, "ServiceAccount")["metadata"]["name"]
    assert "--all-namespaces" in operator_container(objs)["args"]
    assert _grants(_rules(role), "apiextensions.k8s.io", "customresourcedefinitions")


def test_namespaced_mode_grants_a_role_per_watched_namespace_and_nothing_cluster_wide() -> None:
    objs = objects(scenario_values("namespaced"))
    assert not operator_cluster_roles(objs) and not of_kind(objs, "ClusterRoleBinding")
    roles = {r["metadata"]["namespace"]: r for r in of_kind(objs, "Role")}
    bindings = {b["metadata"]["namespace"] for b in of_kind(objs, "RoleBinding")}
    assert set(roles) == bindings == {"ml", "ml-staging"}
    args = operator_container(objs)["args"]
    assert "--namespace=ml" in args and "--namespace=ml-staging" in args
    assert "--all-namespaces" not in args


def test_both_modes_grant_the_same_namespaced_rules_from_one_shared_block() -> None:
    cluster_rules = _rules(operator_cluster_role(objects()))
    role_rules = _rules(of_kind(objects({"watchNamespaces": ["ml"]}), "Role")[0])
    assert all(rule in cluster_rules for rule in role_rules)


@pytest.mark.parametrize(
    ("values", "expected_names"),
    [
        pytest.param({}, None, id="no analysis secrets means no access to any Secret"),
        pytest.param(
            {"rbac": {"analysisSecretNames": ["prom-token"]}},
            ["prom-token"],
            id="named analysis secrets are readable by name only, cluster-wide",
        ),
        pytest.param(
            {"watchNamespaces": ["ml"], "rbac": {"analysisSecretNames": ["a", "b"]}},
            ["a", "b"],
            id="named analysis secrets are readable by name only, per namespace",
        ),
    ],
)
def test_secret_access_is_limited_to_the_named_analysis_secrets(
    values: dict[str, Any], expected_names: list[str] | None
) -> None:
    objs = objects(values)
    for role in operator_cluster_roles(objs) + of_kind(objs, "Role"):
        grants = _grants(_rules(role), "", "secrets")
        if expected_names is None:
            assert grants == []
        else:
            assert grants == [
                {
                    "apiGroups": [""],
                    "resources": ["secrets"],
                    "resourceNames": expected_names,
                    "verbs": ["get"],
                }
            ]


def test_the_operator_may_never_write_the_spec_only_replace_the_status() -> None:
    rules = _rules(operator_cluster_role(objects()))
    main = _grants(rules, "modeldeploy.io", "modeldeployments")
    assert main and all({"update", "patch"}.isdisjoint(r["verbs"]) for r in main)
    assert any("update" in r["verbs"] for r in _grants(rules, "modeldeploy.io", "modeldeployments/status"))


@pytest.mark.parametrize(
    ("values", "aggregated"),
    [
        pytest.param({}, True, id="users with edit can steer rollouts by default"),
        pytest.param(
            {"watchNamespaces": ["ml"]}, True, id="user roles are aggregated in namespaced mode too"
        ),
        pytest.param({"rbac": {"aggregateToUserRoles": False}}, False, id="aggregation can be turned off"),
    ],
)
def test_user_roles_let_editors_steer_rollouts_through_status_only(
    values: dict[str, Any], aggregated: bool
) -> None:
    objs = objects(values)
    user_roles = {
        r["metadata"]["name"].rsplit("-", 1)[1]: r
        for r in of_kind(objs, "ClusterRole")
        if r not in operator_cluster_roles(objs)
    }
    if not aggregated:
        assert user_roles == {}
        return
    assert set(user_roles) == {"view", "edit"}
    view, edit = user_roles["view"], user_roles["edit"]
    assert view["metadata"]["labels"]["rbac.authorization.k8s.io/aggregate-to-view"] == "true"
    assert all(set(r["verbs"]) <= {"get", "list", "watch"} for r in _rules(view))
    assert edit["metadata"]["labels"]["rbac.authorization.k8s.io/aggregate-to-edit"] == "true"
    assert {"patch"} == set(_grants(_rules(edit), "modeldeploy.io", "modeldeployments/status")[0]["verbs"])


# What the kubelet gives the chart's downward-API env, for a pod of the HA Deployment.
POD = {"metadata.name": f"{RELEASE}-modeldeploy-7c9f-x2x4q", "metadata.namespace": NAMESPACE}


def operator_config(objs: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch) -> OperatorConfig:
    """The settings the operator itself reads from the rendered container's environment."""
    for name in [n for n in os.environ if n.startswith(("MODELDEPLOY_", "POD_"))]:
        monkeypatch.delenv(name)
    for var in operator_container(objs)["env"]:
        value = var["value"] if "value" in var else POD[var["valueFrom"]["fieldRef"]["fieldPath"]]
        monkeypatch.setenv(var["name"], value)
    return OperatorConfig.from_env()


def test_ha_mode_runs_replicas_that_elect_a_leader_on_a_lease(monkeypatch: pytest.MonkeyPatch) -> None:
    objs = objects(scenario_values("ha"))
    deployment = only(objs, "Deployment")
    assert deployment["spec"]["replicas"] == 2
    container = operator_container(objs)
    assert "--standalone" in container["args"]
    config = operator_config(objs, monkeypatch)
    assert config.leader_election is True
    assert config.lease_name == deployment["metadata"]["name"] == f"{RELEASE}-modeldeploy"
    assert config.lease_namespace == NAMESPACE, "the Lease lives in the release namespace"
    assert config.lease_seconds == 15
    assert config.identity == POD["metadata.name"], "each replica holds the Lease as its pod"


def test_ha_lease_settings_and_replicas_come_from_values(monkeypatch: pytest.MonkeyPatch) -> None:
    objs = objects({"ha": {"enabled": True, "replicas": 3, "leaseSeconds": 30, "leaseName": "md-leader"}})
    assert only(objs, "Deployment")["spec"]["replicas"] == 3
    config = operator_config(objs, monkeypatch)
    assert (config.lease_name, config.lease_seconds) == ("md-leader", 30)
    lease_role = only(objs, "Role")
    assert _grants(_rules(lease_role), "coordination.k8s.io", "leases")[0]["resourceNames"] == ["md-leader"]


def test_without_ha_the_operator_does_not_elect_a_leader(monkeypatch: pytest.MonkeyPatch) -> None:
    config = operator_config(objects(), monkeypatch)
    assert config.leader_election is False


def test_ha_upgrades_start_a_new_replica_before_stopping_an_old_one() -> None:
    strategy = only(objects(scenario_values("ha")), "Deployment")["spec"]["strategy"]
    assert strategy == {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}}


def test_ha_replicas_are_spread_across_nodes_and_kept_through_voluntary_disruptions() -> None:
    objs = objects(scenario_values("ha"))
    deployment = only(objs, "Deployment")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    preferred = deployment["spec"]["template"]["spec"]["affinity"]["podAntiAffinity"][
        "preferredDuringSchedulingIgnoredDuringExecution"
    ]
    assert [term["podAffinityTerm"]["topologyKey"] for term in preferred] == ["kubernetes.io/hostname"]
    assert preferred[0]["podAffinityTerm"]["labelSelector"]["matchLabels"].items() <= pod_labels.items()
    budget = only(objs, "PodDisruptionBudget")
    assert budget["spec"]["minAvailable"] == 1
    assert budget["spec"]["selector"] == deployment["spec"]["selector"]


@pytest.mark.parametrize(
    ("affinity", "expected_keys"),
    [
        pytest.param(
            {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
                {"matchExpressions": [{"key": "pool", "operator": "In", "values": ["ops"]}]}]}}},
            {"nodeAffinity", "podAntiAffinity"},
            id="a user's node affinity is kept and the spreading added",
        ),
        pytest.param(
            {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": []}},
            {"podAntiAffinity"},
            id="a user's own pod anti-affinity replaces the chart's",
        ),
    ],
)
def test_ha_anti_affinity_respects_the_users_affinity(
    affinity: dict[str, Any], expected_keys: set[str]
) -> None:
    objs = objects({"ha": {"enabled": True}, "affinity": affinity})
    rendered = only(objs, "Deployment")["spec"]["template"]["spec"]["affinity"]
    assert set(rendered) == expected_keys
    for key in affinity:
        assert rendered[key] == affinity[key]


@pytest.mark.parametrize(
    "values",
    [
        pytest.param({"ha": {"enabled": True}}, id="cluster-wide HA"),
        pytest.param({"ha": {"enabled": True}, "watchNamespaces": ["ml", "ml-staging"]}, id="namespaced HA"),
    ],
)
def test_ha_grants_exactly_the_lease_verbs_the_elector_uses_in_the_release_namespace_only(
    values: dict[str, Any],
) -> None:
    objs = objects(values)
    lease_roles = [r for r in of_kind(objs, "Role") if _grants(_rules(r), "coordination.k8s.io", "leases")]
    assert len(lease_roles) == 1
    role = lease_roles[0]
    assert role["metadata"]["namespace"] == NAMESPACE
    # read_namespaced_lease, replace_namespaced_lease: this Lease only. create_namespaced_lease:
    # Kubernetes cannot restrict create by name (the name is in the body), so a rule of its own.
    assert _rules(role) == [
        {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"],
         "resourceNames": [f"{RELEASE}-modeldeploy"], "verbs": ["get", "update"]},
        {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["create"]},
    ]
    binding = next(
        b for b in of_kind(objs, "RoleBinding") if b["roleRef"]["name"] == role["metadata"]["name"]
    )
    assert binding["metadata"]["namespace"] == NAMESPACE
    assert binding["roleRef"]["kind"] == "Role"
    assert binding["subjects"] == [{
        "kind": "ServiceAccount",
        "name": only(objs, "ServiceAccount")["metadata"]["name"],
        "namespace": NAMESPACE,
    }]
    shared = operator_cluster_roles(objs) + [r for r in of_kind(objs, "Role") if r is not role]
    assert shared and not [g for r in shared for g in _grants(_rules(r), "coordination.k8s.io", "leases")]


def test_without_ha_nothing_may_touch_leases() -> None:
    objs = objects()
    roles = operator_cluster_roles(objs) + of_kind(objs, "Role")
    assert roles and not [g for r in roles for g in _grants(_rules(r), "coordination.k8s.io", "leases")]


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_no_mode_uses_kopf_peering_or_helm_hooks(scenario: str) -> None:
    objs = objects(scenario_values(scenario))
    assert not [o for o in objs if o["apiVersion"].startswith("kopf.dev/")]
    crd_names = {c["metadata"]["name"] for c in of_kind(objs, "CustomResourceDefinition")}
    assert crd_names <= {"modeldeployments.modeldeploy.io"}
    assert not [o for o in objs if "helm.sh/hook" in (o["metadata"].get("annotations") or {})]
    assert not of_kind(objs, "StatefulSet")
    container = operator_container(objs)
    assert "--standalone" in container["args"]
    assert not [a for a in container["args"] if a.startswith(("--peering", "--priority"))]
    assert not [e for e in container["env"] if e["name"].startswith("MODELDEPLOY_PEERING")]
    for role in operator_cluster_roles(objs) + of_kind(objs, "Role"):
        assert not [r for r in _rules(role) if "kopf.dev" in r["apiGroups"]]


def test_no_monitoring_mode_renders_no_prometheus_operator_objects_nor_dashboard() -> None:
    objs = objects(scenario_values("no-monitoring"))
    assert not [o for o in objs if o["kind"] in MONITORING_KINDS]
    assert not [o for o in of_kind(objs, "ConfigMap") if o["metadata"]["name"].endswith("-dashboard")]


def test_no_crds_mode_renders_no_crd() -> None:
    assert not of_kind(objects(scenario_values("no-crds")), "CustomResourceDefinition")


def test_pod_monitor_attaches_the_metric_contract_labels_to_model_service_pods() -> None:
    monitor = only(objects(), "PodMonitor")
    assert monitor["spec"]["selector"]["matchExpressions"] == [
        {"key": "modeldeploy.io/name", "operator": "Exists"}
    ]
    assert monitor["spec"]["namespaceSelector"] == {"any": True}
    endpoint = monitor["spec"]["podMetricsEndpoints"][0]
    assert (endpoint["port"], endpoint["path"]) == ("http", "/metrics")
    mapping = {r["targetLabel"]: r["sourceLabels"] for r in endpoint["relabelings"]}
    assert mapping == {
        "namespace": ["__meta_kubernetes_namespace"],
        "pod": ["__meta_kubernetes_pod_name"],
        "modeldeploy_name": ["__meta_kubernetes_pod_label_modeldeploy_io_name"],
        "modeldeploy_revision": ["__meta_kubernetes_pod_label_modeldeploy_io_revision"],
        "modeldeploy_track": ["__meta_kubernetes_pod_label_modeldeploy_io_track"],
    }


def test_pod_monitor_follows_the_watched_namespaces() -> None:
    monitor = only(objects(scenario_values("namespaced")), "PodMonitor")
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": ["ml", "ml-staging"]}


def test_service_monitor_scrapes_the_operator_metrics_service_keeping_its_namespace_label() -> None:
    objs = objects()
    service = only(objs, "Service")
    monitor = only(objs, "ServiceMonitor")
    assert service["spec"]["ports"] == [
        {"name": "metrics", "port": 9090, "targetPort": "metrics", "protocol": "TCP"}
    ]
    selector = monitor["spec"]["selector"]["matchLabels"]
    assert selector.items() <= service["metadata"]["labels"].items()
    assert monitor["spec"]["endpoints"][0]["honorLabels"] is True


def test_prometheus_rule_carries_exactly_the_plain_rules_file() -> None:
    rule = only(objects(), "PrometheusRule")
    plain = yaml.safe_load((CHART / "files" / "alerts.yaml").read_text())
    assert rule["spec"] == plain


def test_dashboard_config_map_holds_the_dashboard_for_grafanas_sidecar() -> None:
    config_map = next(
        o for o in of_kind(objects(), "ConfigMap") if o["metadata"]["name"].endswith("-dashboard")
    )
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(config_map["data"]["modeldeploy.json"]) == json.loads(
        (CHART / "files" / "dashboard.json").read_text()
    )


@pytest.mark.parametrize(
    "values",
    [
        pytest.param({"replicaCount": 2}, id="an unknown top-level key fails the render"),
        pytest.param({"image": {"tga": "v1"}}, id="a misspelt nested key fails the render"),
        pytest.param(
            {"ha": {"enabled": True, "replicas": 1}}, id="HA with a single replica fails the render"
        ),
        pytest.param(
            {"ha": {"enabled": True, "leaseSeconds": 1}}, id="a Lease shorter than 3 s fails the render"
        ),
        pytest.param(
            {"ha": {"enabled": True, "leaseSeconds": 3600}}, id="a Lease longer than 5 min fails the render"
        ),
        pytest.param(
            {"ha": {"enabled": True, "leaseSeconds": "15"}},
            id="a Lease duration as a string fails the render",
        ),
        pytest.param(
            {"ha": {"enabled": True, "leaseName": "Leader_Lease"}},
            id="a Lease name that is no Kubernetes name fails the render",
        ),
        pytest.param(
            {"ha": {"enabled": True, "peeringName": "md"}},
            id="the removed Kopf peering name fails the render",
        ),
        pytest.param({"operator": {"logFormat": "xml"}}, id="an unknown log format fails the render"),
        pytest.param(
            {"watchNamespaces": ["Not_A_Namespace"]}, id="an invalid namespace name fails the render"
        ),
        pytest.param(
            {"monitoring": {"podMonitor": {"interval": "often"}}},
            id="a scrape interval that is no duration fails the render",
        ),
    ],
)
def test_values_schema_rejects_bad_values(values: dict[str, Any]) -> None:
    with pytest.raises(helm.HelmValuesError):
        render(values)
