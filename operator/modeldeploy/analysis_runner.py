"""Run a round of analysis for the engine: what to measure (engine), measure (providers), judge.

Shell code: it does the I/O the pure analysis core must not. A round runs when the
engine asks for one (a canary, an analysis step, or the bake after 100%) and the
spec's ``analysis.interval`` has passed since the last round recorded in status, so
restarts and ticks in between never measure twice as often as asked.

Canary and stable are measured with the same query in the same round (only the
revision differs), so relative-to-stable checks compare like with like. Once the canary
serves 100% (the full step and the bake) stable serves nothing and is not queried:
relative checks compare with the stable baseline kept in status (see
:func:`stable_baselines`).

Providers are kept between rounds (their HTTP session and its connections with them)
and built anew only when the provider's settings or the Secrets it reads change, so a
rotated token takes effect at the next round. A CA bundle from a Secret is written
once per distinct content, into a directory the runner owns and removes at exit.

Rollback indicators between rounds (the fast path): an indicator exists to revert at once,
so it is also checked at the scrape interval (``prometheus.scrapeInterval``, else read
from Prometheus' targets API, trusted for ``SCRAPE_INTERVALS_TTL``) over the shortest
window that holds two samples (two scrape intervals), while gates keep
``analysis.interval``. A check between rounds queries the indicators and the canary's
model requests only; it acts only on a breach (a passing check writes nothing, so it
costs no API request), timed just after each scrape of the canary's pods lands (the newest
sample's time, asked with the check), and only when the canary answered at least
``analysis.indicatorMinRequests`` model requests in that window: on fewer, one unlucky
request would be a breach, so the analysis rounds alone judge. Only while stable serves
traffic: stable is measured over the same window, and a breach while stable is troubled
too is not the canary's (:func:`~modeldeploy.analysis.evaluate.stable_troubled`). At 100% (the full step, the
bake) there is nothing to compare with, and a short window would turn a few seconds of a
provider's trouble (a burst of 429s) into a revert: the rounds judge over
``analysis.interval``, and an indicator reverts there on its third breaching round in a row
(:data:`~modeldeploy.analysis.evaluate.BREACHES_WITHOUT_STABLE`). Where the scrape interval is
not shorter than ``analysis.interval``, the rounds are as fast and nothing more runs.

The provider's address must be one the operator is allowed to query
(:class:`~modeldeploy.providers.ProviderAddresses`): the controller refuses a spec naming
another when it validates it (:meth:`AnalysisRunner.refusals`), and the runner checks
again before it reads a Secret or builds a provider, so no token is ever sent elsewhere.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import hashlib
import math
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from modeldeploy import engine, metrics
from modeldeploy import spec as s
from modeldeploy.analysis import presets, promql
from modeldeploy.analysis.evaluate import INDICATOR_SUFFIX, evaluate
from modeldeploy.analysis.report import AnalysisReport, AnalysisRequest
from modeldeploy.kube.client import KubeClient
from modeldeploy.measurement import Measurement, NoData, QueryResult
from modeldeploy.providers import MetricProvider, ProviderAddresses, ResourceKey, provider_for

# Distinct provider configurations kept at once; the oldest goes first beyond this.
MAX_PROVIDERS = 64
# How long scrape intervals read from a provider are trusted; a resource not found is
# looked up again after RESCAN_MISSING (its pods may not have been discovered yet).
SCRAPE_INTERVALS_TTL = dt.timedelta(minutes=5)
RESCAN_MISSING = dt.timedelta(seconds=10)
# A check between rounds runs this long after the canary's next scrape is due (a sample is
# queryable once its scrape has ended: milliseconds for a model pod's /metrics).
AFTER_SCRAPE = dt.timedelta(seconds=0.5)


@dataclass(frozen=True)
class _Secrets:
    # Never in a repr (a log line, a traceback's locals): the token is the namespace's.
    bearer_token: str | None = field(default=None, repr=False)
    ca_bundle_path: str | None = None


def _last_round(status: s.ModelDeploymentStatus) -> dt.datetime | None:
    stamps = [m.time for m in status.analysis if m.time]
    if not stamps:
        return None
    return dt.datetime.fromisoformat(max(stamps).replace("Z", "+00:00"))


def round_due(spec: s.ModelDeploymentSpec, status: s.ModelDeploymentStatus, now: dt.datetime) -> bool:
    assert spec.analysis is not None
    last = _last_round(status)
    return last is None or now - last >= s.parse_duration(spec.analysis.interval)


NO_BASELINE = "no baseline: stable was not measured while it served traffic in this rollout"


def stable_baselines(
    previous: list[s.MetricStatus], relative: list[str], now: dt.datetime
) -> dict[str, QueryResult]:
    """What stable "measures" once it serves nothing: its baseline, for each relative check.

    At 100% stable takes no traffic, so its query has no data and every relative round
    would be inconclusive until the rollout paused in the bake for good. The canary is
    judged against the last value measured on stable while it still served (kept in
    status, so a restart resumes with it); without one the check stays inconclusive.
    """
    baselines = {m.name: m.stable_baseline for m in previous if m.stable_baseline is not None}
    return {
        name: Measurement(baselines[name], now) if name in baselines else NoData(NO_BASELINE, now)
        for name in relative
    }


def keep_stable_baselines(
    report: AnalysisReport, previous: list[s.MetricStatus], stable_serves_traffic: bool
) -> AnalysisReport:
    """The report with each metric's stable baseline: this round's stable value while stable
    serves traffic and answered, else the one kept from before."""
    before = {m.name: m.stable_baseline for m in previous}
    metrics = tuple(
        m.model_copy(update={"stable_baseline": (
            m.stable_value if stable_serves_traffic and m.stable_value is not None
            else before.get(m.name)
        )})
        for m in report.metrics
    )
    return dataclasses.replace(report, metrics=metrics)


def judge_round(
    analysis: s.Analysis,
    status: s.ModelDeploymentStatus,
    request: AnalysisRequest,
    canary: dict[str, QueryResult],
    stable: dict[str, QueryResult],
    now: dt.datetime,
    checks: tuple[list[presets.MetricCheck], list[presets.IndicatorCheck]] | None = None,
    window: dt.timedelta | None = None,
) -> AnalysisReport:
    """One round's report from the answers to :meth:`AnalysisRunner._run`'s queries
    (``checks``: the gates and indicators judged, all of the analysis' by default;
    ``window``: the queries' range, ``analysis.interval`` by default)."""
    gates, indicators = checks if checks is not None else presets.resolve(analysis)
    answered = canary.get(presets.TRAFFIC_GUARD)
    requests = (answered.value * (window or s.parse_duration(analysis.interval)).total_seconds()
                if isinstance(answered, Measurement) else None)
    if not request.stable_serves_traffic:
        relative = [g.name for g in gates if g.relative_to_stable is not None] + [
            i.metric + INDICATOR_SUFFIX for i in indicators if i.relative_to_stable is not None
        ]
        stable = stable_baselines(status.analysis, relative, now)
    report = evaluate(request, gates, indicators, canary, stable, status.analysis,
                      analysis.no_data, now, requests)
    return keep_stable_baselines(report, status.analysis, request.stable_serves_traffic)


def fast_window(analysis: s.Analysis, scrape: dt.timedelta | None) -> dt.timedelta | None:
    """The window rollback indicators are checked over between rounds (two scrape
    intervals: the shortest that holds two samples), or None when there is no fast path:
    the scrape interval is unknown, or not shorter than ``analysis.interval`` (the rounds
    then come as often as new samples do)."""
    if scrape is None or scrape <= dt.timedelta(0) or scrape >= s.parse_duration(analysis.interval):
        return None
    return 2 * scrape


def window_text(window: dt.timedelta) -> str:
    """A PromQL range (whole milliseconds: PromQL takes no fractions)."""
    return f"{round(window.total_seconds() * 1000)}ms"


def fast_breach(
    report: AnalysisReport, requests: float, window: dt.timedelta
) -> AnalysisReport | None:
    """The report of a check between rounds, worded as one, if it found a breach."""
    if report.breach is None:
        return None
    over = (f"over the last {window.total_seconds():g}s ({requests:.0f} model requests), "
            "checked between analysis rounds")
    metrics = tuple(m.model_copy(update={"message": f"{m.message}; {over}"}) for m in report.metrics)
    breach = dataclasses.replace(report.breach, window=over)
    return dataclasses.replace(report, metrics=metrics, breach=breach,
                               summary=f"{breach.describe()}")


class AnalysisRunner:
    def __init__(
        self,
        kube: KubeClient,
        max_concurrent_queries: int = 32,
        addresses: ProviderAddresses | None = None,
    ) -> None:
        self._kube = kube
        self._addresses = addresses or ProviderAddresses(None)
        # Many rollouts analysed at once share this bound; each query has its own timeout.
        self._query_slots = asyncio.Semaphore(max_concurrent_queries)
        self._providers: dict[tuple[str, _Secrets], MetricProvider] = {}
        self._ca_dir = tempfile.TemporaryDirectory(prefix="modeldeploy-ca-")
        # The fast path's memory, by resource; lost on restart (a check then runs at once).
        # By provider configuration (one lookup serves every resource that names it).
        self._scrape_intervals: dict[str, tuple[dt.datetime, dict[ResourceKey, dt.timedelta]]] = {}
        self._scrape_every: dict[ResourceKey, dt.timedelta | None] = {}
        self._indicators_checked: dict[ResourceKey, dt.datetime] = {}
        self._canary_scraped: dict[ResourceKey, dt.datetime] = {}
        # The Secrets read by the last round: checks between rounds reuse them (a Secret
        # read per scrape interval would be an API request at that rate); rounds read anew.
        self._round_secrets: dict[ResourceKey, _Secrets] = {}

    def forget(self, namespace: str, name: str) -> None:
        """A deleted resource: drop what the fast path kept for it."""
        key = (namespace, name)
        for kept in (self._scrape_every, self._indicators_checked, self._canary_scraped,
                     self._round_secrets):
            kept.pop(key, None)

    async def measure(
        self, md: s.ModelDeployment, status: s.ModelDeploymentStatus, now: dt.datetime
    ) -> AnalysisReport | None:
        """A round's report when one is due; else a check of the rollback indicators
        between rounds, reported only when it found a breach; else None."""
        analysis = md.spec.analysis
        if analysis is None:
            return None
        request = engine.analysis_request(md.spec, status, now)
        if request is None:
            return None
        refused = self.refusals(md.spec)
        if refused:  # the controller refuses such a spec first: never reached, never sent
            raise ValueError("; ".join(refused))
        key = (md.metadata.namespace, md.metadata.name)
        gates, indicators = presets.resolve(analysis)
        if not round_due(md.spec, status, now):
            return await self._check_indicators(md, status, request, indicators, now)
        secrets = self._round_secrets[key] = await self._secrets(md)
        provider = self._provider(analysis.provider, secrets)
        canary, stable = await self._run(md, request, provider, gates, indicators, analysis.interval)
        report = judge_round(analysis, status, request, canary, stable, now, (gates, indicators))
        if request.mirror_percent:
            report = dataclasses.replace(report, mirror=await self._mirrored(md, request, provider, now))
        self._count(md, report)
        if indicators:
            self._indicators_checked[key] = now
            await self._learn_scrape_interval(md, provider, now)
        return report

    async def _check_indicators(
        self,
        md: s.ModelDeployment,
        status: s.ModelDeploymentStatus,
        request: AnalysisRequest,
        indicators: list[presets.IndicatorCheck],
        now: dt.datetime,
    ) -> AnalysisReport | None:
        """The fast path (see the module docstring)."""
        analysis = md.spec.analysis
        assert analysis is not None
        key = (md.metadata.namespace, md.metadata.name)
        if not indicators or not request.stable_serves_traffic:
            return None
        known = fast_window(analysis, self._scrape_every.get(key))
        due = None if known is None else self._next_check(key, known / 2)
        if due is not None and now < due:
            return None  # most ticks end here: nothing read, nothing asked
        if key not in self._round_secrets:  # read once (after a restart, before any round)
            self._round_secrets[key] = await self._secrets(md)
        provider = self._provider(analysis.provider, self._round_secrets[key])
        if self._scrape_every.get(key) is None:
            # Not known at the last round (e.g. Prometheus had not discovered the pods yet).
            await self._learn_scrape_interval(md, provider, now)
        window = fast_window(analysis, self._scrape_every.get(key))
        if window is None or not request.stable_serves_traffic:
            return None
        due = self._next_check(key, window / 2)
        if due is not None and now < due:
            return None
        self._indicators_checked[key] = now
        canary, stable = await self._run(
            md, request, provider, [presets.TRAFFIC_GUARD_CHECK, presets.LAST_SCRAPE_CHECK],
            indicators, window_text(window))
        scraped = canary.get(presets.LAST_SCRAPE)
        if isinstance(scraped, Measurement):
            self._canary_scraped[key] = dt.datetime.fromtimestamp(scraped.value, dt.UTC)
        answered = canary.get(presets.TRAFFIC_GUARD)
        requests = answered.value * window.total_seconds() if isinstance(answered, Measurement) else 0.0
        if requests < analysis.indicator_min_requests:
            return None  # too few requests to tell a fault from one unlucky answer
        report = judge_round(analysis, status, request, canary, stable, now, ([], indicators), window)
        breach = fast_breach(report, requests, window)
        if breach is not None:
            self._count(md, breach)
        return breach

    async def _mirrored(
        self, md: s.ModelDeployment, request: AnalysisRequest, provider: MetricProvider,
        now: dt.datetime,
    ) -> s.MirrorStatus:
        """What the canary answered and spent since the mirror step started: before the first
        setWeight every request it answers is a mirrored copy, so its spend is the extra
        upstream cost the mirror caused (after one, its share of users' requests counts too)."""
        seconds = max(1, math.ceil((now - request.since).total_seconds()))
        context = promql.QueryContext(
            name=md.metadata.name, namespace=md.metadata.namespace, revision=request.revision,
            stable_revision=request.stable_revision or request.revision, interval=f"{seconds}s")
        answered, spent = await asyncio.gather(
            self._timed(provider, promql.render(presets.MIRROR_REQUESTS, context)),
            self._timed(provider, promql.render(presets.MIRROR_COST, context)))
        return s.MirrorStatus(
            revision=request.revision, percent=request.mirror_percent,
            since=request.since.strftime("%Y-%m-%dT%H:%M:%SZ"),
            requests=answered.value if isinstance(answered, Measurement) else None,
            cost_usd=round(spent.value, 6) if isinstance(spent, Measurement) else None,
        )

    def indicator_check_in(
        self, md: s.ModelDeployment, status: s.ModelDeploymentStatus, now: dt.datetime
    ) -> float | None:
        """Seconds until the rollback indicators are next checked between rounds, for the
        work queue; None when they are not (no analysis now, no indicators, no fast path)."""
        analysis = md.spec.analysis
        key = (md.metadata.namespace, md.metadata.name)
        request = None if analysis is None else engine.analysis_request(md.spec, status, now)
        if analysis is None or request is None or not request.stable_serves_traffic:
            return None
        scrape = self._scrape_every.get(key)
        if scrape is None:
            # Unknown yet: look again when the provider may be asked anew (none of this
            # for a spec without indicators: nothing to check between rounds).
            has_indicators = bool(presets.resolve(analysis)[1])
            return RESCAN_MISSING.total_seconds() if has_indicators and key in self._scrape_every else None
        window = fast_window(analysis, scrape)
        if window is None:
            return None
        due = self._next_check(key, scrape)
        return 0.0 if due is None else max(0.0, (due - now).total_seconds())

    def _next_check(self, key: ResourceKey, scrape: dt.timedelta | None) -> dt.datetime | None:
        """When the next check between rounds is due (None: now): just after the canary's
        next scrape lands, so a breach is seen within a query of reaching Prometheus
        (unaligned checks would add up to a scrape interval); a scrape interval after the
        last check while the scrape times are not known."""
        last = self._indicators_checked.get(key)
        if last is None or scrape is None:
            return None
        scraped = self._canary_scraped.get(key)
        if scraped is None:
            return last + scrape
        after = scraped + AFTER_SCRAPE
        return after + scrape * (math.floor((last - after) / scrape) + 1)

    async def _learn_scrape_interval(
        self, md: s.ModelDeployment, provider: MetricProvider, now: dt.datetime
    ) -> None:
        """The resource's scrape interval: declared in the provider, else the provider's
        answer (one lookup per provider for every resource, kept SCRAPE_INTERVALS_TTL)."""
        assert md.spec.analysis is not None
        key = (md.metadata.namespace, md.metadata.name)
        declared = md.spec.analysis.provider.prometheus
        if declared is not None and declared.scrape_interval is not None:
            self._scrape_every[key] = s.parse_duration(declared.scrape_interval)
            return
        where = md.spec.analysis.provider.model_dump_json()
        cached = self._scrape_intervals.get(where)
        if cached is None or now - cached[0] >= SCRAPE_INTERVALS_TTL or (
                key not in cached[1] and now - cached[0] >= RESCAN_MISSING):
            found = await provider.scrape_intervals()
            cached = (now, found or {})
            if where not in self._scrape_intervals and len(self._scrape_intervals) >= MAX_PROVIDERS:
                self._scrape_intervals.pop(next(iter(self._scrape_intervals)))
            self._scrape_intervals[where] = cached
        self._scrape_every[key] = cached[1].get(key)

    def _count(self, md: s.ModelDeployment, report: AnalysisReport) -> None:
        for metric in report.metrics:
            metrics.MEASUREMENTS.labels(md.metadata.namespace, md.metadata.name, metric.name,
                                        metric.verdict.value).inc()

    async def _run(
        self,
        md: s.ModelDeployment,
        request: AnalysisRequest,
        provider: MetricProvider,
        gates: list[presets.MetricCheck],
        indicators: list[presets.IndicatorCheck],
        window: str,
    ) -> tuple[dict[str, QueryResult], dict[str, QueryResult]]:
        """Each check's query for the canary over ``window``, and stable's for relative
        checks and every indicator (see :func:`modeldeploy.analysis.evaluate.evaluate`)."""
        context = promql.QueryContext(
            name=md.metadata.name, namespace=md.metadata.namespace, revision=request.revision,
            stable_revision=request.stable_revision or request.revision,
            interval=window,
        )
        stable_context = promql.QueryContext(
            name=context.name, namespace=context.namespace,
            revision=request.stable_revision or request.revision,
            stable_revision=context.stable_revision, interval=context.interval,
        )
        jobs: dict[tuple[str, str], str] = {}
        # Stable serving nothing has nothing to measure (its baseline stands in).
        query_stable = bool(request.stable_revision) and request.stable_serves_traffic
        for gate in gates:
            jobs[("canary", gate.name)] = promql.render(gate.query, context)
            if gate.relative_to_stable is not None and query_stable:
                jobs[("stable", gate.name)] = promql.render(gate.query, stable_context)
        for indicator in indicators:
            key = indicator.metric + INDICATOR_SUFFIX
            jobs[("canary", key)] = promql.render(indicator.query, context)
            if query_stable:
                jobs[("stable", key)] = promql.render(indicator.query, stable_context)
        if query_stable and any(presets.is_request_share(i) for i in indicators):
            jobs[("stable", presets.STABLE_UPSTREAM)] = promql.render(
                presets.BUILTIN_QUERIES["upstream-error-rate"], stable_context)
        # The same PromQL is asked once even when a gate and an indicator share it.
        unique = sorted(set(jobs.values()))
        answers = dict(zip(unique, await asyncio.gather(*(self._timed(provider, q) for q in unique)),
                           strict=True))
        canary = {name: answers[q] for (track, name), q in jobs.items() if track == "canary"}
        stable = {name: answers[q] for (track, name), q in jobs.items() if track == "stable"}
        return canary, stable

    async def _timed(self, provider: MetricProvider, query: str) -> QueryResult:
        async with self._query_slots:
            started = time.perf_counter()
            try:
                return await provider.query(query)
            finally:
                metrics.QUERY_SECONDS.observe(time.perf_counter() - started)

    def refusals(self, spec: s.ModelDeploymentSpec) -> list[str]:
        """Why the spec's provider may not be queried (``<field>: <problem>`` lines; none: it may)."""
        if spec.analysis is None:
            return []
        return self._addresses.refusals(spec.analysis.provider)

    def _provider(self, config: s.Provider, secrets: _Secrets) -> MetricProvider:
        key = (config.model_dump_json(), secrets)
        provider = self._providers.get(key)
        if provider is None:
            if len(self._providers) >= MAX_PROVIDERS:
                # Not closed here: a round in flight may still use it (its connections
                # close when it is collected).
                self._providers.pop(next(iter(self._providers)))
            provider = self._providers[key] = provider_for(config, secrets)
        return provider

    async def _secrets(self, md: s.ModelDeployment) -> _Secrets:
        assert md.spec.analysis is not None
        config = md.spec.analysis.provider.prometheus
        if config is None:
            return _Secrets()
        namespace = md.metadata.namespace
        token = ca_path = None
        if config.bearer_token_secret is not None:
            ref = config.bearer_token_secret
            token = await self._kube.read_secret_key(namespace, ref.name, ref.key)
        if config.ca_secret is not None:
            ref = config.ca_secret
            pem = await self._kube.read_secret_key(namespace, ref.name, ref.key)
            if pem:
                ca_path = self._ca_bundle(pem)
        return _Secrets(bearer_token=token, ca_bundle_path=ca_path)

    def _ca_bundle(self, pem: str) -> str:
        path = Path(self._ca_dir.name) / f"{hashlib.sha256(pem.encode()).hexdigest()[:16]}.pem"
        if not path.exists():
            path.write_text(pem)
        return str(path)
