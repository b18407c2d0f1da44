"""A kubeconfig for the sandbox's API server.

Plain http with a static bearer token user: kubectl, the ``kubernetes`` Python client
and Kopf all accept it. The server checks no credentials; the token only gives clients
something to send (Kopf and kubectl both insist on a user entry).
"""

from __future__ import annotations

from pathlib import Path

import yaml

CONTEXT = "mdsandbox"


def write_kubeconfig(path: Path, server_url: str, namespace: str = "default") -> None:
    """Write a kubeconfig at ``path`` whose current context talks to ``server_url``."""
    if not server_url.startswith(("http://", "https://")):
        raise ValueError(f"server_url must be an http(s) URL like http://127.0.0.1:6443, "
                         f"not {server_url!r}")
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": CONTEXT, "cluster": {"server": server_url}}],
        "users": [{"name": CONTEXT, "user": {"token": "mdsandbox-token"}}],
        "contexts": [{"name": CONTEXT, "context": {"cluster": CONTEXT, "user": CONTEXT,
                                                   "namespace": namespace}}],
        "current-context": CONTEXT,
        "preferences": {},
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    path.chmod(0o600)
