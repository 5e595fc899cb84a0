"""core/paths.py: where a model directory's base pipeline is."""

import json

from bayes_beats.core.paths import BASE_POINTER, base_pipeline


def test_a_model_directory_names_its_base_pipeline_one_way(tmp_path):
    pipeline = tmp_path / "pipeline"
    pipeline.mkdir()
    (pipeline / "model_index.json").write_text("{}")
    assert base_pipeline(pipeline) == pipeline  # a saved pipeline (tiny models/base)
    pointer = tmp_path / "pointer"
    pointer.mkdir()
    (pointer / BASE_POINTER).write_text(json.dumps({"checkpoint_dir": str(pipeline)}))
    assert base_pipeline(pointer) == pipeline  # acestep15 models/base: the checkpoint it points to
    carried = tmp_path / "finetuned"
    (carried / "base").mkdir(parents=True)
    assert base_pipeline(carried) == carried / "base"  # a tiny fine-tune carries its base
    assert base_pipeline(tmp_path / "nothing") is None
