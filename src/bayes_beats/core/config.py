"""Typed view of params.yaml: parsed once, one frozen pydantic model per section.

params.yaml is the only place a value lives: every field here is required (a key missing from the file is
an error naming it, never a silent default that could drift from the file), and `extra="forbid"` turns a
typo into an error naming the key. The models hold the types and the valid ranges. Stage code receives
its typed section; nothing deeper reads the YAML. Code that needs a variant (tests, benchmarks) starts
from the file: `load_params().with_overrides(sample={"n_tracks": 5})`.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

DEFAULT_PARAMS = Path("params.yaml")


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DataParams(Section):
    source: Literal["synth", "jamendo", "gcs"]
    # synth: where `corpus` writes; jamendo: a local MTG-Jamendo directory; gcs: gs://bucket/prefix
    path: str
    tsv: str
    cache_dir: str  # gcs downloads land here, keyed by object path
    gcs_retry_deadline_s: float = Field(gt=0)  # transient 5xx/timeouts retried with backoff until then
    gcs_timeout_s: float = Field(gt=0)

    @model_validator(mode="after")
    def _path_matches_source(self) -> DataParams:
        if (self.source == "gcs") != self.path.startswith("gs://"):
            raise ValueError(f"data.source={self.source!r} does not match data.path={self.path!r}")
        return self


class CorpusParams(Section):
    n_tracks: int = Field(ge=1)
    track_seconds: float = Field(ge=2, le=600)
    sample_rate: int = Field(ge=8000, le=96000)
    format: Literal["wav", "flac", "mp3", "ogg"]
    seed: int
    workers: int = Field(ge=1)


class SampleParams(Section):
    n_tracks: int = Field(ge=1)
    clips_per_track: int = Field(ge=1)
    clip_seconds: float = Field(gt=0, le=120)
    sample_rate: int = Field(ge=8000, le=96000)
    target_lufs: float = Field(ge=-60, le=0)
    peak_dbfs: float = Field(ge=-20, le=0)
    silence_lufs: float  # crops quieter than this carry no music: skipped as "silent"
    tags: list[str]  # keep only tracks with at least one of these tags; empty keeps all
    max_track_seconds: float = Field(gt=0)
    seed: int


class FeaturesParams(Section):
    workers: int = Field(ge=1)
    hop_length: int = Field(ge=64)
    n_mfcc: int = Field(ge=1, le=40)
    chroma_n_fft: int = Field(ge=512)  # 5.4 Hz bins at 22.05 kHz: semitones resolved down to ~90 Hz


class LabelsParams(Section):
    # arousal/valence above +threshold or below -threshold get a vibe word; in between is "neutral"
    vibe_threshold: float = Field(ge=0, le=1)
    bright_centroid_hz: float
    dark_centroid_hz: float
    busy_onsets_per_s: float
    sparse_onsets_per_s: float


class DatasetParams(Section):
    validation_fraction: float = Field(ge=0, lt=0.5)
    test_fraction: float = Field(ge=0, lt=0.5)
    seed: int


class DataQualityParams(Section):
    columns: list[str]


class CodecParams(Section):
    n_bands: int = Field(ge=16, le=256)  # ≈ 1 semitone a band between fmin and fmax
    fmin: float = Field(gt=0)
    fmax: float = Field(gt=0)
    n_fft: int = Field(ge=256)
    griffin_lim_iters: int = Field(ge=1, le=256)
    stats_clips: int = Field(ge=1)  # training clips used for the per-band normalisation statistics
    eval_clips: int = Field(ge=1)  # validation clips for the round-trip report


class ModelParams(Section):
    profile: Literal["tiny", "acestep15"]
    checkpoint_dir: str  # acestep15: a local AceStepPipeline directory in diffusers format (or gs://)
    allow_download: bool  # the only switch that lets a stage reach a model hub (cli.py sets HF_HUB_OFFLINE)
    cpu_offload: bool
    hidden_size: int = Field(ge=32)  # tiny DiT and condition encoder
    num_layers: int = Field(ge=1)
    head_dim: int = Field(ge=8)
    num_inference_steps: int = Field(ge=1, le=200)
    shift: float = Field(gt=0)
    # what the generator accepts (Generator._validate; the API's own limits are api/schemas.py's, within these)
    min_seconds: float = Field(gt=0)
    max_seconds: float = Field(gt=0)
    max_prompt_chars: int = Field(ge=1)
    max_variations: int = Field(ge=1)  # per prompt, all in one pipeline batch
    max_temperature: float = Field(ge=0)
    min_bpm: float = Field(gt=0)
    max_bpm: float = Field(gt=0)
    seed: int

    @model_validator(mode="after")
    def _ranges(self) -> ModelParams:
        for low, high in (("min_seconds", "max_seconds"), ("min_bpm", "max_bpm")):
            if getattr(self, low) > getattr(self, high):
                raise ValueError(f"model.{low} ({getattr(self, low)}) is above model.{high} ({getattr(self, high)})")
        return self


class EncodeParams(Section):
    batch_size: int = Field(ge=1)


class TrainParams(Section):
    steps: int = Field(ge=1)
    batch_size: int = Field(ge=1)
    gradient_accumulation_steps: int = Field(ge=1)
    learning_rate: float = Field(gt=0)
    lr_scheduler: Literal["constant", "constant_with_warmup", "cosine", "linear"]
    lr_warmup_steps: int = Field(ge=0)
    weight_decay: float = Field(ge=0)
    crop_seconds: float = Field(gt=0)
    logit_mean: float  # logit-normal timestep sampling (SD3)
    logit_std: float = Field(gt=0)
    checkpointing_steps: int = Field(ge=1)
    checkpoints_total_limit: int = Field(ge=1)
    mixed_precision: Literal["no", "bf16", "fp16"]
    gradient_checkpointing: bool
    log_every: int = Field(ge=1)
    seed: int
    # condition dropout: the whole sketch zeroed (what sketch guidance contrasts against) / the text replaced
    # by the condition encoder's null embedding, each per item with this probability
    sketch_dropout: float = Field(ge=0, lt=1)
    text_dropout: float = Field(ge=0, lt=1)
    # tempo augmentation: this share of items is time-stretched (latent frames resampled, pitch kept) to a
    # tempo drawn log-uniformly over tempo_augment_bpm, by a factor within 1/max_stretch..max_stretch
    tempo_augment: float = Field(ge=0, le=1)
    tempo_augment_bpm: tuple[float, float]
    max_stretch: float = Field(ge=1)
    # continuation: this share of items is given a clean prefix (a fraction of the crop drawn within
    # continuation_prefix) in the context, ACE-Step's repaint source, and learns only the frames after it
    continuation: float = Field(ge=0, le=1)
    continuation_prefix: tuple[float, float]


class PretrainParams(TrainParams):
    pass


class FinetuneParams(TrainParams):
    lora_rank: int = Field(ge=1)
    lora_alpha: int = Field(ge=1)
    lora_dropout: float = Field(ge=0, lt=1)
    target_modules: list[str]
    kl_weight: float = Field(ge=0)
    prior_std: float = Field(gt=0)
    # inference: v = v(no sketch) + g * (v(sketch) - v(no sketch)); 1 = off. Recorded in the model card
    sketch_guidance: float = Field(ge=1)
    # inference: + h * (v(sketch) − v(sketch at double time)) while t > beat_guidance_above_t, on items
    # planned below beat_guidance_below_bpm (where double time is what a listener would hear); 0 = off
    beat_guidance: float = Field(ge=0)
    beat_guidance_above_t: float = Field(ge=0, lt=1)
    beat_guidance_below_bpm: float = Field(gt=0)

    def guidance(self) -> dict:
        """What the model card records for inference (`Generator.guidance_for` turns it into the DiT's keys)."""
        return self.model_dump(
            include={"sketch_guidance", "beat_guidance", "beat_guidance_above_t", "beat_guidance_below_bpm"}
        )


class ClapParams(Section):
    embed_dim: int = Field(ge=16)
    steps: int = Field(ge=1)
    batch_size: int = Field(ge=2)
    learning_rate: float = Field(gt=0)
    crop_seconds: float = Field(gt=0)
    seed: int


class EvaluateParams(Section):
    backend: Literal["local", "laion"]  # local = the `clap` stage's model, reported as clap_local
    clap_checkpoint: str  # laion: path to a laion-clap checkpoint (.pt)
    laion_audio_model: Literal["HTSAT-tiny", "HTSAT-base"]
    laion_text_model: Literal["roberta", "transformer"]  # released checkpoints use roberta
    validation_prompts: int = Field(ge=0)
    seconds: float = Field(gt=0)
    seed: int
    num_variations: int = Field(ge=2)
    temperature: float = Field(gt=0)  # the takes' (model/plans.py DEFAULT_TEMPERATURE)
    diversity_prompts: int = Field(ge=1)


class RegisterParams(Section):
    metric: str  # from metrics/eval.json's finetuned section; higher is better
    min_delta: float = Field(ge=0)
    floors: dict[str, float]  # metric: lowest acceptable value, all must hold
    goals: dict[str, float]  # metric: the value the product asks for; more goals met beats a better metric


class PackageParams(Section):
    alias: str  # the registry alias that gets packaged
    bento_model: str  # name in the BentoML model store; the Bento pins the exact tag imported


class TrafficParams(Section):
    requests: int = Field(ge=2)  # answered by the fine-tuned model, then split into reference and sample
    reference_share: float = Field(gt=0, lt=1)
    seconds: float = Field(gt=0)
    seed: int
    streams: int = Field(ge=0)  # radio listeners in the sample (the monitor's stream figures)
    stream_seconds: float = Field(gt=0)  # how long each listens


class MonitorParams(Section):
    requests: str  # the request log: SQLite path, SQLAlchemy URL or CSV export
    fail_on_drift: bool  # a failed test exits 1 (the CronJob's alert); otherwise reported, exit 0
    window_hours: float = Field(ge=0)  # only the last N hours of the log; 0 = all of it
    min_requests: int = Field(ge=1)
    max_drifted_share: float = Field(gt=0, le=1)  # of the prompt + audio columns
    clap_floor: float  # mean clap_local of the answers
    max_latency_p95_s: float = Field(gt=0)
    max_oov_pct: float = Field(ge=0, le=100)  # mean share of prompt words never seen in training captions
    min_like_rate_ratio: float = Field(ge=0, le=1)  # last day's share of up votes / the 7 days' before


class ListenersParams(Section):
    """The vote store's limits (api/listeners.py; docs/bayes.md "Who votes")."""

    vote_rate: int = Field(ge=1)  # votes per listener per rate_window_s (env BAYES_BEATS_VOTE_RATE overrides)
    client_vote_rate: int = Field(ge=1)  # votes per client address per rate_window_s, all its listeners together
    rate_window_s: float = Field(gt=0)
    new_listeners_per_hour: int = Field(ge=1)  # listener ids issued per client address per hour
    max_votes_per_listener: int = Field(ge=1)  # a listener's latest N votes are kept, older ones deleted
    retention_days: float = Field(gt=0)  # votes older than this are deleted


class StreamParams(Section):
    """The radio (GET /stream; docs/design.md "The stream"): how segments are cut, continued and served."""

    segment_s: float = Field(gt=0)  # a segment's target length: whole progressions of its tempo, about this long
    first_segment_s: float = Field(gt=0)  # the first ones are shorter: first audio sooner (target_s)
    tail_s: float = Field(gt=0)  # the previous segment's end each segment is conditioned on (held latents)
    overhang_s: float = Field(ge=0)  # rendered past each seam, never played: the tail does not end as a clip ends
    hold_back_s: float = Field(gt=0)  # audio kept back at each segment's end: the seam's crossfade is inside the tail
    crossfade_s: float = Field(gt=0)  # equal-power, between two decodes of the same held latents
    gain_slew_db_s: float = Field(gt=0)  # the stream's level moves at most this fast (radio.gain_curve)
    phrase_segments: int = Field(ge=1)  # the plan changes every N segments (a phrase), never inside one
    max_tempo_step: float = Field(ge=0, le=0.5)  # a phrase's tempo moves at most this share toward a fresh draw
    energy_step: float = Field(ge=0, le=1)  # and its energy this share of the way
    ahead_segments: int = Field(ge=1)  # rendered and not yet sent: then the stream waits (backpressure)
    renders_in_flight: int = Field(ge=1)  # a worker's segments at the renderer at once, earliest deadline first
    burst_s: float = Field(ge=0)  # audio sent ahead of real time at the start (a player's buffer), then real time
    max_stream_s: float = Field(gt=0)  # a stream ends after this long
    max_streams: int = Field(ge=1)  # open streams in one API worker
    max_streams_per_listener: int = Field(ge=1)
    max_streams_per_client: int = Field(ge=1)
    resume_s: float = Field(ge=0)  # a stream whose client left stays resumable this long (GET /stream?resume=ID)
    mp3_compression: float = Field(ge=0, le=1)  # libsndfile's compression level (0 best, 1 smallest)

    def target_s(self, index: int) -> float:
        """Segment `index`'s length before it is cut to whole bars: first_segment_s, then twice the one before,
        up to segment_s (first audio comes soon and a stream gets ahead fast)."""
        return min(self.segment_s, self.first_segment_s * 2.0**index)


# `register` is the stage's name; pydantic warns that it shadows ABCMeta.register, which no caller uses
warnings.filterwarnings("ignore", message='Field name "register" in "Params" shadows')


class Params(Section):
    data: DataParams
    corpus: CorpusParams
    sample: SampleParams
    features: FeaturesParams
    labels: LabelsParams
    dataset: DatasetParams
    data_quality: DataQualityParams
    codec: CodecParams
    model: ModelParams
    encode: EncodeParams
    pretrain: PretrainParams
    finetune: FinetuneParams
    clap: ClapParams
    evaluate: EvaluateParams
    register: RegisterParams = Field()  # bare, it would take ABCMeta.register as its default
    package: PackageParams
    traffic: TrafficParams
    monitor: MonitorParams
    listeners: ListenersParams
    stream: StreamParams

    def with_overrides(self, **sections: dict) -> Params:
        """A copy with some keys of some sections replaced, validated again: with_overrides(sample={"n_tracks": 5})."""
        raw = self.model_dump()
        for name, values in sections.items():
            raw[name] = {**raw[name], **values}
        return Params.model_validate(raw)


def load_params(path: str | Path = DEFAULT_PARAMS) -> Params:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"params file not found: {path}")
    raw = yaml.safe_load(path.read_text()) or {}
    return Params.model_validate(raw)
