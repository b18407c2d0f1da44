"""Seeded random ModelDeployments generated from the CRD's own OpenAPI schema.

``generate(seed, count, namespace)`` returns ``count`` :class:`Case` objects, each a
manifest and what should become of it:

- ``valid``: the schema and the operator accept it (it may carry unknown fields the
  API server prunes, odd strings, huge numbers and odd but schema-valid pod templates);
  the operator must reconcile it.
- ``operator-invalid``: the schema accepts it but a rule the schema cannot express
  (:mod:`modeldeploy.spec`'s validators) refuses it; the operator must explain it in
  status (Ready False, reason InvalidSpec) naming ``field``.
- ``refused``: the schema refuses it (wrong type, out of range, pattern, enum, missing
  required field, a broken "exactly one of" rule, ...); the API server must answer 422
  naming ``field``.

Shapes, types, ranges, patterns, enums, list bounds and the CEL rules come from the
schema (walked by :class:`_Walker`): a new field in :mod:`modeldeploy.spec` is
generated without a change here. What the schema cannot say (a custom metric needs a
query, rollback indicators name known metrics, config keys are environment variable
names) is supplied by the hooks in ``_Walker.HOOKS``. A pattern or CEL rule the walker
does not know raises, so the generator never silently produces a wrong expectation.

Cost: every pod template runs an image the sandbox cannot pull (no process starts,
``hack/mdsandbox/kubelet.py``) and almost every valid object asks for 0 replicas, so a
thousand objects cost API objects only.
"""

from __future__ import annotations

import copy
import random
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from modeldeploy import spec as s
from modeldeploy.crd import openapi_schema

JSON = dict[str, Any]
Outcome = Literal["valid", "operator-invalid", "refused"]

# Unpullable (no sandbox service of that name): the pod stays Pending, no process runs.
UNPULLABLE_IMAGES = (
    "registry.invalid/fuzz/model:v1",
    "modeldeploy/no-such-service:v9",
    "ghcr.io/ünïcode/image:☃",
    "localhost:5000/" + "x" * 200 + ":latest",
)
# Strings a careless parser trips on; each survives JSON (no lone surrogates).
ODD_STRINGS = (
    "ünïcödé ✓ 日本語 🚀",
    "tab\there\nnew line\r\n",
    "nul\x00byte and bell\x07 and escape \x1b[31mred\x1b[0m",
    "\u202eright-to-left override",
    "   padded   ",
    "'; DROP TABLE models; --",
    "{{name}} {{ namespace }} $(HOME) ${PATH} %s %n",
    "\\backslashes\\ and \"quotes\"",
    "x" * 8000,
)
# Within int64: what kube-apiserver decodes as an integer (larger ones become floats).
HUGE_INTS = (2**31, 2**53 + 1, 2**62, 2**63 - 1)
ODD_FLOATS = (0.0, -0.0, 1e-300, 1e308, -1e308, 123456789.123456789, 0.1)
UNKNOWN_FIELD = "fuzzUnknownField"

_DURATION = s.DURATION_PATTERN
_METRIC = r"^[a-z][a-z0-9-]{0,62}$"
_HTTP_ROUTE = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"
_DNS_LABEL = r"^[a-z]([-a-z0-9]*[a-z0-9])?$"
# RFC 1123 labels (a webhook's name under spec.notifications): a digit may lead.
_RFC1123_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
_ADDRESS = r"^https?://[^\s]+$"
# A Secret's data key (a webhook's urlFrom.secretKeyRef.key).
_SECRET_KEY = r"^[-._a-zA-Z0-9]+$"
# An evaluation's JSON path (compareToStable.path) and the HTTP path its cases go to.
_JSON_PATH = s.JSON_PATH_PATTERN
_REQUEST_PATH = r"^/[^\s?#]*$"


def _dns(rng: random.Random, first: str, rest: str, length: int) -> str:
    body = "".join(rng.choice(rest) for _ in range(length))
    return first + body.strip("-.") if length else first


LOWER = "abcdefghijklmnopqrstuvwxyz"
DIGITS = "0123456789"


