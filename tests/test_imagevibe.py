"""Image → vibe, the shipped catalog, and the request guard (API key, body cap) in-process."""

from __future__ import annotations

import asyncio
import io
import re

import httpx
import numpy as np
import pytest
from conftest import REPO
from PIL import Image
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from bayes_beats.api.catalog import load_catalog
from bayes_beats.api.guard import GuardMiddleware
from bayes_beats.api.imagevibe import ImageError, describe, load_image, vibe_from_bytes

CATALOG = REPO / "serving" / "catalog"


def encoded(image: Image.Image, fmt: str = "JPEG") -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


def noise(rgb_mean, spread, seed=0) -> Image.Image:
    rng = np.random.default_rng(seed)
    pixels = np.clip(rng.normal(rgb_mean, spread, (96, 128, 3)), 0, 255).astype(np.uint8)
    return Image.fromarray(pixels)


def test_bright_warm_pictures_feel_happier_than_dark_grey_ones():
    sunny = describe(Image.new("RGB", (120, 90), (250, 200, 90)))
    gloomy = describe(Image.new("RGB", (120, 90), (40, 45, 55)))
    assert sunny.valence > gloomy.valence + 0.3
    assert "bright" in sunny.cue_words and "dim" in gloomy.cue_words
    assert "warm" in sunny.cue_words


def test_busy_saturated_pictures_feel_more_aroused_than_flat_pale_ones():
    busy = describe(noise((200, 40, 160), 90))
    flat = describe(noise((180, 180, 190), 3))
    assert busy.arousal > flat.arousal + 0.3 and "busy" in busy.cue_words
    assert busy.caption != flat.caption


def test_grey_pictures_have_no_warmth_either_way():
    assert describe(Image.new("RGB", (64, 64), (128, 128, 128))).cues["warmth"] == 0.5


def test_catalog_photos_order_by_mood_as_a_person_would():
    valence = {p.stem: vibe_from_bytes(p.read_bytes()).valence for p in CATALOG.glob("*.jpg")}
    sunny = ("green-hills-blue-sky", "seaside-dune-grass", "dandelion-meadow")
    gloomy = ("misty-lake-night", "storm-over-road", "foggy-pier")
    assert min(valence[s] for s in sunny) > max(valence[g] for g in gloomy)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "empty upload"),
        (b"hello, not an image", "not an image"),
        (encoded(noise((120, 120, 120), 60))[:2000], "truncated or corrupt"),
        (encoded(Image.new("RGB", (8, 8)), "GIF"), "unsupported image format GIF"),
        (encoded(Image.new("1", (9000, 5000)), "PNG"), "45 megapixels"),
        (b"\xff\xd8" + b"0" * (11 * 1024 * 1024), "limit is 10 MB"),
    ],
    ids=["empty", "text", "truncated", "gif", "too-many-pixels", "too-big"],
)
def test_unusable_images_get_a_clear_error(data, message):
    with pytest.raises(ImageError, match=message):
        load_image(data)


def test_webp_and_png_are_accepted_and_big_images_are_downscaled():
    for fmt in ("PNG", "WEBP"):
        assert load_image(encoded(Image.new("RGB", (2000, 1000), (10, 200, 30)), fmt)).size == (512, 256)


def test_the_shipped_catalog_is_captioned_and_attributed():
    catalog = load_catalog(CATALOG)
    assert len(catalog) >= 12
    attribution = (CATALOG / "ATTRIBUTION.md").read_text()
    for entry in catalog.entries.values():
        assert len(entry.caption.split()) >= 15, entry.id
        assert entry.id + ".jpg" in attribution, entry.id
        assert Image.open(io.BytesIO(entry.image)).size[0] <= 768
    assert catalog.random(seed=3).id == catalog.random(seed=3).id


def test_a_catalog_can_be_an_hf_dataset_with_image_and_caption_columns(tmp_path):
    import datasets

    rows = {"image": [Image.new("RGB", (32, 24), (i * 60, 90, 200)) for i in range(3)], "caption": ["a", "b", "c"]}
    datasets.Dataset.from_dict(rows).save_to_disk(str(tmp_path / "hf"))
    catalog = load_catalog(tmp_path / "hf")
    assert len(catalog) == 3 and catalog.get("img-00001").caption == "b"
    assert catalog.get("../../etc/passwd") is None


def test_ids_never_become_paths(tmp_path):
    (tmp_path / "ok-photo.jpg").write_bytes(encoded(Image.new("RGB", (8, 8))))
    (tmp_path / "ok-photo.txt").write_text("a photo")
    (tmp_path / "no-caption.jpg").write_bytes(encoded(Image.new("RGB", (8, 8))))
    catalog = load_catalog(tmp_path)
    assert list(catalog.entries) == ["ok-photo"]
    assert all(re.fullmatch(r"[a-z0-9_-]+", i) for i in catalog.entries)


def guarded(monkeypatch, key: str | None) -> httpx.AsyncClient:
    if key:
        monkeypatch.setenv("BAYES_BEATS_API_KEY", key)
    else:
        monkeypatch.delenv("BAYES_BEATS_API_KEY", raising=False)

    async def echo(request):
        return PlainTextResponse(str(len(await request.body())))

    app = Starlette(routes=[Route("/generate", echo, methods=["POST"]), Route("/readyz", echo)])
    transport = httpx.ASGITransport(app=GuardMiddleware(app, max_body_bytes=1000))
    return httpx.AsyncClient(transport=transport, base_url="http://test")


def test_the_api_key_protects_the_api_but_not_health(monkeypatch):
    async def go():
        async with guarded(monkeypatch, "s3cret") as client:
            assert (await client.post("/generate", content=b"x")).status_code == 401
            assert (await client.post("/generate", content=b"x", headers={"X-API-Key": "nope"})).status_code == 401
            assert (await client.post("/generate", content=b"xy", headers={"X-API-Key": "s3cret"})).text == "2"
            bearer = {"Authorization": "Bearer s3cret"}
            assert (await client.post("/generate", content=b"x", headers=bearer)).status_code == 200
            assert (await client.get("/readyz")).status_code == 200

    asyncio.run(go())


def test_bodies_are_capped_even_when_chunked(monkeypatch):
    async def chunks():
        for _ in range(20):
            yield b"0" * 100

    async def go():
        async with guarded(monkeypatch, None) as client:
            assert (await client.post("/generate", content=b"0" * 999)).text == "999"
            too_big = await client.post("/generate", content=b"0" * 1001)
            assert too_big.status_code == 413 and "over" in too_big.json()["error"]
            assert (await client.post("/generate", content=chunks())).status_code == 413
            bad = await client.post("/generate", content=b"--x\r\n", headers={"content-type": "multipart/form-data"})
            assert bad.status_code == 400 and "boundary" in bad.json()["error"]

    asyncio.run(go())
