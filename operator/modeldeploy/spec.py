"""The ModelDeployment resource as pydantic models: the base layer everything else uses.

These models are the single source of truth for the resource's shape: the CRD's
openAPIV3Schema is generated from them (``python -m modeldeploy.crd``), and the
operator validates every object it reads with them, so a rule lives here once and
reaches both the API server (as schema or CEL) and the operator (as a validator).

Conventions (Kubernetes API conventions, Argo Rollouts where they are silent):
- camelCase field names via aliases; unknown fields are refused (``extra="forbid"``).
- Durations are strings such as ``30s``, ``5m``, ``1h30m`` (see :func:`parse_duration`).
- Keyed unions (a canary step is exactly one of ``setWeight``, ``pause``,
  ``analysis``; a strategy exactly one of ``canary``, ``blueGreen``) are modelled
  as objects with optional members plus an "exactly one" rule, which becomes a
  CEL rule in the CRD so ``kubectl apply`` is refused with the same message.
- Defaults live in these models, not in the CRD, so the stored object is what the
  user (or git) wrote and GitOps tools see no drift.
"""

from __future__ import annotations

import re
from datetime import timedelta
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_camel
from pydantic.config import JsonDict

GROUP = "modeldeploy.io"
VERSION = "v1alpha1"
KIND = "ModelDeployment"
PLURAL = "modeldeployments"
SINGULAR = "modeldeployment"
SHORT_NAMES = ["md"]

# Pod labels (DESIGN.md): Prometheus relabels them to modeldeploy_name, ...
LABEL_NAME = "modeldeploy.io/name"
LABEL_REVISION = "modeldeploy.io/revision"
LABEL_TRACK = "modeldeploy.io/track"
GPU_RESOURCE = "nvidia.com/gpu"

# --------------------------------------------------------------------------- durations

DURATION_PATTERN = r"^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$"
_DURATION_PART = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ms|s|m|h)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


# The longest wait the spec may ask for (durations, autoPromotionSeconds). Longer ones
# are refused rather than overflowing timedelta or datetime arithmetic in the engine.
MAX_WAIT = timedelta(days=36500)


def parse_duration(text: str) -> timedelta:
    """Parse a Go-style duration (``30s``, ``5m``, ``1h30m``, ``250ms``) into a timedelta."""
    if not re.fullmatch(DURATION_PATTERN, text):
        raise ValueError(
            f"invalid duration {text!r}: use a number and a unit (ms, s, m, h), e.g. 30s, 5m, 1h30m"
        )
    seconds = sum(float(n) * _UNIT_SECONDS[u] for n, u in _DURATION_PART.findall(text))
    if seconds > MAX_WAIT.total_seconds():
        raise ValueError(
            f"duration {text!r} is too long: at most {MAX_WAIT.days} days (876000h)"
        )
    return timedelta(seconds=seconds)


def _check_duration(text: str) -> str:
    parse_duration(text)
    return text


# The pattern goes to the CRD; the operator's own check gives the friendlier message.
Duration = Annotated[
    str,
    AfterValidator(_check_duration),
    Field(
        description="A duration such as 30s, 5m or 1h30m.",
        json_schema_extra={"pattern": DURATION_PATTERN},
    ),
]

Weight = Annotated[int, Field(ge=0, le=100, description="Percent of traffic, 0-100.")]

# Names of metrics and presets: lowercase words joined by dashes, as in Prometheus rule names.
MetricName = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9-]{0,62}$")]


def _exactly_one_rule(fields: list[str], what: str) -> JsonDict:
    """A CEL rule for a keyed union: exactly one of ``fields`` is set."""
    count = " + ".join(f"(has(self.{f}) ? 1 : 0)" for f in fields)
    message = f"{what} must set exactly one of {', '.join(fields)}"
    return {"rule": f"{count} == 1", "message": message}


def _exactly_one(model: BaseModel, fields: list[str], what: str) -> None:
    by_alias = {(info.alias or name): name for name, info in type(model).model_fields.items()}
    given = [f for f in fields if getattr(model, by_alias[f]) is not None]
    if len(given) != 1:
        found = ", ".join(given) if given else "none"
        raise ValueError(f"{what} must set exactly one of {', '.join(fields)} (found: {found})")


class Model(BaseModel):
    """Base: camelCase aliases, unknown fields refused, both names accepted in Python."""

    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=False
    )


# --------------------------------------------------------------------------- workload


