import os

import pytest
import yaml
from conftest import REPO
from pydantic import ValidationError

from bayes_beats.core.config import Params, load_params


def test_repo_params_parse_into_typed_sections():
    params = load_params(REPO / "params.yaml")
    assert params.data.source == "synth"
    assert params.sample.clip_seconds > 0


def test_typo_in_params_is_an_error_naming_the_key(tmp_path):
    bad = tmp_path / "params.yaml"
    bad.write_text("sample:\n  n_trakcs: 10\n")
    with pytest.raises(ValidationError, match="n_trakcs"):
        load_params(bad)


def test_gcs_source_needs_a_gs_url():
    with pytest.raises(ValidationError, match="does not match"):
        load_params(REPO / "params.yaml").with_overrides(data={"source": "gcs", "path": "/local/dir"})


def test_out_of_range_number_is_rejected():
    with pytest.raises(ValidationError, match="clip_seconds"):
        load_params(REPO / "params.yaml").with_overrides(sample={"clip_seconds": -1})


def test_values_live_in_params_yaml_only():
    """No field has a default: one that did could disagree with params.yaml, and code built without the file
    would run on it. Every key the models declare is in the file."""
    for name, section in Params.model_fields.items():
        assert section.is_required(), name
        defaults = [key for key, field in section.annotation.model_fields.items() if not field.is_required()]
        assert not defaults, (name, defaults)


def test_a_key_missing_from_params_yaml_is_an_error_naming_it(tmp_path):
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    del raw["codec"]["griffin_lim_iters"]
    trimmed = tmp_path / "params.yaml"
    trimmed.write_text(yaml.safe_dump(raw))
    with pytest.raises(ValidationError, match="griffin_lim_iters"):
        load_params(trimmed)


def test_missing_params_file_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="params file not found"):
        load_params(tmp_path / "nope.yaml")


@pytest.mark.parametrize("allow", [False, True])
def test_model_allow_download_is_what_lets_a_stage_reach_the_hub(tmp_path, monkeypatch, allow):
    from bayes_beats import cli, corpus

    params = load_params(REPO / "params.yaml").with_overrides(model={"allow_download": allow})
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params.model_dump(mode="json")))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # as the Makefile and the images export it
    seen = {}
    monkeypatch.setattr(corpus, "run", lambda p: seen.update(offline=os.environ["HF_HUB_OFFLINE"]))
    assert cli.main(["--params", str(tmp_path / "params.yaml"), "corpus"]) == 0
    assert seen["offline"] == ("0" if allow else "1")
