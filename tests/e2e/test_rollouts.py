"""The integration tier's rollout scenarios, on a real cluster: a healthy new revision is
promoted to stable; a new revision whose upstream fails is rolled back on its own; `modeldeploy
abort` puts all traffic back on stable and `retry` starts again; re-applying the previous
template (a git revert) is rolled out as known-good; a spec only the operator can refuse is
reported in status and touches nothing running.

The service is the song analyzer (examples/song-analyzer.yaml, adjusted to the test namespace),
talking to the fake OpenAI-compatible upstream deployed next to it; a "bad" revision switches
LLM_MODEL to a model the upstream is told to fail, exactly as a broken fine-tune would.

Environment: E2E_PROMETHEUS (default kube-prometheus-stack's
`http://prometheus-operated.monitoring:9090`); the images as e2e_scenario.py says.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path

import pytest
import yaml
from e2e_cluster import Body, Cluster
from e2e_scenario import SERVICE_IMAGE, UPSTREAM_IMAGE, modeldeploy, phase, settled

REPO = Path(__file__).resolve().parents[2]
NAME = "song-analyzer"
PROMETHEUS = os.environ.get("E2E_PROMETHEUS", "http://prometheus-operated.monitoring:9090")
UPSTREAM = "fakeupstream"
# Fine-tunes of gpt-4o-mini, as the service's price table knows them: an unpriced model would
# leave cost-per-request without data, and the rollout paused as inconclusive.
SONGS_V1, SONGS_V2, SONGS_BROKEN = (
    f"ft:gpt-4o-mini-2024-07-18:e2e:songs:{v}" for v in ("v1", "v2", "broken")
)

pytestmark = pytest.mark.e2e


def fake_upstream(namespace: str) -> tuple[Body, Body]:
    labels = {"app.kubernetes.io/name": UPSTREAM}
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": UPSTREAM, "namespace": namespace, "labels": labels},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "containers": [
                        {
                            "name": UPSTREAM,
                            "image": UPSTREAM_IMAGE,
                            "command": ["python", "-m", "fakeupstream"],
                            "env": [{"name": "PORT", "value": "8080"}],
                            "ports": [{"name": "http", "containerPort": 8080}],
                            "readinessProbe": {"httpGet": {"path": "/health", "port": "http"}},
                        }
                    ],
                },
            },
        },
    }
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": UPSTREAM, "namespace": namespace, "labels": labels},
        "spec": {"selector": labels, "ports": [{"name": "http", "port": 8080, "targetPort": "http"}]},
    }
    return deployment, service


def song_analyzer(namespace: str, model: str) -> Body:
    """examples/song-analyzer.yaml, pointed at the fake upstream, with short steps."""
    example = yaml.safe_load((REPO / "examples" / "song-analyzer.yaml").read_text())
    body: Body = copy.deepcopy(example)
    body["metadata"] = {"name": NAME, "namespace": namespace}
    spec = body["spec"]
    spec["replicas"] = 2
    container = spec["template"]["spec"]["containers"][0]
    container["image"] = SERVICE_IMAGE
    env = {e["name"]: e for e in container.get("env", [])}
    env["LLM_MODEL"] = {"name": "LLM_MODEL", "value": model}
    # The Service's link variables, which every kubelet gives a pod (no DNS name needed).
    link = UPSTREAM.upper()
    env["LLM_API_BASE_URL"] = {"name": "LLM_API_BASE_URL",
                               "value": f"http://$({link}_SERVICE_HOST):$({link}_SERVICE_PORT)/v1"}
    env["LLM_TIMEOUT"] = {"name": "LLM_TIMEOUT", "value": "10"}
    env["OPENAI_API_KEY"] = {"name": "OPENAI_API_KEY", "value": "not-set"}
    # The example reads API_KEY from a Secret; these scenarios' traffic sends no key.
    env.pop("API_KEY", None)
    container["env"] = list(env.values())
    spec["strategy"] = {
        "canary": {
            "steps": [{"setWeight": 50}, {"pause": {"duration": "90s"}}, {"setWeight": 100}],
            "trafficRouting": {"replicas": {}},
        }
    }
    spec["analysis"]["interval"] = "15s"
    spec["analysis"]["provider"] = {"prometheus": {"address": PROMETHEUS}}
    spec["rollback"] = {"automatic": True, "bakeTime": "30s"}
    return body


def reverted(obj: Body) -> bool:
    """Settled, and a revert done: a reverted canary serves until stable's pods are ready
    again (status.revertingFrom), so its weight is 0 only then."""
    return settled(obj) and not (obj.get("status") or {}).get("revertingFrom")


def song(n: int) -> Body:
    """A distinct song per request, so the service's cache never answers for the upstream."""
    return {"artist": "e2e", "title": f"song {n}", "lyrics": f"verse {n}\nchorus {n}"}


@pytest.fixture
def stable_song_analyzer(cluster: Cluster, namespace: str) -> Body:
    """The fake upstream and a song analyzer whose first revision is stable."""
    cluster.create_deployment_and_service(namespace, *fake_upstream(namespace))
    cluster.wait_for_deployment_ready(namespace, UPSTREAM)
    cluster.create_model_deployment(song_analyzer(namespace, model=SONGS_V1))
    first = cluster.wait_for_model_deployment(namespace, NAME, settled)
    assert phase(first) == "Succeeded", first.get("status")
    assert first["status"]["stableRevision"]
    return first


