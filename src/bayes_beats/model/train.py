"""The training loop shared by `pretrain` and `finetune`, the diffusers-example way: accelerate for
device, precision and DDP; checkpoint-N dirs with a keep-limit; resume from the latest.

Every random draw of step N comes from a generator seeded by (seed, step, rank), so a run killed and
resumed from a checkpoint takes exactly the batches, noise and timesteps an uninterrupted run takes."""

from __future__ import annotations

import hashlib
import json
import logging
import math
import shutil
import time
from pathlib import Path

import torch
from accelerate import Accelerator, DistributedDataParallelKwargs, PartialState
from accelerate.utils import parse_flag_from_env
from diffusers.optimization import get_scheduler
from safetensors.torch import load_file
from torch import nn
from tqdm import tqdm

from bayes_beats.core.config import TrainParams
from bayes_beats.model.conditioning import FrozenTimbre, Sketch, condition, given

log = logging.getLogger(__name__)


# cache entries that are not per clip: the instrumental lyric's encoding, the planner's mood anchors
SHARED = ("lyric_states", "lyric_mask", "anchor_embeddings", "anchor_va")


def load_cache(path: str | Path) -> tuple[dict[str, torch.Tensor], dict]:
    path = Path(path)
    return load_file(path), json.loads(path.with_suffix(".json").read_text())


class CachedClips:
    """Training examples read from the `encode` stage's cache: no frozen model in memory."""

    def __init__(self, path: str | Path) -> None:
        self.tensors, self.index = load_cache(path)
        self.n, self.frames = self.tensors["latents"].shape[:2]

    def fingerprint(self) -> str:
        """Of everything training reads: any change to the cache (a re-measured beat grid or chords, not
        only other clips) makes old checkpoints stale: keys and bpm alone would let a pretrain resume a
        finished run made on other chords and train nothing."""
        digest = hashlib.sha256(json.dumps(self.index, sort_keys=True).encode())
        for key in sorted(self.tensors):
            digest.update(key.encode() + self.tensors[key].contiguous().view(-1).view(torch.uint8).numpy().tobytes())
        return digest.hexdigest()

    def take(self, idx: torch.Tensor) -> dict:
        rows = {k: v[idx] for k, v in self.tensors.items() if k not in SHARED}
        return rows | {
            "lyric_states": self.tensors["lyric_states"],
            "lyric_mask": self.tensors["lyric_mask"],
            "keyscale": [self.index["keyscale"][i] for i in idx],
        }


class Denoiser(nn.Module):
    """Everything trained, in one module (one DDP wrapper): condition encoder + DiT, and in `finetune` the
    variational prompt head. forward(batch) → losses; all randomness comes in the batch. The DiT is
    conditioned by `conditioning.condition`, as the pipeline conditions it at inference."""

    def __init__(
        self,
        transformer,
        condition_encoder,
        frame_rate: float,
        prompt_head=None,
        kl_weight: float = 0.0,
    ):
        super().__init__()
        self.transformer, self.condition_encoder = transformer, condition_encoder
        self.prompt_head = prompt_head
        self.frame_rate, self.kl_weight = frame_rate, kl_weight
        # no stage trains the timbre encoder: its encoding of the silence reference is computed once
        condition_encoder.timbre_encoder.requires_grad_(False)
        self.timbre = FrozenTimbre()

    def forward(self, batch: dict) -> dict[str, torch.Tensor]:
        x0, noise, t = batch["x0"], batch["noise"], batch["t"]  # [B, frames, channels], same, [B]
        xt = t[:, None, None] * noise + (1 - t[:, None, None]) * x0
        states, losses = batch["text_states"], {}
        if self.prompt_head is not None:
            emb = batch["embedding"]
            z, mu, logvar = self.prompt_head(emb, batch["eps"])
            states = self.prompt_head.condition(states, z)
            losses["kl"] = self.prompt_head.kl(emb, mu, logvar)
        silence = self.condition_encoder.silence_latent
        encoder_states, context = condition(
            self.condition_encoder,
            self.timbre(self.condition_encoder, self.frame_rate, x0.device, silence.dtype),
            states,
            batch["text_mask"],
            batch["lyric_states"],
            batch["lyric_mask"],
            frames=x0.shape[1],
            rate=self.frame_rate,
            drawn=Sketch(
                batch["bpm"].tolist(), list(batch["chords"]), batch["energy"].tolist(), batch["origin"].tolist()
            ),
            drop_sketch=batch.get("drop_sketch"),  # the unguided branch of sketch guidance: the whole sketch zeroed
            drop_text=batch.get("drop_text"),  # text replaced by the null embedding (ACE-Step's CFG null)
            held=(x0, batch["held"]) if "held" in batch else None,  # a continuation: its prefix given
        )
        v = self.transformer(
            hidden_states=xt,
            timestep=t,
            timestep_r=t,
            encoder_hidden_states=encoder_states,
            context_latents=context,
            return_dict=False,
        )[0]
        error = (v.float() - (noise - x0).float()).pow(2)
        if "held" in batch:  # a continuation learns the frames it generates, not the prefix it was given
            new = (~given(batch["held"], x0.shape[1], x0.device)).to(error)  # [batch, frames, 1]
            losses["flow"] = (error * new).mean(-1).sum() / new.sum().clamp(min=1)
        else:
            losses["flow"] = error.mean()
        losses["loss"] = losses["flow"] + self.kl_weight * losses.get("kl", 0)
        return losses


