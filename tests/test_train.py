"""Training mechanics on the tiny project: kill -9 and resume, 2-process DDP, cached vs on-the-fly."""

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch
from conftest import BIN, free_port, params_with, project_copy
from safetensors.torch import load_file
from test_taste import bench_module

import bayes_beats
from bayes_beats.model import conditioning
from bayes_beats.model.codec import SpectrogramCodec
from bayes_beats.model.denoiser import build_tiny_denoiser
from bayes_beats.model.train import (
    CachedClips,
    Denoiser,
    _code_fingerprint,
    _discard_stale_checkpoints,
    make_batch,
    weights_fingerprint,
)

LORA = "models/finetuned/lora/pytorch_lora_weights.safetensors"


def finetune_cmd(*prefix: str) -> subprocess.Popen:
    return [*prefix, str(BIN / "bayes-beats"), "finetune"]


def test_kill_9_during_finetune_then_rerun_ends_with_the_same_weights(tiny_project, tmp_path):
    steps = dict(steps=40, checkpointing_steps=10, checkpoints_total_limit=2)
    straight = project_copy(tiny_project, tmp_path / "straight", **steps)
    subprocess.run(finetune_cmd(), cwd=straight, check=True, capture_output=True)

    killed = project_copy(tiny_project, tmp_path / "killed", **steps)
    proc = subprocess.Popen(finetune_cmd(), cwd=killed, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while not (killed / "checkpoints/finetune/checkpoint-10").is_dir() and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL  # it was killed mid-run, not finished
    assert not (killed / "models/finetuned").exists()
    rerun = subprocess.run(finetune_cmd(), cwd=killed, check=True, capture_output=True, text=True)
    assert "resumed from" in rerun.stderr

    a, b = load_file(straight / LORA), load_file(killed / LORA)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_two_process_ddp_finetune_runs_on_gloo(tiny_project, tmp_path):
    project = project_copy(tiny_project, tmp_path / "ddp", steps=4, checkpointing_steps=2)
    # accelerate's multi-process launcher (torchrun underneath); ACCELERATE_USE_CPU makes it DDP on gloo
    launch = [
        str(BIN / "accelerate"),
        "launch",
        "--multi_gpu",
        "--num_processes",
        "2",
        "--num_machines",
        "1",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        "--main_process_port",
        str(free_port()),
    ]
    cmd = [*launch, str(BIN / "bayes-beats"), "finetune"]
    done = subprocess.run(
        cmd,
        cwd=project,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "OMP_NUM_THREADS": "1", "ACCELERATE_USE_CPU": "true"},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert (project / LORA).is_file()
    assert (project / "checkpoints/finetune/checkpoint-4/random_states_1.pkl").is_file()  # two ranks
    assert '"processes": 2' in (project / "checkpoints/finetune/fingerprint.json").read_text()


def test_cached_training_batches_match_on_the_fly_encoding(tiny_project, monkeypatch):
    root, params = tiny_project
    monkeypatch.chdir(root)
    cached = CachedClips("data/encoded/train.safetensors")
    codec = SpectrogramCodec.from_pretrained("models/codec")
    # the benchmark's on-the-fly source: in bench/, not the library, which only trains on the cache
    live = bench_module("train_probe").LiveClips(root / "data/dataset", codec, params)
    frame_rate = conditioning.frame_rate(codec.config)
    transformer, condition_encoder = build_tiny_denoiser(codec, params.model)
    denoiser = Denoiser(transformer, condition_encoder, frame_rate).eval()
    for step in range(3):
        a = make_batch(cached, params.pretrain, step, 0, frame_rate, (0,), False)
        b = make_batch(live, params.pretrain, step, 0, frame_rate, (0,), False)
        for key in ("x0", "text_states", "embedding", "origin", "energy", "noise", "t"):
            torch.testing.assert_close(a[key], b[key], rtol=1e-5, atol=1e-5)
        beats = min(a["chords"].shape[1], b["chords"].shape[1])  # padded to the split's / the batch's longest
        torch.testing.assert_close(a["chords"][:, :beats], b["chords"][:, :beats])
        with torch.no_grad():
            torch.testing.assert_close(denoiser(a)["loss"], denoiser(b)["loss"], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("key", ["latents", "text_states"])
def test_cache_dtype_is_as_documented(tiny_project, key):
    root, _ = tiny_project
    cache = load_file(root / "data/encoded/train.safetensors")
    assert cache[key].dtype == (torch.float16 if key == "text_states" else torch.float32)


def test_condition_dropout_draws_last_and_only_when_on(tiny_project, monkeypatch):
    root, params = tiny_project
    monkeypatch.chdir(root)
    clips = CachedClips("data/encoded/train.safetensors")
    # without tempo augmentation: its draws come after dropout's, so only a run without dropout keeps them
    off = params.finetune.model_copy(update={"sketch_dropout": 0.0, "text_dropout": 0.0, "tempo_augment": 0.0})
    on = off.model_copy(update={"sketch_dropout": 0.5, "text_dropout": 0.5, "batch_size": 64})
    plain = make_batch(clips, off, 0, 0, 43.0, (1, 2, 3), True)
    assert "drop_sketch" not in plain and "drop_text" not in plain
    dropped = make_batch(clips, on.model_copy(update={"batch_size": off.batch_size}), 0, 0, 43.0, (1, 2, 3), True)
    for key in ("x0", "noise", "t", "eps"):  # dropout leaves the rest of the batch as it was
        torch.testing.assert_close(plain[key], dropped[key])
    wide = make_batch(clips, on, 0, 0, 43.0, (1, 2, 3), True)
    assert 0 < wide["drop_sketch"].sum() < 64 and 0 < wide["drop_text"].sum() < 64


def test_a_continuation_is_given_its_prefix_and_learns_only_the_frames_after_it(tiny_project, monkeypatch):
    """Continuation training (the stream's segments): a share of crops get a clean prefix in the context
    (ACE-Step's repaint source, chunk mask 0, the sketch kept) and their loss counts the frames after it."""
    root, params = tiny_project
    monkeypatch.chdir(root)
    clips = CachedClips("data/encoded/train.safetensors")
    codec = SpectrogramCodec.from_pretrained("models/codec")
    frame_rate = conditioning.frame_rate(codec.config)
    off = params.pretrain.model_copy(update={"continuation": 0.0, "batch_size": 32})
    on = off.model_copy(update={"continuation": 0.5, "continuation_prefix": (0.2, 0.4)})
    plain, held = (make_batch(clips, p, 3, 0, frame_rate, (0,), False) for p in (off, on))
    assert "held" not in plain
    for key in ("x0", "noise", "t", "origin", "bpm"):  # drawn last: the rest of the batch is as it was
        torch.testing.assert_close(plain[key], held[key])
    crop, counts = held["x0"].shape[1], held["held"]
    given = counts > 0
    assert 0 < given.sum() < 32
    assert (counts[given] >= round(0.2 * crop)).all() and (counts[given] <= round(0.4 * crop)).all()

    transformer, condition_encoder = build_tiny_denoiser(codec, params.model)
    seen = {}
    forward = transformer.forward

    def recording(*args, **kwargs):
        seen["context"] = kwargs["context_latents"]
        seen["v"] = forward(*args, **kwargs)[0]
        return (seen["v"],)

    monkeypatch.setattr(transformer, "forward", recording)
    denoiser = Denoiser(transformer, condition_encoder, frame_rate).eval()
    with torch.no_grad():
        loss = denoiser(held)["flow"]
    context, v, channels = seen["context"], seen["v"], held["x0"].shape[-1]
    source, mask = context[..., :channels], context[..., channels:]
    sketch = conditioning.SKETCH_CHANNELS
    for b in range(32):
        n = int(counts[b])
        assert (mask[b, :n] == 0).all() and (mask[b, n:] == 1).all()
        torch.testing.assert_close(source[b, :n, sketch:], held["x0"][b, :n, sketch:].to(source))
        assert not torch.equal(source[b, n:, sketch:], held["x0"][b, n:, sketch:].to(source))
    with torch.no_grad():
        _, unheld_context = denoiser(plain), seen["context"]
    torch.testing.assert_close(source[..., :sketch], unheld_context[..., :sketch])  # the sketch runs on through
    error = (v.float() - (held["noise"] - held["x0"]).float()).pow(2).mean(-1)
    after = torch.arange(crop)[None, :] >= counts[:, None]
    torch.testing.assert_close(loss, error[after].mean())
    assert not torch.isclose(loss, error.mean())


def test_checkpoints_are_stale_when_anything_in_the_cache_changes(tiny_project, tmp_path):
    """A resumed run must be the run its checkpoint came from: re-measured chords (same clips, same bpm)
    once let `pretrain` resume a finished run made on other chords and train nothing."""
    from safetensors.torch import save_file

    root, _ = tiny_project
    cache = load_file(root / "data/encoded/train.safetensors")
    index = (root / "data/encoded/train.json").read_text()
    changed = dict(cache, chords=cache["chords"].clone())
    changed["chords"][0, 0] = -changed["chords"][0, 0]
    for name, tensors in (("same", cache), ("changed", changed)):
        save_file(tensors, tmp_path / f"{name}.safetensors")
        (tmp_path / f"{name}.json").write_text(index)
    original = CachedClips(root / "data/encoded/train.safetensors").fingerprint()
    assert CachedClips(tmp_path / "same.safetensors").fingerprint() == original
    assert CachedClips(tmp_path / "changed.safetensors").fingerprint() != original


def test_a_resume_needs_the_weights_its_checkpoints_started_from(tiny_project, tmp_path):
    """A checkpoint holds the whole model: a finetune whose base was retrained (pretrain with other params)
    once resumed the old run's last checkpoint, bringing the old base back and training nothing."""
    from accelerate import Accelerator

    root, params = tiny_project
    codec = SpectrogramCodec.from_pretrained(root / "models/codec")
    clips = CachedClips(root / "data/encoded/train.safetensors")
    rate = conditioning.frame_rate(codec.config)
    base, retrained = (Denoiser(*build_tiny_denoiser(codec, params.model), rate) for _ in range(2))
    assert weights_fingerprint(base) == weights_fingerprint(retrained)  # built alike: resumable
    with torch.no_grad():
        next(retrained.transformer.parameters()).view(-1)[0] += 1e-3  # pretrain ran again
    assert weights_fingerprint(base) != weights_fingerprint(retrained)
    accelerator, trained = Accelerator(cpu=True), [("lora", [4, 4])]
    for weights, kept in ((base, True), (base, True), (retrained, False)):
        (tmp_path / "checkpoint-300").mkdir(exist_ok=True)
        _discard_stale_checkpoints(
            tmp_path, params.finetune, clips, trained, accelerator, "finetune", weights_fingerprint(weights)
        )
        assert (tmp_path / "checkpoint-300").is_dir() == kept


class PulseClips:
    """Clips whose only sound is a click on every beat (latent channel 0), at known tempi and phases."""

    def __init__(self, bpms: list[float], frames: int = 430, frame_rate: float = 43.0) -> None:
        self.n, self.frames = len(bpms), frames
        self.bpm, self.origin = torch.tensor(bpms), torch.linspace(0.05, 0.4, len(bpms))
        self.latents = torch.zeros(len(bpms), frames, 4)
        for i, (bpm, origin) in enumerate(zip(self.bpm.tolist(), self.origin.tolist(), strict=True)):
            beats = torch.arange(origin, frames / frame_rate, 60.0 / bpm)
            self.latents[i, (beats * frame_rate).round().long().clamp(max=frames - 1), 0] = 1.0

    def take(self, idx: torch.Tensor) -> dict:
        b = len(idx)
        return {
            "latents": self.latents[idx],
            "text_states": torch.zeros(b, 1, 2, 3),
            "text_mask": torch.ones(b, 1, 2),
            "embeddings": torch.zeros(b, 1, 3),
            "bpm": self.bpm[idx].clone(),
            "major": torch.ones(b, dtype=torch.bool),
            "origin": self.origin[idx].clone(),
            "chords": torch.ones(b, 16, 12),
            "energy": torch.full((b,), 0.5),
            "keyscale": ["C major"] * b,
            "lyric_states": torch.zeros(1, 2, 3),
            "lyric_mask": torch.ones(1, 2),
        }


def test_tempo_augmentation_moves_the_clicks_and_the_beat_grid_together():
    """A stretched crop is the same music at another tempo: its clicks sit on the beats its new bpm and
    origin say, the new tempo is where it was drawn, and the rest of the batch is what it would have been."""
    clips, frame_rate = PulseClips([64.0, 90.0, 120.0, 140.0] * 4), 43.0
    off = params_with(
        finetune={
            "batch_size": 16,
            "crop_seconds": 6.0,
            "tempo_augment": 0.0,
            "sketch_dropout": 0.0,
            "text_dropout": 0.0,
        }
    ).finetune
    on = off.model_copy(update={"tempo_augment": 1.0})
    plain, stretched = (make_batch(clips, p, 5, 0, frame_rate, (0,), False) for p in (off, on))
    for key in ("noise", "t"):
        assert torch.equal(plain[key], stretched[key])
    rate, (low, high) = stretched["bpm"] / plain["bpm"], on.tempo_augment_bpm
    clamped = ((rate - on.max_stretch).abs() < 1e-4) | ((rate - 1 / on.max_stretch).abs() < 1e-4)
    assert (clamped | ((stretched["bpm"] >= low - 1e-3) & (stretched["bpm"] <= high + 1e-3))).all()
    assert (rate.max() > 1.2) and (rate.min() < 0.8)  # both ways
    crop = stretched["x0"].shape[1]
    for b in range(len(rate)):
        beats = torch.arange(float(stretched["origin"][b]), crop / frame_rate, 60.0 / float(stretched["bpm"][b]))
        on_beat = (beats[beats >= 0] * frame_rate).round().long()
        near = torch.zeros(crop, dtype=torch.bool)
        for shift in (-1, 0, 1):  # a click falls between two frames, each within one of the beat
            near[(on_beat + shift).clamp(0, crop - 1)] = True
        clicks = stretched["x0"][b, :, 0]
        assert clicks[near].sum() > 0.95 * clicks.sum()  # every click is on a beat of the new grid
        heard = [clicks[max(0, int(f) - 1) : int(f) + 2].max() for f in on_beat if f < crop - 1]
        assert min(heard) > 0.3  # and every beat of the new grid has its click (sped up, it falls between frames)


def test_checkpoints_belong_to_the_code_training_runs_and_no_other(tmp_path):
    """Editing the service's code leaves training checkpoints alone; editing what the stage runs does not."""
    import shutil

    package = shutil.copytree(Path(bayes_beats.__file__).parent, tmp_path / "bayes_beats")
    before = {stage: _code_fingerprint(stage, package) for stage in ("pretrain", "finetune")}

    def edited(rel: str) -> dict[str, str]:
        with (package / rel).open("a") as f:
            f.write("\n# edited\n")
        return {stage: _code_fingerprint(stage, package) for stage in ("pretrain", "finetune")}

    assert edited("api/guard.py") == before
    after = edited("finetune.py")
    assert after["pretrain"] == before["pretrain"] and after["finetune"] != before["finetune"]
    assert all(edited("model/sketch.py")[stage] != after[stage] for stage in after)
