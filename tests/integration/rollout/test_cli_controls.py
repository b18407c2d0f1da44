"""`modeldeploy pause`, `resume`, `promote --full`, `history`, `list` and `status --watch`, as a
user runs them against a rollout held in a long timed pause; none of them touches the spec."""

from __future__ import annotations

import os
import subprocess
import threading

import pytest
from mdsandbox.sandbox import Sandbox
from mdsandbox.testing import KubeAPI, wait_until
from operator_process import BIN, OperatorProcess
from scenario import (
    JSON,
    User,
    deploy_first,
    deployment,
    md_get,
    model_deployment,
    start_rollout,
    template,
    wait_phase,
    wait_status,
)

pytestmark = pytest.mark.integration

NAME = "controls"
# An hour-long pause: nothing but a control moves this rollout on.
STEPS: list[JSON] = [
    {"setWeight": 25}, {"pause": {"duration": "1h"}}, {"setWeight": 50}, {"pause": {}},
    {"setWeight": 75},
]


def manifest(namespace: str, mark: str) -> JSON:
    return model_deployment(NAME, namespace, template(mark), replicas=4, steps=STEPS,
                            bake_time="0s")


def test_pause_resume_and_promote_full_steer_a_rollout_without_touching_the_spec(
    sandbox: Sandbox, kube: KubeAPI, namespace: str, operator: OperatorProcess
) -> None:
    user = User(sandbox, namespace)
    stable = deploy_first(user, kube, manifest(namespace, "v1"))
    canary = start_rollout(user, kube, manifest(namespace, "v2"))
    wait_phase(kube, namespace, NAME, "Paused", step=1)
    generation = md_get(kube, namespace, NAME)["metadata"]["generation"]

    assert "pause requested" in user.modeldeploy("pause", NAME)
    held = wait_status(kube, namespace, NAME, lambda s: s.get("pauseCause") == "user",
                       "the user's pause to hold the rollout")
    assert held["phase"] == "Paused" and held["currentStep"] == 1
    assert "paused by" in held["pauseReason"] and "`modeldeploy resume`" in held["pauseReason"]
    assert "control" not in held, "the request is consumed and cleared"

    user.modeldeploy("resume", NAME)
    resumed = wait_status(kube, namespace, NAME, lambda s: "pauseCause" not in s,
                          "resume to release the hold")
    assert resumed["phase"] == "Paused" and resumed["currentStep"] == 1, "back in the timed pause"

    user.modeldeploy("promote", "--full", NAME)
    done = wait_status(
        kube, namespace, NAME,
        lambda s: s.get("phase") == "Succeeded" and s.get("stableRevision") == canary,
        "promote --full to finish the rollout past every remaining step",
    )
    assert done["history"][0]["outcome"] == "Promoted"
    assert deployment(kube, namespace, NAME, canary)["spec"]["replicas"] == 4
    wait_until(lambda: deployment(kube, namespace, NAME, stable)["spec"]["replicas"] == 0
               or None, timeout=30, what="the old revision scaled to zero")
    assert md_get(kube, namespace, NAME)["metadata"]["generation"] == generation, (
        "controls are written to the status subresource: the spec never changed"
    )

    history = user.modeldeploy("history", NAME)
    assert canary in history and stable in history and "Promoted" in history
    listing = user.modeldeploy("list")
    assert NAME in listing and "Succeeded" in listing


def test_status_watch_draws_the_status_until_interrupted(
    sandbox: Sandbox, kube: KubeAPI, namespace: str, operator: OperatorProcess
) -> None:
    user = User(sandbox, namespace)
    stable = deploy_first(user, kube, manifest(namespace, "v1"))
    watcher = subprocess.Popen(
        [str(BIN / "modeldeploy"), "-n", namespace, "status", "--watch", NAME],
        stdout=subprocess.PIPE, text=True, env={**os.environ, "KUBECONFIG": str(sandbox.kubeconfig)},
    )
    output: list[str] = []
    reader = threading.Thread(target=lambda: output.extend(iter(watcher.stdout.readline, "")),  # type: ignore[union-attr]
                              daemon=True)
    reader.start()
    try:
        wait_until(lambda: ("\033[2J" in "".join(output) and stable in "".join(output)) or None,
                   timeout=30, what="the first frame of `status --watch`")
        assert watcher.poll() is None, "--watch keeps redrawing until interrupted"
    finally:
        watcher.terminate()
        watcher.wait(timeout=10)
    assert "Succeeded" in "".join(output)
