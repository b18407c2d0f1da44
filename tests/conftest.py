"""How pytest-xdist shares the suite among workers (hack/test runs several).

Each test is its own unit of work, handed out one or two at a time as workers free up,
except the modules in ``ONE_WORKER_MODULES``, which go to one worker whole: the RBAC
module's fixture plays minutes of scenarios that every test of the module reads (run
once, not once per worker), and the golden replay's tests must run in order against one
server (later recordings use objects the first ones made). (xdist's own ``--dist
loadgroup`` would do this with a mark, but it renames test ids in a way pytest 9 no
longer honours.)
"""

from __future__ import annotations

from typing import Any

import pytest

ONE_WORKER_MODULES = frozenset({
    "tests/integration/chart/test_rbac_matches_usage.py",
    "tests/integration/sandbox/test_apiserver_golden.py",
})


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    if config.getvalue("dist") != "load":
        return None  # an explicit --dist choice wins
    from xdist.scheduler import LoadScopeScheduling

    class TestOrModuleScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            module = nodeid.split("::", 1)[0]
            return module if module in ONE_WORKER_MODULES else nodeid

    return TestOrModuleScheduling(config, log)
