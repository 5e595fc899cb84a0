"""CLAP scoring: the laion backend offline (laion-clap built with random weights, text model 'transformer',
saved as a checkpoint and loaded through our loader) and the deterministic windowing both backends share."""

import numpy as np
import pytest
import torch

from bayes_beats.model.scoring import LaionClapScorer, clap_scores, windows


def test_windows_are_consecutive_and_keep_a_long_enough_tail():
    audio = np.arange(25, dtype=np.float32)
    w = windows(audio, 10)
    assert w.shape == (3, 10) and w[1, 0] == 10 and w[2, 4] == 24 and w[2, 5] == 0
    assert windows(np.ones(12, dtype=np.float32), 10).shape == (1, 10)  # a 2-sample tail is dropped
    assert windows(np.ones(3, dtype=np.float32), 10).shape == (1, 10)  # shorter than a window: padded


@pytest.fixture(scope="module")
def laion_checkpoint(tmp_path_factory):
    import laion_clap

    torch.manual_seed(0)
    model = laion_clap.CLAP_Module(enable_fusion=False, amodel="HTSAT-tiny", tmodel="transformer")
    # as released checkpoints are: under "state_dict", with DDP's "module." prefix
    state = {f"module.{k}": v for k, v in model.model.state_dict().items()}
    path = tmp_path_factory.mktemp("laion") / "random.pt"
    torch.save({"state_dict": state}, path)
    return path, model.model.state_dict()


def test_laion_checkpoint_loads_through_our_loader(laion_checkpoint):
    path, saved = laion_checkpoint
    scorer = LaionClapScorer(path, audio_model="HTSAT-tiny", text_model="transformer")
    loaded = scorer.model.model.state_dict()
    assert all(torch.equal(saved[k], loaded[k]) for k in list(saved)[:: max(1, len(saved) // 20)])


def test_laion_scores_are_deterministic_cosines_over_48k_windows(laion_checkpoint):
    scorer = LaionClapScorer(laion_checkpoint[0], audio_model="HTSAT-tiny", text_model="transformer")
    rng = np.random.default_rng(0)
    audio = [
        0.1 * rng.standard_normal((1, 22050 * 25)).astype(np.float32),
        0.1 * rng.standard_normal(22050 * 4).astype(np.float32),
    ]
    first = scorer.embed_audio(audio, 22050)
    again = scorer.embed_audio(audio, 22050)
    assert first.shape == (2, 512) and np.array_equal(first, again)  # no random crop
    scores = clap_scores(scorer, ["a calm lake", "a thunderstorm"], audio, 22050)
    assert scores.shape == (2,) and np.all(np.abs(scores) <= 1 + 1e-6)
