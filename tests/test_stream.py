"""The radio (issue K): continuation in the sampler, the segment plan, the encoder, and GET /stream on a real
`bentoml serve` with the tiny champion: audio that keeps coming, its status, votes, bad requests, a client
that leaves (work stops, the stream resumes), backpressure, caps, no leaks over open/close cycles, SIGTERM
at a segment boundary, the request log and /metrics."""

from __future__ import annotations

import asyncio
import io
import json
import os
import signal
import sqlite3
import struct
import threading
import time

import httpx
import numpy as np
import pytest
import soundfile as sf
import torch
from conftest import champion_env, champion_served, start_service

from bayes_beats.api.encoder import AudioEncoder
from bayes_beats.api.stream import StreamHub
from bayes_beats.api.turns import MARGIN, RenderTurns
from bayes_beats.core.config import load_params
from bayes_beats.core.processes import tree_usage
from bayes_beats.model.generate import load_generator
from bayes_beats.model.radio import BEATS_PER_BAR, PEAK, Cursor, Radio, gain_curve, relative

SETTINGS = load_params().stream


# ---- the library: sampler, radio, encoder


@pytest.fixture(scope="module")
def generator(tiny_project):
    return load_generator(tiny_project[0] / "models" / "finetuned", device="cpu")


def test_the_sampler_holds_the_tail_exactly_and_no_held_frames_is_plain_text_to_music(generator):
    pipe, p = generator.pipe, generator.params
    frames, held = 64, 20

    def run(**extra):
        gens = [torch.Generator().manual_seed(s) for s in (1, 2)]
        return pipe(["rain on a window"] * 2, (frames - 0.5) / pipe.latents_per_second, p.num_inference_steps,
                    p.shift, gens, output_type="latent", **extra).audios  # fmt: skip

    plain = run()
    tail = torch.randn(2, frames, plain.shape[-1])
    assert torch.equal(run(held_latents=tail, held_frames=[0, 0]), plain)  # nothing held: text-to-music, bit for bit
    out = run(held_latents=tail, held_frames=[held, 0])
    assert torch.equal(out[0, :held], tail[0, :held])  # the tail comes out exactly as it was played
    assert not torch.equal(out[0, held:], plain[0, held:])  # and the rest was denoised against it
    assert torch.equal(out[1], plain[1])  # per item: the other item is untouched
    # a model trained to continue (pretrain's `continuation`) is also given the tail in its context
    assert not pipe.config.continues  # the toy project trains none: the tail is held in the latents only
    pipe.register_to_config(continues=True)
    try:
        given = run(held_latents=tail, held_frames=[held, 0])
    finally:
        pipe.register_to_config(continues=False)
    assert torch.equal(given[0, :held], tail[0, :held]) and torch.equal(given[1], plain[1])
    assert not torch.equal(given[0, held:], out[0, held:])


def test_segments_join_end_to_end_the_plan_moves_only_at_phrases_and_a_cursor_is_all_a_stream_is(generator):
    radio = Radio(generator, SETTINGS)
    cursor, segments = Cursor("late night rain, lo-fi", seed=4, temperature=1.0), []
    for _ in range(SETTINGS.phrase_segments + 2):
        segment = radio.render([cursor], [None])[0]
        segments.append(segment)
        # the cursor goes over the wire as JSON between segments: nothing else carries the stream
        cursor = Cursor(**json.loads(json.dumps(segment.cursor.to_dict())))
    for before, after in zip(segments, segments[1:], strict=False):
        assert after.start_s == pytest.approx(before.start_s + before.duration_s, abs=1e-6)  # no gap, no overlap
        if not after.phrase_start:
            assert after.metas() == before.metas()  # the plan changes only at a phrase's start
        assert abs(float(after.audio[0]) - float(before.audio[-1])) < 0.2  # the crossfaded seam has no step
    assert [s.phrase_start for s in segments] == [i % SETTINGS.phrase_segments == 0 for i in range(len(segments))]
    new_tempo = segments[SETTINGS.phrase_segments].bpm / segments[0].bpm
    assert 1 - SETTINGS.max_tempo_step - 1e-6 <= new_tempo <= 1 + SETTINGS.max_tempo_step + 1e-6
    again = radio.render([Cursor(**json.loads(json.dumps(segments[-2].cursor.to_dict())))], [None])[0]
    assert np.array_equal(again.audio, segments[-1].audio)  # stateless and seeded: any worker continues any stream
    for segment in segments:
        assert np.abs(segment.audio).max() <= 0.9  # -1 dBFS, the gain ramps rather than jumps


