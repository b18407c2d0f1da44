"""Per-model confidence scores, learned from outcomes and kept across restarts.

Every model starts at ``INITIAL_CONFIDENCE`` (0.5: no opinion). Each call moves
its score towards 1 (a valid answer) or 0 (an error, a timeout or an answer the
validation rejected) by an exponentially weighted moving average with weight
``ALPHA``, so recent behaviour counts most and one failure does not condemn a
model.

The scores live in ``<ORCH_DATA_DIR>/confidence.json``, rewritten atomically
after each update (see :mod:`orchestrator.persistence`). On start a missing file
means a fresh start; an unreadable or invalid one is moved aside as
``confidence.json.corrupt-<unix time>`` (kept for inspection) and the service
starts fresh with a logged warning; it never refuses to start because of it.
Scores of models no longer registered are kept in the file, so re-registering a
model restores what was learned about it.
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from orchestrator.persistence import remove_stale_temp_files, write_atomic

log = logging.getLogger(__name__)

FILE_NAME = "confidence.json"
FORMAT = "orchestrator.confidence/v1"
INITIAL_CONFIDENCE = 0.5
ALPHA = 0.2


class ModelConfidence(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")

    confidence: Annotated[float, Field(ge=0, le=1, allow_inf_nan=False)] = INITIAL_CONFIDENCE
    successes: Annotated[int, Field(ge=0)] = 0
    failures: Annotated[int, Field(ge=0)] = 0


class ConfidenceFile(BaseModel):
    """The on-disk document; ``generation`` counts the updates it reflects."""

    model_config = ConfigDict(strict=True, extra="forbid")

    format: str = FORMAT
    generation: Annotated[int, Field(ge=0)] = 0
    saved_at: float = 0.0
    models: dict[str, ModelConfidence] = Field(default_factory=dict)


class CorruptStateError(ValueError):
    """The data file exists but does not hold a valid confidence document."""


def load_confidence_file(path: Path) -> ConfidenceFile | None:
    """Read the file: ``None`` when it does not exist, :class:`CorruptStateError` when bad."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise CorruptStateError(f"{path}: cannot be read: {exc}") from exc
    try:
        document = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CorruptStateError(f"{path}: not valid JSON: {exc}") from exc
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        raise CorruptStateError(f"{path}: not a {FORMAT} document")
    try:
        return ConfidenceFile.model_validate(document)
    except ValidationError as exc:
        raise CorruptStateError(f"{path}: invalid content: {exc}") from exc


class ConfidenceStore:
    """Scores in memory, persisted to ``path``; updated from the event loop."""

    def __init__(self, path: Path, state: ConfidenceFile | None = None) -> None:
        self.path = path
        self._state = state or ConfidenceFile()
        self._write_lock = threading.Lock()
        self._written_generation = self._state.generation

    @classmethod
    def open(cls, data_dir: Path, models: Iterable[str] = ()) -> ConfidenceStore:
        """Load the store from ``data_dir``; never fails because of the file's content."""
        path = data_dir / FILE_NAME
        removed = remove_stale_temp_files(path)
        if removed:
            log.info("removed %d temporary file(s) left by an interrupted write", removed)
        try:
            state = load_confidence_file(path)
        except CorruptStateError as exc:
            aside = path.with_name(f"{path.name}.corrupt-{int(time.time())}")
            try:
                path.replace(aside)
                where = f"moved to {aside}"
            except OSError:
                where = "left in place"
            log.warning("confidence file unusable (%s), %s; starting fresh", exc, where)
            state = None
        if state is None:
            log.info("no confidence file at %s; every model starts at %s", path, INITIAL_CONFIDENCE)
        store = cls(path, state)
        for model in models:
            store._state.models.setdefault(model, ModelConfidence())
        return store

    def confidence(self, model: str) -> float:
        entry = self._state.models.get(model)
        return entry.confidence if entry else INITIAL_CONFIDENCE

    def snapshot(self) -> ConfidenceFile:
        return self._state.model_copy(deep=True)

    def record(self, model: str, success: bool) -> float:
        """Fold one outcome into ``model``'s score and return the new score."""
        entry = self._state.models.setdefault(model, ModelConfidence())
        target = 1.0 if success else 0.0
        updated = entry.confidence + ALPHA * (target - entry.confidence)
        entry.confidence = min(1.0, max(0.0, updated)) if math.isfinite(updated) else 0.5
        if success:
            entry.successes += 1
        else:
            entry.failures += 1
        self._state.generation += 1
        return entry.confidence

    def save(self, snapshot: ConfidenceFile | None = None) -> bool:
        """Write ``snapshot`` (default: the current state); skip it if a newer one is on disk.

        Safe to call from worker threads: writes are serialised and never go backwards.
        """
        document = snapshot or self.snapshot()
        with self._write_lock:
            if document.generation < self._written_generation:
                return False
            document.saved_at = time.time()
            write_atomic(self.path, document.model_dump_json(indent=2).encode())
            self._written_generation = document.generation
            return True
