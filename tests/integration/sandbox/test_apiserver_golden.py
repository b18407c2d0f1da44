"""Replays tests/golden (recorded from a real kube-apiserver) against the sandbox's API server.

The recordings are one session against a real kube-apiserver, in this order:
crd-register, crd-validation, generation-status-conflict, finalizers, list-selectors,
watch, deployment, owner-cascade, events-leases. Later files rely on objects earlier
ones made (``ok``, ``unknown-field``), so the tests run in that order against one server
per module. Objects the recording made without recording the request (the CRD, the
``sel*`` widgets, the cascade's owner) are made here first.

What is compared (the golden README): status codes; Status kind/status/reason/code,
details (name, group, kind) and causes (field, reason, message, as a set: a real
server's order among sibling fields is Go map order); and for objects, every field and
value except the volatile ones (uids, resourceVersions, timestamps, continue tokens),
whose presence is still compared. Recorded resourceVersions and uids in requests are
translated to the ones this server handed out.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from mdsandbox.apiserver import APIServer

pytestmark = pytest.mark.integration

GOLDEN = Path(__file__).resolve().parents[2] / "golden"  # tests/golden, see its README
VOLATILE = {"uid", "resourceVersion", "creationTimestamp", "deletionTimestamp",
            "lastTransitionTime", "lastUpdateTime", "continue"}


def load(name: str) -> list[dict[str, Any]]:
    exchanges: list[dict[str, Any]] = json.loads((GOLDEN / name).read_text())["exchanges"]
    return exchanges


class Replayer:
    """Sends recorded requests and compares the answers with the recorded ones."""

    def __init__(self, base_url: str) -> None:
        self.client = httpx.Client(base_url=base_url, timeout=10)
        self.versions: dict[str, str] = {}  # recorded resourceVersion -> ours
        self.uids: dict[str, str] = {}  # recorded uid -> ours

    def send(self, request: dict[str, Any]) -> httpx.Response:
        body = request.get("body")
        content = None
        if body is not None:
            content = self._translate(json.dumps(body))
        headers = {"Content-Type": request["content_type"]} if request.get("content_type") else {}
        return self.client.request(request["method"], self._translate(request["path"]),
                                   content=content, headers=headers)

    def _translate(self, text: str) -> str:
        for recorded, ours in self.uids.items():
            text = text.replace(recorded, ours)
        return re.sub(r'"resourceVersion": "(\d+)"',
                      lambda m: f'"resourceVersion": "{self.versions.get(m.group(1), m.group(1))}"',
                      text)

    def learn(self, expected: Any, actual: Any) -> None:
        """Remember which of our resourceVersions/uids stand for the recorded ones."""
        if isinstance(expected, dict) and isinstance(actual, dict):
            for key in ("resourceVersion", "uid"):
                if isinstance(expected.get(key), str) and isinstance(actual.get(key), str):
                    (self.versions if key == "resourceVersion" else self.uids)[
                        expected[key]] = actual[key]
            for key, value in expected.items():
                if key in actual:
                    self.learn(value, actual[key])

    def exchange(self, recorded: dict[str, Any]) -> httpx.Response:
        response = self.send(recorded["request"])
        expected = recorded["response"]
        assert response.status_code == expected["status"], response.text
        if "body" in expected:
            actual = response.json()
            assert_same(expected["body"], actual)
            self.learn(expected["body"], actual)
        return response


def assert_same(expected: Any, actual: Any, path: str = "") -> None:
    if isinstance(expected, dict) and expected.get("kind") == "Status":
        assert_same_status(expected, actual)
        return
    if isinstance(expected, dict):
        assert isinstance(actual, dict), f"{path}: expected an object, got {actual!r}"
        assert set(expected) == set(actual), (
            f"{path}: fields differ: missing {set(expected) - set(actual)}, "
            f"extra {set(actual) - set(expected)}")
        for key, value in expected.items():
            if key in VOLATILE:
                assert bool(value) == bool(actual[key]), f"{path}.{key}: presence differs"
            else:
                assert_same(value, actual[key], f"{path}.{key}")
    elif isinstance(expected, list):
        assert isinstance(actual, list) and len(actual) == len(expected), (
            f"{path}: expected {len(expected)} items, got {actual!r}")
        for i, (e, a) in enumerate(zip(expected, actual, strict=True)):
            assert_same(e, a, f"{path}[{i}]")
    else:
        assert expected == actual, f"{path}: expected {expected!r}, got {actual!r}"


def _message_parts(message: str) -> set[str] | str:
    """An Invalid message lists its causes in brackets; their order is not fixed."""
    m = re.match(r'^(.* is invalid: )\[(.*)\]$', message)
    if not m:
        return message
    return {m.group(1)} | set(re.split(r", (?=(?:[a-z][\w.\[\]]*|<nil>): )", m.group(2)))


def assert_same_status(expected: dict[str, Any], actual: dict[str, Any]) -> None:
    for key in ("kind", "apiVersion", "status", "reason", "code"):
        assert actual.get(key) == expected.get(key), f"Status {key}: {actual}"
    assert set(actual) == set(expected), f"Status fields: {sorted(actual)}"
    if "too old resource version" in expected.get("message", ""):
        assert re.fullmatch(r"too old resource version: \d+ \(\d+\)", actual["message"])
    else:
        assert _message_parts(actual.get("message", "")) == _message_parts(
            expected.get("message", ""))
    want, got = dict(expected.get("details", {})), dict(actual.get("details", {}))
    want_causes, got_causes = want.pop("causes", []), got.pop("causes", [])
    if "uid" in want:
        assert got.pop("uid", None)
        want.pop("uid")
    assert got == want
    assert _as_set(got_causes) == _as_set(want_causes)


def _as_set(causes: list[dict[str, str]]) -> list[str]:
    return sorted(json.dumps(c, sort_keys=True) for c in causes)


@pytest.fixture(scope="module")
def replayer() -> Iterator[Replayer]:
    server = APIServer(host="127.0.0.1", port=0)
    server.start()
    replay = Replayer(server.url)
    created = replay.client.post("/api/v1/namespaces", json={
        "apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "golden"}})
    assert created.status_code == 201, created.text
    try:
        yield replay
    finally:
        replay.client.close()
        server.stop()


def test_registering_a_crd_serves_its_group_and_marks_it_established(replayer: Replayer) -> None:
    exchanges = load("crd-register.json")
    first = replayer.send(exchanges[0]["request"])  # the recording registered it earlier
    assert first.status_code == 201, first.text
    for recorded in exchanges:
        replayer.exchange(recorded)


def test_custom_resources_are_defaulted_validated_and_pruned(replayer: Replayer) -> None:
    for recorded in load("crd-validation.json"):
        replayer.exchange(recorded)


def test_generation_status_isolation_conflicts_and_patch_kinds(replayer: Replayer) -> None:
    for recorded in load("generation-status-conflict.json"):
        replayer.exchange(recorded)


def test_delete_waits_for_finalizers_then_completes(replayer: Replayer) -> None:
    for recorded in load("finalizers.json"):
        replayer.exchange(recorded)


def test_list_filters_by_labels_and_fields_and_pages(replayer: Replayer) -> None:
    for name, labels in (("sel0", {"tier": "a", "track": "stable"}),
                         ("sel1", {"tier": "a", "track": "canary"}), ("sel2", {"tier": "b"})):
        made = replayer.client.post("/apis/golden.example.io/v1/namespaces/golden/widgets", json={
            "apiVersion": "golden.example.io/v1", "kind": "Widget",
            "metadata": {"name": name, "labels": labels}, "spec": {"size": 1}})
        assert made.status_code == 201, made.text
    for recorded in load("list-selectors.json"):
        replayer.exchange(recorded)


def test_watch_frames_events_per_line_and_expires_old_versions(replayer: Replayer) -> None:
    streamed, expired = load("watch.json")
    url = "/apis/golden.example.io/v1/namespaces/golden/widgets"
    list_rv = replayer.client.get(url).json()["metadata"]["resourceVersion"]
    # The recording used timeoutSeconds=4; 2 keeps the suite fast and frames the same.
    path = streamed["request"]["path"].replace("<list rv>", list_rv).replace(
        "timeoutSeconds=4", "timeoutSeconds=2")
    lines: list[str] = []
    started = threading.Event()

    def watch() -> None:
        with replayer.client.stream("GET", path) as response:
            assert response.status_code == 200
            started.set()
            lines.extend(response.iter_lines())

    reader = threading.Thread(target=watch)
    reader.start()
    assert started.wait(5)
    widget = {"apiVersion": "golden.example.io/v1", "kind": "Widget",
              "metadata": {"name": "w1"}, "spec": {"size": 1}}
    assert replayer.client.post(url, json=widget).status_code == 201
    assert replayer.client.patch(f"{url}/w1", json={"spec": {"size": 2}}, headers={
        "Content-Type": "application/merge-patch+json"}).status_code == 200
    assert replayer.client.delete(f"{url}/w1").status_code == 200
    reader.join(10)
    assert not reader.is_alive()
    events = [json.loads(line) for line in lines if line]
    assert [e["type"] for e in events] == [e["type"] for e in streamed["response"]["events"]]
    for want, got in zip(streamed["response"]["events"], events, strict=True):
        assert_same(want["object"], got["object"])
    assert events[-1]["object"]["metadata"]["resourceVersion"] == \
        events[-2]["object"]["metadata"]["resourceVersion"]

    with replayer.client.stream("GET", expired["request"]["path"]) as response:
        assert response.status_code == expired["response"]["status"]
        events = [json.loads(line) for line in response.iter_lines() if line]
    assert [e["type"] for e in events] == ["ERROR"]
    assert_same(expired["response"]["events"][0]["object"], events[0]["object"])


def test_deployments_merge_strategically_and_scale(replayer: Replayer) -> None:
    # The rest of the recording shows kube-controller-manager's work (ReplicaSets, pods,
    # status): the sandbox's controllers own that, not the API server.
    for recorded in load("deployment.json")[:5]:
        replayer.exchange(recorded)


def test_the_garbage_collector_deletes_dependents_of_a_deleted_owner(replayer: Replayer) -> None:
    create, delete, get_child = load("owner-cascade.json")
    owner = replayer.client.post("/api/v1/namespaces/golden/configmaps", json={
        "apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "owner"}})
    assert owner.status_code == 201
    replayer.uids[delete["response"]["body"]["details"]["uid"]] = owner.json()["metadata"]["uid"]
    replayer.exchange(create)
    replayer.exchange(delete)
    deadline = time.monotonic() + 5  # the collector works in the background
    while replayer.send(get_child["request"]).status_code != 404:
        assert time.monotonic() < deadline, "the dependent was not collected within 5s"
        time.sleep(0.05)  # polling interval, bounded by the deadline
    replayer.exchange(get_child)


def test_events_and_leases_are_accepted_as_clients_send_them(replayer: Replayer) -> None:
    for recorded in load("events-leases.json"):
        replayer.exchange(recorded)


def test_discovery_describes_served_resources_as_a_real_server_does(replayer: Replayer) -> None:
    recordings = {e["request"]["path"]: e["response"]["body"] for e in load("discovery.json")}
    for path in ("/api/v1", "/apis/apps/v1", "/apis/apiextensions.k8s.io/v1",
                 "/apis/coordination.k8s.io/v1"):
        ours = replayer.client.get(path).json()
        recorded = recordings[path]
        assert ours["kind"] == recorded["kind"] and ours["groupVersion"] == recorded["groupVersion"]
        theirs = {r["name"]: r for r in recorded["resources"]}
        for resource in ours["resources"]:
            want = theirs[resource["name"]]
            assert {**resource, "verbs": sorted(resource["verbs"])} == {
                **want, "verbs": sorted(want["verbs"])}
    for name in ("deployments/scale", "deployments/status", "pods/status", "replicasets/scale"):
        group = "/api/v1" if name.startswith("pods") else "/apis/apps/v1"
        assert name in {r["name"] for r in replayer.client.get(group).json()["resources"]}
    version = replayer.client.get("/version").json()
    assert set(version) == set(recordings["/version"])
    assert replayer.client.get("/api").json()["versions"] == ["v1"]
    groups = {g["name"] for g in replayer.client.get("/apis").json()["groups"]}
    assert {"apps", "apiextensions.k8s.io", "coordination.k8s.io", "events.k8s.io",
            "golden.example.io", "gateway.networking.k8s.io"} <= groups