def test_the_gain_glides_from_what_was_played_and_a_louder_window_never_clips_or_jumps():
    hop, slew = 512, 0.1  # dB a frame
    rng = np.random.default_rng(0)
    audio = (0.2 * rng.standard_normal(200 * hop)).clip(-0.4, 0.4).astype(np.float32)  # under PEAK at start
    audio[150 * hop : 151 * hop] = 0.99  # a peak 3 s in: a window louder than the last one's normalisation
    start, target = 2.0, PEAK / 0.99
    gains = gain_curve(audio, start, target, hop, slew)
    level = 20 * np.log10(gains)
    assert level[0] == pytest.approx(20 * np.log10(start), abs=1e-3)  # no step where the last segment left off
    assert np.abs(audio * gains).max() <= PEAK + 1e-6  # -1 dBFS, the peak included
    assert np.abs(np.diff(level)).max() <= 1.01 * slew / hop  # never faster than the slew, either way (float32)
    assert level[149 * hop] < level[100 * hop] - 1.0  # it came down before the peak, not at it
    quiet = gain_curve(audio[: 100 * hop], 0.5, 1.0, hop, slew)  # a quieter window: the level rises gradually
    assert quiet[0] == pytest.approx(0.5, rel=1e-3) and quiet[-1] == pytest.approx(1.0, rel=1e-2)
    assert gain_curve(audio[: 10 * hop], 0.5, 1.0, hop, slew)[-1] < 0.6  # a short one ends on its way there
    assert np.all(np.diff(quiet) >= -1e-6)


def test_a_modulation_goes_to_the_relative_key():
    assert relative("C major") == "A minor" and relative("A minor") == "C major" and relative("F# minor") == "A major"


def test_segments_ramp_up_in_bars_and_seams_after_the_first_phrase_end_a_progression(generator):
    radio = Radio(generator, SETTINGS)
    cursor, lengths, first_bpm = Cursor("sunny beach with friends", seed=2, temperature=1.0), [], 0.0
    seams_s = 0.0  # where the seams are (whole frames) and where the beat grid is: it never slips
    for index in range(2 * SETTINGS.phrase_segments):
        job = radio.job(cursor, None)
        beat_s = 60.0 / job.metas["bpm"]
        if index < SETTINGS.phrase_segments - 1:
            assert job.beats % BEATS_PER_BAR == 0  # the first phrase: whole bars
        else:  # the first phrase's end, and every seam after it: a progression's end
            assert (cursor.beat + job.beats) % len(job.metas["chords"]) == 0
        assert job.new == round((cursor.lead_s + job.beats * beat_s) * radio.rate)  # the frame nearest the beat
        if index % SETTINGS.phrase_segments == 0:
            assert cursor.beat == 0  # a phrase (a new plan) starts on its progression's first chord
        segment = radio.render([cursor], [None])[0]
        lengths.append(job.beats * beat_s)
        first_bpm = first_bpm or job.metas["bpm"]
        cursor = segment.cursor
        assert cursor.beat == (job.cursor.beat + job.beats) % len(job.metas["chords"])
        seams_s += job.new / radio.rate
        assert abs(cursor.lead_s) <= 0.5 / radio.rate + 1e-9  # the next beat: within half a frame of its seam
        assert seams_s + cursor.lead_s == pytest.approx(sum(lengths), abs=1e-6)
    first_bar = BEATS_PER_BAR * 60.0 / first_bpm
    least = SETTINGS.tail_s + SETTINGS.hold_back_s + 0.2  # the next segment's tail and the audio kept back
    assert lengths[0] <= max(SETTINGS.first_segment_s, least) + first_bar  # first audio soon: a bar or two
    # then longer, so a stream gets ahead (the third runs to its progression's end: at least as long)
    assert lengths[0] < lengths[1] <= lengths[2]
    assert max(lengths) <= 1.5 * SETTINGS.segment_s + 4 * beat_s


