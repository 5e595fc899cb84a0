"""`evaluate` stage: base vs fine-tuned on a fixed evaluation set — the dataset's validation prompts and
committed free-form scene captions the model never saw → metrics/eval.json, plots, WAV samples.

Metrics: CLAP score (local or laion backend, never mixed), vibe metrics measured on the generated audio
by the features module (arousal ↔ tempo/energy, mode on clearly positive vs negative prompts,
brightness), a mood classifier's macro ROC-AUC on generated audio, control accuracy with fixed metas,
the planner's reading of free text, its distribution's calibration on held-out clips and its entropy on
clear vs mixed vibes, and how far variations (draws of the plan) spread against seeds alone, at what
alignment cost."""

from __future__ import annotations

import json
import logging
from importlib.resources import files
from pathlib import Path

import datasets
import numpy as np
import pandas as pd
from scipy.stats import spearmanr

from bayes_beats.core import paths, tracking
from bayes_beats.core.atomic import atomic_dir, atomic_path, write_json, write_text
from bayes_beats.core.config import Params
from bayes_beats.model.calibration import calibration, plan_entropy, read_cache
from bayes_beats.model.scoring import clap_scores, load_scorer
from bayes_beats.music.analysis import extract
from bayes_beats.music.audio import write_wav
from bayes_beats.music.moods import MOOD_VA
from bayes_beats.music.theory import PITCH_CLASSES, prompt_words

log = logging.getLogger(__name__)
MODELS = {"base": paths.BASE, "finetuned": paths.FINETUNED}


def scene_captions() -> list[dict]:
    return json.loads(files("bayes_beats").joinpath("resources/scene_captions.json").read_text())


def eval_set(params: Params) -> pd.DataFrame:
    """prompt, valence, arousal, tags ('' for scene captions), source."""
    val = datasets.load_from_disk(str(paths.DATASET))["validation"]
    n = min(params.evaluate.validation_prompts, len(val))
    rows = [
        {
            "prompt": r["prompt"],
            "valence": r["valence"],
            "arousal": r["arousal"],
            "tags": ",".join(r["tags"]),
            "source": "validation",
        }
        for r in val.select(range(n)).to_list()
    ]
    rows += [{**c, "tags": "", "source": "scene"} for c in scene_captions()]
    return pd.DataFrame(rows)


def training_vocabulary() -> list[str]:
    """Every word of the training captions: what the monitor's out-of-vocabulary rate is measured against."""
    train = datasets.load_from_disk(str(paths.DATASET))["train"]
    return sorted({w for prompt in train["prompt"] for w in prompt_words(prompt)})


CLEAR_VALENCE = 0.5  # |valence| from here on is clearly pleasant or unpleasant: major or minor is what it asks


def mode_accuracy_clear_valence(valence, major) -> float:
    """How often `major` matches the sign of valence, over the clearly pleasant or unpleasant vibes only."""
    valence, major = np.asarray(valence), np.asarray(major, dtype=bool)
    clear = np.abs(valence) >= CLEAR_VALENCE
    return round(float((major[clear] == (valence[clear] > 0)).mean()), 3)


def vibe_metrics(valence, arousal, feats: list[dict], plans: list[dict]) -> dict:
    """Does the generated audio follow the prompts' intended valence/arousal? End to end, and split into
    the planner (vibe → metas) and the renderer (metas → audio)."""
    valence, arousal = np.asarray(valence), np.asarray(arousal)
    bpm = np.array([f["bpm"] for f in feats])
    folded = np.where(bpm > 150, bpm / 2, np.where(bpm < 60, bpm * 2, bpm))
    major = np.array([f["mode"] == "major" for f in feats])
    planned_bpm = np.array([p["bpm"] for p in plans])
    planned_major = np.array([p["keyscale"].endswith("major") for p in plans])

    def rho(a, b) -> float:
        return round(float(spearmanr(a, b).statistic), 3)

    return {
        "rho_arousal_tempo": rho(arousal, bpm),
        "rho_arousal_tempo_folded": rho(arousal, folded),
        "rho_arousal_tempo_shuffled": rho(arousal, np.random.default_rng(0).permutation(bpm)),
        "rho_arousal_energy": rho(arousal, [f["onset_rate"] for f in feats]),
        "rho_arousal_brightness": rho(arousal, [f["centroid_hz"] for f in feats]),
        "mode_accuracy_clear_valence": mode_accuracy_clear_valence(valence, major),
        "planner_rho_arousal_bpm": rho(arousal, planned_bpm),
        "planner_rho_arousal_energy": rho(arousal, [p["energy"] for p in plans]),
        "planner_mode_accuracy_clear_valence": mode_accuracy_clear_valence(valence, planned_major),
        "renderer_tempo_within_8pct": round(float((np.abs(folded / planned_bpm - 1) < 0.08).mean()), 3),
        "renderer_mode_follows_plan": round(float((major == planned_major).mean()), 3),
    }


