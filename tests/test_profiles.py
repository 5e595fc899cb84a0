"""The production profile's code path, offline: a checkpoint in ACE-Step 1.5's diffusers layout with
random tiny weights (Oobleck VAE, a BERT text encoder) goes through encode → pretrain → finetune → generate."""

import json
import os
import shutil

import numpy as np
import pytest
import torch
from conftest import params_with
from diffusers import (
    AceStepConditionEncoder,
    AceStepPipeline,
    AceStepTransformer1DModel,
    AutoencoderOobleck,
    FlowMatchEulerDiscreteScheduler,
)
from safetensors.torch import load_file
from transformers import BertConfig, BertModel

from bayes_beats import codec, encode, finetune, load_generator, pretrain
from bayes_beats.model.sketch import SKETCH_CHANNELS
from bayes_beats.model.text import load_text_encoder


@pytest.fixture(scope="session")
def fake_acestep15(tmp_path_factory):
    root = tmp_path_factory.mktemp("acestep15") / "checkpoint"
    torch.manual_seed(0)
    vae = AutoencoderOobleck(
        encoder_hidden_size=64,  # latent channels = encoder_hidden_size / 2 (64 in ACE-Step 1.5; the sketch takes 19)
        downsampling_ratios=[8, 8, 10],
        channel_multiples=[1, 2, 2],
        decoder_channels=4,
        decoder_input_channels=32,
        audio_channels=2,
        sampling_rate=16000,
    )
    _, tokenizer = load_text_encoder()
    text_encoder = BertModel(
        BertConfig(
            hidden_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            intermediate_size=64,
            vocab_size=tokenizer.vocab_size,
        )
    )
    transformer = AceStepTransformer1DModel(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=32,
        in_channels=96,
        audio_acoustic_hidden_dim=32,
        is_turbo=True,
    )
    condition_encoder = AceStepConditionEncoder(
        hidden_size=64,
        intermediate_size=128,
        text_hidden_dim=32,
        timbre_hidden_dim=32,
        num_lyric_encoder_hidden_layers=1,
        num_timbre_encoder_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=32,
    )
    with torch.no_grad():  # as in real checkpoints: the VAE's encoding of silence
        silence = vae.encode(torch.zeros(1, 2, 16000)).latent_dist.mean[0, :, :1].T
        condition_encoder.silence_latent.copy_(silence.expand_as(condition_encoder.silence_latent[0])[None])
    pipe = AceStepPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        transformer=transformer,
        condition_encoder=condition_encoder,
        scheduler=FlowMatchEulerDiscreteScheduler(num_train_timesteps=1, shift=1.0),
    )
    pipe.save_pretrained(root)
    return root


def test_acestep15_profile_runs_the_same_stages_on_a_real_format_checkpoint(tiny_project, fake_acestep15, tmp_path):
    project, params = tiny_project
    shutil.copytree(project / "data/dataset", tmp_path / "data/dataset")
    model = params.model.model_copy(update={"profile": "acestep15", "checkpoint_dir": str(fake_acestep15)})
    params = params.model_copy(update={"model": model})
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        for stage in (codec, encode, pretrain, finetune):
            stage.run(params)
        assert json.loads((tmp_path / "models/base/base.json").read_text())["checkpoint_dir"] == str(
            fake_acestep15.resolve()
        )
        assert (tmp_path / "models/finetuned/base.json").is_file()  # referenced, not copied
        cache = load_file(tmp_path / "data/encoded/train.safetensors")
        gen = load_generator(tmp_path / "models/finetuned")
        audio = gen.generate(["a quiet snowy forest"], duration_s=2.0, seed=0, temperature=0.5)[0][0]
        # the sketch's channels (beat grid, half bar, chords, energy) and the energy override, in its latents
        fixed = dict(duration_s=2.0, seed=0, temperature=0.0, bpm=120, keyscale="D minor", output_type="latent")
        calm, calm_plan = gen.generate_with_plans(["a quiet snowy forest"], energy=0.1, **fixed)
        loud, loud_plan = gen.generate_with_plans(["a quiet snowy forest"], energy=0.9, **fixed)
        # beat guidance (a third DiT branch at double time) runs through the real layout's DiT too
        slow = dict(fixed, bpm=70)
        gen.guidance.update(beat_guidance=8.0, beat_guidance_above_t=0.0, beat_guidance_below_bpm=80.0)
        steered, _ = gen.generate_with_plans(["a quiet snowy forest"], **slow)
        gen.guidance["beat_guidance"] = 0.0
        plain, _ = gen.generate_with_plans(["a quiet snowy forest"], **slow)
    finally:
        os.chdir(cwd)
    assert (
        cache["chords"].shape[-1] == 12
        and cache["origin"].le(0).all()
        and ((cache["energy"] >= 0) & (cache["energy"] <= 1)).all()
    )
    assert gen.pipe.transformer.config.audio_acoustic_hidden_dim >= SKETCH_CHANNELS
    assert (calm_plan[0]["energy"], loud_plan[0]["energy"]) == (0.1, 0.9) and not np.allclose(calm, loud)
    assert np.isfinite(steered).all() and not np.allclose(steered, plain)
    assert gen.sample_rate == 16000 and audio.shape[0] == 2  # the checkpoint's own rate and channels
    assert abs(audio.shape[1] / 16000 - 2.0) < 0.05 and np.isfinite(audio).all()


def test_acestep15_without_a_checkpoint_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    params = params_with(model={"profile": "acestep15", "checkpoint_dir": str(tmp_path / "missing")})
    with pytest.raises(FileNotFoundError, match="model_index.json"):
        pretrain.run(params)
    with pytest.raises(ValueError, match="checkpoint_dir is empty"):
        pretrain.run(params_with(model={"profile": "acestep15"}))
