"""The tiny profile end to end on CPU: codec, encode cache, pretrain, LoRA finetune, variational layer."""

import copy
import json
import math
import shutil
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch
from conftest import params_with
from diffusers import AceStepConditionEncoder, AceStepTransformer1DModel
from safetensors.torch import load_file

import bayes_beats
from bayes_beats import encode, finetune, load_generator
from bayes_beats.model.codec import SpectrogramCodec
from bayes_beats.model.conditioning import FrozenTimbre, frame_rate
from bayes_beats.model.denoiser import build_tiny_denoiser
from bayes_beats.model.diffusers_adapter import (
    DIFFUSERS_VERSION,
    encode_conditions,
    metadata_string,
    pack_sequences,
    timestep_schedule,
)
from bayes_beats.model.generate import Generator, ModelError
from bayes_beats.model.pipeline import VibePipeline, assemble
from bayes_beats.model.vibe import VariationalPromptHead, VibePlanner


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


def test_a_base_runs_on_the_params_its_card_records(tiny_project, tmp_path, monkeypatch):
    root, params = tiny_project
    card = json.loads((root / "models/base/model_card.json").read_text())
    assert card["params"]["model"] == params.model.model_dump()
    assert not (root / "models/finetuned/base/model_card.json").exists()  # the fine-tune's card is its own
    monkeypatch.chdir(tmp_path)  # no params.yaml here: the card is what the generator reads
    assert load_generator(root / "models/base").params == params.model


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


def test_variations_are_stratified_draws_of_the_plan_and_temperature_scales_them(tiny_project):
    root, _ = tiny_project
    gen = load_generator(root / "models/finetuned")
    kwargs = dict(duration_s=2.0, seed=1, num_variations=4, output_type="latent")
    still = gen.generate(["sunset over the sea"], temperature=0.0, **kwargs)[0]
    assert len(still) == 4
    mode = gen.last_plans
    assert len({(p["bpm"], p["energy"]) for p in mode}) == 1  # temperature 0: every take plays the mode
    gen.generate(["sunset over the sea"], temperature=1.0, **kwargs)
    drawn = gen.last_plans
    tempo = np.log([p["bpm"] for p in drawn]) - np.log(mode[0]["bpm"])
    # take 1 plays the mode; the others, a Latin hypercube (one per third of the tempo plan), straddle it
    assert tempo[0] == pytest.approx(0, abs=1e-4) and len(set(tempo.round(6))) == 4 and tempo.min() < 0 < tempo.max()
    gen.generate(["sunset over the sea"], temperature=0.5, **kwargs)
    half = np.log([p["bpm"] for p in gen.last_plans]) - np.log(mode[0]["bpm"])
    assert np.allclose(half, tempo / 2, atol=1e-3)  # the same draws, half the spread
    assert drawn[0]["plan"]["bpm"]["low"] < mode[0]["bpm"] < drawn[0]["plan"]["bpm"]["high"]
    again = gen.generate(["sunset over the sea"], temperature=1.0, **kwargs)[0]
    assert gen.last_plans == drawn and np.array_equal(
        again[0], gen.generate(["sunset over the sea"], temperature=1.0, **kwargs)[0][0]
    )


def test_a_taste_tilts_the_plan_toward_what_was_liked(tiny_project):
    root, _ = tiny_project
    gen = load_generator(root / "models/finetuned")
    kwargs = dict(duration_s=2.0, seed=3, num_variations=3, temperature=1.0, output_type="latent")
    _, anonymous = gen.generate_with_plans(["a rainy street at night"], **kwargs)
    _, faster = gen.generate_with_plans(["a rainy street at night"], taste=[2.0, 0.0, 0.0], **kwargs)
    assert all(f["bpm"] > a["bpm"] for f, a in zip(faster, anonymous, strict=True))
    assert faster[0]["plan"]["bpm"]["mid"] > anonymous[0]["plan"]["bpm"]["mid"]
    assert all(f["features"][0] > a["features"][0] for f, a in zip(faster, anonymous, strict=True))
    _, neutral = gen.generate_with_plans(["a rainy street at night"], taste=[0.0, 0.0, 0.0], **kwargs)
    assert neutral == anonymous
    with pytest.raises(ValueError, match="taste"):
        gen.generate_with_plans(["a rainy street at night"], taste=[1.0], **kwargs)


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
        (dict(energy=1.5), "energy"),
        (dict(energy=-0.1), "energy"),
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


