"""The radio's life cycle in the API (docs/design.md "The stream"): open, produce, pace, vote, leave, resume.

A `Stream` is a producer task and a bounded queue. The producer asks the renderer for the next segment
(`model.radio`, stateless: the stream keeps the `Cursor`), with the listener's current taste, and waits when
`ahead_segments` are rendered and unsent: a slow reader is backpressure, never a growing buffer. The
response body takes segments off the queue, encodes them (`api.encoder`) in a worker thread and sends them
at real time after a `burst_s` head start, as internet radio does: a client that reads faster than it plays
does not make the machine render faster. A client that leaves cancels the producer at once; the stream
stays resumable for `resume_s` (`?resume=ID`: the same plan, from the chunk where it dropped), then goes.
SIGTERM ends every stream after the segment it is sending (`close_all`)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import secrets
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from functools import cache
from typing import Any

import anyio
import numpy as np

from bayes_beats.api.encoder import AudioEncoder
from bayes_beats.api.turns import RenderTurns
from bayes_beats.core.config import StreamParams
from bayes_beats.music.audio import wav_bytes

log = logging.getLogger(__name__)
CHUNK_S = 0.5  # audio per write: the pacing's grain
UNDERRUN_S = 0.05  # a chunk later than this behind a real-time player's clock is an underrun


class StreamLimit(Exception):
    """Too many streams (of the worker, the listener or the client address): a 429."""


@cache
def stream_metrics() -> Any:
    from prometheus_client import Counter, Gauge

    class _M:
        active = Gauge("bayes_beats_streams_active", "Open streams", registry=None, multiprocess_mode="livesum")
        underruns = Counter("bayes_beats_stream_underruns", "Times a real-time reader waited for audio", registry=None)
        listened = Counter("bayes_beats_stream_listened_seconds", "Seconds of stream audio sent", registry=None)
        segments = Counter("bayes_beats_stream_segments", "Stream segments rendered", registry=None)

    return _M


@dataclass
class Playing:
    """What the status of a stream shows of one segment."""

    index: int
    start_s: float
    duration_s: float
    bpm: float
    keyscale: str
    energy: float
    phrase_start: bool
    id: str
    plan: dict | None = None

    def to_dict(self) -> dict:
        return {k: v for k, v in self.__dict__.items()}


@dataclass
class Stream:
    id: str
    listener: str | None
    client: str
    fmt: str
    cursor: dict  # model.radio.Cursor as a dict: what the next segment continues
    vibe: dict | None = None
    model_version: str = ""
    current: tuple | None = None  # (playing, audio, rate, offset) of the segment being sent
    gone: asyncio.Event = field(default_factory=asyncio.Event)  # the client of this attachment left
    queue: asyncio.Queue = field(default_factory=lambda: asyncio.Queue())
    segments: deque = field(default_factory=lambda: deque(maxlen=16))  # recent Playing, sent or queued
    producer: asyncio.Task | None = None
    started: float = field(default_factory=time.monotonic)
    first_byte: float | None = None
    sent_s: float = 0.0
    rendered_s: float = 0.0
    origin: float | None = None  # when audio position 0 would have played, for the listener attached now
    underruns: int = 0
    rendered: int = 0  # segments rendered for this stream
    attached: bool = False
    left_at: float | None = None
    ended: str | None = None  # why the stream stopped for good

    def deadline(self) -> float:
        """When the listener runs out of what was rendered (monotonic time); a stream not yet playing: when it
        was opened, so new streams' first segments go first."""
        if self.origin is not None:
            return self.origin + self.rendered_s
        return (self.started if self.rendered_s == 0 else time.monotonic()) + self.rendered_s

    def status(self) -> dict:
        """The segment playing now (by the audio sent and the time since the first byte) and what follows."""
        playhead = 0.0 if self.first_byte is None else min(self.sent_s, time.monotonic() - self.first_byte)
        known = list(self.segments)
        now = next((s for s in reversed(known) if s.start_s <= playhead), known[0] if known else None)
        return {
            "id": self.id,
            "playhead_s": round(playhead, 2),
            "sent_s": round(self.sent_s, 2),
            "now_playing": now.to_dict() if now else None,
            "next": [s.to_dict() for s in known if now is None or s.index > now.index],
            "vibe": self.vibe,
            "underruns": self.underruns,
            "segments_rendered": self.rendered,
            "ended": self.ended,
        }


Render = Callable[[dict, list[float] | None], Awaitable[dict]]  # (cursor, taste) → segment (model.radio, as JSON)
Taste = Callable[[str | None, int], Awaitable[list[float] | None]]  # (listener, seed) → a posterior draw


