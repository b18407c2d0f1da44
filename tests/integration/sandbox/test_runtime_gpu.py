"""A sandbox with GPUs (``--gpus N``) schedules GPU pods until its devices run out."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from mdsandbox.sandbox import Sandbox
from mdsandbox.testing import KubeAPI, container_pid, deployment, wait_deployment_ready, wait_until

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def one_gpu_sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sandbox]:
    with Sandbox(tmp_path_factory.mktemp("gpu-sandbox"), prometheus=False, gpus=1) as sandbox:
        yield sandbox


def test_the_only_gpu_goes_to_one_pod_and_the_next_pod_waits_for_it(one_gpu_sandbox: Sandbox) -> None:
    kube = KubeAPI(one_gpu_sandbox.api_url)
    try:
        kube.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "gpu"}})
        kube.create(deployment(
            "textgen", "gpu", replicas=2,
            container={"resources": {"limits": {"nvidia.com/gpu": 1}}},
        ))

        running = wait_deployment_ready(kube, "gpu", "textgen", 1)[0]
        environ = Path(f"/proc/{container_pid(running)}/environ").read_bytes().decode()
        assert "CUDA_VISIBLE_DEVICES=0" in environ.split("\0")

        def pending_pod() -> dict[str, object] | None:
            pods = kube.list("Pod", "gpu", "app=textgen")
            return next((p for p in pods if p.get("status", {}).get("phase") == "Pending"
                         and p["status"].get("conditions")), None)

        pending = wait_until(pending_pod, timeout=30, what="the second GPU pod to be unschedulable")
        scheduled = pending["status"]["conditions"][0]  # type: ignore[index]
        assert (scheduled["type"], scheduled["reason"]) == ("PodScheduled", "Unschedulable")
    finally:
        kube.close()
