"""The radio at real time, on this machine (issue K item 3), side by side in one run: a real `bentoml serve`
of the registry's champion, clients that play what they receive at real time from their first byte.

- first audio: request → first audio bytes, streams opened one at a time on an idle server, and while 8
  clients ask /generate for clips back to back;
- in-process rate of the radio (model.radio, 8 streams batched), the limit it implies, read again beside each
  trial of the most streams below;
- N concurrent streams for `seconds` (12 × 300 s by default): underruns (a client that played everything
  it had and waited), on the client and the server's counter, memory per stream, and /generate answering
  meanwhile; then the most streams held for 60 s with no underrun, as a share of the in-process limit;
- 1 000 open/close cycles: threads, open files and memory of the service before and after;
- /generate throughput, 8 clients of 10-s clips, served (request log on) vs in-process, interleaved round by round.

    python bench/stream_bench.py [seconds]   # → bench/stream_bench.json; bench/run.py stores it too
    python bench/stream_bench.py most        # the most-streams trials again, beside the last run's"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from serve_bench import PROMPTS, load, start  # noqa: E402

from bayes_beats.core.atomic import write_json  # noqa: E402
from bayes_beats.core.processes import tree_usage  # noqa: E402

OUT = Path(__file__).with_name("stream_bench.json")
RATE = 22050  # WAV streams: bytes are seconds (2 bytes a sample, mono)
TOLERANCE_S = 0.05  # a player's clock against its buffer: less than this is not a stall


async def play(http: httpx.AsyncClient, url: str, query: str, seconds: float) -> dict:
    """A listener: opens a WAV stream, plays from its first byte at real time, counts the times it ran dry."""
    asked = time.perf_counter()
    first_byte, first, received, stalls, stalled_s, dry = None, None, 0.0, 0, 0.0, False
    stall_at: list[float] = []
    # each listener its own address (the service believes X-Forwarded-For from loopback here): the caps are
    # per address, and the bench is many listeners, not one
    tag = zlib.crc32(query.encode())
    client = {"X-Forwarded-For": f"10.{tag % 250}.{tag // 250 % 250}.{tag // 62500 % 250 + 1}"}
    async with http.stream("GET", f"{url}/stream?{query}&format=wav", headers=client) as response:
        if response.status_code != 200:
            return {"status": response.status_code}
        async for chunk in response.aiter_bytes():
            now = time.perf_counter()
            if first is None:
                first_byte = first = now
                chunk = chunk[44:]  # the header
            deficit = (now - first) - received  # played so far (clock) minus audio held
            if deficit > TOLERANCE_S:
                if not dry:
                    stalls += 1
                    stall_at.append(round(received, 1))  # where in the stream (s) the player ran dry
                stalled_s += deficit
                first += deficit  # the player waited: its clock resumes with this chunk
            dry = deficit > TOLERANCE_S
            received += len(chunk) / 2 / RATE
            if now - first >= seconds:
                break
    return {
        "first_audio_s": first_byte - asked if first_byte else None,
        "seconds": received,
        "stalls": stalls,
        "stalled_s": stalled_s,
        "stall_at_s": stall_at,
    }


def server_underruns(url: str) -> float:
    text = httpx.get(f"{url}/metrics", timeout=30).text
    return sum(
        float(line.split()[-1]) for line in text.splitlines() if line.startswith("bayes_beats_stream_underruns_total")
    )


async def concurrent(url: str, pid: int, n: int, seconds: float, probe: bool) -> dict:
    """n listeners at once for `seconds`; when `probe`, meanwhile a /generate every 10 s and, from the
    second minute, one more listener at a time (5, each for 10 s): first audio on a loaded server."""
    idle, before = tree_usage(pid), server_underruns(url)
    probes: list[tuple[int, float]] = []
    joined: list[float] = []
    peak: dict = {}

    async def generate_meanwhile(http: httpx.AsyncClient) -> None:
        await asyncio.sleep(15)
        while True:
            began = time.perf_counter()
            r = await http.post(f"{url}/generate", json={"prompt": "a calm lake at dawn", "duration_s": 10})
            probes.append((r.status_code, time.perf_counter() - began))
            await asyncio.sleep(10)

    async def join_meanwhile(http: httpx.AsyncClient) -> None:
        await asyncio.sleep(min(60, seconds / 2))
        for i in range(5):
            result = await play(http, url, f"prompt={PROMPTS[i]}, late&seed={100 + i}", 10.0)
            joined.append(result["first_audio_s"])
            await asyncio.sleep(5)

    async def sample_memory() -> None:
        await asyncio.sleep(min(30, seconds / 2))
        peak.update(tree_usage(pid))

    limits = httpx.Limits(max_connections=n + 4)
    async with httpx.AsyncClient(timeout=httpx.Timeout(300, connect=30), limits=limits) as http:
        side = [asyncio.create_task(sample_memory())] + (
            [asyncio.create_task(generate_meanwhile(http)), asyncio.create_task(join_meanwhile(http))] if probe else []
        )
        queries = [f"prompt={PROMPTS[i % len(PROMPTS)]}&seed={i}&temperature=1" for i in range(n)]
        results = await asyncio.gather(*(play(http, url, q, seconds) for q in queries))
        for task in side:
            task.cancel()
    played = [r for r in results if "stalls" in r]
    out = {
        "streams": n,
        "seconds": seconds,
        "refused": len(results) - len(played),
        "client_stalls": sum(r["stalls"] for r in played),
        "client_stalled_s": round(sum(r["stalled_s"] for r in played), 2),
        "stall_at_s": sorted(t for r in played for t in r["stall_at_s"]),
        "server_underruns": server_underruns(url) - before,
        "first_audio_median_s": round(float(np.median([r["first_audio_s"] for r in played])), 3) if played else None,
        "first_audio_p95_s": round(float(np.percentile([r["first_audio_s"] for r in played], 95)), 3)
        if played
        else None,
        "memory_per_stream_mb": round((peak.get("rss_mb", idle["rss_mb"]) - idle["rss_mb"]) / n, 2),
    }
    if probe:
        out["generate_meanwhile"] = {
            "requests": len(probes),
            "ok": sum(code == 200 for code, _ in probes),
            "p50_s": round(float(np.median([s for _, s in probes])), 2) if probes else None,
        }
        out["first_audio_joining"] = {
            "streams": len(joined),
            "median_s": round(float(np.median(joined)), 3) if joined else None,
            "max_s": round(max(joined), 3) if joined else None,
        }
    return out


async def first_audio(url: str, n: int = 5) -> dict:
    async with httpx.AsyncClient(timeout=120) as http:
        times = [(await play(http, url, f"prompt={PROMPTS[i]}&seed={i}", 1.0))["first_audio_s"] for i in range(n)]
    return {"streams": n, "median_s": round(float(np.median(times)), 3), "max_s": round(max(times), 3)}


async def cycles(url: str, pid: int, n: int) -> dict:
    async def once(http: httpx.AsyncClient, i: int) -> None:
        # opened (the stream registered, its producer asking the renderer) and left at the headers: the open
        # and close paths, at the rate a page reloads; the renderer finishes a segment nobody takes
        async with http.stream("GET", f"{url}/stream?prompt=rain&seed={i}&format=wav") as r:
            assert r.status_code == 200, r.status_code

    async with httpx.AsyncClient(timeout=120) as http:
        for i in range(10):
            await once(http, i)
        await asyncio.sleep(2)
        before = tree_usage(pid)
        began = time.perf_counter()
        for i in range(n):
            await once(http, i)
        wall = time.perf_counter() - began
        await asyncio.sleep(3)
        after = tree_usage(pid)
    return {"cycles": n, "seconds": round(wall, 1), "before": before, "after": after}


def radio_rate(radio, streams: int, segments: int = 4) -> float:
    """The radio's own rate in-process: audio seconds per second of rendering, `streams` batched."""
    from bayes_beats.model.radio import Cursor

    cursors = [Cursor(PROMPTS[i % len(PROMPTS)], i, 1.0) for i in range(streams)]
    cursors = [s.cursor for s in radio.render(cursors, [None] * streams)]  # past the short first segment
    began, audio = time.perf_counter(), 0.0
    for _ in range(segments):
        rendered = radio.render(cursors, [None] * streams)
        audio += sum(s.duration_s for s in rendered)
        cursors = [s.cursor for s in rendered]
    return round(audio / (time.perf_counter() - began), 1)


