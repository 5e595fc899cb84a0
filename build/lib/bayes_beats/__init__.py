"""Bayes' Beats: the vibe of an image as music.

`load_generator(model_dir)` is the Python API used by evaluation and serving. The codec and vibe
classes are exported here because diffusers finds a saved pipeline's custom components by importing
the top-level package named in model_index.json."""

from bayes_beats.codec import SpectrogramCodec
from bayes_beats.generate import Generator, ModelError, load_generator
from bayes_beats.vibe import VariationalPromptHead, VibePlanner

__all__ = [
    "Generator",
    "ModelError",
    "SpectrogramCodec",
    "VariationalPromptHead",
    "VibePlanner",
    "load_generator",
]
