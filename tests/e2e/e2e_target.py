"""Which cluster the e2e tier runs against, or why it cannot run: decided at collection, from the
environment only (no cluster is created here), so that every scenario is skipped with one reason
that says what to install or run.

Two targets, in this order:

1. ``KUBECONFIG``: any cluster it points at (hack/e2e-on-sandbox points it at the local sandbox).
2. kind, through pytest-kind: the cluster named ``KIND_CLUSTER`` (default ``modeldeploy``, the
   one hack/kind-up.sh creates), reached with an INSTALLED ``kind`` (``KIND_BIN``, else ``kind``
   on ``PATH``) and ``kubectl`` (``KUBECTL_BIN``, else ``kubectl`` on ``PATH``). Their paths are
   handed to pytest-kind, which would otherwise download kind v0.17 and kubectl at run time;
   ``E2E_KIND_DOWNLOAD=1`` lets it download whichever of the two is not installed.
   ``E2E_KIND_UP=1`` runs hack/kind-up.sh on the cluster before the scenarios (rebuilding and
   loading the images, upgrading the chart), after pytest-kind created it if it did not exist.

Only the standard library here, so that a unit test can drive it with a fake ``PATH``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

DEFAULT_CLUSTER = "modeldeploy"
SETUP = "see README.md, the e2e paragraph of 'Installing on a cluster'"
# What to install, by what is missing.
INSTALL = {
    "Docker": "install Docker (https://docs.docker.com/engine/install/)",
    "kind": (
        "install kind (https://kind.sigs.k8s.io/docs/user/quick-start/#installation) on PATH or "
        "point KIND_BIN at it (E2E_KIND_DOWNLOAD=1 lets pytest-kind download kind v0.17.0)"
    ),
}


@dataclass(frozen=True)
class KindTarget:
    """A kind cluster for pytest-kind's ``kind_cluster`` fixture, with every path it needs."""

    name: str
    kind_bin: Path
    kubectl_bin: Path | None  # None: kubectl is not installed; the tier itself never runs it
    kubeconfig: Path  # filled from `kind get kubeconfig` when the cluster exists
    exists: bool  # made before this run (by hack/kind-up.sh): never deleted by it
    kind_up: bool  # E2E_KIND_UP=1: run hack/kind-up.sh on it first


Target = Path | KindTarget  # a kubeconfig, or a kind cluster


def _truthy(environ: Mapping[str, str], name: str) -> bool:
    return environ.get(name, "").strip().lower() in {"1", "true", "yes"}


def _executable(
    environ: Mapping[str, str], tool: str, variable: str, option: str, given: str | None
) -> tuple[Path | None, str]:
    """The tool's path: ``given`` (pytest-kind's ``option``), else ``$variable``, else ``PATH``."""
    explicit, source = (given, option) if given else (environ.get(variable), variable)
    if explicit:
        path = Path(explicit)
        if path.is_file() and os.access(path, os.X_OK):
            return path, ""
        return None, f"{source}={explicit} is not an executable file: point it at the {tool} binary"
    found = shutil.which(tool, path=environ.get("PATH", ""))
    return (Path(found) if found else None), ""


def _run(environ: Mapping[str, str], *args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(a) for a in args], capture_output=True, text=True, check=False, timeout=60,
        env=dict(environ),
    )


def find_target(
    environ: Mapping[str, str],
    workdir: Path,
    *,
    cluster_name: str | None = None,
    kind_bin: str | None = None,
    kubectl_bin: str | None = None,
    kubeconfig: str | None = None,
) -> tuple[Target | None, str]:
    """The e2e target, or None and why there is none.

    The keyword arguments are pytest-kind's options as given on the command line
    (``--cluster-name``, ``--kind-bin``, ``--kind-kubectl-bin``, ``--kubeconfig``); they win over
    the environment. ``workdir`` receives the kubeconfig when none is given.
    """
    configured = environ.get("KUBECONFIG")
    if configured:
        path = Path(configured.split(os.pathsep)[0])
        if path.is_file():
            return path, ""
        return None, f"KUBECONFIG={configured} does not exist ({SETUP})"

    download = _truthy(environ, "E2E_KIND_DOWNLOAD")
    kind, kind_problem = _executable(environ, "kind", "KIND_BIN", "--kind-bin", kind_bin)
    if kind_problem:
        return None, kind_problem
    docker = shutil.which("docker", path=environ.get("PATH", ""))
    missing = [tool for tool, found in (("Docker", docker), ("kind", kind or download)) if not found]
    if missing:
        return None, (
            f"no KUBECONFIG, and no {' and no '.join(missing)} here: "
            f"{'; '.join(INSTALL[tool] for tool in missing)}; then run hack/kind-up.sh ({SETUP})"
        )
    if docker is None or _run(environ, docker, "info").returncode != 0:
        return None, (
            "no KUBECONFIG, and the Docker daemon is not reachable (`docker info` fails): start "
            f"Docker (kind runs its nodes as containers), then run hack/kind-up.sh ({SETUP})"
        )
    kubectl, kubectl_problem = _executable(
        environ, "kubectl", "KUBECTL_BIN", "--kind-kubectl-bin", kubectl_bin
    )
    if kubectl_problem:
        return None, kubectl_problem

    name = cluster_name or environ.get("KIND_CLUSTER") or DEFAULT_CLUSTER
    if kind is None or (kubectl is None and download):
        # Asked for: pytest-kind's own download, into .pytest-kind/<name>/ (kind v0.17.0).
        from pytest_kind import KindCluster

        fetcher = KindCluster(name)
        if kind is None:
            fetcher.ensure_kind()
            kind = fetcher.kind_path.resolve()
        if kubectl is None:
            fetcher.ensure_kubectl()
            kubectl = fetcher.kubectl_path.resolve()

    listed = _run(environ, kind, "get", "clusters")
    if listed.returncode != 0:
        return None, f"`{kind} get clusters` failed: {listed.stderr.strip()}"
    exists = name in listed.stdout.split()
    kind_up = _truthy(environ, "E2E_KIND_UP")
    if not exists and not kind_up:
        return None, (
            f"no KUBECONFIG and no kind cluster {name!r} (`{kind} get clusters`): run "
            "hack/kind-up.sh, or set E2E_KIND_UP=1 to have pytest-kind create it and the tier run "
            f"hack/kind-up.sh on it ({SETUP})"
        )
    config = Path(kubeconfig) if kubeconfig else workdir / "kubeconfig"
    if exists:
        fetched = _run(environ, kind, "get", "kubeconfig", "--name", name)
        if fetched.returncode != 0:
            return None, f"`{kind} get kubeconfig --name {name}` failed: {fetched.stderr.strip()}"
        config.write_text(fetched.stdout)
        config.chmod(0o600)
    return KindTarget(name, kind, kubectl, config, exists, kind_up), ""