class PodTemplate(Model):
    """A Kubernetes PodTemplateSpec. The operator adds its labels; the body is Kubernetes'."""

    metadata: dict[str, Any] | None = Field(
        None, description="Pod labels and annotations (the operator adds its own labels)."
    )
    spec: dict[str, Any] = Field(
        description="A Kubernetes PodSpec; needs at least one container.",
        # The API server checks the containers' names and images; the rest of the
        # PodSpec is Kubernetes' own and is kept as written (no pruning).
        json_schema_extra={
            "required": ["containers"],
            "properties": {
                "containers": {
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        "type": "object",
                        "required": ["name", "image"],
                        "properties": {
                            "name": {"type": "string", "minLength": 1},
                            "image": {"type": "string", "minLength": 1},
                        },
                        "additionalProperties": True,
                    },
                }
            },
        },
    )

    @field_validator("spec")
    @classmethod
    def _needs_containers(cls, spec: dict[str, Any]) -> dict[str, Any]:
        containers = spec.get("containers")
        if not isinstance(containers, list) or not containers:
            raise ValueError("template.spec.containers must list at least one container")
        for i, container in enumerate(containers):
            if not isinstance(container, dict) or not container.get("name"):
                raise ValueError(f"template.spec.containers[{i}].name is required")
            if not container.get("image"):
                raise ValueError(f"template.spec.containers[{i}].image is required")
        return spec

    def gpu_count(self) -> int:
        """GPUs the pod asks for (limits win over requests, as the scheduler reads them)."""
        total = 0
        for container in self.spec.get("containers", []):
            resources = container.get("resources") or {}
            for section in ("limits", "requests"):
                value = (resources.get(section) or {}).get(GPU_RESOURCE)
                if value is not None:
                    total += int(value)
                    break
        return total


class ServicePort(Model):
    """The Service the operator owns in front of the model pods."""

    port: int = Field(80, ge=1, le=65535, description="Port the Service listens on.")
    target_port: int | str = Field(
        8080, description="Container port (number or name) the Service sends traffic to."
    )


# --------------------------------------------------------------------------- strategy


class Pause(Model):
    """Wait for ``duration``, or until ``modeldeploy promote`` when no duration is given."""

    duration: Duration | None = None


class AnalysisStep(Model):
    """Hold the step until analysis has passed ``measurements`` times in a row."""

    measurements: int = Field(
        3, ge=1, le=100, description="Consecutive passing measurements needed to go on."
    )
    metrics: list[MetricName] | None = Field(
        None, description="Only these metrics (by name); all configured metrics when omitted."
    )


# A JSON path as evaluation checks read one: ``$``, then ``.key`` or ``[index]`` parts.
JSON_PATH_PATTERN = r"^\$(\.[A-Za-z_][A-Za-z0-9_-]*|\[[0-9]+\])*$"


class CompareToStable(Model):
    """Stable answers the same cases in the same run; the canary must agree with it."""

    path: str = Field(
        pattern=JSON_PATH_PATTERN, max_length=256,
        description="JSON path of the answer compared, e.g. $.score.",
    )
    tolerance: float = Field(
        0, ge=0, allow_inf_nan=False,
        description="Numbers agree within this much; other values must be equal.",
    )
    min_agreement: float = Field(
        0.9, ge=0, le=1, allow_inf_nan=False,
        description="Share of the cases both answered on which they must agree.",
    )


class EvaluationStep(Model):
    """Send a fixed set of cases to the new revision alone and judge its answers.

    The cases are JSON lines in a ConfigMap of the namespace, one per line:
    ``{"id": "...", "body": {...}, "expect": {"status": 200, "fields": [{"path": "$.score",
    "min": 60, "max": 80}]}}`` (a field check: equals, min, max, pattern, length). See the
    README's "Evaluation steps".
    """

    config_map: str = Field(
        pattern=r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$", max_length=253,
        description="The ConfigMap (same namespace) holding the cases.",
    )
    cases_key: str = Field(
        "cases.jsonl", pattern=r"^[-._a-zA-Z0-9]+$", max_length=253,
        description="Its key holding the cases, as JSON lines.",
    )
    schema_key: str | None = Field(
        None, pattern=r"^[-._a-zA-Z0-9]+$", max_length=253,
        description="Its key holding a JSON Schema every 2xx answer must match.",
    )
    path: str = Field(
        pattern=r"^/[^\s?#]*$", max_length=1024, description="The path each case is sent to."
    )
    method: Literal["POST", "PUT", "GET"] = "POST"
    sample_size: int | None = Field(
        None, ge=1, le=1000,
        description="Cases run per evaluation (a sample seeded by the revision); all when unset.",
    )
    concurrency: int = Field(4, ge=1, le=64, description="Cases in flight at once.")
    timeout_seconds: float = Field(
        60, gt=0, le=600, allow_inf_nan=False, description="Per case, for the whole answer."
    )
    min_score: float = Field(
        ge=0, le=1, allow_inf_nan=False,
        description="Share of the cases that must pass (0.95: 95%).",
    )
    max_unanswered: float = Field(
        0.1, ge=0, le=1, allow_inf_nan=False,
        description="Beyond this share of cases with no answer (timeout, refused connection) "
        "the evaluation is inconclusive rather than failed.",
    )
    compare_to_stable: CompareToStable | None = None


