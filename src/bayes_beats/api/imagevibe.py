"""Image → vibe: colour and scene statistics → valence, arousal and a caption a music model understands.

Grounded in Valdez & Mehrabian (1994) on standardised brightness B and saturation S:
pleasure = 0.69 B + 0.22 S, arousal = −0.31 B + 0.60 S; contrast and edge density add arousal (busy,
high-contrast scenes feel more energetic), warm hues add a little pleasure. The caption names the nearest
MTG-Jamendo mood tags and the same circumplex words the training captions use, so the fine-tuned model
has seen its vocabulary."""

from __future__ import annotations

import asyncio
import io
import math
import os
import weakref
from dataclasses import asdict, dataclass

import anyio
import anyio.to_thread
import numpy as np
from PIL import Image, ImageFilter, UnidentifiedImageError

from bayes_beats.music.moods import MOOD_VA, VIBE_WORDS, tempo_word

MAX_BYTES = 10 * 1024 * 1024
# JPEG decodes at up to 1/8 scale (draft), so a 40-megapixel photo costs ~1 MB of pixels; PNG and WebP decode at
# full size (3-4 bytes a pixel, plus the RGB copy), so they get a lower cap: 16 MP, e.g. 4900 × 3265
MAX_PIXELS = 40_000_000
MAX_FULL_DECODE_PIXELS = 16_000_000
DECODE_SLOTS = 2  # concurrent decodes per process (vibe_in_thread): bounds the memory a burst of uploads takes
FORMATS = {"JPEG", "PNG", "WEBP"}
# tags that describe a feeling (not a use like "corporate" or "trailer"): what a picture can convey
FEELING_TAGS = [
    "calm",
    "relaxing",
    "dream",
    "meditative",
    "soft",
    "mellow",
    "happy",
    "uplifting",
    "energetic",
    "upbeat",
    "hopeful",
    "romantic",
    "melancholic",
    "sad",
    "dark",
    "dramatic",
    "epic",
    "powerful",
    "emotional",
    "deep",
    "nature",
    "space",
    "inspiring",
    "positive",
    "fun",
]
# typical values over natural photographs, for standardising (B and S are means over pixels, in [0, 1])
REFERENCE = {"brightness": (0.45, 0.18), "saturation": (0.32, 0.16), "contrast": (0.22, 0.07), "edges": (0.12, 0.07)}


class ImageError(ValueError):
    """An upload that is not a usable image; the message is safe to show to the client."""


@dataclass(frozen=True)
class Vibe:
    caption: str
    valence: float
    arousal: float
    moods: list[str]
    cues: dict[str, float]
    cue_words: list[str]

    def to_dict(self) -> dict:
        return asdict(self)


def load_image(data: bytes) -> Image.Image:
    """Bytes → RGB image, at most 512 px on the long side; ImageError for anything unusable (never another error:
    the bytes are a stranger's, and Pillow raises ValueError, SyntaxError, struct.error … on crafted files)."""
    if not data:
        raise ImageError("empty upload: send a JPEG, PNG or WebP image")
    if len(data) > MAX_BYTES:
        raise ImageError(f"image is {len(data) / 1e6:.1f} MB; the limit is {MAX_BYTES // (1024 * 1024)} MB")
    try:
        image: Image.Image = Image.open(io.BytesIO(data))  # lazy: reads the header (and PNG text chunks) only
    except Image.DecompressionBombError as err:
        raise ImageError(f"image has too many pixels (limit {MAX_PIXELS // 1_000_000} megapixels)") from err
    except UnidentifiedImageError as err:
        raise ImageError("not an image: send a JPEG, PNG or WebP file") from err
    except Exception as err:  # e.g. a PNG text chunk that inflates past Pillow's limit: ValueError
        raise ImageError(f"not a readable image: {str(err)[:200]}") from err
    if image.format not in FORMATS:
        raise ImageError(f"unsupported image format {image.format}: send JPEG, PNG or WebP")
    width, height = image.size
    limit = MAX_PIXELS if image.format == "JPEG" else MAX_FULL_DECODE_PIXELS
    if width * height > limit:
        raise ImageError(
            f"image has {width * height / 1e6:.0f} megapixels; the limit is {limit // 1_000_000} for {image.format}"
        )
    try:
        image.draft("RGB", (512, 512))  # JPEG decodes at a reduced scale: fast for big photos
        image = image.convert("RGB")
        image.thumbnail((512, 512))
    except Exception as err:  # OSError, SyntaxError, ValueError, DecompressionBombError, struct.error …
        raise ImageError(f"image is truncated or corrupt: {str(err)[:200]}") from err
    return image


