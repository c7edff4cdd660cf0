"""Overlapping input, compute and output: a bounded prefetch of loaded images, a writer thread.

Dataset-sized runs spend much of their time outside the model: decoding JPEGs, resizing, and
encoding PNG / JSON results. :func:`prefetch` runs the loading of the next images in worker
threads while the caller's thread runs the model; :class:`BackgroundWriter` writes results in
one thread behind it. Both keep their order: results come back (and jobs run) in input order,
so a run gives the same files as a plain loop. Memory stays bounded: at most ``depth`` loaded
images wait for the model, at most ``depth`` results wait for the writer.
"""

from __future__ import annotations

import queue
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

__all__ = ["BackgroundWriter", "Loaded", "prefetch"]

T = TypeVar("T")
R = TypeVar("R")


@dataclass(frozen=True)
class Loaded(Generic[T, R]):
    """One item after loading: the ``item`` itself and either ``value`` or the ``error``
    that loading it raised (an ``Exception``; the caller decides whether it is fatal)."""

    item: T
    value: R | None = None
    error: Exception | None = None

    def get(self) -> R:
        """``value``, or raise the loading error."""
        if self.error is not None:
            raise self.error
        return self.value  # type: ignore[return-value]


def prefetch(
    load: Callable[[T], R], items: Iterable[T], *, workers: int = 2, depth: int = 4
) -> Iterator[Loaded[T, R]]:
    """``load(item)`` for every item, in ``workers`` threads, yielded in input order.

    At most ``depth`` items are loaded ahead of the consumer. ``workers=0`` loads in the
    calling thread (no threads at all: the plain loop). An exception from ``load`` is caught
    and handed over in the item's :class:`Loaded`; other items go on. Leaving the loop early
    cancels what has not started and waits for the rest.
    """
    if workers < 0 or depth < 1:
        raise ValueError(f"workers must be >= 0 and depth >= 1, got {workers}, {depth}.")

    def one(item: T) -> Loaded[T, R]:
        try:
            return Loaded(item, load(item))
        except Exception as exc:  # handed to the consumer with its item
            return Loaded(item, error=exc)

    if workers == 0:
        for item in items:
            yield one(item)
        return
    pending: deque[Future] = deque()
    iterator = iter(items)
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="ovseg-load") as pool:
        try:
            for item in iterator:
                pending.append(pool.submit(one, item))
                if len(pending) >= depth:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        finally:
            for future in pending:
                future.cancel()


class BackgroundWriter:
    """Runs submitted jobs one after the other in a single thread, in submission order.

    ``submit(key, job)`` queues ``job()`` (blocking when ``depth`` jobs are waiting, so results
    cannot pile up in memory). A job's exception is recorded under its ``key`` and the writer
    goes on with the next job; :meth:`close` waits for every job and returns the
    ``(key, exception)`` pairs in order. ``on_done(key, value)`` is called in the writer
    thread after each successful job. With ``threaded=False`` jobs run at once in the
    caller's thread (the plain loop).

    Use as a context manager, or call :meth:`close` yourself.
    """

    _STOP = object()

    def __init__(
        self,
        on_done: Callable[[Any, Any], None] | None = None,
        *,
        depth: int = 4,
        threaded: bool = True,
    ) -> None:
        if depth < 1:
            raise ValueError(f"depth must be >= 1, got {depth}.")
        self.errors: list[tuple[Any, Exception]] = []
        self._on_done = on_done
        self._threaded = threaded
        self._closed = False
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._thread: threading.Thread | None = None
        if threaded:
            self._thread = threading.Thread(target=self._loop, name="ovseg-writer", daemon=True)
            self._thread.start()

    def _run(self, key: Any, job: Callable[[], Any]) -> None:
        try:
            value = job()
            if self._on_done is not None:
                self._on_done(key, value)
        except Exception as exc:  # reported per key, the next job still runs
            self.errors.append((key, exc))

    def _loop(self) -> None:
        while True:
            entry = self._queue.get()
            if entry is self._STOP:
                return
            self._run(*entry)

    def submit(self, key: Any, job: Callable[[], Any]) -> None:
        """Queue ``job`` under ``key`` (run now without a thread)."""
        if self._closed:
            raise RuntimeError("the writer is closed")
        if self._thread is None:
            self._run(key, job)
        else:
            self._queue.put((key, job))

    def close(self) -> list[tuple[Any, Exception]]:
        """Wait for every queued job; returns the recorded ``(key, exception)`` pairs."""
        if not self._closed:
            self._closed = True
            if self._thread is not None:
                self._queue.put(self._STOP)
                self._thread.join()
        return list(self.errors)

    def __enter__(self) -> BackgroundWriter:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()
