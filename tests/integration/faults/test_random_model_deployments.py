"""1,000 random ModelDeployments, generated from the CRD schema, against a running operator.

Each generated object (``md_schema_fuzz``: seeded, so a failure replays exactly) is
POSTed to the sandbox's API server, as ``kubectl create`` would, while the operator
runs. Every one ends in exactly one of three ways, and the test checks which:

- refused by the API server: 422 whose message names the broken field;
- stored but breaking a rule only the operator knows: status condition Ready False,
  reason InvalidSpec, for this generation, naming the field;
- valid: reconciled (status.observedGeneration equals metadata.generation, a phase set).

Throughout, the operator process must not crash or restart (``starts == 1``, still
running) and its log must hold no traceback: a spec that makes a tick raise leaves the
object un-reconciled and retried forever, which is the bug this test hunts.

Cost: templates run an image the sandbox cannot pull and almost all ask for 0 replicas,
so the objects cost API requests only. The 1,000 are split into shards of 250 (seeds
0-3), one per test, so xdist spreads them over its workers and their sandboxes.
Measured on the 2-core machine with other agents' load (load average 7-18): one shard
alone 18-25 s (creates, 4 at a time, about 8 s; settling about 10 s); the four at once
under ``-n 4`` 62-76 s each, so 1,000 fit the tier's budget of about 90 s of CPU.
"""

from __future__ import annotations

import contextlib
import json
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from md_schema_fuzz import Case, generate
from mdsandbox.testing import KubeAPI, wait_until
from modeldeploy import spec as s
from operator_process import OperatorProcess

pytestmark = pytest.mark.integration

JSON = dict[str, Any]
SHARDS = 4
PER_SHARD = 250
COLLECTION = f"/apis/{s.GROUP}/{s.VERSION}/namespaces/{{ns}}/{s.PLURAL}"
# Concurrent creates: the sandbox's CEL validation makes one create cost tens of ms.
POSTERS = 4
# The operator takes a few requests per object; 250 of them on a loaded 2-core machine.
SETTLE_TIMEOUT = 120.0


def tracebacks(log: str) -> Counter[str]:
    """Each distinct traceback in ``log``, as its innermost frame and exception line."""
    found: Counter[str] = Counter()
    for block in log.split("Traceback (most recent call last):")[1:]:
        lines = [line for line in block.splitlines() if line.strip()]
        frames = [line.strip() for line in lines if line.strip().startswith("File ")]
        exception = next((line for line in lines if not line.startswith(" ")), "?")
        found[f"{frames[-1] if frames else '?'}: {exception}"] += 1
    return found


def ready_condition(body: JSON) -> JSON:
    conditions = (body.get("status") or {}).get("conditions") or []
    return next((c for c in conditions if c.get("type") == "Ready"), {})


def observed(body: JSON) -> bool:
    status = body.get("status") or {}
    return bool(status.get("observedGeneration") == body["metadata"]["generation"])


def verdict(case: Case, body: JSON) -> str | None:
    """What is wrong with how the operator left ``body`` (None: as it should be)."""
    if not observed(body):
        return "not observed (status.observedGeneration != metadata.generation)"
    ready = ready_condition(body)
    invalid = ready.get("status") == "False" and ready.get("reason") == "InvalidSpec"
    if case.outcome == "operator-invalid":
        if not invalid:
            return f"not explained as InvalidSpec (Ready: {ready})"
        if case.field not in ready.get("message", ""):
            return f"InvalidSpec does not name {case.field}: {ready.get('message', '')[:300]}"
        return None
    if invalid:
        return f"valid, but reported InvalidSpec: {ready.get('message', '')[:300]}"
    if not (body.get("status") or {}).get("phase"):
        return "observed, but no phase set"
    return None


@pytest.mark.parametrize("shard", range(SHARDS))
def test_random_model_deployments_are_refused_explained_or_reconciled(
    kube: KubeAPI, namespace: str, operator: OperatorProcess, shard: int
) -> None:
    cases = generate(seed=shard, count=PER_SHARD, namespace=namespace)
    kinds = {outcome: sum(c.outcome == outcome for c in cases)
             for outcome in ("valid", "operator-invalid", "refused")}
    # The generator must keep exercising every path, not drift into one kind.
    assert all(count >= PER_SHARD // 8 for count in kinds.values()), kinds
    assert kinds["valid"] + kinds["operator-invalid"] >= 0.3 * PER_SHARD, kinds

    collection = COLLECTION.format(ns=namespace)
    wrong_answers: list[str] = []
    stored: dict[str, Case] = {}
    with ThreadPoolExecutor(POSTERS) as pool:
        responses = list(pool.map(lambda case: kube.http.post(collection, json=case.body), cases))
    for case, response in zip(cases, responses, strict=True):
        if case.outcome == "refused":
            message = response.json().get("message", "") if response.status_code == 422 else ""
            if response.status_code != 422 or case.field not in message:
                wrong_answers.append(
                    f"{case.name} ({case.what} at {case.field}): {response.status_code} "
                    f"{response.text[:300]}")
        elif response.status_code != 201:
            wrong_answers.append(f"{case.name} ({case.outcome}, {case.what}): "
                                 f"{response.status_code} {response.text[:300]}")
        else:
            stored[case.name] = case
    assert not wrong_answers, "the API server answered unexpectedly:\n" + "\n".join(wrong_answers)

    def unsettled() -> dict[str, str]:
        items = kube.http.get(collection).raise_for_status().json()["items"]
        by_name = {item["metadata"]["name"]: item for item in items}
        problems = {name: verdict(case, by_name[name]) if name in by_name else "gone"
                    for name, case in stored.items()}
        return {name: problem for name, problem in problems.items() if problem}

    last: list[dict[str, str]] = [{}]

    def settled() -> bool:
        last[0] = unsettled()
        return not last[0] or operator.process is None or operator.process.poll() is not None

    with contextlib.suppress(AssertionError):  # reported below, with each object's problem
        wait_until(settled, timeout=SETTLE_TIMEOUT, interval=2.0,
                   what="every stored ModelDeployment explained or reconciled")
    assert operator.process is not None and operator.process.poll() is None, (
        f"the operator exited:\n{operator.log_tail()}")
    assert operator.starts == 1
    crashes = tracebacks(operator.log_path.read_text(errors="replace"))
    assert not crashes, "the operator's log holds tracebacks:\n" + "\n".join(
        f"{count}x {origin}" for origin, count in crashes.most_common())
    assert not last[0], f"{len(last[0])} of {len(stored)} stored objects went wrong:\n" + "\n".join(
        f"{name} ({stored[name].outcome}, {stored[name].what}): {problem}\n  spec: "
        f"{json.dumps(stored[name].body['spec'])[:400]}"
        for name, problem in sorted(last[0].items())[:20])
