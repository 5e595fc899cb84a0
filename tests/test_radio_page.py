"""The page's radio for real: headless Chromium (as tests/test_page.py drives it) plays GET /stream from
`bentoml serve` with the tiny champion through Media Source Extensions, for over a minute.

A person picks a catalog picture and presses play: the playhead runs on without a stall, the now-playing
card shows the segment (bpm, key, energy), how the vibe was read and what comes next, a 👍 on the segment
playing is recorded (POST /feedback), the next segment's plan moves (phrase boundaries, the vote), and a
dropped connection is resumed (?resume=ID): the same stream goes on and so does the music. Stop, then play,
resumes it once more."""

from __future__ import annotations

import re
import time

import httpx
import pytest
import test_page
from test_page import PHONE, SLOW, ready, votes

service, phone = test_page.service, test_page.phone  # its fixtures: the served champion (this module's own), a phone

pytestmark = pytest.mark.serving

PLAY_S = 60  # the playhead must pass this …
AFTER_DROP_S = 15  # … and run this long after the reconnect
DROP_AT_S = 30  # the connection is cut at this playhead
KEEP_BEHIND_S = 10 + 20 + 3  # app.js: RADIO_KEEP_S + RADIO_TRIM_S, and a pump's slack
DREW = r"\d+(\.\d)? BPM · [A-G]#? (major|minor) · energy \d+ %"

SAMPLE = """() => {
  const audio = document.getElementById('radio-audio'), text = (id) => document.getElementById(id).textContent;
  return { t: audio.currentTime, paused: audio.paused, next: text('np-next'), nextPlan: text('np-next-plan'),
           segment: text('np-segment'), streamId: text('radio-stream-id'), status: text('radio-status'),
           canVote: !document.getElementById('radio-up').disabled, radio: window.__radio.info() };
}"""


def stream_status(url: str, stream_id: str) -> dict:
    r = httpx.get(f"{url}/stream/{stream_id}", timeout=30)
    assert r.status_code == 200, r.text
    return r.json()


