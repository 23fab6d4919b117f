"""A small thread pipeline: stages connected by bounded queues, first error stops everything.

Every stage runs ``fn()`` that reads from and writes to :class:`Channel` objects. A full
channel blocks its producer (this is what bounds memory); when any stage raises, the
pipeline's stop event is set, every blocked ``put``/``get`` raises :class:`Stopped`, and
:meth:`Pipeline.join` re-raises the first error in the calling thread.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any

__all__ = ["Channel", "Pipeline", "Stopped"]

_POLL_S = 0.05
_END = object()


class Stopped(Exception):
    """Raised inside a stage when another stage failed (or the pipeline was cancelled)."""


class Channel:
    """Bounded FIFO between two stages; iterate it to consume until :meth:`close`."""

    def __init__(self, maxsize: int, stop: threading.Event) -> None:
        self._q: queue.Queue[Any] = queue.Queue(maxsize)
        self._stop = stop

    def put(self, item: Any) -> None:
        while True:
            if self._stop.is_set():
                raise Stopped
            try:
                self._q.put(item, timeout=_POLL_S)
                return
            except queue.Full:
                continue

    def close(self) -> None:
        """Tell the consumer that no more items follow."""
        self.put(_END)

    def __iter__(self) -> Iterator[Any]:
        while True:
            if self._stop.is_set():
                raise Stopped
            try:
                item = self._q.get(timeout=_POLL_S)
            except queue.Empty:
                continue
            if item is _END:
                return
            yield item


class Pipeline:
    """Owns the stop event, the stage threads and the first error."""

    def __init__(self) -> None:
        self.stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._errors: list[BaseException] = []
        self._lock = threading.Lock()

    def channel(self, maxsize: int) -> Channel:
        return Channel(maxsize, self.stop)

    def _fail(self, exc: BaseException) -> None:
        with self._lock:
            self._errors.append(exc)
        self.stop.set()

    def spawn(self, name: str, fn: Callable[[], None]) -> None:
        """Run ``fn`` on a new daemon thread."""

        def target() -> None:
            try:
                fn()
            except Stopped:
                pass
            except BaseException as exc:  # handed to join()
                self._fail(exc)

        t = threading.Thread(target=target, name=name, daemon=True)
        self._threads.append(t)
        t.start()

    def pump(self, items: Iterable[Any], channel: Channel) -> None:
        """Put every item of ``items`` into ``channel``, then close it."""
        for item in items:
            channel.put(item)
        channel.close()

    def source(self, name: str, items: Iterable[Any], maxsize: int) -> Channel:
        """A channel fed from ``items`` on a new thread."""
        out = self.channel(maxsize)
        self.spawn(name, lambda: self.pump(items, out))
        return out

    def stage(self, name: str, fn: Callable[[Iterable[Any]], Iterable[Any]],
              inp: Channel, maxsize: int) -> Channel:
        """A channel of ``fn(inp)``, computed on a new thread."""
        out = self.channel(maxsize)
        self.spawn(name, lambda: self.pump(fn(inp), out))
        return out

    def run(self, fn: Callable[[], None]) -> None:
        """Run ``fn`` in the calling thread as one more stage, then :meth:`join`."""
        try:
            fn()
        except Stopped:
            pass
        except BaseException as exc:
            self._fail(exc)
        self.join()

    def join(self) -> None:
        """Wait for every stage; re-raise the first error."""
        for t in self._threads:
            while t.is_alive():
                try:
                    t.join()
                except BaseException as exc:  # e.g. KeyboardInterrupt while waiting
                    self._fail(exc)
        if self._errors:
            raise self._errors[0]
