"""The web page for real: headless Chromium on a phone viewport against `bentoml serve` with the tiny champion.

A person picks a picture, sees how it was read (cues → valence/arousal → words → the plan's bands), listens
to the takes, votes one up, nudges the tempo and re-renders, and has the service forget them. The screenshot
it takes is docs/screenshot.png (BAYES_BEATS_SCREENSHOT=docs/screenshot.png to refresh it)."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import httpx
import pytest
from conftest import champion_served

from bayes_beats.api.schemas import LISTENER_PATTERN

pytestmark = pytest.mark.serving

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--autoplay-policy=no-user-gesture-required",
]
PHONE = {"width": 390, "height": 844}
SLOW = 180_000  # ms: three 10-s takes on two shared CPU cores


@pytest.fixture(scope="module")
def service(registry, clap_dir, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("page")
    env = {"BAYES_BEATS_REQUEST_LOG": str(tmp / "requests.sqlite"), "BAYES_BEATS_CLAP_DIR": str(clap_dir)}
    with champion_served(registry, tmp, **env) as (_, url, _):
        yield url


@pytest.fixture
def phone():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=shutil.which("chromium") or "/usr/bin/chromium", args=CHROMIUM_FLAGS
        )
        page = browser.new_page(viewport=PHONE)
        errors: list[str] = []
        page.on("pageerror", lambda err: errors.append(str(err)))
        yield page, errors
        browser.close()


def ready(page) -> None:
    page.wait_for_function(
        "document.body.dataset.state === 'ready' || document.body.dataset.state === 'error'", timeout=SLOW
    )
    assert page.get_attribute("body", "data-state") == "ready", page.inner_text("#error")


def votes(service: str, listener: str) -> int:
    r = httpx.get(f"{service}/listener/{listener}", timeout=30)
    assert r.status_code == 200, r.text
    return r.json()["votes"]


def test_page_shows_its_reasoning_and_lets_a_person_steer_it(service, phone, tmp_path):
    page, errors = phone
    page.goto(service + "/")
    page.wait_for_selector("#grid figure img")
    # the listener: an id the service issued (POST /listener), kept in localStorage, shown only in part
    page.wait_for_function("localStorage.getItem('bayes-beats-listener') !== null", timeout=30_000)
    listener = page.evaluate("localStorage.getItem('bayes-beats-listener')")
    assert re.fullmatch(LISTENER_PATTERN, listener) and votes(service, listener) == 0
    page.wait_for_function("document.getElementById('listener-id').textContent.length > 0", timeout=30_000)
    assert page.inner_text("#listener-id") == listener[:6] + "…"

    # pick: the reasoning, step by step
    page.click("#surprise")
    ready(page)
    assert page.inner_text("#caption") and page.inner_text("#scene")
    assert page.locator("#cues li").count() == 6 and page.inner_text("#cue-words").endswith("scene")
    for axis in ("#valence", "#arousal"):
        assert -1 <= float(page.inner_text(axis).replace("−", "-")) <= 1
    assert page.inner_text("#words") not in ("", "—")
    low, high, mid = map(
        int, re.fullmatch(r"(\d+)–(\d+) BPM \(most likely (\d+)\)", page.inner_text("#tempo-text")).groups()
    )
    assert 40 <= low <= mid <= high <= 220
    band = page.eval_on_selector("#tempo-band b", "b => b.getBoundingClientRect().width")
    marker = page.eval_on_selector("#tempo-band i", "i => i.style.left")
    assert band > 0 and marker.endswith("%")
    assert re.fullmatch(r"\d+ %", page.inner_text("#p-major"))
    assert re.fullmatch(r"\d+ %–\d+ % \(\d+ %\)", page.inner_text("#energy-text"))

    # listen: every take has audio of the asked length and says what it drew
    takes = page.locator(".take")
    assert takes.count() == 3
    for i in range(3):
        assert 9 < float(takes.nth(i).locator("audio").get_attribute("data-duration")) < 11
        assert re.fullmatch(
            r"\d+ BPM · [A-G]#? (major|minor) · energy \d+ %", takes.nth(i).locator(".drew").inner_text()
        )
    playing = page.evaluate(
        "async () => { const a = document.querySelector('.take audio'); await a.play(); return !a.paused; }"
    )
    assert playing
    assert page.evaluate("document.scrollingElement.scrollWidth") <= PHONE["width"]  # nothing wider than the phone

    # vote: the first take up, once
    first = takes.nth(0)
    first.get_by_label("vote up").click()
    page.wait_for_function("document.getElementById('taste').textContent.startsWith('1 vote')", timeout=30_000)
    assert "your taste:" in page.inner_text("#taste") and "tempo" in page.inner_text("#taste")
    assert first.get_by_label("vote up").is_disabled() and first.get_by_label("vote down").is_disabled()
    assert votes(service, listener) == 1

    # nudge: tempo 140 and re-render; every take plays it
    page.fill("#tempo", "140")
    assert page.inner_text("#tempo-out") == "140 BPM" and not page.is_checked("#tempo-auto")
    page.click("#rerender")
    ready(page)
    drew = [takes.nth(i).locator(".drew").inner_text() for i in range(takes.count())]
    assert len(drew) == 3 and all(d.startswith("140 BPM") for d in drew), drew
    assert page.inner_text("#taste").startswith("1 vote")  # the taste stays with the listener
    takes.nth(1).get_by_label("vote down").click()  # and a vote down on one of the new takes
    page.wait_for_function("document.getElementById('taste').textContent.startsWith('2 votes')", timeout=30_000)
    assert votes(service, listener) == 2

    # the page down to the catalog (reasoning, takes, nudges, forget me), as docs/screenshot.png shows it
    bottom = page.evaluate("document.querySelector('.privacy').getBoundingClientRect().bottom + window.scrollY")
    shot = Path(os.environ.get("BAYES_BEATS_SCREENSHOT", tmp_path / "page.png"))
    page.screenshot(
        path=str(shot), full_page=True, clip={"x": 0, "y": 0, "width": PHONE["width"], "height": bottom + 12}
    )
    assert shot.stat().st_size > 10_000

    # forget me: the old id has no votes left, and the page has a new one
    page.click("#forget")
    page.wait_for_function("document.getElementById('forgotten').textContent.length > 0", timeout=30_000)
    assert page.inner_text("#error") == ""
    fresh = page.evaluate("localStorage.getItem('bayes-beats-listener')")
    assert fresh != listener and re.fullmatch(LISTENER_PATTERN, fresh)
    assert votes(service, listener) == 0
    assert page.inner_text("#taste") == ""
    assert errors == []
