"""The tiny profile's audio codec: a fixed log-frequency filterbank over an STFT, decoded by
pseudo-inverse + Griffin-Lim. It stands where ACE-Step's Oobleck VAE stands in the pipeline.

Why not mel: below 1 kHz mel bands are wider than a semitone, so mode is lost before the model sees
it (80 mel bins keep mode 63 % of the time, 96 log bands ≈ 1 semitone each keep 88 %; docs/design.md,
"The tiny profile, measured").
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
        *,
        griffin_lim_iters: int,  # params.yaml codec.griffin_lim_iters: decode time against round-trip quality
        sampling_rate: int = 22050,
        n_fft: int = 2048,
        downsampling_ratios: tuple[int, ...] = (512,),  # the hop; the pipeline reads the frame rate from it
        n_bands: int = 96,
        fmin: float = 50.0,
        fmax: float = 11025.0,
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
        window = self.window.float()  # signal work stays in fp32 when the pipeline is cast to bf16
        spec = torch.stft(audio.float(), self.config.n_fft, self.hop_length, window=window, return_complex=True)
        return torch.log(self.filterbank.float() @ spec.abs() + 1e-5)

    def encode(self, audio: torch.Tensor) -> torch.Tensor:
        """[batch, channels, samples] or [batch, samples] → latents [batch, bands, frames]."""
        if audio.dim() == 3:
            audio = audio.mean(dim=1)
        return (self.log_bands(audio) - self.band_mean.float()[:, None]) / self.band_std.float()[:, None]

    @torch.no_grad()
    def decode(self, latents: torch.Tensor, return_dict: bool = True):
        """[batch, bands, frames] → DecoderOutput(sample=[batch, 1, samples]), in fp32 whatever the codec's
        dtype (a bf16 pipeline on a GPU casts its buffers; Griffin-Lim needs fp32)."""
        bands = torch.exp(latents.float() * self.band_std.float()[:, None] + self.band_mean.float()[:, None])
        magnitude = (self.inverse.float() @ bands).clamp(min=0)  # [batch, bins, frames]
        audio = self.griffin_lim(magnitude)[:, None, :]
        return DecoderOutput(sample=audio) if return_dict else (audio,)

    def griffin_lim(self, magnitude: torch.Tensor, momentum: float = 0.99) -> torch.Tensor:
        """Fast Griffin-Lim (Perraudin et al. 2013), as librosa's, on torch.stft: ~3x librosa's speed here."""
        n_fft, hop, window = self.config.n_fft, self.hop_length, self.window.float()
        length = (magnitude.shape[-1] - 1) * hop
        generator = torch.Generator(device="cpu").manual_seed(0)  # same phases every call: deterministic
        # one [freq, frames] draw shared by every item: an item's audio must not depend on its batch position
        phase = torch.rand(magnitude.shape[-2:], generator=generator).to(magnitude.device).expand_as(magnitude)
        angles = torch.polar(torch.ones_like(magnitude), 2 * math.pi * phase)
        previous = torch.zeros_like(angles)
        for _ in range(self.config.griffin_lim_iters):
            audio = torch.istft(magnitude * angles, n_fft, hop, window=window, length=length)
            rebuilt = torch.stft(audio, n_fft, hop, window=window, return_complex=True)
            angles = rebuilt - (momentum / (1 + momentum)) * previous
            angles = torch.sgn(angles)  # z / |z| in one kernel, 0 at 0: 4x faster than dividing by abs()
            previous = rebuilt
        return torch.istft(magnitude * angles, n_fft, hop, window=window, length=length)
