"""Corpus readers: every source, normalization, counted drops and one-line errors."""

import itertools
import json
from collections import Counter

import pytest

from data_synth.corpus import CONFIG_KEYS, CorpusError, corpus_fingerprint, read_corpus
from data_synth.paths import CONF_DIR


def test_builtin_corpus_needs_no_file_and_mixes_words_pairs_and_phrases(corpus_config):
    corpus = read_corpus(corpus_config(builtin_words=300, builtin_bigrams=200, builtin_phrases=150))
    assert corpus.report.source == "builtin"
    assert len(corpus.texts) == corpus.report.kept == len(set(corpus.texts))
    words_per_query = Counter(len(text.split()) for text in corpus.texts)
    assert words_per_query[2] == 200
    assert sum(words_per_query[n] for n in range(3, 11)) == 150
    assert words_per_query[3] > 20 and words_per_query[10] > 0  # up to ten words
    assert max(words_per_query) <= 10
    assert all(2 <= len(text) <= 128 for text in corpus.texts)


def test_builtin_words_default_to_the_whole_dictionary(corpus_config):
    corpus = read_corpus(corpus_config(builtin_words=None, builtin_bigrams=0, builtin_phrases=0))
    assert len(corpus.texts) > 80_000


def test_builtin_phrases_walk_real_word_pairs_the_same_way_on_every_machine(corpus_config):
    first = read_corpus(corpus_config(builtin_words=0, builtin_bigrams=0, builtin_phrases=400))
    again = read_corpus(corpus_config(builtin_words=0, builtin_bigrams=0, builtin_phrases=400))
    assert first.texts == again.texts and len(first.texts) == 400
    pairs = set(read_corpus(corpus_config(builtin_words=0, builtin_bigrams=30_000)).texts)
    for phrase in first.texts:
        words = phrase.split()
        assert all(f"{a} {b}" in pairs for a, b in itertools.pairwise(words)), phrase
        assert words[-1] not in {"the", "of", "and", "to", "for", "a", "in"}, phrase


def test_text_file_is_normalized_deduplicated_and_every_drop_counted(tmp_path, corpus_config):
    path = tmp_path / "queries.txt"
    lines = [
        "Beyonce\u0301   halo".encode(),  # decomposed accent, run of spaces
        "Beyoncé halo".encode(),  # the same query once normalized
        b"",
        b"x",
        b"a" * 200,
        b"caf\xe9 latin-1 bytes",
        b"news podcasts\t",
    ]
    path.write_bytes(b"\n".join(lines) + b"\n")
    corpus = read_corpus(corpus_config(path=str(path)))
    assert corpus.texts == ["Beyoncé halo", "news podcasts"]
    report = corpus.report
    assert (report.read, report.kept, report.duplicates) == (7, 2, 1)
    assert (report.empty, report.too_short, report.too_long, report.undecodable) == (1, 1, 1, 1)
    assert "1 undecodable" in report.summary()


def test_csv_columns_each_give_queries_or_join_into_one(tmp_path, corpus_config):
    path = tmp_path / "songs.csv"
    path.write_text('title,artist,year\n"Hey, Jude",The Beatles,1968\nHalo,Beyoncé,2008\nshort\n')
    corpus = read_corpus(corpus_config(path=str(path), columns=["title", "artist"]))
    assert corpus.report.source == "csv"
    assert corpus.texts == ["Hey, Jude", "The Beatles", "Halo", "Beyoncé", "short"]
    assert corpus.report.malformed == 1  # the short row has no artist
    joined = read_corpus(
        corpus_config(path=str(path), columns=["title", "artist"], join_columns=True)
    )
    assert joined.texts == ["Hey, Jude The Beatles", "Halo Beyoncé", "short"]
    first_column = read_corpus(corpus_config(path=str(path)))
    assert first_column.texts == ["Hey, Jude", "Halo", "short"]


def test_tsv_keeps_stray_quotes_as_part_of_the_text(tmp_path, corpus_config):
    path = tmp_path / "songs.tsv"
    path.write_text('title\tartist\nMissing You (From Set It Off")"\tBrandy\n"Quoted\tX\n')
    corpus = read_corpus(corpus_config(path=str(path)))
    assert corpus.texts == ['Missing You (From Set It Off")"', '"Quoted']


def test_jsonl_field_with_malformed_lines_counted(tmp_path, corpus_config):
    path = tmp_path / "queries.jsonl"
    records = [{"q": "hey jude"}, {"q": ["halo", "crazy in love"]}, {"other": 1}]
    path.write_text("\n".join(json.dumps(r) for r in records) + "\n{not json\n")
    corpus = read_corpus(corpus_config(path=str(path), field="q"))
    assert corpus.texts == ["hey jude", "halo", "crazy in love"]
    assert corpus.report.malformed == 2


def test_saved_hf_dataset_directory(tmp_path, corpus_config):
    import datasets

    datasets.Dataset.from_dict({"title": ["Halo", "Hey Jude", None]}).save_to_disk(tmp_path / "d")
    corpus = read_corpus(corpus_config(path=str(tmp_path / "d"), columns=["title"]))
    assert corpus.report.source == "hf_disk"
    assert corpus.texts == ["Halo", "Hey Jude"]
    assert corpus.report.malformed == 1
    with pytest.raises(CorpusError, match="no column 'text'; it has title"):
        read_corpus(corpus_config(path=str(tmp_path / "d")))


