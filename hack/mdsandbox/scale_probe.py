"""How the sandbox copes with a benchmark-sized cluster: ``python -m mdsandbox.scale_probe``.

Starts a sandbox (or uses ``--attach DIR``), then, through the real API server:
creates ``--deployments`` Deployments of ``--replicas`` pause pods each, labelled
``modeldeploy.io/name=<name>``, each with a Service, in the namespace ``scale``, plus
``--unrelated`` Deployments of one pause pod in ``unrelated`` (no modeldeploy label);
then prints, one ``key=value`` a line:

- ``create_seconds``: time to send every create;
- ``ready_seconds``: from the first create until every pod is Ready;
- ``rest_cpu_percent_supervisor`` / ``_apiserver``: each process's CPU (user+system,
  % of one core) over ``--rest-seconds`` once everything is ready;
- ``list_*_ms``: a LIST of pods with the existence selector ``modeldeploy.io/name``,
  with one Deployment's equality selector, and of all pods;
- ``watch_event_ms``: from scaling one Deployment to the first event on a pod watch
  selecting that Deployment's pods; ``watch_foreign_events``: events that same watch
  got from a change to another Deployment (0: the server filters).

``MDSANDBOX_PROFILE=<dir>`` (set for the sandbox's supervisor, see supervisor.py)
writes cProfile data of the supervisor and the API server there when the sandbox stops.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx

from mdsandbox.sandbox import Sandbox, stop_processes
from mdsandbox.testing import is_ready, wait_until

JSON = dict[str, Any]
LABEL = "modeldeploy.io/name"
PAUSE = "registry.k8s.io/pause:3.9"


def pause_deployment(name: str, namespace: str, replicas: int, labels: dict[str, str]) -> JSON:
    pod_labels = {"app": name, **labels}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": pod_labels},
                "spec": {"containers": [{"name": "main", "image": PAUSE}]},
            },
        },
    }


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def timed_ms(call: Any) -> tuple[float, Any]:
    began = time.perf_counter()
    result = call()
    return (time.perf_counter() - began) * 1000, result


def probe(api: str, pids: dict[str, int], args: argparse.Namespace) -> dict[str, Any]:
    results: dict[str, Any] = {}
    http = httpx.Client(base_url=api, timeout=120, limits=httpx.Limits(max_connections=16))
    for ns in ("scale", "unrelated"):
        http.post("/api/v1/namespaces", json={"metadata": {"name": ns}})
    names = [f"md-{i:04d}" for i in range(args.deployments)]

    def create(name: str) -> None:
        labels = {LABEL: name}
        http.post("/apis/apps/v1/namespaces/scale/deployments",
                  json=pause_deployment(name, "scale", args.replicas, labels)).raise_for_status()
        http.post("/api/v1/namespaces/scale/services", json={
            "metadata": {"name": name, "labels": labels},
            "spec": {"selector": {"app": name}, "ports": [{"port": 80, "targetPort": 8080}]},
        }).raise_for_status()

    def create_unrelated(index: int) -> None:
        http.post("/apis/apps/v1/namespaces/unrelated/deployments",
                  json=pause_deployment(f"other-{index:04d}", "unrelated", 1, {})
                  ).raise_for_status()

    began = time.monotonic()
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(create, names))
        list(pool.map(create_unrelated, range(args.unrelated)))
    results["create_seconds"] = round(time.monotonic() - began, 1)
    want = args.deployments * args.replicas + args.unrelated

    def all_ready() -> int | None:
        # The Deployments' readyReplicas: a poll much lighter than listing every pod.
        items = http.get("/apis/apps/v1/deployments").json()["items"]
        ready = sum(int((d.get("status") or {}).get("readyReplicas", 0)) for d in items)
        return ready if ready >= want else None

    try:
        wait_until(all_ready, timeout=args.timeout, what=f"{want} ready pods", interval=2.0)
        results["ready_seconds"] = round(time.monotonic() - began, 1)
        pods = http.get("/api/v1/pods").json()["items"]
        results["pods_ready"] = sum(1 for p in pods if is_ready(p))
    except AssertionError as err:
        results["ready_seconds"] = f"not all ready: {str(err)[-60:]}"
    results["pods"] = want

    time.sleep(5)  # let the last status writes settle before measuring rest
    cpu_before, wall_before = {k: cpu_seconds(p) for k, p in pids.items()}, time.monotonic()
    time.sleep(args.rest_seconds)
    wall = time.monotonic() - wall_before
    for key, pid in pids.items():
        used = cpu_seconds(pid) - cpu_before[key]
        results[f"rest_cpu_percent_{key}"] = round(100 * used / wall, 1)

    ms, listing = timed_ms(lambda: http.get("/api/v1/pods", params={"labelSelector": LABEL}))
    results["list_exists_selector_ms"] = round(ms)
    results["list_exists_selector_items"] = len(listing.json()["items"])
    ms, listing = timed_ms(lambda: http.get(
        "/api/v1/namespaces/scale/pods", params={"labelSelector": f"{LABEL}={names[0]}"}))
    results["list_equality_selector_ms"] = round(ms)
    results["list_equality_selector_items"] = len(listing.json()["items"])
    ms, listing = timed_ms(lambda: http.get("/api/v1/pods"))
    results["list_all_pods_ms"] = round(ms)

    # A watch selecting one Deployment's pods: an event for it, none for another one.
    rv = listing.json()["metadata"]["resourceVersion"]
    events: list[tuple[float, JSON]] = []

    def watch() -> None:
        with httpx.stream("GET", f"{api}/api/v1/namespaces/scale/pods", params={
            "watch": "true", "resourceVersion": rv, "labelSelector": f"{LABEL}={names[0]}",
            "timeoutSeconds": "20",
        }, timeout=60) as resp:
            for line in resp.iter_lines():
                if line:
                    events.append((time.monotonic(), json.loads(line)))

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    other = names[-1]
    http.patch(f"/apis/apps/v1/namespaces/scale/deployments/{other}",
               json={"spec": {"replicas": args.replicas + 1}},
               headers={"Content-Type": "application/merge-patch+json"}).raise_for_status()
    wait_until(lambda: len(http.get("/api/v1/namespaces/scale/pods",
                                    params={"labelSelector": f"{LABEL}={other}"}).json()["items"])
               > args.replicas, timeout=60, what="the other Deployment's new pod")
    results["watch_foreign_events"] = len(events)
    scaled = time.monotonic()
    http.patch(f"/apis/apps/v1/namespaces/scale/deployments/{names[0]}",
               json={"spec": {"replicas": args.replicas + 1}},
               headers={"Content-Type": "application/merge-patch+json"}).raise_for_status()
    wait_until(lambda: len(events) > results["watch_foreign_events"], timeout=60,
               what="a watch event for the scaled Deployment")
    results["watch_event_ms"] = round((events[-1][0] - scaled) * 1000)
    for key, pid in pids.items():
        rss = Path(f"/proc/{pid}/status").read_text().split("VmRSS:")[1].split()[0]
        results[f"rss_mb_{key}"] = round(int(rss) / 1024)
    http.close()
    return results


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m mdsandbox.scale_probe")
    parser.add_argument("--deployments", type=int, default=1000)
    parser.add_argument("--replicas", type=int, default=2)
    parser.add_argument("--unrelated", type=int, default=0)
    parser.add_argument("--rest-seconds", type=float, default=20.0)
    parser.add_argument("--timeout", type=float, default=1200.0)
    parser.add_argument("--no-prometheus", action="store_true")
    parser.add_argument("--attach", type=Path, help="use the sandbox running in this folder")
    args = parser.parse_args()
    if args.attach:
        sandbox = Sandbox.attach(args.attach)
        owned = None
    else:
        owned = Path(tempfile.mkdtemp(prefix="scale-probe-"))
        sandbox = Sandbox(owned, prometheus=not args.no_prometheus).start()
    try:
        assert sandbox.state is not None
        pids = {"supervisor": sandbox.state.supervisor_pid}
        if "apiserver" in sandbox.state.pids:
            pids["apiserver"] = sandbox.state.pids["apiserver"]
        results = probe(sandbox.api_url, pids, args)
    finally:
        if owned is not None:
            stop_processes(owned)
    for key, value in results.items():
        print(f"{key}={value}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