def test_render_turns_go_to_the_earliest_deadline_and_a_leaver_passes_its_turn():
    async def scenario() -> list[str]:
        turns, order = RenderTurns(in_flight=1), []
        release = asyncio.Event()

        async def render(name: str, deadline: float, audio_s: float, hold: asyncio.Event | None = None) -> None:
            async with turns.turn(deadline, audio_s):
                order.append(name)
                if hold is not None:
                    await hold.wait()

        first = asyncio.create_task(render("busy", 0.0, 10.0, release))
        await asyncio.sleep(0)
        late = asyncio.create_task(render("late", 30.0, 10.0))
        leaver = asyncio.create_task(render("leaver", 1.0, 4.0))
        urgent = asyncio.create_task(render("urgent", 5.0, 8.0))
        await asyncio.sleep(0)
        assert turns.busy == 1 and turns.waiting == 3  # one at the renderer, the rest wait
        assert turns.rendering_s == 10.0
        rate = turns.s_per_audio_s
        # due at 10: after the 10 s at the renderer, "leaver"'s 4 s and "urgent"'s 8 s, then its own 4 s
        assert turns.wait_s(10.0, 4.0) == pytest.approx(MARGIN * (10 + 4 + 8 + 4) * rate)
        assert turns.wait_s(0.5, 4.0) == pytest.approx(MARGIN * (10 + 4) * rate)  # due before every waiting one
        assert turns.wait_s(0.5, 2.0) < turns.wait_s(0.5, 8.0)  # a short segment is a short render
        turns.rendered(3.0, 10.0)
        assert rate < turns.s_per_audio_s < 0.3  # a moving average
        leaver.cancel()  # its client left while it waited: the turn goes past it, and its audio is not ahead
        await asyncio.sleep(0)
        assert turns.wait_s(10.0, 4.0) == pytest.approx(MARGIN * (10 + 8 + 4) * turns.s_per_audio_s)
        release.set()
        await asyncio.gather(first, late, urgent)
        assert turns.busy == 0 and turns.waiting == 0 and turns.rendering_s == 0
        return order

    assert asyncio.run(scenario()) == ["busy", "urgent", "late"]


def test_a_herd_of_new_streams_counts_the_length_of_what_waits_ahead():
    """Sixteen streams opened together: their second segments are longer than their first, and a stream that
    would start on its first alone sees them at their length (an average render each let it start, then
    stall at 4.4 s, in three herds of four: docs/design.md, bench/stream_herds.json)."""

    async def scenario() -> tuple[float, float]:
        short, long = RenderTurns(in_flight=2), RenderTurns(in_flight=2)
        hold = asyncio.Event()

        async def wait(turns: RenderTurns, deadline: float, audio_s: float) -> None:
            async with turns.turn(deadline, audio_s):
                await hold.wait()

        tasks = [asyncio.create_task(wait(t, i, a)) for t, a in ((short, 4.0), (long, 8.0)) for i in range(16)]
        await asyncio.sleep(0)
        waits = short.wait_s(20.0, 8.0), long.wait_s(20.0, 8.0)
        hold.set()
        await asyncio.gather(*tasks)
        return waits

    after_first, after_second = asyncio.run(scenario())
    assert after_second > 1.5 * after_first  # twice the audio ahead: a longer wait (one render a segment: the same)


def test_a_producer_cancelled_mid_render_holds_its_turn_until_the_renderer_is_done():
    """The renderer finishes a segment it started whoever left; the turn counts it until then."""

    async def scenario() -> tuple[int, int, bool]:
        turns, finished = RenderTurns(in_flight=1), asyncio.Event()

        async def render() -> dict:
            await asyncio.sleep(0.3)
            finished.set()
            return {}

        async def produce() -> None:
            async with turns.turn(0.0, 4.0):
                await StreamHub._held_turn(render())

        producer = asyncio.create_task(produce())
        await asyncio.sleep(0.05)
        producer.cancel()  # the client left mid-render
        await asyncio.sleep(0.05)
        busy_while_rendering = turns.busy
        with pytest.raises(asyncio.CancelledError):
            await producer
        return busy_while_rendering, turns.busy, finished.is_set()

    assert asyncio.run(scenario()) == (1, 0, True)


