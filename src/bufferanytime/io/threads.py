"""Input and output on their own threads, with bounded queues, so that the model never waits on I/O.

- :class:`Prefetch` runs an iterator (frame decoding and resizing) on a thread, at most ``size`` items ahead.
- :class:`BackgroundWriter` calls a function (writing a frame's outputs) on a thread for every item put, with at
  most ``size`` items waiting: a slow disk slows the producer down instead of filling the memory.
- :class:`HeadStart` takes the first items of an iterator (a video's first frames) on a thread while the caller
  does something else first (loading the model), and hands them over when iterated.

Decoding (PyAV), resizing and encoding (OpenCV, OpenEXR) and the model (torch) release the GIL while they work,
so the threads overlap. An error on a thread is raised again in the caller, with its own traceback, at the next
item (or when closing); an interrupt (Ctrl-C) in the caller stops and joins the threads before the caller's
clean-up runs, so nothing is written into a staging folder after it is removed.
"""

from __future__ import annotations

import queue
import threading
from collections import deque
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

T = TypeVar("T")
POLL_S = 0.1  # how often a blocked thread checks whether it was told to stop
_END = object()


class Prefetch(Generic[T]):
    """Iterate ``items`` on a daemon thread, at most ``size`` items ahead of the consumer.

    Use as an iterator; ``close()`` (also by ``with``) stops the thread and closes ``items`` on it."""

    def __init__(self, items: Iterator[T], size: int, name: str = "prefetch"):
        self._queue: queue.Queue = queue.Queue(maxsize=max(1, size))
        self._stop = threading.Event()
        self._done = False
        self._thread = threading.Thread(target=self._run, args=(items,), name=name, daemon=True)
        self._thread.start()

    def _run(self, items: Iterator[T]) -> None:
        try:
            for item in items:
                if not self._offer((item, None)):
                    return
            self._offer((_END, None))
        except BaseException as exc:  # raised again in the consumer
            self._offer((_END, exc))
        finally:
            close = getattr(items, "close", None)
            if close is not None:
                close()

    def _offer(self, entry: tuple) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(entry, timeout=POLL_S)
                return True
            except queue.Full:
                continue
        return False

    def __iter__(self) -> Prefetch[T]:
        return self

    def __next__(self) -> T:
        if self._done:
            raise StopIteration
        item, error = self._queue.get()
        if item is _END:
            self._done = True
            self.close()
            if error is not None:
                raise error
            raise StopIteration
        return item

    def close(self) -> None:
        """Stop the thread (it finishes the item it is producing) and wait for it."""
        self._stop.set()
        self._thread.join()

    def __enter__(self) -> Prefetch[T]:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class BackgroundWriter(Generic[T]):
    """``write(item)`` on a thread for every ``put(item)``, in order, at most ``size`` items waiting.

    As a context manager: a normal exit waits for every item to be written and raises a write error; an exception
    (an interrupt included) stops the thread after the item it is writing and drops the rest."""

    def __init__(self, write: Callable[[T], None], size: int, name: str = "writer"):
        self._write = write
        self._queue: queue.Queue = queue.Queue(maxsize=max(1, size))
        self._stop = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                item = self._queue.get(timeout=POLL_S)
            except queue.Empty:
                continue
            if item is _END:
                return
            try:
                self._write(item)
            except BaseException as exc:  # raised again in the producer
                self._error = exc
                return

    def put(self, item: T) -> None:
        """Queue ``item``; blocks while ``size`` items wait; raises the error of an earlier write."""
        while True:
            self._raise_error()
            if not self._thread.is_alive():
                raise RuntimeError("the writer thread has stopped")
            try:
                self._queue.put(item, timeout=POLL_S)
                return
            except queue.Full:
                continue

    def _raise_error(self) -> None:
        if self._error is not None:
            error, self._error = self._error, None
            raise error

    def close(self) -> None:
        """Wait until every queued item is written; raise a write error."""
        if self._thread.is_alive():
            self.put(_END)
            self._thread.join()
        self._raise_error()

    def abort(self) -> None:
        """Stop after the item being written; queued items are dropped."""
        self._stop.set()
        self._thread.join()

    def __enter__(self) -> BackgroundWriter[T]:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


class HeadStart(Generic[T]):
    """The first items of ``items``, at most ``limit``, taken on a daemon thread from now until the first item is
    asked for: work done while the caller does something else first, such as loading the model that will consume
    them (a video's first window is decoded while torch and the model load).

    ``allow(limit)`` raises the limit while the thread runs (a caller that learns later how many it will take
    first). Iterate once: the thread is stopped (after the item it is taking), the items it took come first, then
    ``items`` goes on in the caller's thread. An error raised on the thread comes after the items taken before it.
    ``close()`` stops the thread and closes ``items``, for a caller that will not iterate."""

    def __init__(self, items: Iterator[T], limit: int, name: str = "head-start"):
        self._items = items
        self._limit = limit
        self._taken: deque[T] = deque()
        self._error: BaseException | None = None
        self._stopped = False  # guarded by _changed
        self._changed = threading.Condition()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            while self._wait_for_room():
                self._taken.append(next(self._items))
        except StopIteration:
            return
        except BaseException as exc:  # raised again in the consumer, after the items taken before it
            self._error = exc

    def _wait_for_room(self) -> bool:
        """Whether to take another item: wait while the limit is reached, until it is raised or the thread stops."""
        with self._changed:
            while len(self._taken) >= self._limit and not self._stopped:
                self._changed.wait(POLL_S)
            return not self._stopped

    def allow(self, limit: int) -> None:
        """Take up to ``limit`` items (never fewer than allowed before)."""
        with self._changed:
            self._limit = max(self._limit, limit)
            self._changed.notify()

    @property
    def taken(self) -> int:
        """Items taken and not yet handed over."""
        return len(self._taken)

    def _halt(self) -> None:
        with self._changed:
            self._stopped = True
            self._changed.notify()
        self._thread.join()

    def __iter__(self) -> Iterator[T]:
        self._halt()
        try:
            while self._taken:
                yield self._taken.popleft()  # handed over one by one: the consumer holds what it keeps
            if self._error is not None:
                error, self._error = self._error, None
                raise error
            yield from self._items
        finally:
            self.close()

    def close(self) -> None:
        """Stop the thread, drop the items taken and close ``items``."""
        self._halt()
        self._taken.clear()
        close = getattr(self._items, "close", None)
        if close is not None:
            close()
