"""The tiny profile end to end on CPU: codec, encode cache, pretrain, LoRA finetune, variational layer."""

import json
import shutil

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from bayes_beats import encode, finetune, load_generator
from bayes_beats.model.generate import ModelError


def test_pretrain_lowers_the_loss(tiny_project):
    root, _ = tiny_project
    rows = [line.split(",") for line in (root / "metrics/pretrain_loss.csv").read_text().splitlines()[1:]]
    losses = [float(r[1]) for r in rows]
    assert np.mean(losses[-10:]) < 0.9 * np.mean(losses[:5])


def test_finetune_lowers_the_loss_and_logs_kl(tiny_project):
    root, _ = tiny_project
    metrics = json.loads((root / "metrics/finetune.json").read_text())
    assert metrics["final_loss"] < metrics["first_loss"]
    assert np.isfinite(metrics["final_kl"]) and metrics["final_kl"] >= 0


def test_model_dir_is_self_contained_safetensors_and_json(tiny_project):
    root, _ = tiny_project
    model = root / "models/finetuned"
    files = [p for p in model.rglob("*") if p.is_file()]
    assert {p.suffix for p in files} <= {".safetensors", ".json", ".txt"}
    card = json.loads((model / "model_card.json").read_text())
    assert card["caption_design"] and card["params"]["finetune"]["lora_rank"] == 4


def test_base_saves_and_reloads_bit_identically(tiny_project, tmp_path):
    root, _ = tiny_project
    first = load_generator(root / "models/base").generate(["lo-fi piano"], 2.0, seed=3, output_type="latent")
    shutil.copytree(root / "models/base", tmp_path / "copy")
    again = load_generator(tmp_path / "copy").generate(["lo-fi piano"], 2.0, seed=3, output_type="latent")
    assert torch.equal(torch.from_numpy(first[0][0]), torch.from_numpy(again[0][0]))


def test_lora_reload_reproduces_latents_and_differs_from_base(tiny_project):
    root, _ = tiny_project
    kwargs = dict(duration_s=2.0, seed=5, temperature=0.0, bpm=90, keyscale="A minor", output_type="latent")
    tuned = load_generator(root / "models/finetuned").generate(["a calm misty lake"], **kwargs)[0][0]
    again = load_generator(root / "models/finetuned").generate(["a calm misty lake"], **kwargs)[0][0]
    base = load_generator(root / "models/base").generate(["a calm misty lake"], **kwargs)[0][0]
    assert np.array_equal(tuned, again)
    assert not np.allclose(tuned, base)


def test_variational_layer_temperature(tiny_project):
    root, _ = tiny_project
    gen = load_generator(root / "models/finetuned")
    kwargs = dict(duration_s=2.0, seed=1, num_variations=3, output_type="latent")
    still = gen.generate(["sunset over the sea"], temperature=0.0, **kwargs)[0]
    assert len(still) == 3
    mu_plans = set(gen.last_plans)
    # temperature 0: the variational sample is the mean, so every variation gets the same plan
    assert len({bpm for bpm, _ in mu_plans}) == 1
    varied = gen.generate(["sunset over the sea"], temperature=2.0, **kwargs)[0]
    assert len({round(bpm, 3) for bpm, _ in gen.last_plans}) == 3
    assert not np.allclose(varied[0], varied[1])


def test_generate_returns_audio_of_the_requested_length_in_one_batch(tiny_project):
    root, _ = tiny_project
    gen = load_generator(root / "models/finetuned")
    out = gen.generate(["happy summer beach", "dark rainy night"], duration_s=3.0, seed=0, num_variations=2)
    assert len(out) == 2 and all(len(v) == 2 for v in out)
    audio = out[0][0]
    assert audio.ndim == 2 and abs(audio.shape[1] / gen.sample_rate - 3.0) < 0.05
    assert np.isfinite(audio).all() and np.abs(audio).max() > 0.1


@pytest.mark.parametrize(
    "bad, match",
    [
        (dict(prompts=[""]), "non-empty"),
        (dict(prompts=["x" * 501]), "longer than"),
        (dict(duration_s=99), "duration_s"),
        (dict(temperature=-1), "temperature"),
        (dict(bpm=1000), "bpm"),
        (dict(keyscale="H dorian"), "keyscale"),
    ],
)
def test_bad_generation_requests_get_clear_errors(tiny_project, bad, match):
    root, _ = tiny_project
    gen = load_generator(root / "models/finetuned")
    request = dict(prompts=["calm"], duration_s=2.0, seed=0) | bad
    with pytest.raises(ValueError, match=match):
        gen.generate(**request)


def test_missing_or_corrupt_model_dir_is_a_clear_error(tmp_path):
    with pytest.raises(ModelError, match="not found"):
        load_generator(tmp_path / "nope")
    (tmp_path / "junk").mkdir()
    with pytest.raises(ModelError, match="not a model directory"):
        load_generator(tmp_path / "junk")
    (tmp_path / "junk/model_index.json").write_text("{broken")
    with pytest.raises(ModelError):
        load_generator(tmp_path / "junk")


def test_resumed_finetune_ends_with_the_same_weights(tiny_project, monkeypatch):
    """Keep only the mid-run checkpoint (as a kill after step 6 would) and run again."""
    root, params = tiny_project
    monkeypatch.chdir(root)
    uninterrupted = load_file(root / "models/finetuned/lora/pytorch_lora_weights.safetensors")
    shutil.rmtree(root / "checkpoints/finetune/checkpoint-12")
    shutil.rmtree(root / "models/finetuned")
    finetune.run(params)  # resumes from checkpoint-6
    resumed = load_file(root / "models/finetuned/lora/pytorch_lora_weights.safetensors")
    assert uninterrupted.keys() == resumed.keys()
    assert all(torch.equal(uninterrupted[k], resumed[k]) for k in uninterrupted)


def test_cache_holds_frozen_outputs_so_training_needs_no_frozen_model(tiny_project):
    root, _ = tiny_project
    cache = load_file(root / "data/encoded/train.safetensors")
    assert cache["latents"].shape[-1] == 32 and cache["text_states"].dtype == torch.float16
    assert cache["text_states"].shape[1] == len(encode.VARIANTS)


def test_sketch_guidance_contrasts_the_sketch_with_its_chroma_dropped(tiny_project):
    root, _ = tiny_project
    gen = load_generator(root / "models/finetuned")
    assert gen.pipe.sketch_guidance == gen.card["params"]["finetune"]["sketch_guidance"]
    kwargs = dict(duration_s=2.0, seed=3, temperature=0.0, bpm=90, keyscale="A minor", output_type="latent")
    gen.pipe.sketch_guidance = 1.0
    plain = gen.generate(["a calm misty lake"], **kwargs)[0][0]
    gen.pipe.sketch_guidance = 2.0
    guided = gen.generate(["a calm misty lake"], **kwargs)[0][0]
    assert np.isfinite(guided).all() and not np.allclose(plain, guided)
    assert "forward" not in vars(gen.pipe.transformer)  # the guided forward is removed after the call
    gen.pipe.sketch_guidance = 1.0
    assert np.array_equal(plain, gen.generate(["a calm misty lake"], **kwargs)[0][0])