def _duration(rng: random.Random) -> str:
    if rng.random() < 0.05:
        return f"{int(s.MAX_WAIT.total_seconds()) // 3600}h"  # the longest the operator takes
    parts = rng.randint(1, 3)
    units = rng.sample(["h", "m", "s", "ms"], parts)
    return "".join(
        f"{rng.choice([0, 1, 2, 5, 30, 90, 1000])}{'.5' if rng.random() < 0.1 else ''}{u}"
        for u in units
    )


# Valid samples per pattern; each sample is checked against its pattern before use.
PATTERN_SAMPLERS: dict[str, Callable[[random.Random], str]] = {
    _DURATION: _duration,
    _METRIC: lambda rng: _dns(rng, rng.choice(LOWER), LOWER + DIGITS + "-", rng.randint(0, 20)),
    _HTTP_ROUTE: lambda rng: _dns(rng, rng.choice(LOWER), LOWER + DIGITS + "-.", rng.randint(0, 30)),
    _DNS_LABEL: lambda rng: _dns(rng, rng.choice(LOWER), LOWER + DIGITS + "-", rng.randint(0, 40)),
    _RFC1123_LABEL: lambda rng: _dns(rng, rng.choice(LOWER + DIGITS), LOWER + DIGITS + "-",
                                     rng.randint(0, 40)),
    _SECRET_KEY: lambda rng: "".join(rng.choice(LOWER + LOWER.upper() + DIGITS + "-._")
                                      for _ in range(rng.randint(1, 30))),
    _ADDRESS: lambda rng: rng.choice(
        ["http://127.0.0.1:9", "https://prometheus.monitoring:9090/prefix?x=ü",
         "http://[::1]:1/", "http://" + "p" * 300 + ".example:9090"]),
    _JSON_PATH: lambda rng: "$" + "".join(
        rng.choice([".score", "[0]", ".choices", "._x-1", "[12]"]) for _ in range(rng.randint(0, 4))),
    _REQUEST_PATH: lambda rng: rng.choice(
        ["/", "/analyze", "/v1/chat/completions", "/ü/" + "x" * 300, "/a;b=c"]),
}
# Strings each pattern refuses.
PATTERN_BREAKERS: dict[str, tuple[str, ...]] = {
    _DURATION: ("5 minutes", "-1s", "1d", "", "10", "1.s", "∞s"),
    _METRIC: ("Upper", "1starts-with-digit", "under_score", "", "a" * 64, "ünï"),
    _HTTP_ROUTE: ("Route", "-leading", "trailing-", "a b", ""),
    _DNS_LABEL: ("Preview", "has.dot", "-x", "x_y", "ü"),
    _RFC1123_LABEL: ("Team-Chat", "has.dot", "-x", "x_", "ü"),
    _SECRET_KEY: ("has space", "slash/key", "", "ü"),
    _ADDRESS: ("prometheus:9090", "ftp://x", "http://", "http://has space", ""),
    _JSON_PATH: ("score", "$.", "$[x]", "$..a", "", "$.1a"),
    _REQUEST_PATH: ("analyze", "/a b", "/a?b=1", "/a#top", ""),
}


@dataclass(frozen=True)
class Case:
    name: str
    body: JSON
    outcome: Outcome
    field: str  # the field path the refusal or the explanation must name ("" when valid)
    what: str  # the mutation, for failure messages


def _exactly_one(rule: str) -> list[str] | None:
    """The member names of an "exactly one of" CEL rule (modeldeploy.spec._exactly_one_rule)."""
    if not rule.endswith("== 1"):
        return None
    return re.findall(r"has\(self\.(\w+)\)", rule)


