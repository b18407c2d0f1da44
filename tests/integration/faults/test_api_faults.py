"""A rollout through a bad API server completes with the steps of an uninterrupted one.

The sandbox's API server injects one fault per test (hack/mdsandbox/README.md, "Fault
injection") into the operator's requests, from the moment a new template is applied to
the end of its rollout (setWeight 50, a 1 s pause, the promotion and a 1 s bake). The
rules match by user agent: ``modeldeploy-operator`` is the operator's writes and also
its informers' lists and watches (the controller watches on its own); ``kopf`` is
Kopf's watch of CustomResourceDefinitions. The test's reads and kubectl are never
faulted. Watches stay open for minutes, so the rules that must meet lists and watch
opens come with a rule dropping the agent's watches every 2 s.

Every rollout must reach Succeeded with exactly ``REFERENCE_STEPS`` in its history
entry (no step skipped, none applied twice), every rule must have faulted something
(``fault_hits``; a fault that missed proves nothing), and the audit log must show the
faulted requests were the intended ones. None of these faults makes the operator halt:
it retries each failed request with back-off, and a status write that conflicts is
re-read and decided again, with back-off while conflicts last (a hot loop of GET+PUT
is what the conflict case catches). The operator runs with a 5 s deadline per API call
(``MODELDEPLOY_API_CALL_DEADLINE_SECONDS``): a write whose answer trickles for ten
minutes takes effect at once, and only that deadline lets the rollout go on (without it,
the tick waits on the trickle and the rollout stalls at its first step).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from mdsandbox.audit import read_audit
from mdsandbox.sandbox import Sandbox
from mdsandbox.testing import KubeAPI
from operator_process import OperatorProcess
from rollout.scenario import (
    JSON,
    User,
    deploy_first,
    entry_of,
    model_deployment,
    start_rollout,
    template,
    wait_status,
)

pytestmark = pytest.mark.integration

NAME = "faulted"
STEPS: list[JSON] = [{"setWeight": 50}, {"pause": {"duration": "1s"}}]
# What an uninterrupted rollout of STEPS records (the same test with no rule set records it).
REFERENCE_STEPS = ["setWeight 50", "pause 1s", "full 100%", "bake 1s", "baked 1s"]
OPERATOR = "modeldeploy-operator"
KOPF = "kopf"
WRITES = ["create", "update", "patch", "delete"]
# A watch open counts as a read: the operator reads through its watch-fed caches.
READS = ["get", "list", "watch"]
# A faulted rollout waits on back-off and slow answers: more than a clean one needs.
WAIT = 120.0
# The operator's deadline for one API call (MODELDEPLOY_API_CALL_DEADLINE_SECONDS; 60 s by
# default), short so that a trickled answer meets it within the test.
CALL_DEADLINE = "5"


@pytest.fixture
def operator_env() -> dict[str, str]:
    return {"MODELDEPLOY_API_CALL_DEADLINE_SECONDS": CALL_DEADLINE}


def manifest(namespace: str, mark: str) -> JSON:
    return model_deployment(NAME, namespace, template(mark), replicas=2, steps=STEPS, bake_time="1s")


@dataclass(frozen=True)
class Fault:
    """Fault rules set for one rollout (from its start to its end), and what to check."""

    name: str
    rules: Callable[[str], list[JSON]]  # namespace -> rules
    # What the audit log must show: given the requests each rule faulted (in the rules'
    # order) and all the operator's requests while the rules were set.
    check: Callable[[list[list[JSON]], list[JSON]], None] = lambda faulted, requests: None


def operator_rule(**rule: Any) -> JSON:
    return {"userAgent": OPERATOR, **rule}


def dropped_watches(agent: str) -> JSON:
    """Every watch of ``agent`` ended 2 s after it opens, so that its lists and watches
    are opened again while the rollout runs (they stay open for minutes otherwise), and
    a rule set before this one meets them."""
    return {"userAgent": agent, "verbs": ["watch"], "dropWatchAfter": 2}


def _lists_watches_and_writes_faulted(faulted: list[list[JSON]], requests: list[JSON]) -> None:
    verbs = Counter(r["verb"] for r in faulted[0])
    assert verbs["list"] + verbs["watch"] > 0, f"no list or watch faulted: {verbs}"
    assert sum(verbs[v] for v in WRITES) > 0, f"no write faulted: {verbs}"


def _writes_waited_as_asked(faulted: list[list[JSON]], requests: list[JSON]) -> None:
    """A write answered 429 with Retry-After is sent again only once that wait is over."""
    _lists_watches_and_writes_faulted(faulted, requests)
    for throttled in (r for r in faulted[0] if r["verb"] in WRITES):
        same = [r for r in requests if r["ts"] > throttled["ts"] and all(
            r[k] == throttled[k] for k in ("verb", "resource", "subresource", "namespace", "name"))]
        if same:  # a write that became unneeded is not sent again
            waited = same[0]["ts"] - throttled["ts"]
            assert waited >= RETRY_AFTER - AUDIT_SLACK, (
                f"{throttled['verb']} {throttled['requestURI']} sent again {waited:.2f}s after a "
                f"429 asking for {RETRY_AFTER}s")


def _reads_slowed(faulted: list[list[JSON]], requests: list[JSON]) -> None:
    # The trickled writes are not in the audit log: it stamps a request when its answer
    # is complete, ten minutes later (fault_hits counts them).
    assert faulted[1], "no read answered late"


def _relisted_after_each_gone(faulted: list[list[JSON]], requests: list[JSON]) -> None:
    """A watch answered 410 cannot be resumed: its informer must list again (the server
    has compacted the versions in between away, so only a list sees what changed)."""
    for gone in faulted[0]:
        assert any(r["verb"] == "list" and r["resource"] == gone["resource"]
                   and r["ts"] >= gone["ts"] for r in requests), (
            f"no list of {gone['resource']} after its watch was answered 410 Gone")


RETRY_AFTER = 1
# The audit log stamps each request when its answer is written: a little early or late.
AUDIT_SLACK = 0.05

# A conflict is retried with back-off (0.5 s, doubling), and at once on a watch event: a
# few dozen writes in 10 s at most; a hot loop re-reads and rewrites many times a second.
MAX_CONFLICTED_WRITES = 30


def _conflicts_backed_off(faulted: list[list[JSON]], requests: list[JSON]) -> None:
    conflicted = len(faulted[0])
    assert conflicted <= MAX_CONFLICTED_WRITES, (
        f"{conflicted} status writes met the conflict in 10 s: retried without back-off")


FAULTS = [
    Fault(
        "500 on 30% of the operator's and Kopf's requests",
        lambda ns: [operator_rule(status=500, share=0.3, seed=1), dropped_watches(OPERATOR),
                    {"userAgent": KOPF, "status": 500, "share": 0.3, "seed": 1},
                    dropped_watches(KOPF)],
        _lists_watches_and_writes_faulted,
    ),
    Fault(
        "429 with Retry-After 1 s on 30% of the operator's requests",
        lambda ns: [operator_rule(status=429, retryAfter=RETRY_AFTER, share=0.3, seed=2),
                    dropped_watches(OPERATOR)],
        _writes_waited_as_asked,
    ),
    Fault(
        "a fifth of the operator's writes trickled for 10 minutes and half its reads answered "
        "2 s late",
        # A trickled write takes effect at once and its answer comes a few bytes at a time,
        # so no per-read timeout fires: only the call deadline ends the wait, and the write
        # is tried again on a cluster where it already happened.
        lambda ns: [operator_rule(verbs=WRITES, delay=600, trickle=True, share=0.2, seed=3),
                    operator_rule(verbs=READS, delay=2, share=0.5, seed=4),
                    dropped_watches(OPERATOR)],
        _reads_slowed,
    ),
    Fault(
        "the operator's watches dropped every 2 s and their first three resumes answered "
        "410 Gone",
        # The 410 rule comes first: a resume it does not fail is dropped 2 s later. A count,
        # not a share: a quick rollout resumes only a few times, and a seeded share of half
        # of six resumes once failed none.
        lambda ns: [operator_rule(verbs=["watch"], goneOnResume=True, count=3),
                    dropped_watches(OPERATOR)],
        _relisted_after_each_gone,
    ),
    Fault(
        "every status write conflicts (409) for 10 s",
        lambda ns: [operator_rule(verbs=["update", "patch"], resources=["modeldeployments/status"],
                                  namespace=ns, status=409, seconds=10)],
        _conflicts_backed_off,
    ),
]


@pytest.mark.parametrize("fault", FAULTS, ids=lambda fault: fault.name)
def test_a_rollout_through_api_faults_completes_with_the_steps_of_an_uninterrupted_one(
    sandbox: Sandbox, kube: KubeAPI, namespace: str, operator: OperatorProcess, fault: Fault
) -> None:
    user = User(sandbox, namespace)
    deploy_first(user, kube, manifest(namespace, "v0"))

    audit_log = sandbox.workdir / "audit.log"
    began = time.time()
    fault_ids = [kube.inject_fault(**rule) for rule in fault.rules(namespace)]
    try:
        revision = start_rollout(user, kube, manifest(namespace, "v1"))
        status = wait_status(
            kube, namespace, NAME,
            lambda s: s.get("phase") == "Succeeded" and s.get("stableRevision") == revision,
            f"revision {revision} to be promoted", WAIT,
        )
        hits = {fault_id: kube.fault_hits(fault_id) for fault_id in fault_ids}
    finally:
        kube.clear_faults()

    entry = entry_of(status, revision)
    assert (entry["outcome"], entry["steps"]) == ("Promoted", REFERENCE_STEPS), entry
    assert all(hits.values()), f"a rule faulted nothing, so the test proved nothing: {hits}"
    requests = read_audit(audit_log, since=began, user_agent_prefix=f"{OPERATOR}/")
    fault.check([[r for r in requests if r.get("fault") == fault_id] for fault_id in fault_ids],
                requests)
