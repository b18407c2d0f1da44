"""The three PATCH kinds kube-apiserver accepts for JSON bodies.

* JSON merge patch (RFC 7386): maps merge, ``null`` deletes, lists are replaced.
* JSON patch (RFC 6902): add, remove, replace, move, copy, test; a failed ``test``
  or a missing path answers 422 with the generic message a real server gives.
* Strategic merge patch (built-in types only): lists with a patch merge key are
  merged element by element, with the directives kubectl apply sends
  (``$patch: replace|delete|merge``, ``$setElementOrder/<list>``, ``$retainKeys``,
  ``$deleteFromPrimitiveList/<list>``). The merge keys come from a table keyed by the
  list's field name (Kubernetes' Go struct tags, for the types this server serves);
  ``ports`` merges on ``containerPort`` in containers and on ``port`` in Services.
  The merged order follows apimachinery's ``normalizeElementOrder``: patched items in
  patch order, interleaved with server-only items in server order.
"""

from __future__ import annotations

import copy
from typing import Any

from .errors import APIError

JSON = Any

# Lists merged by key (patchStrategy "merge" + patchMergeKey in the Go types).
MERGE_KEYS: dict[str, str] = {
    "containers": "name",
    "initContainers": "name",
    "ephemeralContainers": "name",
    "volumes": "name",
    "env": "name",
    "volumeMounts": "mountPath",
    "volumeDevices": "devicePath",
    "imagePullSecrets": "name",
    "hostAliases": "ip",
    "topologySpreadConstraints": "topologyKey",
    "ownerReferences": "uid",
    "conditions": "type",
    "resourceClaims": "name",
}
# Lists of scalars merged as sets (patchStrategy "merge" on a []string).
PRIMITIVE_MERGE_LISTS = {"finalizers"}


def _invalid_patch(message: str) -> APIError:
    return APIError(422, "Invalid", message, {})


