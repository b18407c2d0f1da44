"""The watch caches' store: newest version wins, indexed by the owning ModelDeployment, lean objects."""

from __future__ import annotations

from typing import Any

from modeldeploy.kube.cache import DEPLOYMENTS, MODEL_DEPLOYMENTS, PODS, Store

JSON = dict[str, Any]


def deployment(name: str, version: int, owner: str = "song", replicas: int = 2) -> JSON:
    return {
        "metadata": {"name": name, "namespace": "ml", "resourceVersion": str(version),
                     "labels": {"modeldeploy.io/name": owner},
                     "managedFields": [{"manager": "kubectl"}]},
        "spec": {"replicas": replicas, "template": {"spec": {"containers": [{"name": "app"}]}}},
        "status": {"readyReplicas": replicas},
    }


def test_an_older_version_never_replaces_a_newer_one() -> None:
    store = Store(DEPLOYMENTS)
    assert store.put(deployment("song-a", 7, replicas=3))
    # A watch event older than the answer to our own write, arriving after it.
    assert not store.put(deployment("song-a", 5, replicas=1))
    assert store.get("ml", "song-a")["spec"]["replicas"] == 3  # type: ignore[index]
    # The watch event of that very write (same version) is kept, and wakes its owner.
    assert store.put(deployment("song-a", 7, replicas=3))


def test_objects_are_found_by_their_model_deployment_and_move_with_their_label() -> None:
    store = Store(DEPLOYMENTS)
    store.put(deployment("song-a", 1))
    store.put(deployment("song-b", 2))
    store.put(deployment("chat-a", 3, owner="chat"))
    assert sorted(d["metadata"]["name"] for d in store.owned_by("ml", "song")) == ["song-a", "song-b"]
    store.put(deployment("song-b", 4, owner="chat"))  # relabelled by someone
    assert [d["metadata"]["name"] for d in store.owned_by("ml", "song")] == ["song-a"]
    store.remove(deployment("song-a", 5))
    assert store.owned_by("ml", "song") == []
    assert sorted(d["metadata"]["name"] for d in store.owned_by("ml", "chat")) == ["chat-a", "song-b"]


def test_a_model_deployment_is_indexed_under_its_own_name() -> None:
    store = Store(MODEL_DEPLOYMENTS)
    store.put({"metadata": {"name": "song", "namespace": "ml", "resourceVersion": "1"}, "spec": {}})
    assert [md["metadata"]["name"] for md in store.owned_by("ml", "song")] == ["song"]


def test_cached_objects_keep_only_what_a_reconcile_reads() -> None:
    kept = DEPLOYMENTS.keep(deployment("song-a", 1))
    assert "managedFields" not in kept["metadata"]
    assert "template" not in kept["spec"], "a revision's template never changes: not cached"
    assert kept["spec"]["replicas"] == 2 and kept["status"]["readyReplicas"] == 2
    pod = PODS.keep({
        "metadata": {"name": "p", "namespace": "ml", "labels": {"a": "b"}, "annotations": {"x": "y"}},
        "spec": {"containers": [{"name": "app", "env": [{"name": "K", "value": "v" * 1000}]}]},
        "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}],
                   "containerStatuses": [{"name": "app", "ready": True, "image": "i",
                                          "state": {"running": {}}}]},
    })
    assert pod == {
        "metadata": {"name": "p", "namespace": "ml", "labels": {"a": "b"}},
        "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}],
                   "containerStatuses": [{"name": "app", "ready": True, "state": {"running": {}}}]},
    }
