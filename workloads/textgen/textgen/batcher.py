"""Requests that arrive together are decoded together: one worker thread, one :class:`BatchDecoder`.

* A request is queued with :meth:`Batcher.submit` (any thread) or awaited with
  :meth:`Batcher.generate` (the event loop); the worker thread owns the model.
* The worker puts queued requests into free lanes at step boundaries, in arrival order, so a
  request that arrives while others are being decoded joins them at the next character
  instead of waiting for the whole batch; a request leaves its lane as soon as its
  ``num_chars`` are done. When all lanes are busy, requests wait in the queue.
* When the worker is idle, the first request waits ``window_s`` for others to arrive, so
  that requests sent together start together (a request's prefill runs alone anyway, so
  the window only saves the first few steps from running half-empty).
* A request whose caller gives up (its asyncio task is cancelled: the client left), or
  whose :class:`Stoppable` says stop (the service's deadline), is dropped from the queue, or
  from its lane before the next step, the other requests running on; a stopped one's future
  gets :class:`RequestStopped`.
* The text of every request is the one :func:`textgen.model.generate_ids` gives it alone
  with the same number of lanes: see :mod:`textgen.engine`.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Protocol

import torch

from textgen.engine import BatchDecoder
from textgen.model import CharGPT

log = logging.getLogger("textgen.batcher")


class Stoppable(Protocol):
    """A request's stop condition, checked by the worker before every step (see the service's StopSignal)."""

    steps: int  # the worker adds one per step the request was in

    def should_stop(self) -> bool: ...


class RequestStopped(Exception):
    """The request's :class:`Stoppable` fired before it finished; it was dropped."""


@dataclass(eq=False)
class _Request:
    prompt_ids: Sequence[int]
    num_chars: int
    seed: int
    temperature: float
    stop: Stoppable | None = None
    future: Future[list[int]] = field(default_factory=Future)
    abandoned: bool = False

    def should_drop(self) -> bool:
        # With a stop signal, only it decides: its owner sets it when the caller gives up,
        # with the reason (set just after the cancellation that marks ``abandoned``).
        return self.stop.should_stop() if self.stop is not None else self.abandoned


class Batcher:
    """Decodes queued requests together, up to ``max_batch_size`` at once, on its own thread."""

    def __init__(
        self,
        model: CharGPT,
        *,
        max_batch_size: int,
        window_s: float,
        start_id: int = 0,
        on_stopped: Callable[[Stoppable, int], None] | None = None,
        name: str = "textgen-batcher",
    ) -> None:
        """``on_stopped(stop, num_chars)`` runs on the worker when it drops a stopped request."""
        if window_s < 0:
            raise ValueError(f"window_s must be >= 0, got {window_s}")
        self._decoder: BatchDecoder[_Request] = BatchDecoder(model, max_batch_size)
        self.max_batch_size = max_batch_size
        self.window_s = window_s
        self.start_id = start_id
        self._on_stopped = on_stopped
        self._queue: deque[_Request] = deque()
        self._wake = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    # --- callers --------------------------------------------------------------------------

    def submit(
        self,
        prompt_ids: Sequence[int],
        num_chars: int,
        *,
        seed: int,
        temperature: float,
        stop: Stoppable | None = None,
    ) -> Future[list[int]]:
        """Queue a request; the future gets its ids (or the error that stopped it or its batch)."""
        request = _Request(list(prompt_ids), num_chars, seed, temperature, stop)
        if num_chars == 0:
            request.future.set_result([])
            return request.future
        with self._wake:
            if self._closed:
                raise RuntimeError("the batcher is closed")
            self._queue.append(request)
            self._wake.notify()
        return request.future

    async def generate(
        self,
        prompt_ids: Sequence[int],
        num_chars: int,
        *,
        seed: int,
        temperature: float,
        stop: Stoppable | None = None,
    ) -> list[int]:
        """:meth:`submit` for the event loop; cancelling the caller drops the request."""
        future = self.submit(prompt_ids, num_chars, seed=seed, temperature=temperature, stop=stop)
        try:
            return await asyncio.wrap_future(future)
        except asyncio.CancelledError:
            self._abandon(future)
            raise

    def _abandon(self, future: Future[list[int]]) -> None:
        with self._wake:
            for request in self._queue:
                if request.future is future:
                    request.abandoned = True
                    break
            else:
                # In a lane (or done): the worker drops it at the next step boundary.
                for request in self._running():
                    if request.future is future:
                        request.abandoned = True

    def _running(self) -> list[_Request]:
        return self._decoder.tags()

    def close(self, timeout_s: float = 10.0) -> None:
        """Stop the worker; queued requests fail, the batch in progress is abandoned.

        Waits (up to ``timeout_s``: at most the step in progress) for the worker to end, so
        that nothing runs torch code while the interpreter exits: a daemon thread caught
        in a torch call at exit aborts the process ("terminate called without an active
        exception", seen at the end of a benchmark)."""
        with self._wake:
            self._closed = True
            self._wake.notify()
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout_s)

    # --- the worker -----------------------------------------------------------------------

    def _run(self) -> None:
        # Inference mode is per thread: the worker's steps run under it.
        with torch.inference_mode():
            while self._admit():
                stepping = self._running()
                try:
                    finished = self._decoder.step()
                except Exception as error:  # every request in the batch gets the error (a 500)
                    log.exception("decoding step failed")
                    for request in self._decoder.reset():
                        if not request.future.done():
                            request.future.set_exception(error)
                    continue
                for request in stepping:
                    if request.stop is not None:
                        request.stop.steps += 1
                for request, ids in finished:
                    if not request.future.done():
                        request.future.set_result(ids)

    def _admit(self) -> bool:
        """Wait until a lane is busy (dropping abandoned requests, filling free lanes); False once closed."""
        decoder = self._decoder
        with self._wake:
            while True:
                while not self._closed and not self._queue and not decoder.active:
                    self._wake.wait()
                if not decoder.active and self.window_s > 0 and not self._closed:
                    # Idle until now: give requests sent together a moment to arrive together.
                    deadline = time.monotonic() + self.window_s
                    while len(self._queue) < self.max_batch_size and not self._closed:
                        remaining = deadline - time.monotonic()
                        if remaining <= 0:
                            break
                        self._wake.wait(remaining)
                if self._closed:
                    self._fail_all(RuntimeError("the textgen batcher was closed"))
                    return False
                for request in self._running():
                    if request.should_drop():
                        decoder.drop(request)
                        self._stopped(request)
                while self._queue and decoder.free_lanes:
                    request = self._queue.popleft()
                    if request.should_drop():
                        self._stopped(request)
                        continue
                    if not request.future.set_running_or_notify_cancel():
                        continue
                    try:
                        decoder.add(
                            request,
                            request.prompt_ids,
                            request.num_chars,
                            seed=request.seed,
                            temperature=request.temperature,
                            start_id=self.start_id,
                        )
                    except Exception as error:  # a bad request fails alone
                        request.future.set_exception(error)
                if decoder.active:
                    return True

    def _stopped(self, request: _Request) -> None:
        if request.stop is not None and self._on_stopped is not None:
            try:
                self._on_stopped(request.stop, request.num_chars)
            except Exception:  # a reporting hook must not stop the worker
                log.exception("on_stopped failed")
        if not request.future.done():
            request.future.set_exception(RequestStopped())

    def _fail_all(self, error: Exception) -> None:
        requests = list(self._queue) + self._decoder.reset()
        self._queue.clear()
        for request in requests:
            if not request.future.done():  # a cancelled one is done
                request.future.set_exception(error)
