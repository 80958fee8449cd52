import collections

import pytest

from speechkd.text import LANGUAGES, TokenInventory, alphabet, normalize


@pytest.mark.parametrize(
    "lang, raw, expected",
    [
        ("en", "Hello, World! I have 21 cats.", "hello world i have twenty one cats"),
        ("en", "Don’t   stop—it's 3 o'clock", "don't stop it's three o'clock"),
        ("de", "Ich habe 21 Äpfel; 1999 war's.", "ich habe einundzwanzig äpfel eintausendneunhundertneunundneunzig wars"),
        ("ru", "В 2023 году: 5 котов!", "в две тысячи двадцать три году пять котов"),
        ("uk", "П'ять і 2", "п'ять і два"),
        ("fr", "L'homme a 80 ans.", "l'homme a quatre vingts ans"),
        ("bg", "Имам 21 котки и 1005 кучета", "имам двадесет и едно котки и хиляда и пет кучета"),
        ("es", "¿Tienes 3?", "tienes tres"),
    ],
)
def test_normalize(lang, raw, expected):
    assert normalize(raw, lang) == expected


def test_normalized_numbers_stay_in_alphabet():
    for lang in LANGUAGES:
        letters = alphabet(lang)
        for number in (0, 7, 11, 19, 21, 99, 100, 101, 999, 1000, 1234, 2024, 10**6 + 3):
            spelled = normalize(str(number), lang)
            assert spelled and set(spelled) <= letters, (lang, number, spelled)


def test_alphabet_languages_and_unknown():
    assert {"en", "de", "es", "it", "fr", "ru", "uk", "cs", "pl", "eo", "bg"} <= set(LANGUAGES)
    assert "ß" in alphabet("de") and "ґ" in alphabet("uk") and "ё" not in alphabet("uk")
    assert " " in alphabet("ru")
    with pytest.raises(ValueError, match="unsupported language 'xx'"):
        normalize("a", "xx")


def test_inventory_round_trip(tmp_path):
    inv = TokenInventory.from_training_texts(["hello world", "ölé"])[0]
    assert inv.symbols[0] == "<blank>" and inv.blank_index == 0 and inv.index("<blank>") == 0
    assert inv.symbols[1] == " " and inv.index("<space>") == 1 and "<space>" in inv
    path = tmp_path / "tokens.txt"
    inv.save(path)
    assert path.read_text(encoding="utf-8").splitlines()[:2] == ["<blank>", "<space>"]
    loaded = TokenInventory.load(path)
    assert loaded == inv and loaded.fingerprint == inv.fingerprint and len(inv.fingerprint) == 16
    ids = inv.encode("hello wörld")
    assert inv.decode(ids) == "hello wörld"
    assert inv.decode([0] + ids + [0]) == "hello wörld"
    (ab, _), (ac, _) = TokenInventory.from_training_texts(["ab"]), TokenInventory.from_training_texts(["ac"])
    assert ab.fingerprint != ac.fingerprint


def test_encode_unknown_character_names_it():
    inv = TokenInventory.from_training_texts(["abc"])[0]
    with pytest.raises(ValueError, match=r"'z'.*'abz'"):
        inv.encode("abz")


def test_extend_keeps_indices():
    inv = TokenInventory.from_training_texts(["ab"])[0]
    bigger, added = inv.extend(["c", "a", "<space>", "é"])
    assert added == ["c", "é"]
    assert bigger.symbols[: len(inv)] == inv.symbols
    assert bigger.index("c") == len(inv) and bigger.index("é") == len(inv) + 1
    same, none_added = bigger.extend("abc")
    assert none_added == [] and same == bigger


def test_language_helpers():
    inv = TokenInventory.from_languages(["en", "ru"])
    assert inv.missing(["hello мир", "ß"]) == {"ß"}
    en = inv.language_subset("en")
    assert en[0] == 0 and inv.index("a") in en and inv.index("ж") not in en


def test_normalize_counts_what_it_changed():
    changes = collections.Counter()
    text = normalize("L’homme, né en 1990 — \"vraiment\"!", "fr", changes)
    assert text == "l'homme né en mille neuf cent quatre vingt dix vraiment"  # hyphens: spaces
    assert changes["numbers written out"] == 1 and changes["upper case lowered"] == 1
    assert changes["punctuation removed: ,"] == 1 and changes['punctuation removed: "'] == 2
    assert changes["punctuation removed: —"] == 1 and changes["punctuation removed: !"] == 1
    assert "apostrophe dropped" not in changes
    normalize("Don't café", "de", changes)
    assert changes["apostrophe dropped"] == 1  # German has no apostrophe: dont
    assert changes["letter outside the de alphabet: é"] == 1
    assert normalize(" ?! … ", "en") == ""


def test_inventory_from_training_text_min_count_and_unk():
    inventory, report = TokenInventory.from_training_texts(["aab", "aab", "ac"], min_count=2,
                                                           other_texts=["abz", "z"])
    assert inventory.symbols == ["<blank>", " ", "a", "b", "<unk>"]
    assert report == {"rare": {"c": 1}, "unseen": {"z": 2}}
    unk = inventory.index("<unk>")
    assert inventory.encode("ac z") == [2, unk, 1, unk]
    assert inventory.decode(inventory.encode("cab")) == "ab"  # <unk> is no text: never written
    full, report = TokenInventory.from_training_texts(["ab", "ba"], other_texts=["ab"])
    assert full.symbols == ["<blank>", " ", "a", "b"] and full.unk_index is None and report["rare"] == {}


def test_inventory_with_unk_saves_and_loads(tmp_path):
    inventory, _ = TokenInventory.from_training_texts(["ab"], other_texts=["x"])
    inventory.save(tmp_path / "tokens.txt")
    assert (tmp_path / "tokens.txt").read_text().splitlines() == ["<blank>", "<space>", "a", "b", "<unk>"]
    loaded = TokenInventory.load(tmp_path / "tokens.txt")
    assert loaded == inventory and loaded.encode("xa") == [4, 2]
