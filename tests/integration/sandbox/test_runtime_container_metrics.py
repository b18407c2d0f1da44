"""The sandbox's kubelet exports cAdvisor's container memory series, and Prometheus has them.

What memory analysis relies on: for each running container, ``/metrics/cadvisor`` says
``container_memory_working_set_bytes`` (the process's resident memory) and
``container_spec_memory_limit_bytes`` (its memory limit, 0 for none), labelled
``namespace``, ``pod`` and ``container`` as a real kubelet labels them, and the sandbox's
Prometheus scrapes them as job ``kubelet`` with exactly those labels.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from mdsandbox.cadvisor import MEMORY_LIMIT, TARGETS_FILE, WORKING_SET
from mdsandbox.sandbox import Sandbox
from mdsandbox.testing import KubeAPI, wait_until
from prometheus_client.parser import text_string_to_metric_families

pytestmark = pytest.mark.integration
JSON = dict[str, Any]
POD = "memory"
LIMIT = "256Mi"
LIMIT_BYTES = 256 * 2**20


def two_container_pod(namespace: str) -> JSON:
    """A pod of two processes: ``app`` with a memory limit, ``sidecar`` without one."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": POD, "namespace": namespace},
        "spec": {"containers": [
            {"name": "app", "image": "modeldeploy/fake-upstream:test",
             "resources": {"limits": {"memory": LIMIT}}},
            {"name": "sidecar", "image": "modeldeploy/fake-upstream:test"},
        ]},
    }


def running_pids(kube: KubeAPI, namespace: str) -> dict[str, int] | None:
    """Each container's pid once all of them run, from their ``process://PID`` IDs."""
    pod = kube.get("Pod", namespace, POD) or {}
    statuses = (pod.get("status") or {}).get("containerStatuses") or []
    pids = {s["name"]: int(s["containerID"].removeprefix("process://")) for s in statuses
            if "running" in s["state"] and str(s.get("containerID", "")).startswith("process://")}
    return pids if len(pids) == 2 else None


def vm_rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for pid {pid}")


def kubelet_endpoint(sandbox: Sandbox) -> str:
    """The kubelet's cAdvisor URL, from the file_sd file it publishes for Prometheus."""
    groups = json.loads((Path(sandbox.workdir) / TARGETS_FILE).read_text())
    return f"http://{groups[0]['targets'][0]}/metrics/cadvisor"


def scrape(url: str, namespace: str) -> dict[tuple[str, str], tuple[dict[str, str], float]]:
    """This namespace's samples: (series, container) -> (labels, value)."""
    text = httpx.get(url, timeout=10).text
    return {
        (sample.name, sample.labels.get("container", "")): (sample.labels, sample.value)
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.labels.get("namespace") == namespace
    }


def test_the_kubelet_reports_each_running_containers_rss_and_memory_limit_with_cadvisors_labels(
    sandbox: Sandbox, kube: KubeAPI, namespace: str
) -> None:
    kube.create(two_container_pod(namespace))
    pids = wait_until(lambda: running_pids(kube, namespace), timeout=60,
                      what="both containers' processes to run")
    url = kubelet_endpoint(sandbox)

    before = vm_rss(pids["app"])
    samples = wait_until(lambda: scrape(url, namespace) or None, timeout=30,
                         what="the pod's series on /metrics/cadvisor")
    after = vm_rss(pids["app"])

    cadvisor_labels = {"namespace": namespace, "pod": POD}
    assert samples[(MEMORY_LIMIT, "app")] == ({**cadvisor_labels, "container": "app"}, LIMIT_BYTES)
    assert samples[(MEMORY_LIMIT, "sidecar")] == ({**cadvisor_labels, "container": "sidecar"}, 0)
    labels, working_set = samples[(WORKING_SET, "app")]
    assert labels == {**cadvisor_labels, "container": "app"}
    # The process's RSS, read around the scrape (a starting service still grows a little).
    assert 0.9 * min(before, after) <= working_set <= 1.1 * max(before, after)
    assert samples[(WORKING_SET, "sidecar")][1] > 0

    kube.delete("Pod", namespace, POD)
    wait_until(lambda: not scrape(url, namespace), timeout=30,
               what="the deleted pod's series to leave /metrics/cadvisor")


def test_prometheus_scrapes_the_container_series_as_job_kubelet_with_exactly_cadvisors_labels(
    sandbox: Sandbox, kube: KubeAPI, namespace: str
) -> None:
    if sandbox.prometheus_url is None:
        pytest.skip("Debian's prometheus package is not installed (hack/setup installs it)")
    kube.create(two_container_pod(namespace))
    wait_until(lambda: running_pids(kube, namespace), timeout=60,
               what="both containers' processes to run")

    def series(metric: str) -> list[JSON] | None:
        response = httpx.get(f"{sandbox.prometheus_url}/api/v1/query",
                             params={"query": f'{metric}{{namespace="{namespace}"}}'}, timeout=10)
        response.raise_for_status()
        result: list[JSON] = response.json()["data"]["result"]
        return result if len(result) == 2 else None

    limits = wait_until(lambda: series(MEMORY_LIMIT), timeout=30,
                        what="both containers' limits in Prometheus")
    working_sets = wait_until(lambda: series(WORKING_SET), timeout=30,
                              what="both containers' working sets in Prometheus")

    for found in (limits, working_sets):
        assert {frozenset(s["metric"]) for s in found} == {
            frozenset({"__name__", "namespace", "pod", "container", "job", "instance"})}
        assert {s["metric"]["job"] for s in found} == {"kubelet"}
        assert {s["metric"]["pod"] for s in found} == {POD}
    assert {s["metric"]["container"]: float(s["value"][1]) for s in limits} == {
        "app": LIMIT_BYTES, "sidecar": 0}
    assert all(float(s["value"][1]) > 0 for s in working_sets)