class MirrorStep(Model):
    """Copy a share of live requests to the new revision; users only ever see stable's
    answers (needs a router that can mirror: gatewayAPI)."""

    percent: int = Field(ge=1, le=100, description="Share of requests copied to the canary.")
    duration: Duration = Field(description="How long the mirror runs; analysis judges it meanwhile.")


_STEP_KINDS = ["setWeight", "pause", "analysis", "evaluation", "mirror"]


class CanaryStep(Model):
    """One step of a canary: exactly one of setWeight, pause, analysis, evaluation or mirror."""

    model_config = ConfigDict(
        json_schema_extra={"x-kubernetes-validations": [_exactly_one_rule(_STEP_KINDS, "a step")]}
    )

    set_weight: Weight | None = None
    pause: Pause | None = None
    analysis: AnalysisStep | None = None
    evaluation: EvaluationStep | None = None
    mirror: MirrorStep | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> CanaryStep:
        _exactly_one(self, _STEP_KINDS, "a step")
        return self


class ReplicasRouting(Model):
    """Split traffic by pod counts behind one Service (no mesh or gateway needed)."""


class GatewayAPIRouting(Model):
    """Split traffic with the weights of a Gateway API HTTPRoute's backendRefs."""

    http_route: str = Field(
        pattern=r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$",
        max_length=253,
        description="Name of the HTTPRoute (same namespace) whose backendRefs the operator sets.",
    )


_ROUTER_KINDS = ["replicas", "gatewayAPI"]


class TrafficRouting(Model):
    """Which traffic router splits canary and stable traffic: exactly one."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [_exactly_one_rule(_ROUTER_KINDS, "trafficRouting")]
        }
    )

    replicas: ReplicasRouting | None = None
    gateway_api: GatewayAPIRouting | None = Field(None, alias="gatewayAPI")

    @model_validator(mode="after")
    def _one_router(self) -> TrafficRouting:
        _exactly_one(self, _ROUTER_KINDS, "trafficRouting")
        return self


def _default_steps() -> list[CanaryStep]:
    # Timed pauses, not analysis steps, so a spec without `analysis` is valid as written;
    # with `analysis`, its gates and rollback indicators run through the whole canary anyway.
    return [
        CanaryStep(set_weight=10),
        CanaryStep(pause=Pause(duration="1m")),
        CanaryStep(set_weight=50),
        CanaryStep(pause=Pause(duration="1m")),
        CanaryStep(set_weight=100),
    ]


class CanaryStrategy(Model):
    """Shift traffic to the new revision step by step."""

    steps: list[CanaryStep] = Field(
        default_factory=_default_steps,
        min_length=1,
        max_length=50,
        description="The steps; default 10%, pause 1m, 50%, pause 1m, 100%.",
    )
    traffic_routing: TrafficRouting = Field(
        default_factory=lambda: TrafficRouting(replicas=ReplicasRouting()),
        description="How traffic is split; replicas by default.",
    )
    dynamic_stable_scale: bool | None = Field(
        None,
        description=(
            "Scale stable down as canary scales up (no surge). Default: on for templates "
            "that request nvidia.com/gpu (spare GPUs rarely exist), off otherwise."
        ),
    )


class BlueGreenStrategy(Model):
    """Bring up the whole new revision beside the old one, then switch all traffic at once."""

    preview_service: str | None = Field(
        None,
        pattern=r"^[a-z]([-a-z0-9]*[a-z0-9])?$",
        max_length=63,
        description="Name of the preview Service for the new revision; <name>-preview by default.",
    )
    auto_promotion_seconds: int | None = Field(
        None,
        ge=0,
        description="Switch this long after green is ready (and analysis passed); "
        "unset waits for `modeldeploy promote`.",
    )
    pre_promotion_analysis: AnalysisStep | None = Field(
        None, description="Analysis of the preview before the switch."
    )
    pre_promotion_evaluation: EvaluationStep | None = Field(
        None, description="An evaluation of green (through the preview Service) before the switch."
    )

    @field_validator("auto_promotion_seconds")
    @classmethod
    def _representable(cls, seconds: int | None) -> int | None:
        if seconds is not None and seconds > MAX_WAIT.total_seconds():
            raise ValueError(
                f"autoPromotionSeconds {seconds} is too long: at most "
                f"{int(MAX_WAIT.total_seconds())} ({MAX_WAIT.days} days)"
            )
        return seconds


_STRATEGY_KINDS = ["canary", "blueGreen"]


class Strategy(Model):
    """How a new revision is rolled out: exactly one of canary or blueGreen."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [_exactly_one_rule(_STRATEGY_KINDS, "strategy")]
        }
    )

    canary: CanaryStrategy | None = None
    blue_green: BlueGreenStrategy | None = None

    @model_validator(mode="after")
    def _one_strategy(self) -> Strategy:
        _exactly_one(self, _STRATEGY_KINDS, "strategy")
        return self