class StreamHub:
    """The open streams of one API worker."""

    def __init__(self, settings: StreamParams, render: Render, taste: Taste, sign: Callable, record: Callable) -> None:
        self.settings, self._render, self._taste, self._sign, self._record = settings, render, taste, sign, record
        self.streams: dict[str, Stream] = {}
        self.closing = False
        self.loop: asyncio.AbstractEventLoop | None = None
        self.turns = RenderTurns(settings.renders_in_flight)

    def open(self, cursor: dict, listener: str | None, client: str, fmt: str, vibe: dict | None = None) -> Stream:
        self._sweep()
        s = self.settings
        playing = [x for x in self.streams.values() if x.ended is None and x.left_at is None]
        if self.closing:
            raise StreamLimit("the service is shutting down")
        if len(playing) >= s.max_streams:
            raise StreamLimit(f"{s.max_streams} streams are open on this worker; retry shortly")
        if listener is not None and sum(x.listener == listener for x in playing) >= s.max_streams_per_listener:
            raise StreamLimit(f"this listener has {s.max_streams_per_listener} streams open")
        if sum(x.client == client for x in playing) >= s.max_streams_per_client:
            raise StreamLimit(f"this address has {s.max_streams_per_client} streams open")
        self.loop = asyncio.get_running_loop()
        stream = Stream(secrets.token_urlsafe(12), listener, client, fmt, cursor, vibe)
        stream.queue = asyncio.Queue(maxsize=s.ahead_segments)
        self.streams[stream.id] = stream
        stream_metrics().active.inc()
        return stream

    def get(self, stream_id: str) -> Stream | None:
        self._sweep()
        return self.streams.get(stream_id)

    async def body(
        self, stream: Stream, encoder: AudioEncoder, disconnected: Callable[[], Awaitable[bool]] | None = None
    ) -> AsyncIterator[bytes]:
        """The response body: segments, encoded, at real time after the burst; ends when the stream does.
        Cancelled (the client left): the producer stops now and the stream waits `resume_s` for a resume.
        `disconnected` (Starlette's Request.is_disconnected) is polled: a client that leaves while the body
        waits for a segment is noticed then, not at the next write."""
        s, metrics = self.settings, stream_metrics()
        stream.attached, stream.left_at, stream.origin = True, None, None
        stream.gone = asyncio.Event()
        if stream.producer is None or stream.producer.done():
            stream.producer = asyncio.create_task(self._produce(stream))
        watcher = asyncio.create_task(self._watch(stream, disconnected)) if disconnected else None
        attached_at, attached_sent = time.monotonic(), stream.sent_s
        clock: float | None = None  # a real-time player's clock: it starts playing at its first byte
        try:
            # admission: a new stream starts to play once what it has covers the wait for its next segment
            # (the renders due before it, then its own), or it has burst_s; on an idle renderer that is its first segment,
            # when many open at once they fill their buffers first rather than all run dry at their second
            while stream.first_byte is None and stream.rendered_s < min(
                s.burst_s, self.turns.wait_s(stream.deadline(), s.target_s(int(stream.cursor.get("index", 0))))
            ):
                if stream.ended is not None or stream.gone.is_set():
                    break
                await asyncio.sleep(0.05)
            while stream.ended is None:
                # a resume goes on where the connection dropped: the rest of the segment it was sending
                item = stream.current or (*(await self._next(stream) or (None, None, 0)), 0)
                if stream.gone.is_set():  # the client left while this waited: a resume starts with this segment
                    stream.current = item if item[0] is not None else stream.current
                    return
                if item[0] is None:  # the producer ended the stream (its maximum, a failure, shutdown)
                    break
                playing, audio, rate, start = item
                step = int(CHUNK_S * rate)
                for at in range(start, len(audio), step):
                    stream.current = (playing, audio, rate, at)
                    chunk = audio[at : at + step]
                    # pace: never more than burst_s of audio ahead of the clock (since this client attached)
                    ahead = (stream.sent_s - attached_sent) - (time.monotonic() - attached_at) - s.burst_s
                    if ahead > 0 and not self.closing:  # shutting down: the segment goes out at once
                        await asyncio.sleep(ahead)
                    data = await anyio.to_thread.run_sync(encoder.encode, chunk)
                    now = time.monotonic()
                    stream.first_byte = stream.first_byte or now
                    clock = clock or now
                    deficit = (now - clock) - (stream.sent_s - attached_sent)  # played minus what it was sent
                    if deficit > UNDERRUN_S:
                        stream.underruns += 1  # a player at real time ran dry and waited for this chunk
                        metrics.underruns.inc()
                        clock += deficit
                    stream.origin = clock - attached_sent
                    stream.sent_s += len(chunk) / rate
                    metrics.listened.inc(len(chunk) / rate)
                    yield data
                stream.current = None
                if stream.sent_s >= s.max_stream_s:
                    stream.ended = "maximum length"
                if self.closing:
                    stream.ended = "service shutting down"
            yield await anyio.to_thread.run_sync(encoder.close)
        finally:
            if watcher is not None:
                watcher.cancel()
            self._leave(stream)

    @staticmethod
    async def _next(stream: Stream) -> tuple | None:
        """The next queued segment, or None when the client leaves first."""
        getter = asyncio.ensure_future(stream.queue.get())
        gone = asyncio.ensure_future(stream.gone.wait())
        try:
            await asyncio.wait({getter, gone}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            gone.cancel()
            if not getter.done():
                getter.cancel()
        return getter.result() if getter.done() and not getter.cancelled() else None

    def _leave(self, stream: Stream) -> None:
        stream.attached = False
        if stream.producer is not None:
            stream.producer.cancel()  # a client that left stops its stream's work now
        if stream.ended is None:
            stream.left_at = stream.left_at or time.monotonic()
        else:
            self._drop(stream)

    async def _watch(self, stream: Stream, disconnected: Callable[[], Awaitable[bool]]) -> None:
        while stream.attached:
            if await disconnected():
                self._leave(stream)
                stream.gone.set()  # wakes a body waiting for a segment: it ends
                return
            await asyncio.sleep(0.25)

    async def _produce(self, stream: Stream) -> None:
        metrics = stream_metrics()
        try:
            while stream.ended is None and not self.closing:
                index = int(stream.cursor.get("index", 0))
                taste = await self._taste(stream.listener, int(stream.cursor["seed"]) * 1000 + index)
                started = time.perf_counter()
                async with self.turns.turn(stream.deadline(), self.settings.target_s(index)):
                    turn = time.perf_counter()  # the render's own time, not its wait for a turn
                    segment = await self._held_turn(self._render_retrying(stream.cursor, taste))
                    rendered_at = time.perf_counter()
                audio = np.frombuffer(base64.b64decode(segment.pop("audio")), dtype=np.float32)
                rate = int(segment["sample_rate"])
                self.turns.rendered(rendered_at - turn, len(audio) / rate)
                stream.model_version = str(segment.get("model_version", ""))
                playing = Playing(
                    index=segment["index"],
                    start_s=round(segment["start_s"], 3),
                    duration_s=round(len(audio) / rate, 3),
                    bpm=round(segment["bpm"], 1),
                    keyscale=segment["keyscale"],
                    energy=round(segment["energy"], 3),
                    phrase_start=segment["phrase_start"],
                    id=self._sign(segment.get("features") or [], stream.listener),
                    plan=segment.get("plan"),
                )
                stream.cursor = segment["cursor"]
                stream.segments.append(playing)
                stream.rendered += 1
                stream.rendered_s += playing.duration_s
                metrics.segments.inc()
                wav = await anyio.to_thread.run_sync(wav_bytes, audio[None, :], rate)
                self._record(stream, playing, wav, time.perf_counter() - started)
                await stream.queue.put((playing, audio, rate))  # waits while ahead_segments are unsent
        except asyncio.CancelledError:
            raise
        except Exception as err:  # a renderer that fails ends this stream, not the service
            log.warning("stream %s: %s", stream.id, err)
            stream.ended = f"renderer failed: {str(err).splitlines()[0][:200]}"
            with contextlib.suppress(asyncio.QueueFull):
                stream.queue.put_nowait(None)

    @staticmethod
    async def _held_turn(render: Awaitable[dict]) -> dict:
        """The render, whose turn outlives a client that leaves: the renderer finishes a segment it started
        (a render in a thread cannot be interrupted), so the turn passes on when it does, not at once; else
        a crowd that opens and leaves would put any number of renders at the renderer behind the turns'
        back. The segment is dropped."""
        task = asyncio.ensure_future(render)
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            with contextlib.suppress(Exception):
                await task
            raise

    async def _render_retrying(self, cursor: dict, taste: list[float] | None, attempts: int = 3) -> dict:
        """A segment is seeded by its cursor: asking again is safe, and a renderer that dropped a connection
        (an idle keep-alive closed as it was picked up, a worker restarting) should not end a stream."""
        for attempt in range(attempts):
            try:
                return await self._render(cursor, taste)
            except Exception as err:  # noqa: BLE001 (the last attempt raises it)
                if attempt == attempts - 1:
                    raise
                log.info("stream segment: %s; asking again", str(err).splitlines()[0][:200])
                await asyncio.sleep(0.5 * (attempt + 1))
        raise AssertionError("unreachable")

    def close_all_soon(self) -> None:
        """From a signal handler: close_all on the event loop."""
        self.closing = True
        if self.loop is not None:
            self.loop.call_soon_threadsafe(self.close_all)

    def close_all(self) -> None:
        """Shutdown: every stream ends after the segment it is sending."""
        self.closing = True
        for stream in list(self.streams.values()):
            if stream.producer is not None:
                stream.producer.cancel()
            if not stream.attached:
                self._drop(stream)
            else:
                with contextlib.suppress(asyncio.QueueFull):
                    stream.queue.put_nowait(None)

    def _drop(self, stream: Stream) -> None:
        if self.streams.pop(stream.id, None) is not None:
            stream_metrics().active.dec()

    def _sweep(self) -> None:
        """Streams whose client left more than resume_s ago are gone, and past max_streams resumable ones
        the oldest go (their memory: a few segments each)."""
        now = time.monotonic()
        left = sorted((x for x in self.streams.values() if x.left_at is not None), key=lambda x: x.left_at or 0)
        for stream in left[: max(0, len(left) - self.settings.max_streams)]:
            stream.ended = stream.ended or "client left"
            self._drop(stream)
        for stream in list(self.streams.values()):
            if not stream.attached and stream.left_at is not None and now - stream.left_at > self.settings.resume_s:
                stream.ended = stream.ended or "client left"
                self._drop(stream)