class _Walker:
    """Builds a schema-valid value for a sub-schema; ``HOOKS`` handle cross-field rules."""

    def __init__(self, rng: random.Random, spec_schema: JSON) -> None:
        self.rng = rng
        self.spec_schema = spec_schema

    # -- generic --------------------------------------------------------------------

    def value(self, schema: JSON, path: str, depth: int = 0) -> Any:
        hook = self.HOOKS.get(re.sub(r"\[\d+\]", "[]", path))
        if hook is not None:
            return hook(self, schema, path)
        if schema.get("x-kubernetes-int-or-string"):
            return self.rng.choice([self.rng.randint(1, 65535), "http", "metrics-port"])
        kind = schema.get("type")
        if "enum" in schema:
            return self.rng.choice(schema["enum"])
        if kind == "object":
            return self.obj(schema, path, depth)
        if kind == "array":
            low = schema.get("minItems", 0)
            high = min(schema.get("maxItems", 4), low + 3)
            items = [self.value(schema["items"], f"{path}[{i}]", depth + 1)
                     for i in range(self.rng.randint(low, high))]
            # A set, or a map keyed by some fields, allows no repeats (the API server answers
            # 422 "Duplicate value"): keep the first of each.
            keys = schema.get("x-kubernetes-list-map-keys")
            if schema.get("x-kubernetes-list-type") not in ("set", "map"):
                return items
            seen: list[Any] = []
            unique = []
            for item in items:
                key = [item.get(k) for k in keys] if keys and isinstance(item, dict) else item
                if key not in seen:
                    seen.append(key)
                    unique.append(item)
            return unique
        if kind == "string":
            return self.string(schema)
        if kind == "integer":
            return self.integer(schema)
        if kind == "number":
            return self.number(schema)
        if kind == "boolean":
            return self.rng.random() < 0.5
        raise ValueError(f"{path}: no generator for schema {schema}")

    def obj(self, schema: JSON, path: str, depth: int) -> JSON:
        props: JSON = schema.get("properties", {})
        required = set(schema.get("required", []))
        chosen = {k for k in props if k in required or self.rng.random() < 0.5 / (1 + depth / 3)}
        for rule in schema.get("x-kubernetes-validations", []):
            members = _exactly_one(rule["rule"])
            if members is not None:
                chosen -= set(members)
                chosen.add(self.rng.choice(members))
            elif rule["rule"] == "has(self.min) || has(self.max)":
                if not chosen & {"min", "max"}:
                    chosen.add(self.rng.choice(["min", "max"]))
            elif "self.min <= self.max" not in rule["rule"]:
                raise ValueError(f"{path}: the generator does not know the rule {rule['rule']!r}")
        out = {k: self.value(props[k], f"{path}.{k}", depth + 1) for k in props if k in chosen}
        if isinstance(out.get("min"), float | int) and isinstance(out.get("max"), float | int):
            out["min"], out["max"] = sorted((out["min"], out["max"]))
        if schema.get("x-kubernetes-preserve-unknown-fields") and schema.get("maxProperties") == 0:
            return {}
        return out

    def string(self, schema: JSON) -> str:
        if "pattern" in schema:
            sampler = PATTERN_SAMPLERS.get(schema["pattern"])
            if sampler is None:
                raise ValueError(f"no sampler for the pattern {schema['pattern']!r}")
            text = sampler(self.rng)[: schema.get("maxLength", 10**6)]
            assert re.fullmatch(schema["pattern"], text), (schema["pattern"], text)
            return text
        low, high = schema.get("minLength", 0), schema.get("maxLength", 10**6)
        text = self.rng.choice(ODD_STRINGS)[:high]
        return text if len(text) >= low else text + "x" * (low - len(text))

    def integer(self, schema: JSON) -> int:
        low: int = schema.get("minimum", -(2**63))
        high: int | None = schema.get("maximum")
        if high is None:  # unbounded above: huge numbers are schema-valid
            return self.rng.choice([low, low + 1, low + 60, *HUGE_INTS])
        return self.rng.choice([low, high, self.rng.randint(low, high)])

    def number(self, schema: JSON) -> float:
        value = self.rng.choice(ODD_FLOATS)
        floor, ceiling = schema.get("minimum"), schema.get("maximum")
        if floor is not None and (value < floor or (schema.get("exclusiveMinimum") and value <= floor)):
            value = floor + abs(value) + 0.5
        if ceiling is not None and (value > ceiling or (schema.get("exclusiveMaximum") and value >= ceiling)):
            # Within a bounded range (a share 0..1, a timeout up to 600 s): an edge or the middle.
            low = floor if floor is not None else ceiling - 1
            edges = [v for v, excluded in ((low, schema.get("exclusiveMinimum")),
                                           (ceiling, schema.get("exclusiveMaximum"))) if not excluded]
            value = self.rng.choice([*edges, (low + ceiling) / 2])
        return value

    # -- hooks: what the schema cannot express --------------------------------------

    def replicas(self, schema: JSON, path: str) -> int:
        # A pod per replica is an API object and a kubelet task: keep most at 0.
        return 0 if self.rng.random() < 0.95 else self.rng.randint(1, 2)

    def template(self, schema: JSON, path: str) -> JSON:
        rng = self.rng
        containers: list[JSON] = []
        for i in range(rng.randint(1, 3)):
            container: JSON = {"name": f"c{i}-" + rng.choice(["app", "ü", "x" * 60]),
                               "image": rng.choice(UNPULLABLE_IMAGES)}
            if rng.random() < 0.5:
                container["env"] = [{"name": f"E{j}", "value": rng.choice(ODD_STRINGS)}
                                    for j in range(rng.randint(0, 3))]
            if rng.random() < 0.3:
                gpus = rng.choice([0, 1, "1", "2"])
                container["resources"] = {"limits": {s.GPU_RESOURCE: gpus, "memory": "1Gi"}}
            if rng.random() < 0.3:
                container["ports"] = [{"containerPort": rng.choice([1, 8080, 65535]),
                                       "name": rng.choice(["http", "ü", "x" * 100])}]
            if rng.random() < 0.2:
                container["workingDir"] = rng.choice(ODD_STRINGS)
            if rng.random() < 0.2:
                container["args"] = [rng.choice(ODD_STRINGS) for _ in range(rng.randint(0, 4))]
            containers.append(container)
        pod_spec: JSON = {"containers": containers}
        if rng.random() < 0.3:
            pod_spec["terminationGracePeriodSeconds"] = rng.choice([0, 30, *HUGE_INTS])
        if rng.random() < 0.2:
            pod_spec["nodeSelector"] = {"example.com/zone": rng.choice(ODD_STRINGS[:3])}
        out: JSON = {"spec": pod_spec}
        if rng.random() < 0.5:
            out["metadata"] = {"annotations": {"note": rng.choice(ODD_STRINGS)},
                               "labels": {"team": "fuzz"}}
        return out

    def config(self, schema: JSON, path: str) -> JSON:
        keys = ["MODEL", "_private", "a.b-c", "X" * 200, "FLAG_1"]
        return {k: self.rng.choice(ODD_STRINGS) for k in self.rng.sample(keys, self.rng.randint(0, 4))}

    def relative_to_stable(self, schema: JSON, path: str) -> JSON:
        props = schema["properties"]
        chosen = self.rng.sample(sorted(props), self.rng.randint(1, len(props)))
        return {k: self.number(props[k]) for k in chosen}

    def analysis(self, schema: JSON, path: str) -> JSON:
        props = schema["properties"]
        out: JSON = {"provider": self.value(props["provider"], f"{path}.provider")}
        for key in ("interval", "presets", "noData", "onInconclusive"):
            if self.rng.random() < 0.5:
                out[key] = self.value(props[key], f"{path}.{key}")
        metrics: list[JSON] = []
        names: set[str] = set()
        metric_props = props["metrics"]["items"]["properties"]
        for i in range(self.rng.randint(0, 3)):
            at = f"{path}.metrics[{i}]"
            custom = self.rng.random() < 0.6
            name = self.value(metric_props["name"], f"{at}.name") if custom else self.rng.choice(
                sorted(s.BUILTIN_METRICS))
            if name in names:
                continue
            names.add(name)
            metric: JSON = {"name": name}
            if custom:
                placeholders = self.rng.sample(sorted(s.QUERY_PLACEHOLDERS), 2)
                metric["query"] = ("sum(rate(x{" + ",".join(
                    f'l{j}="{{{{{p}}}}}"' for j, p in enumerate(placeholders)) + "}[5m]))"
                    + self.rng.choice(["", " # " + self.rng.choice(ODD_STRINGS)[:500]]))
            self._bounds(metric, metric_props, at, need=custom)
            for key in ("failureLimit", "inconclusiveLimit"):
                if self.rng.random() < 0.3:
                    metric[key] = self.value(metric_props[key], f"{at}.{key}")
            metrics.append(metric)
        if metrics:
            out["metrics"] = metrics
        indicator_props = props["rollbackIndicators"]["items"]["properties"]
        indicators = []
        for i in range(self.rng.randint(0, 2)):
            indicator: JSON = {"metric": self.rng.choice(sorted(s.BUILTIN_METRICS | names))}
            self._bounds(indicator, indicator_props, f"{path}.rollbackIndicators[{i}]", need=True)
            indicators.append(indicator)
        if indicators:
            out["rollbackIndicators"] = indicators
        return out

    def _bounds(self, target: JSON, props: JSON, path: str, need: bool) -> None:
        keys = [k for k in ("thresholdRange", "relativeToStable") if self.rng.random() < 0.5]
        if need and not keys:
            keys = [self.rng.choice(["thresholdRange", "relativeToStable"])]
        for key in keys:
            target[key] = self.value(props[key], f"{path}.{key}")

    def auto_promotion_seconds(self, schema: JSON, path: str) -> int:
        # Unbounded in the schema; the operator takes at most s.MAX_WAIT (_huge_wait).
        return self.rng.choice([0, 1, 60, int(s.MAX_WAIT.total_seconds())])

    def step_metrics(self, schema: JSON, path: str) -> list[str]:
        return self.rng.sample(sorted(s.BUILTIN_METRICS), self.rng.randint(0, 2))

    HOOKS: dict[str, Callable[[_Walker, JSON, str], Any]] = {
        "spec.replicas": replicas,
        "spec.template": template,
        "spec.config": config,
        "spec.analysis": analysis,
        "spec.analysis.metrics[].relativeToStable": relative_to_stable,
        "spec.analysis.rollbackIndicators[].relativeToStable": relative_to_stable,
        "spec.strategy.canary.steps[].analysis.metrics": step_metrics,
        "spec.strategy.blueGreen.autoPromotionSeconds": auto_promotion_seconds,
        "spec.strategy.blueGreen.prePromotionAnalysis.metrics": step_metrics,
    }


