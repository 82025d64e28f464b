"""Parameters are typed and range-checked before a node runs, and only for the pipelines a run
runs: a bad text_filtering value stops `--pipelines text_filtering` at once (naming the key) and
leaves `--pipelines demo_world` alone."""

from __future__ import annotations

import pytest

from tests.test_end_to_end import make_project, run_session

BAD = {"text_filtering": {"repetition": {"ngram": -2}}}
TINY_WORLD = {"demo_world": {"n_public_images": 60, "n_private_albums": 4,
                             "n_heldout_albums": 2}}


@pytest.fixture()
def project(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    project = make_project(tmp_path)
    # its own MLflow store by absolute URI: MLflow caches a store per URI string, so the shared
    # relative sqlite:///mlflow.db would send later sessions in this process to this temp dir
    (project / "conf/local/mlflow.yml").write_text(
        f"server:\n  mlflow_tracking_uri: sqlite:///{project / 'mlflow.db'}\n")
    return project


def test_a_bad_value_stops_its_pipeline_before_any_node_and_names_the_key(project):
    with pytest.raises(Exception) as caught:
        run_session(project, ["text_filtering"], BAD)
    message = str(caught.value)
    assert "repetition.ngram" in message and "greater than or equal to 1" in message
    assert not (project / "data" / "08_reporting").exists()  # no node ran


@pytest.mark.parametrize("bad", [
    {"sampling": {"n_albums": "many"}},                       # wrong type
    {"sampling": {"photos_per_album": {"mn": 3}}},            # unknown nested key
    {"text_filtering": {"near_duplicates": {"max_similarity": 1.5}}},   # out of range
    {"rendering": {"coherence": {"guided_fraction": "half"}}},           # wrong type
    {"evaluation": {"utility": {"no_such_key": 1}}},          # unknown key
])
def test_wrong_types_unknown_keys_and_out_of_range_values_are_refused(project, bad):
    from kedro.framework.project import pipelines
    from kedro.validation.parameter_validator import ParameterValidator

    from tests.test_configuration import load_context

    raw = load_context(project, bad).config_loader["parameters"]
    (group,) = bad
    validator = ParameterValidator({group: pipelines[group]})
    with pytest.raises(Exception) as caught:
        validator.validate_raw_params(raw)
    leaf = bad[group]
    while isinstance(leaf, dict):
        key, leaf = next(iter(leaf.items()))
    assert key in str(caught.value)


def test_a_bad_value_in_one_group_leaves_other_pipelines_alone(project):
    run_session(project, ["demo_world"], {**BAD, **TINY_WORLD})
    assert (project / "data" / "01_raw" / "public" / "corpus.parquet").is_file()
