"""Whose segment the renderer makes next: the stream that runs dry first (earliest deadline first).

The renderer is one queue for every stream of a worker. In arrival order (BentoML's batcher alone), twelve
streams opened together each asked for their next segment as soon as they had their first, so a new
stream's first segment waited behind the others' second ones, and a batch of segments of different
tempi returns only when its last one is rendered. Here a stream asks for a turn with its deadline — when
its listener, playing at real time, reaches the end of what was rendered for it (a stream not yet playing:
the moment it was opened, so new streams come first) — and at most `in_flight` segments are at the
renderer at once, the earliest deadlines first."""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
from collections.abc import AsyncIterator

# the estimate is of means; renders spread around them (a herd of new streams all ramping up at once stalled
# twice in 60 s at ×1: bench/stream_bench.json), so admission waits for this much more than the mean
MARGIN = 1.5


class RenderTurns:
    def __init__(self, in_flight: int) -> None:
        self.in_flight = in_flight
        self.busy = 0
        # a segment's render per second of its audio, a moving average from its turn to its answer (a short
        # segment's held tail makes its ratio the higher, so a long one's estimate errs long)
        self.s_per_audio_s = 0.1
        self.rendering_s = 0.0  # seconds of audio at the renderer now
        self._waiting: list[tuple[float, int, float, asyncio.Future]] = []  # deadline, order, audio_s, granted
        self._order = itertools.count()  # equal deadlines: first come, first served

    @contextlib.asynccontextmanager
    async def turn(self, deadline: float, audio_s: float) -> AsyncIterator[None]:
        """Held while this stream's segment of `audio_s` is at the renderer; waits while `in_flight` others are."""
        if self.busy < self.in_flight and not self._waiting:
            self.busy += 1
        else:
            granted = asyncio.get_running_loop().create_future()
            heapq.heappush(self._waiting, (deadline, next(self._order), audio_s, granted))
            try:
                await granted
            except asyncio.CancelledError:
                if granted.done() and not granted.cancelled():  # handed a turn as it was cancelled: pass it on
                    self._release()
                raise
        self.rendering_s += audio_s
        try:
            yield
        finally:
            self.rendering_s -= audio_s
            self._release()

    def _release(self) -> None:
        while self._waiting:
            *_, granted = heapq.heappop(self._waiting)
            if not granted.done():  # a waiter that left (its client did) is skipped
                granted.set_result(None)  # the turn passes on: busy stays as it was
                return
        self.busy -= 1

    def rendered(self, seconds: float, audio_s: float) -> None:
        """A segment of `audio_s` took `seconds` from its turn to its answer."""
        self.s_per_audio_s += 0.2 * (seconds / max(audio_s, 1e-3) - self.s_per_audio_s)

    def wait_s(self, deadline: float, audio_s: float) -> float:
        """How long a segment of `audio_s` asked for now with `deadline` waits for its turn and its render: the
        audio at the renderer and of every waiting segment due sooner, rendered `in_flight` at a time at the
        measured rate, then its own, with a margin for the spread. Each counts at its own length: a herd of new
        streams' first segments are short and their second ones are not, so an average render per waiting
        segment let streams start on a first segment that the others' second ones then outran."""
        ahead = sum(audio for due, _, audio, granted in self._waiting if not granted.done() and due <= deadline)
        return MARGIN * ((ahead + self.rendering_s) / self.in_flight + audio_s) * self.s_per_audio_s

    @property
    def waiting(self) -> int:
        return sum(not granted.done() for *_, granted in self._waiting)
