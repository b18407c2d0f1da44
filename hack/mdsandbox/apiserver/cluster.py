"""What the API server does to objects: create, update, patch, delete, list, scale, GC.

Semantics follow kube-apiserver (see ../../../tests/integration/sandbox and the golden
exchanges in tests/golden):

* metadata: uid, creationTimestamp, resourceVersion on every write (cluster-wide
  counter), generation for types that have one (CRs, CRDs, Deployments, ReplicaSets),
  bumped when anything but metadata and status changes, and when deletion starts.
  managedFields are not kept.
* an update that changes nothing is not a write: same resourceVersion, no event.
* status subresource: the main resource ignores status, ``/status`` ignores the rest.
* finalizers: DELETE sets deletionTimestamp (deletionGracePeriodSeconds 0) and returns
  the object; the update that removes the last finalizer completes the deletion.
* pods the kubelet has reported (Running, or with container statuses) are deleted
  gracefully, as on a node: DELETE sets deletionTimestamp (now + grace period) and the
  kubelet finishes with gracePeriodSeconds=0; other pods go at once.
* garbage collection runs in the background: a namespaced object whose owners are all
  gone is deleted. propagationPolicy Orphan removes the owner references first;
  Foreground keeps the owner (deletionTimestamp, ``foregroundDeletion`` finalizer) until
  its dependents are gone (they are deleted in the background, not recursively
  foreground, and blockOwnerDeletion is not distinguished).
* deleting a namespace marks it Terminating, deletes its contents, then the namespace.
* CRDs are stored as kube-apiserver stores them: their schemas round-trip through
  the Go types (``validation.stored_schema``: empty maps, lists and strings and false
  booleans dropped), and custom resources are validated against that stored schema.
* custom resources: schema defaults, pruning of unknown fields (a ``Warning`` header
  by default, 400 with ``fieldValidation=Strict`` as kube-apiserver does), validation
  with CEL rules (see validation.py). Built-in types get defaults but no schema check.
* server-side apply (application/apply-patch+yaml) is approximated: it creates the
  object if missing, otherwise removes what the same field manager applied last time
  and no longer applies (spec, labels, annotations; see ``patch.drop_unapplied``), then
  merges the applied configuration in (strategic merge for built-in types, JSON merge
  for custom resources). There is no field-level ownership, so no conflicts between
  managers (``force`` is accepted and changes nothing) and no managedFields.
* a PUT of a custom resource without ``metadata.resourceVersion`` is Invalid (``0x0: must
  be specified for an update``); built-in kinds take the current version.
* updates of built-in kinds keep what the server allocated (a Service's clusterIP) and
  refuse changes to immutable fields (updates.py).
* ``dryRun=All`` runs every check and returns the result without storing it.
"""

from __future__ import annotations

import base64
import contextlib
import copy
import json
import random
import re
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from . import defaults, updates
from .builtin_schemas import strip_unknown_fields
from .errors import (
    APIError,
    Cause,
    already_exists,
    bad_request,
    conflict,
    invalid,
    not_found,
    resource_details,
    unsupported_media_type,
)
from .patch import drop_unapplied, json_patch, merge_patch, strategic_merge_patch
from .resources import CUSTOM_RESOURCE_VERBS, Registry, ResourceType, ScalePaths
from .selectors import parse_field_selector, parse_label_selector, selector_from_match_labels
from .store import Store
from .validation import apply_defaults, prune, stored_schema, validate

HTTPROUTE_CRD = Path(__file__).with_name("httproute-crd.yaml")
GATEWAY_CRD = Path(__file__).with_name("gateway-crd.yaml")

_DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_NAME_CHARS = "bcdfghjklmnpqrstvwxz2456789"

FOREGROUND = "foregroundDeletion"
# The last second RFC 3339 (and Python's datetime) can write: 9999-12-31T23:59:59Z.
LATEST_TIMESTAMP = datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC).timestamp()
MERGE_PATCH = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"
STRATEGIC_PATCH = "application/strategic-merge-patch+json"
APPLY_PATCH = "application/apply-patch+yaml"


def now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class WriteResult:
    obj: dict[str, Any]
    warnings: list[str] = field(default_factory=list)


def _spec_part(obj: dict[str, Any]) -> dict[str, Any]:
    """What a generation tracks: everything but metadata and status."""
    return {k: v for k, v in obj.items() if k not in ("metadata", "status", "apiVersion", "kind")}


