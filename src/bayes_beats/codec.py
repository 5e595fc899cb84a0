"""`codec` stage: the tiny profile fits its codec's per-band statistics on training clips and reports the
round trip on held-out clips (metrics/codec.json, reports/codec_roundtrip.png); acestep15 uses the
checkpoint's VAE and only records that. The codec itself is bayes_beats.model.codec."""

from __future__ import annotations

import torch

from bayes_beats.core import paths
from bayes_beats.model.codec import SpectrogramCodec


def fit(params, clips: list[str], sample_rate: int) -> SpectrogramCodec:
    """A codec with per-band statistics from `clips` (paths)."""
    from bayes_beats.music.audio import load_audio

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

    from bayes_beats.music.analysis import extract
    from bayes_beats.music.audio import load_audio

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

    import datasets

    from bayes_beats.core.atomic import atomic_dir, write_json

    if params.model.profile != "tiny":  # real checkpoints bring their own VAE
        with atomic_dir(paths.CODEC) as tmp:
            (tmp / "README.txt").write_text(
                f"profile {params.model.profile}: the checkpoint's AutoencoderOobleck is the codec\n"
            )
        write_json(paths.CODEC_METRICS, {"profile": params.model.profile, "codec": "checkpoint VAE"})
        return
    dd = datasets.load_from_disk(str(paths.DATASET))
    root = paths.DATASET
    train = [str(root / f) for f in dd["train"]["filename"][: params.codec.stats_clips]]
    held_out = [str(root / f) for f in dd["validation"]["filename"][: params.codec.eval_clips]]
    codec = fit(params.codec, train, params.sample.sample_rate)
    paths.REPORTS.mkdir(exist_ok=True)
    report = round_trip_report(codec, held_out, params.sample.sample_rate, params.features, paths.CODEC_ROUNDTRIP_PNG)
    with atomic_dir(paths.CODEC) as tmp:
        codec.save_pretrained(tmp)
    write_json(paths.CODEC_METRICS, report)
    logging.getLogger(__name__).info("codec: round trip on %d held-out clips: %s", len(held_out), report)
