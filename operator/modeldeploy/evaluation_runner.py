"""Run evaluation steps: send a case set to one revision alone, and stable, and judge.

Shell code: the judging is pure (:mod:`modeldeploy.analysis.evaluation`). An evaluation
takes seconds to minutes, so it runs as a task of its own, never inside a tick: the tick
that finds one due (:func:`modeldeploy.engine.evaluation_request`) starts it, the task
queues the resource again when it is done, and the next tick hands the result to the engine
(``Observation.evaluation``), which writes it to ``status.evaluation`` and acts on it. A
task whose step moved on (promoted, reverted, superseded, the spec changed) is cancelled; a
restarted operator runs the evaluation again (its result was not written yet).

How one revision is reached alone (the issue left it open; chosen: Services the operator
already owns, no pod addresses, so a NetworkPolicy that admits the operator to the Service
admits it here too):

- canary strategy: ``<name>-canary`` and ``<name>-stable`` (per-track Services, each
  narrowed to one revision; the engine keeps them for any router once a spec has an
  evaluation step);
- blue-green: the preview Service (green) and the Service ``<name>`` (blue, until the
  switch).

An address is ``http://<service>.<namespace>.svc:<port>`` (cluster DNS: the operator runs
in the cluster). ``MODELDEPLOY_SERVICE_ADDRESSES=loadBalancerStatus`` reads it from the
Service's ``status.loadBalancer.ingress[0]`` instead (ip or hostname, and the port listed
there; read from the watch cache, no request): how an operator outside the cluster reaches
Services, as in the local sandbox, which publishes every Service that way.

Each case goes to the revision (and, with compareToStable, to stable at the same time) with
``X-Request-ID: modeldeploy-eval-<revision>-<case id>`` and ``X-Modeldeploy-Evaluation:
<revision>`` so a service's logs tell evaluation calls apart. What a call cost is read from
the kit's ``X-Model-Tokens`` and ``X-Model-Cost-USD`` answer headers (every model service
sends them; DESIGN.md's metric contract counts the same spend in ``model_cost_usd_total``).
At most ``concurrency`` cases are in flight; each has ``timeoutSeconds`` for its whole answer,
and an answer is read up to 1 MiB.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import httpx

from modeldeploy import engine
from modeldeploy import spec as s
from modeldeploy.analysis import evaluation as ev
from modeldeploy.kube.client import KubeClient
from modeldeploy.kube.objects import preview_service_name, track_service_names

log = logging.getLogger("modeldeploy.evaluation")
SERVICE_ADDRESSES_ENV = "MODELDEPLOY_SERVICE_ADDRESSES"
ServiceAddresses = Literal["clusterDNS", "loadBalancerStatus"]
MAX_ANSWER_BYTES = 1024 * 1024
# An evaluation that broke off (an API error reading its ConfigMap) runs again after this.
RETRY_AFTER = 10.0
Key = tuple[str, str]


def service_addresses_from_env(value: str | None) -> ServiceAddresses:
    """The setting, or a ValueError naming the variable and what it takes."""
    if value in (None, "", "clusterDNS"):
        return "clusterDNS"
    if value == "loadBalancerStatus":
        return "loadBalancerStatus"
    raise ValueError(f"{SERVICE_ADDRESSES_ENV}={value!r}: set clusterDNS (default: the operator "
                     "runs in the cluster) or loadBalancerStatus (it reaches Services by the "
                     "address their status publishes)")


class NoAddress(Exception):
    """A Service the evaluation needs cannot be reached yet; the message says why."""


def _header_number(response: httpx.Response, name: str) -> float:
    try:
        value = float(response.headers.get(name, "0"))
    except ValueError:
        return 0.0
    return value if math.isfinite(value) and value >= 0 else 0.0


@dataclass
class _Run:
    ident: tuple[str, int, str]
    task: asyncio.Task[s.EvaluationStatus]


class EvaluationRunner:
    def __init__(
        self,
        kube: KubeClient,
        on_done: Callable[[str, str], None],
        addresses: ServiceAddresses = "clusterDNS",
    ) -> None:
        self._kube = kube
        self._on_done = on_done
        self._addresses = addresses
        self._runs: dict[Key, _Run] = {}
        self._retry_at: dict[Key, float] = {}
        self._client = httpx.AsyncClient(follow_redirects=False)

    def result(self, md: s.ModelDeployment, status: s.ModelDeploymentStatus) -> s.EvaluationStatus | None:
        """The finished evaluation the engine asked for, if any; starts it when due."""
        key = (md.metadata.namespace, md.metadata.name)
        request = engine.evaluation_request(md.spec, status)
        running = self._runs.get(key)
        if request is None:
            if running is not None:
                running.task.cancel()  # the step moved on, or its result is in status
                del self._runs[key]
            return None
        ident = (request.revision, request.step, request.step_started_at)
        if running is not None and running.ident == ident:
            if not running.task.done():
                return None
            error = None if running.task.cancelled() else running.task.exception()
            if error is None and not running.task.cancelled():
                return running.task.result()
            # An API error reading the case set, say: run it again after RETRY_AFTER rather
            # than hold the rollout on what may pass (what the case set lacks is a result).
            log.warning("%s/%s: evaluation of %s did not finish: %r; running it again in %gs",
                        *key, request.revision, error, RETRY_AFTER)
            del self._runs[key]
            loop = asyncio.get_running_loop()
            self._retry_at[key] = loop.time() + RETRY_AFTER
            loop.call_later(RETRY_AFTER, self._on_done, *key)
            return None
        if key in self._retry_at and asyncio.get_running_loop().time() < self._retry_at[key]:
            return None
        self._retry_at.pop(key, None)
        if running is not None:
            running.task.cancel()
        task = asyncio.create_task(self._evaluate(md, request),
                                   name=f"evaluation of {key[0]}/{key[1]}")
        task.add_done_callback(lambda _t: self._on_done(*key))
        self._runs[key] = _Run(ident, task)
        return None

    def forget(self, namespace: str, name: str) -> None:
        self._retry_at.pop((namespace, name), None)
        running = self._runs.pop((namespace, name), None)
        if running is not None:
            running.task.cancel()

    async def stop(self) -> None:
        for running in self._runs.values():
            running.task.cancel()
        await asyncio.gather(*(r.task for r in self._runs.values()), return_exceptions=True)
        self._runs.clear()
        await self._client.aclose()

    async def _evaluate(self, md: s.ModelDeployment, request: engine.EvaluationRequest) -> s.EvaluationStatus:
        step = request.evaluation
        try:
            cases, schema = await self._case_set(md, step)
            cases = ev.sample(cases, step.sample_size, request.revision)
            canary_url, stable_url = await self._urls(md, request)
        except (ev.CaseError, NoAddress) as problem:
            return ev.not_run(step, str(problem), revision=request.revision, index=request.step,
                              step_started_at=request.step_started_at, finished_at=_now())
        canary, stable = await self.send_cases(step, cases, request.revision, canary_url, stable_url)
        result = ev.judge(step, cases, canary, stable, schema, revision=request.revision,
                          index=request.step, step_started_at=request.step_started_at,
                          finished_at=_now())
        log.info("%s/%s: evaluation of %s: %s", md.metadata.namespace, md.metadata.name,
                 request.revision, result.message)
        return result

    async def send_cases(
        self, step: s.EvaluationStep, cases: list[ev.Case], revision: str, canary_url: str,
        stable_url: str | None,
    ) -> tuple[list[ev.Answer], list[ev.Answer] | None]:
        """Each case's answer from the canary (and stable, at the same time, when
        ``stable_url``), at most ``step.concurrency`` cases in flight."""
        slots = asyncio.Semaphore(step.concurrency)

        async def one(case: ev.Case) -> tuple[ev.Answer, ev.Answer | None]:
            async with slots:
                calls = [self._send(canary_url, step, case, revision)]
                if stable_url is not None:
                    calls.append(self._send(stable_url, step, case, revision))
                answers = await asyncio.gather(*calls)
                return answers[0], answers[1] if len(answers) > 1 else None

        pairs = await asyncio.gather(*(one(case) for case in cases))
        canary = [pair[0] for pair in pairs]
        stable = [pair[1] for pair in pairs if pair[1] is not None] if stable_url else None
        return canary, stable

    async def _case_set(
        self, md: s.ModelDeployment, step: s.EvaluationStep
    ) -> tuple[list[ev.Case], ev.Schema | None]:
        namespace = md.metadata.namespace
        data = await self._kube.read_config_map(namespace, step.config_map)
        if data is None:
            raise ev.CaseError(f"ConfigMap {namespace}/{step.config_map} not found: create it with "
                               f"the cases under key {step.cases_key} (evaluation.configMap)")
        source = f"ConfigMap {step.config_map} key {step.cases_key}"
        if step.cases_key not in data:
            raise ev.CaseError(f"{source} is missing: put the cases (JSON lines) there, or set "
                               "evaluation.casesKey")
        cases = ev.parse_cases(data[step.cases_key], source)
        schema = None
        if step.schema_key is not None:
            if step.schema_key not in data:
                raise ev.CaseError(f"ConfigMap {step.config_map} key {step.schema_key} is missing: "
                                   "put the JSON Schema there, or unset evaluation.schemaKey")
            schema = ev.parse_schema(data[step.schema_key],
                                     f"ConfigMap {step.config_map} key {step.schema_key}")
        return cases, schema

    async def _urls(
        self, md: s.ModelDeployment, request: engine.EvaluationRequest
    ) -> tuple[str, str | None]:
        name = md.metadata.name
        if request.blue_green:
            canary_service, stable_service = preview_service_name(md), name
        else:
            stable_service, canary_service = track_service_names(name)
        canary = await self._address(md, canary_service)
        compare = request.evaluation.compare_to_stable is not None
        stable = await self._address(md, stable_service) if compare else None
        return canary, stable

    async def _address(self, md: s.ModelDeployment, service: str) -> str:
        namespace, port = md.metadata.namespace, md.spec.service.port
        if self._addresses == "clusterDNS":
            return f"http://{service}.{namespace}.svc:{port}"
        ingress = self._kube.get_service_ingress(namespace, service, md.metadata.name) or {}
        host = ingress.get("ip") or ingress.get("hostname")
        ports = ingress.get("ports") or [{"port": port}]
        if not host:
            raise NoAddress(f"Service {namespace}/{service} publishes no address in "
                            f"status.loadBalancer yet ({SERVICE_ADDRESSES_ENV}=loadBalancerStatus)")
        return f"http://{host}:{ports[0]['port']}"

    async def _send(self, base: str, step: s.EvaluationStep, case: ev.Case, revision: str) -> ev.Answer:
        headers = {
            "X-Request-ID": f"modeldeploy-eval-{revision}-{case.id}"[:128],
            "X-Modeldeploy-Evaluation": revision,
        }
        body = None if step.method == "GET" else case.body
        try:
            async with asyncio.timeout(step.timeout_seconds):
                async with self._client.stream(step.method, base + step.path, json=body,
                                               headers=headers, timeout=step.timeout_seconds) as answer:
                    content = bytearray()
                    async for chunk in answer.aiter_bytes():
                        content.extend(chunk[: MAX_ANSWER_BYTES - len(content)])
                        if len(content) >= MAX_ANSWER_BYTES:
                            break
        except TimeoutError:
            return ev.Answer(None, error=f"no answer within {step.timeout_seconds:g}s")
        except httpx.HTTPError as error:
            return ev.Answer(None, error=f"{type(error).__name__}: {error}"[:300])
        return ev.Answer(
            answer.status_code,
            body=content.decode("utf-8", errors="replace"),
            tokens=int(_header_number(answer, "X-Model-Tokens")),
            cost_usd=_header_number(answer, "X-Model-Cost-USD"),
        )


def _now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