# --------------------------------------------------------------------------- analysis


class Preset(StrEnum):
    """A built-in metric over the model services' metric contract, or a service bundle.

    A bundle (image-gen, song-analyzer, chat-proxy, orchestrator, textgen) expands to
    the metrics and rollback indicators with the thresholds that service was run with.
    """

    SUCCESS_RATE = "success-rate"
    ERROR_RATE = "error-rate"
    TIMEOUT_RATE = "timeout-rate"
    UNCACHED_ERROR_RATE = "uncached-error-rate"
    UPSTREAM_ERROR_RATE = "upstream-error-rate"
    LATENCY_P95 = "latency-p95"
    MEAN_LATENCY = "mean-latency"
    COST_PER_REQUEST = "cost-per-request"
    COST_PER_HOUR = "cost-per-hour"
    CACHE_HIT_RATE = "cache-hit-rate"
    MEMORY_UTILIZATION = "memory-utilization"
    IMAGE_GEN = "image-gen"
    SONG_ANALYZER = "song-analyzer"
    CHAT_PROXY = "chat-proxy"
    ORCHESTRATOR = "orchestrator"
    TEXTGEN = "textgen"


BUILTIN_METRICS: frozenset[str] = frozenset(
    p.value
    for p in Preset
    if p
    not in {Preset.IMAGE_GEN, Preset.SONG_ANALYZER, Preset.CHAT_PROXY, Preset.ORCHESTRATOR,
            Preset.TEXTGEN}
)

# Placeholders a custom query may use; anything else in {{ }} is refused at validation.
QUERY_PLACEHOLDERS: frozenset[str] = frozenset(
    {"name", "namespace", "revision", "stableRevision", "interval"}
)
_PLACEHOLDER = re.compile(r"\{\{\s*([^{}]*?)\s*\}\}")