def valid_spec(walker: _Walker) -> JSON:
    spec: JSON = walker.value(walker.spec_schema, "spec")
    if "analysis" not in spec:
        # Analysis steps need spec.analysis (a rule the schema cannot express).
        canary = spec.get("strategy", {}).get("canary", {})
        for step in canary.get("steps", []):
            if "analysis" in step:
                del step["analysis"]
                step["setWeight"] = 50
        spec.get("strategy", {}).get("blueGreen", {}).pop("prePromotionAnalysis", None)
    # Mirror steps need spec.analysis and a router that can mirror (gatewayAPI): rules the
    # schema cannot express (the operator explains them).
    canary = spec.get("strategy", {}).get("canary", {})
    can_mirror = "analysis" in spec and "gatewayAPI" in canary.get("trafficRouting", {})
    for step in canary.get("steps", []):
        if "mirror" in step and not can_mirror:
            del step["mirror"]
            step["setWeight"] = 50
    return spec


# --------------------------------------------------------------------------- mutations


def _locations(value: Any, schema: JSON, path: str) -> list[tuple[str, JSON, Any]]:
    """Every (path, schema, value) the schema checks, inside-out of preserved objects."""
    found = [(path, schema, value)]
    if isinstance(value, dict):
        for key, sub in schema.get("properties", {}).items():
            if key in value:
                found += _locations(value[key], sub, f"{path}.{key}")
        extra = schema.get("additionalProperties")
        if isinstance(extra, dict):
            for key in value:
                found += _locations(value[key], extra, f"{path}[{key}]")
    elif isinstance(value, list) and "items" in schema:
        for i, item in enumerate(value):
            found += _locations(item, schema["items"], f"{path}[{i}]")
    return found


