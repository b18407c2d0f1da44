"""The fault-injection tier is CI's second tier: `hack/test-faults` (MODELDEPLOY_FAULT_TIER=1).

`.ci/run` runs `hack/test`, then `hack/test-faults`. The tier adds about four minutes on two
cores (its 15 tests, about six minutes of test time, in two workers); `hack/test` stays
under 20 minutes without it. Elsewhere the tier is collected and skipped, saying how to run
it.
"""

from __future__ import annotations

import os

import pytest

TIER_ENV = "MODELDEPLOY_FAULT_TIER"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if os.environ.get(TIER_ENV) == "1":
        return
    skip = pytest.mark.skip(
        reason=f"the fault-injection tier runs with hack/test-faults ({TIER_ENV}=1)")
    for item in items:
        if item.nodeid.startswith("tests/integration/faults/"):
            item.add_marker(skip)