def make_batch(
    clips,
    params: TrainParams,
    step: int,
    rank: int,
    frame_rate: float,
    variants: tuple[int, ...],
    with_eps: bool,
) -> dict:
    """Batch of step `step` on process `rank`: indices, crops, caption variant, noise, timesteps."""
    gen = torch.Generator().manual_seed(params.seed * 1_000_003 + step * 101 + rank)
    crop = min(clips.frames, round(params.crop_seconds * frame_rate))
    idx = torch.randint(0, clips.n, (params.batch_size,), generator=gen)
    starts = torch.randint(0, clips.frames - crop + 1, (params.batch_size,), generator=gen)
    variant = torch.tensor(variants)[torch.randint(0, len(variants), (params.batch_size,), generator=gen)]
    rows, items = clips.take(idx), torch.arange(params.batch_size)
    x0 = torch.stack([rows["latents"][b, s : s + crop] for b, s in zip(items, starts, strict=True)]).float()
    batch = {
        "x0": x0,
        "noise": torch.randn(x0.shape, generator=gen),
        "t": torch.sigmoid(params.logit_mean + params.logit_std * torch.randn(params.batch_size, generator=gen)),
        "text_states": rows["text_states"][items, variant].float(),
        "text_mask": rows["text_mask"][items, variant].bool(),
        "embedding": rows["embeddings"][items, variant],
        "bpm": rows["bpm"],
        "major": rows["major"],
        "origin": rows["origin"] - starts / frame_rate,  # the crop's strong beat, in the crop's time
        "chords": rows["chords"].float(),
        "energy": rows["energy"],
        "keyscale": rows["keyscale"],
        "lyric_states": rows["lyric_states"].expand(params.batch_size, -1, -1),
        "lyric_mask": rows["lyric_mask"].bool().expand(params.batch_size, -1),
    }
    if with_eps:
        batch["eps"] = torch.randn(batch["embedding"].shape, generator=gen)
    # drawn last and only when on, so runs without dropout take the batches they always took
    if params.sketch_dropout > 0:
        batch["drop_sketch"] = torch.rand(params.batch_size, generator=gen) < params.sketch_dropout
    if params.text_dropout > 0:
        batch["drop_text"] = torch.rand(params.batch_size, generator=gen) < params.text_dropout
    if params.tempo_augment > 0:
        stretch(batch, rows["latents"], starts, params, gen, frame_rate)
    if params.continuation > 0:  # a share of crops continue a given prefix, as a stream's segments do
        low, high = (round(f * crop) for f in params.continuation_prefix)
        prefix = torch.randint(low, high + 1, (params.batch_size,), generator=gen)
        batch["held"] = torch.where(torch.rand(params.batch_size, generator=gen) < params.continuation, prefix, 0)
    return batch