def _set(root: JSON, path: str, value: Any) -> None:
    """Set ``spec.a[1].b`` (or ``spec.config[KEY]``) in ``root``; ``_DELETE`` removes it."""
    parts = re.findall(r"\.([^.\[]+)|\[([^\]]*)\]", path[len("spec"):])
    node: Any = root
    for i, (attr, index) in enumerate(parts):
        key: Any = attr if attr else (int(index) if isinstance(node, list) else index)
        if i == len(parts) - 1:
            if value is _DELETE:
                del node[key]
            else:
                node[key] = value
        else:
            node = node[key]


_DELETE = object()


def _wrong_type(schema: JSON, rng: random.Random) -> Any:
    if schema.get("x-kubernetes-int-or-string"):
        return rng.choice([True, [80], {"port": 80}, 1.5])
    kind = str(schema.get("type"))
    others = {
        "object": ["a string", 42, [1, 2]],
        "array": ["not a list", {"a": 1}, 7],
        "string": [42, True, ["list"], {"o": 1}],
        "integer": ["12", 1.5, True, [1]],
        "number": ["1.0", True, {"n": 1}],
        "boolean": ["true", 1, "yes"],
    }[kind]
    return rng.choice(others)


def refused_mutation(spec: JSON, schema: JSON, rng: random.Random) -> tuple[str, str] | None:
    """Break ``spec`` (in place) where the schema checks it; (field, what), or None."""
    locations = _locations(spec, schema, "spec")[1:]
    path, sub, value = rng.choice(locations)
    options: list[str] = ["type"]
    if sub.get("minimum") is not None or sub.get("maximum") is not None:
        options += ["range", "range"]
    if "pattern" in sub:
        options += ["pattern", "pattern"]
    if "maxLength" in sub or "minLength" in sub:
        options.append("length")
    if "enum" in sub:
        options.append("enum")
    if "minItems" in sub or "maxItems" in sub:
        options.append("items")
    if isinstance(value, dict) and sub.get("required"):
        options += ["required", "required"]
    if isinstance(value, dict) and any(
            _exactly_one(r["rule"]) for r in sub.get("x-kubernetes-validations", [])):
        options += ["one-of", "one-of"]
    if isinstance(value, dict) and "self.min <= self.max" in str(sub.get("x-kubernetes-validations")):
        options.append("min-max")
    if sub.get("maxProperties") == 0:
        options.append("max-properties")
    choice = rng.choice(options)
    if choice == "type":
        bad = _wrong_type(sub, rng)
        _set(spec, path, bad)
        return path, f"wrong type {bad!r}"
    if choice == "range":
        high, low = sub.get("maximum"), sub.get("minimum")
        bad = rng.choice([b for b in (
            None if high is None else high + rng.choice([1, 2**31, 2**62]),
            None if low is None else (low if sub.get("exclusiveMinimum") else low - rng.choice(
                [1, 2**31, 2**62])),
        ) if b is not None])
        _set(spec, path, bad)
        return path, f"out of range {bad!r}"
    if choice == "pattern":
        bad = rng.choice(PATTERN_BREAKERS[sub["pattern"]])
        _set(spec, path, bad)
        return path, f"breaks the pattern: {bad!r}"
    if choice == "length":
        bad = "" if "minLength" in sub and (rng.random() < 0.5 or "maxLength" not in sub) else (
            "z" * (sub["maxLength"] + 1))
        _set(spec, path, bad)
        return path, f"length {len(bad)}"
    if choice == "enum":
        bad = rng.choice(["bogus", "", "Success-Rate", "ü"])
        _set(spec, path, bad)
        return path, f"not in the enum: {bad!r}"
    if choice == "items":
        if "maxItems" in sub and (rng.random() < 0.5 or "minItems" not in sub):
            item = value[0] if value else rng.choice(sub["items"].get("enum", ["x"]))
            _set(spec, path, [copy.deepcopy(item)] * (sub["maxItems"] + 1))
            return path, f"more than {sub['maxItems']} items"
        _set(spec, path, [])
        return path, "no items"
    if choice == "required":
        key = rng.choice(sub["required"])
        if key not in value:
            return None
        del value[key]
        return f"{path}.{key}", "required field missing"
    if choice == "one-of":
        members = next(m for r in sub["x-kubernetes-validations"] if (m := _exactly_one(r["rule"])))
        if len(members) > 1 and rng.random() < 0.6:
            for member in members:
                if member not in value:
                    value[member] = _Walker(rng, sub).value(
                        sub["properties"][member], f"{path}.{member}")
            return path, f"sets all of {members}"
        for member in members:
            value.pop(member, None)
        return path, f"sets none of {members}"
    if choice == "min-max":
        value["min"], value["max"] = 2.0, 1.0
        return path, "thresholdRange min > max"
    if choice == "max-properties":
        _set(spec, path, {"unexpected": 1})
        return path, "a field in an object that must stay empty"
    raise AssertionError(choice)


