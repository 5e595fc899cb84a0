import pytest
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
        Params.model_validate({"data": {"source": "gcs", "path": "/local/dir"}})


def test_out_of_range_number_is_rejected():
    with pytest.raises(ValidationError, match="clip_seconds"):
        Params.model_validate({"sample": {"clip_seconds": -1}})


def test_missing_params_file_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="params file not found"):
        load_params(tmp_path / "nope.yaml")
