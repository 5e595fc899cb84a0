"""`evaluate` stage: base vs fine-tuned on a fixed evaluation set — the dataset's validation prompts and
committed free-form scene captions the model never saw → metrics/eval.json, plots, WAV samples.

Metrics: CLAP score (local or laion backend, never mixed), vibe metrics measured on the generated audio
by the features module (arousal ↔ tempo/energy, mode on clearly positive vs negative prompts,
brightness), a mood classifier's macro ROC-AUC on generated audio, and the variational layer's diversity
against its alignment cost."""

from __future__ import annotations

import json
import logging
from importlib.resources import files
from itertools import combinations
from pathlib import Path

import datasets
import numpy as np
import pandas as pd
from scipy.stats import spearmanr

from bayes_beats.core import paths, tracking
from bayes_beats.core.atomic import atomic_dir, atomic_path, write_json, write_text
from bayes_beats.core.config import Params
from bayes_beats.model.scoring import clap_scores, load_scorer
from bayes_beats.music.analysis import extract
from bayes_beats.music.audio import write_wav
from bayes_beats.music.moods import MOOD_VA

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
    from bayes_beats.api.requestlog import prompt_words

    train = datasets.load_from_disk(str(paths.DATASET))["train"]
    return sorted({w for prompt in train["prompt"] for w in prompt_words(prompt)})


def vibe_metrics(valence, arousal, feats: list[dict], plans: list[tuple[float, str]]) -> dict:
    """Does the generated audio follow the prompts' intended valence/arousal? End to end, and split into
    the planner (vibe → metas) and the renderer (metas → audio)."""
    valence, arousal = np.asarray(valence), np.asarray(arousal)
    bpm = np.array([f["bpm"] for f in feats])
    folded = np.where(bpm > 150, bpm / 2, np.where(bpm < 60, bpm * 2, bpm))
    major = np.array([f["mode"] == "major" for f in feats])
    clear = np.abs(valence) >= 0.5
    planned_bpm = np.array([b for b, _ in plans])
    planned_major = np.array([k.endswith("major") for _, k in plans])

    def rho(a, b) -> float:
        return round(float(spearmanr(a, b).statistic), 3)

    return {
        "rho_arousal_tempo": rho(arousal, bpm),
        "rho_arousal_tempo_folded": rho(arousal, folded),
        "rho_arousal_tempo_shuffled": rho(arousal, np.random.default_rng(0).permutation(bpm)),
        "rho_arousal_energy": rho(arousal, [f["onset_rate"] for f in feats]),
        "rho_arousal_brightness": rho(arousal, [f["centroid_hz"] for f in feats]),
        "mode_accuracy_clear_valence": round(float((major[clear] == (valence[clear] > 0)).mean()), 3),
        "planner_rho_arousal_bpm": rho(arousal, planned_bpm),
        "planner_mode_accuracy_clear_valence": round(float((planned_major[clear] == (valence[clear] > 0)).mean()), 3),
        "renderer_tempo_within_8pct": round(float((np.abs(folded / planned_bpm - 1) < 0.08).mean()), 3),
        "renderer_mode_follows_plan": round(float((major == planned_major).mean()), 3),
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
            "planned_bpm": [b for b, _ in plans],
            "planned_keyscale": [k for _, k in plans],
            **{c: [f[c] for f in feats] for c in ("bpm", "mode", "loudness_lufs", "centroid_hz", "onset_rate")},
            "clap_local": clap if scorer.name == "clap_local" else np.nan,
        }
    )
    return metrics, audio, pd.DataFrame(per_mood), generations