def stretch(batch: dict, latents: torch.Tensor, starts: torch.Tensor, params: TrainParams, gen, frame_rate: float):
    """Time-stretch a share of the batch to tempi the corpus rarely plays (the renderer misses most on the
    slowest and fastest asks, where it has seen fewest clips: docs/ablation.md). A latent frame is a frame of log band energies, so resampling
    frames in time changes the tempo and keeps the pitch, as a phase vocoder does. Crop j of an item
    stretched by r (new bpm = r * bpm) reads source frame start + j * r, linearly interpolated."""
    size, crop = batch["x0"].shape[:2]
    low, high = (math.log(b) for b in params.tempo_augment_bpm)
    target = torch.exp(low + (high - low) * torch.rand(size, generator=gen))
    rate = (target / batch["bpm"]).clamp(1 / params.max_stretch, params.max_stretch)
    chosen = torch.rand(size, generator=gen) < params.tempo_augment
    frames = latents.shape[1]
    for b in torch.nonzero(chosen).flatten().tolist():
        r = float(rate[b])
        start = max(0, min(int(starts[b]), frames - 1 - math.ceil((crop - 1) * r)))  # a sped-up crop reads further
        position = (start + torch.arange(crop, dtype=torch.float64) * r).clamp(max=frames - 1)
        left = position.floor().long().clamp(max=frames - 2)
        weight = (position - left).float()[:, None]
        source = latents[b].float()
        batch["x0"][b] = (1 - weight) * source[left] + weight * source[left + 1]
        batch["origin"][b] = (batch["origin"][b] + (starts[b] - start) / frame_rate) / r
        batch["bpm"][b] = batch["bpm"][b] * r


def _to(batch: dict, device) -> dict:
    return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


def is_main_process() -> bool:
    """Whether this is rank 0. The distributed state is a process-wide singleton that the first caller
    configures, so build it as Accelerator would (ACCELERATE_USE_CPU selects DDP on gloo)."""
    return PartialState(cpu=parse_flag_from_env("ACCELERATE_USE_CPU")).is_main_process


def train(
    denoiser: Denoiser,
    trainable: list[nn.Parameter],
    clips: CachedClips,
    params: TrainParams,
    checkpoint_dir: Path,
    variants: tuple[int, ...],
    desc: str,
    on_log=None,
) -> list[dict]:
    """Run `params.steps` optimizer steps, resuming from the latest checkpoint in `checkpoint_dir`. `desc`
    names the stage (`pretrain`, `finetune`): the progress bar, the log and whose code the checkpoints
    belong to (`_code_fingerprint`).

    Returns the loss history ({step, loss, flow[, kl]} every `log_every` steps)."""
    # pretrain's DiT has a parameter the loss never reaches (the CFG null embedding): DDP must know
    ddp = DistributedDataParallelKwargs(find_unused_parameters=True)
    accelerator = Accelerator(
        gradient_accumulation_steps=params.gradient_accumulation_steps,
        mixed_precision=params.mixed_precision,
        kwargs_handlers=[ddp],
    )
    frame_rate = denoiser.frame_rate
    if params.gradient_checkpointing:
        denoiser.transformer.enable_gradient_checkpointing()
    vibe = denoiser.prompt_head is not None
    optimizer = torch.optim.AdamW(trainable, lr=params.learning_rate, weight_decay=params.weight_decay)
    scheduler = get_scheduler(
        params.lr_scheduler, optimizer, num_warmup_steps=params.lr_warmup_steps, num_training_steps=params.steps
    )
    trained = [(name, list(p.shape)) for name, p in denoiser.named_parameters() if p.requires_grad]
    start = weights_fingerprint(denoiser)  # what it starts from: finetune's base is pretrain's output
    denoiser, optimizer, scheduler = accelerator.prepare(denoiser, optimizer, scheduler)
    step, history = 0, []
    _discard_stale_checkpoints(checkpoint_dir, params, clips, trained, accelerator, desc, start)
    checkpoints = sorted(checkpoint_dir.glob("checkpoint-*"), key=checkpoint_step)
    if checkpoints:
        accelerator.load_state(str(checkpoints[-1]))
        step = checkpoint_step(checkpoints[-1])
        history = json.loads((checkpoints[-1] / "history.json").read_text())
        log.info("%s: resumed from %s", desc, checkpoints[-1])
    denoiser.train()
    bar = tqdm(total=params.steps, initial=step, desc=desc, disable=not accelerator.is_main_process)
    started = time.perf_counter()
    micro = params.gradient_accumulation_steps
    while step < params.steps:
        for m in range(micro):
            batch = make_batch(clips, params, step * micro + m, accelerator.process_index, frame_rate, variants, vibe)
            with accelerator.accumulate(denoiser):
                losses = denoiser(_to(batch, accelerator.device))
                accelerator.backward(losses["loss"])
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad()
        step += 1
        bar.update(1)
        bar.set_postfix(loss=f"{losses['loss'].item():.4f}")
        if step % params.log_every == 0 or step == params.steps:
            row = {"step": step, **{k: round(float(v.detach()), 6) for k, v in losses.items()}}
            history.append(row)
            if on_log and accelerator.is_main_process:
                on_log(row)
        if step % params.checkpointing_steps == 0 or step == params.steps:
            _checkpoint(accelerator, checkpoint_dir, step, history, params.checkpoints_total_limit)
    bar.close()
    log.info("%s: %d steps in %.1f s", desc, params.steps, time.perf_counter() - started)
    accelerator.wait_for_everyone()
    return history


