"""Every example applies to a cluster that has the CRD (server-side dry run, real kubectl)."""

from __future__ import annotations

from pathlib import Path

import pytest
from mdsandbox.sandbox import Sandbox
from operator_process import REPO_ROOT, run

pytestmark = pytest.mark.integration
EXAMPLES = sorted((REPO_ROOT / "examples").glob("*.yaml"))


@pytest.mark.parametrize("example", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_example_passes_the_api_servers_validation(
    sandbox: Sandbox, crds_installed: None, example: Path
) -> None:
    kubeconfig = Path(sandbox.kubeconfig)
    run(["kubectl", "create", "namespace", "ml"], kubeconfig, check=False)  # the examples' namespace
    out = run(["kubectl", "apply", "--dry-run=server", "-f", str(example)], kubeconfig)
    assert "(server dry run)" in out


def test_an_invalid_manifest_is_refused_naming_the_field(sandbox: Sandbox, crds_installed: None) -> None:
    manifest = (REPO_ROOT / "examples" / "song-analyzer.yaml").read_text().replace(
        "- setWeight: 10", "- setWeight: 110", 1
    )
    out = run(["kubectl", "apply", "--dry-run=server", "-f", "-"], Path(sandbox.kubeconfig),
              check=False, stdin=manifest)
    assert "spec.strategy.canary.steps[0].setWeight" in out
    assert "100" in out
