"""Corpus subsets: pool without the target, target prefixes, unlabelled audio, a few labelled utterances."""

import pytest

from speechkd.data import subsets
from speechkd.data.manifest import read_manifest, write_manifest
from speechkd.data.subsets import (
    concat_manifests,
    labelled_subset,
    prepare_pool_teacher,
    select_labelled,
    select_rows,
    subset_manifest,
    write_language_manifests,
)
from speechkd.text import TokenInventory


def row(utt, lang, duration=30.0, wrd="x"):
    return {"ID": utt, "duration": duration, "wav": f"$data_root/audio/clean/{lang}/{utt}.flac",
            "spk_id": "s", "lang": lang, "domain": "clean", "wrd": wrd}


@pytest.fixture
def corpus(tmp_path):
    folder = tmp_path / "corpus"
    write_manifest(folder / "train.csv", [row("ru-1", "ru"), row("uk-1", "uk"), row("de-1", "de"),
                                          row("uk-2", "uk"), row("uk-3", "uk"), row("en-1", "en")])
    write_manifest(folder / "dev.csv", [row("ru-8", "ru"), row("uk-8", "uk")])
    write_manifest(folder / "test.csv", [row("de-9", "de"), row("uk-9", "uk")])
    write_manifest(folder / "unlabelled.csv", [row("uk-5", "uk", wrd="true text")])
    return folder


def test_select_rows_prefix_reaches_minutes():
    rows = [row(f"uk-{i}", "uk", duration=40.0) for i in range(5)]
    assert [r["ID"] for r in select_rows(rows, max_minutes=1.0)] == ["uk-0", "uk-1"]  # 80 s >= 60 s
    assert len(select_rows(rows, max_minutes=None)) == 5
    assert select_rows([row("a", "ru"), row("b", "uk")], exclude=("uk",))[0]["ID"] == "a"


def test_language_manifests(corpus, tmp_path):
    out = tmp_path / "subsets"
    paths = write_language_manifests(corpus, out, "uk", pool=["ru", "de"], target_minutes=0.9)
    ids = {name: [r["ID"] for r in read_manifest(paths[name], allow_empty_wrd=True)]
           for name in paths if name != "minutes"}
    assert ids["pool_train"] == ["ru-1", "de-1"]          # en not in the pool, uk the target
    assert ids["pool_dev"] == ["ru-8"] and ids["pool_test"] == ["de-9"]
    assert ids["target_train"] == ["uk-1", "uk-2"]        # 60 s >= 0.9 min
    assert ids["target_dev"] == ["uk-8"] and ids["target_test"] == ["uk-9"]
    assert ids["target_unlabelled"] == ["uk-5"]
    assert paths["minutes"]["target_train"] == pytest.approx(1.0)
    assert read_manifest(paths["target_train"])[0]["wav"].startswith("$data_root/")

    everything = write_language_manifests(corpus, tmp_path / "all", "uk")
    assert [r["ID"] for r in read_manifest(everything["pool_train"])] == ["ru-1", "de-1", "en-1"]
    with pytest.raises(ValueError, match="also in the pool"):
        write_language_manifests(corpus, out, "uk", pool=["uk", "ru"])
    with pytest.raises(ValueError, match="no 'fr' utterances"):
        write_language_manifests(corpus, out, "fr")

    joined = concat_manifests([paths["target_train"], paths["target_unlabelled"]], tmp_path / "j.csv")
    assert [r["ID"] for r in read_manifest(joined)] == ["uk-1", "uk-2", "uk-5"]
    with pytest.raises(ValueError, match="already in an earlier manifest"):
        concat_manifests([paths["target_train"], paths["target_train"]], tmp_path / "k.csv")


def test_pool_teacher_gets_its_languages_and_the_whole_pools_inventory(corpus, tmp_path, monkeypatch):
    monkeypatch.setattr(subsets, "build_corpus", lambda **kwargs: None)  # the corpus fixture is built
    write_manifest(corpus / "train.csv", [row("ru-1", "ru", wrd="да"), row("de-1", "de", wrd="ja"),
                                          row("uk-1", "uk", wrd="так")])
    corpus_args = {"task": "numbers", "size": "tiny", "data_folder": corpus, "seed": 0, "target": "uk",
                   "target_minutes_built": 1, "unlabelled_minutes": 1, "subset_folder": tmp_path / "subsets"}
    train_csv, tokens = tmp_path / "tdnn" / "train.csv", tmp_path / "tdnn" / "tokens.txt"
    prepare_pool_teacher(train_csv, tokens, teacher_languages=["ru"], **corpus_args)
    assert [r["ID"] for r in read_manifest(train_csv)] == ["ru-1"]
    symbols = TokenInventory.load(tokens).symbols
    assert {"д", "а", "j", "a"} <= set(symbols) and "т" not in symbols  # the pool's text, not the target's
    tokens.write_text("<blank>\n<space>\n")  # a resumed run keeps the inventory it was trained with
    prepare_pool_teacher(train_csv, tokens, teacher_languages=["ru", "de"], **corpus_args)
    assert tokens.read_text() == "<blank>\n<space>\n" and len(read_manifest(train_csv)) == 2
    with pytest.raises(ValueError, match="no utterances in"):
        prepare_pool_teacher(train_csv, tokens, teacher_languages=["es"], **corpus_args)


def test_labelled_subset_is_recorded_and_cut_from_the_manifest(tmp_path):
    manifest = tmp_path / "train.csv"
    write_manifest(manifest, [row(f"uk-{i}", "uk") for i in range(10)])
    chosen = labelled_subset(manifest, 0.3, seed=1, folder=tmp_path / "exp")
    assert chosen == select_labelled([f"uk-{i}" for i in range(10)], 3, seed=1)
    assert (tmp_path / "exp" / "labelled_ids.txt").read_text().split() == chosen
    subset = subset_manifest(manifest, chosen, tmp_path / "labelled.csv")
    ids = [r["ID"] for r in read_manifest(subset)]
    assert sorted(ids) == sorted(chosen) and ids == sorted(ids, key=lambda u: int(u.split("-")[1]))