# Albrecht & Shanahan (2013) key profiles, tonic first: pitch-class distributions of a corpus of
# major- and minor-mode pieces. The control reader's, so that control accuracy is not graded by the same
# profiles (Temperley's, music/analysis.py) that measured the metas the model was trained on. On 72 synth
# corpus tracks: key 91.7 %, mode 97.2 % (Temperley's: 95.8 %, 95.8 %; Krumhansl-Kessler's: 83.3 %, 87.5 %).
READER_MAJOR = np.array([0.238, 0.006, 0.111, 0.006, 0.137, 0.094, 0.016, 0.214, 0.009, 0.080, 0.008, 0.081])
READER_MINOR = np.array([0.220, 0.006, 0.104, 0.123, 0.019, 0.103, 0.012, 0.214, 0.062, 0.022, 0.061, 0.052])
CONTROL_PROMPTS = ("a calm evening by the sea", "energetic city lights", "a dark stormy night", "a happy sunny morning")
TEMPO_TOLERANCE = 0.03


def read_key(audio: np.ndarray, sr: int) -> tuple[int, str]:
    """Key as another analysis would read it: Albrecht & Shanahan's profiles (not the features module's
    Temperley profiles) on STFT chroma, correlated over the 24 keys (Krumhansl–Schmuckler)."""
    import librosa

    chroma = librosa.feature.chroma_stft(y=audio, sr=sr, n_fft=4096, hop_length=1024).mean(axis=1)
    scores = [
        (float(np.corrcoef(chroma, np.roll(profile, tonic))[0, 1]), tonic, mode)
        for mode, profile in (("major", READER_MAJOR), ("minor", READER_MINOR))
        for tonic in range(12)
    ]
    _, tonic, mode = max(scores)
    return tonic, mode


def read_tempo(audio: np.ndarray, sr: int) -> float:
    """librosa's tempogram tempo with its default prior (the beat level a listener taps); nothing folds
    the answer, so half or double time stays a miss."""
    import librosa

    onset = librosa.onset.onset_strength(y=audio, sr=sr, hop_length=512)
    return float(librosa.feature.tempo(onset_envelope=onset, sr=sr, hop_length=512)[0])


def control_score(audio: list[np.ndarray], sr: int, bpm: list[float], keys: list[str]) -> dict:
    """Did the asked tempo and key land? Tempo within 3 %, mode, key (tonic and mode)."""
    tempo = np.array([read_tempo(a, sr) for a in audio])
    read = [read_key(a, sr) for a in audio]
    asked = [(PITCH_CLASSES.index(k.split()[0]), k.split()[1]) for k in keys]
    ratio = tempo / np.array(bpm)
    return {
        "clips": len(audio),
        "tempo_within_3pct": round(float((np.abs(ratio - 1) <= TEMPO_TOLERANCE).mean()), 3),
        "tempo_median_error_pct": round(float(np.median(np.abs(ratio - 1)) * 100), 1),
        "tempo_half_or_double": round(float(((np.abs(ratio - 0.5) < 0.03) | (np.abs(ratio - 2) < 0.06)).mean()), 3),
        "mode_accuracy": round(float(np.mean([r[1] == a[1] for r, a in zip(read, asked, strict=True)])), 3),
        "key_accuracy": round(float(np.mean([r == a for r, a in zip(read, asked, strict=True)])), 3),
    }


def control_requests(n: int = 24) -> list[dict]:
    """The fixed request set: every key once, tempi evenly over 64–144 BPM in a shuffled (seeded) order."""
    keys = [f"{PITCH_CLASSES[t]} {m}" for m in ("major", "minor") for t in range(12)][:n]
    tempi = np.random.default_rng(0).permutation(np.linspace(64, 144, n))
    return [
        {"prompt": CONTROL_PROMPTS[i % len(CONTROL_PROMPTS)], "bpm": round(float(b), 1), "keyscale": k, "seed": i}
        for i, (b, k) in enumerate(zip(tempi, keys, strict=True))
    ]


