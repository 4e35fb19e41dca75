"""One thread at a time on a model (issue 9): the only lock around a llama.cpp context.

A llama.cpp context is not thread-safe, and a second thread's call would also end the first one's stream.
So every public OuroModel call that drives the context holds the model's lock for its duration, and a
returned stream holds it until it is exhausted, closed or garbage-collected: other threads wait
(serialized, not refused). A thread's own unfinished stream never blocks it: its next call ends that
stream first. A plain Lock, not an RLock: a stream may be finished (and release) on another thread.
The lock keeps only a weak reference to the current stream, so a stream its caller dropped can be
collected; a stream and its generator refer to each other, so a caller about to wait first runs the
cycle collector, which releases the model if the holder was abandoned.
"""

from __future__ import annotations

import functools
import gc
import threading
import weakref
from collections.abc import Callable
from typing import Any

from runtime.generation import TextStream


class ModelLock:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._active_ref: weakref.ref[TextStream] | None = None

    @property
    def active(self) -> TextStream | None:
        """The generation in progress (held weakly)."""
        return self._active_ref() if self._active_ref is not None else None

    @active.setter
    def active(self, stream: TextStream | None) -> None:
        self._active_ref = weakref.ref(stream) if stream is not None else None

    def close_active(self) -> None:
        """End the generation in progress, if any (one generation at a time)."""
        active = self.active
        if active is not None and not active.finished:
            active.close()
        self.active = None

    def _own_stream_is_open(self) -> bool:
        active = self.active
        return active is not None and active.owner == threading.get_ident() and not active.finished

    def call(self, method: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        if self._own_stream_is_open():
            self.close_active()  # releases the lock that stream holds
        # No reference to the current stream may be held here: the collector must be free to reclaim it.
        if not self._lock.acquire(blocking=False):
            gc.collect()  # an abandoned stream releases the model in its __del__
            self._lock.acquire()
        try:
            result = method(*args, **kwargs)
        except BaseException:
            self._lock.release()
            raise
        if isinstance(result, TextStream) and not result.finished:
            result.release = self._lock.release  # the stream holds the model until it ends
        else:
            self._lock.release()
        return result


def serialized(method: Callable[..., Any]) -> Callable[..., Any]:
    """Run an OuroModel method under the model's lock (its `_lock` attribute)."""
    @functools.wraps(method)
    def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        return self._lock.call(method, self, *args, **kwargs)

    return wrapper
