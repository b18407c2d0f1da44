"""``GET /api/v1/namespaces/<ns>/pods/<name>/log``: what ``kubectl logs`` reads.

The sandbox's kubelet writes each container's output to
``<pod_log_dir>/<namespace>_<pod>_<container>.log``; ``APIServer(pod_log_dir=...)``
points the server there. Supported parameters: ``container`` (default: the pod's
first container, as kube-apiserver picks it only when there is exactly one; here the
first, for convenience), ``tailLines``, ``limitBytes`` and ``follow`` (the stream ends
when the pod is deleted or the client hangs up). ``previous``, ``sinceSeconds`` and
``timestamps`` are not supported (the files keep no timestamps or restarts apart).
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from aiohttp import web

from .errors import APIError, bad_request

FOLLOW_POLL_SECONDS = 0.25


def log_path(pod_log_dir: Path, pod: dict[str, Any], container: str | None) -> Path:
    meta = pod["metadata"]
    names = [c.get("name", "") for c in (pod.get("spec") or {}).get("containers") or []]
    name = container or (names[0] if names else "")
    if name not in names:
        raise bad_request(f'container {name} is not valid for pod {meta["name"]}: choose one of '
                          f"[{' '.join(names)}] with ?container=")
    return pod_log_dir / f"{meta.get('namespace', '')}_{meta['name']}_{name}.log"


def read_tail(path: Path, tail_lines: int | None, limit_bytes: int | None) -> tuple[bytes, int]:
    """The part of the log to send first, and the file's size when it was read.

    Following goes on from that size, not from a later ``stat``: a line written while
    the first part is on its way would otherwise be skipped.
    """
    whole = path.read_bytes() if path.exists() else b""
    data = whole
    if tail_lines is not None:
        lines = data.splitlines(keepends=True)
        data = b"".join(lines[-tail_lines:]) if tail_lines > 0 else b""
    if limit_bytes is not None:
        data = data[:limit_bytes]
    return data, len(whole)


def _int(query: dict[str, str], key: str) -> int | None:
    if key not in query:
        return None
    try:
        return max(0, int(query[key]))
    except ValueError as exc:
        raise bad_request(f"{key} must be a whole number") from exc


async def serve(request: web.Request, pod_log_dir: Path | None, pod: dict[str, Any],
                still_exists: Any) -> web.StreamResponse:
    """Answer a pods/log request from the kubelet's log files."""
    if pod_log_dir is None:
        raise APIError(400, "BadRequest", "this API server was started without pod_log_dir, so "
                                          "it cannot serve logs: read the kubelet's log files")
    query = dict(request.query)
    path = log_path(pod_log_dir, pod, query.get("container"))
    data, offset = read_tail(path, _int(query, "tailLines"), _int(query, "limitBytes"))
    if query.get("follow") not in ("true", "1"):
        return web.Response(body=data, content_type="text/plain")
    response = web.StreamResponse(headers={"Content-Type": "text/plain"})
    response.enable_chunked_encoding()
    await response.prepare(request)
    await response.write(data)
    try:
        while still_exists():
            transport = request.transport
            if transport is None or transport.is_closing():
                break
            size = path.stat().st_size if path.exists() else 0
            if size > offset:
                with path.open("rb") as handle:
                    handle.seek(offset)
                    await response.write(handle.read(size - offset))
                offset = size
            await asyncio.sleep(FOLLOW_POLL_SECONDS)  # files give no change notification
        await response.write_eof()
    except ConnectionResetError:
        pass
    return response