def test_a_healthy_new_revision_is_promoted_to_stable(
    cluster: Cluster, namespace: str, stable_song_analyzer: Body
) -> None:
    old = stable_song_analyzer["status"]["stableRevision"]
    with cluster.traffic(namespace, NAME, "http", "analyze", song) as answers:
        cluster.update_container_env(namespace, NAME, {"LLM_MODEL": SONGS_V2})
        done = cluster.wait_for_model_deployment(namespace, NAME, settled)
    status = done["status"]
    assert phase(done) == "Succeeded", status
    assert status["stableRevision"] != old
    assert status["history"][0]["outcome"] == "Promoted"
    assert answers.get(200, 0) > 0, f"no request succeeded: {answers}"


def test_a_new_revision_whose_upstream_fails_is_rolled_back_on_its_own(
    cluster: Cluster, namespace: str, stable_song_analyzer: Body
) -> None:
    old = stable_song_analyzer["status"]["stableRevision"]
    code = cluster.proxy(
        namespace,
        UPSTREAM,
        "http",
        "PUT",
        f"admin/faults/{SONGS_BROKEN}",
        {"error_rate": 1.0, "status_code": 500},
    )
    assert code == 200, "the fake upstream refused the fault"
    with cluster.traffic(namespace, NAME, "http", "analyze", song):
        cluster.update_container_env(namespace, NAME, {"LLM_MODEL": SONGS_BROKEN})
        # Settled, and the revert done: the canary serves until stable's pods are back.
        done = cluster.wait_for_model_deployment(namespace, NAME, reverted)
    status = done["status"]
    assert phase(done) == "RolledBack", status
    assert status["stableRevision"] == old, "the stable revision must not change"
    assert status["history"][0]["outcome"] == "RolledBack"
    assert status["history"][0]["reason"], "a rollback says why"
    assert not status.get("canaryWeight"), "no traffic may stay on the rolled-back canary"


def test_abort_puts_all_traffic_on_stable_and_retry_starts_again(
    cluster: Cluster, namespace: str, stable_song_analyzer: Body
) -> None:
    old = stable_song_analyzer["status"]["stableRevision"]
    cluster.update_container_env(namespace, NAME, {"LLM_MODEL": SONGS_V2})
    paused = cluster.wait_for_model_deployment(
        namespace, NAME,
        lambda o: phase(o) == "Paused" and bool((o.get("status") or {}).get("canaryRevision")),
    )
    canary = paused["status"]["canaryRevision"]
    modeldeploy(cluster, namespace, "abort", NAME)
    aborted = cluster.wait_for_model_deployment(
        namespace, NAME, lambda o: phase(o) == "Degraded" and reverted(o))
    assert aborted["status"]["stableRevision"] == old
    assert not aborted["status"].get("canaryWeight")
    assert cluster.deployments_of(namespace, NAME)[canary].spec.replicas == 0

    with cluster.traffic(namespace, NAME, "http", "analyze", song):  # analysis needs traffic
        modeldeploy(cluster, namespace, "retry", NAME)
        done = cluster.wait_for_model_deployment(
            namespace, NAME, lambda o: settled(o) and o["status"].get("stableRevision") == canary
        )
    assert phase(done) == "Succeeded", done.get("status")


def test_reapplying_the_previous_template_is_rolled_out_as_known_good(
    cluster: Cluster, namespace: str, stable_song_analyzer: Body
) -> None:
    first_spec = stable_song_analyzer["spec"]
    old = stable_song_analyzer["status"]["stableRevision"]
    with cluster.traffic(namespace, NAME, "http", "analyze", song):
        cluster.update_container_env(namespace, NAME, {"LLM_MODEL": SONGS_V2})
        second = cluster.wait_for_model_deployment(
            namespace, NAME, lambda o: settled(o) and o["status"].get("stableRevision") != old
        )
    assert phase(second) == "Succeeded", second.get("status")

    cluster.replace_model_deployment_spec(namespace, NAME, first_spec)
    reverted = cluster.wait_for_model_deployment(
        namespace, NAME, lambda o: settled(o) and o["status"].get("stableRevision") == old
    )
    entry = reverted["status"]["history"][0]
    assert (entry["revision"], entry["outcome"]) == (old, "Promoted")
    assert "known-good" in entry["reason"], entry


def test_a_spec_only_the_operator_can_refuse_is_reported_and_touches_nothing(
    cluster: Cluster, namespace: str, stable_song_analyzer: Body
) -> None:
    old = stable_song_analyzer["status"]["stableRevision"]
    running = cluster.deployments_of(namespace, NAME)[old]
    spec = copy.deepcopy(stable_song_analyzer["spec"])
    spec["template"]["spec"]["containers"][0]["image"] = f"{SERVICE_IMAGE}-never-pulled"
    spec["analysis"]["metrics"] = [{
        "name": "per-pod", "query": 'sum(rate(model_requests_total{pod="{{pod}}"}[1m]))',
        "thresholdRange": {"max": 1},
    }]
    cluster.replace_model_deployment_spec(namespace, NAME, spec)

    def refused(obj: Body) -> bool:
        conditions = (obj.get("status") or {}).get("conditions") or []
        return any(c["type"] == "Ready" and c.get("reason") == "InvalidSpec"
                   and c.get("observedGeneration") == obj["metadata"]["generation"]
                   for c in conditions)

    invalid = cluster.wait_for_model_deployment(namespace, NAME, refused)
    ready = next(c for c in invalid["status"]["conditions"] if c["type"] == "Ready")
    assert "{{pod}}" in ready["message"], ready
    assert invalid["status"]["stableRevision"] == old
    after = cluster.deployments_of(namespace, NAME)
    assert list(after) == [old], "no new revision was created"
    assert after[old].metadata.generation == running.metadata.generation, "stable untouched"
