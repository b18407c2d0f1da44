"""Reading the protobuf request bodies kubectl's typed clients send.

kubectl's imperative commands (``kubectl create namespace|configmap|secret|
serviceaccount``) go through client-go's typed clients, which send
``application/vnd.kubernetes.protobuf`` bodies: the magic ``k8s\\0`` then a
``runtime.Unknown`` (typeMeta, raw) whose ``raw`` is the object. This decodes those few
kinds, with a field table taken from k8s.io/api's generated.proto, into the JSON form
the server works with. Other kinds answer 415 naming the way out (``kubectl apply -f``);
responses are always JSON, which every client accepts.
"""

from __future__ import annotations

import base64
from typing import Any

from .errors import APIError

PROTOBUF = "application/vnd.kubernetes.protobuf"
MAGIC = b"k8s\x00"

# A field is (json name, kind): "string", "bytes" (base64 in JSON), "bool", "int",
# "strings" (repeated string), "map" (map<string,string>), "bytesmap"
# (map<string,bytes>), a message name, or "[]" + a message name (repeated message).
Field = tuple[str, str]
MESSAGES: dict[str, dict[int, Field]] = {
    "TypeMeta": {1: ("apiVersion", "string"), 2: ("kind", "string")},
    "Unknown": {1: ("typeMeta", "TypeMeta"), 2: ("raw", "raw"),
                3: ("contentEncoding", "string"), 4: ("contentType", "string")},
    "ObjectMeta": {
        1: ("name", "string"), 2: ("generateName", "string"), 3: ("namespace", "string"),
        5: ("uid", "string"), 6: ("resourceVersion", "string"), 7: ("generation", "int"),
        11: ("labels", "map"), 12: ("annotations", "map"),
        13: ("ownerReferences", "[]OwnerReference"), 14: ("finalizers", "strings"),
    },
    "OwnerReference": {
        1: ("kind", "string"), 3: ("name", "string"), 4: ("uid", "string"),
        5: ("apiVersion", "string"), 6: ("controller", "bool"),
        7: ("blockOwnerDeletion", "bool"),
    },
    "LocalObjectReference": {1: ("name", "string")},
    "ObjectReference": {1: ("kind", "string"), 2: ("namespace", "string"),
                        3: ("name", "string"), 4: ("uid", "string"),
                        5: ("apiVersion", "string")},
    "Namespace": {1: ("metadata", "ObjectMeta"), 2: ("spec", "NamespaceSpec")},
    "NamespaceSpec": {1: ("finalizers", "strings")},
    "ConfigMap": {1: ("metadata", "ObjectMeta"), 2: ("data", "map"),
                  3: ("binaryData", "bytesmap"), 4: ("immutable", "bool")},
    "Secret": {1: ("metadata", "ObjectMeta"), 2: ("data", "bytesmap"), 3: ("type", "string"),
               4: ("stringData", "map"), 5: ("immutable", "bool")},
    "ServiceAccount": {1: ("metadata", "ObjectMeta"), 2: ("secrets", "[]ObjectReference"),
                       3: ("imagePullSecrets", "[]LocalObjectReference"),
                       4: ("automountServiceAccountToken", "bool")},
}
DECODABLE = {("v1", "Namespace"), ("v1", "ConfigMap"), ("v1", "Secret"), ("v1", "ServiceAccount")}


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(data):
            raise ValueError("truncated varint")
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7


def _fields(data: bytes) -> list[tuple[int, int | bytes]]:
    """The (field number, value) pairs of one message; values are ints or raw bytes."""
    out: list[tuple[int, int | bytes]] = []
    pos = 0
    while pos < len(data):
        key, pos = _varint(data, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(data, pos)
            out.append((number, value))
        elif wire == 2:
            length, pos = _varint(data, pos)
            out.append((number, data[pos:pos + length]))
            pos += length
        elif wire == 1:
            out.append((number, int.from_bytes(data[pos:pos + 8], "little")))
            pos += 8
        elif wire == 5:
            out.append((number, int.from_bytes(data[pos:pos + 4], "little")))
            pos += 4
        else:
            raise ValueError(f"unsupported wire type {wire}")
    return out


def _decode(message: str, data: bytes) -> dict[str, Any]:
    table = MESSAGES[message]
    obj: dict[str, Any] = {}
    for number, value in _fields(data):
        if number not in table:
            continue  # a field this table does not model (e.g. timestamps clients leave unset)
        name, kind = table[number]
        if kind in ("string", "int", "bool") and not value:
            continue  # Go writes zero values; its JSON form omits them (omitempty)
        if kind in ("string", "raw") and isinstance(value, bytes):
            obj[name] = value if kind == "raw" else value.decode()
        elif kind == "bytes" and isinstance(value, bytes):
            obj[name] = base64.b64encode(value).decode()
        elif kind == "bool":
            obj[name] = bool(value)
        elif kind == "int":
            obj[name] = int(value) if isinstance(value, int) else 0
        elif kind == "strings" and isinstance(value, bytes):
            obj.setdefault(name, []).append(value.decode())
        elif kind in ("map", "bytesmap") and isinstance(value, bytes):
            entry = dict(_fields(value))
            key = entry.get(1, b"")
            item = entry.get(2, b"")
            key_text = key.decode() if isinstance(key, bytes) else str(key)
            if kind == "map":
                obj.setdefault(name, {})[key_text] = item.decode() if isinstance(
                    item, bytes) else str(item)
            else:
                obj.setdefault(name, {})[key_text] = base64.b64encode(
                    item if isinstance(item, bytes) else b"").decode()
        elif kind.startswith("[]") and isinstance(value, bytes):
            obj.setdefault(name, []).append(_decode(kind[2:], value))
        elif kind in MESSAGES and isinstance(value, bytes):
            obj[name] = _decode(kind, value)
    return obj


def decode(body: bytes) -> dict[str, Any]:
    """A protobuf-encoded built-in object as JSON, or a 415 saying what to do instead."""
    if not body.startswith(MAGIC):
        raise APIError(400, "BadRequest", "a protobuf body must start with the k8s\\0 magic")
    try:
        envelope = _decode("Unknown", body[len(MAGIC):])
        type_meta = envelope.get("typeMeta", {})
        api_version, kind = type_meta.get("apiVersion", ""), type_meta.get("kind", "")
        if (api_version, kind) not in DECODABLE:
            raise APIError(415, "UnsupportedMediaType", (
                f"the sandbox API server reads protobuf only for Namespace, ConfigMap, Secret "
                f"and ServiceAccount, not {kind or 'this kind'}: write the object as YAML and "
                "use kubectl apply -f (or kubectl create ... -o yaml --dry-run=client | "
                "kubectl apply -f -)"))
        obj = _decode(kind, envelope.get("raw", b""))
    except (ValueError, KeyError, UnicodeDecodeError) as exc:
        raise APIError(400, "BadRequest", f"the protobuf body could not be read: {exc}") from exc
    return {"apiVersion": api_version, "kind": kind, **obj}
