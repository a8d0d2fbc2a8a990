from pathlib import Path

import pytest

from sidrec.core.config import defaults, load_config
from sidrec.core.errors import InputError, SidrecError


def test_defaults_profile_and_overrides_layer_in_order(tmp_path: Path) -> None:
    profile = tmp_path / "p.yaml"
    profile.write_text("seed: 7\ndata:\n  synth:\n    n_items: 500\n")
    cfg = load_config(profile, ["data.synth.n_items=300", "data.split=temporal"])
    assert cfg["seed"] == 7
    assert cfg["data"]["synth"]["n_items"] == 300
    assert cfg["data"]["split"] == "temporal"
    assert cfg["data"]["synth"]["n_users"] == defaults()["data"]["synth"]["n_users"]


def test_unknown_key_is_rejected_with_the_nearest_name() -> None:
    with pytest.raises(
        SidrecError, match=r"unknown config key 'data.synth.n_item'.*'data.synth.n_items'"
    ):
        load_config(None, ["data.synth.n_item=5"])


def test_unknown_key_in_profile_names_the_file(tmp_path: Path) -> None:
    profile = tmp_path / "bad.yaml"
    profile.write_text("sed: 3\n")
    with pytest.raises(SidrecError, match=r"bad\.yaml: unknown config key 'sed'.*'seed'"):
        load_config(profile)


def test_values_must_have_the_default_type() -> None:
    with pytest.raises(SidrecError, match="seed expects int"):
        load_config(None, ["seed=abc"])
    with pytest.raises(SidrecError, match="is a section"):
        load_config(None, ["data=3"])
    with pytest.raises(SidrecError, match="expected key=value"):
        load_config(None, ["seed"])
    # null defaults accept any value
    assert load_config(None, ["data.letter.src=/x"])["data"]["letter"]["src"] == "/x"


def test_invalid_yaml_names_file_and_line(tmp_path: Path) -> None:
    profile = tmp_path / "broken.yaml"
    profile.write_text("seed: 1\ndata: [unclosed\n")
    with pytest.raises(InputError, match=r"broken\.yaml, line \d+: invalid YAML"):
        load_config(profile)


def test_missing_profile_is_reported() -> None:
    with pytest.raises(InputError, match="config file does not exist"):
        load_config("/nonexistent/profile.yaml")


def test_shipped_profiles_resolve() -> None:
    for profile in sorted((Path(__file__).parents[1] / "configs").glob("*.yaml")):
        assert load_config(profile)["run_name"]
