"""The operator's watch caches against a real API (the sandbox): selected on the server, kept fresh.

The caches are what every reconcile reads, so they must (a) hold only objects labelled as
owned by a ModelDeployment, selected by the API server (an unrelated Deployment never
reaches the operator), (b) follow creations, changes and deletions through the watch, and
(c) wake the owning ModelDeployment for each change.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import kubernetes
import pytest
from mdsandbox.sandbox import Sandbox
from mdsandbox.testing import KubeAPI, deployment
from modeldeploy.kube.cache import ClusterCache
from modeldeploy.kube.client import USER_AGENT

pytestmark = pytest.mark.integration


async def until(check: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


def with_cache(
    sandbox: Sandbox, namespaces: list[str],
    body: Callable[[ClusterCache, list[tuple[str, str]]], Awaitable[None]],
) -> None:
    api_client = kubernetes.config.new_client_from_config(config_file=str(sandbox.kubeconfig))
    woken: list[tuple[str, str]] = []

    async def main() -> None:
        cache = ClusterCache(api_client, USER_AGENT, namespaces,
                             lambda ns, name: woken.append((ns, name)), watch_timeout=60)
        await cache.start(timeout=30)
        try:
            await body(cache, woken)
        finally:
            await cache.stop()

    asyncio.run(main())


def labelled(name: str, namespace: str, owner: str) -> dict[str, object]:
    manifest = deployment(name, namespace, replicas=0)
    manifest["metadata"]["labels"] = {"modeldeploy.io/name": owner}  # type: ignore[index]
    return manifest


def test_the_caches_hold_only_owned_objects_selected_by_the_api_server(
    sandbox: Sandbox, kube: KubeAPI, namespace: str
) -> None:
    kube.create(deployment("unrelated", namespace, replicas=0))
    kube.create(labelled("owned-v1", namespace, owner="song"))

    async def body(cache: ClusterCache, woken: list[tuple[str, str]]) -> None:
        assert [d["metadata"]["name"] for d in cache.owned("Deployment", namespace, "song")] \
            == ["owned-v1"]
        assert cache.get("Deployment", namespace, "unrelated") is None
        # Created, changed and deleted after the list: seen through the watch, owner woken.
        woken.clear()
        kube.create(labelled("owned-v2", namespace, owner="song"))
        await until(lambda: cache.get("Deployment", namespace, "owned-v2") is not None,
                    "the new Deployment in the cache")
        assert (namespace, "song") in woken
        kube.merge_patch("Deployment", namespace, "owned-v2", {"spec": {"replicas": 3}})
        await until(lambda: (cache.get("Deployment", namespace, "owned-v2") or {})
                    .get("spec", {}).get("replicas") == 3, "the scaled Deployment in the cache")
        kube.delete("Deployment", namespace, "owned-v2")
        await until(lambda: cache.get("Deployment", namespace, "owned-v2") is None,
                    "the deleted Deployment to leave the cache")
        kube.create(deployment("unrelated-2", namespace, replicas=0))
        kube.create(labelled("owned-v3", namespace, owner="song"))
        await until(lambda: cache.get("Deployment", namespace, "owned-v3") is not None,
                    "a later Deployment in the cache")
        assert cache.get("Deployment", namespace, "unrelated-2") is None

    with_cache(sandbox, [namespace], body)
    # The selection happened on the server: every list and watch of owned kinds asked for it.
    audit = [json.loads(line) for line in (Path(sandbox.workdir) / "audit.log").read_text().splitlines()]
    asked = [r for r in audit if r["userAgent"] == USER_AGENT and r["namespace"] == namespace
             and r["resource"] in ("deployments", "pods", "services", "configmaps")
             and r["verb"] in ("list", "watch")]
    assert asked, "the caches made no list or watch in the namespace"
    assert all("labelSelector=modeldeploy.io" in r["requestURI"] for r in asked), \
        [r["requestURI"] for r in asked if "labelSelector" not in r["requestURI"]]