def test_sketch_guidance_contrasts_the_sketch_with_the_sketch_dropped(tiny_project):
    root, _ = tiny_project
    gen = load_generator(root / "models/finetuned")
    card = gen.card["params"]["finetune"]
    keys = ("sketch_guidance", "beat_guidance", "beat_guidance_above_t", "beat_guidance_below_bpm")
    assert gen.guidance == {k: card[k] for k in keys}
    slow_only = {**gen.guidance, "beat_guidance": 6.0, "beat_guidance_below_bpm": 80.0}
    gen.guidance = slow_only
    assert gen.guidance_for([60.0, 300.0])["beat_guidance"] == [6.0, 0.0]  # slow plans only
    assert "beat_guidance_below_bpm" not in gen.guidance_for([60.0])  # the DiT is asked for its own keys
    kwargs = dict(duration_s=2.0, seed=3, temperature=0.0, bpm=90, keyscale="A minor", output_type="latent")
    off = {"sketch_guidance": 1.0, "beat_guidance": 0.0, "beat_guidance_above_t": 0.8}
    gen.guidance = off
    plain = gen.generate(["a calm misty lake"], **kwargs)[0][0]
    gen.guidance = off | {"sketch_guidance": 2.0}
    guided = gen.generate(["a calm misty lake"], **kwargs)[0][0]
    assert np.isfinite(guided).all() and not np.allclose(plain, guided)
    gen.guidance = off | {"sketch_guidance": 2.0, "beat_guidance": 4.0}  # steers away from double time
    beat = gen.generate(["a calm misty lake"], **kwargs)[0][0]
    assert np.isfinite(beat).all() and not np.allclose(beat, guided)
    gen.guidance = off | {"sketch_guidance": 2.0, "beat_guidance": 4.0, "beat_guidance_above_t": 0.99}
    first = gen.generate(["a calm misty lake"], **kwargs)[0][0]  # on the first step only (t = 1): in between
    assert np.abs(first - guided).mean() < np.abs(beat - guided).mean()
    # guidance is the sampler's, asked per call: the DiT and condition encoder are diffusers' own classes
    assert type(gen.pipe.transformer) is AceStepTransformer1DModel
    assert type(gen.pipe.condition_encoder) is AceStepConditionEncoder
    assert "forward" not in vars(gen.pipe.transformer) and "forward" not in vars(gen.pipe.condition_encoder)
    gen.guidance = off
    assert np.array_equal(plain, gen.generate(["a calm misty lake"], **kwargs)[0][0])


def test_double_time_doubles_the_beat_phase():
    from bayes_beats.model.sketch import DEFAULT_DEGREES, chords_of, double_time, sketch

    chords = chords_of(DEFAULT_DEGREES, 0, "major")
    slow, fast = sketch(60.0, chords, 0.5, 200, 43.0), sketch(120.0, chords, 0.5, 200, 43.0)
    doubled = double_time(slow)
    assert torch.allclose(doubled[:, :6], fast[:, :6], atol=1e-4)  # the grid is the 120-BPM grid
    assert torch.equal(doubled[:, 6:], slow[:, 6:])  # chords and energy as they were


# ---- an untrained tiny model (constructors only, seconds to build): loading, saved layouts, concurrency

MODEL = params_with(model={"hidden_size": 64, "num_layers": 1, "head_dim": 32, "num_inference_steps": 4}).model
CODEC = params_with(codec={"n_bands": 32}).codec
GUIDANCE = params_with(finetune={"sketch_guidance": 2.0, "beat_guidance": 0.0}).finetune
CARD = {"params": {"model": MODEL.model_dump(), "finetune": GUIDANCE.model_dump()}}


