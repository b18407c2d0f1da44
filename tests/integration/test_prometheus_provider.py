"""The Prometheus provider against a real Prometheus: every answer becomes a typed result."""

from __future__ import annotations

import asyncio
import datetime as dt
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from modeldeploy import spec as s
from modeldeploy.analysis import presets, promql
from modeldeploy.measurement import Measurement, NoData, QueryError
from modeldeploy.providers.prometheus import PrometheusProvider

PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"
PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"
pytestmark = pytest.mark.skipif(
    not Path(PROMETHEUS).exists(),
    reason="Debian's prometheus package is not installed (hack/setup installs it)",
)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def start_prometheus(
    workdir: Path, web_config: Path | None = None, scrape_configs: str = "[]"
) -> tuple[subprocess.Popen[bytes], str]:
    """A real Prometheus, with no targets unless given (over TLS when ``web_config`` says
    so), once ready."""
    (workdir / "prometheus.yml").write_text(
        f"global: {{scrape_interval: 5s}}\nscrape_configs: {scrape_configs}\n")
    port = _free_port()
    command = [PROMETHEUS, f"--config.file={workdir / 'prometheus.yml'}",
               f"--storage.tsdb.path={workdir / 'data'}", f"--web.listen-address=127.0.0.1:{port}"]
    if web_config is not None:
        command.append(f"--web.config.file={web_config}")
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"{'https' if web_config else 'http'}://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            if httpx.get(f"{url}/-/ready", timeout=1, verify=False).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            process.terminate()
            raise AssertionError("Prometheus did not become ready in 30 s")
        time.sleep(0.1)  # polling a readiness condition with a deadline
    return process, url


@pytest.fixture(scope="module")
def prometheus_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    process, url = start_prometheus(tmp_path_factory.mktemp("prometheus"))
    yield url
    process.terminate()
    process.wait(timeout=10)


@dataclass(frozen=True)
class Secrets:
    bearer_token: str | None = None
    ca_bundle_path: str | None = None


def _provider(address: str, secrets: Secrets = Secrets(), **settings: Any) -> PrometheusProvider:
    return PrometheusProvider(s.PrometheusProvider(address=address, timeout="2s", **settings), secrets)


def test_one_series_is_a_measurement(prometheus_url: str) -> None:
    result = asyncio.run(_provider(prometheus_url).query("vector(0.25)"))
    assert isinstance(result, Measurement) and result.value == 0.25


@pytest.mark.parametrize(
    ("query", "reason"),
    [
        ('up{job="no-such-job"}', "no series"),
        ("vector(1) / vector(0)", "+Inf"),  # a division by zero
        ("0 / 0", "NaN"),
    ],
    ids=["no series is no data", "infinity is no data", "NaN is no data"],
)
def test_unusable_values_are_no_data_never_a_pass(prometheus_url: str, query: str, reason: str) -> None:
    result = asyncio.run(_provider(prometheus_url).query(query))
    assert isinstance(result, NoData)
    assert reason.lower() in result.reason.lower()


def test_several_series_is_an_error_that_says_to_aggregate(prometheus_url: str) -> None:
    query = 'label_replace(vector(1), "pod", "a", "", "") or label_replace(vector(2), "pod", "b", "", "")'
    result = asyncio.run(_provider(prometheus_url).query(query))
    assert isinstance(result, QueryError)
    assert "2 series" in result.reason and "aggregate" in result.reason


def test_bad_promql_is_an_error_naming_the_refusal(prometheus_url: str) -> None:
    result = asyncio.run(_provider(prometheus_url).query("sum(rate(x[5m]"))
    assert isinstance(result, QueryError) and "refused" in result.reason


