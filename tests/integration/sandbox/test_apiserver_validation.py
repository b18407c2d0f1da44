"""CRD schema validation as kube-apiserver does it, through ``validate()`` and over HTTP.

``validate(schema, obj, old)`` is what the server runs on every write of a custom
resource; the table proves each rule kind reports Kubernetes' field path, reason and
wording, so manifests rejected here are rejected by a real cluster the same way.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from mdsandbox.apiserver import APIServer, validate, validate_manifest
from mdsandbox.apiserver.validation import apply_defaults, prune

pytestmark = pytest.mark.integration

SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "spec": {
            "type": "object",
            "required": ["replicas"],
            "properties": {
                "replicas": {"type": "integer", "minimum": 0, "maximum": 50},
                "name": {"type": "string", "minLength": 2, "maxLength": 8,
                         "x-kubernetes-validations": [{"rule": "self.lowerAscii() == self",
                                                       "message": "name must be lowercase"}]},
                "ratio": {"type": "number", "exclusiveMinimum": True, "minimum": 0},
                "maxSurge": {"x-kubernetes-int-or-string": True},
                "note": {"type": "string", "nullable": True},
                "tags": {"type": "array", "minItems": 1, "maxItems": 2,
                         "items": {"type": "string"}},
                "labels": {"type": "object", "additionalProperties": {
                    "type": "string", "maxLength": 3}},
                "routing": {
                    "type": "object",
                    "oneOf": [{"required": ["replicas"]}, {"required": ["gatewayAPI"]}],
                    "properties": {"replicas": {"type": "object"},
                                   "gatewayAPI": {"type": "object"}},
                },
                "strategy": {"type": "object", "properties": {"canary": {
                    "type": "object", "properties": {"steps": {"type": "array", "items": {
                        "type": "object",
                        "properties": {"setWeight": {"type": "integer", "minimum": 0,
                                                     "maximum": 100}},
                        "x-kubernetes-validations": [{
                            "rule": "!has(self.setWeight) || self.setWeight % 5 == 0",
                            "messageExpression": "'setWeight must be a multiple of 5, not ' + "
                                                 "string(self.setWeight)",
                        }],
                    }}},
                }}},
                "port": {"anyOf": [{"type": "integer", "minimum": 1},
                                   {"type": "string", "pattern": "^[a-z]+$"}],
                         "x-kubernetes-int-or-string": True},
                "mode": {"type": "string", "not": {"enum": ["legacy"]},
                         "allOf": [{"minLength": 1}, {"maxLength": 6}]},
                "extra": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
                "track": {"type": "string", "x-kubernetes-validations": [
                    {"rule": "self == oldSelf", "message": "track is immutable"}]},
                "interval": {"type": "string", "pattern": "^[0-9]+(s|m)$", "default": "30s"},
            },
        },
    },
}


def manifest(**spec: Any) -> dict[str, Any]:
    return {"apiVersion": "x.io/v1", "kind": "Thing", "metadata": {"name": "t"},
            "spec": {"replicas": 1, **spec}}


CASES = [
    pytest.param(manifest(), [], id="a valid object has no causes"),
    pytest.param(manifest(replicas=51), [(
        "spec.replicas", "FieldValueInvalid",
        "Invalid value: 51: spec.replicas in body should be less than or equal to 50")],
        id="maximum names the field and the limit"),
    pytest.param(manifest(ratio=0), [(
        "spec.ratio", "FieldValueInvalid",
        "Invalid value: 0: spec.ratio in body should be greater than 0")],
        id="exclusive minimum says greater than"),
    pytest.param(manifest(name="a"), [(
        "spec.name", "FieldValueInvalid",
        'Invalid value: "a": spec.name in body should be at least 2 chars long')],
        id="minLength counts characters"),
    pytest.param(manifest(name="abcdefghij"), [(
        "spec.name", "FieldValueTooLong", "Too long: may not be longer than 8")],
        id="maxLength is too long"),
    pytest.param(manifest(tags=[]), [(
        "spec.tags", "FieldValueInvalid",
        "Invalid value: 0: spec.tags in body should have at least 1 items")],
        id="minItems counts items"),
    pytest.param(manifest(tags=["a", "b", "c"]), [(
        "spec.tags", "FieldValueTooMany", "Too many: 3: must have at most 2 items")],
        id="maxItems is too many"),
    pytest.param(manifest(replicas="two"), [
        ("spec.replicas", "FieldValueTypeInvalid",
         'Invalid value: "string": spec.replicas in body must be of type integer: "string"'),
        ("<nil>", "FieldValueInvalid",
         'Invalid value: "null": some validation rules were not checked because the object '
         "was invalid; correct the existing errors to complete validation")],
        id="a wrong type blocks the CEL rules and says so"),
    pytest.param({"apiVersion": "x.io/v1", "kind": "Thing", "metadata": {}, "spec": {}}, [
        ("spec.replicas", "FieldValueRequired", "Required value"),
        ("<nil>", "FieldValueInvalid",
         'Invalid value: "null": some validation rules were not checked because the object '
         "was invalid; correct the existing errors to complete validation")],
        id="a missing required field is required"),
    pytest.param(manifest(note=None), [], id="null is allowed where nullable"),
    pytest.param(manifest(name=None), [(
        "spec.name", "FieldValueTypeInvalid",
        'Invalid value: "null": spec.name in body must be of type string: "null"'),
        ("<nil>", "FieldValueInvalid",
         'Invalid value: "null": some validation rules were not checked because the object '
         "was invalid; correct the existing errors to complete validation")],
        id="null is a wrong type where not nullable"),
    pytest.param(manifest(maxSurge="25%"), [], id="int-or-string takes a string"),
    pytest.param(manifest(maxSurge=2), [], id="int-or-string takes an integer"),
    pytest.param(manifest(labels={"app": "toolong"}), [(
        "spec.labels[app]", "FieldValueTooLong", "Too long: may not be longer than 3")],
        id="map values are named by key in brackets"),
    pytest.param(manifest(routing={}), [(
        "spec.routing", "FieldValueInvalid",
        'Invalid value: "": spec.routing must validate one and only one schema (oneOf). '
        "Found none valid"), ("spec.routing.replicas", "FieldValueRequired", "Required value"),
        ("<nil>", "FieldValueInvalid",
         'Invalid value: "null": some validation rules were not checked because the object '
         "was invalid; correct the existing errors to complete validation")],
        id="oneOf with no match fails with the closest branch's causes"),
    pytest.param(manifest(strategy={"canary": {"steps": [{"setWeight": 10},
                                                         {"setWeight": 120}]}}), [(
        "spec.strategy.canary.steps[1].setWeight", "FieldValueInvalid",
        "Invalid value: 120: spec.strategy.canary.steps[1].setWeight in body should be less "
        "than or equal to 100")],
        id="list items are named by index"),
    pytest.param(manifest(strategy={"canary": {"steps": [{"setWeight": 12}]}}), [(
        "spec.strategy.canary.steps[0]", "FieldValueInvalid",
        'Invalid value: "object": setWeight must be a multiple of 5, not 12')],
        id="a CEL rule reports its messageExpression"),
    pytest.param(manifest(name="Ab"), [(
        "spec.name", "FieldValueInvalid", 'Invalid value: "string": name must be lowercase')],
        id="a rule may use the Kubernetes string library"),
    pytest.param(manifest(port="http"), [], id="anyOf passes when one branch does"),
    pytest.param(manifest(port=0), [
        ("spec.port", "FieldValueInvalid",
         'Invalid value: "": spec.port must validate at least one schema (anyOf)'),
        ("spec.port", "FieldValueInvalid",
         "Invalid value: 0: spec.port in body should be greater than or equal to 1")],
        id="anyOf fails when no branch passes"),
    pytest.param(manifest(mode="legacy"), [(
        "spec.mode", "FieldValueInvalid",
        'Invalid value: "": spec.mode must not validate the schema (not)')],
        id="not refuses what its schema accepts"),
    pytest.param(manifest(mode="toolong"), [(
        "spec.mode", "FieldValueTooLong", "Too long: may not be longer than 6")],
        id="allOf applies every branch"),
    pytest.param(manifest(interval="often"), [(
        "spec.interval", "FieldValueInvalid",
        "Invalid value: \"often\": spec.interval in body should match '^[0-9]+(s|m)$'")],
        id="pattern quotes the regular expression"),
]


@pytest.mark.parametrize(("obj", "expected"), CASES)
def test_validate_reports_kubernetes_causes(obj: dict[str, Any],
                                            expected: list[tuple[str, str, str]]) -> None:
    causes = validate(SCHEMA, obj)
    assert sorted((c.field, c.reason, c.message) for c in causes) == sorted(expected)


def test_a_transition_rule_compares_with_the_old_object() -> None:
    old = manifest(track="stable")
    assert validate(SCHEMA, manifest(track="stable"), old) == []
    causes = validate(SCHEMA, manifest(track="canary"), old)
    assert [(c.field, c.message) for c in causes] == [
        ("spec.track", 'Invalid value: "string": track is immutable')]
    assert validate(SCHEMA, manifest(track="canary")) == [], "no old object, no transition rule"


def test_defaults_fill_missing_fields_and_pruning_drops_undeclared_ones() -> None:
    pruned, dropped = prune(SCHEMA, manifest(colour="red", labels={"a": "b"},
                                             extra={"anything": {"goes": 1}}))
    assert dropped == ["spec.colour"]
    assert apply_defaults(SCHEMA, pruned)["spec"] == {
        "replicas": 1, "labels": {"a": "b"}, "extra": {"anything": {"goes": 1}},
        "interval": "30s"}


def test_validate_manifest_reports_unknown_fields_then_schema_causes() -> None:
    causes = validate_manifest(SCHEMA, manifest(replicas=99, colour="red"))
    assert [(c.field, c.reason) for c in causes] == [
        ("spec.colour", "FieldValueUnknown"), ("spec.replicas", "FieldValueInvalid")]
    assert validate_manifest(SCHEMA, manifest()) == [], "defaults make a minimal manifest valid"


@pytest.fixture(scope="module")
def client() -> Iterator[httpx.Client]:
    server = APIServer(host="127.0.0.1", port=0)
    server.start()
    with httpx.Client(base_url=server.url, timeout=10) as http:
        crd = {"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
               "metadata": {"name": "things.x.io"},
               "spec": {"group": "x.io", "scope": "Namespaced",
                        "names": {"plural": "things", "kind": "Thing"},
                        "versions": [{"name": "v1", "served": True, "storage": True,
                                      "subresources": {"status": {}},
                                      "schema": {"openAPIV3Schema": {
                                          **SCHEMA, "properties": {
                                              **SCHEMA["properties"], "status": {
                                                  "type": "object", "properties": {
                                                      "phase": {"type": "string",
                                                                "enum": ["A", "B"]}}}}}}}]}}
        made = http.post("/apis/apiextensions.k8s.io/v1/customresourcedefinitions", json=crd)
        assert made.status_code == 201, made.text
        yield http
    server.stop()


THINGS = "/apis/x.io/v1/namespaces/default/things"


def test_an_update_breaking_a_transition_rule_is_invalid(client: httpx.Client) -> None:
    assert client.post(THINGS, json=manifest(track="stable")).status_code == 201
    answer = client.patch(f"{THINGS}/t", json={"spec": {"track": "canary"}},
                          headers={"Content-Type": "application/merge-patch+json"})
    assert answer.status_code == 422
    assert answer.json()["message"] == (
        'Thing.x.io "t" is invalid: spec.track: Invalid value: "string": track is immutable')


def test_status_writes_are_validated_against_the_status_schema(client: httpx.Client) -> None:
    client.post(THINGS, json={**manifest(), "metadata": {"name": "s"}})
    bad = client.patch(f"{THINGS}/s/status", json={"status": {"phase": "C"}},
                       headers={"Content-Type": "application/merge-patch+json"})
    assert bad.status_code == 422
    assert bad.json()["details"]["causes"] == [{
        "reason": "FieldValueNotSupported", "field": "status.phase",
        "message": 'Unsupported value: "C": supported values: "A", "B"'}]
    good = client.patch(f"{THINGS}/s/status", json={"status": {"phase": "B"}},
                        headers={"Content-Type": "application/merge-patch+json"})
    assert good.json()["status"] == {"phase": "B"}


@pytest.mark.parametrize(("validation", "code", "warning"), [
    pytest.param("Strict", 400, None, id="strict field validation refuses unknown fields"),
    pytest.param("Warn", 201, '299 - "unknown field \\"spec.colour\\""',
                 id="warn field validation prunes them with a warning"),
    pytest.param("Ignore", 201, None, id="ignore field validation prunes them silently"),
])
def test_unknown_fields_follow_field_validation(client: httpx.Client, validation: str,
                                                code: int, warning: str | None) -> None:
    name = f"unknown-{validation.lower()}"
    answer = client.post(THINGS, params={"fieldValidation": validation},
                         json={**manifest(colour="red"), "metadata": {"name": name}})
    assert answer.status_code == code, answer.text
    assert answer.headers.get("Warning") == warning
    if code == 400:
        assert 'strict decoding error: unknown field "spec.colour"' in answer.json()["message"]
    else:
        assert "colour" not in answer.json()["spec"]


def test_a_put_of_a_custom_resource_without_a_resource_version_is_invalid(
        client: httpx.Client) -> None:
    """A custom resource allows no unconditional update: a PUT must say what it read."""
    made = client.post(THINGS, json={**manifest(), "metadata": {"name": "put"}}).json()
    del made["metadata"]["resourceVersion"]
    answer = client.put(f"{THINGS}/put", json={**made, "spec": {"replicas": 2}})
    assert answer.status_code == 422, answer.text
    assert answer.json()["message"] == (
        'Thing.x.io "put" is invalid: metadata.resourceVersion: Invalid value: 0x0: must be '
        "specified for an update")
    assert answer.json()["details"]["causes"] == [{
        "reason": "FieldValueInvalid", "field": "metadata.resourceVersion",
        "message": "Invalid value: 0x0: must be specified for an update"}]
    current = client.get(f"{THINGS}/put").json()
    assert current["spec"]["replicas"] == 1
    assert client.put(f"{THINGS}/put", json={**current, "spec": {"replicas": 2}}).status_code == 200


def _routing_crd(plural: str, replicas_schema: dict[str, Any]) -> dict[str, Any]:
    """A CRD whose ``routing`` must set exactly one of two objects, one of them empty."""
    return {
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.x.io"},
        "spec": {"group": "x.io", "scope": "Namespaced",
                 "names": {"plural": plural, "kind": plural.capitalize()[:-1]},
                 "versions": [{"name": "v1", "served": True, "storage": True, "schema": {
                     "openAPIV3Schema": {"type": "object", "properties": {"spec": {
                         "type": "object", "description": "", "required": [],
                         "properties": {"routing": {
                             "type": "object", "nullable": False,
                             "properties": {
                                 "replicas": replicas_schema,
                                 "gatewayAPI": {"type": "object", "properties": {
                                     "httpRoute": {"type": "string"}}}},
                             "x-kubernetes-validations": [{
                                 "rule": "(has(self.replicas) ? 1 : 0) + "
                                         "(has(self.gatewayAPI) ? 1 : 0) == 1",
                                 "message": "routing must set exactly one of replicas, "
                                            "gatewayAPI"}]}}}}}}}]}}


def test_a_crd_is_stored_without_empty_fields_as_the_go_types_drop_them(
        client: httpx.Client) -> None:
    crd = _routing_crd("emptyfields", {"type": "object", "properties": {}})
    made = client.post("/apis/apiextensions.k8s.io/v1/customresourcedefinitions", json=crd)
    assert made.status_code == 201, made.text
    stored = client.get("/apis/apiextensions.k8s.io/v1/customresourcedefinitions/"
                        "emptyfields.x.io").json()
    spec = stored["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    assert spec == {"type": "object", "properties": {"routing": {
        "type": "object",
        "properties": {"replicas": {"type": "object"},
                       "gatewayAPI": {"type": "object", "properties": {
                           "httpRoute": {"type": "string"}}}},
        "x-kubernetes-validations": crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"][
            "properties"]["spec"]["properties"]["routing"]["x-kubernetes-validations"]}}}


@pytest.mark.parametrize(("plural", "replicas_schema", "refusal"), [
    pytest.param("emptyprops", {"type": "object", "properties": {}},
                 'Emptyprop.x.io "r" is invalid: spec.routing: Invalid value: "object": invalid '
                 "object type, expected either Properties or AdditionalProperties with "
                 "Allows=true and non-empty Schema evaluating rule: routing must set exactly "
                 "one of replicas, gatewayAPI",
                 id="properties: {} is dropped on storage and CEL cannot read the object"),
    pytest.param("preserved", {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
                 None, id="preserve-unknown-fields makes it an empty map"),
])
def test_cel_reads_an_object_field_through_the_stored_schema_as_kubernetes_does(
        client: httpx.Client, plural: str, replicas_schema: dict[str, Any],
        refusal: str | None) -> None:
    made = client.post("/apis/apiextensions.k8s.io/v1/customresourcedefinitions",
                       json=_routing_crd(plural, replicas_schema))
    assert made.status_code == 201, made.text
    answer = client.post(f"/apis/x.io/v1/namespaces/default/{plural}", json={
        "apiVersion": "x.io/v1", "kind": plural.capitalize()[:-1], "metadata": {"name": "r"},
        "spec": {"routing": {"replicas": {}}}})
    if refusal is None:
        assert answer.status_code == 201, answer.text
    else:
        assert answer.status_code == 422, answer.text
        assert answer.json()["message"] == refusal
        assert [c["field"] for c in answer.json()["details"]["causes"]] == ["spec.routing"]
