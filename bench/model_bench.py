"""Model benchmarks: generation real-time factor, cached vs on-the-fly training, LoRA VRAM estimate."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import torch


def generation_rtf(model_dir: str = "models/finetuned", seconds: float = 10.0, repeats: int = 9) -> dict:
    """Seconds of audio per second of compute for one 10-s prompt, decode included: the median of repeats,
    with the fastest and slowest (this 2-core VM's times wander by a third from one minute to the next)."""
    from bayes_beats import load_generator

    torch.set_num_threads(2)
    gen = load_generator(model_dir)
    prompt = ["a calm lake at dawn, gentle and warm"]  # slow: beat guidance's third branch runs
    gen.generate(prompt, seconds, seed=0)  # warm-up
    full, latent = [], []
    for seed in range(repeats):
        start = time.perf_counter()
        gen.generate(prompt, seconds, seed=seed, output_type="latent")
        latent.append(time.perf_counter() - start)
        start = time.perf_counter()
        gen.generate(prompt, seconds, seed=seed)
        full.append(time.perf_counter() - start)
    full_s, latent_s = sorted(full)[repeats // 2], sorted(latent)[repeats // 2]
    return {
        "audio_seconds": seconds,
        "repeats": repeats,
        "total_s": round(full_s, 3),
        "total_s_fastest": round(min(full), 3),
        "total_s_slowest": round(max(full), 3),
        "to_latents_s": round(latent_s, 3),
        "decode_s": round(full_s - latent_s, 3),
        "real_time_factor": round(seconds / full_s, 1),
    }


def _in_own_process(*argv: str) -> dict:
    """Run a bench script in a fresh Python and return the JSON object its last line prints."""
    done = subprocess.run([sys.executable, *argv], capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(done.stderr[-2000:])
    return json.loads(done.stdout.strip().splitlines()[-1])


def generation_rtf_alone() -> dict:
    """`generation_rtf` in a fresh process, as serving runs it: nothing the benchmarks before it left behind
    (worker pools, numba and BLAS threads, a fragmented heap) shares its two cores."""
    return _in_own_process(__file__, "generation")


def training_cached_vs_live(steps: int = 8) -> dict:
    """Each mode in its own process, so peak RSS is that mode's alone."""
    out = {}
    for mode in ("cached", "live"):
        out[mode] = _in_own_process("bench/train_probe.py", mode, str(steps))
    out["speedup_cached_vs_live"] = round(out["cached"]["samples_per_s"] / out["live"]["samples_per_s"], 2)
    out["rss_ratio_live_vs_cached"] = round(out["live"]["peak_rss_mb"] / out["cached"]["peak_rss_mb"], 2)
    return out


def acestep15_lora_vram_estimate(batch: int = 1, seconds: float = 30.0, rank: int = 16) -> dict:
    """Paper estimate of peak VRAM for LoRA on ACE-Step 1.5 2B-turbo with our cache (bf16 weights).

    Resident: DiT + condition encoder (frozen, bf16), LoRA weights + grads + Adam moments (fp32), activations.
    Not resident, thanks to `encode`: the Qwen3 text encoder and the Oobleck VAE and their activations."""
    gb = 1024**3
    dit, condition, text_encoder, vae = 1.58e9, 0.61e9, 0.6e9, 0.17e9  # docs/design.md, "ACE-Step 1.5 sizes"
    hidden, layers, kv_dim, mlp = 2048, 24, 1024, 6144  # ACE-Step 1.5 DiT config
    # to_q/to_out: hidden→hidden, to_k/to_v: hidden→kv_dim; self- and cross-attention in every layer
    lora_params = layers * 2 * rank * (2 * (hidden + hidden) + 2 * (hidden + kv_dim))
    tokens = batch * seconds * 25 / 2  # 25 latent frames/s, patch size 2
    encoder_tokens = batch * (96 + 16 + 750 / 2)  # text, lyrics, timbre (packed)
    # per layer: ~16 hidden-sized tensors + the MLP's 3 intermediate ones kept for backward, bf16
    activations = layers * 2 * (tokens * (16 * hidden + 3 * mlp) + encoder_tokens * 4 * hidden)
    parts = {
        "dit_weights": dit * 2,
        "condition_encoder_weights": condition * 2,
        "lora_and_adam": lora_params * 16,
        "activations": activations,
        "cuda_context_and_workspace": 0.8 * gb,
    }
    total = sum(parts.values())
    return {
        "batch": batch,
        "clip_seconds": seconds,
        "lora_rank": rank,
        "lora_params_m": round(lora_params / 1e6, 1),
        **{f"{k}_gb": round(v / gb, 2) for k, v in parts.items()},
        "total_gb": round(total / gb, 2),
        "avoided_by_cache_gb": round((text_encoder + vae) * 2 / gb, 2),
        "goal_gb": 12,
        "meets_goal": total / gb <= 12,
    }


def main() -> dict:
    return {
        "generation_10s": generation_rtf_alone(),
        "training_cached_vs_live": training_cached_vs_live(),
        "acestep15_lora_vram_estimate": acestep15_lora_vram_estimate(),
    }


if __name__ == "__main__":
    if sys.argv[1:] == ["generation"]:
        print(json.dumps(generation_rtf()))
    else:
        print(json.dumps(main(), indent=2))
