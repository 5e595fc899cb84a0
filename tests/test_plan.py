"""The plan and the sketch: what the planner reads from free text, what the caller and the prompt fix,
how the sketch carries tempo, chords and energy, and how training measures them on each clip."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bayes_beats.data.synth import plan_track, render_track
from bayes_beats.model.generate import load_generator
from bayes_beats.model.sketch import BEAT, CHROMA, ENERGY, HALF_BAR, SKETCH_CHANNELS, chords_of, sketch, triad
from bayes_beats.music.analysis import beat_chords, beat_grid
from bayes_beats.music.moods import anchor_texts, mood_anchors, scene_anchors
from bayes_beats.music.theory import metas_in_text


def test_sketch_carries_the_beat_the_strong_beats_the_chords_and_the_energy():
    rate, bpm = 50.0, 120.0  # a beat every 25 frames
    chords = chords_of([0, 3, 4, 0], tonic=9, mode="minor")  # Am Dm E Am, a beat each
    hint = sketch(bpm, chords, 0.8, frames=200, frame_rate=rate, origin_s=-0.5)  # a strong beat at −0.5 s
    assert hint.shape == (200, SKETCH_CHANNELS)
    beat_cos, half_bar_cos = hint[:, BEAT][:, 0], hint[:, HALF_BAR][:, 0]
    assert torch.allclose(beat_cos[::25], torch.ones(8), atol=1e-4)  # every beat
    assert torch.allclose(half_bar_cos[::50], -torch.ones(4), atol=1e-4)  # t = 0 is the weak beat after −0.5
    assert torch.allclose(half_bar_cos[25::50], torch.ones(4), atol=1e-4)
    # frame 0 is beat 1 after the origin: Dm; frame 25 beat 2: E (the minor key's V has G#)
    assert set(torch.nonzero(hint[0, CHROMA] > 0).flatten().tolist()) == set(triad(9, "minor", 3)) == {2, 5, 9}
    assert set(torch.nonzero(hint[25, CHROMA] > 0).flatten().tolist()) == {4, 8, 11}
    assert torch.allclose(hint[:, ENERGY], torch.full((200, 1), 0.6))

    # a stream's held tail at the last phrase's tempo: before the origin its beats, after it this one's
    origin_s = 1.0  # the seam, 50 frames in
    slower = sketch(bpm, chords, 0.8, frames=200, frame_rate=rate, origin_s=origin_s, bpm_before=100.0)
    same = sketch(bpm, chords, 0.8, frames=200, frame_rate=rate, origin_s=origin_s)
    assert torch.equal(slower[50:], same[50:]) and not torch.allclose(slower[:50], same[:50])
    tail_cos = slower[:, BEAT][:, 0]
    assert torch.allclose(tail_cos[[20, 50]], torch.ones(2), atol=1e-4)  # beats 0.6 s apart (100 BPM), to the seam


def test_beat_grid_and_chords_are_read_from_a_clip_as_it_is():
    sr, rng = 22050, np.random.default_rng(3)
    plan = plan_track(rng)
    track = render_track(plan, 12.0, sr, rng)
    start = 1.37  # a crop that starts off the beat
    clip = track[int(start * sr) : int((start + 10) * sr)]
    period = 60.0 / plan.bpm
    origin = beat_grid(clip, sr, plan.bpm)
    assert -2 * period < origin <= 0
    # the corpus's beats fall at k · period from the track's start; the onset envelope lags them ~20 ms
    offset = ((origin + start) % period) / period
    assert min(offset, 1 - offset) < 0.1, f"grid off by {offset:.2f} of a beat"
    chords = beat_chords(clip, sr, plan.bpm, origin, 8)
    assert chords.shape == (8, 12) and set(np.unique(chords)) == {-1.0, 1.0}
    assert ((chords > 0).sum(axis=1) == 3).all()
    # the tonic's triad is among the chords the clip plays (every progression starts and ends on it)
    tonic = set(triad(plan.tonic, plan.mode, 0))
    full = beat_chords(track, sr, plan.bpm, 0.0, int(12.0 / period))
    assert any(set(np.flatnonzero(row > 0)) == tonic for row in full)


@pytest.mark.parametrize(
    "text, bpm, keyscale",
    [
        ("melancholic piano in A minor at 68 BPM, lonely", 68.0, "A minor"),
        ("Bb major 120bpm", 120.0, "A# major"),
        ("a calm lake", None, None),
        ("Cb minor, not a key we name", None, None),
    ],
)
def test_metas_a_prompt_names_outright_are_read(text, bpm, keyscale):
    assert metas_in_text(text) == (bpm, keyscale)


def test_planner_reads_free_text_and_the_prompt_and_caller_fix_metas(tiny_project):
    root, _ = tiny_project
    gen = load_generator(root / "models/finetuned")
    storm, lake = "a furious thunderstorm over a highway, fast and loud", "a quiet misty lake at dawn, calm and sad"
    plans, _ = gen.plan([storm, lake], [0, 0], 0.0)
    assert plans.bpm[0] > plans.bpm[1] and plans.energy[0] > plans.energy[1]
    read = gen.pipe.planner(gen.pipe.embed([storm, lake]))
    assert read["arousal"][0] > 0.3 > -0.3 > read["arousal"][1]
    named, _ = gen.plan(["sad strings in Bb minor at 70 BPM"], [1], 0.0)
    assert (named.bpm, named.keyscale) == ([70.0], ["A# minor"])
    fixed, _ = gen.plan(["sad strings in Bb minor at 70 BPM"], [1], 0.0, bpm=130, keyscale="E major", energy=0.9)
    assert (fixed.bpm, fixed.keyscale, fixed.energy) == ([130.0], ["E major"], [0.9])
    assert set(torch.nonzero(fixed.chords[0].max(0).values > 0).flatten().tolist()) <= set(range(12))
    # the planner reads against the mood words and the hand-placed scenes; it names only mood words
    texts, places = anchor_texts()
    assert len(gen.pipe.planner.anchor_va) == len(texts) == len(mood_anchors()) + len(scene_anchors())
    assert torch.allclose(gen.pipe.planner.anchor_va, torch.tensor(places))
    assert gen.pipe.planner.words(gen.pipe.embed(texts[-1:]))[0][0] in mood_anchors()  # a scene is no word
    # mode follows the valence reading alone: the same pleasantness, calm or wild, plans the same mode
    out = gen.pipe.planner(gen.pipe.embed(texts))
    order = torch.argsort(out["valence"])
    assert (torch.diff(out["p_major"][order]) >= -1e-6).all() and out["p_major"].std() > 0


def test_energy_override_is_reported_and_changes_the_music(tiny_project):
    root, _ = tiny_project
    gen = load_generator(root / "models/finetuned")
    kwargs = dict(duration_s=2.0, seed=4, temperature=0.0, bpm=100, keyscale="C major", output_type="latent")
    calm, plans_calm = gen.generate_with_plans(["city at night"], energy=0.1, **kwargs)
    loud, plans_loud = gen.generate_with_plans(["city at night"], energy=0.9, **kwargs)
    assert plans_calm[0]["energy"] == 0.1 and plans_loud[0]["energy"] == 0.9
    assert not np.allclose(calm[0][0], loud[0][0])
    planned, plans = gen.generate_with_plans(["city at night"], **kwargs)
    assert 0.0 <= plans[0]["energy"] <= 1.0  # the planner's, reported when the caller names none


def test_sketch_is_built_where_the_chords_are():
    """Training hands the sketch chords already on the accelerator; a grid made on the CPU failed there
    (seen on an H200). The meta device stands in for it: every tensor must follow the chords."""
    hint = sketch(120.0, chords_of([0, 3, 4, 0], tonic=9, mode="minor").to("meta"), 0.5, 50, 43.0, -0.3)
    assert hint.device.type == "meta" and hint.shape == (50, SKETCH_CHANNELS)


def test_control_reader_reads_keys_with_profiles_of_its_own():
    """evaluate's control accuracy is graded by another set of key profiles than the features module's,
    which measured the training metas; it still reads synth tracks in their own key."""
    from bayes_beats.evaluate import READER_MAJOR, READER_MINOR, read_key
    from bayes_beats.music.analysis import MAJOR_PROFILE, MINOR_PROFILE

    for ours, theirs in ((READER_MAJOR, MAJOR_PROFILE), (READER_MINOR, MINOR_PROFILE)):
        assert np.corrcoef(ours, theirs)[0, 1] < 0.95
    sr, rng = 22050, np.random.default_rng(5)
    read = []
    for _ in range(8):
        plan = plan_track(rng)
        read.append(read_key(render_track(plan, 10.0, sr, rng), sr) == (plan.tonic, plan.mode))
    assert np.mean(read) >= 0.75, read


def test_the_planner_reads_a_vibe_where_its_embedding_is():
    """On a GPU the planner's embedding is on the accelerator; its reading's spread was divided by a CPU
    tensor and every generation failed (seen on an H200). The meta device stands in for it."""
    from bayes_beats.model.vibe import VibePlanner

    planner = VibePlanner(n_anchors=8, n_progressions=4, log_bpm=(4.6, 0.1, 0.3), energy_sd=(1.0, 0.5)).to("meta")
    out = planner(torch.zeros(3, 384, device="meta"))
    assert {v.device.type for v in out.values()} == {"meta"} and out["log_bpm_sd"].shape == (3,)
