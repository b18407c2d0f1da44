"""The local sandbox: a Kubernetes stand-in that runs model services as local processes.

``mdsandbox.Sandbox`` starts and stops one from Python; ``hack/sandbox`` from a shell.
Parts: ``apiserver`` (the API server), ``controllers`` (Deployments, ReplicaSets),
``kubelet`` (pods as processes), ``dataplane`` (Service and HTTPRoute ports),
``prometheus`` (the real Prometheus, file_sd), ``supervisor`` (runs them all).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mdsandbox.sandbox import Sandbox, SandboxError

__all__ = ["Sandbox", "SandboxError"]


def __getattr__(name: str) -> Any:
    # Lazy, so `import mdsandbox.apiserver` stays free of the runtime's imports.
    if name in __all__:
        from mdsandbox import sandbox

        return getattr(sandbox, name)
    raise AttributeError(f"module 'mdsandbox' has no attribute {name!r}")
