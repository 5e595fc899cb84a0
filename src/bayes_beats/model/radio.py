"""The radio's music: an endless piece, segment by segment, each one continuing the last.

A segment is whole bars of its tempo (about `segment_s`; the first the fewest bars that hold the next tail and
the audio kept back, 3-5 s, the next about `first_segment_s` · 2^index until `segment_s`, so first audio comes
soon, the second window holds a full tail and a stream gets ahead fast), and a
phrase's last segment ends with its progression. It is rendered in a window that starts with
the previous segment's tail (`tail_s` of its latents, held by the sampler: `VibePipeline.__call__`'s
`held_latents`), its sketch's downbeat at the seam, the progression going on from the beat it had
reached, so the beat grid, the chords, key and timbre run on. Its audio is
decoded with the tail and joined to what was played inside the tail, where both decodes render the same
latents (an equal-power crossfade of `crossfade_s`, `hold_back_s` before the seam), at a gain that glides
from the one played (`gain_curve`) instead of jumping. The plan moves only every `phrase_segments` segments: a tempo step toward a fresh draw
of the (listener-tilted) plan, a modulation to the relative key when the draw's mode turns, an energy step.

Stateless between calls: a `Cursor` (JSON-able: plain numbers, base64 arrays) carries all a stream is, so
any renderer worker continues any stream and a dropped client resumes where it was."""

from __future__ import annotations

import base64
import math
import zlib
from dataclasses import asdict, dataclass

import numpy as np
import torch

from bayes_beats.core.config import StreamParams
from bayes_beats.model.generate import Generator, take_seeds
from bayes_beats.model.pipeline import Plan
from bayes_beats.model.sketch import transpose
from bayes_beats.music.theory import PITCH_CLASSES, parse_keyscale

PEAK = 10.0 ** (-1.0 / 20.0)  # -1 dBFS, as the pipeline normalises a clip
BEATS_PER_BAR = 4  # the metas' time signature (text.format_prompt)


