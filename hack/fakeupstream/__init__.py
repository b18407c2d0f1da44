"""fakeupstream: an OpenAI-compatible fake model provider whose faults are set at run time.

``python -m fakeupstream`` serves it (HOST/PORT); :func:`running_fake_upstream` starts one for
a test; :class:`FakeUpstreamClient` sets faults and reads stats. See :mod:`fakeupstream.app`
for the answers it gives and :mod:`fakeupstream.faults` for how faults are scheduled.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fakeupstream.client import FakeUpstreamClient, running_fake_upstream

__all__ = ["FakeUpstreamClient", "running_fake_upstream"]


def __getattr__(name: str) -> Any:
    # The client (httpx, and through it click and rich) loads on first use: the sandbox
    # starts ``python -m fakeupstream`` for every fake-upstream pod, which never needs it.
    if name in __all__:
        from fakeupstream import client

        return getattr(client, name)
    raise AttributeError(f"module 'fakeupstream' has no attribute {name!r}")