class ThresholdRange(Model):
    """Passing values: min <= value <= max; either bound may be left out, not both."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": "has(self.min) || has(self.max)",
                    "message": "thresholdRange needs min or max",
                },
                {
                    "rule": "!has(self.min) || !has(self.max) || self.min <= self.max",
                    "message": "thresholdRange.min must not be greater than max",
                },
            ]
        }
    )

    min: float | None = None
    max: float | None = None

    @model_validator(mode="after")
    def _bounds(self) -> ThresholdRange:
        if self.min is None and self.max is None:
            raise ValueError("thresholdRange needs min or max")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(
                f"thresholdRange.min ({self.min}) must not be greater than max ({self.max})"
            )
        return self

    def describe(self) -> str:
        if self.min is not None and self.max is not None:
            return f"{self.min:g}..{self.max:g}"
        if self.min is not None:
            return f"min {self.min:g}"
        return f"max {self.max:g}"


class RelativeToStable(Model):
    """Judge the canary against the stable revision measured in the same window.

    ``maxRatio: 1.2`` passes while canary <= 1.2 x stable (latency);
    ``maxIncrease: 0.01`` passes while canary <= stable + 0.01 (error rate);
    ``minRatio`` / ``maxDecrease`` are the mirror images for higher-is-better metrics.
    """

    max_ratio: float | None = Field(None, gt=0)
    max_increase: float | None = Field(None, ge=0)
    min_ratio: float | None = Field(None, gt=0)
    max_decrease: float | None = Field(None, ge=0)

    @model_validator(mode="after")
    def _some_bound(self) -> RelativeToStable:
        bounds = (self.max_ratio, self.max_increase, self.min_ratio, self.max_decrease)
        if all(bound is None for bound in bounds):
            raise ValueError(
                "relativeToStable needs one of maxRatio, maxIncrease, minRatio, maxDecrease"
            )
        return self


class Metric(Model):
    """A metric the analysis measures each interval.

    With ``query``: a custom PromQL query; it may use {{name}}, {{namespace}},
    {{revision}}, {{stableRevision}} and {{interval}}, and must return one series.
    Without ``query``: ``name`` must be a built-in metric, whose thresholds this overrides.
    """

    name: MetricName
    query: str | None = Field(None, min_length=1, max_length=8192)
    threshold_range: ThresholdRange | None = None
    relative_to_stable: RelativeToStable | None = None
    failure_limit: int | None = Field(
        None, ge=0, le=100, description="Failed measurements in a row tolerated; default 2."
    )
    inconclusive_limit: int | None = Field(
        None, ge=0, le=100, description="Inconclusive measurements in a row tolerated; default 3."
    )

    @field_validator("query")
    @classmethod
    def _known_placeholders(cls, query: str | None) -> str | None:
        if query is None:
            return None
        unknown = sorted(set(_PLACEHOLDER.findall(query)) - QUERY_PLACEHOLDERS)
        if unknown:
            allowed = ", ".join("{{" + p + "}}" for p in sorted(QUERY_PLACEHOLDERS))
            raise ValueError(
                f"unknown placeholder {', '.join('{{' + u + '}}' for u in unknown)}; "
                f"use one of {allowed}"
            )
        return query

    @model_validator(mode="after")
    def _query_or_builtin(self) -> Metric:
        if self.query is None and self.name not in BUILTIN_METRICS:
            raise ValueError(
                f"metric {self.name!r} has no query and is not a built-in metric "
                f"({', '.join(sorted(BUILTIN_METRICS))}); add a query or use a built-in name"
            )
        if self.query is not None and self.threshold_range is None and (
            self.relative_to_stable is None
        ):
            raise ValueError(
                f"metric {self.name!r} needs thresholdRange or relativeToStable to be judged"
            )
        return self


class RollbackIndicator(Model):
    """A metric whose single breach reverts the canary at once (no failureLimit) while stable
    serves traffic; at 100% (nothing to compare with), after 3 breaching rounds in a row."""

    metric: MetricName = Field(description="A built-in metric or one listed in analysis.metrics.")
    threshold_range: ThresholdRange | None = None
    relative_to_stable: RelativeToStable | None = None

    @model_validator(mode="after")
    def _has_bound(self) -> RollbackIndicator:
        if self.threshold_range is None and self.relative_to_stable is None:
            raise ValueError(
                f"rollback indicator {self.metric!r} needs thresholdRange or relativeToStable"
            )
        return self


class SecretKeyRef(Model):
    name: str = Field(min_length=1, max_length=253)
    key: str = Field(min_length=1, max_length=253)


class PrometheusProvider(Model):
    """A Prometheus (or compatible) HTTP API."""

    address: str = Field(
        pattern=r"^https?://[^\s]+$", description="Base URL, e.g. http://prometheus.monitoring:9090"
    )
    timeout: Duration = "10s"
    bearer_token_secret: SecretKeyRef | None = Field(
        None, description="Secret (same namespace as the operator reads it) holding a token."
    )
    insecure_skip_verify: bool = False
    ca_secret: SecretKeyRef | None = Field(None, description="Secret holding a PEM CA bundle.")
    scrape_interval: Duration | None = Field(
        None,
        description="How often this Prometheus scrapes the model service's pods. Rollback "
        "indicators are checked at this cadence between analysis rounds. Unset: read from "
        "Prometheus' targets API (the slowest interval among the resource's pods).",
    )


_PROVIDER_KINDS = ["prometheus"]


class Provider(Model):
    """Where measurements come from: exactly one provider."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [_exactly_one_rule(_PROVIDER_KINDS, "provider")]
        }
    )

    prometheus: PrometheusProvider | None = None

    @model_validator(mode="after")
    def _one_provider(self) -> Provider:
        _exactly_one(self, _PROVIDER_KINDS, "provider")
        return self