def test_radio_plays_on_takes_a_vote_and_survives_a_dropped_connection(service, phone):
    page, errors = phone
    streams: list[str] = []  # every GET /stream?… the page made (start and resumes)
    page.on("request", lambda request: streams.append(request.url) if "/stream?" in request.url else None)
    page.goto(service + "/")
    page.wait_for_selector("#grid figure img")
    page.wait_for_function("localStorage.getItem('bayes-beats-listener') !== null", timeout=30_000)
    listener = page.evaluate("localStorage.getItem('bayes-beats-listener')")
    entry = httpx.get(f"{service}/catalog", timeout=30).json()["images"][0]

    # a catalog picture: its takes, then its radio
    page.locator("#grid .pick").first.click()
    ready(page)
    assert page.is_visible("#radio-play") and page.is_hidden("#radio-card")
    with page.expect_response(lambda r: "/stream?" in r.url, timeout=60_000) as opened:
        page.click("#radio-play")
    assert opened.value.status == 200, opened.value.text()
    stream_id = opened.value.headers["x-stream-id"]
    query = dict(httpx.URL(opened.value.url).params)
    assert query["catalog"] == entry["id"] and query["listener"] == listener, query
    page.wait_for_function("document.getElementById('radio-audio').currentTime > 0", timeout=SLOW)
    started = time.monotonic()
    page.wait_for_selector("#radio-card:not([hidden])", timeout=30_000)
    assert page.inner_text("#radio-stream-id") == stream_id
    assert page.get_attribute("#radio", "data-state") == "playing" and page.inner_text("#radio-play") == "■ Stop radio"

    # the card: the segment, how the vibe was read, the plan; and what comes next
    assert re.fullmatch(r"segment \d+( · a new phrase)?", page.inner_text("#np-segment"))
    assert re.fullmatch(DREW, page.inner_text("#np-drew")), page.inner_text("#np-drew")
    assert re.fullmatch(r"heard as “.+” · valence [+−]\d\.\d\d · arousal [+−]\d\.\d\d", page.inner_text("#np-vibe"))
    plan = r"plan: (.+ — )?tempo \d+–\d+ BPM \(\d+\), energy \d+ %–\d+ % \(\d+ %\), P\(major\) \d+ %"
    assert re.fullmatch(plan, page.inner_text("#np-plan")), page.inner_text("#np-plan")

    # a minute of music, sampled every second: the playhead moves every time, the vote, the dropped connection
    samples: list[dict] = []
    voted = dropped = None
    deadline = started + PLAY_S + AFTER_DROP_S + 120
    while time.monotonic() < deadline:
        page.wait_for_timeout(1000)
        sample = page.evaluate(SAMPLE) | {"wall": time.monotonic()}
        samples.append(sample)
        t = sample["t"]
        if voted is None and t > 5 and sample["canVote"]:  # 👍 on the segment playing
            before = stream_status(service, stream_id)["now_playing"]["id"]
            with page.expect_response(lambda r: r.url.endswith("/feedback"), timeout=30_000) as answered:
                page.click("#radio-up")
            voted = answered.value
            posted = voted.request.post_data_json
            after = stream_status(service, stream_id)["now_playing"]["id"]
            assert 200 <= voted.status < 300, voted.text()
            assert posted["vote"] == 1 and posted["listener"] == listener and posted["id"] in (before, after)
            assert voted.json()["votes"] == 1
        if dropped is None and voted is not None and t >= DROP_AT_S:  # a hiccup: the connection drops
            dropped = {"t": t, "sent_s": stream_status(service, stream_id)["sent_s"], "requests": len(streams)}
            page.evaluate("window.__radio.dropConnection()")
        if dropped is not None and t >= max(PLAY_S, dropped["t"] + AFTER_DROP_S):
            break
    times = [s["t"] for s in samples]
    assert voted is not None, samples[-3:]
    assert dropped is not None and times[-1] >= PLAY_S, f"the playhead reached {times[-1]:.1f} s"
    # no stall: at every sample the playhead had moved on, and by no more than the clock did (nothing skipped)
    steps = [(b["t"] - a["t"], b["wall"] - a["wall"]) for a, b in zip(samples, samples[1:], strict=False)]
    assert all(0 < t < wall + 1 for t, wall in steps), [(i, round(t, 2), round(w, 2)) for i, (t, w) in enumerate(steps)]
    assert all(not s["paused"] for s in samples)
    elapsed = time.monotonic() - started

    # the reconnect: one resume of the same stream, which went on sending; the page shows the same id
    resumes = [url for url in streams[dropped["requests"] :] if "resume=" in url]
    assert resumes and all(dict(httpx.URL(url).params)["resume"] == stream_id for url in resumes), streams
    last = samples[-1]
    assert last["radio"]["reconnects"] >= 1 and last["radio"]["id"] == stream_id and last["streamId"] == stream_id
    assert all(s["streamId"] == stream_id for s in samples)
    assert stream_status(service, stream_id)["sent_s"] > dropped["sent_s"] + 5

    # the next segment's plan moved (a phrase boundary every 3 segments, the vote) and the card showed it
    nexts = [s["next"] for s in samples if re.fullmatch(DREW, s["next"])]
    assert len(set(nexts)) >= 2, set(nexts)
    assert votes(service, listener) == 1

    # played audio is let go: the buffer holds the last half minute or so, not the whole minute
    ranges = last["radio"]["buffered"]
    assert len(ranges) == 1 and ranges[0][0] > 0 and last["t"] - ranges[0][0] < KEEP_BEHIND_S, ranges  # no gap
    assert page.evaluate("document.scrollingElement.scrollWidth") <= PHONE["width"]

    # stop, then play: the same stream resumes (within the service's minute), from where it was
    page.click("#radio-play")
    assert page.get_attribute("#radio", "data-state") == "stopped" and page.evaluate(
        "document.getElementById('radio-audio').paused"
    )
    with page.expect_response(lambda r: "/stream?" in r.url, timeout=60_000) as reopened:
        page.click("#radio-play")
    assert reopened.value.status == 200 and reopened.value.headers["x-stream-id"] == stream_id
    assert dict(httpx.URL(reopened.value.url).params) == {"resume": stream_id}
    page.wait_for_function("document.getElementById('radio-audio').currentTime > 2", timeout=60_000)
    assert page.inner_text("#radio-stream-id") == stream_id
    page.click("#radio-play")
    assert page.inner_text("#error") == ""
    assert errors == []
    print(f"radio: {times[-1]:.1f} s played in {elapsed:.1f} s, {len(set(nexts))} next plans, {len(resumes)} resume(s)")


def test_an_uploaded_picture_plays_on_the_radio_by_its_vibe_token(service, phone, tmp_path):
    """A person's own picture: the page reads its vibe once (POST /vibe, a signed token) and the radio plays
    that vibe (GET /stream?vibe=TOKEN), not a catalog id or a prompt."""
    page, errors = phone
    posted: list[str] = []
    page.on("request", lambda r: posted.append(r.url) if r.method == "POST" and r.url.endswith("/vibe") else None)
    entry = httpx.get(f"{service}/catalog", timeout=30).json()["images"][0]
    picture = tmp_path / "mine.png"
    picture.write_bytes(httpx.get(service + entry["image_url"], timeout=30).content)
    page.goto(service + "/")
    page.wait_for_selector("#grid figure img")
    page.set_input_files("#upload", str(picture))
    ready(page)
    with page.expect_response(lambda r: "/stream?" in r.url, timeout=60_000) as opened:
        page.click("#radio-play")
    assert opened.value.status == 200, opened.value.text()
    query = dict(httpx.URL(opened.value.url).params)
    assert "vibe" in query and "catalog" not in query and "prompt" not in query, query
    assert len(posted) == 1  # the picture's vibe was read once, for the radio
    page.wait_for_function("document.getElementById('radio-audio').currentTime > 3", timeout=SLOW)
    status = stream_status(service, opened.value.headers["x-stream-id"])
    assert status["vibe"] is not None and status["sent_s"] > 3, status
    assert re.fullmatch(r"heard as “.*” · valence [+−]\d\.\d\d · arousal [+−]\d\.\d\d", page.inner_text("#np-vibe"))
    page.click("#radio-play")
    assert page.get_attribute("#radio", "data-state") == "stopped"
    assert page.inner_text("#error") == "" and errors == []