def test_max_queries_stops_early_and_says_so(corpus_config):
    corpus = read_corpus(corpus_config(max_queries=50))
    assert len(corpus.texts) == 50 and corpus.report.truncated


@pytest.mark.parametrize(
    ("name", "content", "overrides", "message"),
    [
        ("absent.txt", None, {}, r"absent.txt: no such file; set corpus.path"),
        ("songs.csv", b"title,artist\nHalo,Beyonce\n", {"columns": ["song"]}, "no column 'song'"),
        ("blob.txt", b"\x00\x01\x02binary\x00", {}, "looks like a binary file"),
        ("tiny.txt", b"a\nb\n\n", {}, "no queries left after filtering"),
        ("empty.txt", b"", {}, r"empty.txt: empty; there is nothing to read"),
        ("empty.csv", b"", {}, r"empty.csv: empty; a CSV/TSV file needs a header row"),
        ("songs.xlsx", b"PK", {}, r"cannot tell the format from suffix '.xlsx'"),
    ],
)
def test_unusable_corpus_raises_one_line_naming_file_and_fix(
    tmp_path, corpus_config, name, content, overrides, message
):
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(CorpusError, match=message) as caught:
        read_corpus(corpus_config(path=str(path), **overrides))
    assert "\n" not in str(caught.value)
    assert name in str(caught.value)


def test_config_keys_are_checked(corpus_config):
    with pytest.raises(CorpusError, match=r"corpus\.colums: unknown key"):
        read_corpus(corpus_config(colums=["x"]))
    with pytest.raises(CorpusError, match=r"corpus\.path: required"):
        read_corpus(corpus_config(path="???"))


@pytest.mark.parametrize(
    ("key", "value"),
    [("builtin_phrases", "lots"), ("builtin_words", -5), ("max_queries", 0), ("min_chars", True)],
)
def test_counts_that_are_not_whole_numbers_are_named(corpus_config, key, value):
    with pytest.raises(CorpusError, match=rf"corpus\.{key}={value!r}: expected a whole number"):
        read_corpus(corpus_config(**{key: value}))


def test_fingerprint_follows_content_and_config(tmp_path, corpus_config):
    path = tmp_path / "q.txt"
    path.write_text("halo\n")
    config = corpus_config(path=str(path))
    first = corpus_fingerprint(config)
    assert corpus_fingerprint(config) == first
    assert corpus_fingerprint(corpus_config(path=str(path), min_chars=3)) != first
    path.write_text("halo\nhey jude\n")
    assert corpus_fingerprint(config) != first


def test_all_corpus_examples_share_the_builtin_schema():
    from omegaconf import OmegaConf

    builtin_keys = list(OmegaConf.load(CONF_DIR / "corpus" / "builtin.yaml"))
    assert builtin_keys == list(CONFIG_KEYS)
    for path in (CONF_DIR / "corpus").glob("*.yaml"):
        assert list(OmegaConf.load(path)) == builtin_keys, path.name


def test_music_titles_and_artists_survive_real_world_mess(music_file, corpus_config):
    corpus = read_corpus(corpus_config(path=str(music_file), columns=["title", "artist"]))
    assert corpus.report.source == "tsv"
    assert corpus.report.kept > 10_000
    assert 'Missing You (From Set It Off")"' in corpus.texts
    report = corpus.report
    drops = ("undecodable", "malformed", "empty", "too_short", "too_long", "duplicates")
    assert report.read == report.kept + sum(getattr(report, reason) for reason in drops)


def test_cr_only_line_ends_are_lines(tmp_path, corpus_config):
    path = tmp_path / "old_mac.csv"
    path.write_bytes(b"title,artist\rSong A,Artist A\rSong B,Artist B\r")
    corpus = read_corpus(corpus_config(path=str(path), columns=["title", "artist"]))
    assert corpus.texts == ["Song A", "Artist A", "Song B", "Artist B"]


def test_utf16_is_read_when_named_and_named_when_not(tmp_path, corpus_config):
    path = tmp_path / "queries.txt"
    path.write_bytes("beyoncé halo\nnews podcasts\n".encode("utf-16"))
    with pytest.raises(CorpusError, match=r"set corpus\.encoding=utf-16"):
        read_corpus(corpus_config(path=str(path)))
    corpus = read_corpus(corpus_config(path=str(path), encoding="utf-16"))
    assert corpus.texts == ["beyoncé halo", "news podcasts"]


def test_a_latin1_file_read_as_utf8_says_which_encoding_to_set(tmp_path, corpus_config):
    path = tmp_path / "queries.txt"
    path.write_bytes("café crème\nnaïve song\nthird one\n".encode("latin-1"))
    with pytest.raises(CorpusError, match=r"corpus\.encoding=latin-1"):
        read_corpus(corpus_config(path=str(path)))
    assert len(read_corpus(corpus_config(path=str(path), encoding="latin-1")).texts) == 3


def test_an_empty_column_list_is_refused(tmp_path, corpus_config):
    path = tmp_path / "songs.csv"
    path.write_text("title,artist\nSong A,Artist A\n")
    with pytest.raises(CorpusError, match=r"corpus.columns=\[\]"):
        read_corpus(corpus_config(path=str(path), columns=[]))
