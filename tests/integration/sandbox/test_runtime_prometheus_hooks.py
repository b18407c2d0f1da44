"""The sandbox's Prometheus takes the operator's own targets and rules without a restart."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from mdsandbox.sandbox import Sandbox
from mdsandbox.testing import wait_until

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        not Path("/usr/bin/prometheus").exists(),
        reason="Debian's prometheus package is not installed (/usr/bin/prometheus): "
        "apt-get install -y prometheus",
    ),
]


def query(sandbox: Sandbox, promql: str) -> list[dict[str, Any]]:
    resp = httpx.get(f"{sandbox.prometheus_url}/api/v1/query", params={"query": promql}, timeout=10)
    resp.raise_for_status()
    result: list[dict[str, Any]] = resp.json()["data"]["result"]
    return result


@pytest.fixture
def operator_target(sandbox: Sandbox) -> Iterator[str]:
    """Point the operator job at the fake upstream's /metrics (any /metrics will do)."""
    address = str(sandbox.fake_upstream_url).removeprefix("http://").removesuffix("/v1")
    sandbox.operator_targets_file.write_text(json.dumps([{"targets": [address]}]))
    yield address
    sandbox.operator_targets_file.write_text("[]\n")


def test_a_target_written_to_operator_json_is_scraped(sandbox: Sandbox, operator_target: str) -> None:
    series = wait_until(
        lambda: query(sandbox, 'up{job="operator"} == 1'), timeout=30, what="the operator job's target"
    )
    assert series[0]["metric"]["instance"] == operator_target


def test_a_rule_file_dropped_in_the_rules_folder_is_loaded_on_reload(sandbox: Sandbox) -> None:
    rule_file = sandbox.rules_dir / "sandbox-test.yaml"
    rule_file.write_text(
        "groups:\n- name: sandbox-test\n  rules:\n"
        "  - record: sandbox_test:pods_up:sum\n    expr: sum(up{job=\"pods\"})\n"
    )
    try:
        assert httpx.post(f"{sandbox.prometheus_url}/-/reload", timeout=30).status_code == 200

        def loaded() -> list[str] | None:
            resp = httpx.get(f"{sandbox.prometheus_url}/api/v1/rules", timeout=10)
            names = [g["name"] for g in resp.json()["data"]["groups"]]
            return names if "sandbox-test" in names else None

        wait_until(loaded, timeout=30, what="the rule group to load")
    finally:
        rule_file.unlink()
        httpx.post(f"{sandbox.prometheus_url}/-/reload", timeout=30)
