"""An answer stream run on a worker thread, so the web chat can redraw while the model is silent and
stop it: `AnswerRun`.

Gradio iterates a handler's generator one ``next`` at a time; a handler that iterated the answer
stream itself could only redraw when the stream yields, and a prompt evaluation yields nothing for
tens of seconds. `AnswerRun` moves the stream to a daemon thread and hands its events over a queue
that `next` reads with a timeout: on a timeout the handler redraws the stage line's seconds.
`stop` asks the thread to close the stream at its next event (a generator cannot be closed from
another thread while it runs): the handler returns at once, freeing its Gradio concurrency slot,
while a model busy in one step (a prompt evaluation) finishes that step and then stops. Its
``done`` event, if it comes, is dropped.

Left out: what the events mean and how they are drawn (`ui.app`, `ui.render`).
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from typing import Any

END = object()  # the stream is over (normally, closed, or after an error put before it)
# while the model is silent, a handler redraws the stage line's seconds this often (when they change);
# each redraw is also where Gradio can end the handler of a tab that was closed
STAGE_TICK_S = 0.25


class AnswerRun:
    """One answer stream, iterated on its own thread.

    >>> run = AnswerRun(iter(["a", "b"]))
    >>> [run.next(1.0) for _ in range(3)] == ["a", "b", END]
    True
    """

    def __init__(self, events: Iterator[Any]) -> None:
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._pump, args=(events,), name="answer-run", daemon=True)
        self.thread.start()

    def _pump(self, events: Iterator[Any]) -> None:
        try:
            for event in events:
                if self.stopped.is_set():
                    break
                self._queue.put(event)
        except BaseException as err:  # noqa: BLE001 - handed to the handler, which shows it
            self._queue.put(err)
        finally:
            close = getattr(events, "close", None)
            if close is not None:
                close()  # on this thread, which is the one running the generator: allowed
            self._queue.put(END)

    def next(self, timeout: float) -> Any:
        """The next event, an exception the stream raised, `END`, or None when ``timeout`` passed first."""
        try:
            return self._queue.get(timeout=timeout)
        except queue.Empty:
            return None

    def stop(self) -> None:
        self.stopped.set()


__all__ = ["END", "STAGE_TICK_S", "AnswerRun"]
