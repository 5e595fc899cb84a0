"""Pitch classes, scales and key names: the music theory the corpus, the sketch and the API share; and what
a prompt's text holds (its words, the tempo and key it names)."""

from __future__ import annotations

import re

PITCH_CLASSES = ("C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B")

MAJOR = (0, 2, 4, 5, 7, 9, 11)

NATURAL_MINOR = (0, 2, 3, 5, 7, 8, 10)

HARMONIC_MINOR = (0, 2, 3, 5, 7, 8, 11)  # raised 7th: the V chord of a minor key is major


def midi_hz(midi: float) -> float:
    return float(440.0 * 2 ** ((midi - 69) / 12))


def parse_keyscale(keyscale: str) -> tuple[int, str]:
    """ "A minor" → (9, "minor"); a clear ValueError otherwise."""
    parts = keyscale.strip().split()
    if len(parts) != 2 or parts[0] not in PITCH_CLASSES or parts[1] not in ("major", "minor"):
        raise ValueError(f"keyscale must look like 'C major' or 'F# minor', got {keyscale!r}")
    return PITCH_CLASSES.index(parts[0]), parts[1]


KEYSCALE_PATTERN = r"^(C|C#|D|D#|E|F|F#|G|G#|A|A#|B) (major|minor)$"

FLATS = {"Db": "C#", "Eb": "D#", "Gb": "F#", "Ab": "G#", "Bb": "A#"}
_BPM_IN_TEXT = re.compile(r"\b(\d{2,3}(?:\.\d+)?)\s*bpm\b", re.IGNORECASE)
_KEY_IN_TEXT = re.compile(r"\b([A-G](?:#|b)?)\s?(major|minor)\b")
_WORD = re.compile(r"[a-z][a-z'-]*")


def prompt_words(prompt: str) -> list[str]:
    """The words of a prompt, lower-cased: the request log's word count and the training vocabulary."""
    return _WORD.findall(prompt.lower())


def metas_in_text(text: str) -> tuple[float | None, str | None]:
    """Tempo and key a text names outright ("... in A minor at 120 BPM") → (bpm, keyscale), None if not."""
    bpm = _BPM_IN_TEXT.search(text)
    key = _KEY_IN_TEXT.search(text)
    tonic = FLATS.get(key.group(1), key.group(1)) if key else None
    keyscale = f"{tonic} {key.group(2)}" if key and tonic in PITCH_CLASSES else None
    return (float(bpm.group(1)) if bpm else None), keyscale