class Cluster:
    """The object semantics, over a :class:`Store` and a :class:`Registry`."""

    def __init__(self) -> None:
        self.store = Store()
        self.registry = Registry()
        self._uids: dict[str, tuple[tuple[str, str], str, str]] = {}
        # Server-side apply: the configuration each field manager last applied, per uid.
        self._applied: dict[str, dict[str, Any]] = {}
        self.gc_needed = False
        self._bootstrap()

    # -- bootstrap ------------------------------------------------------------------------

    def _bootstrap(self) -> None:
        for ns in ("default", "kube-system", "kube-public", "kube-node-lease"):
            self.create(self._type("", "v1", "namespaces"), None,
                        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
        self.create(self._type("", "v1", "serviceaccounts"), "default",
                    {"metadata": {"name": "default"}})
        for crd_file in (HTTPROUTE_CRD, GATEWAY_CRD):
            self.create(self._type("apiextensions.k8s.io", "v1", "customresourcedefinitions"),
                        None, yaml.safe_load(crd_file.read_text()))
        self.store.seal_history()

    def _type(self, group: str, version: str, plural: str) -> ResourceType:
        rt = self.registry.get(group, version, plural)
        assert rt is not None, (group, version, plural)
        return rt

    # -- rendering ------------------------------------------------------------------------

    @staticmethod
    def render(rt: ResourceType, obj: dict[str, Any]) -> dict[str, Any]:
        """The object as served at ``rt``'s version: a deep copy, free to change."""
        return copy.deepcopy(Cluster.view(rt, obj))

    @staticmethod
    def view(rt: ResourceType, obj: dict[str, Any]) -> dict[str, Any]:
        """The object as served at ``rt``'s version, sharing everything below the top
        level with the stored object: only for what is serialised at once (responses,
        watch events). Stored objects are never changed in place (every write stores a
        new one), so this is safe, and it spares a deep copy per object per watcher,
        the largest cost of a LIST or a busy watch at thousands of objects.
        """
        out = {"kind": rt.kind, "apiVersion": rt.api_version}
        out.update({k: v for k, v in obj.items() if k not in ("kind", "apiVersion")})
        return out

    # -- checks ---------------------------------------------------------------------------

    def check_namespace(self, rt: ResourceType, namespace: str | None, creating: bool) -> None:
        if not rt.namespaced:
            return
        if not namespace:
            raise bad_request(f"{rt.plural} is namespaced: use the path "
                              f"/.../namespaces/<namespace>/{rt.plural}")
        ns = self.store.get(("", "namespaces"), "", namespace)
        if ns is None:
            raise not_found("", "namespaces", namespace)
        if creating and ns["metadata"].get("deletionTimestamp"):
            raise APIError(403, "Forbidden", f"{rt.plural} \"\" is forbidden: unable to create new "
                           f"content in namespace {namespace} because it is being terminated",
                           {"kind": rt.plural})

    def _check_body(self, rt: ResourceType, body: Any, namespace: str | None,
                    name: str | None) -> dict[str, Any]:
        if not isinstance(body, dict):
            raise bad_request(f"the body must be a {rt.kind} object (a JSON map)")
        api_version, kind = body.get("apiVersion"), body.get("kind")
        if api_version and api_version != rt.api_version and rt.custom:
            raise bad_request(f"the API version in the data ({api_version}) does not match the "
                              f"expected API version ({rt.api_version})")
        if kind and kind != rt.kind:
            raise bad_request(f"the kind in the data ({kind}) does not match the expected kind "
                              f"({rt.kind}) for {rt.plural}")
        metadata = body.get("metadata")
        if metadata is None:
            metadata = body["metadata"] = {}
        if not isinstance(metadata, dict):
            raise bad_request("metadata must be a map: {\"name\": ..., \"labels\": {...}}")
        if rt.namespaced:
            given = metadata.get("namespace")
            if given and namespace and given != namespace:
                raise bad_request("the namespace of the provided object does not match the "
                                  "namespace sent on the request")
            metadata["namespace"] = namespace
        else:
            metadata.pop("namespace", None)
        if name is not None and metadata.get("name") and metadata["name"] != name:
            raise bad_request(f"the name of the object ({metadata['name']}) does not match the "
                              f"name on the URL ({name})")
        if name is not None and not metadata.get("name"):
            metadata["name"] = name
        for key in ("labels", "annotations"):
            value = metadata.get(key)
            if value is not None and not (
                isinstance(value, dict) and all(isinstance(v, str) for v in value.values())
            ):
                raise invalid(rt.kind, rt.group, str(metadata.get("name", "")), [
                    Cause(f"metadata.{key}", f"Invalid value: {json.dumps(value)}: {key} must "
                                             "map strings to strings")])
        return body

    def _validate_name(self, rt: ResourceType, name: str) -> None:
        if len(name) > 253 or not _DNS1123_SUBDOMAIN.match(name):
            raise invalid(rt.kind, rt.group, name, [Cause(
                "metadata.name",
                f'Invalid value: "{name}": a lowercase RFC 1123 subdomain must consist of lower '
                "case alphanumeric characters, '-' or '.', and must start and end with an "
                "alphanumeric character (e.g. 'example.com', regex used for validation is "
                "'[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')",
            )])

    def _admit(self, rt: ResourceType, obj: dict[str, Any], old: dict[str, Any] | None,
               field_validation: str, status_only: bool = False) -> list[str]:
        """Defaults, pruning and validation; returns warnings (unknown fields)."""
        warnings: list[str] = []
        if not rt.custom:
            dropped = strip_unknown_fields(rt.group, rt.version, rt.kind, obj)
            self._report_unknown(rt, dropped, field_validation, warnings)
            if old is not None:
                updates.carry_over(rt.group, rt.plural, obj, old)
            defaults.apply(rt.group, rt.plural, obj)
            if rt.plural == "customresourcedefinitions":
                self._admit_crd(obj)
            if old is not None:
                causes = updates.immutable_causes(rt.group, rt.plural, obj, old)
                if causes:
                    raise invalid(rt.kind, rt.group, obj["metadata"].get("name", ""), causes)
            return warnings
        schema = rt.schema
        if not schema:
            return warnings
        pruned, dropped = prune(schema, obj)
        self._report_unknown(rt, dropped, field_validation, warnings)
        obj.clear()
        obj.update(apply_defaults(schema, pruned))
        if status_only:  # a /status write is checked against the status schema only
            status_schema = (schema.get("properties") or {}).get("status")
            schema = {"type": "object", "properties": {"status": status_schema}} \
                if isinstance(status_schema, dict) else {}
        causes = validate(schema, obj, old)
        if causes:
            raise invalid(rt.kind, rt.group, obj["metadata"].get("name", ""), causes)
        return warnings

    @staticmethod
    def _report_unknown(rt: ResourceType, dropped: list[str], field_validation: str,
                        warnings: list[str]) -> None:
        if not dropped:
            return
        if field_validation == "Strict":
            fields = ", ".join(f'unknown field "{d}"' for d in dropped)
            raise bad_request(f"{rt.kind} in version \"{rt.version}\" cannot be handled as a "
                              f"{rt.kind}: strict decoding error: {fields}")
        if field_validation != "Ignore":
            warnings.extend(f'unknown field "{d}"' for d in dropped)

    # -- CRDs -----------------------------------------------------------------------------

    def _admit_crd(self, crd: dict[str, Any]) -> None:
        spec = crd.get("spec")
        name = crd["metadata"].get("name", "")
        causes: list[Cause] = []
        if not isinstance(spec, dict):
            raise invalid("CustomResourceDefinition", "apiextensions.k8s.io", name,
                          [Cause("spec", "Required value", "FieldValueRequired")])
        names: dict[str, Any] = spec["names"] if isinstance(spec.get("names"), dict) else {}
        group = spec.get("group")
        for path, value in (("spec.group", group), ("spec.names.plural", names.get("plural")),
                            ("spec.names.kind", names.get("kind"))):
            if not value:
                causes.append(Cause(path, "Required value", "FieldValueRequired"))
        if spec.get("scope") not in ("Namespaced", "Cluster"):
            causes.append(Cause("spec.scope", f"Unsupported value: {json.dumps(spec.get('scope'))}"
                                              ': supported values: "Cluster", "Namespaced"',
                                "FieldValueNotSupported"))
        versions = spec.get("versions")
        if not isinstance(versions, list) or not versions:
            causes.append(Cause("spec.versions", "Invalid value: []: must have exactly one "
                                                 "version marked as storage version"))
        elif sum(1 for v in versions if isinstance(v, dict) and v.get("storage")) != 1:
            causes.append(Cause("spec.versions", "Invalid value: " + json.dumps(
                [v.get("name") for v in versions if isinstance(v, dict)]) +
                ": must have exactly one version marked as storage version"))
        if group and names.get("plural") and name != f"{names['plural']}.{group}":
            causes.append(Cause("metadata.name", f'Invalid value: "{name}": must be '
                                                 "spec.names.plural+\".\"+spec.group"))
        if causes:
            raise invalid("CustomResourceDefinition", "apiextensions.k8s.io", name, causes)
        names.setdefault("singular", str(names["kind"]).lower())
        names.setdefault("listKind", f"{names['kind']}List")
        spec.setdefault("conversion", {"strategy": "None"})
        for version in versions or []:
            schema = version.get("schema") if isinstance(version, dict) else None
            if isinstance(schema, dict) and isinstance(schema.get("openAPIV3Schema"), dict):
                # Stored as kube-apiserver stores it; custom resources are then validated
                # (CEL included) against what was stored, not what was sent.
                schema["openAPIV3Schema"] = stored_schema(schema["openAPIV3Schema"])

    def _crd_status(self, crd: dict[str, Any]) -> dict[str, Any]:
        stamp = now()
        spec = crd["spec"]
        return {
            "conditions": [
                {"type": "NamesAccepted", "status": "True", "lastTransitionTime": stamp,
                 "reason": "NoConflicts", "message": "no conflicts found"},
                {"type": "Established", "status": "True", "lastTransitionTime": stamp,
                 "reason": "InitialNamesAccepted",
                 "message": "the initial names have been accepted"},
            ],
            "acceptedNames": copy.deepcopy(spec["names"]),
            "storedVersions": [v["name"] for v in spec["versions"] if v.get("storage")],
        }

    def _serve_crd(self, crd: dict[str, Any]) -> None:
        spec = crd["spec"]
        names = spec["names"]
        self.registry.remove_group_resource(spec["group"], names["plural"])
        for version in spec["versions"]:
            if not version.get("served", True):
                continue
            subresources = version.get("subresources") or {}
            scale = subresources.get("scale")
            self.registry.add(ResourceType(
                group=spec["group"],
                version=version["name"],
                plural=names["plural"],
                kind=names["kind"],
                singular=names.get("singular", names["kind"].lower()),
                namespaced=spec.get("scope") == "Namespaced",
                short_names=list(names.get("shortNames") or []),
                categories=list(names.get("categories") or []),
                status_subresource="status" in subresources,
                scale=ScalePaths(
                    scale.get("specReplicasPath", ".spec.replicas"),
                    scale.get("statusReplicasPath", ".status.replicas"),
                    scale.get("labelSelectorPath"),
                ) if isinstance(scale, dict) else None,
                has_generation=True,
                custom=True,
                schema=((version.get("schema") or {}).get("openAPIV3Schema")),
                printer_columns=list(version.get("additionalPrinterColumns") or []),
                verbs=list(CUSTOM_RESOURCE_VERBS),
            ))

    # -- create ---------------------------------------------------------------------------

    def create(self, rt: ResourceType, namespace: str | None, body: Any, *,
               dry_run: bool = False, field_validation: str = "Warn") -> WriteResult:
        obj = self._check_body(rt, copy.deepcopy(body), namespace, None)
        self.check_namespace(rt, namespace, creating=True)
        metadata = obj["metadata"]
        if not metadata.get("name"):
            if metadata.get("generateName"):
                metadata["name"] = metadata["generateName"] + "".join(
                    random.choice(_NAME_CHARS) for _ in range(5))
            else:
                raise invalid(rt.kind, rt.group, "", [Cause(
                    "metadata.name", "Required value: name or generateName is required",
                    "FieldValueRequired")])
        name = metadata["name"]
        self._validate_name(rt, name)
        if self.store.get(rt.store_key, namespace or "", name) is not None:
            raise already_exists(rt.group, rt.plural, name)
        for key in ("uid", "resourceVersion", "creationTimestamp", "deletionTimestamp",
                    "deletionGracePeriodSeconds", "generation", "managedFields", "selfLink"):
            metadata.pop(key, None)
        obj["apiVersion"], obj["kind"] = rt.api_version, rt.kind
        if rt.status_subresource:
            obj.pop("status", None)
            status = defaults.initial_status(rt.group, rt.plural, obj)
            if status is not None:
                obj["status"] = status
        warnings = self._admit(rt, obj, None, field_validation)
        metadata = obj["metadata"]  # admission may have replaced it with a pruned copy
        if rt.has_generation:
            metadata["generation"] = 1
        metadata["uid"] = str(uuid.uuid4())
        metadata["creationTimestamp"] = now()
        if rt.plural == "customresourcedefinitions" and not rt.custom:
            obj["status"] = self._crd_status(obj)
        if dry_run:
            return WriteResult(self.view(rt, obj), warnings)
        metadata["resourceVersion"] = str(self.store.next_version())
        self.store.put(rt.store_key, obj, "ADDED", None)
        self._uids[metadata["uid"]] = (rt.store_key, namespace or "", name)
        if any(ref.get("uid") not in self._uids for ref in metadata.get("ownerReferences") or []):
            self.gc_needed = True  # born an orphan: the collector runs only when told to
        if rt.plural == "customresourcedefinitions" and not rt.custom:
            self._serve_crd(obj)
        return WriteResult(self.view(rt, obj), warnings)

    # -- get / list -----------------------------------------------------------------------

    def get(self, rt: ResourceType, namespace: str | None, name: str) -> dict[str, Any]:
        if rt.namespaced:
            self.check_namespace(rt, namespace, creating=False)
        obj = self.store.get(rt.store_key, namespace or "", name)
        if obj is None:
            raise not_found(rt.group, rt.plural, name)
        return obj

    def list(self, rt: ResourceType, namespace: str | None, query: dict[str, str]) -> dict[str, Any]:
        label_match = parse_label_selector(query.get("labelSelector"))
        field_match = parse_field_selector(query.get("fieldSelector"), rt.plural)
        objects = [o for o in self.store.list_objects(rt.store_key, namespace)
                   if label_match(o) and field_match(o)]
        start = ""
        if query.get("continue"):
            start = self._decode_continue(query["continue"])
        if start:
            objects = [o for o in objects if self._sort_key(o) > start]
        metadata: dict[str, Any] = {"resourceVersion": str(self.store.resource_version)}
        limit = int(query["limit"]) if query.get("limit", "").isdigit() else 0
        if limit and len(objects) > limit:
            last = self._sort_key(objects[limit - 1])
            metadata["continue"] = self._encode_continue(last)
            metadata["remainingItemCount"] = len(objects) - limit
            objects = objects[:limit]
        elif rt.custom:
            metadata["continue"] = ""
        items = []
        for obj in objects:
            if rt.custom:
                items.append(self.view(rt, obj))
            else:  # built-in list items carry no kind/apiVersion on a real server
                items.append({k: v for k, v in obj.items() if k not in ("kind", "apiVersion")})
        return {"kind": f"{rt.kind}List", "apiVersion": rt.api_version, "metadata": metadata,
                "items": items}

    @staticmethod
    def _sort_key(obj: dict[str, Any]) -> str:
        meta = obj["metadata"]
        return f"{meta.get('namespace', '')}/{meta['name']}"

    def _encode_continue(self, last: str) -> str:
        token = {"v": "meta.k8s.io/v1", "rv": self.store.resource_version, "start": last + "\0"}
        return base64.urlsafe_b64encode(json.dumps(token).encode()).decode().rstrip("=")

    @staticmethod
    def _decode_continue(token: str) -> str:
        try:
            decoded = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
            return str(decoded["start"]).rstrip("\0")
        except (ValueError, KeyError, TypeError) as exc:
            raise bad_request(f"continue key is not valid: {exc}; pass the metadata.continue of "
                              "the previous page unchanged") from exc

    # -- update ---------------------------------------------------------------------------

    def replace(self, rt: ResourceType, namespace: str | None, name: str, body: Any, *,
                subresource: str = "", dry_run: bool = False,
                field_validation: str = "Warn") -> WriteResult:
        """A PUT. Custom resources allow no unconditional update (as their strategy in
        kube-apiserver): the body must carry the resourceVersion it was read at. Built-in
        kinds take the current one when it is missing."""
        if rt.custom and isinstance(body, dict) and not (
                isinstance(body.get("metadata"), dict) and body["metadata"].get("resourceVersion")):
            self.get(rt, namespace, name)  # a missing object is NotFound first
            raise invalid(rt.kind, rt.group, name, [Cause(
                "metadata.resourceVersion", "Invalid value: 0x0: must be specified for an update")])
        return self.update(rt, namespace, name, body, subresource=subresource, dry_run=dry_run,
                           field_validation=field_validation)

    def update(self, rt: ResourceType, namespace: str | None, name: str, body: Any, *,
               subresource: str = "", dry_run: bool = False,
               field_validation: str = "Warn") -> WriteResult:
        current = self.get(rt, namespace, name)
        body = self._check_body(rt, copy.deepcopy(body), namespace, name)
        wanted_rv = body["metadata"].get("resourceVersion")
        if wanted_rv and wanted_rv != current["metadata"]["resourceVersion"]:
            raise conflict(rt.group, rt.plural, name)
        if subresource == "status":
            obj = copy.deepcopy(current)
            if "status" in body:
                obj["status"] = body["status"]
            else:
                obj.pop("status", None)
        else:
            obj = body
            meta, old_meta = obj["metadata"], current["metadata"]
            for key in ("uid", "creationTimestamp", "deletionTimestamp",
                        "deletionGracePeriodSeconds", "generation"):
                if key in old_meta:
                    meta[key] = old_meta[key]
                else:
                    meta.pop(key, None)
            meta.pop("managedFields", None)
            if rt.status_subresource:
                if "status" in current:
                    obj["status"] = copy.deepcopy(current["status"])
                else:
                    obj.pop("status", None)
        obj["apiVersion"], obj["kind"] = rt.api_version, rt.kind
        obj["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
        old_view = self.view(rt, current)  # read only: validation's "old self"
        warnings = self._admit(rt, obj, old_view, field_validation,
                               status_only=subresource == "status")
        if rt.has_generation and _spec_part(obj) != _spec_part(current):
            obj["metadata"]["generation"] = int(current["metadata"].get("generation", 1)) + 1
        if rt.plural == "customresourcedefinitions" and not rt.custom and subresource != "status":
            obj["status"] = self._crd_status(obj)
            obj["status"]["conditions"] = current.get("status", {}).get(
                "conditions", obj["status"]["conditions"])
        if obj == current:
            return WriteResult(self.view(rt, current), warnings)
        if dry_run:
            return WriteResult(self.view(rt, obj), warnings)
        return WriteResult(self._write(rt, obj, current), warnings)

    def _write(self, rt: ResourceType, obj: dict[str, Any],
               current: dict[str, Any]) -> dict[str, Any]:
        """Store an update; completes a pending deletion once the finalizers are gone."""
        obj["metadata"]["resourceVersion"] = str(self.store.next_version())
        if obj["metadata"].get("deletionTimestamp") and not obj["metadata"].get("finalizers"):
            obj["metadata"].pop("finalizers", None)
            self._remove(rt, obj)
            return self.view(rt, obj)
        self.store.put(rt.store_key, obj, "MODIFIED", current)
        if rt.plural == "customresourcedefinitions" and not rt.custom:
            self._serve_crd(obj)
        return self.view(rt, obj)

    def _remove(self, rt: ResourceType, obj: dict[str, Any]) -> None:
        self.store.remove(rt.store_key, obj)
        self._uids.pop(obj["metadata"].get("uid", ""), None)
        self._applied.pop(obj["metadata"].get("uid", ""), None)
        self.gc_needed = True
        if rt.plural == "customresourcedefinitions" and not rt.custom:
            spec = obj["spec"]
            self.registry.remove_group_resource(spec["group"], spec["names"]["plural"])
            for _, cr in list(self.store.all_objects()):
                if cr.get("apiVersion", "").split("/")[0] == spec["group"] and \
                        cr.get("kind") == spec["names"]["kind"]:
                    cr = copy.deepcopy(cr)
                    cr["metadata"]["resourceVersion"] = str(self.store.next_version())
                    self.store.remove((spec["group"], spec["names"]["plural"]), cr)

    # -- patch ----------------------------------------------------------------------------

    def patch(self, rt: ResourceType, namespace: str | None, name: str, content_type: str,
              raw: bytes, *, subresource: str = "", dry_run: bool = False,
              field_validation: str = "Warn", field_manager: str | None = None) -> WriteResult:
        accepted = [JSON_PATCH, MERGE_PATCH, APPLY_PATCH]
        if not rt.custom:
            accepted.insert(2, STRATEGIC_PATCH)
        if content_type not in accepted:
            raise unsupported_media_type(accepted)
        try:
            patch = yaml.safe_load(raw) if content_type == APPLY_PATCH else json.loads(raw or b"{}")
        except (ValueError, yaml.YAMLError) as exc:
            raise bad_request(f"the patch is not valid {content_type}: {exc}") from exc
        if content_type == APPLY_PATCH:
            if not field_manager:
                raise bad_request("PATCH requests with apply-patch+yaml require fieldManager "
                                  "(add ?fieldManager=<your-name>)")
            if not isinstance(patch, dict):
                raise bad_request("an applied configuration must be an object (YAML map)")
            if self.store.get(rt.store_key, namespace or "", name) is None and not subresource:
                created = self.create(rt, namespace, patch, dry_run=dry_run,
                                      field_validation=field_validation)
                if not dry_run:
                    self._applied[created.obj["metadata"]["uid"]] = {field_manager: patch}
                return created
        current = self.get(rt, namespace, name)
        if subresource == "scale":
            return self._patch_scale(rt, current, content_type, patch, dry_run)
        view = self.render(rt, current)
        if content_type == APPLY_PATCH:
            uid = current["metadata"]["uid"]
            previous = self._applied.get(uid, {}).get(str(field_manager))
            if previous is not None:
                drop_unapplied(view.get("spec"), previous.get("spec"), patch.get("spec"))
                for key in ("labels", "annotations"):
                    drop_unapplied(view.get("metadata"), {key: (previous.get("metadata") or {})
                                                          .get(key)},
                                   {key: (patch.get("metadata") or {}).get(key)})
            if not dry_run:
                self._applied.setdefault(uid, {})[str(field_manager)] = patch
        if content_type == JSON_PATCH:
            patched = json_patch(view, patch)
        elif content_type == MERGE_PATCH or (content_type == APPLY_PATCH and rt.custom):
            patched = merge_patch(view, patch)
        else:
            patched = strategic_merge_patch(view, patch)
        return self.update(rt, namespace, name, patched, subresource=subresource,
                           dry_run=dry_run, field_validation=field_validation)

    # -- scale ----------------------------------------------------------------------------

    def scale(self, rt: ResourceType, obj: dict[str, Any]) -> dict[str, Any]:
        assert rt.scale is not None
        meta = obj["metadata"]
        spec_replicas = _get_path(obj, rt.scale.spec_replicas)
        status_replicas = _get_path(obj, rt.scale.status_replicas)
        if rt.scale.label_selector:
            selector = _get_path(obj, rt.scale.label_selector) or ""
        else:
            selector = selector_from_match_labels((obj.get("spec") or {}).get("selector"))
        status: dict[str, Any] = {"replicas": status_replicas or 0}
        if selector:
            status["selector"] = selector
        return {
            "kind": "Scale",
            "apiVersion": "autoscaling/v1",
            "metadata": {k: meta[k] for k in ("name", "namespace", "uid", "resourceVersion",
                                              "creationTimestamp") if k in meta},
            "spec": {"replicas": spec_replicas or 0},
            "status": status,
        }

    def _patch_scale(self, rt: ResourceType, current: dict[str, Any], content_type: str,
                     patch: Any, dry_run: bool) -> WriteResult:
        view = self.scale(rt, current)
        if content_type == JSON_PATCH:
            patched = json_patch(view, patch)
        elif content_type == MERGE_PATCH:
            patched = merge_patch(view, patch)
        else:
            patched = strategic_merge_patch(view, patch)
        return self.update_scale(rt, current, patched, dry_run)

    def update_scale(self, rt: ResourceType, current: dict[str, Any], body: Any,
                     dry_run: bool) -> WriteResult:
        assert rt.scale is not None
        if not isinstance(body, dict):
            raise bad_request("the body must be an autoscaling/v1 Scale object")
        replicas = (body.get("spec") or {}).get("replicas")
        meta = current["metadata"]
        if not isinstance(replicas, int) or isinstance(replicas, bool) or replicas < 0:
            raise invalid("Scale", "autoscaling", meta["name"], [Cause(
                "spec.replicas", f"Invalid value: {json.dumps(replicas)}: must be greater than "
                                 "or equal to 0")])
        wanted_rv = (body.get("metadata") or {}).get("resourceVersion")
        if wanted_rv and wanted_rv != meta["resourceVersion"]:
            raise conflict(rt.group, rt.plural, meta["name"])
        obj = self.render(rt, current)
        _set_path(obj, rt.scale.spec_replicas, replicas)
        result = self.update(rt, meta.get("namespace"), meta["name"], obj, dry_run=dry_run)
        stored = self.store.get(rt.store_key, meta.get("namespace", ""), meta["name"])
        return WriteResult(self.scale(rt, stored if stored and not dry_run else result.obj))

    # -- delete ---------------------------------------------------------------------------

    def delete(self, rt: ResourceType, namespace: str | None, name: str,
               options: dict[str, Any], *, dry_run: bool = False) -> dict[str, Any]:
        current = self.get(rt, namespace, name)
        meta = current["metadata"]
        preconditions = options.get("preconditions") or {}
        if preconditions.get("uid") and preconditions["uid"] != meta["uid"]:
            raise APIError(409, "Conflict", f"Precondition failed: UID in precondition: "
                           f"{preconditions['uid']}, UID in object meta: {meta['uid']}",
                           resource_details(rt.group, rt.plural, name))
        if preconditions.get("resourceVersion") and \
                preconditions["resourceVersion"] != meta["resourceVersion"]:
            raise APIError(409, "Conflict", "Precondition failed: ResourceVersion in "
                           f"precondition: {preconditions['resourceVersion']}, ResourceVersion "
                           f"in object meta: {meta['resourceVersion']}",
                           resource_details(rt.group, rt.plural, name))
        if dry_run:
            return self.render(rt, current)
        if options.get("propagationPolicy") == "Orphan":
            self._orphan_dependents(meta["uid"])
        if rt.group == "" and rt.plural == "namespaces":
            return self._delete_namespace(rt, current)
        if options.get("propagationPolicy") == "Foreground" and not meta.get("deletionTimestamp"):
            # The owner stays (deletionTimestamp, the foregroundDeletion finalizer) until the
            # collector has deleted its dependents, then goes.
            obj = copy.deepcopy(current)
            obj["metadata"]["finalizers"] = [*meta.get("finalizers", []), FOREGROUND]
            obj["metadata"]["deletionTimestamp"] = now()
            obj["metadata"]["deletionGracePeriodSeconds"] = 0
            if rt.has_generation:
                obj["metadata"]["generation"] = int(meta.get("generation", 1)) + 1
            obj["metadata"]["resourceVersion"] = str(self.store.next_version())
            self.store.put(rt.store_key, obj, "MODIFIED", current)
            self.gc_needed = True
            return self.render(rt, obj)
        if rt.group == "" and rt.plural == "pods" and self._graceful(current, options):
            obj = copy.deepcopy(current)
            grace = self._grace_seconds(current, options)
            # A grace period past year 9999 (int64 seconds allow it) is stamped 9999-12-31:
            # the pod still waits for the kubelet, which stops it within its own cap.
            until = min(datetime.now(UTC).timestamp() + grace, LATEST_TIMESTAMP)
            obj["metadata"]["deletionTimestamp"] = datetime.fromtimestamp(
                until, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
            obj["metadata"]["deletionGracePeriodSeconds"] = grace
            obj["metadata"]["resourceVersion"] = str(self.store.next_version())
            self.store.put(rt.store_key, obj, "MODIFIED", current)
            return self.render(rt, obj)
        if meta.get("finalizers"):
            if meta.get("deletionTimestamp"):
                return self.render(rt, current)
            obj = copy.deepcopy(current)
            obj["metadata"]["deletionTimestamp"] = now()
            obj["metadata"]["deletionGracePeriodSeconds"] = 0
            if rt.has_generation:
                obj["metadata"]["generation"] = int(meta.get("generation", 1)) + 1
            obj["metadata"]["resourceVersion"] = str(self.store.next_version())
            self.store.put(rt.store_key, obj, "MODIFIED", current)
            return self.render(rt, obj)
        obj = copy.deepcopy(current)
        obj["metadata"]["resourceVersion"] = str(self.store.next_version())
        self._remove(rt, obj)
        if rt.group == "" and rt.plural == "pods":
            return self.render(rt, obj)
        details = resource_details(rt.group, rt.plural, name)
        details["uid"] = meta["uid"]
        return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
                "details": details}

    @staticmethod
    def _grace_seconds(pod: dict[str, Any], options: dict[str, Any]) -> int:
        grace = options.get("gracePeriodSeconds")
        if grace is None:
            grace = (pod.get("spec") or {}).get("terminationGracePeriodSeconds", 30)
        return max(0, int(grace))

    def _graceful(self, pod: dict[str, Any], options: dict[str, Any]) -> bool:
        """Whether deleting this pod waits for the kubelet, as on a real node.

        A real pod is deleted at once when no node runs it; here "a node runs it" means
        the sandbox's kubelet has reported it (Running, or container statuses). Such a pod
        gets deletionTimestamp = now + grace; the kubelet stops it and deletes it with
        gracePeriodSeconds 0. Asking for grace 0 deletes at once.
        """
        if pod["metadata"].get("deletionTimestamp"):
            return False
        status = pod.get("status") or {}
        if status.get("phase") in ("Succeeded", "Failed"):
            return False
        started = status.get("phase") == "Running" or bool(status.get("containerStatuses"))
        return started and self._grace_seconds(pod, options) > 0

    def _delete_namespace(self, rt: ResourceType, current: dict[str, Any]) -> dict[str, Any]:
        if current["metadata"].get("deletionTimestamp"):
            return self.render(rt, current)
        obj = copy.deepcopy(current)
        obj["metadata"]["deletionTimestamp"] = now()
        obj["metadata"]["deletionGracePeriodSeconds"] = 0
        obj.setdefault("status", {})["phase"] = "Terminating"
        obj["metadata"]["resourceVersion"] = str(self.store.next_version())
        self.store.put(rt.store_key, obj, "MODIFIED", current)
        self.gc_needed = True
        return self.render(rt, obj)

    def _orphan_dependents(self, owner_uid: str) -> None:
        for resource, obj in list(self.store.all_objects()):
            refs = obj["metadata"].get("ownerReferences") or []
            kept = [r for r in refs if r.get("uid") != owner_uid]
            if len(kept) != len(refs):
                new = copy.deepcopy(obj)
                if kept:
                    new["metadata"]["ownerReferences"] = kept
                else:
                    new["metadata"].pop("ownerReferences")
                new["metadata"]["resourceVersion"] = str(self.store.next_version())
                self.store.put(resource, new, "MODIFIED", obj)

    def delete_collection(self, rt: ResourceType, namespace: str | None, query: dict[str, str],
                          options: dict[str, Any], *, dry_run: bool = False) -> dict[str, Any]:
        listing = self.list(rt, namespace, {k: v for k, v in query.items()
                                            if k in ("labelSelector", "fieldSelector")})
        items = []
        for item in listing["items"]:
            meta = item["metadata"]
            self.delete(rt, meta.get("namespace"), meta["name"], options, dry_run=dry_run)
            items.append(self.render(rt, item))
        listing["items"] = items
        return listing

    # -- garbage collection ---------------------------------------------------------------

    def collect_garbage(self) -> None:
        """Delete dependents whose owners are all gone, and the contents of dying namespaces."""
        self.gc_needed = False
        live = set(self._uids)
        for resource, obj in list(self.store.all_objects()):
            meta = obj["metadata"]
            refs = meta.get("ownerReferences") or []
            if not refs or meta.get("deletionTimestamp") or not meta.get("namespace"):
                continue
            if all(r.get("uid") not in live for r in refs):
                self._delete_stored(resource, obj)
        self._collect_foreground()
        for ns in self.store.list_objects(("", "namespaces")):
            if not ns["metadata"].get("deletionTimestamp"):
                continue
            name = ns["metadata"]["name"]
            remaining = 0
            for resource in self.store.resources():
                for obj in self.store.list_objects(resource, name):
                    remaining += 1
                    if not obj["metadata"].get("deletionTimestamp"):
                        self._delete_stored(resource, obj)
            if remaining == 0 or not any(self.store.list_objects(r, name) for r in self.store.resources()):
                gone = copy.deepcopy(ns)
                gone["metadata"]["resourceVersion"] = str(self.store.next_version())
                gone["metadata"].pop("finalizers", None)
                self._remove(self._type("", "v1", "namespaces"), gone)

    def _collect_foreground(self) -> None:
        """Delete the dependents of owners in foreground deletion; release owners left alone."""
        dependents: dict[str, list[tuple[tuple[str, str], dict[str, Any]]]] = {}
        for resource, obj in self.store.all_objects():
            for ref in obj["metadata"].get("ownerReferences") or []:
                dependents.setdefault(str(ref.get("uid")), []).append((resource, obj))
        for resource, owner in list(self.store.all_objects()):
            meta = owner["metadata"]
            if FOREGROUND not in (meta.get("finalizers") or []):
                continue
            waiting = dependents.get(meta["uid"], [])
            for dep_resource, dep in waiting:
                if not dep["metadata"].get("deletionTimestamp"):
                    self._delete_stored(dep_resource, dep)
            if not waiting:
                rt = next((r for r in self.registry.all() if r.store_key == resource), None)
                if rt is not None:
                    released = copy.deepcopy(owner)
                    released["metadata"]["finalizers"] = [
                        f for f in meta["finalizers"] if f != FOREGROUND]
                    self._write(rt, released, owner)
            self.gc_needed = True

    def _delete_stored(self, resource: tuple[str, str], obj: dict[str, Any]) -> None:
        rt = next((r for r in self.registry.all() if r.store_key == resource), None)
        if rt is None:
            return
        meta = obj["metadata"]
        # Gone already, or its namespace is: nothing left to collect.
        with contextlib.suppress(APIError):
            self.delete(rt, meta.get("namespace"), meta["name"], {})
        self.gc_needed = True


def _get_path(obj: dict[str, Any], path: str) -> Any:
    node: Any = obj
    for part in path.strip(".").split("."):
        node = node.get(part) if isinstance(node, dict) else None
    return node


def _set_path(obj: dict[str, Any], path: str, value: Any) -> None:
    parts = path.strip(".").split(".")
    node = obj
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = value
