"""A replica that loses the Lease during a tick writes nothing more in that tick.

Leadership used to be checked only when a tick was scheduled; a tick that then waited on
a slow Prometheus wrote its status (and would have applied its actions) after the Lease
had gone to another replica. The controller, run in-process against the sandbox's API
server, is told it leads until its analysis query is in flight at a Prometheus that takes
3 s to answer (``hostile_http``), then that it no longer does: the measured round must not
reach the status.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import kubernetes
import pytest
from hostile_http import hostile_server
from mdsandbox.sandbox import Sandbox
from mdsandbox.testing import KubeAPI
from modeldeploy.controller import OperatorConfig, RolloutController
from operator_process import kubectl_apply, model_deployment

pytestmark = pytest.mark.integration
STEPS = [{"setWeight": 50}, {"analysis": {"measurements": 2}}, {"setWeight": 100}]


async def until(condition: Callable[[], object], what: str, timeout: float = 90) -> None:
    """Poll a condition under a deadline while the controller runs on the same loop."""
    try:
        async with asyncio.timeout(timeout):
            while not condition():
                await asyncio.sleep(0.1)
    except TimeoutError:
        raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}") from None


def test_a_tick_that_outlasts_the_lease_writes_nothing(
    sandbox: Sandbox, kube: KubeAPI, crds_installed: None, namespace: str
) -> None:
    kubeconfig = Path(sandbox.kubeconfig)
    path = f"/apis/modeldeploy.io/v1alpha1/namespaces/{namespace}/modeldeployments/late"

    def status() -> dict[str, Any]:
        found: dict[str, Any] = kube.http.get(path).json().get("status") or {}
        return found

    def manifest(mark: str) -> dict[str, Any]:
        analysis = {"interval": "1s",
                    "provider": {"prometheus": {"address": prometheus.url, "timeout": "10s"}},
                    "metrics": [{"name": "slow", "query": "vector(1) # slow-vector",
                                 "thresholdRange": {"max": 2}}]}
        return model_deployment("late", namespace, env={"MARK": mark}, replicas=1,
                                strategy={"canary": {"steps": STEPS}}, analysis=analysis)

    leading = True
    api_client = kubernetes.config.new_client_from_config(config_file=str(kubeconfig))
    config = OperatorConfig(namespaces=(namespace,), metrics_port=None, workers=2, query_concurrency=2)

    async def scenario() -> None:
        nonlocal leading
        controller = RolloutController(api_client, config, is_leader=lambda: leading)
        await controller.start()
        try:
            await asyncio.to_thread(kubectl_apply, manifest("1"), kubeconfig)
            await until(lambda: status().get("stableRevision"), "the first revision to become stable")
            await asyncio.to_thread(kubectl_apply, manifest("2"), kubeconfig)
            await until(lambda: prometheus.requests, "the canary's first analysis query")
            leading = False  # the Lease lapses while the tick waits for Prometheus
            await until(lambda: not any(name.startswith("tick of")
                                        for name in controller.heartbeats.silence()),
                        "the tick to end")
        finally:
            await controller.stop()

    with hostile_server("slow-vector") as prometheus:
        try:
            asyncio.run(scenario())
        finally:
            api_client.close()
    after = status()
    assert after.get("canaryRevision"), "the canary had started while this replica led"
    assert not after.get("analysis"), f"a round measured after the Lease was lost was written: {after}"
