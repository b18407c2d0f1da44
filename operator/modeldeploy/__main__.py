"""`modeldeploy-operator`: run the operator (a thin wrapper around `kopf run`).

Defaults: every namespace (pass `--namespace NS` one or more times to narrow it, as the
chart's namespaced mode does), Kopf's liveness endpoint when MODELDEPLOY_LIVENESS is set
(e.g. http://0.0.0.0:8080/healthz). Other arguments go to `kopf run` unchanged.
"""

from __future__ import annotations

import os
import sys


def kopf_arguments(argv: list[str]) -> list[str]:
    args = ["run", "--module", "modeldeploy.handlers"]
    if not any(a in ("-n", "--namespace", "-A", "--all-namespaces") or a.startswith("--namespace=")
               for a in argv):
        args.append("--all-namespaces")
    liveness = os.environ.get("MODELDEPLOY_LIVENESS")
    if liveness and not any(a.startswith("--liveness") for a in argv):
        args.append(f"--liveness={liveness}")
    return args + argv


def watched_namespaces(argv: list[str]) -> list[str]:
    """The namespaces named by ``--namespace``/``-n`` (empty: every namespace)."""
    names: list[str] = []
    for i, arg in enumerate(argv):
        if arg.startswith("--namespace="):
            names.append(arg.split("=", 1)[1])
        elif arg in ("-n", "--namespace") and i + 1 < len(argv):
            names.append(argv[i + 1])
    return names


def main() -> None:
    # The controller's own watches (modeldeploy.kube.cache) cover the namespaces Kopf is given.
    os.environ["MODELDEPLOY_NAMESPACES"] = ",".join(watched_namespaces(sys.argv[1:]))
    os.execv(sys.executable, [sys.executable, "-m", "kopf", *kopf_arguments(sys.argv[1:])])


if __name__ == "__main__":
    main()
