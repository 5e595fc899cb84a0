"""Bayes' Beats: the vibe of an image as music.

`load_generator(model_dir)` is the Python API used by evaluation and serving. The pipeline's own
component classes (codec, vibe heads) are exported here because diffusers finds a saved pipeline's
custom components by importing the library named in model_index.json, and `VibePipeline` names them by
this package (`["bayes_beats", "SpectrogramCodec"]`), not by the module that defines them: every name a
saved model holds must stay exported here.

Exports resolve lazily (PEP 562), so importing a stage such as `bayes_beats.corpus` does not import the
model layer: a stage runs only the code its dvc.yaml deps name (tests/test_layout.py)."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "Generator": "bayes_beats.model.generate",
    "ModelError": "bayes_beats.model.generate",
    "load_generator": "bayes_beats.model.generate",
    "SpectrogramCodec": "bayes_beats.model.codec",
    "VariationalPromptHead": "bayes_beats.model.vibe",
    "VibePlanner": "bayes_beats.model.vibe",
}
__all__ = [
    "Generator",
    "ModelError",
    "SpectrogramCodec",
    "VariationalPromptHead",
    "VibePlanner",
    "load_generator",
]

if TYPE_CHECKING:
    from bayes_beats.model.codec import SpectrogramCodec
    from bayes_beats.model.generate import Generator, ModelError, load_generator
    from bayes_beats.model.vibe import VariationalPromptHead, VibePlanner


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'bayes_beats' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