class Analysis(Model):
    """What decides whether the canary is healthy."""

    interval: Duration = "30s"
    provider: Provider
    presets: list[Preset] = Field(default_factory=list, max_length=20)
    metrics: list[Metric] = Field(default_factory=list, max_length=50)
    rollback_indicators: list[RollbackIndicator] = Field(default_factory=list, max_length=50)
    no_data: Literal["inconclusive", "fail"] = Field(
        "inconclusive", description="How a measurement with no data counts; never a pass."
    )
    on_inconclusive: Literal["pause", "rollback"] = Field(
        "pause", description="What to do once inconclusiveLimit is exceeded."
    )
    indicator_min_requests: int = Field(
        10, ge=1, le=100000,
        description="Model requests the canary must have answered in the short window "
        "(two scrape intervals) before a rollback indicator checked between analysis rounds "
        "may revert it; fewer, and only the analysis rounds judge the indicators.",
    )

    @model_validator(mode="after")
    def _indicators_name_metrics(self) -> Analysis:
        names = [m.name for m in self.metrics]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"analysis.metrics names must be unique (repeated: {duplicates})")
        known = BUILTIN_METRICS | set(names)
        for i, indicator in enumerate(self.rollback_indicators):
            if indicator.metric not in known:
                raise ValueError(
                    f"rollbackIndicators[{i}].metric {indicator.metric!r} is neither a built-in "
                    f"metric nor listed in analysis.metrics"
                )
        return self


class Rollback(Model):
    """Automatic revert, and how long a promoted revision stays on probation."""

    automatic: bool = True
    bake_time: Duration = Field(
        "5m",
        description="After 100%, analysis keeps running this long with the old revision warm.",
    )


# --------------------------------------------------------------------------- notifications

# What a webhook may be told about (modeldeploy.notify derives them from the status a
# reconcile wrote): a rollout Started, Paused (held by a person, by analysis or by the
# Gateway, or waiting at a pause step with no duration; a timed pause step is routine and
# not announced), Promoted (a first deployment too), RolledBack (analysis or a rollback
# indicator reverted it) or Failed (stopped and reverted without analysis judging it bad:
# `modeldeploy abort`, progressDeadline).
NotificationEvent = Literal["Started", "Paused", "Promoted", "RolledBack", "Failed"]
NOTIFICATION_EVENTS: tuple[NotificationEvent, ...] = (
    "Started", "Paused", "Promoted", "RolledBack", "Failed",
)


class WebhookSecretKeyRef(Model):
    """A key of a Secret in the ModelDeployment's own namespace."""

    name: str = Field(
        pattern=r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$", max_length=253,
        description="Name of the Secret (same namespace as the ModelDeployment).",
    )
    key: str = Field(
        pattern=r"^[-._a-zA-Z0-9]+$", max_length=253,
        description="Key of the Secret whose value is the webhook URL.",
    )


class WebhookURLSource(Model):
    """Where the webhook URL is read; it often carries a token, so never the spec itself."""

    secret_key_ref: WebhookSecretKeyRef


class Webhook(Model):
    """An HTTP endpoint told about the rollout's transitions (POST, JSON body).

    The URL is read from the Secret at each delivery (a rotated URL takes effect at the
    next notification) and is never written to status, events or logs.
    """

    name: str = Field(
        pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", max_length=63,
        description="A DNS label naming the webhook in events and in the "
        "modeldeploy_notifications_total metric (never the URL).",
    )
    url_from: WebhookURLSource = Field(description="The Secret key holding the URL (http or https).")
    format: Literal["json", "slack"] = Field(
        "json",
        description="json: the full notification (README, Notifications); slack: "
        "{\"text\": <summary line>}, as Slack's and Mattermost's incoming webhooks take it.",
    )
    events: list[NotificationEvent] | None = Field(
        None, min_length=1, max_length=len(NOTIFICATION_EVENTS),
        description="Which transitions to send (Started, Paused, Promoted, RolledBack, Failed); "
        "all when omitted.",
        json_schema_extra={"x-kubernetes-list-type": "set"},
    )

    @field_validator("events")
    @classmethod
    def _no_repeats(cls, events: list[NotificationEvent] | None) -> list[NotificationEvent] | None:
        if events is not None and len(set(events)) != len(events):
            repeated = sorted({e for e in events if events.count(e) > 1})
            raise ValueError(f"events lists {', '.join(repeated)} more than once: list each once")
        return events


class Notifications(Model):
    """Who is told when a rollout starts, pauses, is promoted, rolls back or fails.

    Without ``notifications`` the operator's default webhook (the chart's
    ``notifications.defaultWebhook``) is used, if one is set; a resource's own list
    replaces that default, and ``webhooks: []`` turns it off for this resource.
    """

    webhooks: list[Webhook] = Field(
        default_factory=list, max_length=10,
        description="Webhooks, each named once; an empty list sends nothing (not even the "
        "operator's default webhook).",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]},
    )

    @model_validator(mode="after")
    def _unique_names(self) -> Notifications:
        names = [w.name for w in self.webhooks]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise ValueError(
                f"notifications.webhooks names must be unique (repeated: {', '.join(repeated)}): "
                "rename one"
            )
        return self


