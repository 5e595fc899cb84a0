"""The MTG-Jamendo mood/theme vocabulary and its place on Russell's valence–arousal circumplex.

Each tag gets a (valence, arousal) pair in [-1, 1]. The numbers are hand placements on the circumplex,
guided by the affective norms of Warriner, Kuperman & Brysbaert (2013) for the tag word and by how the
tag is used for production music (e.g. "trailer" is loud and tense, "background" is unobtrusive).
A track's valence/arousal is the mean over its known tags. The same table drives the synthetic corpus
and labels real data, so the dataset's valence/arousal always mean the same thing.
"""

from __future__ import annotations

import json
from importlib.resources import files

TAG_PREFIX = "mood/theme---"

# tag: (valence, arousal)
MOOD_VA: dict[str, tuple[float, float]] = {
    "action": (0.3, 0.8),
    "adventure": (0.5, 0.6),
    "advertising": (0.5, 0.3),
    "background": (0.1, -0.5),
    "ballad": (0.0, -0.4),
    "calm": (0.4, -0.8),
    "children": (0.7, 0.3),
    "christmas": (0.7, 0.2),
    "commercial": (0.5, 0.4),
    "cool": (0.4, 0.1),
    "corporate": (0.4, 0.2),
    "dark": (-0.7, 0.1),
    "deep": (-0.2, -0.4),
    "documentary": (0.1, -0.2),
    "drama": (-0.4, 0.2),
    "dramatic": (-0.3, 0.6),
    "dream": (0.3, -0.6),
    "emotional": (-0.2, 0.1),
    "energetic": (0.5, 0.9),
    "epic": (0.3, 0.8),
    "fast": (0.3, 0.9),
    "film": (0.0, 0.1),
    "fun": (0.8, 0.6),
    "funny": (0.8, 0.5),
    "game": (0.4, 0.6),
    "groovy": (0.6, 0.5),
    "happy": (0.9, 0.5),
    "heavy": (-0.4, 0.7),
    "holiday": (0.7, 0.3),
    "hopeful": (0.6, 0.1),
    "inspiring": (0.6, 0.4),
    "love": (0.7, -0.1),
    "meditative": (0.2, -0.9),
    "melancholic": (-0.7, -0.5),
    "melodic": (0.3, 0.0),
    "motivational": (0.6, 0.6),
    "movie": (0.0, 0.3),
    "nature": (0.4, -0.6),
    "party": (0.8, 0.8),
    "positive": (0.8, 0.4),
    "powerful": (0.2, 0.8),
    "relaxing": (0.5, -0.8),
    "retro": (0.4, 0.2),
    "romantic": (0.6, -0.3),
    "sad": (-0.8, -0.5),
    "sexy": (0.5, 0.2),
    "slow": (0.0, -0.7),
    "soft": (0.3, -0.7),
    "soundscape": (0.0, -0.5),
    "space": (0.0, -0.3),
    "sport": (0.5, 0.8),
    "summer": (0.8, 0.5),
    "trailer": (0.0, 0.8),
    "travel": (0.5, 0.2),
    "upbeat": (0.7, 0.7),
    "uplifting": (0.8, 0.5),
    # in the full TSV but not in the official 56-tag splits
    "ambiental": (0.1, -0.6),
    "horror": (-0.9, 0.6),
    "mellow": (0.3, -0.6),
}
OFFICIAL_TAGS: tuple[str, ...] = tuple(sorted(set(MOOD_VA) - {"ambiental", "horror", "mellow"}))
assert len(OFFICIAL_TAGS) == 56


def parse_tag(raw: str) -> str | None:
    """`mood/theme---calm` -> `calm`; None for anything outside the vocabulary."""
    tag = raw.strip()
    if tag.startswith(TAG_PREFIX):
        tag = tag[len(TAG_PREFIX) :]
    return tag if tag in MOOD_VA else None


def valence_arousal(tags: list[str]) -> tuple[float, float]:
    """Mean circumplex position of known tags; (0, 0) when there are none."""
    points = [MOOD_VA[t] for t in tags if t in MOOD_VA]
    if not points:
        return 0.0, 0.0
    return (sum(p[0] for p in points) / len(points), sum(p[1] for p in points) / len(points))


# words for where a clip sits on the circumplex; chosen per clip by a stable hash, for paraphrase variety
VIBE_WORDS = {
    ("high", "high"): ["joyful", "euphoric", "exuberant"],
    ("high", "mid"): ["cheerful", "warm", "sunny"],
    ("high", "low"): ["peaceful", "serene", "tender"],
    ("mid", "high"): ["intense", "driving", "restless"],
    ("mid", "mid"): ["reflective", "easygoing", "mellow"],
    ("mid", "low"): ["hazy", "dreamy", "still"],
    ("low", "high"): ["tense", "brooding", "ominous"],
    ("low", "mid"): ["bittersweet", "wistful", "moody"],
    ("low", "low"): ["melancholic", "lonely", "sombre"],
}


def tempo_word(bpm: float) -> str:
    return "slow" if bpm < 80 else ("mid-tempo" if bpm < 110 else "up-tempo")


def mood_anchors() -> dict[str, tuple[float, float]]:
    """Words with a place on the circumplex: the mood tags and the vibe words (at their cell's centre).
    The planner reads a text's valence/arousal as these words' positions weighted by similarity."""
    centre = {"high": 0.6, "mid": 0.0, "low": -0.6}
    anchors = dict(MOOD_VA)
    for (valence, arousal), words in VIBE_WORDS.items():
        for word in words:
            anchors.setdefault(word, (centre[valence], centre[arousal]))
    return anchors


# how an anchor word is embedded; with the planner's tau 0.2 this read the 24 scene captions at ρ 0.93 (valence)
# and 0.95 (arousal), best of 5 templates × 4 temperatures there (docs/ablation.md, "Reading free text")
ANCHOR_TEMPLATE = "{} music"


def scene_anchors() -> dict[str, tuple[float, float]]:
    """Scenes placed on the circumplex by hand (resources/scene_anchors.json). Free text often carries its
    arousal in scene words ("a gym workout", "a lullaby beside a crib") that sit far from every mood word;
    these anchors read them. None is closer (cosine ≥ 0.5) to any of the labelled prompts that evaluation
    scores the reading on (resources/vibe_prompts.json): the 40 that were went (docs/ablation.md)."""
    raw = json.loads(files("bayes_beats").joinpath("resources/scene_anchors.json").read_text())
    return {scene: (float(v), float(a)) for scene, (v, a) in raw.items()}


def anchor_texts() -> tuple[list[str], list[tuple[float, float]]]:
    """What the planner reads a vibe against, in buffer order: each mood word in ANCHOR_TEMPLATE (first, so
    the planner's mood words index the first columns), then each scene as written; and their places."""
    moods, scenes = mood_anchors(), scene_anchors()
    return [ANCHOR_TEMPLATE.format(w) for w in moods] + list(scenes), list(moods.values()) + list(scenes.values())
