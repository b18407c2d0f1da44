"""A real Kopf operator (a subprocess) against the sandbox's API server.

The modeldeploy operator is built on Kopf, so this proves the parts of the API Kopf
leans on work together: discovery of a CRD's resource, list-then-watch, merge patches
of status and of Kopf's progress annotations, its finalizer, and deletion through it.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from mdsandbox.apiserver import APIServer, write_kubeconfig

pytestmark = pytest.mark.integration

OPERATOR = textwrap.dedent("""\
    import kopf

    @kopf.on.startup()
    def configure(settings, **_):
        settings.watching.server_timeout = 30
        settings.watching.client_timeout = 40
        settings.persistence.finalizer = "kopf.example.io/finalizer"

    @kopf.on.create("kopf.example.io", "v1", "gizmos")
    def created(spec, patch, **_):
        patch.status["phase"] = "Created"
        patch.status["size"] = spec["size"]

    @kopf.on.update("kopf.example.io", "v1", "gizmos")
    def updated(spec, patch, **_):
        patch.status["phase"] = "Updated"
        patch.status["size"] = spec["size"]

    @kopf.on.delete("kopf.example.io", "v1", "gizmos")
    def deleted(**_):
        pass
    """)

CRD = {
    "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
    "metadata": {"name": "gizmos.kopf.example.io"},
    "spec": {"group": "kopf.example.io", "scope": "Namespaced",
             "names": {"plural": "gizmos", "kind": "Gizmo"},
             "versions": [{"name": "v1", "served": True, "storage": True,
                           "subresources": {"status": {}},
                           "schema": {"openAPIV3Schema": {"type": "object", "properties": {
                               "spec": {"type": "object", "properties": {
                                   "size": {"type": "integer"}}},
                               "status": {"type": "object",
                                          "x-kubernetes-preserve-unknown-fields": True}}}}}]},
}
GIZMOS = "/apis/kopf.example.io/v1/namespaces/default/gizmos"


def wait_for(condition: Callable[[], Any], what: str, seconds: float = 20) -> Any:
    deadline = time.monotonic() + seconds
    while not (result := condition()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)  # polling interval, not synchronisation: the deadline bounds it
    return result


@pytest.fixture(scope="module")
def operator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    workdir = tmp_path_factory.mktemp("kopf")
    server = APIServer(host="127.0.0.1", port=0)
    server.start()
    write_kubeconfig(workdir / "kubeconfig", server.url)
    (workdir / "operator.py").write_text(OPERATOR)
    client = httpx.Client(base_url=server.url, timeout=10)
    assert client.post("/apis/apiextensions.k8s.io/v1/customresourcedefinitions",
                       json=CRD).status_code == 201
    log = (workdir / "kopf.log").open("w")
    process = subprocess.Popen(
        [sys.executable, "-m", "kopf", "run", "--standalone", "--namespace", "default",
         str(workdir / "operator.py")],
        env={**os.environ, "KUBECONFIG": str(workdir / "kubeconfig")},
        stdout=log, stderr=subprocess.STDOUT)
    try:
        yield client
    finally:
        process.terminate()
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)
        log.close()
        client.close()
        server.stop()
        print(Path(workdir / "kopf.log").read_text()[-3000:])


def _status(client: httpx.Client, name: str) -> dict[str, Any]:
    answer = client.get(f"{GIZMOS}/{name}")
    return answer.json().get("status", {}) if answer.status_code == 200 else {}


def test_kopf_handles_create_update_and_delete(operator: httpx.Client) -> None:
    made = operator.post(GIZMOS, json={"apiVersion": "kopf.example.io/v1", "kind": "Gizmo",
                                       "metadata": {"name": "g"}, "spec": {"size": 1}})
    assert made.status_code == 201
    wait_for(lambda: _status(operator, "g").get("phase") == "Created", "Kopf's create handler")
    finalizers = operator.get(f"{GIZMOS}/g").json()["metadata"].get("finalizers")
    assert finalizers == ["kopf.example.io/finalizer"]

    operator.patch(f"{GIZMOS}/g", json={"spec": {"size": 2}},
                   headers={"Content-Type": "application/merge-patch+json"})
    wait_for(lambda: _status(operator, "g") == {"phase": "Updated", "size": 2},
             "Kopf's update handler")

    deleting = operator.delete(f"{GIZMOS}/g")
    assert deleting.json()["metadata"]["deletionTimestamp"]
    wait_for(lambda: operator.get(f"{GIZMOS}/g").status_code == 404,
             "Kopf to remove its finalizer so the deletion completes")
