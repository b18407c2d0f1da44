"""The real operator process against a metric provider that misbehaves, and one it may not ask.

- A Prometheus that answers with a 100 KB error body full of terminal escapes, and one
  that trickles its answer a byte at a time: each round ends within the provider's
  timeout, the rollout pauses on inconclusive analysis as for any outage, and status and
  Events carry short, printable reasons (the tick neither crashes on a status Kubernetes
  would refuse nor hangs on the trickle). Kopf's liveness endpoint answers 200 meanwhile,
  with the heartbeats of the operator's loops.
- With an allow-list of provider addresses (the chart always sets one), a ModelDeployment
  naming another address is refused like an invalid spec, naming the field and the chart
  value, and not one request (nor its bearer token) reaches that address.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import kubernetes
import pytest
from hostile_http import HostileServer, hostile_server
from mdsandbox.sandbox import Sandbox
from mdsandbox.testing import KubeAPI, wait_until
from modeldeploy.kube.cache import ClusterCache
from modeldeploy.kube.client import USER_AGENT, KubeClient
from modeldeploy.messages import EVENT_MESSAGE_MAX, STATUS_MESSAGE_MAX
from operator_process import OperatorProcess, free_port, kubectl_apply, model_deployment

pytestmark = pytest.mark.integration
CONTROL = [chr(c) for c in [*range(0x00, 0x20), 0x7F, 0x9B]] + ["\u202e"]
ALLOWED = "http://prometheus-operated.monitoring:9090"
STEPS = [{"setWeight": 50}, {"analysis": {"measurements": 2}}, {"setWeight": 100}]


def md_status(kube: KubeAPI, namespace: str, name: str) -> dict[str, Any]:
    response = kube.http.get(f"/apis/modeldeploy.io/v1alpha1/namespaces/{namespace}/modeldeployments/{name}")
    body = response.json() if response.status_code == 200 else {}
    status: dict[str, Any] = body.get("status") or {}
    return status


def events_of(kube: KubeAPI, namespace: str, name: str) -> list[dict[str, Any]]:
    return [e for e in kube.list("Event", namespace) if e["involvedObject"].get("name") == name]


def clean(text: str) -> bool:
    return not any(c in text for c in CONTROL)


@pytest.fixture
def prometheus() -> Iterator[HostileServer]:
    with hostile_server("vector") as server:
        yield server


def analysed(name: str, namespace: str, mark: str, address: str, **provider: Any) -> dict[str, Any]:
    """A ModelDeployment whose analysis asks ``address``: one metric answered with a huge
    error, one answered a byte at a time (``hostile_http`` picks by the query's text)."""
    return model_deployment(
        name, namespace, env={"MARK": mark}, replicas=1,
        strategy={"canary": {"steps": STEPS}},
        analysis={
            "interval": "2s",
            "provider": {"prometheus": {"address": address, "timeout": "2s", **provider}},
            "metrics": [
                {"name": "huge", "query": 'vector(1) # huge-error', "thresholdRange": {"max": 2}},
                {"name": "slow", "query": 'vector(1) # trickle-body', "thresholdRange": {"max": 2}},
            ],
        },
        rollback={"automatic": True, "bakeTime": "1s"},
    )


def test_a_hostile_prometheus_pauses_the_rollout_with_short_printable_reasons(
    sandbox: Sandbox, kube: KubeAPI, crds_installed: None, namespace: str, tmp_path: Path,
    prometheus: HostileServer,
) -> None:
    health = f"http://127.0.0.1:{free_port()}/healthz"
    operator = OperatorProcess(Path(sandbox.kubeconfig), tmp_path,
                               extra_env={"MODELDEPLOY_LIVENESS": health})
    operator.start()
    try:
        kubeconfig = Path(sandbox.kubeconfig)
        kubectl_apply(analysed("hostile", namespace, "1", prometheus.url), kubeconfig)
        stable = wait_until(lambda: md_status(kube, namespace, "hostile").get("stableRevision"),
                            timeout=90, what="the first revision to become stable")
        kubectl_apply(analysed("hostile", namespace, "2", prometheus.url), kubeconfig)
        paused = wait_until(
            lambda: (st := md_status(kube, namespace, "hostile")).get("phase") == "Paused" and st,
            timeout=120, what="the rollout to pause on inconclusive analysis",
        )
        probe = httpx.get(health, timeout=10)
    finally:
        operator.stop()

    assert paused["stableRevision"] == stable and paused["canaryRevision"] != stable
    by_name = {m["name"]: m for m in paused["analysis"]}
    assert by_name["huge"]["verdict"] == by_name["slow"]["verdict"] == "Inconclusive"
    assert "Prometheus refused the query: HTTP 400: bad_data:" in by_name["huge"]["message"]
    assert "did not answer within the provider's timeout (2s" in by_name["slow"]["message"]
    texts = [paused["message"], *(c["message"] for c in paused["conditions"]),
             *(m["message"] for m in paused["analysis"])]
    assert all(clean(t) and len(t.encode()) <= STATUS_MESSAGE_MAX for t in texts), texts
    assert len(by_name["huge"]["message"].encode()) < 1024, "reflected text is kept short"
    events = events_of(kube, namespace, "hostile")
    assert events and all(clean(e["message"]) and len(e["message"].encode()) <= EVENT_MESSAGE_MAX
                          for e in events)
    assert probe.status_code == 200, probe.text
    assert "controller loop" in probe.json()["heartbeats"], probe.text


def test_an_address_outside_the_allow_list_is_refused_and_never_asked(
    sandbox: Sandbox, kube: KubeAPI, crds_installed: None, namespace: str, tmp_path: Path,
    prometheus: HostileServer,
) -> None:
    kubeconfig = Path(sandbox.kubeconfig)
    kubectl_apply({"apiVersion": "v1", "kind": "Secret",
                   "metadata": {"name": "prometheus-token", "namespace": namespace},
                   "stringData": {"token": "the-namespace-token"}}, kubeconfig)
    operator = OperatorProcess(Path(sandbox.kubeconfig), tmp_path,
                               extra_env={"MODELDEPLOY_ALLOWED_PROVIDER_ADDRESSES": ALLOWED})
    operator.start()
    try:
        first = model_deployment("elsewhere", namespace, env={"MARK": "1"}, replicas=1,
                                 strategy={"canary": {"steps": [{"setWeight": 50}]}})
        kubectl_apply(first, kubeconfig)
        stable = wait_until(lambda: md_status(kube, namespace, "elsewhere").get("stableRevision"),
                            timeout=90, what="the first revision (no analysis) to become stable")
        # The next revision would be analysed (a canary), with the namespace's token.
        token = {"bearerTokenSecret": {"name": "prometheus-token", "key": "token"}}
        kubectl_apply(analysed("elsewhere", namespace, "2", prometheus.url, **token), kubeconfig)
        refused = wait_until(
            lambda: (st := md_status(kube, namespace, "elsewhere")).get("message", "").startswith(
                "spec is invalid") and st,
            timeout=60, what="the operator to refuse the provider address",
        )
        events = wait_until(lambda: [e for e in events_of(kube, namespace, "elsewhere")
                                     if e["reason"] == "InvalidSpec"], timeout=30, what="the refusal's Event")
    finally:
        operator.stop()

    ready = next(c for c in refused["conditions"] if c["type"] == "Ready")
    assert (ready["status"], ready["reason"]) == ("False", "InvalidSpec")
    assert f"spec.analysis.provider.prometheus.address: '{prometheus.url}' is not an allowed " \
           f"provider address" in refused["message"]
    assert "analysis.allowedProviderAddresses" in refused["message"]
    assert "spec.analysis.provider.prometheus.address" in events[0]["message"]
    assert refused["stableRevision"] == stable and not refused.get("canaryRevision"), (
        "nothing running was touched, and no canary started"
    )
    assert prometheus.requests == [], "not one request, and so no token, went to that address"


def test_an_event_message_is_cut_to_what_the_api_server_keeps_and_printable(
    sandbox: Sandbox, kube: KubeAPI, namespace: str
) -> None:
    """Events are posted by the kube client, whatever the engine or the shell wrote into them."""
    api_client = kubernetes.config.new_client_from_config(config_file=str(sandbox.kubeconfig))
    try:
        client = KubeClient(api_client, ClusterCache(api_client, USER_AGENT, [], lambda ns, n: None))
        owner = {"metadata": {"name": "song-analyzer", "namespace": namespace, "uid": "0-0"}}
        message = "analysis inconclusive: \x1b[2J\x1b]0;owned\x07\r\n" + "é" * 3000
        asyncio.run(client.emit_event(owner, "Warning", "AnalysisInconclusive", message))
    finally:
        api_client.close()
    [event] = events_of(kube, namespace, "song-analyzer")
    assert event["message"].startswith("analysis inconclusive: [2J]0;owned")
    assert len(event["message"].encode()) <= EVENT_MESSAGE_MAX
    assert clean(event["message"])