def test_scrape_intervals_come_from_the_targets_api_per_model_deployment(tmp_path: Path) -> None:
    """The slowest interval among a resource's targets; targets of nothing are ignored."""
    def job(name: str, every: str, labels: str) -> str:
        return (f'{{job_name: {name}, scrape_interval: {every}, static_configs: '
                f'[{{targets: ["127.0.0.1:{_free_port()}"], labels: {labels}}}]}}')

    jobs = [job("songs-a", "3s", "{namespace: ml, modeldeploy_name: songs}"),
            job("songs-b", "7s", "{namespace: ml, modeldeploy_name: songs}"),
            job("chat", "15s", "{namespace: team, modeldeploy_name: chat}"),
            job("node", "1s", "{namespace: ml}")]
    process, url = start_prometheus(tmp_path, scrape_configs=f"[{', '.join(jobs)}]")

    async def discovered() -> dict[tuple[str, str], dt.timedelta] | None:
        # Prometheus lists a target once its discovery has run (a few seconds after start).
        provider = _provider(url)
        deadline = time.monotonic() + 30
        while len(found := await provider.scrape_intervals() or {}) < 2 and time.monotonic() < deadline:
            await asyncio.sleep(0.2)  # polling a condition with a deadline
        return found

    try:
        found = asyncio.run(discovered())
    finally:
        process.terminate()
        process.wait(timeout=10)
    assert found == {("ml", "songs"): dt.timedelta(seconds=7), ("team", "chat"): dt.timedelta(seconds=15)}


def test_scrape_intervals_of_an_unreachable_prometheus_are_unknown() -> None:
    assert asyncio.run(_provider(f"http://127.0.0.1:{_free_port()}").scrape_intervals()) is None


def test_unreachable_prometheus_is_an_error_not_an_exception() -> None:
    result = asyncio.run(_provider(f"http://127.0.0.1:{_free_port()}").query("vector(1)"))
    assert isinstance(result, QueryError) and "unreachable" in result.reason


def test_every_builtin_query_is_valid_promql(tmp_path: Path) -> None:
    """Rendered for a revision, each built-in query parses in Prometheus' own parser."""
    context = promql.QueryContext("song-analyzer", "ml", "41ab98cd01", "7c9f12ab34", "30s")
    rules = "groups:\n- name: builtins\n  rules:\n" + "".join(
        f"  - record: builtin:{name.replace('-', '_')}\n    expr: '{promql.render(query, context)}'\n"
        for name, query in presets.BUILTIN_QUERIES.items()
    )
    (tmp_path / "rules.yaml").write_text(rules)
    checked = subprocess.run([PROMTOOL, "check", "rules", str(tmp_path / "rules.yaml")],
                             capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr


@pytest.mark.parametrize(
    "value",
    ['plain-41ab98cd01', 'quo"te', 'back\\slash', 'new\nline', '"} or vector(2) or {x="'],
    ids=["a plain revision", "a double quote", "a backslash", "a newline", "an injection attempt"],
)
def test_placeholders_reach_prometheus_as_the_exact_label_value(prometheus_url: str, value: str) -> None:
    """Whatever a name or revision holds, Prometheus reads it as one string, unchanged."""
    context = promql.QueryContext(value, "ml", value, "7c9f12ab34", "30s")
    query = promql.render('label_replace(vector(1), "got", "{{revision}}", "", "")', context)
    answer = httpx.get(f"{prometheus_url}/api/v1/query", params={"query": query}, timeout=5).json()
    assert answer["status"] == "success", answer
    assert [series["metric"]["got"] for series in answer["data"]["result"]] == [value]


@pytest.fixture(scope="module")
def tls_prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """A real Prometheus serving HTTPS with a self-signed certificate; yields (url, its CA)."""
    workdir = tmp_path_factory.mktemp("prometheus-tls")
    cert, key = workdir / "cert.pem", workdir / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )
    web_config = workdir / "web.yml"
    web_config.write_text(f"tls_server_config:\n  cert_file: {cert}\n  key_file: {key}\n")
    process, url = start_prometheus(workdir, web_config)
    yield url, cert
    process.terminate()
    process.wait(timeout=10)


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl makes the test's certificate")
@pytest.mark.filterwarnings("ignore::urllib3.exceptions.InsecureRequestWarning")  # asked for
def test_tls_is_verified_against_the_ca_bundle_or_skipped_only_when_asked(
    tls_prometheus: tuple[str, Path],
) -> None:
    url, ca = tls_prometheus
    unverified = asyncio.run(_provider(url).query("vector(1)"))
    assert isinstance(unverified, QueryError) and "SSL" in unverified.reason, unverified
    with_ca = asyncio.run(_provider(url, Secrets(ca_bundle_path=str(ca))).query("vector(1)"))
    assert isinstance(with_ca, Measurement) and with_ca.value == 1
    insecure = asyncio.run(_provider(url, insecureSkipVerify=True).query("vector(1)"))
    assert isinstance(insecure, Measurement) and insecure.value == 1