def cues(image: Image.Image) -> dict[str, float]:
    """Scene statistics on a 256-px copy: brightness, saturation, hue, warmth, contrast, edge density."""
    small = image.copy()
    small.thumbnail((256, 256))
    hsv = np.asarray(small.convert("HSV"), dtype=np.float32) / 255.0
    grey = small.convert("L")
    luma = np.asarray(grey, dtype=np.float32) / 255.0
    hue, sat, val = hsv[..., 0], hsv[..., 1], hsv[..., 2]
    weight = sat * val + 1e-6  # grey pixels carry no hue
    angle = 2 * math.pi * hue
    mean_hue = math.atan2(float((np.sin(angle) * weight).sum()), float((np.cos(angle) * weight).sum()))
    hue_deg = (math.degrees(mean_hue) + 360) % 360
    # warm = reds, oranges, yellows (hue < 70° or > 330°) among the coloured pixels
    deg = hue * 360
    coloured = weight.sum() > 0.02 * weight.size  # a grey picture has no warmth either way
    warm = float((weight * ((deg < 70) | (deg > 330))).sum() / weight.sum()) if coloured else 0.5
    edges = np.asarray(grey.filter(ImageFilter.FIND_EDGES), dtype=np.float32) / 255.0
    interior = edges[1:-1, 1:-1]  # the filter's border is meaningless; a 1- or 2-pixel-high image has none
    return {
        "brightness": round(float(val.mean()), 4),
        "saturation": round(float(sat.mean()), 4),
        "hue_deg": round(hue_deg, 1),
        "warmth": round(warm, 4),
        "contrast": round(float(luma.std()), 4),
        "edges": round(float((interior > 0.15).mean()), 4) if interior.size else 0.0,
    }


def _z(name: str, value: float) -> float:
    mean, std = REFERENCE[name]
    return (value - mean) / std


def valence_arousal(c: dict[str, float]) -> tuple[float, float]:
    b, s = _z("brightness", c["brightness"]), _z("saturation", c["saturation"])
    pleasure = 0.69 * b + 0.22 * s + 0.6 * (c["warmth"] - 0.5)
    arousal = -0.31 * b + 0.60 * s + 0.25 * _z("contrast", c["contrast"]) + 0.35 * _z("edges", c["edges"])
    return round(math.tanh(pleasure / 1.5), 4), round(math.tanh(arousal / 1.5), 4)


def cue_words(c: dict[str, float]) -> list[str]:
    words = [
        "bright" if c["brightness"] > 0.55 else ("dim" if c["brightness"] < 0.35 else "softly lit"),
        "vivid" if c["saturation"] > 0.42 else ("muted" if c["saturation"] < 0.2 else "gently coloured"),
        "warm" if c["warmth"] > 0.55 else ("cool" if c["warmth"] < 0.35 else "neutral-toned"),
        "busy" if c["edges"] > 0.18 else ("spacious" if c["edges"] < 0.07 else "textured"),
    ]
    if c["contrast"] > 0.28:
        words.append("high-contrast")
    return words


def nearest_moods(valence: float, arousal: float, k: int = 3) -> list[str]:
    return sorted(FEELING_TAGS, key=lambda t: (MOOD_VA[t][0] - valence) ** 2 + (MOOD_VA[t][1] - arousal) ** 2)[:k]


def _level(x: float) -> str:
    return "high" if x > 0.3 else ("low" if x < -0.3 else "mid")


def describe(image: Image.Image) -> Vibe:
    c = cues(image)
    if not all(math.isfinite(v) for v in c.values()):  # never a caption built from NaN
        raise ImageError("image statistics are undefined for this image")
    valence, arousal = valence_arousal(c)
    moods = nearest_moods(valence, arousal)
    vibe_word = VIBE_WORDS[(_level(valence), _level(arousal))][0]
    words = cue_words(c)
    bpm_hint = 95 + 45 * arousal  # the tempo word only; the model's planner picks the actual bpm
    caption = f"{', '.join(moods)}, {tempo_word(bpm_hint)} {vibe_word} lo-fi; a {', '.join(words)} scene"
    return Vibe(caption, valence, arousal, moods, c, words)


def vibe_from_bytes(data: bytes) -> Vibe:
    return describe(load_image(data))


_decode_slots: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, anyio.CapacityLimiter] = weakref.WeakKeyDictionary()


async def vibe_of_file(path: str | os.PathLike[str]) -> Vibe:
    """The vibe of an uploaded file, read and decoded in a worker thread (Pillow releases the GIL while it
    decodes): the event loop keeps answering probes and other requests. At most DECODE_SLOTS decodes run at
    once per event loop; the others wait without holding a thread."""
    loop = asyncio.get_running_loop()
    if (slots := _decode_slots.get(loop)) is None:
        slots = _decode_slots[loop] = anyio.CapacityLimiter(DECODE_SLOTS)
    return await anyio.to_thread.run_sync(_vibe_of_file, path, limiter=slots)


def _vibe_of_file(path: str | os.PathLike[str]) -> Vibe:
    with open(path, "rb") as handle:
        data = handle.read(MAX_BYTES + 1)  # one byte over: load_image says it is too big
    return vibe_from_bytes(data)