def gain_curve(audio: np.ndarray, start: float, target: float, hop: int, slew_db_per_hop: float) -> np.ndarray:
    """Per-sample gain for `audio`: from `start` (the gain of what was played) toward `target`, changing at most
    `slew_db_per_hop` dB a frame of `hop` samples, never putting a sample over PEAK: a look-ahead limiter at frame
    resolution, so a new window's louder peak lowers the level in time instead of at the join."""
    n = -(-len(audio) // hop)
    peaks = np.pad(np.abs(audio), (0, n * hop - len(audio))).reshape(n, hop).max(axis=1)
    # a sample in frame i is interpolated between the gains of frames i-1..i+1: each must keep frame i under PEAK
    peaks = np.maximum.reduce([peaks, np.r_[peaks[1:], 0.0], np.r_[0.0, peaks[:-1]]])
    ceiling = 20.0 * np.log10(PEAK / np.maximum(peaks, 1e-6))
    at = np.arange(n) * slew_db_per_hop
    ceiling = np.minimum.accumulate((ceiling + at)[::-1])[::-1] - at  # fall in time for every peak ahead
    # toward target over the window, no faster than the slew: a short window ends on its way there
    wish = 20.0 * np.log10(start) + np.clip(np.linspace(0.0, 20.0 * np.log10(target / start), n), -at, at)
    level = np.minimum.accumulate(np.minimum(wish, ceiling) - at) + at  # and rise after a peak no faster
    centres = (np.arange(n) + 0.5) * hop
    return (10.0 ** (np.interp(np.arange(len(audio)), centres, level) / 20.0)).astype(np.float32)


def pack(array: np.ndarray | None) -> str | None:
    return None if array is None else base64.b64encode(np.ascontiguousarray(array, np.float32).tobytes()).decode()


def unpack(text: str | None, width: int = 1) -> np.ndarray | None:
    if text is None:
        return None
    flat = np.frombuffer(base64.b64decode(text), dtype=np.float32).copy()  # writable
    return flat.reshape(-1, width) if width > 1 else flat


@dataclass
class Cursor:
    """Where a stream is: what it asks for, the plan it plays, and what the next segment continues."""

    prompt: str
    seed: int
    temperature: float
    bpm_fixed: float | None = None  # the caller's metas: they replace every draw
    keyscale_fixed: str | None = None
    energy_fixed: float | None = None
    index: int = 0  # the next segment's
    played_samples: int = 0  # audio sent so far (the next segment starts here)
    window_start: int = 0  # the stream sample where the next segment's window (its tail first) starts
    bpm: float | None = None  # the phrase being played
    keyscale: str | None = None
    energy: float | None = None
    chords: list[list[float]] | None = None
    beat: int = 0  # the progression's beat at the next seam (0 at a phrase's start)
    # the grid's beat at the next seam falls this long after the seam's frame (within half a frame): a segment
    # is whole latent frames and its bars are not, so the remainder is carried and the grid never slips
    lead_s: float = 0.0
    tail: str | None = None  # the last `tail` latent frames [frames, channels] (pack)
    held: str | None = None  # the audio kept back: the start of the next crossfade (pack)
    gain: float | None = None
    channels: int = 0

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Segment:
    """One segment's audio (mono float32, the codec's rate) and what it plays."""

    index: int
    start_s: float  # where its audio starts in the stream
    audio: np.ndarray
    sample_rate: int
    bpm: float
    keyscale: str
    energy: float
    phrase_start: bool  # the plan may have changed here
    features: list[float] | None = None
    plan: dict | None = None
    cursor: Cursor | None = None  # what the next segment continues

    @property
    def duration_s(self) -> float:
        return len(self.audio) / self.sample_rate

    def metas(self) -> dict:
        return {"bpm": round(self.bpm, 1), "keyscale": self.keyscale, "energy": round(self.energy, 3)}

    def to_dict(self) -> dict:
        """JSON-able, the audio packed (what the renderer answers the API)."""
        fields = {k: v for k, v in asdict(self).items() if k not in ("audio", "cursor")}
        return fields | {"audio": pack(self.audio), "cursor": self.cursor.to_dict() if self.cursor else None}


@dataclass
class Job:
    """One cursor's next window: its metas, the tail it holds and how many frames it renders."""

    cursor: Cursor
    taste: list[float] | None
    metas: dict
    boundary: bool  # a phrase starts here
    beats: int  # new beats (whole bars; a phrase's last segment to the end of its progression)
    new: int  # new frames: the played audio of this segment, from the seam on
    next_beat_s: float  # the next seam's beat, from this seam (its frame is the one nearest it: `new`)
    tail: np.ndarray | None = None
    embedding: torch.Tensor | None = None  # the prompt's sentence embedding (pipe.embed), once per render

    @property
    def held(self) -> int:
        return 0 if self.tail is None else len(self.tail)


def relative(keyscale: str) -> str:
    """The relative key (same signature, other mode): C major ↔ A minor, the gentlest modulation."""
    tonic, mode = parse_keyscale(keyscale)
    if mode == "major":
        return f"{PITCH_CLASSES[(tonic + 9) % 12]} minor"
    return f"{PITCH_CLASSES[(tonic + 3) % 12]} major"


class Radio:
    """Renders the next segment of many streams, batched by window length (one pipeline call each)."""

    def __init__(self, generator: Generator, settings: StreamParams) -> None:
        self.generator, self.settings = generator, settings
        self.pipe = generator.pipe
        self.rate = self.pipe.latents_per_second
        self.sample_rate = generator.sample_rate
        self.hop = int(round(self.sample_rate / self.rate))
        self.tail_frames = max(1, round(settings.tail_s * self.rate))
        # frames rendered past the next seam and never played: a window's last frames are rendered as a clip's
        # ending (a fade, no lead-in to a next downbeat); the next segment holds a tail that ends at its seam
        self.overhang_frames = round(settings.overhang_s * self.rate)
        n_fft = getattr(self.pipe.vae.config, "n_fft", 2048)
        if settings.crossfade_s > settings.hold_back_s or (self.tail_frames - 1) * self.hop < (
            settings.hold_back_s * self.sample_rate + n_fft
        ):
            raise ValueError(
                "stream: crossfade_s must fit in hold_back_s, and tail_s must exceed hold_back_s by a window "
                f"({n_fft} samples): the crossfade sits inside the tail, away from both decodes' edges"
            )

    # -- the plan -------------------------------------------------------------------------------------
    def next_phrase(
        self, cursor: Cursor, taste: list[float] | None, embedding: torch.Tensor | None = None
    ) -> tuple[dict, bool]:
        """The metas of the cursor's next segment and whether a phrase starts there: the phrase's plan,
        or at a phrase boundary a step of it toward a fresh (tilted) draw."""
        boundary = cursor.index % self.settings.phrase_segments == 0 or cursor.bpm is None
        if not boundary:
            return {
                "bpm": cursor.bpm,
                "keyscale": cursor.keyscale,
                "energy": cursor.energy,
                "chords": cursor.chords,
            }, False
        seed = take_seeds([cursor.seed], 1)[0] + 7919 * cursor.index  # each phrase its own draw
        # the first phrase plays the plan's mode (the vibe's best guess); later ones a random draw of it
        first = cursor.bpm is None
        _, drawn = self.generator.plan(
            [cursor.prompt],
            [seed],
            cursor.temperature,
            1 if first else 2,
            cursor.bpm_fixed,
            cursor.keyscale_fixed,
            cursor.energy_fixed,
            taste,
            None if embedding is None else embedding[None],
        )
        draw = drawn[-1]
        bpm, key, energy = float(draw["bpm"]), draw["keyscale"], float(draw["energy"])
        if cursor.bpm is not None:  # a phrase after the first: move toward the draw, do not jump to it
            step = self.settings.max_tempo_step
            bpm = (
                bpm
                if cursor.bpm_fixed is not None
                else float(np.clip(bpm, cursor.bpm * (1 - step), cursor.bpm * (1 + step)))
            )
            if cursor.keyscale_fixed is None:
                same_mode = parse_keyscale(key)[1] == parse_keyscale(cursor.keyscale)[1]
                key = cursor.keyscale if same_mode else relative(cursor.keyscale)
            if cursor.energy_fixed is None:
                energy = cursor.energy + self.settings.energy_step * (energy - cursor.energy)
        tonic, mode = parse_keyscale(key)
        rng = np.random.default_rng([seed, zlib.crc32(cursor.prompt.encode()), 1])
        if self.pipe.planner is not None:
            chords = transpose(self.pipe.planner.progression(mode == "major", rng), tonic)
        else:
            from bayes_beats.model.sketch import DEFAULT_DEGREES, chords_of

            chords = chords_of(DEFAULT_DEGREES, tonic, mode)
        return {"bpm": bpm, "keyscale": key, "energy": float(energy), "chords": chords.tolist()}, True

    def new_beats(self, metas: dict, cursor: Cursor) -> int:
        """Whole bars, about first_segment_s · 2^index up to segment_s; at least the next segment's tail plus
        the audio kept back (every seam has its overlap); a phrase's last segment runs to the end of its
        progression, so the next phrase's new plan starts with its own first chord."""
        s, beat_s, cycle = self.settings, 60.0 / metas["bpm"], len(metas["chords"])
        target = s.target_s(cursor.index)
        least = math.ceil((s.tail_s + s.hold_back_s + 0.2) / beat_s / BEATS_PER_BAR) * BEATS_PER_BAR
        beats = max(least, round(target / beat_s / BEATS_PER_BAR) * BEATS_PER_BAR)
        if cursor.index >= s.phrase_segments or (cursor.index + 1) % s.phrase_segments == 0:
            # past the first phrase every seam is a progression's end (seams in mid-progression joined worse:
            # docs/design.md "The stream"); the first phrase ends with its progression
            cycles = max(round((cursor.beat + beats) / cycle), math.ceil((cursor.beat + least) / cycle))
            beats = cycles * cycle - cursor.beat
        return beats

    def job(self, cursor: Cursor, taste: list[float] | None, embedding: torch.Tensor | None = None) -> Job:
        metas, boundary = self.next_phrase(cursor, taste, embedding)
        beats = self.new_beats(metas, cursor)
        tail = unpack(cursor.tail, cursor.channels) if cursor.tail else None
        next_beat_s = cursor.lead_s + beats * 60.0 / metas["bpm"]
        new = round(next_beat_s * self.rate)  # the seam: the frame nearest the next beat
        return Job(cursor, taste, metas, boundary, beats, new, next_beat_s, tail, embedding)

    # -- rendering ------------------------------------------------------------------------------------
    def render_dicts(self, cursors: list[dict], tastes: list[list[float] | None]) -> list[dict]:
        """`render` for the renderer's API: cursors and segments as JSON-able dicts."""
        return [s.to_dict() for s in self.render([Cursor(**c) for c in cursors], tastes)]

    @torch.no_grad()
    def render(self, cursors: list[Cursor], tastes: list[list[float] | None]) -> list[Segment]:
        """The next segment of each cursor; cursors whose windows are as long go through the pipeline as one
        batch (their randomness is their own seed's: a segment does not depend on its batch)."""
        prompts = list(dict.fromkeys(c.prompt for c in cursors))
        # one sentence embedding a prompt, for the plan, the prompt head and the segment's features
        embeddings = dict(zip(prompts, self.pipe.embed(prompts), strict=True)) if self.pipe.planner is not None else {}
        jobs = [self.job(c, t, embeddings.get(c.prompt)) for c, t in zip(cursors, tastes, strict=True)]
        out: list[Segment | None] = [None] * len(jobs)
        groups: dict[int, list[int]] = {}
        for i, job in enumerate(jobs):
            groups.setdefault(job.held + job.new, []).append(i)
        for members in groups.values():
            for i, segment in zip(members, self.render_group([jobs[i] for i in members]), strict=True):
                out[i] = segment
        return [s for s in out if s is not None]

    def render_group(self, jobs: list[Job]) -> list[Segment]:
        """Windows of one length (held + new frames), one pipeline call, rendered `overhang_s` past the seam."""
        pipe, g = self.pipe, self.generator
        frames = jobs[0].held + jobs[0].new + self.overhang_frames
        channels = pipe.transformer.config.audio_acoustic_hidden_dim
        origins: list[float] = []
        before: list[float | None] = []
        plan = Plan([], [], [], [], None, origins, before)
        held_latents = torch.zeros(len(jobs), frames, channels)
        held_frames, generators, prompts = [], [], []
        for row, job in enumerate(jobs):
            cursor, metas = job.cursor, job.metas
            plan.bpm.append(float(metas["bpm"]))
            plan.keyscale.append(metas["keyscale"])
            plan.energy.append(float(metas["energy"]))
            plan.chords.append(torch.tensor(metas["chords"]))
            # a downbeat at the seam, the progression `beat` beats in (its first chord that long before)
            origins.append(job.held / self.rate + cursor.lead_s - cursor.beat * 60.0 / float(metas["bpm"]))
            # the held tail plays the last phrase's tempo: its sketch says so, a new tempo starts at the seam
            before.append(float(cursor.bpm) if job.tail is not None and cursor.bpm is not None else None)
            if job.tail is not None:
                held_latents[row, : job.held] = torch.as_tensor(job.tail)
            held_frames.append(job.held)
            seed = take_seeds([cursor.seed], 1)[0] + 104729 * cursor.index
            generators.append(torch.Generator(device="cpu").manual_seed(seed))
            prompts.append(cursor.prompt)
        if pipe.prompt_head is not None and pipe.planner is not None:
            rows = [j.embedding if j.embedding is not None else pipe.embed([j.cursor.prompt])[0] for j in jobs]
            embedding = torch.stack(rows)
            plan.z = pipe.prompt_head(embedding.to(pipe.prompt_head.dtype))[0].detach()
        latents = pipe(
            prompt=prompts,
            audio_duration=(frames - 0.5) / self.rate,  # the sampler takes ceil(duration · rate) frames
            num_inference_steps=g.params.num_inference_steps,
            shift=g.params.shift,
            generator=generators,
            plan=plan,
            guidance=g.guidance_for(plan.bpm),
            held_latents=held_latents,
            held_frames=held_frames,
            output_type="latent",
        ).audios.float()
        audio = pipe.vae.decode(latents.transpose(1, 2).to(pipe.vae.dtype)).sample.float()[:, 0].cpu().numpy()
        return [self._join(job, latents[row].cpu().numpy(), audio[row]) for row, job in enumerate(jobs)]

    def _join(self, job: Job, latents: np.ndarray, audio: np.ndarray) -> Segment:
        """The window's audio joined to what was played: crossfade inside the tail, a gain ramp, then the
        new end kept back for the next seam. Window sample s is stream sample window_start + s."""
        cursor, taste, metas, held = job.cursor, job.taste, job.metas, job.held
        s = self.settings
        sr, hop = self.sample_rate, self.hop
        fade, keep = int(s.crossfade_s * sr), int(s.hold_back_s * sr)
        tail_frames = self.tail_frames
        seam = held + job.new  # the next segment's seam: its new frames start here
        window_start = cursor.window_start
        begin = cursor.played_samples - window_start  # the first window sample not yet played
        end = seam * hop - keep  # kept back from here: the next segment's crossfade (its tail holds this audio)
        fresh = audio[begin : end + fade].astype(np.float32)
        peak = float(np.abs(audio[held * hop : seam * hop]).max()) or 1e-6
        target = PEAK / max(peak, 1e-6)
        start_gain = cursor.gain if cursor.gain is not None else target
        gains = gain_curve(fresh, start_gain, target, hop, s.gain_slew_db_s * hop / sr)
        fresh = fresh * gains
        previous = unpack(cursor.held)
        if previous is not None:  # equal-power crossfade over the kept-back audio
            n = min(len(previous), len(fresh))
            angle = np.linspace(0, np.pi / 2, n, dtype=np.float32)
            fresh[:n] = previous[:n] * np.cos(angle) + fresh[:n] * np.sin(angle)
        played, kept = fresh[: end - begin], fresh[end - begin :]
        # the next window starts tail_frames before the next seam; keep those latents and our place
        next_cursor = Cursor(
            **{
                **cursor.to_dict(),
                "index": cursor.index + 1,
                "played_samples": cursor.played_samples + len(played),
                "window_start": window_start + (seam - tail_frames) * hop,
                "bpm": metas["bpm"],
                "keyscale": metas["keyscale"],
                "energy": metas["energy"],
                "chords": metas["chords"],
                "beat": (cursor.beat + job.beats) % len(metas["chords"]),
                "lead_s": job.next_beat_s - job.new / self.rate,
                "tail": pack(latents[seam - tail_frames : seam]),
                "held": pack(kept),
                "gain": float(gains[end - begin]),  # where the next segment's audio starts: its gain goes on from here
                "channels": latents.shape[-1],
            }
        )
        major = parse_keyscale(metas["keyscale"])[1] == "major"
        dists = self.generator.distributions([cursor.prompt], None if job.embedding is None else job.embedding[None])
        features = None
        if dists is not None:
            features = [round(float(f), 4) for f in dists[0].features(metas["bpm"], major, metas["energy"])]
        return Segment(
            index=cursor.index,
            start_s=cursor.played_samples / sr,
            audio=played,
            sample_rate=sr,
            bpm=float(metas["bpm"]),
            keyscale=metas["keyscale"],
            energy=float(metas["energy"]),
            phrase_start=job.boundary,
            features=features,
            plan=dists[0].tilt(np.asarray(taste)).summary()
            if dists is not None and taste is not None
            else (dists[0].summary() if dists is not None else None),
            cursor=next_cursor,
        )
