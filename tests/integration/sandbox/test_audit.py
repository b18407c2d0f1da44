"""Counting API requests by user agent from the sandbox's audit log.

The benchmark's claim "the operator sent N writes" rests on these counts, so they are
checked against requests of known verbs sent to a real API server, and against a
written log for the time and agent filters.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from mdsandbox.apiserver import APIServer
from mdsandbox.audit import read_audit, summarize
from mdsandbox.cli import main as cli_main

pytestmark = pytest.mark.integration

CONFIGMAPS = "/api/v1/namespaces/default/configmaps"
MERGE = {"Content-Type": "application/merge-patch+json"}


@pytest.fixture
def server(tmp_path: Path) -> Iterator[APIServer]:
    api = APIServer(host="127.0.0.1", port=0, audit_log=tmp_path / "audit.log")
    api.start()
    try:
        yield api
    finally:
        api.stop()


def test_requests_are_counted_per_user_agent_as_reads_writes_and_watches(
    server: APIServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    operator = {"User-Agent": "modeldeploy-operator/0.3.0"}
    kubectl = {"User-Agent": "kubectl/v1.30.0 (linux/amd64) kubernetes/7c48c2b"}
    with httpx.Client(base_url=server.url, timeout=10) as http:
        http.post(CONFIGMAPS, json={"metadata": {"name": "a"}}, headers=operator)
        http.patch(f"{CONFIGMAPS}/a", json={"data": {"k": "v"}}, headers={**operator, **MERGE})
        http.put(f"{CONFIGMAPS}/a", json={"metadata": {"name": "a"}, "data": {}}, headers=operator)
        http.get(f"{CONFIGMAPS}/a", headers=operator)
        http.get(CONFIGMAPS, headers=operator)
        http.get(CONFIGMAPS, params={"watch": "true", "timeoutSeconds": "1"}, headers=operator)
        http.delete(f"{CONFIGMAPS}/a", headers=operator)
        http.delete(CONFIGMAPS, headers=operator)  # deletecollection
        http.get(CONFIGMAPS, headers=kubectl)
        http.get(f"{CONFIGMAPS}/missing", headers=kubectl)  # a 404 is still a request

    summary = summarize(read_audit(server.audit_log or ""))

    ours = summary["modeldeploy-operator/0.3.0"]
    assert (ours["reads"], ours["writes"], ours["watches"], ours["total"]) == (2, 5, 1, 8)
    assert (ours["create"], ours["patch"], ours["update"], ours["delete"],
            ours["deletecollection"], ours["get"], ours["list"], ours["watch"]) == (
        1, 1, 1, 1, 1, 1, 1, 1)
    theirs = summary["kubectl/v1.30.0 (linux/amd64) kubernetes/7c48c2b"]
    assert (theirs["reads"], theirs["writes"], theirs["watches"]) == (2, 0, 0)

    only_operator = summarize(read_audit(server.audit_log or "",
                                         user_agent_prefix="modeldeploy-operator/"))
    assert list(only_operator) == ["modeldeploy-operator/0.3.0"]

    assert cli_main(["audit", "--dir", str(tmp_path), "--agent", "modeldeploy-operator/"]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split() == ["USER", "AGENT", "READS", "WRITES", "WATCHES", "OTHER", "TOTAL"]
    assert table[1].split() == ["modeldeploy-operator/0.3.0", "2", "5", "1", "0", "8"]
    assert table[-1].split() == ["TOTAL", "2", "5", "1", "0", "8"]


def test_since_until_and_agent_prefix_select_the_records(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    now = time.time()
    lines = [
        {"ts": now - 600, "verb": "list", "userAgent": "modeldeploy-operator/1"},
        {"ts": now - 30, "verb": "patch", "userAgent": "modeldeploy-operator/1"},
        {"ts": now - 20, "verb": "watch", "userAgent": "modeldeploy-operator/1"},
        {"ts": now - 10, "verb": "get", "userAgent": "kubectl/v1.30.0"},
    ]
    log = tmp_path / "audit.log"
    # A torn last line, as while the server is writing it, is skipped.
    log.write_text("".join(json.dumps(r) + "\n" for r in lines) + '{"ts": 1, "verb"')

    assert len(read_audit(log)) == 4
    recent = read_audit(log, since=now - 60)
    assert [r["verb"] for r in recent] == ["patch", "watch", "get"]
    window = read_audit(log, since=now - 60, until=now - 15)
    assert [r["verb"] for r in window] == ["patch", "watch"]
    assert [r["verb"] for r in read_audit(log, user_agent_prefix="kubectl/")] == ["get"]

    assert cli_main(["audit", "--dir", str(tmp_path), "--since", "60", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["modeldeploy-operator/1"]["writes"] == 1
    assert summary["modeldeploy-operator/1"]["watches"] == 1
    assert summary["modeldeploy-operator/1"]["reads"] == 0  # the list is older than 60 s
    assert summary["kubectl/v1.30.0"]["reads"] == 1


def test_the_cli_says_when_there_is_no_audit_log(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli_main(["audit", "--dir", str(tmp_path / "nowhere")]) == 1
    assert "no audit log" in capsys.readouterr().err