@pytest.fixture(scope="module")
def untrained(tmp_path_factory):
    """base/ (a fresh `save_pretrained`) and finetuned/ (that base, random heads, guidance 2 in its card)."""
    root = tmp_path_factory.mktemp("untrained")
    codec = SpectrogramCodec(n_bands=CODEC.n_bands, griffin_lim_iters=CODEC.griffin_lim_iters)
    pipe = assemble(codec, *build_tiny_denoiser(codec, MODEL))
    pipe.save_pretrained(root / "base", safe_serialization=True)
    torch.manual_seed(0)
    head = VariationalPromptHead()
    planner = VibePlanner(n_anchors=8, n_progressions=4, log_bpm=(4.6, 0.1, 0.3), energy=(0.0, 0.2, 1.0))
    with torch.no_grad():  # the head starts as the identity: shake it; random anchors and progressions
        for p in head.parameters():
            p.add_(0.05 * torch.randn_like(p))
        planner.anchor_embeddings.normal_()
        planner.anchor_va.uniform_(-1, 1)
        planner.progressions.copy_(torch.where(torch.rand(4, 16, 12) < 0.25, 1.0, -1.0))
        planner.progression_major.copy_(torch.tensor([True, True, False, False]))
    shutil.copytree(root / "base", root / "finetuned/base")
    head.save_pretrained(root / "finetuned/prompt_head")
    planner.save_pretrained(root / "finetuned/planner")
    (root / "finetuned/model_card.json").write_text(json.dumps(CARD))
    return root, pipe, head, planner


def test_a_fresh_save_names_diffusers_classes_or_this_package_and_loads_as_built(untrained):
    root, pipe, _, _ = untrained
    index = json.loads((root / "base/model_index.json").read_text())
    assert index["vae"] == ["bayes_beats", "SpectrogramCodec"]  # the package's export, not its module today
    assert index["transformer"] == ["diffusers", "AceStepTransformer1DModel"]  # diffusers' own classes
    assert index["condition_encoder"] == ["ace_step", "AceStepConditionEncoder"]
    for name in (v[1] for v in index.values() if isinstance(v, list) and v[0] == "bayes_beats"):
        assert getattr(bayes_beats, name).__name__ == name  # every name a save writes is exported
    gen = load_generator(root / "base", device="cpu")
    assert type(gen.pipe.transformer) is AceStepTransformer1DModel
    assert type(gen.pipe.condition_encoder) is AceStepConditionEncoder
    kwargs = dict(duration_s=2.0, seed=[4, 8], num_variations=2, output_type="latent")
    built = Generator(pipe, gen.params).generate(["lo-fi piano", "slow strings"], **kwargs)
    loaded = gen.generate(["lo-fi piano", "slow strings"], **kwargs)
    assert np.array_equal(np.array(built), np.array(loaded))


@pytest.mark.parametrize("library", ["bayes_beats", "bayes_beats.codec"])
def test_a_model_saved_in_an_older_layout_still_loads(untrained, tmp_path, library):
    """model_index.json as earlier code wrote it: the package's classes named by the package, or by the
    module they lived in before `model/` (`bayes_beats.codec`: the layout of the run in dvc.lock), heads
    saved in the pipeline; the DiT and condition encoder by diffusers' own classes."""
    root, _, head, planner = untrained
    old = tmp_path / "old"
    shutil.copytree(root / "base", old)
    head.save_pretrained(old / "prompt_head")
    planner.save_pretrained(old / "planner")
    index = json.loads((old / "model_index.json").read_text())
    heads = "bayes_beats" if library == "bayes_beats" else "bayes_beats.vibe"
    index |= {
        "vae": [library, "SpectrogramCodec"],
        "prompt_head": [heads, "VariationalPromptHead"],
        "planner": [heads, "VibePlanner"],
    }
    (old / "model_index.json").write_text(json.dumps(index))
    gen = load_generator(old, device="cpu")
    assert isinstance(gen.pipe.prompt_head, VariationalPromptHead) and isinstance(gen.pipe.planner, VibePlanner)
    assert type(gen.pipe.condition_encoder) is AceStepConditionEncoder
    kwargs = dict(duration_s=2.0, seed=2, temperature=1.0, output_type="latent")
    # the same model in today's layout, run as the old dir is (no model card: default params, no guidance)
    now = Generator(load_generator(root / "finetuned", device="cpu").pipe, gen.params)
    assert np.array_equal(gen.generate(["rain"], **kwargs)[0][0], now.generate(["rain"], **kwargs)[0][0])
    assert gen.last_plans == now.last_plans


