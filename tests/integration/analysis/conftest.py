"""Fixtures of the analysis scenarios: the fake upstream's fault switch."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fakeupstream import FakeUpstreamClient
from mdsandbox.sandbox import Sandbox


@pytest.fixture(autouse=True)
def _needs_prometheus(sandbox: Sandbox) -> None:
    if sandbox.prometheus_url is None:
        pytest.skip("analysis needs Prometheus: Debian's prometheus package (hack/setup installs it)")


@pytest.fixture
def upstream(sandbox: Sandbox) -> Iterator[FakeUpstreamClient]:
    """The session's fake upstream, with no faults before and after the test."""
    assert sandbox.fake_upstream_url is not None
    client = FakeUpstreamClient(sandbox.fake_upstream_url)
    client.reset()
    try:
        yield client
    finally:
        client.reset()
        client.close()