# Operator rules the schema cannot express: (name, mutate(spec, rng) -> field path).
def _bad_config_key(spec: JSON, rng: random.Random) -> str:
    spec["config"] = {**spec.get("config", {}), rng.choice(["1STARTS_WITH_DIGIT", "has space",
                                                            "ünï", "", "a=b", "tab\tkey"]): "v"}
    return "spec.config"


def _analysis(spec: JSON) -> JSON:
    analysis: JSON = spec.setdefault(
        "analysis", {"provider": {"prometheus": {"address": "http://127.0.0.1:9"}}})
    return analysis


def _custom_metric_without_query(spec: JSON, rng: random.Random) -> str:
    metrics = _analysis(spec).setdefault("metrics", [])
    metrics.append({"name": "zz-no-such-builtin", "thresholdRange": {"max": 1}})
    return f"spec.analysis.metrics[{len(metrics) - 1}]"


def _query_without_bounds(spec: JSON, rng: random.Random) -> str:
    metrics = _analysis(spec).setdefault("metrics", [])
    metrics.append({"name": "zz-unjudged", "query": "up"})
    return f"spec.analysis.metrics[{len(metrics) - 1}]"


def _unknown_placeholder(spec: JSON, rng: random.Random) -> str:
    metrics = _analysis(spec).setdefault("metrics", [])
    placeholder = rng.choice(["{{pod}}", "{{ namespace.name }}", "{{ü}}", "{{}}"])
    metrics.append({"name": "zz-placeholder", "query": f"up{{x=\"{placeholder}\"}}",
                    "thresholdRange": {"min": 0}})
    return f"spec.analysis.metrics[{len(metrics) - 1}].query"


