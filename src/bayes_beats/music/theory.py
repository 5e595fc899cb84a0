"""Pitch classes, scales and key names: the music theory the corpus, the sketch and the API share."""

from __future__ import annotations

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
