"""build_dataset: disjoint splits, determinism, manifest, atomic writes, cache names."""

import json

import pytest

from data_synth.build import (
    MANIFEST_NAME,
    build_dataset,
    dataset_fingerprint,
    load_dataset_dir,
    read_manifest,
    split_key,
    split_queries,
)
from data_synth.corpus import CorpusError

QUERIES = [f"query number {i}" for i in range(300)] + ["Beyoncé", "BEYONCE", "beyonce halo"]


@pytest.fixture
def corpus_file(tmp_path):
    path = tmp_path / "queries.txt"
    path.write_text("\n".join(QUERIES) + "\n")
    return path


@pytest.fixture
def configs(group, corpus_file):
    """(corpus, noise, build) configs for the small corpus, with build overrides."""

    def make(**build_overrides):
        build = {"progress": False, "num_proc": 1, **build_overrides}
        return (
            group("corpus", "builtin", path=str(corpus_file)),
            group("noise", "default"),
            group("build", "default", **build),
        )

    return make


def rows(dataset):
    return {split: dataset[split].to_dict() for split in dataset}


def test_builds_splits_disjoint_by_clean_query_with_a_manifest(configs, tmp_path):
    out = build_dataset(*configs(test_fraction=0.2), tmp_path / "ds")
    dataset = load_dataset_dir(out)
    assert set(dataset) == {"train", "validation", "test"}
    assert dataset["train"].column_names == ["noisy", "clean", "ops"]
    keys = {split: {split_key(t) for t in dataset[split]["clean"]} for split in dataset}
    assert not keys["train"] & keys["test"]
    assert not keys["train"] & keys["validation"]
    assert not keys["validation"] & keys["test"]
    assert sum(len(k) for k in keys.values()) == len({split_key(q) for q in QUERIES})
    manifest = read_manifest(out)
    assert manifest["counts"] == {split: len(dataset[split]) for split in dataset}
    assert manifest["fingerprint"] == dataset_fingerprint(*configs(test_fraction=0.2))
    train_ops = [op for ops in dataset["train"]["ops"] for op in ops]
    assert manifest["op_stats"]["train"]["ops"] == {
        op: train_ops.count(op) for op in set(train_ops)
    }
    for row in dataset["train"]:
        assert bool(row["ops"]) == (row["noisy"] != row["clean"])


def test_variants_per_query_are_distinct_noisy_versions(configs, tmp_path):
    dataset = load_dataset_dir(build_dataset(*configs(variants_per_query=4), tmp_path / "ds"))
    pairs = list(zip(dataset["train"]["noisy"], dataset["train"]["clean"], strict=True))
    assert len(pairs) == len(set(pairs))
    per_query = {clean: sum(c == clean for _, c in pairs) for _, clean in pairs}
    assert max(per_query.values()) == 4
    assert sum(per_query.values()) / len(per_query) > 3


def test_same_configs_give_the_same_dataset_whatever_the_process_count(configs, tmp_path):
    corpus, noise, build = configs()
    single = rows(load_dataset_dir(build_dataset(corpus, noise, build, tmp_path / "one")))
    parallel_build = {**build, "num_proc": 2, "parallel_min_queries": 0}
    parallel = rows(
        load_dataset_dir(build_dataset(corpus, noise, parallel_build, tmp_path / "two"))
    )
    assert parallel == single
    reseeded = {**build, "seed": 1}
    assert (
        rows(load_dataset_dir(build_dataset(corpus, noise, reseeded, tmp_path / "three"))) != single
    )


def test_case_and_diacritic_variants_share_a_split():
    splits = split_queries(["Beyoncé", "BEYONCE", "beyonce", "halo", "hey jude"], 0.3, 0.3, seed=0)
    holding = [split for split, texts in splits.items() if "Beyoncé" in texts]
    assert all("BEYONCE" in splits[s] and "beyonce" in splits[s] for s in holding)
    assert all(splits[split] for split in splits)  # three groups: one in each split
    with pytest.raises(CorpusError, match="2 distinct queries; a dataset needs at least 3"):
        split_queries(["halo", "Halo", "hey jude"], 0.1, 0.1, seed=0)


def test_fingerprint_names_content_not_how_it_was_built(configs, corpus_file):
    corpus, noise, build = configs()
    first = dataset_fingerprint(corpus, noise, build)
    assert dataset_fingerprint(corpus, noise, {**build, "num_proc": 4, "progress": True}) == first
    assert dataset_fingerprint(corpus, {**noise, "clean_share": 0.5}, build) != first
    assert dataset_fingerprint(corpus, noise, {**build, "seed": 5}) != first
    corpus_file.write_text("something else\n")
    assert dataset_fingerprint(corpus, noise, build) != first


def test_rebuild_replaces_only_a_data_synth_dataset(configs, tmp_path):
    out = build_dataset(*configs(), tmp_path / "ds")
    build_dataset(*configs(seed=3), out)
    assert read_manifest(out)["seed"] == 3
    with pytest.raises(CorpusError, match=r"build\.overwrite=true"):
        build_dataset(*configs(overwrite=False), out)
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "thesis.tex").write_text("years of work")
    with pytest.raises(CorpusError, match="is not a data_synth dataset; choose another"):
        build_dataset(*configs(), precious)
    assert (precious / "thesis.tex").read_text() == "years of work"


def test_a_failed_build_leaves_nothing_behind(configs, tmp_path):
    corpus, noise, build = configs()
    with pytest.raises(ValueError, match=r"noise\.layout"):
        build_dataset(corpus, {**noise, "layout": "dvorak"}, build, tmp_path / "out" / "ds")
    leftovers = list((tmp_path / "out").iterdir()) if (tmp_path / "out").exists() else []
    assert leftovers == []


def test_loading_a_missing_or_foreign_directory_names_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"nowhere: no dataset there; build one"):
        load_dataset_dir(tmp_path / "nowhere")
    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign" / MANIFEST_NAME).write_text(json.dumps({"format": "other"}))
    with pytest.raises(CorpusError, match="foreign: not a data_synth dataset"):
        load_dataset_dir(tmp_path / "foreign")


def test_build_config_errors_name_the_key(configs, tmp_path):
    corpus, noise, build = configs()
    with pytest.raises(CorpusError, match=r"build\.test_fraction"):
        build_dataset(corpus, noise, {**build, "test_fraction": 1.5}, tmp_path / "ds")
    with pytest.raises(CorpusError, match=r"build\.variants: unknown key"):
        build_dataset(corpus, noise, {**build, "variants": 2}, tmp_path / "ds")


def test_builds_from_the_music_chart_file(tmp_path, group, music_file):
    corpus = group("corpus", "csv", path=str(music_file))
    noise = group("noise", "search_queries")
    build = group("build", "default", progress=False, variants_per_query=2)
    dataset = load_dataset_dir(build_dataset(corpus, noise, build, tmp_path / "music"))
    assert len(dataset["train"]) > 15_000
    clean = {split: set(dataset[split]["clean"]) for split in dataset}
    assert not clean["train"] & clean["test"]
    assert 'Missing You (From Set It Off")"' in set().union(*clean.values())
    ops = read_manifest(tmp_path / "music")["op_stats"]["train"]["ops"]
    assert {"drop_punctuation", "case_change", "merge_words"} <= set(ops)