def merge_patch(target: JSON, patch: JSON) -> JSON:
    """RFC 7386."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


# -- RFC 6902 ---------------------------------------------------------------------------


def _pointer(path: str) -> list[str]:
    if path == "":
        return []
    if not path.startswith("/"):
        raise _invalid_patch(f"the server rejected our request due to an error in our request: "
                             f"JSON pointer {path!r} must start with '/'")
    return [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]


def _resolve(doc: JSON, parts: list[str]) -> JSON:
    node = doc
    for part in parts:
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            raise _invalid_patch("the server rejected our request due to an error in our request")
    return node


def _parent(doc: JSON, parts: list[str]) -> tuple[JSON, str]:
    if not parts:
        raise _invalid_patch("the server rejected our request due to an error in our request")
    return _resolve(doc, parts[:-1]), parts[-1]


def _add(doc: JSON, parts: list[str], value: JSON) -> JSON:
    if not parts:
        return value
    parent, key = _parent(doc, parts)
    if isinstance(parent, dict):
        parent[key] = value
    elif isinstance(parent, list):
        if key == "-":
            parent.append(value)
        elif key.isdigit() and int(key) <= len(parent):
            parent.insert(int(key), value)
        else:
            raise _invalid_patch("the server rejected our request due to an error in our request")
    else:
        raise _invalid_patch("the server rejected our request due to an error in our request")
    return doc


def _remove(doc: JSON, parts: list[str]) -> JSON:
    parent, key = _parent(doc, parts)
    value = _resolve(doc, parts)
    if isinstance(parent, dict):
        del parent[key]
    else:
        del parent[int(key)]
    return value


def json_patch(doc: JSON, operations: JSON) -> JSON:
    """RFC 6902 on a copy of ``doc``."""
    if not isinstance(operations, list):
        raise APIError(400, "BadRequest", "json patch must be a list of operations "
                       "(e.g. [{\"op\": \"replace\", \"path\": \"/spec/replicas\", \"value\": 2}])")
    doc = copy.deepcopy(doc)
    for op in operations:
        if not isinstance(op, dict) or "op" not in op or "path" not in op:
            raise APIError(400, "BadRequest", "each json patch operation needs 'op' and 'path'")
        kind, parts = op["op"], _pointer(op["path"])
        if kind == "add":
            doc = _add(doc, parts, copy.deepcopy(op.get("value")))
        elif kind == "remove":
            _remove(doc, parts)
        elif kind == "replace":
            _resolve(doc, parts)
            if not parts:
                doc = copy.deepcopy(op.get("value"))
            else:
                parent, key = _parent(doc, parts)
                if isinstance(parent, list):
                    parent[int(key)] = copy.deepcopy(op.get("value"))
                else:
                    parent[key] = copy.deepcopy(op.get("value"))
        elif kind in ("move", "copy"):
            source = _pointer(op.get("from", ""))
            value = _remove(doc, source) if kind == "move" else copy.deepcopy(_resolve(doc, source))
            doc = _add(doc, parts, value)
        elif kind == "test":
            if _resolve(doc, parts) != op.get("value"):
                raise _invalid_patch(
                    "the server rejected our request due to an error in our request"
                )
        else:
            raise APIError(400, "BadRequest", f"unknown json patch op {kind!r}: use add, remove, "
                           "replace, move, copy or test")
    return doc


# -- strategic merge patch --------------------------------------------------------------


def _merge_key(field: str, items: list[Any]) -> str | None:
    if field == "ports":
        sample = next((i for i in items if isinstance(i, dict)), {})
        return "containerPort" if "containerPort" in sample else "port"
    return MERGE_KEYS.get(field)


def strategic_merge_patch(original: JSON, patch: JSON) -> JSON:
    """Apply a strategic merge patch to a copy of ``original``."""
    if not isinstance(patch, dict):
        raise APIError(400, "BadRequest", "a strategic merge patch must be a JSON object")
    return _smp_map(copy.deepcopy(original) if isinstance(original, dict) else {}, patch)


def _smp_map(original: dict[str, Any], patch: dict[str, Any]) -> Any:
    directive = patch.get("$patch")
    if directive == "replace":
        return {k: copy.deepcopy(v) for k, v in patch.items() if k != "$patch"}
    if directive == "delete":
        return None
    retain = patch.get("$retainKeys")
    orders = {k[len("$setElementOrder/"):]: v for k, v in patch.items()
              if k.startswith("$setElementOrder/")}
    deletions = {k[len("$deleteFromPrimitiveList/"):]: v for k, v in patch.items()
                 if k.startswith("$deleteFromPrimitiveList/")}
    result = original
    for key, value in patch.items():
        if key.startswith("$"):
            continue
        if value is None:
            result.pop(key, None)
        elif isinstance(value, dict):
            existing = result.get(key)
            merged = _smp_map(existing if isinstance(existing, dict) else {}, value)
            if merged is None:
                result.pop(key, None)
            else:
                result[key] = merged
        elif isinstance(value, list):
            result[key] = _smp_list(key, result.get(key), value, orders.get(key))
        else:
            result[key] = copy.deepcopy(value)
    for key, order in orders.items():
        if key not in patch and isinstance(result.get(key), list):
            result[key] = _smp_list(key, result[key], [], order)
    for key, values in deletions.items():
        if isinstance(result.get(key), list):
            result[key] = [v for v in result[key] if v not in values]
    if isinstance(retain, list):
        for key in [k for k in result if k not in retain]:
            del result[key]
    return result


def _smp_list(field: str, original: Any, patch: list[Any], order: list[Any] | None) -> list[Any]:
    original = original if isinstance(original, list) else []
    if any(isinstance(i, dict) and i.get("$patch") == "replace" for i in patch):
        return [copy.deepcopy(i) for i in patch if not (isinstance(i, dict) and "$patch" in i)]
    if field in PRIMITIVE_MERGE_LISTS:
        merged = list(original)
        for item in patch:
            if item not in merged:
                merged.append(item)
        return merged
    key = _merge_key(field, original + patch)
    if key is None or not all(isinstance(i, dict) for i in original + patch):
        return copy.deepcopy(patch)

    server_items = list(original)
    patched: list[dict[str, Any]] = []
    deleted: set[Any] = set()
    for item in patch:
        if item.get("$patch") == "delete":
            deleted.add(item.get(key))
            continue
        existing = next((s for s in server_items if s.get(key) == item.get(key)), None)
        if existing is not None:
            server_items.remove(existing)
            merged = _smp_map(existing, item)
        else:
            merged = _smp_map({}, item)
        if merged is not None:
            patched.append(merged)
    server_only = [s for s in server_items if s.get(key) not in deleted]
    server_order = [s.get(key) for s in original]
    if order is not None:
        wanted = [o.get(key) if isinstance(o, dict) else o for o in order]
        position = {k: i for i, k in enumerate(wanted)}
        patched.sort(key=lambda i: position.get(i.get(key), len(wanted)))
        server_only.sort(key=lambda i: position.get(i.get(key), len(wanted)))
        server_order = wanted
    return _merge_sorted(patched, server_only, server_order, key)


def _merge_sorted(left: list[Any], right: list[Any], server_order: list[Any],
                  key: str) -> list[Any]:
    """apimachinery's mergeSortedSlice: interleave by server order, left first when unknown."""
    def index(item: dict[str, Any]) -> int:
        try:
            return server_order.index(item.get(key))
        except ValueError:
            return -1

    out: list[Any] = []
    i = j = 0
    while i < len(left) or j < len(right):
        if i >= len(left):
            out.append(right[j])
            j += 1
        elif j >= len(right):
            out.append(left[i])
            i += 1
        else:
            li, ri = index(left[i]), index(right[j])
            if li >= 0 and ri >= 0 and ri < li:
                out.append(right[j])
                j += 1
            else:
                out.append(left[i])
                i += 1
    return out


# -- server-side apply, for one field manager ---------------------------------------------


def drop_unapplied(live: Any, previous: Any, applied: Any) -> Any:
    """Remove from ``live`` (in place) what ``previous`` applied and ``applied`` no longer does.

    Server-side apply removes the fields a manager stops applying. Without field-level
    ownership, the previous configuration this manager applied stands for what it owns:
    map keys it dropped go, and so do merge-keyed list items it dropped (lists without a
    merge key are replaced whole by the merge that follows).
    """
    if not isinstance(live, dict) or not isinstance(previous, dict):
        return live
    applied = applied if isinstance(applied, dict) else {}
    for key, old in previous.items():
        if key.startswith("$") or key not in live:
            continue
        if key not in applied:
            del live[key]
        elif isinstance(old, dict) and isinstance(applied[key], dict):
            drop_unapplied(live[key], old, applied[key])
        elif isinstance(old, list) and isinstance(applied[key], list) and \
                isinstance(live[key], list):
            items = old + applied[key] + live[key]
            merge_key = _merge_key(key, items)
            if merge_key is None or not all(isinstance(i, dict) for i in items):
                continue
            was = {i.get(merge_key): i for i in old}
            now = {i.get(merge_key): i for i in applied[key]}
            kept = []
            for item in live[key]:
                k = item.get(merge_key)
                if k in was and k not in now:
                    continue
                if k in was and k in now:
                    drop_unapplied(item, was[k], now[k])
                kept.append(item)
            live[key] = kept
    return live
