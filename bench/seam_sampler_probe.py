"""Sampler settings against the stream's seams: the continuation minute of bench/stream_quality.py (the same
12 streams, its own scoring) under guidance and tail variants → bench/stream_seam_ablation.json.

Why: the seams' misses are late beats at slow, beat-guided tempi and broadband bursts where new frames start
(docs/design.md "The stream", "Seams against the sampler"). Each variant changes one thing of how a window
is sampled; the plans are the same (they do not depend on the sampler). Run after `make demo`, ~45 s a
variant on 2 cores. The release variant (the tail's end let go gradually) lives on branch exp/release; beat
guidance off for the first beats after a seam (`stream.unguided_beats`) and a minimum window (`stream.min_window_s`)
on branch exp/seam-knobs: their rows stay in the JSON. The groups repeat settings on three seed pairs (`pooled`);
"join gain" measures the level at each join under the old gain rule and the glide, side by side."""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
import stream_quality as sq  # noqa: E402

import bayes_beats.model.radio as radio_module  # noqa: E402
from bayes_beats.core.atomic import write_json  # noqa: E402
from bayes_beats.core.config import load_params  # noqa: E402
from bayes_beats.model.generate import load_generator  # noqa: E402
from bayes_beats.model.radio import Radio  # noqa: E402

OUT = Path(__file__).with_name("stream_seam_ablation.json")
# the stream settings every variant starts from: params.yaml's before this ablation (first_segment_s 2)
BASE = {"first_segment_s": 2.0, "tail_s": 2.0, "overhang_s": 0.5}
# name: (stream settings over BASE, guidance keys, beat guidance scale on windows that hold a tail)
VARIANTS: dict[str, tuple[dict, dict, float]] = {
    "before (first segment 2 s)": ({}, {}, 1.0),
    "tail 3 s": ({"tail_s": 3.0}, {}, 1.0),
    "tail 4 s": ({"tail_s": 4.0}, {}, 1.0),
    "first segment 4 s": ({"first_segment_s": 4.0}, {}, 1.0),
    "first segment 4 s, tail 4 s": ({"first_segment_s": 4.0, "tail_s": 4.0}, {}, 1.0),
    "first segment 4 s, tail 3 s": ({"first_segment_s": 4.0, "tail_s": 3.0}, {}, 1.0),
    "first segment 4 s, sketch guidance 4": ({"first_segment_s": 4.0}, {"sketch_guidance": 4.0}, 1.0),
    "first segment 4 s, no beat guidance where a tail is held": ({"first_segment_s": 4.0}, {}, 0.0),
    "overhang 1 s": ({"overhang_s": 1.0}, {}, 1.0),
    "beat guidance over more steps (t > 0.5)": ({}, {"beat_guidance_above_t": 0.5}, 1.0),
    "sketch guidance 4": ({}, {"sketch_guidance": 4.0}, 1.0),
    "no beat guidance where a tail is held": ({}, {}, 0.0),
    "half beat guidance where a tail is held": ({}, {}, 0.5),
    "no beat guidance where a tail is held, sketch guidance 4": ({}, {"sketch_guidance": 4.0}, 0.0),
    "no beat guidance": ({}, {"beat_guidance": 0.0}, 1.0),
    "no beat guidance, sketch guidance 4": ({}, {"beat_guidance": 0.0, "sketch_guidance": 4.0}, 1.0),
    "first segment 4 s, no beat guidance": ({"first_segment_s": 4.0}, {"beat_guidance": 0.0}, 1.0),
    "first segment 4 s, no beat guidance, sketch guidance 4": (
        {"first_segment_s": 4.0},
        {"beat_guidance": 0.0, "sketch_guidance": 4.0},
        1.0,
    ),
}
# the same settings on other seeds: how far two runs of one variant differ (one seam is 1/78 of a figure);
# each group is pooled over its runs (`pooled` in the JSON)
UNGUIDED = {"beat_guidance": 0.0, "sketch_guidance": 4.0}  # the stop-35 candidate: best beat phase of one run
PAIRS = ((0, 1), (2, 3), (4, 5))
GROUPS: dict[str, tuple[dict, dict]] = {  # group: (stream settings, guidance keys), first segment 4 s in each
    "first segment 4 s": ({}, {}),  # the kept setting
    "no beat guidance, sketch guidance 4": ({}, UNGUIDED),
    # stop 37: beat guidance weaker, shorter, or on fewer tempi, instead of off (off costs flux and loudness)
    "half beat guidance": ({}, {"beat_guidance": 4.0}),
    "beat guidance on the noisiest steps only (t > 0.9)": ({}, {"beat_guidance_above_t": 0.9}),
    "beat guidance below 70 BPM only": ({}, {"beat_guidance_below_bpm": 70}),
    "no beat guidance, sketch guidance 3.5": ({}, {"beat_guidance": 0.0, "sketch_guidance": 3.5}),
    # stop 38: the new frames' beats a little earlier (the first beat after a seam reads late on median)
    "new beats 7 ms earlier": ({"beat_advance_s": 0.007}, {}),
    "new beats 12 ms earlier": ({"beat_advance_s": 0.012}, {}),
}
REPEATS: dict[str, tuple[dict, dict, tuple[int, ...], str]] = {
    f"{group}, seeds {a} and {b}": ({"first_segment_s": 4.0} | settings, guidance, (a, b), group)
    for group, (settings, guidance) in GROUPS.items()
    for a, b in PAIRS
}
FIGURES = (
    "seams", "seam_jump_within_40ms", "seam_jump_median_ms", "seam_jump_p95_ms", "mid_jump_within_40ms",
    "seam_grid_jump_within_40ms", "seam_grid_jump_p95_ms", "mid_grid_jump_within_40ms",
    "seam_flux_within_p95", "seam_loud_within_p95", "seam_flux_within_p95_on_beat", "seam_loud_within_p95_on_beat",
    "segment_key_matches_plan", "same_plan_pairs_same_key", "key_run_matches_plan",
    "key_window_across_seam_matches_plan", "key_window_inside_matches_plan", "phrases_tempo_within_3pct",
)  # fmt: skip


