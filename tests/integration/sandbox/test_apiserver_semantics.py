"""What controllers and Kopf rely on from the API server, beyond the golden recordings.

Each test drives the server over real HTTP (httpx, and the ``kubernetes`` client where
its behaviour matters), one server per module.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import kubernetes
import pytest
from mdsandbox.apiserver import APIServer, write_kubeconfig

pytestmark = pytest.mark.integration

MERGE = {"Content-Type": "application/merge-patch+json"}
STRATEGIC = {"Content-Type": "application/strategic-merge-patch+json"}
DEPLOYMENTS = "/apis/apps/v1/namespaces/{ns}/deployments"
CONFIGMAPS = "/api/v1/namespaces/{ns}/configmaps"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[APIServer]:
    audit = tmp_path_factory.mktemp("audit") / "audit.jsonl"
    api = APIServer(host="127.0.0.1", port=0, audit_log=audit)
    api.start()
    try:
        yield api
    finally:
        api.stop()


@pytest.fixture(scope="module")
def client(server: APIServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=10) as http:
        yield http


_namespaces = iter(range(1000))


@pytest.fixture
def ns(client: httpx.Client) -> str:
    """A fresh namespace per test, so tests do not see each other's objects."""
    name = f"t{next(_namespaces)}"
    made = client.post("/api/v1/namespaces", json={"metadata": {"name": name}})
    assert made.status_code == 201, made.text
    return name


def deployment(name: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "labels": {"app": name}},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}}, "spec": {"containers": [
                {"name": "app", "image": "modeldeploy/chat-proxy:v1",
                 "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}],
                 "ports": [{"containerPort": 8080}]},
                {"name": "side", "image": "side:1"},
            ]}},
            **spec,
        },
    }


def wait_for(condition: Callable[[], bool], what: str, seconds: float = 5) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)  # polling interval, bounded by the deadline


class WatchStream:
    """Reads a watch in a thread, on its own connection; ``wait_events`` has a deadline."""

    def __init__(self, client: httpx.Client, path: str) -> None:
        self.events: list[dict[str, Any]] = []
        self.started = threading.Event()
        self._cond = threading.Condition()
        self._http = httpx.Client(base_url=client.base_url, timeout=30)
        self._thread = threading.Thread(target=self._read, args=(path,), daemon=True)
        self._thread.start()
        assert self.started.wait(5)

    def _read(self, path: str) -> None:
        try:
            with self._http.stream("GET", path) as response:
                self.status = response.status_code
                self.started.set()
                for line in response.iter_lines():
                    if line:
                        with self._cond:
                            self.events.append(json.loads(line))
                            self._cond.notify_all()
        except httpx.HTTPError:
            pass  # closed by close(): the test has seen what it needed

    def wait_events(self, count: int, seconds: float = 5) -> list[dict[str, Any]]:
        with self._cond:
            assert self._cond.wait_for(lambda: len(self.events) >= count, seconds), (
                f"expected {count} events, got {self.events}")
            return list(self.events)

    def join(self, seconds: float = 10) -> list[dict[str, Any]]:
        self._thread.join(seconds)
        assert not self._thread.is_alive(), "the watch did not end"
        self._http.close()
        return list(self.events)

    def close(self) -> None:
        self._http.close()
        self._thread.join(5)

    def __enter__(self) -> WatchStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# -- watch -------------------------------------------------------------------------------


def test_a_watch_resumes_from_a_list_resource_version(client: httpx.Client, ns: str) -> None:
    url = CONFIGMAPS.format(ns=ns)
    list_rv = client.get(url).json()["metadata"]["resourceVersion"]
    # Changes made between the list and the watch must not be lost.
    client.post(url, json={"metadata": {"name": "a"}, "data": {"k": "1"}})
    client.patch(f"{url}/a", json={"data": {"k": "2"}}, headers=MERGE)
    events = WatchStream(client, f"{url}?watch=1&resourceVersion={list_rv}&timeoutSeconds=1")
    got = events.join()
    assert [(e["type"], e["object"]["data"]["k"]) for e in got] == [
        ("ADDED", "1"), ("MODIFIED", "2")]


def test_a_watch_from_a_compacted_resource_version_is_an_expired_error_event(
    client: httpx.Client, ns: str,
) -> None:
    """As after an etcd compaction: HTTP 200, one ERROR event with a 410 Status; relist."""
    url = CONFIGMAPS.format(ns=ns)
    events = WatchStream(client, f"{url}?watch=1&resourceVersion=1&timeoutSeconds=2")
    got = events.join()
    assert events.status == 200
    assert [e["type"] for e in got] == ["ERROR"]
    status = got[0]["object"]
    assert (status["kind"], status["code"], status["reason"]) == ("Status", 410, "Expired")
    assert status["message"].startswith("too old resource version: 1 (")