def control_accuracy(gen, seconds: float = 10.0) -> dict:
    """When the caller fixes bpm and keyscale (10-s clips, one request at a time, temperature 0)."""
    asked, audio = control_requests(), []
    for r in asked:
        out, _ = gen.generate_with_plans(
            [r["prompt"]], seconds, r["seed"], temperature=0.0, bpm=r["bpm"], keyscale=r["keyscale"]
        )
        audio.append(out[0][0][0])
    return control_score(audio, gen.sample_rate, [r["bpm"] for r in asked], [r["keyscale"] for r in asked])


def vibe_prompts() -> list[dict]:
    """Free-text scene prompts with the valence/arousal a person gave them (never used to fit anything)."""
    return json.loads(files("bayes_beats").joinpath("resources/vibe_prompts.json").read_text())


def plan_reading(gen, prompts: list[dict] | None = None) -> dict | None:
    """The planner on free text: its valence/arousal reading against the labels (Spearman), and how much
    of the corpus's tempo range for the same moods its plans span (10th–90th percentiles; the corpus's
    from the 10 clips nearest each prompt's label on the circumplex)."""
    if gen.pipe.planner is None:
        return None
    prompts = prompts or vibe_prompts()
    truth = np.array([[p["valence"], p["arousal"]] for p in prompts])
    out = gen.pipe.planner(gen.pipe.embed([p["prompt"] for p in prompts]).to(gen.pipe.planner.dtype))
    read = np.stack([out["valence"].numpy(), out["arousal"].numpy()], axis=1)
    clips = datasets.load_from_disk(str(paths.DATASET))["train"].select_columns(["valence", "arousal", "bpm"])
    clip_va = np.stack([np.array(clips["valence"]), np.array(clips["arousal"])], axis=1)
    nearest = np.argsort(((truth[:, None, :] - clip_va[None]) ** 2).sum(-1), axis=1)[:, :10]
    corpus = np.percentile(np.array(clips["bpm"], dtype=float)[nearest].ravel(), [10, 90])
    planned = np.percentile(out["bpm"].numpy(), [10, 90])
    overlap = max(0.0, min(corpus[1], planned[1]) - max(corpus[0], planned[0]))
    return {
        "prompts": len(prompts),
        "rho_valence": round(float(spearmanr(read[:, 0], truth[:, 0]).statistic), 3),
        "rho_arousal": round(float(spearmanr(read[:, 1], truth[:, 1]).statistic), 3),
        "planned_bpm_p10": round(float(planned[0]), 1),
        "planned_bpm_p90": round(float(planned[1]), 1),
        "corpus_bpm_p10": round(float(corpus[0]), 1),
        "corpus_bpm_p90": round(float(corpus[1]), 1),
        "tempo_range_coverage": round(float(overlap / (corpus[1] - corpus[0])), 3),
        "rho_arousal_planned_energy": round(float(spearmanr(out["energy"].numpy(), truth[:, 1]).statistic), 3),
        "planned_mode_clear_valence": mode_accuracy_clear_valence(truth[:, 0], out["p_major"].numpy() > 0.5),
    }