@pytest.mark.parametrize("fmt", ["mp3", "ogg", "wav"])
def test_the_encoder_streams_each_format_as_written_and_it_decodes(fmt):
    sr = 22050
    tone = (0.3 * np.sin(np.arange(3 * sr) * 2 * np.pi * 220 / sr)).astype(np.float32)
    encoder = AudioEncoder(fmt, sr)
    chunks = [encoder.encode(tone[i : i + sr // 2]) for i in range(0, len(tone), sr // 2)]
    assert sum(map(len, chunks[1:])) > 0  # bytes leave as the audio is encoded, not at the end
    data = b"".join(chunks) + encoder.close()
    if fmt == "wav":  # a live WAV: the sizes say "unknown", as internet radio sends them
        assert struct.unpack("<I", data[4:8])[0] == 0xFFFFFFFF and struct.unpack("<I", data[40:44])[0] == 0xFFFFFFFF
    audio, rate = sf.read(io.BytesIO(data), dtype="float32")
    assert len(audio) / rate == pytest.approx(3.0, abs=0.15) and np.abs(audio).max() > 0.2
    with pytest.raises(ValueError, match="format must be one of"):
        AudioEncoder("flac", sr)


# ---- the service


@pytest.fixture(scope="module")
def served(registry, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("stream")
    with champion_served(registry, tmp, BAYES_BEATS_REQUEST_LOG=str(tmp / "requests.sqlite")) as (proc, url, _):
        yield url, tmp / "requests.sqlite", proc


class Reader:
    """A client on a stream, reading in a thread; `seconds` of WAV audio received so far."""

    def __init__(self, url: str, query: str, pace: bool = True) -> None:
        self.data, self.done, self.error = bytearray(), threading.Event(), None
        self.response = None
        self._client = httpx.Client(timeout=httpx.Timeout(120, connect=10))
        self._stop = threading.Event()
        self._opened = threading.Event()
        self._thread = threading.Thread(target=self._read, args=(f"{url}/stream?{query}",), daemon=True)
        self._thread.start()
        assert self._opened.wait(120), "no answer"

    def _read(self, url: str) -> None:
        try:
            with self._client.stream("GET", url) as response:
                self.response = response
                self._opened.set()
                for chunk in response.iter_bytes():
                    self.data += chunk
                    if self._stop.is_set():
                        break
        except Exception as err:  # noqa: BLE001 (the test reads it)
            self.error = err
        finally:
            self._opened.set()
            self.done.set()

    @property
    def id(self) -> str:
        return self.response.headers["x-stream-id"]

    @property
    def seconds(self) -> float:
        return max(0, len(self.data) - 44) / 2 / 22050

    def wait_for(self, seconds: float, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while self.seconds < seconds and time.monotonic() < deadline and not self.done.is_set():
            time.sleep(0.1)
        assert self.seconds >= seconds, f"{self.seconds:.1f} s in {timeout} s ({self.error})"

    def close(self) -> None:
        self._stop.set()
        self._client.close()
        self.done.wait(10)


def status(url: str, stream_id: str) -> dict:
    r = httpx.get(f"{url}/stream/{stream_id}", timeout=30)
    assert r.status_code == 200, r.text
    return r.json()


def rendered(state: dict) -> list[dict]:
    return [s for s in [state["now_playing"], *state["next"]] if s]


def test_a_stream_keeps_playing_and_says_what_plays(served):
    url = served[0]
    reader = Reader(url, "prompt=late+night+rain+lo-fi&seed=3&format=wav")
    try:
        assert reader.response.status_code == 200 and reader.response.headers["content-type"] == "audio/wav"
        reader.wait_for(20)
        state = status(url, reader.id)
        now = state["now_playing"]
        assert {"index", "start_s", "bpm", "keyscale", "energy", "id", "plan"} <= set(now)
        assert state["next"] and state["next"][0]["index"] == now["index"] + 1
        segments = rendered(state)
        for a, b in zip(segments, segments[1:], strict=False):
            assert b["start_s"] == pytest.approx(a["start_s"] + a["duration_s"], abs=0.01)
    finally:
        reader.close()
    audio, sr = sf.read(io.BytesIO(bytes(reader.data)), dtype="float32")
    assert len(audio) / sr >= 20 and np.abs(audio).max() > 0.1
    quiet = np.convolve(np.abs(audio) < 1e-4, np.ones(2205), "valid").max()  # 100 ms of silence: a gap
    assert quiet < 2205
    mp3 = httpx.Client(timeout=60)
    with mp3.stream("GET", f"{url}/stream?prompt=sunlit+cafe&seed=1") as r:
        assert r.headers["content-type"] == "audio/mpeg" and r.headers["x-stream-id"]
        head = next(r.iter_bytes())
        assert head[:3] == b"ID3" or head[0] == 0xFF
    mp3.close()


@pytest.mark.parametrize(
    ("query", "status_code", "says"),
    [
        ("", 400, "exactly one of"),
        ("prompt=a&catalog=forest-path", 400, "exactly one of"),
        ("prompt=rain&bpm=999", 400, "bpm"),
        ("prompt=rain&format=flac", 400, "format"),
        ("prompt=rain&keyscale=H+major", 400, "keyscale"),
        ("prompt=rain&listener=nobody", 400, "listener"),
        ("prompt=rain&volume=11", 400, "unknown parameter"),
        ("vibe=forged.token", 400, "vibe token"),
        ("catalog=no-such-picture", 404, "unknown catalog id"),
        ("resume=no-such-stream", 404, "unknown stream id"),
    ],
)
def test_bad_stream_requests_are_json_4xx(served, query, status_code, says):
    r = httpx.get(f"{served[0]}/stream?{query}", timeout=30)
    assert r.status_code == status_code and says in r.json()["error"], r.text


def test_an_unknown_stream_id_is_404(served):
    assert httpx.get(f"{served[0]}/stream/nope", timeout=30).status_code == 404


def test_votes_on_what_plays_are_the_listeners_own(served):
    url = served[0]
    me, other = (httpx.post(f"{url}/listener", timeout=30).json()["listener"] for _ in range(2))
    reader = Reader(url, f"catalog=forest-path&listener={me}&format=wav")
    try:
        reader.wait_for(2)
        state = status(url, reader.id)
        assert state["vibe"]["catalog"] == "forest-path" and state["vibe"]["caption"]
        take = state["now_playing"]["id"]
        assert (
            httpx.post(f"{url}/feedback", json={"listener": me, "id": take, "vote": 1}, timeout=30).status_code == 200
        )
        theirs = httpx.post(f"{url}/feedback", json={"listener": other, "id": take, "vote": 1}, timeout=30)
        assert theirs.status_code == 403
        assert httpx.get(f"{url}/listener/{me}", timeout=30).json()["votes"] == 1
    finally:
        reader.close()


def test_a_client_that_leaves_stops_the_work_and_the_stream_resumes_in_its_plan(served):
    url = served[0]
    reader = Reader(url, "prompt=slow+drive+along+a+foggy+coast&seed=5&format=wav")
    reader.wait_for(8)
    stream_id = reader.id
    reader.close()
    time.sleep(1.0)  # the producer was cancelled at once; a render in flight is dropped
    left = status(url, stream_id)
    time.sleep(6)
    assert status(url, stream_id)["segments_rendered"] == left["segments_rendered"]  # no work once it left
    left = rendered(left)
    again = Reader(url, f"resume={stream_id}")
    try:
        assert again.response.status_code == 200 and again.id == stream_id
        again.wait_for(3)
        after = rendered(status(url, stream_id))
        assert after[-1]["index"] >= left[-1]["index"]
        assert after[-1]["keyscale"] in (left[-1]["keyscale"], relative(left[-1]["keyscale"]))
        twice = httpx.get(f"{url}/stream?resume={stream_id}", timeout=30)
        assert twice.status_code == 429  # one connection per stream
    finally:
        again.close()


def test_a_reader_that_does_not_read_holds_a_bounded_number_of_segments(served):
    """Sent: at most burst_s ahead of the clock (real time, whatever the reader); rendered: at most the
    queue's segments ahead of what was sent, however long the reader stalls (the socket's buffer aside)."""
    url = served[0]
    client = httpx.Client(timeout=60)
    started = time.monotonic()
    with client.stream("GET", f"{url}/stream?prompt=autumn+park+at+dusk&format=wav") as r:
        stream_id = r.headers["x-stream-id"]
        checks = []
        for _ in range(6):
            time.sleep(5)  # read nothing
            checks.append((time.monotonic() - started, status(url, stream_id)))
    client.close()
    longest = SETTINGS.segment_s * 1.5  # whole bars, a phrase's last to its progression's end: past segment_s
    for elapsed, state in checks:
        assert state["sent_s"] <= elapsed + SETTINGS.burst_s + 1.0  # paced (± a 0.5-s chunk): real time
        rendered_end = max(s["start_s"] + s["duration_s"] for s in rendered(state))
        assert rendered_end - state["sent_s"] <= (SETTINGS.ahead_segments + 2) * longest  # bounded, never a backlog


def test_streams_are_capped_per_listener_and_per_address(served):
    url = served[0]
    me = httpx.post(f"{url}/listener", timeout=30).json()["listener"]
    readers = [Reader(url, f"prompt=rain&listener={me}&format=wav") for _ in range(SETTINGS.max_streams_per_listener)]
    try:
        r = httpx.get(f"{url}/stream?prompt=rain&listener={me}", timeout=30)
        assert r.status_code == 429 and "listener has" in r.json()["error"] and r.headers["retry-after"]
        more = SETTINGS.max_streams_per_client - len(readers)  # the same address, anonymous
        readers += [Reader(url, "prompt=rain&format=wav") for _ in range(more)]
        r = httpx.get(f"{url}/stream?prompt=rain", timeout=30)
        assert r.status_code == 429 and "this address has" in r.json()["error"]
    finally:
        for reader in readers:
            reader.close()


def test_open_close_cycles_leak_no_threads_or_files(served):
    url, _, proc = served

    def cycle() -> None:
        with httpx.Client(timeout=60) as client, client.stream("GET", f"{url}/stream?prompt=rain&format=wav") as r:
            next(r.iter_bytes())

    for _ in range(5):  # warm: thread pools and connections at their working size
        cycle()
    time.sleep(2)
    before = tree_usage(proc.pid)
    for _ in range(40):
        cycle()
    time.sleep(3)
    after = tree_usage(proc.pid)
    assert after["threads"] <= before["threads"] + 4 and after["files"] <= before["files"] + 4, (before, after)


def test_the_log_records_every_segment_and_metrics_count_the_radio(served):
    url, request_log, _ = served
    metrics = httpx.get(f"{url}/metrics", timeout=30).text
    for series in ("bayes_beats_streams_active", "bayes_beats_stream_underruns", "bayes_beats_stream_listened_seconds"):
        assert series in metrics
    listened = [
        float(line.split()[-1])
        for line in metrics.splitlines()
        if line.startswith("bayes_beats_stream_listened_seconds_total")
    ]
    assert listened and sum(listened) > 20
    time.sleep(3)  # the log's worker writes off the request path
    with sqlite3.connect(request_log) as db:
        rows = db.execute("select count(*), sum(bpm is not null) from requests where endpoint = 'stream'").fetchone()
    assert rows[0] >= 6 and 1 <= rows[1] < rows[0]  # every segment logged, a sample of them measured


def test_sigterm_ends_every_stream_at_a_segment_boundary(registry, tmp_path):
    proc, url, log = start_service(tmp_path, champion_env(registry, BAYES_BEATS_REQUEST_LOG=str(tmp_path / "r.sqlite")))
    try:
        reader = Reader(url, "prompt=rain+on+a+tin+roof&format=wav")
        reader.wait_for(4)
        segments = rendered(status(url, reader.id))
        os.killpg(proc.pid, signal.SIGTERM)
        assert reader.done.wait(90), "the stream did not end"
        assert reader.error is None  # a clean end of the chunked body, not a cut connection
        assert proc.wait(90) == 0
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        log.close()
    ends = [s["start_s"] + s["duration_s"] for s in segments]
    assert any(abs(reader.seconds - end) < 0.05 for end in ends), (reader.seconds, ends)
