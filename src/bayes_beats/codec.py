"""The tiny profile's audio codec: a fixed log-frequency filterbank over an STFT, decoded by
pseudo-inverse + Griffin-Lim. It stands where ACE-Step's Oobleck VAE stands in the pipeline.

Why not mel: below 1 kHz mel bands are wider than a semitone, so mode is lost before the model sees
it (80 mel bins keep mode 63 % of the time, 96 log bands ≈ 1 semitone each keep 88 %; DESIGN.md).
Latents are [batch, channels=n_bands, frames] like the VAE's; normalised per band with corpus statistics.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from diffusers import ConfigMixin, ModelMixin
from diffusers.configuration_utils import register_to_config
from diffusers.models.autoencoders.vae import DecoderOutput


def log_filterbank(sr: int, n_fft: int, n_bands: int, fmin: float, fmax: float) -> np.ndarray:
    """Triangular filters with centres evenly spaced in log frequency → [n_bands, n_fft // 2 + 1]."""
    freqs = np.linspace(0, sr / 2, n_fft // 2 + 1)
    edges = np.geomspace(fmin, fmax, n_bands + 2)
    fb = np.zeros((n_bands, len(freqs)))
    for i in range(n_bands):
        lo, mid, hi = edges[i : i + 3]
        rise, fall = (freqs - lo) / (mid - lo), (hi - freqs) / (hi - mid)
        fb[i] = np.maximum(0, np.minimum(rise, fall))
        if fb[i].sum() == 0:  # narrower than one STFT bin: take the nearest bin
            fb[i, np.argmin(np.abs(freqs - mid))] = 1.0
    return fb / fb.sum(axis=1, keepdims=True)


class SpectrogramCodec(ModelMixin, ConfigMixin):
    @register_to_config
    def __init__(
        self,
        sampling_rate: int = 22050,
        n_fft: int = 2048,
        downsampling_ratios: tuple[int, ...] = (512,),  # the hop; the pipeline reads the frame rate from it
        n_bands: int = 96,
        fmin: float = 50.0,
        fmax: float = 11025.0,
        griffin_lim_iters: int = 32,
        audio_channels: int = 1,
    ) -> None:
        super().__init__()
        fb = torch.tensor(log_filterbank(sampling_rate, n_fft, n_bands, fmin, fmax), dtype=torch.float32)
        self.register_buffer("filterbank", fb)  # [bands, bins]
        self.register_buffer("inverse", torch.linalg.pinv(fb))  # [bins, bands]
        self.register_buffer("window", torch.hann_window(n_fft))
        self.register_buffer("band_mean", torch.zeros(n_bands))
        self.register_buffer("band_std", torch.ones(n_bands))

    @property
    def hop_length(self) -> int:
        return int(math.prod(self.config.downsampling_ratios))

    def set_statistics(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        self.band_mean.copy_(mean)
        self.band_std.copy_(std.clamp(min=1e-3))

    def log_bands(self, audio: torch.Tensor) -> torch.Tensor:
        """[batch, samples] → un-normalised log band energies [batch, bands, frames]."""
        spec = torch.stft(audio.float(), self.config.n_fft, self.hop_length, window=self.window, return_complex=True)
        return torch.log(self.filterbank @ spec.abs() + 1e-5)

    def encode(self, audio: torch.Tensor) -> torch.Tensor:
        """[batch, channels, samples] or [batch, samples] → latents [batch, bands, frames]."""
        if audio.dim() == 3:
            audio = audio.mean(dim=1)
        return (self.log_bands(audio) - self.band_mean[:, None]) / self.band_std[:, None]

    @torch.no_grad()
    def decode(self, latents: torch.Tensor, return_dict: bool = True):
        """[batch, bands, frames] → DecoderOutput(sample=[batch, 1, samples])."""
        bands = torch.exp(latents.float() * self.band_std[:, None] + self.band_mean[:, None])
        magnitude = (self.inverse @ bands).clamp(min=0)  # [batch, bins, frames]
        audio = self.griffin_lim(magnitude)[:, None, :]
        return DecoderOutput(sample=audio) if return_dict else (audio,)

    def griffin_lim(self, magnitude: torch.Tensor, momentum: float = 0.99) -> torch.Tensor:
        """Fast Griffin-Lim (Perraudin et al. 2013), as librosa's, on torch.stft: ~3x librosa's speed here."""
        n_fft, hop = self.config.n_fft, self.hop_length
        length = (magnitude.shape[-1] - 1) * hop
        generator = torch.Generator(device="cpu").manual_seed(0)  # same phases every call: deterministic
        # one [freq, frames] draw shared by every item: an item's audio must not depend on its batch position
        phase = torch.rand(magnitude.shape[-2:], generator=generator).to(magnitude.device).expand_as(magnitude)
        angles = torch.polar(torch.ones_like(magnitude), 2 * math.pi * phase)
        previous = torch.zeros_like(angles)
        for _ in range(self.config.griffin_lim_iters):
            audio = torch.istft(magnitude * angles, n_fft, hop, window=self.window, length=length)
            rebuilt = torch.stft(audio, n_fft, hop, window=self.window, return_complex=True)
            angles = rebuilt - (momentum / (1 + momentum)) * previous
            angles = angles / (angles.abs() + 1e-16)
            previous = rebuilt
        return torch.istft(magnitude * angles, n_fft, hop, window=self.window, length=length)


def fit(params, clips: list[str], sample_rate: int) -> SpectrogramCodec:
    """A codec with per-band statistics from `clips` (paths)."""
    from bayes_beats.audio import load_audio

    codec = SpectrogramCodec(
        sampling_rate=sample_rate,
        n_fft=params.n_fft,
        n_bands=params.n_bands,
        fmin=params.fmin,
        fmax=min(params.fmax, sample_rate / 2),
        griffin_lim_iters=params.griffin_lim_iters,
    )
    with torch.no_grad():
        bands = torch.cat(
            [codec.log_bands(torch.from_numpy(load_audio(p, sample_rate))[None])[0] for p in clips], dim=1
        )
    codec.set_statistics(bands.mean(dim=1), bands.std(dim=1))
    return codec


def round_trip_report(codec: SpectrogramCodec, clips: list[str], sample_rate: int, feature_params, png) -> dict:
    """Log-spectral distance and whether bpm / mode survive encode → decode, on held-out clips."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from bayes_beats.audio import load_audio
    from bayes_beats.features import extract

    lsd, bpm_kept, mode_kept = [], [], []
    for i, path in enumerate(clips):
        audio = torch.from_numpy(load_audio(path, sample_rate))[None]
        with torch.no_grad():
            rebuilt = codec.decode(codec.encode(audio)).sample[0, 0]
        n = min(len(rebuilt), audio.shape[1])
        a, b = codec.log_bands(audio[:, :n])[0], codec.log_bands(rebuilt[None, :n])[0]
        lsd.append(float(((a - b) ** 2).mean(dim=0).sqrt().mean()))  # natural-log units, per frame RMS
        fa, fb = (
            extract(audio[0, :n].numpy(), sample_rate, feature_params),
            extract(rebuilt[:n].numpy(), sample_rate, feature_params),
        )
        ratio = fb["bpm"] / fa["bpm"]
        bpm_kept.append(min(abs(ratio * m - 1) for m in (1, 2, 0.5)) < 0.04)
        mode_kept.append(fa["mode"] == fb["mode"])
        if i == 0:
            fig, axes = plt.subplots(2, 1, figsize=(9, 5), sharex=True)
            for ax, spec, title in ((axes[0], a, "original"), (axes[1], b, "codec round trip")):
                ax.imshow(spec.numpy(), origin="lower", aspect="auto", cmap="magma")
                ax.set_title(f"{title} (log bands)")
            fig.tight_layout()
            fig.savefig(png, dpi=80)
            plt.close(fig)
    return {
        "clips": len(clips),
        "log_spectral_distance": round(sum(lsd) / len(lsd), 4),
        "bpm_kept": round(sum(bpm_kept) / len(clips), 4),
        "mode_kept": round(sum(mode_kept) / len(clips), 4),
    }


def run(params) -> None:
    """`codec` stage → models/codec/ (safetensors + config), metrics/codec.json, reports/codec_roundtrip.png."""
    import logging
    from pathlib import Path

    import datasets

    from bayes_beats.atomic import atomic_dir, write_json

    if params.model.profile != "tiny":  # real checkpoints bring their own VAE
        with atomic_dir("models/codec") as tmp:
            (tmp / "README.txt").write_text(
                f"profile {params.model.profile}: the checkpoint's AutoencoderOobleck is the codec\n"
            )
        write_json("metrics/codec.json", {"profile": params.model.profile, "codec": "checkpoint VAE"})
        return
    dd = datasets.load_from_disk("data/dataset")
    root = Path("data/dataset")
    train = [str(root / f) for f in dd["train"]["filename"][: params.codec.stats_clips]]
    held_out = [str(root / f) for f in dd["validation"]["filename"][: params.codec.eval_clips]]
    codec = fit(params.codec, train, params.sample.sample_rate)
    Path("reports").mkdir(exist_ok=True)
    report = round_trip_report(
        codec, held_out, params.sample.sample_rate, params.features, "reports/codec_roundtrip.png"
    )
    with atomic_dir("models/codec") as tmp:
        codec.save_pretrained(tmp)
    write_json("metrics/codec.json", report)
    logging.getLogger(__name__).info("codec: round trip on %d held-out clips: %s", len(held_out), report)