def mood_auc(feats: list[dict], tags: list[str]) -> float | None:
    """Macro ROC-AUC of a mood classifier trained on the corpus's features, applied to generated audio."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    corpus = pd.read_parquet(paths.FEATURES_TABLE).merge(
        pd.read_csv(paths.MANIFEST, usecols=["clip_id", "tags"]), on="clip_id"
    )
    columns = [c for c in corpus.columns if c.startswith(("chroma_", "mfcc_"))] + ["bpm", "centroid_hz", "onset_rate"]
    scored = [(f, t) for f, t in zip(feats, tags, strict=True) if t]
    aucs = []
    for tag in sorted(MOOD_VA):
        y = corpus["tags"].str.split(",").map(lambda ts, tag=tag: tag in ts)
        truth = [tag in t.split(",") for _, t in scored]
        if y.sum() < 5 or not (0 < sum(truth) < len(truth)):
            continue
        clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=500)).fit(corpus[columns], y)
        pred = clf.predict_proba(pd.DataFrame([f for f, _ in scored])[columns])[:, 1]
        aucs.append(roc_auc_score(truth, pred))
    return round(float(np.mean(aucs)), 4) if aucs else None


def evaluate_model(
    model_dir: str, prompts: pd.DataFrame, scorer, params: Params
) -> tuple[dict, list, pd.DataFrame, pd.DataFrame]:
    from bayes_beats.model.generate import load_generator

    gen = load_generator(model_dir)
    ep = params.evaluate
    audio = [a[0] for a in gen.generate(list(prompts["prompt"]), ep.seconds, seed=ep.seed, temperature=0.0)]
    plans = gen.last_plans
    feats = [extract(a[0], gen.sample_rate, params.features) for a in audio]
    clap = clap_scores(scorer, list(prompts["prompt"]), audio, gen.sample_rate)
    scene = (prompts["source"] == "scene").to_numpy()
    metrics = {
        f"{scorer.name}": round(float(clap.mean()), 4),
        f"{scorer.name}_scene": round(float(clap[scene].mean()), 4),
        **vibe_metrics(
            prompts["valence"][scene],
            prompts["arousal"][scene],
            [f for f, s in zip(feats, scene, strict=True) if s],
            [p for p, s in zip(plans, scene, strict=True) if s],
        ),
        "mood_auc": mood_auc([f for f, s in zip(feats, scene, strict=True) if not s], list(prompts["tags"][~scene])),
        "control": control_accuracy(gen),
        "plan_reading": plan_reading(gen),
        "plan_entropy": plan_entropy(gen),
        "plan_calibration": (
            calibration(gen.pipe.planner, paths.TRAIN_CACHE, paths.ENCODED / "validation.safetensors")
            if gen.pipe.planner is not None
            else None
        ),
    }
    per_mood = [
        {"tag": t, "clap": float(c)}
        for tags, c in zip(prompts["tags"], clap, strict=True)
        for t in tags.split(",")
        if t
    ]
    # the generations in the request log's columns: `bayes-beats monitor`'s reference
    generations = pd.DataFrame(
        {
            "prompt": prompts["prompt"],
            "valence": prompts["valence"],
            "arousal": prompts["arousal"],
            "planned_bpm": [p["bpm"] for p in plans],
            "planned_keyscale": [p["keyscale"] for p in plans],
            **{c: [f[c] for f in feats] for c in ("bpm", "mode", "loudness_lufs", "centroid_hz", "onset_rate")},
            "clap_local": clap if scorer.name == "clap_local" else np.nan,
        }
    )
    return metrics, audio, pd.DataFrame(per_mood), generations


def take_spread(model_dir: str, prompts: list[str], scorer, params: Params) -> dict:
    """Variations as readings of the vibe: how far the takes of one prompt spread in what they measure
    (tempo by the independent reader, in log2; energy as a percentile of the training clips'; mode, major
    1 / minor 0) when they are draws of the plan (`evaluate.temperature`) against seeds alone
    (temperature 0, the same seeds), and what the spread costs in CLAP alignment."""
    from bayes_beats.model.encoding import energy_percentile, energy_raw
    from bayes_beats.model.generate import load_generator

    reference = np.sort(read_cache(paths.TRAIN_CACHE, ("energy_raw",))["energy_raw"].numpy())
    gen, ep = load_generator(model_dir), params.evaluate
    out: dict = {"prompts": len(prompts), "takes": ep.num_variations}
    for label, temperature in (("seeds", 0.0), ("plan", ep.temperature)):
        spread: dict[str, list[float]] = {"tempo": [], "energy": [], "mode": []}
        align = []
        for prompt in prompts:
            takes = gen.generate(
                [prompt], ep.seconds, seed=ep.seed, num_variations=ep.num_variations, temperature=temperature
            )[0]
            feats = [extract(t[0], gen.sample_rate, params.features) for t in takes]
            spread["tempo"].append(float(np.std(np.log2([read_tempo(t[0], gen.sample_rate) for t in takes]))))
            spread["energy"].append(float(np.std(energy_percentile(energy_raw(feats), reference))))
            spread["mode"].append(float(np.std([read_key(t[0], gen.sample_rate)[1] == "major" for t in takes])))
            align += list(clap_scores(scorer, [prompt] * len(takes), takes, gen.sample_rate))
        out[label] = {k: round(float(np.mean(v)), 4) for k, v in spread.items()} | {
            scorer.name: round(float(np.mean(align)), 4)
        }
    for k in ("tempo", "energy", "mode"):
        out[f"{k}_spread_ratio"] = round(out["plan"][k] / max(out["seeds"][k], 1e-3), 2)
    out["clap_cost_pct"] = round(100 * (1 - out["plan"][scorer.name] / out["seeds"][scorer.name]), 2)
    return out


def run(params: Params) -> None:
    import mlflow

    ep = params.evaluate
    with tracking.stage_run("evaluate", params):
        scorer = load_scorer(ep.backend, ep.clap_checkpoint, ep.laion_audio_model, ep.laion_text_model)
        prompts = eval_set(params)
        results, per_mood, generations = {}, [], {}
        for name, model_dir in MODELS.items():
            results[name], _, moods, generations[name] = evaluate_model(model_dir, prompts, scorer, params)
            per_mood.append(moods.assign(model=name))
        scenes = [c["prompt"] for c in scene_captions()[: ep.diversity_prompts]]
        results["takes"] = take_spread(MODELS["finetuned"], scenes, scorer, params)
        write_json(paths.EVAL_METRICS, results)
        moods = pd.concat(per_mood).groupby(["tag", "model"], as_index=False)["clap"].mean()
        write_text(paths.EVAL_PER_MOOD, moods.to_csv(index=False))
        with atomic_dir(paths.EVAL_REPORTS) as tmp:
            listened = listening(tmp, params)  # {model: [audio per contrasting vibe]}
            generations["finetuned"].to_csv(tmp / "requests.csv", index=False)  # the monitor's reference
            (tmp / "vocabulary.txt").write_text("\n".join(training_vocabulary()) + "\n")
        with atomic_path(paths.EVAL_SPECTROGRAMS) as png:  # a DVC image plot: base row vs finetuned row
            spectrogram_grid(listened, 22050 if params.model.profile == "tiny" else 48000, png)
        mlflow.log_metrics(tracking.numeric(results))
        mlflow.log_artifacts(str(paths.EVAL_REPORTS), artifact_path="eval")  # WAVs play in the MLflow UI
        mlflow.log_artifact(str(paths.EVAL_PER_MOOD))
        mlflow.log_artifact(str(paths.EVAL_SPECTROGRAMS))
    log.info("evaluate: %s", json.dumps(results))


# contrasting vibes, one per quadrant of the circumplex: what a person listens to first (reports/eval)
CONTRASTS = {
    "tense": "a furious thunderstorm over a highway, fast and loud",
    "sad": "a quiet misty lake at dawn, calm and sad",
    "joyful": "a street carnival with drums, dancers and bright costumes",
    "peaceful": "a cat asleep in a patch of warm sunlight by the window",
}


def listening(out_dir: Path, params: Params) -> dict[str, list[np.ndarray]]:
    """WAVs of each contrasting vibe by each model (`{model}_{vibe}.wav`) with what was planned."""
    from bayes_beats.model.generate import load_generator

    ep, rendered, plans = params.evaluate, {}, {}
    for name, model_dir in MODELS.items():
        gen = load_generator(model_dir)
        audio, plan = gen.generate_with_plans(list(CONTRASTS.values()), ep.seconds, seed=ep.seed, temperature=0.0)
        rendered[name] = [a[0] for a in audio]
        for (vibe, prompt), a, p in zip(CONTRASTS.items(), rendered[name], plan, strict=True):
            write_wav(out_dir / f"{name}_{vibe}.wav", a, gen.sample_rate)
            plans[f"{name}_{vibe}"] = {"prompt": prompt, **p}
    (out_dir / "listening.json").write_text(json.dumps(plans, indent=2))
    return rendered


def spectrogram_grid(samples: dict[str, list], sr: int, png: Path) -> None:
    """Mel spectrograms: a row per model, a column per contrasting vibe."""
    import librosa
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(CONTRASTS)
    fig, axes = plt.subplots(len(samples), n, figsize=(3 * n, 2.4 * len(samples)), squeeze=False)
    for row, (name, audio) in enumerate(samples.items()):
        for col, vibe in enumerate(CONTRASTS):
            mel = librosa.power_to_db(librosa.feature.melspectrogram(y=audio[col][0], sr=sr, n_mels=64))
            axes[row, col].imshow(mel, origin="lower", aspect="auto", cmap="magma")
            axes[row, col].set_title(f"{name}: {vibe}", fontsize=8)
            axes[row, col].axis("off")
    fig.tight_layout()
    fig.savefig(png, dpi=80, format="png")
    plt.close(fig)
