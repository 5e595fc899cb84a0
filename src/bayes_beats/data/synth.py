"""Procedural mood music: one seeded track = a key, a mode, a tempo, a chord progression, bass, melody,
drums and a lo-fi finish, all steered by the track's mood tags.

Mood → music follows the cues of Eerola, Friberg & Bresin (2013), acting additively: valence sets mode
(strongest cue) and register; arousal sets tempo, rhythmic density, dynamics and brightness. Every
mapping carries noise, so moods overlap as they do in real music.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.signal import butter, sosfilt

from bayes_beats.music.moods import MOOD_VA, OFFICIAL_TAGS
from bayes_beats.music.theory import HARMONIC_MINOR, MAJOR, NATURAL_MINOR, PITCH_CLASSES, midi_hz

# chord roots as scale degrees, one chord per `chord_beats`; all start and end near the tonic
PROGRESSIONS = ((0, 3, 4, 0), (0, 5, 3, 4), (0, 4, 5, 3), (0, 3, 0, 4))
CINEMATIC = {"epic", "trailer", "film", "movie", "drama", "dramatic", "documentary", "adventure"}
LEADS = ("piano", "electric piano", "bells", "flute", "plucked synth")


@dataclass(frozen=True)
class TrackPlan:
    """What a track is meant to be: the ground truth written beside the TSV."""

    tags: tuple[str, ...]
    valence: float
    arousal: float
    bpm: float
    tonic: int
    mode: str
    chord_beats: int
    progression: tuple[int, ...]
    lead: str
    pad: str
    style: str
    melody_notes_per_beat: float
    melody_octave: int
    cutoff_hz: float
    level_db: float
    swing: float

    @property
    def keyscale(self) -> str:
        return f"{PITCH_CLASSES[self.tonic]} {self.mode}"


def plan_track(rng: np.random.Generator) -> TrackPlan:
    primary = str(rng.choice(OFFICIAL_TAGS))
    pv, pa = MOOD_VA[primary]
    # companions near the primary tag on the circumplex, as co-occurring tags are in real data
    others = [t for t in OFFICIAL_TAGS if t != primary]
    dist = np.array([np.hypot(MOOD_VA[t][0] - pv, MOOD_VA[t][1] - pa) for t in others])
    weights = np.exp(-((dist / 0.35) ** 2))
    n_extra = int(rng.choice([0, 1, 2], p=[0.35, 0.45, 0.2]))
    extra = rng.choice(others, size=n_extra, replace=False, p=weights / weights.sum())
    tags = (primary, *map(str, extra))
    valence = float(np.clip(np.mean([MOOD_VA[t][0] for t in tags]) + rng.normal(0, 0.15), -1, 1))
    arousal = float(np.clip(np.mean([MOOD_VA[t][1] for t in tags]) + rng.normal(0, 0.15), -1, 1))

    mode = "major" if rng.random() < 1 / (1 + np.exp(-4.0 * valence)) else "minor"
    bpm = float(np.clip(64 + 34 * (arousal + 1) + rng.normal(0, 7), 58, 150))
    density = float(rng.choice([0.5, 1, 2, 4], p=_density_probs(arousal)))
    if set(tags) & CINEMATIC:
        style, pad = "cinematic", "strings"
    elif arousal < -0.35:
        style, pad = "ambient", "warm pad"
    elif arousal < 0.35:
        style, pad = (
            str(rng.choice(["lo-fi hip hop", "chillhop"])),
            str(rng.choice(["electric piano", "warm pad"])),
        )
    else:
        style, pad = str(rng.choice(["synth-pop", "upbeat electronic"])), "warm pad"
    lead_weights = np.array(
        [
            1.0,
            1.0 + (arousal < 0.3),
            0.5 + 1.5 * (valence > 0.3),
            0.5 + (arousal < 0),
            0.5 + 1.5 * (arousal > 0.3),
        ]
    )
    return TrackPlan(
        tags=tags,
        valence=valence,
        arousal=arousal,
        bpm=round(bpm, 2),
        tonic=int(rng.integers(12)),
        mode=mode,
        chord_beats=int(rng.choice([2, 4])),
        progression=PROGRESSIONS[int(rng.integers(len(PROGRESSIONS)))],
        lead=str(rng.choice(LEADS, p=lead_weights / lead_weights.sum())),
        pad=pad,
        style=style,
        melody_notes_per_beat=density,
        melody_octave=5 if valence + rng.normal(0, 0.3) > 0.2 else 4,
        cutoff_hz=float(1600 * 2 ** (1.5 * (arousal + 1) / 2 + 0.5 * valence + rng.normal(0, 0.2))),
        level_db=float(np.clip(-7 + 6 * arousal + rng.normal(0, 1.5), -14, 0)),
        swing=float(rng.uniform(0.0, 0.12)) if "lo-fi" in style or style == "chillhop" else 0.0,
    )


def _density_probs(arousal: float) -> list[float]:
    centre = 1.5 + 1.5 * arousal  # index into (0.5, 1, 2, 4)
    w = np.exp(-((np.arange(4) - centre) ** 2) / 0.8)
    return list(w / w.sum())


class Voice:
    """Note waveforms for one track, cached: a progression repeats, so most notes are rendered once."""

    def __init__(self, sample_rate: int, rng: np.random.Generator) -> None:
        self.sr = sample_rate
        self.rng = rng
        self.cache: dict[tuple[str, int, int], np.ndarray] = {}

    def note(self, instrument: str, midi: int, n: int) -> np.ndarray:
        key = (instrument, midi, n)
        if key not in self.cache:
            self.cache[key] = self._render(instrument, midi_hz(midi), n)
        return self.cache[key]

    def _render(self, instrument: str, f: float, n: int) -> np.ndarray:
        t = np.arange(n) / self.sr
        tau = 2 * np.pi * t
        nyquist = self.sr / 2
        if instrument == "piano":
            k = np.arange(1, 9)[:, None]
            fk = f * k * np.sqrt(1 + 4e-4 * k**2)  # slightly stretched partials, as in real strings
            out = ((1 / k**1.3) * np.sin(tau * fk) * np.exp(-t * (2.0 + 1.2 * k)) * (fk < nyquist)).sum(0)
        elif instrument == "electric piano":
            out = np.sin(tau * f + 1.5 * np.exp(-6 * t) * np.sin(tau * f)) * np.exp(-2.5 * t)
        elif instrument == "bells":
            out = np.sin(tau * f + 2.0 * np.exp(-3 * t) * np.sin(tau * 3.5 * f)) * np.exp(-1.8 * t)
        elif instrument == "flute":
            vib = 1 + 0.003 * np.sin(2 * np.pi * 5 * t)
            out = np.sin(tau * f * vib) + 0.2 * np.sin(2 * tau * f * vib) + 0.05 * np.sin(3 * tau * f)
            out *= np.minimum(1, t / 0.06)
        elif instrument == "plucked synth":
            k = np.arange(1, 10)[:, None]
            out = ((1 / k) * np.sin(tau * f * k) * np.exp(-t * (4 + 3 * k)) * (f * k < nyquist)).sum(0)
        elif instrument in ("warm pad", "strings"):
            k = np.arange(1, 11)[:, None]
            detunes = (0.996, 1.0, 1.004) if instrument == "warm pad" else (0.998, 1.002)
            vib = 1 + (0.004 * np.sin(2 * np.pi * 5.5 * t) if instrument == "strings" else 0)
            out = sum(((1 / k) * np.sin(tau * f * d * k * vib) * (f * d * k < nyquist)).sum(0) for d in detunes)
            out = out * np.minimum(1, t / (0.25 if instrument == "strings" else 0.15)) / len(detunes)
        elif instrument == "bass":
            out = (np.sin(tau * f) + 0.4 * np.sin(2 * tau * f) + 0.1 * np.sin(3 * tau * f)) * np.exp(-2.5 * t)
        elif instrument == "kick":
            phase = 2 * np.pi * np.cumsum(45 + 90 * np.exp(-30 * t)) / self.sr
            out = np.sin(phase) * np.exp(-9 * t)
        elif instrument == "snare":
            noise = np.diff(self.rng.standard_normal(n + 1))
            out = 0.5 * noise * np.exp(-20 * t) + 0.6 * np.sin(tau * 190) * np.exp(-25 * t)
        elif instrument == "hat":
            out = 0.35 * np.diff(np.diff(self.rng.standard_normal(n + 2))) * np.exp(-60 * t)
        else:
            raise ValueError(f"unknown instrument {instrument!r}")
        release = min(n, int(0.03 * self.sr))  # fade the tail so notes never click
        out[n - release :] *= np.linspace(1, 0, release)
        return out.astype(np.float32)


def render_track(plan: TrackPlan, seconds: float, sample_rate: int, rng: np.random.Generator) -> np.ndarray:
    """Render the plan to mono float32 audio of `seconds`, peak at the plan's level."""
    sr = sample_rate
    beat = 60.0 / plan.bpm
    n_beats = int(np.ceil(seconds / beat)) + 1
    total = int(seconds * sr)
    mix = np.zeros(total + 4 * sr, dtype=np.float32)
    voice = Voice(sr, rng)

    def place(instrument: str, midi: int, start_beat: float, beats: float, velocity: float) -> None:
        frac = start_beat % 1
        swung = start_beat + (plan.swing if abs(frac - 0.5) < 1e-6 else 0.0)
        start = int(swung * beat * sr)
        if start >= total:
            return
        wave = voice.note(instrument, midi, max(int(beats * beat * sr), 64))
        end = min(start + len(wave), len(mix))
        mix[start:end] += velocity * wave[: end - start]

    scale = MAJOR if plan.mode == "major" else NATURAL_MINOR
    arousal01 = (plan.arousal + 1) / 2
    for chord_index, chord_start in enumerate(range(0, n_beats, plan.chord_beats)):
        degree = plan.progression[chord_index % len(plan.progression)]
        chord_scale = HARMONIC_MINOR if (plan.mode == "minor" and degree == 4) else scale
        chord = [chord_scale[(degree + i) % 7] + 12 * ((degree + i) // 7) for i in (0, 2, 4)]
        root = 48 + plan.tonic
        for pitch in chord:  # chord in the middle register: it carries the mode for the listener
            place(plan.pad, root + pitch, chord_start, plan.chord_beats, 0.16)
        bass_step = 2 if arousal01 < 0.35 else (1 if arousal01 < 0.7 else 0.5)
        for b in np.arange(chord_start, chord_start + plan.chord_beats, bass_step):
            place("bass", 36 + plan.tonic + chord[0] % 12, float(b), bass_step, 0.45)
        _melody(place, plan, rng, chord_start, chord, chord_scale)

    hat_step = 1.0 if arousal01 < 0.3 else (0.5 if arousal01 < 0.75 else 0.25)
    drum_level = 0.35 + 0.45 * arousal01
    for b in range(n_beats):
        in_bar = b % 4
        if in_bar in (0, 2) or (arousal01 > 0.75 and in_bar in (1, 3)):
            place("kick", 36, b, 0.4, 0.9 * drum_level)
        if in_bar in (1, 3):
            place("snare", 38, b, 0.3, 0.5 * drum_level)
        for h in np.arange(b, b + 1, hat_step):
            place("hat", 42, float(h), 0.1, (0.35 if h % 1 == 0 else 0.22) * drum_level)

    audio = mix[:total]
    audio = sosfilt(butter(2, min(plan.cutoff_hz, 0.45 * sr), fs=sr, output="sos"), audio)
    if plan.style in ("lo-fi hip hop", "chillhop"):  # vinyl: sparse crackle over a faint hiss
        crackle = (rng.random(total) < 8 / sr) * rng.uniform(-0.25, 0.25, total)
        audio = audio + crackle + 0.003 * rng.standard_normal(total)
    audio = np.tanh(1.5 * audio / (np.abs(audio).max() + 1e-9)) / np.tanh(1.5)  # gentle tape saturation
    return (audio * 10 ** (plan.level_db / 20)).astype(np.float32)


def _melody(place, plan: TrackPlan, rng: np.random.Generator, chord_start: int, chord: list[int], scale) -> None:
    """A random walk on the scale that lands on chord tones on the beat."""
    step = 1.0 / plan.melody_notes_per_beat
    base = 12 * plan.melody_octave + plan.tonic
    degree = int(rng.integers(7))
    for b in np.arange(chord_start, chord_start + plan.chord_beats, step):
        if rng.random() < 0.2:  # a rest
            continue
        if float(b) % 1 == 0:
            pitch = int(rng.choice(chord))
        else:
            degree = int(np.clip(degree + rng.choice([-2, -1, 1, 2]), 0, 9))
            pitch = scale[degree % 7] + 12 * (degree // 7)
        velocity = 0.28 * (1.15 if float(b) % 1 == 0 else 0.9) * rng.uniform(0.85, 1.1)
        place(plan.lead, base + pitch, float(b), step * 1.2, velocity)
