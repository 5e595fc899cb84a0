"""Where each profile's weights come from (tiny: models/base itself; acestep15: the diffusers checkpoint
directory it points to, local or gs://) and the frozen encoders `encode` runs once for training."""

from __future__ import annotations

from pathlib import Path

import torch

from bayes_beats.core import paths
from bayes_beats.core.config import ModelParams
from bayes_beats.model.codec import SpectrogramCodec
from bayes_beats.model.conditioning import frame_rate
from bayes_beats.model.text import load_text_encoder


def resolve_checkpoint(params: ModelParams) -> Path:
    """acestep15's AceStepPipeline directory (diffusers format); a gs:// URL is mirrored locally first."""
    if not params.checkpoint_dir:
        raise ValueError(
            "model.checkpoint_dir is empty: the acestep15 profile needs an AceStepPipeline directory "
            "in diffusers format (local path or gs://bucket/prefix)"
        )
    if params.checkpoint_dir.startswith("gs://"):
        from bayes_beats.core import gcs

        bucket, prefix = gcs.split_url(params.checkpoint_dir)
        return gcs.sync_dir(params.checkpoint_dir, paths.CHECKPOINT_CACHE / bucket / prefix)
    path = Path(params.checkpoint_dir)
    if not (path / "model_index.json").is_file():
        raise FileNotFoundError(
            f"no model_index.json in model.checkpoint_dir={path}: not a diffusers pipeline directory"
        )
    return path


class AudioEncoder:
    """Mono clips at the dataset's rate → latents [batch, channels, frames], whichever codec the profile has."""

    def __init__(self, vae, sample_rate: int) -> None:
        self.vae, self.sample_rate = vae, sample_rate
        self.frame_rate = frame_rate(vae.config)

    @torch.no_grad()
    def __call__(self, audio: torch.Tensor) -> torch.Tensor:
        if isinstance(self.vae, SpectrogramCodec):
            return self.vae.encode(audio)
        import soxr

        rate, channels = self.vae.config.sampling_rate, self.vae.config.audio_channels
        audio = torch.from_numpy(soxr.resample(audio.numpy().T, self.sample_rate, rate).T.copy()).reshape(
            audio.shape[0], -1
        )
        stereo = audio[:, None, :].expand(-1, channels, -1).to(self.vae.device, self.vae.dtype)
        return self.vae.encode(stereo).latent_dist.mean.float()  # the mean: the cache is deterministic


def load_frozen(params) -> tuple[AudioEncoder, object, object]:
    """(audio encoder, tokenizer, text encoder) of the profile: what `encode` runs once for training."""
    if params.model.profile == "tiny":
        codec = SpectrogramCodec.from_pretrained(paths.CODEC)
        text_encoder, tokenizer = load_text_encoder()
        return AudioEncoder(codec, params.sample.sample_rate), tokenizer, text_encoder
    from diffusers import AutoencoderOobleck
    from transformers import AutoModel, AutoTokenizer

    root = resolve_checkpoint(params.model)
    vae = AutoencoderOobleck.from_pretrained(root, subfolder="vae", local_files_only=True)
    tokenizer = AutoTokenizer.from_pretrained(root / "tokenizer", local_files_only=True)
    text_encoder = AutoModel.from_pretrained(root / "text_encoder", local_files_only=True)
    return AudioEncoder(vae, params.sample.sample_rate), tokenizer, text_encoder
