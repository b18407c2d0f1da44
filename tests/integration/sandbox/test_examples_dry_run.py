"""Every manifest a user copies passes a real API server's validation (server-side dry
run with real kubectl and strict field validation, against the sandbox, which stores
the CRD and evaluates its CEL rules as kube-apiserver does).

What is applied: every file in ``examples/``, and every ```yaml block containing
``kind: ModelDeployment`` in README.md, charts/modeldeploy/README.md and docs/*.md.
A block that is deliberately partial (a spec excerpt that would not apply on its own)
must say so on its first line, ``# fragment: <why>``; it is then reported as a skip
naming the block and the reason, never dropped silently. Any other block must apply.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import pytest
from mdsandbox.sandbox import Sandbox
from operator_process import REPO_ROOT, run

pytestmark = pytest.mark.integration
EXAMPLES = sorted((REPO_ROOT / "examples").glob("*.yaml"))
DOCUMENTS = [REPO_ROOT / "README.md", REPO_ROOT / "charts" / "modeldeploy" / "README.md",
             *sorted((REPO_ROOT / "docs").glob("*.md"))]
FRAGMENT = "# fragment:"
_YAML_BLOCK = re.compile(r"^```ya?ml[ \t]*\n(.*?)^```", re.MULTILINE | re.DOTALL)


@dataclass(frozen=True)
class Snippet:
    where: str  # README.md:47, the line of the opening fence
    text: str


def model_deployment_snippets() -> list[Snippet]:
    found = []
    for document in DOCUMENTS:
        text = document.read_text()
        for block in _YAML_BLOCK.finditer(text):
            if re.search(r"^kind: ModelDeployment\s*$", block.group(1), re.MULTILINE):
                line = text.count("\n", 0, block.start()) + 1
                found.append(Snippet(f"{document.relative_to(REPO_ROOT)}:{line}", block.group(1)))
    return found


SNIPPETS = model_deployment_snippets()


def dry_run_apply(sandbox: Sandbox, *, path: Path | None = None, manifest: str | None = None,
                  check: bool = True) -> str:
    kubeconfig = Path(sandbox.kubeconfig)
    run(["kubectl", "create", "namespace", "ml"], kubeconfig, check=False)  # the examples' namespace
    source = str(path) if path is not None else "-"
    return run(["kubectl", "apply", "--dry-run=server", "--validate=strict", "-f", source],
               kubeconfig, check=check, stdin=manifest)


@pytest.mark.parametrize("example", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_example_passes_the_api_servers_validation(
    sandbox: Sandbox, crds_installed: None, example: Path
) -> None:
    out = dry_run_apply(sandbox, path=example)
    assert "(server dry run)" in out


@pytest.mark.parametrize("snippet", SNIPPETS, ids=[s.where for s in SNIPPETS])
def test_documented_model_deployment_passes_the_api_servers_validation(
    sandbox: Sandbox, crds_installed: None, snippet: Snippet
) -> None:
    first_line = snippet.text.lstrip().splitlines()[0]
    if first_line.startswith(FRAGMENT):
        pytest.skip(f"{snippet.where} is marked a fragment:{first_line[len(FRAGMENT):]}")
    out = dry_run_apply(sandbox, manifest=snippet.text, check=False)
    assert "(server dry run)" in out, (
        f"the ModelDeployment at {snippet.where} is refused by the API server (fix it, or "
        f"start the block with `{FRAGMENT} <why>` if it is meant to be partial):\n{out}")


def test_the_readme_shows_a_model_deployment() -> None:
    """Guards the guard: a changed fence or heading must not leave nothing to apply."""
    assert any(s.where.startswith("README.md:") for s in SNIPPETS), SNIPPETS


def test_an_invalid_manifest_is_refused_naming_the_field(sandbox: Sandbox, crds_installed: None) -> None:
    manifest = (REPO_ROOT / "examples" / "song-analyzer.yaml").read_text().replace(
        "- setWeight: 10", "- setWeight: 110", 1
    )
    out = dry_run_apply(sandbox, manifest=manifest, check=False)
    assert "spec.strategy.canary.steps[0].setWeight" in out
    assert "100" in out
