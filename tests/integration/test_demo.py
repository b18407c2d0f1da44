"""The README's first command, `./hack/demo`, run for real as a user runs it.

It sets itself up, starts its own sandbox and operator, promotes a healthy model, rolls a
failing one back on the uncached-error-rate indicator, prints the timeline, and must leave no
process behind: none whose command line, environment or working directory names the
demo's sandbox folder (the supervisor, Prometheus, the pods, the operator's KUBECONFIG).
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest
from mdsandbox.prometheus import prometheus_binary

pytestmark = pytest.mark.integration

REPO_ROOT = Path(__file__).resolve().parents[2]
DEMO_TIMEOUT_S = 540  # the demo takes well under a minute alone; CI machines are busy


def processes_naming(folder: Path) -> list[str]:
    """``pid: command`` of every process whose command line, environment or cwd names ``folder``."""
    needle = str(folder).encode()
    found: list[str] = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
            environ = (entry / "environ").read_bytes()
            cwd = os.readlink(entry / "cwd").encode()
        except (FileNotFoundError, PermissionError, ProcessLookupError):
            continue  # gone meanwhile, or another user's
        if needle in cmdline or needle in environ or cwd.startswith(needle):
            command = cmdline.replace(b"\0", b" ").decode(errors="replace")
            found.append(f"{entry.name}: {command}")
    return found


@pytest.mark.skipif(prometheus_binary() is None, reason="the demo's analysis needs Prometheus (hack/setup)")
def test_the_demo_promotes_a_healthy_model_rolls_back_a_failing_one_and_leaves_nothing_running(
    tmp_path: Path,
) -> None:
    folder = tmp_path / "demo-sandbox"

    done = subprocess.run(
        [str(REPO_ROOT / "hack" / "demo"), "--dir", str(folder)],
        capture_output=True, text=True, timeout=DEMO_TIMEOUT_S, check=False,
    )
    output = done.stdout

    assert done.returncode == 0, f"exit {done.returncode}\n{output}\n{done.stderr[-4000:]}"
    # Timeline lines carry the elapsed time; the first deployment and the promotion show.
    assert re.search(
        r"^\[\s*\d+\.\ds\] Succeeded\s+canary weight\s+0%\s+revision \w+ is stable", output, re.M)
    assert re.search(r"Progressing canary weight\s+50%\s+step 1/3 setWeight 50", output)
    assert re.search(r"PROMOTED: revision \w+ serves all traffic", output)
    # Each analysis round: every metric's value against its thresholds, and the decision.
    assert re.search(
        r"analysis: error-rate 0 \[gate max 0\.02: pass\]\s+"
        r"latency-p95 [\d.e-]+ \[gate max 10: pass \| rollback max 20: ok\]\s+"
        r"cost-per-request [\d.e-]+ \[gate max 0\.0016: pass\]\s+"
        r"uncached-error-rate 0 \[rollback max 0\.05: ok\]\s+=> pass", output)
    assert re.search(
        r"analysis: error-rate 0\.\d+ \[gate max 0\.02: FAIL\].*"
        r"uncached-error-rate 0\.\d+ \[rollback max 0\.05: BREACHED\]\s+=> revert now", output)
    # The automatic rollback, with the metric, its value and the threshold.
    assert re.search(
        r"RolledBack\s+canary weight\s+\d+%\s+rollback indicator uncached-error-rate = 0\.\d+ "
        r"breached max 0\.05", output)
    assert re.search(r"all traffic back on stable \w+", output)
    assert re.search(r"detection: \d+\.\ds from its first request to the rollback", output)
    assert "The sandbox and the operator are already stopped" in output
    assert "kubectl get md" in output and "modeldeploy -n ml status song-analyzer" in output

    assert processes_naming(folder) == []
