"""Training mechanics on the tiny project: kill -9 and resume, 2-process DDP, cached vs on-the-fly."""

import os
import signal
import subprocess
import time

import datasets
import pytest
import torch
from conftest import BIN, free_port, project_copy
from safetensors.torch import load_file

from bayes_beats.model.codec import SpectrogramCodec
from bayes_beats.model.pipeline import AudioEncoder, build_tiny_denoiser, load_text_encoder
from bayes_beats.model.train import CachedClips, Denoiser, LiveClips, make_batch

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
    text_encoder, tokenizer = load_text_encoder()
    live = LiveClips(
        datasets.load_from_disk("data/dataset")["train"],
        root / "data/dataset",
        AudioEncoder(codec, params.sample.sample_rate),
        tokenizer,
        text_encoder,
        params,
    )
    frame_rate = codec.config.sampling_rate / codec.hop_length
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
    off = params.finetune.model_copy(update={"sketch_dropout": 0.0, "text_dropout": 0.0})
    on = params.finetune.model_copy(update={"sketch_dropout": 0.5, "text_dropout": 0.5, "batch_size": 64})
    plain = make_batch(clips, off, 0, 0, 43.0, (1, 2, 3), True)
    assert "drop_sketch" not in plain and "drop_text" not in plain
    dropped = make_batch(clips, on.model_copy(update={"batch_size": off.batch_size}), 0, 0, 43.0, (1, 2, 3), True)
    for key in ("x0", "noise", "t", "eps"):  # dropout leaves the rest of the batch as it was
        torch.testing.assert_close(plain[key], dropped[key])
    wide = make_batch(clips, on, 0, 0, 43.0, (1, 2, 3), True)
    assert 0 < wide["drop_sketch"].sum() < 64 and 0 < wide["drop_text"].sum() < 64


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