def with_tail_beat_guidance(radio: Radio, scale: float) -> None:
    """Beat guidance times `scale` on the items of a call that hold a tail (first segments keep it)."""
    render_group, guidance_for = radio.render_group, radio.generator.guidance_for

    def render(jobs):
        def scaled(bpms):
            guidance = guidance_for(bpms)
            if isinstance(guidance.get("beat_guidance"), list):
                guidance["beat_guidance"] = [
                    b * (scale if j.held else 1.0) for b, j in zip(guidance["beat_guidance"], jobs, strict=True)
                ]
            return guidance

        radio.generator.guidance_for = scaled
        try:
            return render_group(jobs)
        finally:
            radio.generator.guidance_for = guidance_for

    radio.render_group = render


def with_beat_advance(radio: Radio, seconds: float) -> None:
    """The new frames' sketch `seconds` earlier in every window that holds a tail: the first beat after a seam
    reads late (+7 ms signed median at fast tempi, concatenation and continuation alike, +2 mid-segment)."""
    render_group = radio.render_group

    def render(jobs):
        return render_group(
            [dataclasses.replace(j, cursor=dataclasses.replace(j.cursor, lead_s=j.cursor.lead_s - seconds))
             if j.tail is not None else j for j in jobs]
        )  # fmt: skip

    radio.render_group = render


def variant(generator, settings: dict, guidance: dict, tail_beat: float, seeds=sq.SEEDS) -> dict:
    settings = dict(settings)
    advance = settings.pop("beat_advance_s", 0.0)  # the probe's, not a stream setting
    radio = Radio(generator, load_params().stream.model_copy(update=BASE | settings))
    if advance:
        with_beat_advance(radio, advance)
    shipped = dict(generator.guidance)
    generator.guidance.update(guidance)
    if tail_beat != 1.0:
        with_tail_beat_guidance(radio, tail_beat)
    rows, misses, first = [], [], []
    try:
        for prompt in sq.PROMPTS:
            for seed in seeds:
                cont, segs = sq.continuation(radio, prompt, seed, sq.SECONDS)
                first.append(segs[0]["render_s"])  # the first segment's render: what first audio waits for
                sr = radio.sample_rate
                seams = np.cumsum([s["new"] * radio.hop for s in segs])[:-1] / sr
                join = (radio.settings.hold_back_s, radio.settings.crossfade_s)
                row = sq.score(cont["audio"], sr, segs, seams, 0.0, join)
                rows.append(row)
                misses += [
                    {"prompt": prompt, "seed": seed, "seam_s": round(float(seams[i]), 1), "jump_ms": j,
                     "bpm": round(segs[i + 1]["bpm"], 1), "phrase_start": segs[i + 1]["phrase_start"]}
                    for i, j in enumerate(row["jumps_ms"]) if abs(j) > sq.JUMP_OK_S * 1000
                ]  # fmt: skip
    finally:
        generator.guidance.clear()
        generator.guidance.update(shipped)
    summary = sq.summary(rows)
    timing = {"first_render_median_s": round(float(np.median(first)), 3), "first_render_max_s": round(max(first), 3)}
    return {"figures": {k: summary[k] for k in FIGURES} | timing, "beat_misses": misses}