def test_a_watch_without_bookmarks_delivers_changes_after_a_bookmark_period_passed(
    client: httpx.Client, ns: str, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A quiet watch must not stop delivering once the bookmark period is over (here at once)."""
    from mdsandbox.apiserver import server as api_server

    monkeypatch.setattr(api_server, "BOOKMARK_EVERY_SECONDS", 0.0)
    url = CONFIGMAPS.format(ns=ns)
    with WatchStream(client, f"{url}?watch=true&timeoutSeconds=20") as stream:
        client.post(url, json={"metadata": {"name": "late"}})
        events = stream.wait_events(1)
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in events] == [("ADDED", "late")]


def test_a_watch_without_resource_version_starts_with_the_current_objects(
    client: httpx.Client, ns: str,
) -> None:
    url = CONFIGMAPS.format(ns=ns)
    client.post(url, json={"metadata": {"name": "existing"}})
    with WatchStream(client, f"{url}?watch=true&timeoutSeconds=2") as stream:
        assert stream.wait_events(1)[0]["type"] == "ADDED"
        client.post(url, json={"metadata": {"name": "new"}})
        events = stream.wait_events(2)
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in events] == [
        ("ADDED", "existing"), ("ADDED", "new")]


def test_a_watch_ends_after_timeout_seconds_with_a_bookmark(client: httpx.Client, ns: str) -> None:
    url = CONFIGMAPS.format(ns=ns)
    rv = client.get(url).json()["metadata"]["resourceVersion"]
    got = WatchStream(client, f"{url}?watch=1&resourceVersion={rv}&timeoutSeconds=1"
                              "&allowWatchBookmarks=true").join()
    assert [e["type"] for e in got] == ["BOOKMARK"]
    assert int(got[0]["object"]["metadata"]["resourceVersion"]) >= int(rv)


def test_the_bookmark_ending_a_watch_comes_after_every_change_up_to_its_version(
    client: httpx.Client, ns: str, server: APIServer,
) -> None:
    """A client resumes from the last bookmark: a change at or below it must have been sent.

    Changes are created while the watch reaches its timeout, so some are still queued for
    it at the end (a bookmark with the store's newest version sent then lost them).
    """
    url = CONFIGMAPS.format(ns=ns)
    rv = client.get(url).json()["metadata"]["resourceVersion"]
    created: dict[str, int] = {}
    stop = threading.Event()

    def flood() -> None:
        with httpx.Client(base_url=server.url, timeout=10) as writer:
            n = 0
            while not stop.is_set():
                answer = writer.post(url, json={"metadata": {"name": f"cm-{n}"}}).json()
                created[answer["metadata"]["name"]] = int(answer["metadata"]["resourceVersion"])
                n += 1

    thread = threading.Thread(target=flood)
    thread.start()
    try:
        got = WatchStream(client, f"{url}?watch=1&resourceVersion={rv}&timeoutSeconds=1"
                                  "&allowWatchBookmarks=true").join()
    finally:
        stop.set()
        thread.join()
    bookmarks = [e for e in got if e["type"] == "BOOKMARK"]
    assert bookmarks, "the watch ended without a bookmark"
    last = int(bookmarks[-1]["object"]["metadata"]["resourceVersion"])
    sent = {e["object"]["metadata"]["name"] for e in got if e["type"] == "ADDED"}
    missing = sorted(name for name, version in created.items() if version <= last and name not in sent)
    assert not missing, f"changes at or below the final bookmark {last} never sent: {missing[:5]}"


def test_watch_list_sends_current_state_then_an_initial_events_end_bookmark(
    client: httpx.Client, ns: str,
) -> None:
    url = CONFIGMAPS.format(ns=ns)
    client.post(url, json={"metadata": {"name": "x"}})
    with WatchStream(client, f"{url}?watch=1&sendInitialEvents=true&allowWatchBookmarks=true"
                             "&resourceVersionMatch=NotOlderThan&timeoutSeconds=2") as stream:
        first, end = stream.wait_events(2)
    assert first["type"] == "ADDED"
    assert end["type"] == "BOOKMARK"
    assert end["object"]["metadata"]["annotations"] == {"k8s.io/initial-events-end": "true"}


def test_a_selector_watch_sees_an_object_leave_the_selection_as_deleted(
    client: httpx.Client, ns: str,
) -> None:
    url = CONFIGMAPS.format(ns=ns)
    client.post(url, json={"metadata": {"name": "c", "labels": {"track": "canary"}}})
    with WatchStream(client, f"{url}?watch=1&labelSelector=track%3Dcanary&timeoutSeconds=2") as s:
        s.wait_events(1)
        client.patch(f"{url}/c", json={"metadata": {"labels": {"track": "stable"}}},
                     headers=MERGE)
        assert [e["type"] for e in s.wait_events(2)] == ["ADDED", "DELETED"]


def test_the_kubernetes_client_lists_and_watches(server: APIServer, tmp_path: Path,
                                                 ns: str, client: httpx.Client) -> None:
    write_kubeconfig(tmp_path / "kubeconfig", server.url, namespace=ns)
    api_client = kubernetes.config.new_client_from_config(str(tmp_path / "kubeconfig"))
    core = kubernetes.client.CoreV1Api(api_client)
    core.create_namespaced_config_map(ns, {"metadata": {"name": "via-client"}})
    listing = core.list_namespaced_config_map(ns)
    assert [c.metadata.name for c in listing.items] == ["via-client"]
    watch = kubernetes.watch.Watch()
    events = [(e["type"], e["object"].metadata.name) for e in watch.stream(
        core.list_namespaced_config_map, ns, resource_version=listing.metadata.resource_version,
        timeout_seconds=1, _request_timeout=5)]
    assert events == []
    with pytest.raises(kubernetes.client.ApiException) as raised:
        core.read_namespaced_config_map("missing", ns)
    assert raised.value.status == 404
    api_client.close()


# -- writes ------------------------------------------------------------------------------


def test_every_write_gets_a_new_cluster_wide_resource_version(client: httpx.Client,
                                                                ns: str) -> None:
    versions = []
    for name in ("a", "b"):
        versions.append(int(client.post(CONFIGMAPS.format(ns=ns), json={
            "metadata": {"name": name}}).json()["metadata"]["resourceVersion"]))
    versions.append(int(client.post(DEPLOYMENTS.format(ns=ns), json=deployment("d")).json()[
        "metadata"]["resourceVersion"]))
    assert versions == sorted(versions) and len(set(versions)) == 3
    listed = int(client.get("/api/v1/configmaps").json()["metadata"]["resourceVersion"])
    assert listed >= versions[-1]


def test_an_update_that_changes_nothing_is_not_a_write(client: httpx.Client, ns: str) -> None:
    url = CONFIGMAPS.format(ns=ns)
    made = client.post(url, json={"metadata": {"name": "same"}, "data": {"k": "v"}}).json()
    again = client.patch(f"{url}/same", json={"data": {"k": "v"}}, headers=MERGE).json()
    assert again["metadata"]["resourceVersion"] == made["metadata"]["resourceVersion"]


def test_creating_in_a_missing_namespace_is_not_found(client: httpx.Client) -> None:
    answer = client.post(CONFIGMAPS.format(ns="nowhere"), json={"metadata": {"name": "x"}})
    assert answer.status_code == 404
    assert answer.json()["message"] == 'namespaces "nowhere" not found'


def test_a_name_that_is_not_a_dns_subdomain_is_invalid(client: httpx.Client, ns: str) -> None:
    answer = client.post(CONFIGMAPS.format(ns=ns), json={"metadata": {"name": "Bad_Name"}})
    assert answer.status_code == 422
    assert answer.json()["details"]["causes"][0]["field"] == "metadata.name"


def test_generate_name_makes_a_unique_name(client: httpx.Client, ns: str) -> None:
    made = client.post(CONFIGMAPS.format(ns=ns), json={"metadata": {"generateName": "cm-"}})
    assert made.status_code == 201
    assert made.json()["metadata"]["name"].startswith("cm-")
    assert len(made.json()["metadata"]["name"]) == len("cm-") + 5


def test_deployment_status_is_written_only_through_its_subresource(
    client: httpx.Client, ns: str,
) -> None:
    url = DEPLOYMENTS.format(ns=ns)
    client.post(url, json=deployment("web"))
    ignored = client.patch(f"{url}/web", json={"status": {"replicas": 9}}, headers=MERGE).json()
    assert ignored["status"] == {}
    written = client.patch(f"{url}/web/status", json={
        "status": {"replicas": 1, "observedGeneration": 1}, "spec": {"replicas": 7}},
        headers=MERGE).json()
    assert written["status"] == {"replicas": 1, "observedGeneration": 1}
    assert written["spec"]["replicas"] == 1
    assert written["metadata"]["generation"] == 1


@pytest.mark.parametrize(("change", "bumps"), [
    pytest.param({"spec": {"replicas": 3}}, True, id="a spec change bumps generation"),
    pytest.param({"metadata": {"labels": {"x": "y"}}}, False,
                 id="a label change leaves generation alone"),
    pytest.param({"metadata": {"annotations": {"x": "y"}}}, False,
                 id="an annotation change leaves generation alone"),
])
def test_generation_tracks_spec_changes_only(client: httpx.Client, ns: str,
                                             change: dict[str, Any], bumps: bool) -> None:
    url = DEPLOYMENTS.format(ns=ns)
    client.post(url, json=deployment("gen"))
    after = client.patch(f"{url}/gen", json=change, headers=MERGE).json()
    assert after["metadata"]["generation"] == (2 if bumps else 1)


def test_a_stale_update_of_a_builtin_is_a_conflict(client: httpx.Client, ns: str) -> None:
    url = CONFIGMAPS.format(ns=ns)
    stale = client.post(url, json={"metadata": {"name": "c"}}).json()
    client.patch(f"{url}/c", json={"data": {"a": "1"}}, headers=MERGE)
    answer = client.put(f"{url}/c", json={**stale, "data": {"a": "2"}})
    assert answer.status_code == 409
    assert answer.json()["reason"] == "Conflict"


def test_json_patch_applies_its_operations_in_order_or_none_of_them(
    client: httpx.Client, ns: str,
) -> None:
    url = CONFIGMAPS.format(ns=ns)
    client.post(url, json={"metadata": {"name": "j"}, "data": {"a": "1", "b": "2"}})
    json_patch = {"Content-Type": "application/json-patch+json"}
    ops = [{"op": "test", "path": "/data/a", "value": "1"},
           {"op": "replace", "path": "/data/a", "value": "10"},
           {"op": "add", "path": "/data/c", "value": "3"},
           {"op": "remove", "path": "/data/b"}]
    patched = client.patch(f"{url}/j", content=json.dumps(ops), headers=json_patch)
    assert patched.status_code == 200, patched.text
    assert patched.json()["data"] == {"a": "10", "c": "3"}
    failing = [{"op": "replace", "path": "/data/a", "value": "99"},
               {"op": "test", "path": "/data/a", "value": "1"}]
    refused = client.patch(f"{url}/j", content=json.dumps(failing), headers=json_patch)
    assert refused.status_code == 422 and refused.json()["reason"] == "Invalid", refused.text
    assert client.get(f"{url}/j").json()["data"] == {"a": "10", "c": "3"}, "nothing applied"


def test_scale_subresource_sets_replicas(client: httpx.Client, ns: str) -> None:
    url = DEPLOYMENTS.format(ns=ns)
    client.post(url, json=deployment("s"))
    scale = client.get(f"{url}/s/scale").json()
    scale["spec"]["replicas"] = 4
    put = client.put(f"{url}/s/scale", json=scale)
    assert put.status_code == 200, put.text
    assert put.json()["spec"]["replicas"] == 4
    assert client.get(f"{url}/s").json()["spec"]["replicas"] == 4


# -- strategic merge patch (what kubectl apply sends) --------------------------------------


def _containers(obj: dict[str, Any]) -> list[dict[str, Any]]:
    containers: list[dict[str, Any]] = obj["spec"]["template"]["spec"]["containers"]
    return containers


SMP_CASES = [
    pytest.param(
        {"spec": {"template": {"spec": {"containers": [{"name": "app", "image": "img:2"}]}}}},
        lambda d: [(c["name"], c["image"]) for c in _containers(d)] == [
            ("app", "img:2"), ("side", "side:1")],
        id="containers merge by name",
    ),
    pytest.param(
        {"spec": {"template": {"spec": {"containers": [
            {"name": "app", "env": [{"name": "B", "value": "changed"}]}]}}}},
        lambda d: _containers(d)[0]["env"] == [{"name": "A", "value": "1"},
                                               {"name": "B", "value": "changed"}],
        id="env merges by name keeping the others",
    ),
    pytest.param(
        {"spec": {"template": {"spec": {"containers": [{"name": "side", "$patch": "delete"}]}}}},
        lambda d: [c["name"] for c in _containers(d)] == ["app"],
        id="a $patch delete element removes that container",
    ),
    pytest.param(
        {"spec": {"template": {"spec": {"containers": [
            {"name": "only", "image": "x:1"}, {"$patch": "replace"}]}}}},
        lambda d: [c["name"] for c in _containers(d)] == ["only"],
        id="a $patch replace element replaces the whole list",
    ),
    pytest.param(
        {"spec": {"template": {"spec": {
            "$setElementOrder/containers": [{"name": "side"}, {"name": "app"}],
            "containers": [{"name": "app", "image": "img:3"}]}}}},
        lambda d: [c["name"] for c in _containers(d)] == ["side", "app"],
        id="$setElementOrder reorders the merged list",
    ),
    pytest.param(
        {"spec": {"strategy": {"$retainKeys": ["type"], "type": "Recreate"}}},
        lambda d: d["spec"]["strategy"] == {"type": "Recreate"},
        id="$retainKeys drops the keys not listed",
    ),
    pytest.param(
        {"spec": {"template": {"spec": {"containers": [
            {"name": "app", "ports": [{"containerPort": 9090}]}]}}}},
        lambda d: [p["containerPort"] for p in _containers(d)[0]["ports"]] == [9090, 8080],
        id="container ports merge by containerPort",
    ),
    pytest.param(
        {"metadata": {"$deleteFromPrimitiveList/finalizers": ["a/b"]}},
        lambda d: d["metadata"]["finalizers"] == ["c/d"],
        id="$deleteFromPrimitiveList removes a finalizer",
    ),
]


@pytest.mark.parametrize(("patch", "holds"), SMP_CASES)
def test_strategic_merge_patch_on_a_deployment(client: httpx.Client, ns: str,
                                               patch: dict[str, Any],
                                               holds: Callable[[dict[str, Any]], bool]) -> None:
    url = DEPLOYMENTS.format(ns=ns)
    body = deployment("smp")
    body["metadata"]["finalizers"] = ["a/b", "c/d"]
    client.post(url, json=body)
    answer = client.patch(f"{url}/smp", json=patch, headers=STRATEGIC)
    assert answer.status_code == 200, answer.text
    assert holds(answer.json()), answer.json()
    client.patch(f"{url}/smp", json={"metadata": {"finalizers": None}}, headers=MERGE)


def test_server_side_apply_creates_then_merges_what_others_wrote(client: httpx.Client,
                                                                  ns: str) -> None:
    url = f"{CONFIGMAPS.format(ns=ns)}/applied?fieldManager=test"
    headers = {"Content-Type": "application/apply-patch+yaml"}
    first = client.patch(url, content="apiVersion: v1\nkind: ConfigMap\nmetadata: {name: applied}"
                                      "\ndata: {a: '1'}\n", headers=headers)
    assert first.status_code == 201, first.text
    second = client.patch(url.replace("test", "other"), content="apiVersion: v1\nkind: ConfigMap"
                          "\nmetadata: {name: applied}\ndata: {b: '2'}\n", headers=headers)
    assert second.json()["data"] == {"a": "1", "b": "2"}


def test_server_side_apply_removes_what_the_same_manager_stopped_applying(
    client: httpx.Client, ns: str,
) -> None:
    url = f"{DEPLOYMENTS.format(ns=ns)}/ssa?fieldManager=operator&force=true"
    headers = {"Content-Type": "application/apply-patch+yaml"}
    applied = deployment("ssa")
    assert client.patch(url, json=applied, headers=headers).status_code == 201
    client.patch(f"{DEPLOYMENTS.format(ns=ns)}/ssa", headers=STRATEGIC, json={
        "metadata": {"labels": {"owner": "someone-else"}}})
    containers = applied["spec"]["template"]["spec"]["containers"]
    containers[0]["env"] = [{"name": "A", "value": "1"}]  # B is no longer applied
    del containers[1]  # nor is the sidecar
    answer = client.patch(url, json=applied, headers=headers)
    assert answer.status_code == 200, answer.text
    live = answer.json()
    assert [c["name"] for c in _containers(live)] == ["app"]
    assert _containers(live)[0]["env"] == [{"name": "A", "value": "1"}]
    assert live["metadata"]["labels"] == {"app": "ssa", "owner": "someone-else"}


# -- deletion ------------------------------------------------------------------------------


def _owned(owner: dict[str, Any], kind: str = "Deployment",
           api_version: str = "apps/v1") -> list[dict[str, Any]]:
    return [{"apiVersion": api_version, "kind": kind, "name": owner["metadata"]["name"],
             "uid": owner["metadata"]["uid"], "controller": True, "blockOwnerDeletion": True}]


def test_deleting_a_deployment_collects_its_replicasets_and_their_pods(
    client: httpx.Client, ns: str,
) -> None:
    owner = client.post(DEPLOYMENTS.format(ns=ns), json=deployment("top")).json()
    rs_body = deployment("top-abc")
    rs_body.update(kind="ReplicaSet", metadata={"name": "top-abc", "ownerReferences":
                                                _owned(owner)})
    rs = client.post(f"/apis/apps/v1/namespaces/{ns}/replicasets", json=rs_body)
    assert rs.status_code == 201, rs.text
    pod = client.post(f"/api/v1/namespaces/{ns}/pods", json={
        "metadata": {"name": "top-abc-x", "ownerReferences": _owned(rs.json(), "ReplicaSet")},
        "spec": {"containers": [{"name": "app", "image": "img:1"}]}})
    assert pod.status_code == 201, pod.text
    client.delete(f"{DEPLOYMENTS.format(ns=ns)}/top")
    wait_for(lambda: client.get(f"/api/v1/namespaces/{ns}/pods/top-abc-x").status_code == 404,
             "the pod to be collected")
    assert client.get(f"/apis/apps/v1/namespaces/{ns}/replicasets/top-abc").status_code == 404


def test_orphan_propagation_keeps_dependents_without_the_owner_reference(
    client: httpx.Client, ns: str,
) -> None:
    url = CONFIGMAPS.format(ns=ns)
    owner = client.post(url, json={"metadata": {"name": "owner"}}).json()
    client.post(url, json={"metadata": {"name": "kept", "ownerReferences": _owned(
        owner, "ConfigMap", "v1")}})
    client.request("DELETE", f"{url}/owner", json={"propagationPolicy": "Orphan"})
    kept = client.get(f"{url}/kept")
    assert kept.status_code == 200
    assert "ownerReferences" not in kept.json()["metadata"]


def test_deleting_a_namespace_deletes_what_is_in_it(client: httpx.Client, ns: str) -> None:
    client.post(CONFIGMAPS.format(ns=ns), json={"metadata": {"name": "inside"}})
    terminating = client.delete(f"/api/v1/namespaces/{ns}").json()
    assert terminating["status"]["phase"] == "Terminating"
    wait_for(lambda: client.get(f"/api/v1/namespaces/{ns}").status_code == 404,
             "the namespace to be deleted")
    assert client.get("/api/v1/configmaps", params={
        "fieldSelector": f"metadata.namespace={ns}"}).json()["items"] == []


def test_a_crd_deleted_stops_serving_its_resources(client: httpx.Client, ns: str) -> None:
    crd = {"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
           "metadata": {"name": "things.temp.example.io"},
           "spec": {"group": "temp.example.io", "scope": "Namespaced",
                    "names": {"plural": "things", "kind": "Thing"},
                    "versions": [{"name": "v1", "served": True, "storage": True, "schema": {
                        "openAPIV3Schema": {"type": "object",
                                            "x-kubernetes-preserve-unknown-fields": True}}}]}}
    assert client.post("/apis/apiextensions.k8s.io/v1/customresourcedefinitions",
                       json=crd).status_code == 201
    things = f"/apis/temp.example.io/v1/namespaces/{ns}/things"
    assert client.post(things, json={"metadata": {"name": "t"}, "x": 1}).status_code == 201
    client.delete("/apis/apiextensions.k8s.io/v1/customresourcedefinitions/"
                  "things.temp.example.io")
    assert client.get(things).status_code == 404
    assert client.get("/apis/temp.example.io/v1").status_code == 404


# -- list selectors ----------------------------------------------------------------------

SELECTOR_CASES = [
    pytest.param("track=canary", ["canary"], id="equality selects matching labels"),
    pytest.param("track==canary", ["canary"], id="double equals is equality"),
    pytest.param("track!=canary", ["none", "stable"], id="inequality includes unlabelled"),
    pytest.param("track in (canary,stable)", ["canary", "stable"], id="in selects a set"),
    pytest.param("track notin (canary)", ["none", "stable"], id="notin includes unlabelled"),
    pytest.param("track", ["canary", "stable"], id="a bare key means exists"),
    pytest.param("!track", ["none"], id="a negated key means does not exist"),
    pytest.param("track=stable,tier=web", ["stable"], id="commas join requirements"),
]


@pytest.mark.parametrize(("selector", "names"), SELECTOR_CASES)
def test_label_selectors(client: httpx.Client, ns: str, selector: str, names: list[str]) -> None:
    url = CONFIGMAPS.format(ns=ns)
    for name, labels in (("canary", {"track": "canary"}),
                         ("stable", {"track": "stable", "tier": "web"}), ("none", {})):
        client.post(url, json={"metadata": {"name": name, "labels": labels}})
    listed = client.get(url, params={"labelSelector": selector})
    assert [i["metadata"]["name"] for i in listed.json()["items"]] == names


def test_a_malformed_selector_is_a_bad_request_naming_it(client: httpx.Client, ns: str) -> None:
    answer = client.get(CONFIGMAPS.format(ns=ns), params={"labelSelector": "a in b"})
    assert answer.status_code == 400
    assert "a in b" in answer.json()["message"]


def test_pages_with_limit_and_continue_cover_every_object_once(client: httpx.Client,
                                                               ns: str) -> None:
    url = CONFIGMAPS.format(ns=ns)
    for i in range(5):
        client.post(url, json={"metadata": {"name": f"p{i}"}})
    seen, token = [], ""
    while True:
        page = client.get(url, params={"limit": 2, **({"continue": token} if token else {})})
        seen += [i["metadata"]["name"] for i in page.json()["items"]]
        token = page.json()["metadata"].get("continue", "")
        if not token:
            break
    assert seen == [f"p{i}" for i in range(5)]


# -- the audit log -----------------------------------------------------------------------


def test_the_audit_log_records_verb_resource_and_user_agent(server: APIServer,
                                                             client: httpx.Client,
                                                             ns: str) -> None:
    url = CONFIGMAPS.format(ns=ns)
    client.post(url, json={"metadata": {"name": "audited"}}, headers={"User-Agent": "probe/1"})
    client.get(f"{url}/audited/", headers={"User-Agent": "probe/1"})
    client.delete(url, headers={"User-Agent": "probe/1"})
    assert server.audit_log is not None
    records = [json.loads(line) for line in server.audit_log.read_text().splitlines()]
    mine = [(r["verb"], r["resource"], r["name"], r["code"]) for r in records
            if r["userAgent"] == "probe/1"]
    assert mine == [("create", "configmaps", "", 201), ("get", "configmaps", "audited", 200),
                    ("deletecollection", "configmaps", "", 200)]


def _pod(name: str, **status: Any) -> dict[str, Any]:
    return {"metadata": {"name": name}, "spec": {
        "terminationGracePeriodSeconds": 5,
        "containers": [{"name": "app", "image": "img:1"}]}, "status": status}


def test_a_running_pod_is_deleted_gracefully_then_for_good_by_its_kubelet(
    client: httpx.Client, ns: str,
) -> None:
    pods = f"/api/v1/namespaces/{ns}/pods"
    client.post(pods, json=_pod("running"))
    client.patch(f"{pods}/running/status", json={"status": {"phase": "Running"}}, headers=MERGE)
    terminating = client.delete(f"{pods}/running").json()
    assert terminating["metadata"]["deletionGracePeriodSeconds"] == 5
    assert terminating["metadata"]["deletionTimestamp"]
    assert client.get(f"{pods}/running").status_code == 200
    # What the kubelet does once the processes are gone:
    client.request("DELETE", f"{pods}/running", json={"gracePeriodSeconds": 0})
    assert client.get(f"{pods}/running").status_code == 404


def test_a_grace_period_past_year_9999_is_stamped_at_the_last_representable_second(
    client: httpx.Client, ns: str,
) -> None:
    """terminationGracePeriodSeconds is an int64: a template may ask for 10^15 seconds.
    Deleting such a pod must still answer (a 500 here once held the garbage collector
    and every namespace deletion after it)."""
    pods = f"/api/v1/namespaces/{ns}/pods"
    body = _pod("patient")
    body["spec"]["terminationGracePeriodSeconds"] = 10**15
    client.post(pods, json=body)
    client.patch(f"{pods}/patient/status", json={"status": {"phase": "Running"}}, headers=MERGE)
    answer = client.delete(f"{pods}/patient")
    assert answer.status_code == 200, answer.text
    assert answer.json()["metadata"]["deletionTimestamp"] == "9999-12-31T23:59:59Z"
    assert answer.json()["metadata"]["deletionGracePeriodSeconds"] == 10**15


def test_a_pod_no_kubelet_has_started_is_deleted_at_once(client: httpx.Client, ns: str) -> None:
    pods = f"/api/v1/namespaces/{ns}/pods"
    client.post(pods, json=_pod("pending"))
    assert client.delete(f"{pods}/pending").status_code == 200
    assert client.get(f"{pods}/pending").status_code == 404


@pytest.mark.parametrize(("validation", "code"), [
    pytest.param("Strict", 400, id="strict refuses a field the built-in kind does not have"),
    pytest.param("Warn", 201, id="warn drops it with a warning"),
])
def test_unknown_fields_of_builtin_kinds_follow_field_validation(
    client: httpx.Client, ns: str, validation: str, code: int,
) -> None:
    body = deployment(f"typo-{validation.lower()}")
    body["spec"]["template"]["spec"]["containers"][0]["imagee"] = "x"
    answer = client.post(DEPLOYMENTS.format(ns=ns), json=body,
                         params={"fieldValidation": validation})
    assert answer.status_code == code, answer.text
    field = "spec.template.spec.containers[0].imagee"
    if code == 400:
        assert f'strict decoding error: unknown field "{field}"' in answer.json()["message"]
    else:
        assert answer.headers["Warning"] == f'299 - "unknown field \\"{field}\\""'
        assert "imagee" not in answer.json()["spec"]["template"]["spec"]["containers"][0]


def test_foreground_deletion_removes_the_owner_after_its_dependents(
    client: httpx.Client, ns: str,
) -> None:
    url = CONFIGMAPS.format(ns=ns)
    owner = client.post(url, json={"metadata": {"name": "owner"}}).json()
    client.post(url, json={"metadata": {"name": "dep", "finalizers": ["x.io/hold"],
                                        "ownerReferences": _owned(owner, "ConfigMap", "v1")}})
    deleting = client.request("DELETE", f"{url}/owner", json={"propagationPolicy": "Foreground"})
    assert deleting.json()["metadata"]["finalizers"] == ["foregroundDeletion"]
    wait_for(lambda: bool(client.get(f"{url}/dep").json()["metadata"].get("deletionTimestamp")),
             "the dependent to be deleted first")
    assert client.get(f"{url}/owner").status_code == 200, "the owner waits for its dependent"
    client.patch(f"{url}/dep", json={"metadata": {"finalizers": None}}, headers=MERGE)
    wait_for(lambda: client.get(f"{url}/owner").status_code == 404, "the owner to go")


def test_a_deployments_selector_is_immutable(client: httpx.Client, ns: str) -> None:
    url = DEPLOYMENTS.format(ns=ns)
    client.post(url, json=deployment("sel"))
    answer = client.patch(f"{url}/sel", headers=MERGE, json={"spec": {
        "selector": {"matchLabels": {"app": "sel", "track": "canary"}},
        "template": {"metadata": {"labels": {"app": "sel", "track": "canary"}}}}})
    assert answer.status_code == 422, answer.text
    assert answer.json()["message"] == (
        'Deployment.apps "sel" is invalid: spec.selector: Invalid value: '
        'v1.LabelSelector{MatchLabels:map[string]string{"app":"sel", "track":"canary"}, '
        "MatchExpressions:[]v1.LabelSelectorRequirement(nil)}: field is immutable")
    assert answer.json()["details"]["causes"][0]["field"] == "spec.selector"
    same = client.patch(f"{url}/sel", headers=MERGE, json={"spec": {"replicas": 3}})
    assert same.status_code == 200, "other spec fields still change"


def test_an_immutable_configmap_keeps_its_data_and_stays_immutable(
        client: httpx.Client, ns: str) -> None:
    url = CONFIGMAPS.format(ns=ns)
    client.post(url, json={"metadata": {"name": "frozen"}, "data": {"a": "1"},
                           "immutable": True})
    answer = client.patch(f"{url}/frozen", headers=MERGE,
                          json={"data": {"a": "2"}, "binaryData": {"b": "AA=="},
                                "immutable": False})
    assert answer.status_code == 422, answer.text
    causes = answer.json()["details"]["causes"]
    assert {(c["field"], c["reason"], c["message"]) for c in causes} == {
        (name, "FieldValueForbidden", "Forbidden: field is immutable when `immutable` is set")
        for name in ("immutable", "data", "binaryData")}
    labelled = client.patch(f"{url}/frozen", headers=MERGE,
                            json={"metadata": {"labels": {"x": "y"}}})
    assert labelled.status_code == 200, "metadata still changes"
    mutable = client.post(url, json={"metadata": {"name": "thawed"}, "data": {"a": "1"}})
    assert mutable.status_code == 201
    assert client.patch(f"{url}/thawed", headers=MERGE,
                        json={"data": {"a": "2"}}).status_code == 200


def test_a_services_cluster_ip_is_kept_by_an_update_without_it_and_cannot_change(
        client: httpx.Client, ns: str) -> None:
    url = f"/api/v1/namespaces/{ns}/services"
    made = client.post(url, json={"metadata": {"name": "svc"}, "spec": {
        "selector": {"app": "x"}, "ports": [{"port": 80}]}}).json()
    allocated = made["spec"]["clusterIP"]
    assert made["spec"]["clusterIPs"] == [allocated]
    # What `kubectl replace` or an operator's PUT of its own manifest sends: no clusterIP.
    replaced = client.put(f"{url}/svc", json={"metadata": {"name": "svc"}, "spec": {
        "selector": {"app": "y"}, "ports": [{"port": 80}]}})
    assert replaced.status_code == 200, replaced.text
    assert replaced.json()["spec"]["clusterIP"] == allocated
    assert replaced.json()["spec"]["clusterIPs"] == [allocated]
    answer = client.patch(f"{url}/svc", headers=MERGE, json={"spec": {"clusterIP": "10.96.9.9"}})
    assert answer.status_code == 422, answer.text
    assert answer.json()["message"] == (
        'Service "svc" is invalid: spec.clusterIPs[0]: Invalid value: []string{"10.96.9.9"}: '
        "may not change once set")
