"""Shared fixtures for the model services' tests: one fake upstream per test session."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fakeupstream import FakeUpstreamClient, running_fake_upstream


@pytest.fixture(scope="session")
def fake_upstream_url() -> Iterator[str]:
    """Base URL (ending in /v1) of a fake upstream process shared by the session."""
    with running_fake_upstream() as url:
        yield url


@pytest.fixture
def fake_upstream(fake_upstream_url: str) -> Iterator[FakeUpstreamClient]:
    """A client for the shared fake upstream, with no faults before and after the test."""
    with FakeUpstreamClient(fake_upstream_url) as client:
        client.reset()
        yield client
        client.reset()
