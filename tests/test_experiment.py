"""The experiment's token inventory: from the training transcripts only."""

import pytest

from speechkd.data.manifest import write_manifest
from speechkd.experiment import inventory_for
from speechkd.text import TokenInventory


def manifest(path, texts):
    write_manifest(path, [{"ID": f"u{i}", "duration": 1.0, "wrd": text, "wav": "x.flac", "spk_id": "s",
                           "lang": "en", "domain": "clean"} for i, text in enumerate(texts)])
    return str(path)


def test_inventory_comes_from_training_text_and_dev_characters_become_unk(tmp_path):
    train = manifest(tmp_path / "train.csv", ["abc", "cab"])
    dev = manifest(tmp_path / "dev.csv", ["abz"])
    inventory = inventory_for([train, dev], str(tmp_path / "exp" / "tokens.txt"))
    assert inventory.symbols == ["<blank>", " ", "a", "b", "c", "<unk>"]
    assert inventory.encode("zz") == [5, 5]
    assert TokenInventory.load(tmp_path / "exp" / "tokens.txt") == inventory
    # reused as saved, even when a new manifest has more unseen characters: <unk> takes them
    test = manifest(tmp_path / "test.csv", ["q"])
    assert inventory_for([train, dev, test], str(tmp_path / "exp" / "tokens.txt")) == inventory


def test_inventory_prefers_the_prepared_corpus_tokens(tmp_path):
    train = manifest(tmp_path / "train.csv", ["abc"])
    TokenInventory(["<blank>", " ", "a", "<unk>"]).save(tmp_path / "tokens.txt")
    inventory = inventory_for([train], str(tmp_path / "exp" / "tokens.txt"))
    assert inventory.symbols == ["<blank>", " ", "a", "<unk>"]


def test_a_saved_inventory_without_unk_refuses_unknown_characters(tmp_path):
    train = manifest(tmp_path / "train.csv", ["abc"])
    TokenInventory.from_training_texts(["ab"])[0].save(tmp_path / "tokens_exp.txt")
    with pytest.raises(ValueError, match=r"tokens_exp.txt lacks characters \['c'\]"):
        inventory_for([train], str(tmp_path / "tokens_exp.txt"))
