"""The performance history: one JSON line per model call, kept across restarts.

``<ORCH_DATA_DIR>/performance_history.jsonl`` gets one line for every answer the
orchestrator got from a model, or failed to get (cached answers ask no model and
add nothing)::

    {"timestamp": "2025-01-31T12:00:00.123Z", "model": "gpt-4o-mini", "outcome": "success",
     "accepted": true, "latency_s": 0.4123, "cost_usd": 2.1e-05, "input_tokens": 12,
     "output_tokens": 30, "confidence": 0.6, "error": null,
     "query_id": "orch-…", "request_hash": "<sha256 hex>"}

* ``timestamp``: when the call ended, RFC 3339 in UTC, millisecond precision.
* ``outcome``: ``success``, ``error``, ``timeout`` or ``invalid`` (an answer the
  validation rejected); ``accepted`` is ``outcome == "success"``.
* ``cost_usd``, the tokens and ``latency_s`` are the ones the query's ``results`` show;
  ``confidence`` is the model's score after this call was folded in; ``error`` is the
  kit's fixed message for the failure (never the provider's text).
* ``query_id`` is the query's ``id`` (also given to queries no model answered);
  ``request_hash`` is the SHA-256 of the whole request (its cache key). The prompt
  itself is never written.

Writing: each line is one ``write(2)`` on a descriptor opened ``O_APPEND``, off the
event loop (``asyncio.to_thread``), so a process killed at any instant leaves at most
one partial last line; the next append starts a fresh line after it. Lines are not
fsync'ed one by one: a restart of the process loses nothing, a power cut may lose the
last lines written. A failed write (read-only volume, disk full) raises ``OSError``;
the service then keeps answering and reports it in ``/health`` (``data_dir``).

Rotation: a line that would take the file past ``max_bytes`` (ORCH_HISTORY_MAX_BYTES)
first renames it to ``performance_history.jsonl.1`` (replacing an older ``.1``) and
starts a new file, so the history takes at most about twice ``max_bytes`` on disk.

Reading: on start both files are read line by line (bounded by the rotation) to count
each model's calls and find its last call's time. A line that is not a JSON object with
a ``model`` and a ``timestamp`` (the partial last line a crash left, or a hand-edited
one) is skipped with a logged warning; an unreadable file means no history yet. The
service never refuses to start because of the history.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

FILE_NAME = "performance_history.jsonl"
ROTATED_SUFFIX = ".1"
DEFAULT_MAX_BYTES = 10 * 1024 * 1024
MIN_MAX_BYTES = 4096

# Read access too: a partial last line is detected by reading the last byte (pread).
_OPEN_FLAGS = os.O_RDWR | os.O_APPEND | os.O_CREAT | getattr(os, "O_CLOEXEC", 0)


def rfc3339(unix_time: float) -> str:
    """``2025-01-31T12:00:00.123Z``: RFC 3339, UTC, milliseconds."""
    stamp = datetime.fromtimestamp(unix_time, tz=UTC).isoformat(timespec="milliseconds")
    return stamp.replace("+00:00", "Z")


def _parse_time(text: str) -> datetime | None:
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else None


@dataclass(frozen=True)
class CallRecord:
    """One line of the history: one model call of one query."""

    timestamp: str
    model: str
    outcome: str
    accepted: bool
    latency_s: float
    cost_usd: float
    input_tokens: int
    output_tokens: int
    confidence: float
    error: str | None
    query_id: str
    request_hash: str

    def line(self) -> bytes:
        return (json.dumps(asdict(self), separators=(",", ":"), allow_nan=False) + "\n").encode()


@dataclass
class ModelHistory:
    """What the history holds about one model: how many calls, and when the last one ended."""

    calls: int = 0
    last_call_at: str | None = None
    _last: datetime | None = field(default=None, repr=False, compare=False)

    def add(self, timestamp: str, when: datetime | None = None) -> None:
        self.calls += 1
        when = when or _parse_time(timestamp)
        if when is not None and (self._last is None or when >= self._last):
            self._last = when
            self.last_call_at = timestamp

    def merged(self, other: ModelHistory) -> ModelHistory:
        result = ModelHistory(self.calls, self.last_call_at, self._last)
        result.calls += other.calls
        if other._last is not None and (result._last is None or other._last > result._last):
            result._last = other._last
            result.last_call_at = other.last_call_at
        return result


Tally = dict[str, ModelHistory]


def _record_fields(raw: bytes) -> tuple[str, str, datetime] | None:
    """``(model, timestamp, parsed timestamp)`` of a history line, ``None`` when unusable."""
    try:
        document: Any = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None
    if not isinstance(document, dict):
        return None
    model, timestamp = document.get("model"), document.get("timestamp")
    if not isinstance(model, str) or not model or not isinstance(timestamp, str):
        return None
    when = _parse_time(timestamp)
    return None if when is None else (model, timestamp, when)


def read_tally(path: Path) -> Tally:
    """Count the calls per model in one history file; skip (and report) unusable lines."""
    tally: Tally = {}
    skipped: list[int] = []
    try:
        with path.open("rb") as handle:
            for number, raw in enumerate(handle, start=1):
                fields = _record_fields(raw)
                if fields is None:
                    if raw.strip():
                        skipped.append(number)
                    continue
                model, timestamp, when = fields
                tally.setdefault(model, ModelHistory()).add(timestamp, when)
    except FileNotFoundError:
        return tally
    except OSError as error:
        log.warning("performance history %s cannot be read (%s); its calls are not counted", path, error)
        return tally
    if skipped:
        shown = ", ".join(str(number) for number in skipped[:10]) + (", …" if len(skipped) > 10 else "")
        log.warning(
            "performance history %s: skipped %d unreadable line(s) (line %s): cut short by a "
            "crash, or not history records",
            path, len(skipped), shown,
        )
    return tally


class PerformanceHistory:
    """Appends :class:`CallRecord` lines to ``path``; counts calls per model.

    ``append`` runs in worker threads (serialised by a lock); ``summary`` runs on the event
    loop and never waits for a write in progress (a hung volume must not hang ``/health``).
    ``max_bytes`` 0 disables the history: nothing is read or written.
    """

    def __init__(self, path: Path, max_bytes: int) -> None:
        self.path = path
        self.rotated_path = path.with_name(path.name + ROTATED_SUFFIX)
        self.max_bytes = max_bytes
        self._write_lock = threading.Lock()  # serialises the appends (held during I/O)
        self._tally_lock = threading.Lock()  # guards the counts (never held during I/O)
        # Per file, so that a rotation forgets what the replaced ``.1`` held, as a restart would.
        self._current: Tally = {}
        self._previous: Tally = {}

    @property
    def enabled(self) -> bool:
        return self.max_bytes > 0

    @classmethod
    def open(cls, data_dir: Path, max_bytes: int) -> PerformanceHistory:
        """The history of ``data_dir``, with the calls its files hold already counted."""
        history = cls(data_dir / FILE_NAME, max_bytes)
        if history.enabled:
            history._previous = read_tally(history.rotated_path)
            history._current = read_tally(history.path)
        return history

    def summary(self) -> dict[str, ModelHistory]:
        """Calls recorded per model (this file and ``.1``) and the last one's time."""
        with self._tally_lock:
            combined = {model: ModelHistory().merged(entry) for model, entry in self._previous.items()}
            for model, entry in self._current.items():
                combined[model] = combined.get(model, ModelHistory()).merged(entry)
        return combined

    def append(self, records: Sequence[CallRecord]) -> None:
        """Append one line per record, rotating first when a line would pass ``max_bytes``.

        Raises ``OSError`` when the file cannot be written; lines written before the
        failure stay written and counted.
        """
        if not self.enabled or not records:
            return
        with self._write_lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd, size, inode = self._open()
            try:
                for record in records:
                    line = record.line()
                    if size > 0 and size + len(line) > self.max_bytes:
                        os.close(fd)
                        fd = -1
                        self._rotate(inode)
                        fd, size, inode = self._open()
                    if size > 0 and os.pread(fd, 1, size - 1) != b"\n":
                        # A writer killed mid-line left a partial line: end it, so that
                        # this record is a line of its own.
                        line = b"\n" + line
                    _write_all(fd, line)
                    size = os.fstat(fd).st_size
                    with self._tally_lock:
                        self._current.setdefault(record.model, ModelHistory()).add(record.timestamp)
            finally:
                if fd >= 0:
                    os.close(fd)

    def _open(self) -> tuple[int, int, int]:
        fd = os.open(self.path, _OPEN_FLAGS, 0o644)
        status = os.fstat(fd)
        return fd, status.st_size, status.st_ino

    def _rotate(self, inode: int) -> None:
        try:
            status = os.stat(self.path)
        except FileNotFoundError:
            return  # another pod sharing the volume has just rotated it
        if status.st_ino != inode:
            return  # likewise: the file is already a new one
        os.replace(self.path, self.rotated_path)
        with self._tally_lock:
            self._previous, self._current = self._current, {}
        log.info("performance history passed %d bytes: moved to %s", self.max_bytes, self.rotated_path)


def _write_all(fd: int, data: bytes) -> None:
    # One write(2) per line; a regular file takes it whole unless the disk fills up,
    # in which case the next write raises.
    while data:
        written = os.write(fd, data)
        data = data[written:]