def test_a_card_with_retired_model_keys_still_loads(untrained, tmp_path):
    """Cards of registered models carry model.device and model.dtype, which ModelParams (extra="forbid")
    no longer has: the card's reader drops them, and the rest of the card is the model's params."""
    root, _, _, _ = untrained
    older = tmp_path / "older"
    shutil.copytree(root / "finetuned", older)
    card = copy.deepcopy(CARD)
    card["params"]["model"] |= {"device": "auto", "dtype": "auto"}
    (older / "model_card.json").write_text(json.dumps(card))
    gen = load_generator(older, device="cpu")
    assert gen.params == MODEL and gen.guidance["sketch_guidance"] == 2.0
    card["params"]["model"]["devices"] = "auto"  # any other unknown key is still an error naming it
    (older / "model_card.json").write_text(json.dumps(card))
    with pytest.raises(ModelError, match="devices"):
        load_generator(older, device="cpu")


def test_concurrent_calls_on_one_pipeline_render_their_own_plans(untrained):
    """The plan travels in the call: two threads sharing a generator get what each gets alone."""
    root, _, _, _ = untrained
    gen = load_generator(root / "finetuned", device="cpu")
    assert gen.guidance["sketch_guidance"] == 2.0
    requests = [
        dict(prompts=["a calm misty lake"], seed=1, bpm=70, keyscale="A minor"),
        dict(prompts=["happy summer beach", "dark rainy night"], seed=[2, 5], num_variations=2, temperature=1.5),
    ]
    alone = [gen.generate(**r, duration_s=2.0, output_type="latent") for r in requests]
    barrier = threading.Barrier(len(requests))

    def render(request):
        barrier.wait()
        return [gen.generate(**request, duration_s=2.0, output_type="latent") for _ in range(3)]

    with ThreadPoolExecutor(len(requests)) as pool:
        together = list(pool.map(render, requests))
    for one, runs in zip(alone, together, strict=True):
        for run in runs:
            assert np.array_equal(np.array(one), np.array(run))
    assert not {"plan", "guidance", "sketch_guidance"} & set(
        vars(gen.pipe)
    )  # nothing of a call is left on the pipeline


def test_adapter_is_pinned_to_the_diffusers_release_it_mirrors():
    import diffusers

    assert diffusers.__version__ == DIFFUSERS_VERSION, (
        f"diffusers {diffusers.__version__} is installed, but model/diffusers_adapter.py mirrors diffusers "
        f"{DIFFUSERS_VERSION}: compare each mirror with the new release (the tests below), then move "
        "DIFFUSERS_VERSION"
    )


def test_adapter_mirrors_match_the_diffusers_originals(untrained):
    """Each private helper the adapter copies, against the original in the pinned release."""
    from diffusers import AceStepPipeline
    from diffusers.pipelines.ace_step.modeling_ace_step import _pack_sequences

    for metas in [(120, "A minor", "4", 10.0), (None, "", None, 0.0), (0, " ", " ", 2.5)]:
        assert metadata_string(*metas) == AceStepPipeline._build_metadata_string(*metas)
    for steps, shift in [(8, 3.0), (4, 1.0), (3, 2.0)]:
        schedule = AceStepPipeline._get_timestep_schedule(None, steps, shift, dtype=torch.float32)
        assert torch.equal(timestep_schedule(steps, shift), schedule)
    hidden = (torch.randn(3, 5, 4), torch.randn(3, 2, 4))
    masks = (torch.rand(3, 5) < 0.6, torch.ones(3, 2, dtype=torch.long))
    for ours, theirs in zip(pack_sequences(*hidden, *masks), _pack_sequences(*hidden, *masks), strict=True):
        assert torch.equal(ours, theirs)


def test_adapter_encodes_conditions_as_the_diffusers_condition_encoder(untrained):
    """`encode_conditions` with the once-encoded timbre = `AceStepConditionEncoder.forward`, which encodes
    every item's copy of the reference (batched matmuls: equal to float rounding, not bit for bit)."""
    _, pipe, _, _ = untrained
    encoder, n = pipe.condition_encoder, 3
    rate = frame_rate(pipe.vae.config)
    text = (torch.randn(n, 8, 384), torch.rand(n, 8) < 0.7)
    lyric = (torch.randn(n, 4, 384), torch.ones(n, 4, dtype=torch.bool))
    reference = encoder.silence_latent[:, : math.ceil(30 * rate)].expand(n, -1, -1)
    with torch.no_grad():
        ours = encode_conditions(encoder, *text, *lyric, *FrozenTimbre()(encoder, rate, "cpu", torch.float32))
        theirs, _ = encoder(*text, *lyric, reference, torch.arange(n))
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-6)