def _duplicate_metric(spec: JSON, rng: random.Random) -> str:
    _analysis(spec)["metrics"] = [{"name": "error-rate", "thresholdRange": {"max": 0.1}}] * 2
    return "spec.analysis"


def _indicator_of_unknown_metric(spec: JSON, rng: random.Random) -> str:
    _analysis(spec).setdefault("rollbackIndicators", []).append(
        {"metric": "zz-unlisted", "thresholdRange": {"max": 1}})
    return "spec.analysis"


def _indicator_without_bounds(spec: JSON, rng: random.Random) -> str:
    indicators = _analysis(spec).setdefault("rollbackIndicators", [])
    indicators.append({"metric": "error-rate"})
    return f"spec.analysis.rollbackIndicators[{len(indicators) - 1}]"


def _empty_relative_to_stable(spec: JSON, rng: random.Random) -> str:
    metrics = _analysis(spec).setdefault("metrics", [])
    metrics.append({"name": "zz-relative", "query": "up", "relativeToStable": {}})
    return f"spec.analysis.metrics[{len(metrics) - 1}].relativeToStable"


def _analysis_step_without_analysis(spec: JSON, rng: random.Random) -> str:
    spec.pop("analysis", None)
    spec["strategy"] = {"canary": {"steps": [{"setWeight": 10}, {"analysis": {}}]}}
    return "spec"


def _pre_promotion_without_analysis(spec: JSON, rng: random.Random) -> str:
    spec.pop("analysis", None)
    spec["strategy"] = {"blueGreen": {"prePromotionAnalysis": {"measurements": 1}}}
    return "spec"


