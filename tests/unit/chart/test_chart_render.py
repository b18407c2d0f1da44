"""The chart lints, renders valid Kubernetes objects in every documented mode, and does what
each mode promises: one Recreate replica, least-privilege RBAC, HA by Kopf peering, monitoring
and CRDs on or off."""

from __future__ import annotations

import json
from typing import Any

import helm_python as helm
import kubernetes_validate  # type: ignore[import-untyped]
import pytest
import yaml
from chart_harness import (
    CHART,
    NAMESPACE,
    SCENARIOS,
    objects,
    of_kind,
    only,
    operator_container,
    render,
    scenario_values,
)

KUBERNETES_VERSIONS = ["1.28.0", "1.31.0"]

# Kinds kubernetes-validate has no schema for: they come from CRDs (prometheus-operator's and
# Kopf's), so Kubernetes' published OpenAPI cannot check them. Their shape is asserted by the
# behaviour tests below instead.
CRD_KINDS = {"PodMonitor", "ServiceMonitor", "PrometheusRule", "ClusterKopfPeering", "KopfPeering"}

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
    cluster_scoped = {"ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition", "ClusterKopfPeering"}
    for obj in objects(scenario_values(scenario)):
        if obj["kind"] not in cluster_scoped:
            assert obj["metadata"].get("namespace"), f"{obj['kind']} has no namespace"


def test_default_mode_runs_one_operator_with_the_recreate_strategy() -> None:
    deployment = only(objects(), "Deployment")
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    assert not of_kind(objects(), "StatefulSet")
    container = operator_container(objects())
    assert "--standalone" in container["args"]
    assert "MODELDEPLOY_PEERING" not in {e["name"] for e in container["env"]}


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


def test_ha_mode_runs_peered_replicas_with_distinct_priorities() -> None:
    objs = objects(scenario_values("ha"))
    assert not of_kind(objs, "Deployment")
    statefulset = only(objs, "StatefulSet")
    assert statefulset["spec"]["replicas"] == 2
    container = operator_container(objs)
    assert "--standalone" not in container["args"]
    assert "--priority=$(MODELDEPLOY_PEERING_PRIORITY)" in container["args"]
    priority = next(e for e in container["env"] if e["name"] == "MODELDEPLOY_PEERING_PRIORITY")
    assert priority["valueFrom"]["fieldRef"]["fieldPath"] == (
        "metadata.labels['apps.kubernetes.io/pod-index']"
    )
    peering = only(objs, "ClusterKopfPeering")
    assert f"--peering={peering['metadata']['name']}" in container["args"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["MODELDEPLOY_PEERING"] == peering["metadata"]["name"]
    assert peering["metadata"]["annotations"]["helm.sh/hook"] == "post-install,post-upgrade"
    crd_names = {c["metadata"]["name"] for c in of_kind(objs, "CustomResourceDefinition")}
    assert {"clusterkopfpeerings.kopf.dev", "kopfpeerings.kopf.dev"} <= crd_names
    assert _grants(_rules(operator_cluster_role(objs)), "kopf.dev", "clusterkopfpeerings")


def test_ha_in_namespaced_mode_meets_in_one_kopf_peering_per_namespace() -> None:
    objs = objects({"ha": {"enabled": True}, "watchNamespaces": ["ml", "ml-staging"]})
    assert {p["metadata"]["namespace"] for p in of_kind(objs, "KopfPeering")} == {"ml", "ml-staging"}
    for role in of_kind(objs, "Role"):
        assert _grants(_rules(role), "kopf.dev", "kopfpeerings")


def test_without_ha_no_peering_objects_or_crds_are_rendered() -> None:
    objs = objects()
    assert not of_kind(objs, "ClusterKopfPeering") and not of_kind(objs, "KopfPeering")
    names = {c["metadata"]["name"] for c in of_kind(objs, "CustomResourceDefinition")}
    assert names == {"modeldeployments.modeldeploy.io"}


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
