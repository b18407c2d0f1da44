"""The local sandbox's Kubernetes API server.

An in-memory stand-in for kube-apiserver, good enough that Kopf, the ``kubernetes``
client and kubectl work against it unchanged: discovery, CRUD, list/watch with
resourceVersions and bookmarks, selectors, the patch kinds, status and scale
subresources, finalizers, garbage collection, CRDs with schema and CEL validation.
The Gateway API HTTPRoute and Gateway CRDs (trimmed, ``httproute-crd.yaml`` and
``gateway-crd.yaml``) are registered at start.

    server = APIServer(host="127.0.0.1", port=0, audit_log=None)
    server.start(); print(server.url); server.stop()
    write_kubeconfig(Path("kubeconfig"), server.url)

``python -m mdsandbox.apiserver --port 6443`` runs one in the foreground.
"""

from .errors import Cause
from .kubeconfig import write_kubeconfig
from .server import APIServer
from .validation import validate, validate_manifest

__all__ = ["APIServer", "Cause", "validate", "validate_manifest", "write_kubeconfig"]