def in_process(streams: int = 8) -> tuple[dict, object]:
    """The radio's own rate, one stream and `streams` batched; and the radio, for the rounds below."""
    from bayes_beats.core import paths
    from bayes_beats.core.config import load_params
    from bayes_beats.model.generate import load_generator
    from bayes_beats.model.radio import Radio

    radio = Radio(load_generator(paths.FINETUNED, device="cpu"), load_params().stream)
    return {f"real_time_factor_{n}": radio_rate(radio, n) for n in (1, streams)}, radio


def clips_in_process(generator, single_threaded: bool, n: int = 32) -> float:
    """/generate's work in-process, in requests a second: 8 clients' 10-s clips as batches of 8 on two
    intra-op threads, or as the service renders them on CPU, two single-threaded sub-batches of 4 side by side."""
    import torch

    threads = torch.get_num_threads()
    began = time.perf_counter()
    try:
        if not single_threaded:
            for i in range(n // 8):
                generator.generate_with_plans(PROMPTS, 10.0, [i * 8 + j for j in range(8)])
        else:
            torch.set_num_threads(1)
            with ThreadPoolExecutor(2) as cores:
                for i in range(n // 8):
                    seeds = [i * 8 + j for j in range(8)]
                    halves = [(PROMPTS[:4], seeds[:4]), (PROMPTS[4:], seeds[4:])]
                    list(cores.map(lambda half: generator.generate_with_plans(half[0], 10.0, half[1]), halves))
    finally:
        torch.set_num_threads(threads)
    return n / (time.perf_counter() - began)


def generate_side_by_side(url: str, generator, rounds: int = 5) -> dict:
    """Served /generate (8 clients, 32 10-s clips) against the faster in-process layout, interleaved round by
    round: this machine's speed drifts by ±10 % from one minute to the next (16-clip bursts measured 0.72-0.89 s
    a clip), more than the gap being measured, so a ratio of rates taken minutes apart would measure the drift.
    Both sides are warm: the generator has rendered (in_process), and the service gets an untimed round first
    (batched, as on a GPU, BentoML's batcher trains its latency model on a fresh service's first dispatches)."""
    asyncio.run(load(url, 8, 16, 10.0))
    served, batched, single = [], [], []
    for _ in range(rounds):
        batched.append(clips_in_process(generator, single_threaded=False))
        single.append(clips_in_process(generator, single_threaded=True))
        served.append(asyncio.run(load(url, 8, 32, 10.0)))
    best = [max(b, s) for b, s in zip(batched, single, strict=True)]
    shares = [r["requests_per_s"] / b for r, b in zip(served, best, strict=True)]
    return {
        "rounds": rounds,
        "requests_per_round": 32,
        "errors": sum(r["errors"] for r in served),
        "served_requests_per_s": [r["requests_per_s"] for r in served],
        "served_p50_s": [r["p50_s"] for r in served],
        "in_process_batch8_two_threads": [round(b, 3) for b in batched],
        "in_process_two_single_threaded": [round(s, 3) for s in single],
        "in_process_best": [round(b, 3) for b in best],
        "shares": [round(s, 3) for s in shares],
        "share_of_in_process": round(float(np.median(shares)), 3),
    }


async def first_audio_under_load(url: str, n: int = 5, playing: int = 4) -> dict:
    """Streams opened while 8 clients ask /generate for 10-s clips back to back: first audio of `n` opened
    one at a time, then stalls of `playing` listeners for 30 s (clips and segments queue apart)."""
    clips = asyncio.create_task(load(url, 8, 64, 10.0))
    await asyncio.sleep(3)
    async with httpx.AsyncClient(timeout=120) as http:
        times = []
        for i in range(n):
            times.append((await play(http, url, f"prompt={PROMPTS[i]}&seed={100 + i}", 1.0))["first_audio_s"])
        plays = [play(http, url, f"prompt={PROMPTS[i]}&seed={200 + i}", 30.0) for i in range(playing)]
        played = await asyncio.gather(*plays)
    generated = await clips
    return {
        "first_audio_s": [round(t, 2) for t in times],
        "median_s": round(float(np.median(times)), 3),
        "max_s": round(max(times), 3),
        "stalls_of_listeners_30s": [r.get("stalls") for r in played],
        "generate": generated,
    }


def most_streams(url: str, pid: int, radio, streams: int) -> dict:
    """More streams until a listener waits (32: stream.max_streams of a worker); the in-process limit is measured
    beside each trial (the service idle): this machine's speed drifts more than minutes apart allow."""
    held = []
    for n in (16, 24, 32):
        limit = radio_rate(radio, 8)
        trial = asyncio.run(concurrent(url, pid, n, 60.0, probe=False)) | {"limit_in_process": limit}
        held.append(trial)
        if trial["client_stalls"] or trial["refused"]:
            break
    kept = [t for t in held if not t["client_stalls"] and not t["refused"]]  # in order: the last holds most
    most, beside = (kept[-1]["streams"], kept[-1]) if kept else (streams, held[0])
    return {
        "held": most,
        "limit_in_process": beside["limit_in_process"],  # read beside the trial that held (none: the first)
        "share": round(most / beside["limit_in_process"], 2),
        "trials": held,
    }


def most_streams_again() -> dict:
    """`python bench/stream_bench.py most`: the most-streams trials alone on a fresh service, kept beside the
    full run's in stream_bench.json (`most_streams_again`): how far two runs of the trials are apart."""
    _, radio = in_process()
    os.environ["BAYES_BEATS_TRUSTED_PROXIES"] = "127.0.0.1/32"
    proc, url = start(None, None)
    try:
        return most_streams(url, proc.pid, radio, 12)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(120)


def herds(count: int = 4, streams: int = 16, seconds: float = 20.0) -> dict:
    """`python bench/stream_bench.py herds` → bench/stream_herds.json: 12 streams × 30 s to warm the admission's estimates, then `count`
    herds of `streams` opened in one second, each for `seconds`: where a start-up admission miss stalls."""
    os.environ["BAYES_BEATS_TRUSTED_PROXIES"] = "127.0.0.1/32"
    proc, url = start(None, None)
    keep = ("client_stalls", "client_stalled_s", "stall_at_s", "first_audio_median_s", "first_audio_p95_s")
    try:
        warm = asyncio.run(concurrent(url, proc.pid, 12, 30.0, probe=False))
        runs = [asyncio.run(concurrent(url, proc.pid, streams, seconds, probe=False)) for _ in range(count)]
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(120)
    return {
        "streams": streams,
        "seconds": seconds,
        "warm_stalls": warm["client_stalls"],
        "herds_with_a_stall": sum(r["client_stalls"] > 0 for r in runs),
        "herds": [{k: r[k] for k in keep} for r in runs],
    }


def main(seconds: float = 300.0, streams: int = 12, cycle_count: int = 1000) -> dict:
    results: dict = {}
    results["in_process"], radio = in_process()
    generator = radio.generator
    os.environ["BAYES_BEATS_TRUSTED_PROXIES"] = "127.0.0.1/32"
    proc, url = start(None, None)  # as served: on CPU one single-threaded render a core
    try:
        results["first_audio"] = asyncio.run(first_audio(url))
        results["first_audio_under_generate"] = asyncio.run(first_audio_under_load(url))
        # /generate served, 8 clients of 10-s clips, on the idle service (and again after the streams below)
        results["generate_served"] = generate_side_by_side(url, generator)
        results["concurrent"] = asyncio.run(concurrent(url, proc.pid, streams, seconds, probe=True))
        results["most_streams"] = most_streams(url, proc.pid, radio, streams)
        results["open_close"] = asyncio.run(cycles(url, proc.pid, cycle_count))
        # after the streams and 1 000 abandoned ones: nothing left behind slows the service down
        results["generate_served_after_streams"] = generate_side_by_side(url, generator)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(120)
    return results


def save(results: dict) -> dict:
    """The one writer of OUT (this script and bench/run.py both call it)."""
    write_json(OUT, results)  # atomic: a killed run leaves the last one whole
    return results


if __name__ == "__main__":
    if sys.argv[1:] == ["most"]:
        out = save(json.loads(OUT.read_text()) | {"most_streams_again": most_streams_again()})
    elif sys.argv[1:] == ["herds"]:  # its own file: `make bench` rewrites OUT whole
        out = herds()
        write_json(OUT.with_name("stream_herds.json"), out)
    else:
        out = save(main(*(float(a) for a in sys.argv[1:2])))
    print(json.dumps(out, indent=2))