# --------------------------------------------------------------------------- spec


class ModelDeploymentSpec(Model):
    """What the user asks for. The operator never writes it (GitOps owns it)."""

    replicas: int = Field(1, ge=0, le=1000, description="Pods at 100%; not part of the revision.")
    template: PodTemplate
    config: dict[str, str] | None = Field(
        None,
        description="App config / feature flags, given to the pods as environment variables "
        "from an immutable ConfigMap; part of the revision, so a flag change is canaried.",
    )
    service: ServicePort = Field(default_factory=ServicePort)
    strategy: Strategy = Field(default_factory=lambda: Strategy(canary=CanaryStrategy()))
    analysis: Analysis | None = None
    rollback: Rollback = Field(default_factory=Rollback)
    progress_deadline: Duration = Field(
        "10m", description="A canary not ready this long after a step starts aborts the rollout."
    )
    revision_history_limit: int = Field(
        10, ge=1, le=100, description="Known revisions kept in status.history."
    )
    notifications: Notifications | None = Field(
        None,
        description="Webhooks told about the rollout's transitions; unset: the operator's "
        "default webhook, if the chart sets one.",
    )

    @field_validator("config")
    @classmethod
    def _env_names(cls, config: dict[str, str] | None) -> dict[str, str] | None:
        for key in config or {}:
            if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_.-]*", key):
                raise ValueError(
                    f"config key {key!r} is not a valid environment variable name "
                    "(letters, digits, _ . -, not starting with a digit)"
                )
        return config

    @model_validator(mode="after")
    def _analysis_steps_need_analysis(self) -> ModelDeploymentSpec:
        if self.analysis is not None:
            return self
        canary = self.strategy.canary
        if canary and any(step.analysis is not None for step in canary.steps):
            raise ValueError(
                "strategy.canary.steps has an analysis step but spec.analysis is unset"
            )
        if canary and any(step.mirror is not None for step in canary.steps):
            raise ValueError(
                "strategy.canary.steps has a mirror step but spec.analysis is unset: analysis "
                "judges the canary on the mirrored requests"
            )
        blue_green = self.strategy.blue_green
        if blue_green and blue_green.pre_promotion_analysis is not None:
            raise ValueError(
                "strategy.blueGreen.prePromotionAnalysis is set but spec.analysis is unset"
            )
        return self


# --------------------------------------------------------------------------- status


class Phase(StrEnum):
    PENDING = "Pending"
    PROGRESSING = "Progressing"
    PAUSED = "Paused"
    PROMOTING = "Promoting"
    SUCCEEDED = "Succeeded"
    ROLLED_BACK = "RolledBack"
    FAILED = "Failed"
    DEGRADED = "Degraded"


class Verdict(StrEnum):
    PASS = "Pass"
    FAIL = "Fail"
    INCONCLUSIVE = "Inconclusive"


