"""Secrets never leak: a rollout whose pods and analysis hold recognisable credentials.

A song-analyzer reads its callers' key (``API_KEY``) and its provider key
(``OPENAI_API_KEY``) from Secrets, and its analysis queries Prometheus with a bearer token
from a third Secret (``spec.analysis.provider.prometheus.bearerTokenSecret``). Each value is
recognisable (``…LEAKCANARY<random hex>``). The scenario walks every path that could carry a
credential somewhere it does not belong:

- callers with no key, a wrong key that *contains* the real key, and the provider key sent
  as ``X-API-Key``; bodies that are not JSON or not the schema;
- provider answers 401 and 500 whose text carries the provider key in full, as a careless
  provider or egress proxy would (OpenAI itself masks all but the last four characters, so
  this is stricter than production: nothing relayed may depend on the provider masking);
- Prometheus behind an auth proxy that records the ``Authorization`` header (the sandbox's
  Prometheus checks no token, so the proxy is the proof that the token was sent) and refuses
  the first rounds of one metric with an error whose text echoes that header, so status
  carries provider text;
- a canary with analysis, promoted.

Then each secret (whole, its random part, the middle of that, and its base64) is searched
for in every ModelDeployment status seen along the way (full JSON), every Event of the
namespace, the operator's log, every pod's log, ``/metrics`` of the operator and of every
service pod (and their ``/health``), and every response body the probes received. The
background traffic's bodies are not kept (TrafficGenerator records statuses); they are
answers of the same two kinds the probes read (200s), so the probes stand for them.

The scenario first proves each path was really taken (the 401s and 502s were answered, the
provider and Prometheus saw the credentials, status carried Prometheus's refusal), so an
empty search means something.
"""

from __future__ import annotations

import base64
import json
import secrets
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from mdsandbox.sandbox import Sandbox
from mdsandbox.testing import KubeAPI, wait_until
from mdsandbox.traffic import TrafficGenerator, song_request
from operator_process import OperatorProcess
from song_analyzer.config import SongAnalyzerSettings

# The analysis scenarios' manifest builders and waits: one way to build a song-analyzer.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "analysis"))
from analysis_support import (
    JSON,
    SONG_V1,
    SONG_V2,
    apply,
    get_md,
    song_analyzer,
    wait_stable,
    wait_status,
)

pytestmark = pytest.mark.integration

NAME = "songs"
PORT_ANNOTATION = "sandbox.modeldeploy.io/port"
# A custom metric the auth proxy refuses (its query names this series) until status shows it.
PROBE_SERIES = "leak_probe_never_scraped"
REFUSAL = "Prometheus refused the query: HTTP 401"
UPSTREAM_401 = "LEAK-PROBE-401"
UPSTREAM_500 = "LEAK-PROBE-500"


@dataclass(frozen=True)
class Secret:
    """A recognisable credential: ``<prefix>LEAKCANARY<random hex>``."""

    prefix: str
    random: str

    @classmethod
    def make(cls, prefix: str) -> Secret:
        return cls(prefix, secrets.token_hex(16))

    @property
    def value(self) -> str:
        return f"{self.prefix}LEAKCANARY{self.random}"

    def fragments(self) -> set[str]:
        """What would give it away: the value, its random part, the middle of that (a masked
        or cut copy), and its base64 (a Secret's data field, dumped)."""
        return {self.value, self.random, self.random[8:-8],
                base64.b64encode(self.value.encode()).decode()}