def diversity(model_dir: str, prompts: list[str], scorer, params: Params) -> dict:
    """Variational samples vs the deterministic plan (temperature 0), same seeds: spread and alignment."""
    from bayes_beats.model.generate import load_generator

    gen, ep = load_generator(model_dir), params.evaluate
    out = {}
    for label, temperature in (("deterministic", 0.0), ("variational", ep.temperature)):
        spread, align = [], []
        for prompt in prompts:
            takes = gen.generate(
                [prompt], ep.seconds, seed=ep.seed, num_variations=ep.num_variations, temperature=temperature
            )[0]
            emb = scorer.embed_audio(takes, gen.sample_rate)
            emb = emb / np.linalg.norm(emb, axis=1, keepdims=True)
            spread += [1 - float(emb[i] @ emb[j]) for i, j in combinations(range(len(takes)), 2)]
            align += list(clap_scores(scorer, [prompt] * len(takes), takes, gen.sample_rate))
        out[label] = {
            "pairwise_distance": round(float(np.mean(spread)), 4),
            scorer.name: round(float(np.mean(align)), 4),
        }
    out["diversity_gain"] = round(
        out["variational"]["pairwise_distance"] - out["deterministic"]["pairwise_distance"], 4
    )
    out["alignment_cost"] = round(out["deterministic"][scorer.name] - out["variational"][scorer.name], 4)
    return out


def run(params: Params) -> None:
    import mlflow

    ep = params.evaluate
    with tracking.stage_run("evaluate", params):
        scorer = load_scorer(ep.backend, ep.clap_checkpoint, ep.laion_audio_model, ep.laion_text_model)
        prompts = eval_set(params)
        results, per_mood, samples, generations = {}, [], {}, {}
        for name, model_dir in MODELS.items():
            results[name], samples[name], moods, generations[name] = evaluate_model(model_dir, prompts, scorer, params)
            per_mood.append(moods.assign(model=name))
        scenes = [c["prompt"] for c in scene_captions()[: ep.diversity_prompts]]
        results["diversity"] = diversity(MODELS["finetuned"], scenes, scorer, params)
        write_json(paths.EVAL_METRICS, results)
        moods = pd.concat(per_mood).groupby(["tag", "model"], as_index=False)["clap"].mean()
        write_text(paths.EVAL_PER_MOOD, moods.to_csv(index=False))
        with atomic_dir(paths.EVAL_REPORTS) as tmp:
            sr = 22050 if params.model.profile == "tiny" else 48000
            for name, audio in samples.items():
                for i in range(min(ep.samples, len(audio))):
                    write_wav(tmp / f"{name}_{i}.wav", audio[-1 - i], sr)  # the last prompts: scene captions
            (tmp / "prompts.json").write_text(json.dumps(list(prompts["prompt"])[-ep.samples :][::-1]))
            generations["finetuned"].to_csv(tmp / "requests.csv", index=False)  # the monitor's reference
            (tmp / "vocabulary.txt").write_text("\n".join(training_vocabulary()) + "\n")
        with atomic_path(paths.EVAL_SPECTROGRAMS) as png:  # a DVC image plot: base row vs finetuned row
            spectrogram_grid(samples, sr, png, ep.samples)
        flat = tracking.flatten(results)
        mlflow.log_metrics({k: float(v) for k, v in flat.items() if v not in ("None", "nan")})
        mlflow.log_artifacts(str(paths.EVAL_REPORTS), artifact_path="eval")  # WAVs play in the MLflow UI
        mlflow.log_artifact(str(paths.EVAL_PER_MOOD))
        mlflow.log_artifact(str(paths.EVAL_SPECTROGRAMS))
    log.info("evaluate: %s", json.dumps(results))


def spectrogram_grid(samples: dict[str, list], sr: int, png: Path, n: int) -> None:
    import librosa
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(samples), n, figsize=(3 * n, 2.4 * len(samples)), squeeze=False)
    for row, (name, audio) in enumerate(samples.items()):
        for col in range(n):
            mel = librosa.power_to_db(librosa.feature.melspectrogram(y=audio[-1 - col][0], sr=sr, n_mels=64))
            axes[row, col].imshow(mel, origin="lower", aspect="auto", cmap="magma")
            axes[row, col].set_title(f"{name} #{col}", fontsize=8)
            axes[row, col].axis("off")
    fig.tight_layout()
    fig.savefig(png, dpi=80, format="png")
    plt.close(fig)
