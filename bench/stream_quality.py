"""Issue K item 2: does a radio minute hold together at its seams? → bench/stream_quality.json.

Unseen lo-fi vibes × seeds, 60-s streams, three ways to make the same minute from the same plans:
  a_concat   each segment rendered alone (no held tail, its strong beat at its start), butted together;
  b_xfade    the same lone segments joined by a short equal-power crossfade at each seam;
  c_continue what `Radio` plays: each segment continues the last (held latents, crossfade inside the tail).
The continuation stream is rendered first; each of its segments' metas (bpm, key, energy, chords) is then
rendered alone with `Radio.render_group` and no tail, so a/b differ from c only in the continuation.

Seams are where a segment's new latents start (cumulative new frames, the same sample in all three); c also
switches decodes `hold_back_s` earlier (its "join"), scored apart and together with its seam."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import librosa
import numpy as np

from bayes_beats.core.atomic import write_json
from bayes_beats.core.config import load_params
from bayes_beats.evaluate import TEMPO_TOLERANCE, read_key
from bayes_beats.model.plans import DEFAULT_TEMPERATURE
from bayes_beats.model.radio import Cursor, Job, Radio
from bayes_beats.music.analysis import BEAT_HOP
from bayes_beats.music.theory import parse_keyscale

OUT = Path("bench/stream_quality.json")
PROMPTS = (  # lo-fi-ish scenes none of the training captions or eval prompts use
    "late night study session in the rain",
    "sunlit cafe on a sunday morning",
    "slow drive along a foggy coast",
    "autumn park at dusk",
    "snowy cabin with a crackling fireplace",
    "lazy afternoon on a houseboat",
)
SEEDS = (0, 1)
SECONDS = 60.0
XFADE_S = 0.15  # b's crossfade: long enough to hide a click, short against a beat (~0.7 s at 85 bpm)
JUMP_OK_S = 0.040  # a beat displaced by more than ~40 ms is heard as a stumble
WINDOW_S = 0.05  # the short-time frames flux and loudness are read in
GRID_FIT_S = 4.0  # grid_jump fits a beat grid to this much either side of a seam
MARGIN_S = 0.6  # inside a segment: this far from any seam (c's join sits hold_back_s = 0.5 s before it)
CLICK_AROUND_S = 0.005  # a click is one step; a drum attack is steps as large for milliseconds either side
CLICK_RATIO = 2.0
KEY_WINDOW_S, KEY_HOP_S = 8.0, 1.0  # the key read in windows of one length (a 3-s segment is a short sample)
VARIANTS = ("a_concat", "b_xfade", "c_continue")


# -- the three minutes ---------------------------------------------------------------------------------
def continuation(radio: Radio, prompt: str, seed: int, seconds: float) -> tuple[dict, list[dict]]:
    """Radio's own stream until `seconds` are played, with each segment's metas and new-frame count."""
    cursor, audio, segs, spent = Cursor(prompt, seed, DEFAULT_TEMPERATURE), [], [], 0.0
    while sum(map(len, audio)) < seconds * radio.sample_rate:
        start = time.perf_counter()
        seg = radio.render([cursor], [None])[0]
        took = time.perf_counter() - start
        spent += took
        metas = {"bpm": seg.bpm, "keyscale": seg.keyscale, "energy": seg.energy, "chords": seg.cursor.chords}
        segs.append(
            {
                **metas,
                "render_s": took,  # the first one is what first audio waits for
                "phrase_start": seg.phrase_start,
                "new": radio.job(cursor, None).new,
                "beat": cursor.beat,
                "lead_s": cursor.lead_s,
            }
        )
        # the seam (where its new latents start) is hold_back_s after its audio starts: the crossfade's place
        assert (
            not audio or seg.start_s + radio.settings.hold_back_s - sum(s["new"] for s in segs[:-1]) / radio.rate < 1e-3
        )
        audio.append(seg.audio)
        cursor = seg.cursor
    played = np.concatenate(audio)
    return {"audio": played, "render_s": spent, "rtf": spent / (len(played) / radio.sample_rate)}, segs


def alone(radio: Radio, prompt: str, seed: int, segs: list[dict]) -> list[np.ndarray]:
    """Each segment rendered as a first one (no tail, its beat at the seam's lead) with its metas, long enough that its played
    audio (the window less hold_back_s) runs XFADE_S past its new frames, for b's fade-out."""
    extra = math.ceil((radio.settings.hold_back_s + XFADE_S) * radio.rate) + 1 + radio.overhang_frames
    out = []
    for k, s in enumerate(segs):
        metas = {key: s[key] for key in ("bpm", "keyscale", "energy", "chords")}
        cursor = Cursor(prompt, seed, DEFAULT_TEMPERATURE, index=k, beat=s["beat"], lead_s=s["lead_s"])
        new = s["new"] + extra - radio.overhang_frames  # its cursor is not continued: next_beat_s is moot
        job = Job(cursor, None, metas, s["phrase_start"], beats=0, new=new, next_beat_s=new / radio.rate)
        audio = radio.render_group([job])[0].audio
        assert len(audio) >= s["new"] * radio.hop + XFADE_S * radio.sample_rate
        out.append(audio)
    return out


def butt(pieces: list[np.ndarray], lengths: list[int]) -> np.ndarray:
    return np.concatenate([p[:n] for p, n in zip(pieces, lengths, strict=True)])


def crossfade(pieces: list[np.ndarray], lengths: list[int], fade: int) -> np.ndarray:
    """Equal-power: over [seam, seam + fade] the last segment's run-on fades out as the next fades in, so
    the next segment's strong beat still lands on the seam."""
    out, tail = [], None
    angle = np.linspace(0, np.pi / 2, fade, dtype=np.float32)
    for piece, n in zip(pieces, lengths, strict=True):
        piece = piece[: n + fade].copy()
        if tail is not None:
            piece[:fade] = tail * np.cos(angle) + piece[:fade] * np.sin(angle)
        out.append(piece[:n])
        tail = piece[n : n + fade]
    return np.concatenate(out)


# -- the figures ---------------------------------------------------------------------------------------
def phase_jump(beats: np.ndarray, seam: float) -> float | None:
    """Signed error (s) of the first tracked beat after `seam` against the grid fitted to the beats of the
    4 s before it (wrapped to ± half a period: a skipped or doubled beat is not a phase jump)."""
    before, after = beats[(beats >= seam - 4.0) & (beats < seam)], beats[(beats >= seam) & (beats < seam + 2.0)]
    if len(before) < 3 or not len(after):
        return None
    period, first = np.polyfit(np.arange(len(before)), before, 1)
    last = first + period * (len(before) - 1)
    return float((after[0] - last + period / 2) % period - period / 2)


def grid_jump(beats: np.ndarray, at: float) -> float | None:
    """Signed shift (s) of the beat grid at `at`: the grid fitted to the tracked beats of the GRID_FIT_S after
    it against the one fitted to the GRID_FIT_S before, each at its first beat from `at` on (wrapped to ± half
    a period). A phase jump moves the grid; one late beat, which `phase_jump` counts, moves it little."""
    before = beats[(beats >= at - GRID_FIT_S) & (beats < at)]
    after = beats[(beats >= at) & (beats < at + GRID_FIT_S)]
    if len(before) < 3 or len(after) < 3:
        return None
    period, first = np.polyfit(np.arange(len(before)), before, 1)
    _, first_after = np.polyfit(np.arange(len(after)), after, 1)
    continued = first + period * math.ceil((at - first) / period)  # the old grid's first beat from `at` on
    return float((first_after - continued + period / 2) % period - period / 2)


def phrase_tempi(beats: np.ndarray, spans: list[tuple[float, float, float]]) -> list[dict]:
    """Per phrase: tracked tempo (60 / median beat interval inside it) against its planned bpm."""
    rows = []
    for lo, hi, bpm in spans:
        inside = beats[(beats >= lo) & (beats < hi)]
        tracked = 60.0 / float(np.median(np.diff(inside))) if len(inside) >= 4 else float("nan")
        ratio = tracked / bpm
        rows.append({"planned": round(bpm, 2), "tracked": round(tracked, 2), "within": bool(abs(ratio - 1) <= TEMPO_TOLERANCE),
                     "octave": bool(min(abs(ratio / 2 - 1), abs(ratio * 2 - 1)) <= TEMPO_TOLERANCE)})  # fmt: skip
    return rows


def series(audio: np.ndarray, sr: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Frame-to-frame changes of 2·WINDOW_S Hann frames every WINDOW_S (overlapping, so a click at a seam
    falls inside a frame, not on its tapered edge): spectral flux (RMS over 40 bands of the log-mel
    difference, dB) and loudness (|ΔRMS|, dB), each at the time between its two frames' centres."""
    n = int(WINDOW_S * sr)
    mel = librosa.power_to_db(librosa.feature.melspectrogram(y=audio, sr=sr, n_fft=2 * n, hop_length=n, n_mels=40))
    rms = librosa.amplitude_to_db(librosa.feature.rms(y=audio, frame_length=2 * n, hop_length=n)[0])
    flux = np.sqrt((np.diff(mel, axis=1) ** 2).mean(axis=0))
    return (np.arange(len(flux)) + 0.5) * n / sr, flux, np.abs(np.diff(rms))


def changes(ser: tuple, times: np.ndarray, gap: float) -> tuple[np.ndarray, np.ndarray]:
    """The largest flux and loudness change over a transition [t, t + gap] and a frame either side: the
    same span, so the same number of frame changes, at seams and at the references they are held to."""
    at, flux, loud = ser
    lo = np.searchsorted(at, np.asarray(times) - WINDOW_S)
    hi = np.searchsorted(at, np.asarray(times) + gap + WINDOW_S, side="right")
    return np.array([flux[a:b].max() for a, b in zip(lo, hi, strict=True)]), np.array(
        [loud[a:b].max() for a, b in zip(lo, hi, strict=True)]
    )


def away(times: np.ndarray, avoid: np.ndarray) -> np.ndarray:
    return times[np.min(np.abs(times[:, None] - avoid[None, :]), axis=1) > MARGIN_S]


def smoothness(ser: tuple, at: np.ndarray, gap: float, refs: dict[str, np.ndarray]) -> dict:
    """Per seam, whether its flux and loudness change stay within the 95th percentile of the same change
    (same gap) at each reference's times inside segments of this stream."""
    flux, loud = changes(ser, at, gap)
    out = {"flux": flux, "loud_db": loud}
    for name, times in refs.items():
        flux_in, loud_in = changes(ser, times, gap)
        out |= {
            f"flux_ok{name}": flux <= np.percentile(flux_in, 95),
            f"loud_ok{name}": loud <= np.percentile(loud_in, 95),
        }
    return out


def steps(audio: np.ndarray, sr: int, at: np.ndarray, avoid: np.ndarray) -> np.ndarray:
    """Whether the sample step at each seam (|Δx| within ±2 samples: a butt join's click) stays within the
    99.9th percentile of the steps inside segments: the frame figures average a one-sample click away."""
    step, inside = np.abs(np.diff(audio)), np.ones(len(audio) - 1, bool)
    for t in avoid:
        inside[max(0, int((t - MARGIN_S) * sr)) : int((t + MARGIN_S) * sr)] = False
    at = np.round(np.asarray(at) * sr).astype(int)
    return np.array([step[i - 2 : i + 2].max() for i in at]) <= np.percentile(step[inside], 99.9)


def stands_out(audio: np.ndarray, sr: int, at: np.ndarray) -> np.ndarray:
    """Whether the sample step at each seam stands out of its own neighbourhood: over CLICK_RATIO times the
    largest step within CLICK_AROUND_S either side (the ±2 samples left out). A butt join's click does; a drum
    attack that a seam lands in does not (its steps are as large on both sides), which `steps` counts too."""
    step, around = np.abs(np.diff(audio)), int(CLICK_AROUND_S * sr)
    at = np.round(np.asarray(at) * sr).astype(int)
    return np.array(
        [
            step[i - 2 : i + 2].max() > CLICK_RATIO * np.r_[step[i - around : i - 2], step[i + 2 : i + around]].max()
            for i in at
        ]
    )


def keys(audio: np.ndarray, sr: int, bounds: np.ndarray, planned: list[str]) -> dict:
    """Independent key reader (Albrecht–Shanahan) against the planned key: per segment, and whether consecutive
    segments planned in one key are read in one key; per run of one planned key read whole (the key between
    planned changes); and in KEY_WINDOW_S windows every KEY_HOP_S inside such a run, those across a seam apart
    from those inside one segment: a seam that moved the key reads worse across it than inside."""
    read = [read_key(audio[int(lo * sr) : int(hi * sr)], sr) for lo, hi in zip(bounds[:-1], bounds[1:], strict=True)]
    plan = [parse_keyscale(k) for k in planned[: len(read)]]
    pairs = [read[i] == read[i + 1] for i in range(len(read) - 1) if plan[i] == plan[i + 1]]
    runs = [0] + [i for i in range(1, len(plan)) if plan[i] != plan[i - 1]] + [len(plan)]
    whole, across, inside = [], [], []
    for a, b in zip(runs[:-1], runs[1:], strict=True):
        lo, hi, seams = bounds[a], bounds[b], bounds[a + 1 : b]  # the seams inside this run
        whole.append(read_key(audio[int(lo * sr) : int(hi * sr)], sr) == plan[a])
        for start in np.arange(lo, hi - KEY_WINDOW_S + 1e-9, KEY_HOP_S):
            ok = read_key(audio[int(start * sr) : int((start + KEY_WINDOW_S) * sr)], sr) == plan[a]
            (across if np.any((seams > start) & (seams < start + KEY_WINDOW_S)) else inside).append(ok)
    return {
        "match": [r == p for r, p in zip(read, plan, strict=True)],
        "hold": pairs,
        "run_match": whole,
        "window_across": across,
        "window_inside": inside,
    }


def score(audio: np.ndarray, sr: int, segs: list[dict], seams: np.ndarray, gap: float, join: tuple | None) -> dict:
    """All figures of one stream of one variant (join: c's decode switch, (seconds before each seam, fade))."""
    end = len(audio) / sr
    # one onset envelope (median over bands, as beat_track makes its own) for one tracker over the whole minute
    onsets = librosa.onset.onset_strength(y=audio, sr=sr, hop_length=BEAT_HOP, aggregate=np.median)
    _, beats = librosa.beat.beat_track(onset_envelope=onsets, sr=sr, hop_length=BEAT_HOP, units="time")
    bounds = np.r_[0.0, seams, end]
    # the same tracker told the planned tempo at every frame: it places beats only (its blind global tempo
    # bends the beats around a phrase's tempo step, at the seams that are phrase starts)
    frames = librosa.times_like(onsets, sr=sr, hop_length=BEAT_HOP)
    planned = np.asarray([s["bpm"] for s in segs[: len(bounds) - 1]])[
        np.searchsorted(bounds[1:-1], frames, side="right")
    ]
    _, placed = librosa.beat.beat_track(onset_envelope=onsets, sr=sr, hop_length=BEAT_HOP, bpm=planned, units="time")
    starts = [i for i, s in enumerate(segs[: len(bounds) - 1]) if s["phrase_start"]] + [len(bounds) - 1]
    spans = [(bounds[a], bounds[b], segs[a]["bpm"]) for a, b in zip(starts[:-1], starts[1:], strict=True)]
    mids = (bounds[:-1] + bounds[1:]) / 2  # the tracker's own jitter: the same jump at mid-segment
    # and the grid's, where both fits stay inside the segment
    long_mids = mids[np.diff(bounds) >= 2 * GRID_FIT_S]
    avoid = np.r_[seams, seams - (join[0] if join else 0.0)]
    # references inside segments (MARGIN_S from any seam or join): every WINDOW_S step, as asked; and the
    # planned beats, since each seam sits on a strong beat, whose attack a random frame boundary rarely meets
    grid = away(np.arange(2 * WINDOW_S, end - 2 * WINDOW_S - max(gap, join[1] if join else 0.0), WINDOW_S), avoid)
    on_beat = np.concatenate(
        [np.arange(lo, hi, 60.0 / s["bpm"]) for lo, hi, s in zip(bounds[:-1], bounds[1:], segs, strict=False)]
    )
    ser = series(audio, sr)
    smooth = smoothness(ser, seams, gap, {"": grid, "_beat": away(on_beat[on_beat < grid[-1]], avoid)})
    smooth["step_ok"] = steps(audio, sr, seams, avoid)
    smooth["click_ok"] = smooth["step_ok"] | ~stands_out(audio, sr, seams)  # a click: over p99.9 and alone
    if join is not None:  # c's decode switch is at no particular beat phase: the grid reference only
        smooth |= {f"join_{k}": v for k, v in smoothness(ser, seams - join[0], join[1], {"": grid}).items()}
        smooth["join_step_ok"] = steps(audio, sr, seams - join[0], avoid)
    return {
        "tempo": phrase_tempi(beats, spans),
        "jumps_ms": [round(j * 1000, 1) for j in (phase_jump(beats, s) for s in seams) if j is not None],
        "mid_jumps_ms": [round(j * 1000, 1) for j in (phase_jump(beats, m) for m in mids) if j is not None],
        "grid_jumps_ms": [round(j * 1000, 1) for j in (grid_jump(beats, s) for s in seams) if j is not None],
        "mid_grid_jumps_ms": [round(j * 1000, 1) for j in (grid_jump(beats, m) for m in long_mids) if j is not None],
        "jumps_ms_planned_tempo": [round(j * 1000, 1) for j in (phase_jump(placed, s) for s in seams) if j is not None],
        "mid_jumps_ms_planned_tempo": [
            round(j * 1000, 1) for j in (phase_jump(placed, m) for m in mids) if j is not None
        ],
        "smooth": {k: (v if v.dtype == bool else v.astype(float).round(2)).tolist() for k, v in smooth.items()},
        "keys": keys(audio, sr, bounds, [s["keyscale"] for s in segs]),
    }


def summary(rows: list[dict]) -> dict:
    """Means over the streams of one variant."""

    def flat(key: str, sub: str | None) -> list:
        return [x for r in rows for x in (r[key][sub] if sub else r[key])]

    tempo = [t for r in rows for t in r["tempo"]]
    jumps, mids = np.abs(flat("jumps_ms", None)), np.abs(flat("mid_jumps_ms", None))
    grids, mid_grids = np.abs(flat("grid_jumps_ms", None)), np.abs(flat("mid_grid_jumps_ms", None))
    out = {
        "streams_tempo_within_3pct": np.mean([all(t["within"] for t in r["tempo"]) for r in rows]),
        "phrases_tempo_within_3pct": np.mean([t["within"] for t in tempo]),
        "phrases_tempo_octave": np.mean([t["octave"] for t in tempo]),
        "seams": len(jumps),
        "seam_jump_within_40ms": np.mean(jumps <= JUMP_OK_S * 1000),
        "seam_jump_median_ms": np.median(jumps),
        "seam_jump_signed_median_ms": np.median(flat("jumps_ms", None)),  # + : the beat after the seam is late
        "seam_jump_p95_ms": np.percentile(jumps, 95),
        "mid_jump_within_40ms": np.mean(mids <= JUMP_OK_S * 1000),
        "mid_jump_median_ms": np.median(mids),
        "seam_grid_jump_within_40ms": np.mean(grids <= JUMP_OK_S * 1000),
        "seam_grid_jump_median_ms": np.median(grids),
        "seam_grid_jump_p95_ms": np.percentile(grids, 95),
        "mid_grid_jump_within_40ms": np.mean(mid_grids <= JUMP_OK_S * 1000),
        "mid_grid_jump_p95_ms": np.percentile(mid_grids, 95),
        "seam_jump_within_40ms_planned_tempo": np.mean(
            np.abs(flat("jumps_ms_planned_tempo", None)) <= JUMP_OK_S * 1000
        ),
        "seam_jump_median_ms_planned_tempo": np.median(np.abs(flat("jumps_ms_planned_tempo", None))),
        "mid_jump_within_40ms_planned_tempo": np.mean(
            np.abs(flat("mid_jumps_ms_planned_tempo", None)) <= JUMP_OK_S * 1000
        ),
        "seam_flux_within_p95": np.mean(flat("smooth", "flux_ok")),
        "seam_loud_within_p95": np.mean(flat("smooth", "loud_ok")),
        "seam_flux_within_p95_on_beat": np.mean(flat("smooth", "flux_ok_beat")),
        "seam_step_within_p99_9": np.mean(flat("smooth", "step_ok")),
        "seam_no_click": np.mean(flat("smooth", "click_ok")),
        "seam_loud_within_p95_on_beat": np.mean(flat("smooth", "loud_ok_beat")),
        "segments": len(flat("keys", "match")),
        "segment_key_matches_plan": np.mean(flat("keys", "match")),
        "same_plan_pairs": len(flat("keys", "hold")),
        "same_plan_pairs_same_key": np.mean(flat("keys", "hold")),
        "key_runs": len(flat("keys", "run_match")),
        "key_run_matches_plan": np.mean(flat("keys", "run_match")),
        "key_windows_across_seams": len(flat("keys", "window_across")),
        "key_window_across_seam_matches_plan": np.mean(flat("keys", "window_across")),
        "key_windows_inside_segments": len(flat("keys", "window_inside")),
        "key_window_inside_matches_plan": np.mean(flat("keys", "window_inside")),
    }
    if "join_flux_ok" in rows[0]["smooth"]:  # c: its decode switch, and the seam region (seam and switch) as one
        for kind in ("flux", "loud", "step"):
            ok = [[a and b for a, b in zip(r["smooth"][f"{kind}_ok"], r["smooth"][f"join_{kind}_ok"], strict=True)]
                  for r in rows]  # fmt: skip
            pct = "p99_9" if kind == "step" else "p95"
            out[f"join_{kind}_within_{pct}"] = np.mean(flat("smooth", f"join_{kind}_ok"))
            out[f"seam_and_join_{kind}_within_{pct}"] = np.mean([x for o in ok for x in o])
    return {k: round(float(v), 3) if not isinstance(v, int) else v for k, v in out.items()}


def run(prompts=PROMPTS, seeds=SEEDS, seconds: float = SECONDS, model_dir: str | None = None) -> dict:
    from bayes_beats.model.generate import load_generator

    model_dir = model_dir or "models/finetuned"  # `make bench` runs after `make demo`, in the repo root
    start = time.perf_counter()
    radio = Radio(load_generator(model_dir, device="cpu"), load_params().stream)
    sr, hop, join = radio.sample_rate, radio.hop, radio.settings.hold_back_s
    streams, per_variant = [], {v: [] for v in VARIANTS}
    for prompt in prompts:
        for seed in seeds:
            cont, segs = continuation(radio, prompt, seed, seconds)
            lengths = [s["new"] * hop for s in segs]  # seams: cumulative new frames, the same in every variant
            pieces = alone(radio, prompt, seed, segs)
            n = len(cont["audio"])  # ≥ seconds: whole segments, so every seam has a segment after it
            audio = {"a_concat": butt(pieces, lengths)[:n], "b_xfade": crossfade(pieces, lengths, int(XFADE_S * sr))[:n],
                     "c_continue": cont["audio"][:n]}  # fmt: skip
            seams = np.cumsum(lengths)[:-1] / sr
            rows = {
                v: score(a, sr, segs, seams, {"a_concat": 0.0, "b_xfade": XFADE_S}.get(v, 0.0),
                         (join, radio.settings.crossfade_s) if v == "c_continue" else None)
                for v, a in audio.items()
            }  # fmt: skip
            for v, r in rows.items():
                per_variant[v].append(r)
            plan = [{k: s[k] for k in ("bpm", "keyscale", "energy", "phrase_start")} for s in segs]
            streams.append({"prompt": prompt, "seed": seed, "plan": plan, "seams_s": seams.round(3).tolist(), "length_s": round(n / sr, 2),
                            "c_render_s": round(cont["render_s"], 1), "c_rtf": round(cont["rtf"], 3), **rows})  # fmt: skip
            print(prompt, seed, f"rtf {cont['rtf']:.2f}", flush=True)
    return {
        "what": __doc__.split("\n")[0],
        "model": model_dir,
        "streams": len(streams),
        "seconds": seconds,  # at least: each stream ends with its last whole segment
        "settings": {
            "xfade_s": XFADE_S,
            "jump_ok_ms": JUMP_OK_S * 1000,
            "window_s": WINDOW_S,
            "margin_s": MARGIN_S,
            "tempo": "per phrase: 60/median beat interval of librosa.beat.beat_track (whole minute) "
            "inside the phrase vs its planned bpm; a stream passes if all its phrases do; octave apart",
            "jump": "first tracked beat after the seam vs the grid fitted to the beats of the 4 s before, "
            "wrapped to half a period; mid_jump: the same at mid-segment (the tracker's own jitter); "
            f"grid_jump: the grid fitted to the beats of the {GRID_FIT_S:g} s after vs the one before (a phase "
            "jump moves the grid, one late beat little), mid_grid_jump the same mid-segment in segments that hold "
            "both fits; "
            "_planned_tempo: the same tracker given the planned tempo of each frame, so it places beats only",
            "flux_loud": "largest change between 100-ms Hann frames every 50 ms over the transition and a "
            "frame either side, vs its p95 over the same span inside segments (every 50 ms; _on_beat: at "
            "planned beats); c also at its decode switch (join) 0.5 s before each seam",
            "step": "|sample difference| at the seam vs the p99.9 inside segments; no_click: within it, or not "
            f"over {CLICK_RATIO:g}x the largest step within {CLICK_AROUND_S * 1000:g} ms either side (a drum attack the "
            "seam lands in, not a click)",
            "key": "evaluate.read_key per segment (seam to seam) vs its planned key; same_plan_pairs: "
            "consecutive segments planned in one key, read in one key; key_run: each run of one planned key "
            f"read whole; key_window: {KEY_WINDOW_S:g}-s windows every {KEY_HOP_S:g} s inside a run, across a "
            "seam or inside one segment",
            "rtf": "continuation render seconds / audio seconds, one stream at a time, CPU",
        },
        "variants": {v: summary(r) for v, r in per_variant.items()},
        "c_render_rtf_mean": round(float(np.mean([s["c_rtf"] for s in streams])), 3),
        "c_render_rtf_median": round(float(np.median([s["c_rtf"] for s in streams])), 3),  # shared cores: spikes
        "wall_s": round(time.perf_counter() - start, 1),
        "per_stream": streams,
    }


def save(results: dict) -> dict:
    """The one writer of OUT (this script and bench/run.py both call it)."""
    write_json(OUT, results)  # atomic: a killed run leaves the last one whole
    return results


if __name__ == "__main__":
    results = save(run())
    print(json.dumps(results["variants"], indent=1))
