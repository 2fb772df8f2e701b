"""NoiseModel as the training code uses it: profiles, seeds, rates and any input."""

from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from omegaconf import OmegaConf

from data_synth.noise.model import NoiseModel
from data_synth.noise.operations import QUERY_OPS, TYPO_OPS
from data_synth.noise.profile import CONFIG_KEYS, NoiseConfigError
from data_synth.paths import CONF_DIR

PROFILES = ("default", "keyboard", "phonetic", "search_queries")
QUERIES = ["the beatles", "Beyoncé", "don't stop believin'", "news podcasts", "abba"] * 40


def default_config(**overrides):
    config = OmegaConf.to_container(OmegaConf.load(CONF_DIR / "noise" / "default.yaml"))
    config.update(overrides)
    return config


@pytest.mark.parametrize("profile", PROFILES)
def test_every_profile_loads_and_has_the_full_schema(profile):
    model = NoiseModel.from_profile(profile)
    assert tuple(model.config) == CONFIG_KEYS
    assert any(c.ops for c in model.corrupt_batch(QUERIES))


@pytest.mark.parametrize("profile", PROFILES)
def test_every_profile_key_has_a_comment(profile):
    lines = (CONF_DIR / "noise" / f"{profile}.yaml").read_text().splitlines()
    for number, line in enumerate(lines):
        if line.strip() and not line.lstrip().startswith("#"):
            commented = "#" in line or lines[number - 1].lstrip().startswith("#")
            assert commented, f"{profile}.yaml:{number + 1}: {line!r} has no comment"


def test_same_seed_repeats_and_another_seed_differs():
    first = NoiseModel.from_profile("default", seed=7).corrupt_batch(QUERIES)
    again = NoiseModel.from_profile("default", seed=7).corrupt_batch(QUERIES)
    other = NoiseModel.from_profile("default", seed=8).corrupt_batch(QUERIES)
    assert first == again
    assert [c.noisy for c in first] != [c.noisy for c in other]


def test_from_config_takes_the_dictconfig_hydra_passes():
    as_dict = NoiseModel.from_config(default_config(), seed=3).corrupt_batch(QUERIES)
    as_dictconfig = NoiseModel.from_config(OmegaConf.create(default_config()), seed=3)
    assert as_dictconfig.corrupt_batch(QUERIES) == as_dict
    assert as_dict == NoiseModel.from_profile("default", seed=3).corrupt_batch(QUERIES)


def test_ops_are_reported_exactly_when_the_query_changed():
    for corruption in NoiseModel.from_profile("search_queries", seed=1).corrupt_batch(QUERIES):
        assert bool(corruption.ops) == (corruption.noisy != corruption.clean)
        assert set(corruption.ops) <= set(TYPO_OPS + QUERY_OPS)


def test_clean_share_leaves_that_share_of_queries_untouched():
    model = NoiseModel.from_config(default_config(clean_share=0.3), seed=0)
    results = model.corrupt_batch(["physical graffiti"] * 4000)
    untouched = sum(c.noisy == c.clean for c in results) / len(results)
    assert 0.27 < untouched < 0.33
    everything_clean = NoiseModel.from_config(default_config(clean_share=1.0))
    assert all(not c.ops for c in everything_clean.corrupt_batch(QUERIES))


def test_error_count_follows_its_distribution_and_its_cap():
    config = default_config(
        clean_share=0.0,
        query_ops={},
        error_count_weights=[0.0, 0.0, 1.0],
        typo_weights={"keyboard_substitute": 1.0},
    )
    long_query = NoiseModel.from_config(config).corrupt_batch(["supercalifragilistic"] * 100)
    assert Counter(len(c.ops) for c in long_query) == {3: 100}
    short_query = NoiseModel.from_config(config).corrupt_batch(["abba"] * 100)
    assert Counter(len(c.ops) for c in short_query) == {1: 100}  # 4 chars * 0.2 -> one typo


def test_typo_weights_choose_the_operations():
    config = default_config(typo_weights={"transpose": 1.0, "delete": 0.0}, query_ops={})
    ops = Counter(op for c in NoiseModel.from_config(config).corrupt_batch(QUERIES) for op in c.ops)
    assert set(ops) == {"transpose"}


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"colour": 1}, "noise.colour: unknown key"),
        ({"layout": "dvorak"}, "noise.layout: unknown layout 'dvorak'"),
        ({"typo_weights": {"teleport": 1.0}}, "noise.typo_weights.teleport: unknown operation"),
        ({"clean_share": 2}, r"noise.clean_share: expected a number in \[0, 1\]"),
        ({"error_count_weights": []}, "noise.error_count_weights"),
        ({"confusions": "/nonexistent/table.tsv"}, "noise.confusions: /nonexistent/table.tsv"),
    ],
)
def test_bad_config_names_the_key(override, message):
    with pytest.raises(NoiseConfigError, match=message):
        NoiseModel.from_config(default_config(**override))


def test_missing_profile_lists_the_available_ones():
    with pytest.raises(NoiseConfigError, match="choose one of default, keyboard"):
        NoiseModel.from_profile("nonexistent")


def test_malformed_confusion_table_names_the_line(tmp_path):
    table = tmp_path / "bad.tsv"
    table.write_text("ph\tf\t1\nph only one column\n")
    with pytest.raises(NoiseConfigError, match=r"bad.tsv:2: expected pattern"):
        NoiseModel.from_config(default_config(confusions=str(table)))


ANY_MODEL = {profile: NoiseModel.from_profile(profile, seed=0) for profile in PROFILES}


@settings(max_examples=300, deadline=None)
@given(text=st.text(max_size=40), profile=st.sampled_from(PROFILES))
def test_any_unicode_input_gives_a_non_empty_output(text, profile):
    corruption = ANY_MODEL[profile].corrupt(text)
    assert corruption.clean == text
    assert isinstance(corruption.noisy, str)
    if text:
        assert corruption.noisy
    if text.strip():
        assert corruption.noisy.strip()


@settings(max_examples=200, deadline=None)
@given(text=st.text(min_size=1, max_size=30), op=st.sampled_from(TYPO_OPS + QUERY_OPS))
def test_any_single_operation_on_any_input_changes_it_or_declines(text, op):
    result = ANY_MODEL["default"].apply_op(op, text)
    assert result is None or result != text