def pooled(runs) -> dict:
    """The repeats as one run: seam shares weighted by seams, per-segment shares as the mean of the runs."""
    figures = [r["figures"] for r in runs]
    seams = sum(f["seams"] for f in figures)
    out = {"seams": seams}
    for key in ("seam_jump_within_40ms", "seam_flux_within_p95", "seam_loud_within_p95"):
        out[key] = round(sum(f[key] * f["seams"] for f in figures) / seams, 3)
    for key in ("mid_jump_within_40ms", "seam_grid_jump_within_40ms", "mid_grid_jump_within_40ms",
                "segment_key_matches_plan", "same_plan_pairs_same_key", "key_run_matches_plan",
                "key_window_across_seam_matches_plan", "key_window_inside_matches_plan"):  # fmt: skip
        if all(key in f for f in figures):
            out[f"{key}_mean_of_runs"] = round(sum(f[key] for f in figures) / len(figures), 3)
    return out


def join_gain(generator, seeds=sq.SEEDS) -> dict:
    """The level at each join, side by side in one run: the gain the window's -1 dBFS normalisation asked for
    against the gain played before it. The rule before stop 37 ramped up to a quieter window's gain but cut
    to a louder one's at the crossfade (a 100-ms step); `radio.gain_curve` glides from the played gain."""
    radio = Radio(generator, load_params().stream)
    cut, glided, glide = [], [], []
    curve = radio_module.gain_curve

    def measured(audio, start, target, hop, slew):
        gains = curve(audio, start, target, hop, slew)
        if start == target:  # a stream's first segment: nothing played before it, no join
            return gains
        cut.append(min(0.0, 20 * np.log10(target / start)))  # the old rule: min(ramp, target) from the first sample
        glided.append(20 * np.log10(gains[0] / start))
        glide.append(float(np.abs(np.diff(20 * np.log10(gains))).max() * radio.sample_rate))
        return gains

    radio_module.gain_curve = measured
    try:
        for prompt in sq.PROMPTS:
            for seed in seeds:
                sq.continuation(radio, prompt, seed, sq.SECONDS)
    finally:
        radio_module.gain_curve = curve
    cut, glided = -np.array(cut), -np.array(glided)

    def steps(db: np.ndarray) -> dict:
        big = db[db > 0.5]
        return {"joins_stepped_over_0_5_db": int(len(big)), "share": round(len(big) / len(db), 3),
                "median_db": round(float(np.median(big)), 2) if len(big) else 0.0, "max_db": round(float(db.max()), 2)}  # fmt: skip

    return {"joins": len(cut), "cut_at_crossfade_before": steps(cut), "glide_now": steps(glided),
            "glide_max_db_per_s": round(max(glide), 2), "slew_db_per_s": radio.settings.gain_slew_db_s}  # fmt: skip


def main(only: set[str] | None = None) -> dict:
    """Every variant and repeat, or only the named ones merged into the JSON already written."""
    start = time.perf_counter()
    generator = load_generator("models/finetuned", device="cpu")
    out = json.loads(OUT.read_text()) if only else {"variants": {}, "repeats": {}}
    runs = {n: (v, sq.SEEDS, "variants") for n, v in VARIANTS.items()}
    runs |= {n: ((settings, guidance, 1.0), seeds, "repeats") for n, (settings, guidance, seeds, _) in REPEATS.items()}
    if not only or "join gain" in only:
        out["join_gain"] = join_gain(generator)
        print("join gain", json.dumps(out["join_gain"]), flush=True)
    for name, ((settings, guidance, tail_beat), seeds, kind) in runs.items():
        if only and name not in only:
            continue
        row = {"settings": settings, "guidance": guidance, "tail_beat_guidance": tail_beat, "seeds": list(seeds)}
        row |= variant(generator, settings, guidance, tail_beat, seeds)
        out.setdefault(kind, {})[name] = row
        print(name, json.dumps(row["figures"]), flush=True)
    out.pop("repeats_pooled", None), out.pop("candidate_pooled", None)  # before stop 37: two groups by name
    groups = {name: group for name, (*_, group) in REPEATS.items()}
    out["pooled"] = {
        group: pooled([r for n, r in out["repeats"].items() if groups.get(n) == group])
        for group in GROUPS
        if all(n in out["repeats"] for n, g in groups.items() if g == group)
    }
    wall = round(time.perf_counter() - start)
    return out | {"what": __doc__.split("\n")[0], "base": BASE, "wall_s": out.get("wall_s", 0) + wall if only else wall}


def save(result: dict) -> dict:
    """The one writer of OUT, as bench/stream_quality.py's."""
    write_json(OUT, result)  # atomic: a killed run leaves the last one whole
    return result


if __name__ == "__main__":
    save(main(set(sys.argv[1:]) or None))  # names: run only those variants or repeats ("join gain": the level)