def _huge_wait(spec: JSON, rng: random.Random) -> str:
    # Schema-valid, but longer than the operator's MAX_WAIT (or any timedelta).
    field = rng.choice(["progressDeadline", "rollback.bakeTime", "autoPromotionSeconds"])
    if field == "progressDeadline":
        spec["progressDeadline"] = rng.choice(["876001h", "99999999999999h", "1" + "0" * 40 + "s"])
    elif field == "rollback.bakeTime":
        spec.setdefault("rollback", {})["bakeTime"] = "99999999999999h"
    else:
        spec["strategy"] = {"blueGreen": {"autoPromotionSeconds": rng.choice(HUGE_INTS[1:])}}
        return "spec.strategy.blueGreen.autoPromotionSeconds"
    return f"spec.{field}"


def _unknown_template_field(spec: JSON, rng: random.Random) -> str:
    # The CRD keeps the pod template as written; the kubernetes client's models refuse it.
    pod_spec = spec["template"]["spec"]
    if rng.random() < 0.5:
        pod_spec[UNKNOWN_FIELD] = {"nested": [1, "two", None]}
        return f"spec.template.spec.{UNKNOWN_FIELD}"
    index = rng.randrange(len(pod_spec["containers"]))
    pod_spec["containers"][index]["imagePullPolcy"] = "Always"  # a typo
    return f"spec.template.spec.containers[{index}].imagePullPolcy"


def _labels_not_a_map(spec: JSON, rng: random.Random) -> str:
    spec["template"]["metadata"] = {"labels": rng.choice(["team=fuzz", ["team"], 7])}
    return "spec.template.metadata.labels"


OPERATOR_RULES: tuple[Callable[[JSON, random.Random], str], ...] = (
    _bad_config_key,
    _custom_metric_without_query,
    _query_without_bounds,
    _unknown_placeholder,
    _duplicate_metric,
    _indicator_of_unknown_metric,
    _indicator_without_bounds,
    _empty_relative_to_stable,
    _analysis_step_without_analysis,
    _pre_promotion_without_analysis,
    _huge_wait,
    _unknown_template_field,
    _labels_not_a_map,
)


def _add_unknown_fields(spec: JSON, schema: JSON, rng: random.Random) -> list[str]:
    """Unknown fields where the schema declares properties: the API server prunes them."""
    added = []
    for path, sub, value in _locations(spec, schema, "spec"):
        if (isinstance(value, dict) and sub.get("properties")
                and not sub.get("x-kubernetes-preserve-unknown-fields") and rng.random() < 0.3):
            value[UNKNOWN_FIELD] = rng.choice([1, "x", {"deep": True}])
            added.append(path)
    return added


def generate(seed: int, count: int, namespace: str) -> list[Case]:
    """``count`` cases: about 45% valid, 20% operator-invalid, 35% refused."""
    rng = random.Random(seed)
    spec_schema: JSON = openapi_schema()["properties"]["spec"]
    walker = _Walker(rng, spec_schema)
    cases: list[Case] = []
    while len(cases) < count:
        name = f"fuzz-{seed}-{len(cases):04d}"
        spec = valid_spec(walker)
        roll = rng.random()
        if roll < 0.45:
            pruned = _add_unknown_fields(spec, spec_schema, rng) if rng.random() < 0.3 else []
            case = Case(name, {}, "valid", "", f"unknown fields at {pruned}" if pruned else "")
        elif roll < 0.65:
            rule = rng.choice(OPERATOR_RULES)
            case = Case(name, {}, "operator-invalid", rule(spec, rng), rule.__name__)
        else:
            broken = refused_mutation(spec, spec_schema, rng)
            if broken is None:
                continue
            case = Case(name, {}, "refused", *broken)
        body = {"apiVersion": f"{s.GROUP}/{s.VERSION}", "kind": s.KIND,
                "metadata": {"name": name, "namespace": namespace}, "spec": spec}
        cases.append(Case(case.name, body, case.outcome, case.field, case.what))
    return cases