def test_adapter_sampler_is_diffusers_ace_step_loop(untrained):
    """Without a plan, one item (diffusers encodes the timbre per item) and the same prompt encoding, the
    sampler is `AceStepPipeline.__call__` of the pinned release, bit for bit."""
    from diffusers import AceStepPipeline, FlowMatchEulerDiscreteScheduler

    from bayes_beats.model.text import encode_lyrics, encode_text, format_prompt

    class Reference(AceStepPipeline):
        def encode_prompt(self, prompt, lyrics, device, audio_duration=60.0, bpm=None, keyscale=None, **_):
            texts = [format_prompt(p, bpm, keyscale, audio_duration) for p in prompt]
            states, mask = encode_text(self.tokenizer, self.text_encoder, texts, device)
            return states, mask, *encode_lyrics(self.tokenizer, self.text_encoder, len(prompt), device)

    _, pipe, _, _ = untrained
    parts = {k: getattr(pipe, k) for k in ("vae", "text_encoder", "tokenizer", "transformer", "condition_encoder")}
    reference = Reference(**parts, scheduler=FlowMatchEulerDiscreteScheduler.from_config(pipe.scheduler.config))
    reference.set_progress_bar_config(disable=True)
    noise = torch.randn(1, math.ceil(2.0 * pipe.latents_per_second), 32, generator=torch.Generator().manual_seed(0))
    call = dict(prompt=["lo-fi piano"], audio_duration=2.0, num_inference_steps=4, shift=3.0, latents=noise, bpm=90)
    ours = pipe(**call, keyscale="A minor", output_type="latent").audios
    theirs = reference(**call, keyscale="A minor", guidance_scale=1.0, output_type="latent").audios
    assert torch.equal(ours, theirs)


def test_the_timbre_of_silence_is_encoded_once_and_only_for_a_frozen_encoder(untrained):
    _, pipe, _, _ = untrained
    encoder = copy.deepcopy(pipe.condition_encoder)  # the fixture's weights stay as they are
    timbre = FrozenTimbre()
    with torch.no_grad():
        first = timbre(encoder, 43.0, "cpu", torch.float32)
        assert timbre(encoder, 43.0, "cpu", torch.float32)[0] is first[0]  # a lookup, not a second pass
        other = timbre(copy.deepcopy(encoder), 43.0, "cpu", torch.float32)  # another model: encoded again
    assert other[0] is not first[0] and torch.equal(other[0], first[0])
    with pytest.raises(ValueError, match="frozen"):  # a timbre encoder in training would not stay one vector
        timbre(encoder, 43.0, "cpu", torch.float32)


def test_a_bf16_pipeline_renders_finite_fp32_audio(untrained):
    """On a GPU the pipeline runs in bf16: the codec's signal work (filterbank, Griffin-Lim) stays fp32.
    (Seen on an H200: the bf16 cast made decode fail on `inverse @ bands`.) The same cast runs on CPU."""
    root, _, _, _ = untrained
    pipe = VibePipeline.from_pretrained(root / "finetuned/base", local_files_only=True, dtype=torch.bfloat16)
    pipe.register_modules(
        prompt_head=VariationalPromptHead.from_pretrained(root / "finetuned/prompt_head").to(torch.bfloat16),
        planner=VibePlanner.from_pretrained(root / "finetuned/planner").to(torch.bfloat16),
    )
    pipe.set_progress_bar_config(disable=True)
    audio, plans = Generator(pipe, MODEL).generate_with_plans(["rain on a tin roof"], 2.0, seed=0, energy=0.7)
    assert audio[0][0].dtype == np.float32 and np.isfinite(audio[0][0]).all() and np.abs(audio[0][0]).max() > 0
    assert plans[0]["energy"] == 0.7
