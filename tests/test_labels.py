import json

from conftest import params_with

from bayes_beats.labels import describe
from bayes_beats.music.moods import MOOD_VA

CLIP = {
    "clip_id": "track_0000001_0",
    "tags": "melancholic,sad",
    "genres": "lo-fi hip hop",
    "instruments": "piano,warm pad,bass,drums",
    "bpm": 68.4,
    "keyscale": "A minor",
    "centroid_hz": 900.0,
    "onset_rate": 1.5,
}
LABELS = params_with().labels


def test_caption_carries_moods_measured_metas_and_a_vibe_word():
    labels = describe(CLIP, LABELS)
    caption = labels["caption"]
    assert caption.startswith("melancholic, sad, slow and dark-toned piano lo-fi hip hop in A minor at 68 BPM")
    assert labels["valence"] < 0 and labels["arousal"] < 0


def test_captions_are_deterministic_with_paraphrases():
    a, b = describe(CLIP, LABELS), describe(dict(CLIP), LABELS)
    assert a == b
    recaption = json.loads(a["recaption"])
    assert {"simplified", "expanded", "descriptive", "tags", "style"} <= set(recaption)
    assert len({recaption["simplified"], recaption["expanded"], recaption["descriptive"]}) == 3


def test_style_caption_names_instruments_but_no_mood_words():
    style = describe(CLIP, LABELS)["style_caption"]
    assert "piano" in style and "lo-fi hip hop" in style
    assert not set(style.replace(",", " ").split()) & set(MOOD_VA)