class Condition(Model):
    """The standard Kubernetes condition shape (metav1.Condition)."""

    type: str
    status: Literal["True", "False", "Unknown"]
    reason: str = Field(pattern=r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$", max_length=1024)
    message: str = Field("", max_length=32768)
    last_transition_time: str
    observed_generation: int | None = None


class MetricStatus(Model):
    """The last measurement of one metric, as an SRE reads it."""

    name: str
    value: float | None = None
    stable_value: float | None = None
    threshold: str = ""
    verdict: Verdict
    message: str = ""
    time: str
    consecutive_failures: int = 0
    consecutive_inconclusive: int = 0
    consecutive_passes: int = 0
    stable_baseline: float | None = Field(
        None,
        description="relativeToStable: the last value measured on stable while it still served "
        "traffic; once the canary serves 100% the canary is judged against it.",
    )


class EvaluationFailure(Model):
    """A case that did not pass, and why."""

    id: str = Field(max_length=256)
    reason: str = Field(max_length=1024)


class EvaluationStatus(Model):
    """The last evaluation of the new revision: what an SRE reads to see why it failed."""

    revision: str
    step: int = Field(ge=0, description="The step (index into the rollout's steps) it ran for.")
    step_started_at: str = Field(description="The start of the step it ran for.")
    finished_at: str
    verdict: Verdict
    score: float | None = Field(None, description="Share of the cases that passed.")
    min_score: float
    cases: int = Field(0, description="Cases run.")
    passed: int = 0
    unanswered: int = Field(0, description="Cases with no answer (timeout, refused connection).")
    agreement: float | None = Field(
        None, description="compareToStable: share of the cases both answered that agree."
    )
    tokens: int = Field(0, description="Tokens the evaluation's calls cost (canary and stable).")
    cost_usd: float = Field(0, description="USD the evaluation's calls cost (canary and stable).")
    failures: list[EvaluationFailure] = Field(
        default_factory=list, max_length=5, description="The first few failing cases."
    )
    message: str = ""


class MirrorStatus(Model):
    """What a mirror step has copied to the canary so far, and what that cost upstream."""

    revision: str
    percent: int
    since: str
    requests: float | None = Field(None, description="Mirrored requests the canary answered.")
    cost_usd: float | None = Field(
        None, description="Extra upstream cost of the mirrored requests (the canary's spend)."
    )


class HistoryEntry(Model):
    """One revision's outcome, newest first."""

    revision: str
    outcome: Literal["Promoted", "RolledBack", "Aborted", "Superseded", "InProgress"]
    reason: str = ""
    time: str
    steps: list[str] = Field(default_factory=list, max_length=100)


class ControlRequest(Model):
    """A manual control (``modeldeploy promote|abort|retry|pause|resume``) awaiting the operator.

    Written to the status subresource, consumed and cleared by the operator, so the
    spec, which GitOps owns, is never touched.
    """

    action: Literal["promote", "promoteFull", "abort", "retry", "pause", "resume"]
    requested_at: str
    requested_by: str = ""


class ModelDeploymentStatus(Model):
    """What the operator observed and decided. Everything needed to resume lives here."""

    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="ignore"
    )

    observed_generation: int | None = None
    phase: Phase | None = None
    message: str | None = None
    stable_revision: str | None = None
    canary_revision: str | None = None
    canary_weight: int | None = Field(None, ge=0, le=100)
    current_step: int | None = Field(None, ge=0)
    step_started_at: str | None = None
    paused_at: str | None = None
    pause_reason: str | None = None
    pause_cause: Literal[
        "user", "inconclusive", "analysisFailed", "evaluationInconclusive", "routeNotAccepted"
    ] | None = Field(
        None,
        description="Who holds the rollout: the user, analysis (inconclusive, failed), an "
        "inconclusive evaluation (resume runs it again), or the Gateway (no parent accepts the "
        "HTTPRoute; resumes once one does).",
    )
    not_ready_since: str | None = Field(
        None, description="Since when the current step waits for readiness (progressDeadline)."
    )
    fast_rollout: bool | None = Field(
        None, description="Rolling out a known-good revision: pause and analysis steps skipped."
    )
    aborted_revision: str | None = None
    reverting_from: str | None = Field(
        None,
        description="A revert in progress: this revision keeps serving, scaled down as the "
        "stable revision's pods become ready, so the Service never lacks ready endpoints.",
    )
    previous_revision: str | None = None
    bake_until: str | None = None
    analysis: list[MetricStatus] = Field(default_factory=list)
    evaluation: EvaluationStatus | None = None
    mirror: MirrorStatus | None = None
    history: list[HistoryEntry] = Field(default_factory=list)
    conditions: list[Condition] = Field(default_factory=list)
    control: ControlRequest | None = None


class ObjectMeta(BaseModel):
    """The metadata fields the operator reads (the API server owns the rest)."""

    model_config = ConfigDict(extra="allow")

    name: str
    namespace: str = "default"
    uid: str | None = None
    generation: int | None = None
    labels: dict[str, str] | None = None
    annotations: dict[str, str] | None = None


class ModelDeployment(Model):
    """The whole custom resource."""

    api_version: Literal["modeldeploy.io/v1alpha1"] = "modeldeploy.io/v1alpha1"
    kind: Literal["ModelDeployment"] = "ModelDeployment"
    metadata: ObjectMeta
    spec: ModelDeploymentSpec
    status: ModelDeploymentStatus | None = None


# --------------------------------------------------------------------------- errors


def field_path(loc: tuple[str | int, ...]) -> str:
    """A pydantic error location in Kubernetes' path style.

    ``("spec", "strategy", "canary", "steps", 1, "setWeight")`` becomes
    ``spec.strategy.canary.steps[1].setWeight``.
    """
    path = ""
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        elif part.startswith("function-") or part in {"str", "int", "float"}:
            continue  # pydantic's names for validator layers, not fields
        else:
            path += f".{part}" if path else part
    return path


def explain(error: ValidationError, prefix: tuple[str | int, ...] = ()) -> list[str]:
    """One line per problem, ``<field path>: <what is wrong>``, for status, events and the CLI."""
    lines = []
    for item in error.errors():
        message = item["msg"].removeprefix("Value error, ")
        lines.append(f"{field_path(prefix + tuple(item['loc']))}: {message}")
    return lines
