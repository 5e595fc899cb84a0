import datasets
import pandas as pd
from conftest import params_with

from bayes_beats import dataset, features, labels, sample


def test_split_by_track_puts_no_track_in_two_splits():
    tracks = pd.Series([f"t{i // 3}" for i in range(90)])  # 30 tracks x 3 clips
    split = dataset.split_by_track(
        tracks, params_with(dataset={"validation_fraction": 0.2, "test_fraction": 0.1}).dataset
    )
    assert pd.DataFrame({"t": tracks, "s": split}).groupby("t")["s"].nunique().max() == 1
    assert split.value_counts().to_dict() == {"train": 63, "validation": 18, "test": 9}


def test_data_stages_build_an_ace_step_dataset(synth_corpus, workdir):
    params = params_with(
        data={"source": "jamendo", "path": str(synth_corpus)},
        sample={"n_tracks": 20},
        dataset={"validation_fraction": 0.2, "test_fraction": 0.2},
    )
    for stage in (sample, features, labels, dataset):
        stage.run(params)
    dd = datasets.load_from_disk("data/dataset")
    assert set(dd) == {"train", "validation", "test"}
    fields = {
        "keys",
        "filename",
        "tags",
        "speaker_emb_path",
        "norm_lyrics",
        "recaption",
        "bpm",
        "keyscale",
        "timesignature",
        "valence",
        "arousal",
    }
    assert fields <= set(dd["train"].column_names)
    row = dd["train"][0]
    assert row["norm_lyrics"] == "[instrumental]" and isinstance(row["tags"], list)
    assert isinstance(row["recaption"], dict) and row["recaption"]["simplified"]
    assert (workdir / "data/dataset" / row["filename"]).is_file()
    tracks = {s: {k.rsplit("_", 1)[0] for k in dd[s]["keys"]} for s in dd}
    assert not (tracks["train"] & tracks["validation"]) and not (tracks["train"] & tracks["test"])
    assert sum(len(dd[s]) for s in dd) == 40