class _Server:
    """A threaded HTTP server on 127.0.0.1 whose handler is the subclass's ``answer``."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.authorizations: list[str | None] = []
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass  # quiet: the test reads what the server recorded

            def do_GET(self) -> None:
                self._reply(b"")

            def do_POST(self) -> None:
                self._reply(self.rfile.read(int(self.headers.get("Content-Length") or 0)))

            def _reply(self, body: bytes) -> None:
                authorization = self.headers.get("Authorization")
                with owner.lock:
                    owner.authorizations.append(authorization)
                status, content_type, data = owner.answer(self.command, self.path, authorization, body)
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._client = httpx.Client(timeout=30)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def answer(self, method: str, path: str, authorization: str | None,
               body: bytes) -> tuple[int, str, bytes]:
        raise NotImplementedError

    def forward(self, method: str, url: str, body: bytes) -> tuple[int, str, bytes]:
        response = self._client.request(method, url, content=body or None,
                                         headers={"Content-Type": "application/json"} if body else None)
        return response.status_code, response.headers.get("content-type", "text/plain"), response.content

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._client.close()


class EchoingAuthProxy(_Server):
    """An auth proxy in front of Prometheus: records each ``Authorization`` header, refuses
    queries naming ``PROBE_SERIES`` (while ``refusing`` is set) with a Prometheus error that
    echoes the header it got (a careless proxy), and forwards everything else unchanged."""

    def __init__(self, prometheus: str) -> None:
        self.prometheus = prometheus.rstrip("/")
        self.refusing = threading.Event()
        self.refusing.set()
        self.refused = 0
        super().__init__()

    def answer(self, method: str, path: str, authorization: str | None,
               body: bytes) -> tuple[int, str, bytes]:
        with self.lock:
            refuse = PROBE_SERIES in path and self.refusing.is_set()
            self.refused += refuse
        if refuse:
            error = {"status": "error", "errorType": "unauthorized",
                     "error": f"Authorization: {authorization} may not read {PROBE_SERIES}"}
            return 401, "application/json", json.dumps(error).encode()
        return self.forward(method, self.prometheus + path, body)


class EchoingProvider(_Server):
    """The services' model provider: forwards to the sandbox's fake upstream, except that a
    request whose text holds ``UPSTREAM_401``/``UPSTREAM_500`` is answered that status in the
    OpenAI error shape, its message carrying the API key the request was sent with."""

    def __init__(self, fake_upstream: str) -> None:
        self.upstream_root = fake_upstream.removesuffix("/v1")
        self.answered: dict[int, int] = {}
        super().__init__()

    def answer(self, method: str, path: str, authorization: str | None,
               body: bytes) -> tuple[int, str, bytes]:
        key = (authorization or "").removeprefix("Bearer ")
        text = body.decode(errors="replace")
        if UPSTREAM_401 in text:
            status, message = 401, (f"Incorrect API key provided: {key}. You can find your API "
                                    "key at https://platform.openai.com/account/api-keys.")
            kind, code = "invalid_request_error", "invalid_api_key"
        elif UPSTREAM_500 in text:
            status, message = 500, f"The server had an error processing a request keyed {key}"
            kind, code = "server_error", "internal_error"
        else:
            return self.forward(method, self.upstream_root + path, body)
        with self.lock:
            self.answered[status] = self.answered.get(status, 0) + 1
        error = {"error": {"message": message, "type": kind, "code": code, "param": None}}
        return status, "application/json", json.dumps(error).encode()


@pytest.fixture
def auth_proxy(sandbox: Sandbox) -> Iterator[EchoingAuthProxy]:
    if sandbox.prometheus_url is None:
        pytest.skip("analysis needs Prometheus: Debian's prometheus package (hack/setup installs it)")
    proxy = EchoingAuthProxy(sandbox.prometheus_url)
    yield proxy
    proxy.close()


@pytest.fixture
def provider(sandbox: Sandbox) -> Iterator[EchoingProvider]:
    assert sandbox.fake_upstream_url is not None, "the sandbox runs the fake upstream"
    server = EchoingProvider(sandbox.fake_upstream_url)
    yield server
    server.close()


def secret(namespace: str, name: str, key: str, value: str) -> JSON:
    """The Secret as the API server stores it (the sandbox does not fold in ``stringData``)."""
    return {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name, "namespace": namespace},
            "data": {key: base64.b64encode(value.encode()).decode()}}


def manifest(namespace: str, sandbox: Sandbox, provider: EchoingProvider,
             proxy: EchoingAuthProxy, model: str, tag: str) -> JSON:
    """The scenarios' song-analyzer, its keys read from Secrets and its analysis through the
    auth proxy with the token Secret, plus the metric the proxy refuses at first."""
    probe = {"name": "leak-probe", "query": f"0 * absent({PROBE_SERIES})",
             "thresholdRange": {"max": 1}, "inconclusiveLimit": 100}
    # One passing round promotes: the leaks are in the paths, not in how long they run.
    steps: list[JSON] = [{"setWeight": 50}, {"analysis": {"measurements": 1}}]
    md = song_analyzer(NAME, namespace, sandbox, model=model, tag=tag, metrics=[probe],
                       prometheus=proxy.url, steps=steps)
    container = md["spec"]["template"]["spec"]["containers"][0]
    from_secret = {"OPENAI_API_KEY": ("openai-credentials", "api-key"),
                   "API_KEY": ("song-analyzer-api-key", "key")}
    container["env"] = [
        {"name": var["name"], "value": provider.url + "/v1"} if var["name"] == "LLM_API_BASE_URL"
        else var for var in container["env"] if var["name"] not in from_secret
    ] + [{"name": env, "valueFrom": {"secretKeyRef": {"name": name, "key": key}}}
         for env, (name, key) in from_secret.items()]
    md["spec"]["analysis"]["provider"]["prometheus"]["bearerTokenSecret"] = {
        "name": "prometheus-token", "key": "token"}
    return md


@dataclass(frozen=True)
class Probe:
    what: str
    headers: dict[str, str]
    content: bytes
    status: int
    code: str | None  # the error code the body must carry (None: a 200)


def probes(service_key: Secret, upstream_key: Secret) -> list[Probe]:
    def song(n: int, marker: str = "") -> bytes:
        return json.dumps({"artist": "Probe", "title": f"Probe {n}",
                           "lyrics": f"line {n} {marker}"}).encode()

    key = {"X-API-Key": service_key.value}
    return [
        Probe("no X-API-Key", {}, song(1), 401, "invalid_api_key"),
        Probe("a wrong key holding the right one", {"X-API-Key": service_key.value + "x"}, song(2),
              401, "invalid_api_key"),
        Probe("the provider key as X-API-Key", {"X-API-Key": upstream_key.value}, song(3), 401,
              "invalid_api_key"),
        Probe("a body that is not JSON", key, b'{"artist": "Probe", "lyr', 400, None),
        Probe("a body not of the schema", key, b'{"artist": "Probe", "title": "T", "lyrics": 5}',
              400, None),
        Probe("the provider answers 401", key, song(4, UPSTREAM_401), 502, "upstream_status_401"),
        Probe("the provider answers 500", key, song(5, UPSTREAM_500), 502, "upstream_status_500"),
        Probe("a good request", key, song(6), 200, None),
    ]


def pod_pages(kube: KubeAPI, namespace: str) -> dict[str, str]:
    """``/metrics`` and ``/health`` of every pod of the namespace, by ``<pod><path>``."""
    pages: dict[str, str] = {}
    for pod in kube.list("Pod", namespace):
        port = (pod["metadata"].get("annotations") or {}).get(PORT_ANNOTATION)
        if port is None:
            continue
        for path in ("/metrics", "/health"):
            pages[pod["metadata"]["name"] + path] = httpx.get(
                f"http://127.0.0.1:{port}{path}", timeout=10).text
    return pages


def found(secrets_: list[Secret], texts: dict[str, str]) -> list[str]:
    """``<where>: <fragment> in ...<context>...``, one line for each text holding any secret."""
    fragments = sorted({f for s in secrets_ for f in s.fragments()}, key=len, reverse=True)
    hits: list[str] = []
    for where, text in texts.items():
        fragment = next((f for f in fragments if f in text), None)
        if fragment is not None:
            at = text.find(fragment)
            hits.append(f"{where}: {fragment!r} in ...{text[max(0, at - 120):at + 80]!r}...")
    return hits


def test_no_credential_reaches_status_events_logs_metrics_or_answers(
    sandbox: Sandbox, kube: KubeAPI, namespace: str, operator: OperatorProcess,
    auth_proxy: EchoingAuthProxy, provider: EchoingProvider,
) -> None:
    service_key = Secret.make("md-api-key-")
    upstream_key = Secret.make("sk-proj-")
    prometheus_token = Secret.make("prom-token-")
    for name, key, value in (("song-analyzer-api-key", "key", service_key),
                             ("openai-credentials", "api-key", upstream_key),
                             ("prometheus-token", "token", prometheus_token)):
        kube.create(secret(namespace, name, key, value.value))
    statuses: list[JSON] = []

    def seen(status: JSON) -> JSON:
        statuses.append(status)
        return status

    apply(manifest(namespace, sandbox, provider, auth_proxy, SONG_V1, "1.0.0"), sandbox)
    stable = wait_stable(kube, namespace, NAME, timeout=120)
    url = sandbox.service_url(namespace, NAME)

    # Every way a caller can fail, against the running revision.
    answers: dict[str, httpx.Response] = {}
    with httpx.Client(timeout=30) as client:
        for probe in probes(service_key, upstream_key):
            answers[probe.what] = client.post(url + "/analyze", content=probe.content,
                                              headers={"Content-Type": "application/json",
                                                       **probe.headers})
    for probe in probes(service_key, upstream_key):
        answer = answers[probe.what]
        assert answer.status_code == probe.status, (probe.what, answer.status_code, answer.text)
        if probe.code is not None:
            assert answer.json()["error"]["code"] == probe.code, (probe.what, answer.text)
    # Really answered: the 401 once (never tried again), the 500 on every try song-analyzer
    # makes (1 + UPSTREAM_MAX_RETRIES), each answer carrying the key in its text.
    retries = SongAnalyzerSettings.model_fields["upstream_max_retries"].default
    assert provider.answered == {401: 1, 500: 1 + retries}, "the provider's errors were really answered"
    scraped = pod_pages(kube, namespace)  # the first revision's pods go with the rollout

    # A canary with analysis through the auth proxy; it refuses the probe metric at first.
    with TrafficGenerator(url + "/analyze", body=song_request, rate=10, max_seconds=180,
                          timeout_s=15, headers={"X-API-Key": service_key.value}) as traffic:
        apply(manifest(namespace, sandbox, provider, auth_proxy, SONG_V2, "1.1.0"), sandbox)
        wait_status(kube, namespace, NAME,
                    lambda s: any(m["name"] == "leak-probe" and REFUSAL in (m.get("message") or "")
                                  for m in seen(s).get("analysis") or []),
                    what="status to carry Prometheus's refusal of the probe metric", timeout=150)
        auth_proxy.refusing.clear()
        promoted = wait_status(
            kube, namespace, NAME,
            lambda s: seen(s).get("phase") in ("RolledBack", "Failed")
            or (s.get("phase") == "Succeeded" and s.get("stableRevision") != stable),
            what="the canary promoted", timeout=150,
        )
    assert promoted["phase"] == "Succeeded", promoted.get("message")
    assert promoted["history"][0]["outcome"] == "Promoted"
    assert sum(r.ok for r in traffic.responses()) > 0

    # Each path was taken: the token reached Prometheus, status carried its refusal, the
    # provider got the pods' key from the Secret.
    assert f"Bearer {prometheus_token.value}" in auth_proxy.authorizations
    assert auth_proxy.refused > 0
    assert f"Bearer {upstream_key.value}" in provider.authorizations

    # Then nothing anywhere holds a credential.
    texts: dict[str, str] = {f"status #{i}": json.dumps(st) for i, st in enumerate(statuses)}
    texts["ModelDeployment (final, whole)"] = json.dumps(get_md(kube, namespace, NAME))
    texts.update({f"Event {e['metadata']['name']}": json.dumps(e)
                  for e in kube.list("Event", namespace)})
    texts.update({f"answer to {what}": f"{answer.headers}\n{answer.text}"
                  for what, answer in answers.items()})
    texts.update(scraped)
    new = promoted["stableRevision"]
    wait_until(lambda: {p["metadata"]["labels"].get("modeldeploy.io/revision")
                        for p in kube.list("Pod", namespace)} == {new},
               timeout=90, what="the first revision's pods to go")
    texts.update(pod_pages(kube, namespace))
    texts["operator /metrics"] = httpx.get(
        f"http://127.0.0.1:{operator.metrics_port}/metrics", timeout=10).text
    logs = sorted((sandbox.workdir / "logs" / "pods").glob(f"{namespace}_*.log"))
    assert len(logs) >= 4, "both revisions' pods left their logs"
    texts.update({f"pod log {log.name}": log.read_text(errors="replace") for log in logs})
    texts.update({f"operator log {log.name}": log.read_text(errors="replace")
                  for log in sorted(operator.log_dir.glob(f"{operator.name}-*.log"))})
    leaks = found([service_key, upstream_key, prometheus_token], texts)
    assert not leaks, "credentials leaked:\n" + "\n".join(leaks)
