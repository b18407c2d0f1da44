"""The sandbox kubelet's cAdvisor series: limits read as Kubernetes reads them, memory
as the process tree holds it, and the text Prometheus parses with cAdvisor's labels."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from mdsandbox.cadvisor import (
    MEMORY_LIMIT,
    WORKING_SET,
    ContainerMemory,
    exposition,
    memory_limit_bytes,
    parse_quantity,
    process_tree_rss_bytes,
)
from prometheus_client.parser import text_string_to_metric_families

MiB = 2**20


@pytest.mark.parametrize(
    ("quantity", "expected"),
    [
        ("64Mi", 64 * MiB), ("1Gi", 2**30), ("0.5Gi", 2**29), ("2Ki", 2048), ("500M", 500 * 10**6),
        ("1G", 10**9), ("129e6", 129 * 10**6), ("128974848", 128974848), (256, 256),
        ("1500m", 2), ("1E", 10**18),
    ],
    ids=["binary mebibytes", "binary gibibytes", "a fraction of a binary unit", "binary kibibytes",
         "decimal megabytes", "decimal gigabytes", "a decimal exponent", "plain bytes",
         "a number, as YAML gives it", "millibytes round up to a whole byte",
         "E alone is exa, not an exponent"],
)
def test_a_memory_quantity_is_read_in_bytes_as_kubernetes_reads_it(
    quantity: str | int, expected: int
) -> None:
    assert parse_quantity(quantity) == expected


@pytest.mark.parametrize("text", ["", "Mi", "64 Mi", "64MiB", "sixty"])
def test_a_malformed_quantity_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match="quantit"):
        parse_quantity(text)


@pytest.mark.parametrize(
    ("container", "limit"),
    [
        ({"resources": {"limits": {"memory": "64Mi", "cpu": "1"}}}, 64 * MiB),
        ({"resources": {"requests": {"memory": "64Mi"}}}, 0),
        ({}, 0),
        ({"resources": {"limits": {"memory": "lots"}}}, 0),
    ],
    ids=["a limit in bytes", "a request is not a limit", "no resources: 0, as cAdvisor says unlimited",
         "a limit that does not parse counts as none"],
)
def test_the_limit_series_is_the_containers_memory_limit_or_zero(container: dict[str, object],
                                                                  limit: int) -> None:
    assert memory_limit_bytes(container) == limit


def test_the_exposition_parses_with_cadvisors_names_and_labels_only() -> None:
    text = exposition([
        ContainerMemory("ml", "images-4f1c2a9e0b-5d8f7c9b6-x2k4q", "app", 75 * MiB, 64 * MiB),
        ContainerMemory("ml", "images-4f1c2a9e0b-5d8f7c9b6-x2k4q", "sidecar", 20 * MiB, 0),
    ])
    families = {f.name: f for f in text_string_to_metric_families(text)}
    assert {name: f.type for name, f in families.items()} == {WORKING_SET: "gauge", MEMORY_LIMIT: "gauge"}
    samples = {(s.name, s.labels["container"]): s for f in families.values() for s in f.samples}
    assert samples[(WORKING_SET, "app")].value == 75 * MiB
    assert samples[(MEMORY_LIMIT, "app")].value == 64 * MiB
    assert samples[(MEMORY_LIMIT, "sidecar")].value == 0
    assert {frozenset(s.labels) for s in samples.values()} == {frozenset({"namespace", "pod", "container"})}


def vm_rss(pid: int) -> int:
    """One process's resident set, read straight from /proc."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for pid {pid}")


def test_the_working_set_counts_the_containers_child_processes() -> None:
    # A child that holds 64 MiB and says so: the tree's RSS grows by at least that much.
    child = subprocess.Popen(
        [sys.executable, "-c",
         "import sys; block = bytearray(64 * 2**20); print('held', flush=True); sys.stdin.read()"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "held"
        child_rss = process_tree_rss_bytes(child.pid)
        own_rss = vm_rss(os.getpid())
        tree_rss = process_tree_rss_bytes(os.getpid())
        assert child_rss is not None and child_rss >= 64 * MiB
        # Our own RSS moves by a few MiB between two reads; the child's 64 MiB do not.
        assert tree_rss is not None and tree_rss - own_rss >= 60 * MiB
    finally:
        child.kill()
        child.wait()
    gone = process_tree_rss_bytes(child.pid)
    assert gone is None, "a process that exited has no memory to report"