# the package's code a training stage runs besides its own module: what dvc.yaml lists as its deps
TRAINING_CODE = ("core", "model", "music")
PACKAGE_DIR = Path(__file__).resolve().parents[1]


def _code_fingerprint(stage: str, package: Path = PACKAGE_DIR) -> str:
    """A hash of the code a training stage runs (its module and TRAINING_CODE): a checkpoint resumes only
    the code that wrote it (dvc reruns a training stage when its code changed, and the last run's finished
    checkpoint must not stand in). Code training never runs (the service's) leaves checkpoints alone."""
    sources = [package / f"{stage}.py"] + [p for part in TRAINING_CODE for p in (package / part).rglob("*.py")]
    digest = hashlib.sha256()
    for source in sorted(p for p in sources if p.is_file()):
        digest.update(str(source.relative_to(package)).encode() + b"\0" + source.read_bytes())
    return digest.hexdigest()[:16]


def checkpoint_step(path: Path) -> int:
    """The step a checkpoint-N directory holds (its sort key: checkpoint-10 comes after checkpoint-9)."""
    return int(path.name.split("-")[1])


def weights_fingerprint(module: nn.Module) -> str:
    """A hash of every parameter and buffer of `module`, by name: the weights a run starts from."""
    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:16]


def _discard_stale_checkpoints(
    root: Path,
    params: TrainParams,
    clips,
    trained: list[tuple[str, list[int]]],
    accelerator: Accelerator,
    stage: str,
    start: str,
) -> None:
    """Checkpoints persist across `dvc repro` runs (for resume); ones made with other params, data, code,
    trainable parameters (a resume with others fails on the optimizer's groups) or starting weights go: a
    checkpoint holds the whole model, so a finetune resumed on a retrained base would bring the old base
    back and train nothing."""
    fingerprint = {
        "start": start,
        **params.model_dump(exclude={"checkpointing_steps", "checkpoints_total_limit", "log_every"}),
        "clips": clips.fingerprint(),
        "processes": accelerator.num_processes,
        "trained": hashlib.sha256(json.dumps(trained).encode()).hexdigest()[:16],
        "code": _code_fingerprint(stage),
    }
    fingerprint = json.loads(json.dumps(fingerprint))  # as the marker reads back: tuples become lists
    marker = root / "fingerprint.json"
    if accelerator.is_main_process:
        if marker.is_file() and json.loads(marker.read_text()) != fingerprint:
            log.info("checkpoints in %s were made with other params or data: starting over", root)
            for old in root.glob("checkpoint-*"):
                shutil.rmtree(old)
        root.mkdir(parents=True, exist_ok=True)
        marker.write_text(json.dumps(fingerprint, sort_keys=True))
    accelerator.wait_for_everyone()


def _checkpoint(accelerator: Accelerator, root: Path, step: int, history: list, keep: int) -> None:
    target, tmp = root / f"checkpoint-{step}", root / f".checkpoint-{step}.tmp"
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp), safe_serialization=True)  # every rank writes its RNG state
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        (tmp / "history.json").write_text(json.dumps(history))
        shutil.rmtree(target, ignore_errors=True)
        tmp.rename(target)  # a kill mid-save leaves only a .tmp dir, never a half checkpoint
        for old in sorted(root.glob("checkpoint-*"), key=checkpoint_step)[:-keep]:
            shutil.rmtree(old)
    accelerator.wait_for_everyone()


def write_loss_csv(path: str | Path, history: list[dict]) -> None:
    from bayes_beats.core.atomic import write_text

    keys = list(history[-1])
    write_text(
        path,
        "\n".join([",".join(keys)] + [",".join(str(r.get(k, "")) for k in keys) for r in history]) + "\n",
    )
