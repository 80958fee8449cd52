"""Transcript-only teachers: the transcript cache (by utterance ID, fingerprinted) and the pseudo-label filter."""

import json
import os

import pytest
import torch

from speechkd.distill.transcripts import (
    Transcript,
    TranscriptTeacher,
    filter_pseudo_labels,
    transcribe_dataset,
)


class LengthTeacher(TranscriptTeacher):
    """Says how many samples it heard; counts the utterances it was asked about."""

    def __init__(self, version="v1"):
        self.name = "length"
        self.version = version
        self.heard = 0

    def transcribe(self, wavs, wav_lens):
        self.heard += wavs.shape[0]
        lengths = torch.round(wav_lens * wavs.shape[1]).long().tolist()
        return [Transcript(f"heard {n}", 0.5) for n in lengths]

    def fingerprint(self):
        return f"length-{self.version}"


def test_transcripts_are_cached_by_utterance_and_refused_for_another_teacher(tiny_corpus, tmp_path):
    from speechkd.data.pipelines import make_dataset

    dataset = make_dataset(os.path.join(tiny_corpus, "dev.csv"), tiny_corpus, need_text=False, sort="none")
    ids = list(dataset.data_ids)
    teacher = LengthTeacher()
    first = transcribe_dataset(teacher, dataset, str(tmp_path), batch_size=4)
    assert teacher.heard == len(ids) and sorted(first) == sorted(ids)
    durations = {row_id: dataset.data[row_id]["duration"] for row_id in ids}
    for utt, transcript in first.items():  # each utterance got its own transcript, not a batch neighbour's
        assert int(transcript.text.split()[1]) == pytest.approx(16000 * float(durations[utt]), abs=2)

    # a killed run leaves a partial last line: that utterance alone is transcribed again
    path = tmp_path / "transcripts.jsonl"
    lines = path.read_text().splitlines()
    path.write_text("\n".join(lines[:-1]) + "\n" + lines[-1][:10])
    again = LengthTeacher()
    second = transcribe_dataset(again, dataset, str(tmp_path), batch_size=4)
    assert again.heard >= 1 and again.heard <= 4 and second == first

    with pytest.raises(ValueError, match=r"length-v1.*length-v2"):
        transcribe_dataset(LengthTeacher("v2"), dataset, str(tmp_path))
    assert json.loads((tmp_path / "meta.json").read_text())["fingerprint"] == "length-v1"


def test_pseudo_labels_are_normalized_and_filtered_by_confidence_and_agreement():
    rows = [{"ID": f"u{i}", "lang": "en", "wrd": ""} for i in range(5)]
    transcripts = {"u0": Transcript("6,400 and 91.", 0.9), "u1": Transcript("Call me at 9!", 0.2),
                   "u2": Transcript("...", 0.9), "u3": Transcript("one two three four", 0.8),
                   "u4": Transcript("Seven eight", 0.7)}
    second = {"u0": Transcript("six thousand four hundred and ninety one", 1.0),
              "u1": Transcript("", 1.0), "u2": Transcript("", 1.0),
              "u3": Transcript("one two", 1.0),  # 2 of 4 words deleted: WER 50 %
              "u4": Transcript("seven nine", 1.0)}  # 1 of 2 words wrong: 50 %
    kept, dropped = filter_pseudo_labels(rows, transcripts, min_confidence=0.5)
    assert [r["ID"] for r in kept] == ["u0", "u3", "u4"]
    assert kept[0]["wrd"] == "six thousand four hundred and ninety one"
    assert dropped == {"unusable audio": 0, "empty": 1, "confidence": 1, "disagreement": 0}
    kept, dropped = filter_pseudo_labels(rows, transcripts, 0.5, second, max_disagreement=40)
    assert [r["ID"] for r in kept] == ["u0"] and dropped["disagreement"] == 2
    kept, _ = filter_pseudo_labels(rows, transcripts, 0.5, second, max_disagreement=50)
    assert [r["ID"] for r in kept] == ["u0", "u3", "u4"]


def test_pseudo_labels_of_a_teacher_with_unk_hold_no_unk():
    """A teacher trained on a prepared corpus has ``<unk>``: its transcripts skip it (not the word 'unk')."""
    from speechkd.distill.teachers import Teacher
    from speechkd.distill.transcripts import GreedyTranscripts
    from speechkd.text import TokenInventory

    inventory, _ = TokenInventory.from_training_texts(["ab ba"], other_texts=["abc"])
    path = [inventory.index(s) for s in ("a", "b", "<unk>", "<blank>", "<unk>", " ", "b")]

    class UnkTeacher(Teacher):
        name, symbols, blank_index, word_delimiter = "unk", inventory.symbols, 0, " "
        frame_shift_ms, sample_rate, normalize_waveform = 20, 16000, False

        def forward_log_probs(self, wavs, wav_lens):
            log_probs = torch.full((1, len(path), len(self.symbols)), -10.0)
            log_probs[0, torch.arange(len(path)), torch.tensor(path)] = 0.0
            return log_probs.log_softmax(-1), torch.tensor([len(path)])

        def fingerprint(self):
            return "unk-v1"

    transcripts = GreedyTranscripts(UnkTeacher()).transcribe(torch.zeros(1, 320), torch.ones(1))
    assert transcripts[0].text == "ab b"
    kept, _ = filter_pseudo_labels([{"ID": "u", "lang": "en", "wrd": ""}], {"u": transcripts[0]})
    assert kept[0]["wrd"] == "ab b"


def test_second_opinion_is_normalized_like_the_pseudo_label():
    """``6,400`` is one number in both transcripts (not "six four hundred" in the second opinion)."""
    rows = [{"ID": "u", "lang": "en", "wrd": ""}]
    kept, dropped = filter_pseudo_labels(rows, {"u": Transcript("six thousand four hundred", 0.9)}, 0.5,
                                         {"u": Transcript("6,400", 1.0)}, max_disagreement=0)
    assert [r["wrd"] for r in kept] == ["six thousand four hundred"] and dropped["disagreement"] == 0


def test_whisper_fingerprint_covers_tokenizer_and_vocabulary(tmp_path, monkeypatch):
    import faster_whisper

    from speechkd.distill.transcripts import WhisperTeacher

    monkeypatch.setattr(faster_whisper, "WhisperModel", lambda *args, **kwargs: None)  # no weights needed
    for name in ("model.bin", "config.json"):
        (tmp_path / name).write_text(name)
    prints = [WhisperTeacher(str(tmp_path)).fingerprint()]
    for name in ("tokenizer.json", "vocabulary.txt"):
        (tmp_path / name).write_text("v1")
        prints.append(WhisperTeacher(str(tmp_path)).fingerprint())
        (tmp_path / name).write_text("v2")
        prints.append(WhisperTeacher(str(tmp_path)).fingerprint())
    assert len(set(prints)) == 5


class SpellingTeachers:
    """A posterior source (what a posterior cache gives) whose one teacher spells a chosen text per utterance:
    each character on one frame, a blank after it (and around it)."""

    def __init__(self, inventory, texts):
        self.inventory, self.texts = inventory, texts
        self.teacher_names, self.symbols, self.frame_shifts_ms, self.k = ["speller"], [inventory.symbols], [20], 0

    def dev_wer_list(self):
        return None

    def path(self, text):
        ids = [self.inventory.blank_index]
        for char in text:
            ids += [self.inventory.symbols.index(char), self.inventory.blank_index]
        return ids

    def teacher_batch(self, batch):
        paths = [self.path(self.texts[utt]) for utt in batch.id]
        width, vocab = max(map(len, paths)), len(self.inventory.symbols)
        log_probs = torch.full((len(paths), 1, width, vocab), -12.0)
        for row, path in enumerate(paths):
            log_probs[row, 0, torch.arange(len(path)), torch.tensor(path)] = 0.0
        log_probs = log_probs.log_softmax(-1)
        ids = torch.arange(vocab).expand_as(log_probs)
        return {"log_probs": log_probs, "ids": ids, "frames": torch.tensor([[len(p)] for p in paths])}


def test_teachers_pseudo_label_unlabelled_audio_where_lexicon_and_greedy_transcripts_agree(tiny_corpus, tmp_path):
    from speechkd.data.manifest import read_manifest, write_manifest
    from speechkd.distill.transcripts import pseudo_label_from_teachers
    from speechkd.text import TokenInventory

    train_csv, dev_csv = (os.path.join(tiny_corpus, f"{split}.csv") for split in ("train", "dev"))
    train_texts = [row["wrd"] for row in read_manifest(train_csv)]
    inventory, _ = TokenInventory.from_training_texts(train_texts)
    words = sorted({word for text in train_texts for word in text.split()})
    unknown = "".join(sorted({char for char in "".join(words) if char.isalpha()}))[:6]  # no word of the lexicon
    assert unknown not in words
    rows = read_manifest(dev_csv)
    dev = [row["ID"] for row in rows]
    spoken = {utt: f"{words[i % len(words)]} {words[(i + 1) % len(words)]}" for i, utt in enumerate(dev)}
    spoken[dev[1]], spoken[dev[2]] = unknown, ""  # a word outside the lexicon; silence
    teachers = SpellingTeachers(inventory, spoken)
    dev_csv = str(tmp_path / "unlabelled.csv")  # and a row whose audio is missing
    write_manifest(dev_csv, [*rows, {**rows[0], "ID": "missing", "wav": "$data_root/nowhere.wav"}])

    labelled_csv, rest_csv = pseudo_label_from_teachers(teachers, inventory, dev_csv, tiny_corpus, str(tmp_path),
                                                        decoding="lexicon", lexicon_csv=train_csv, strategy="average")
    kept = {row["ID"]: row["wrd"] for row in read_manifest(labelled_csv)}
    assert kept == {utt: text for utt, text in spoken.items() if utt not in (dev[1], dev[2])}
    assert [row["ID"] for row in read_manifest(rest_csv, allow_empty_wrd=True)] == [dev[1], dev[2]]
    with open(tmp_path / "pseudo_labels.json") as fin:
        summary = json.load(fin)
    assert summary["offered"] == len(dev) + 1 and summary["pseudo_labelled"] == len(dev) - 2
    assert summary["dropped"] == {"unusable audio": 1, "empty": 1, "disagreement": 1}

    # greedy: the best path itself, the unknown word included (only silence has no label)
    labelled_csv, rest_csv = pseudo_label_from_teachers(teachers, inventory, dev_csv, tiny_corpus,
                                                        str(tmp_path / "greedy"), decoding="greedy", strategy="average")
    assert {row["ID"]: row["wrd"] for row in read_manifest(labelled_csv)} == {
        utt: text for utt, text in spoken.items() if utt != dev[2]}
    with pytest.raises(ValueError, match="needs lexicon_csv"):
        pseudo_label_from_teachers(teachers, inventory, dev_csv, tiny_corpus, str(tmp_path), decoding="lexicon")
    with pytest.raises(ValueError, match="strategy 'best'"):  # it reads the errors against the true transcripts
        pseudo_label_from_teachers(teachers, inventory, dev_csv, tiny_corpus, str(tmp_path), decoding="greedy",
                                   strategy="best")


def test_a_word_outside_the_known_words_is_kept_only_where_the_second_opinion_spells_it():
    rows = [{"ID": f"u{i}", "lang": "de", "wrd": ""} for i in range(3)]
    composed = {"u0": Transcript("siebenundachtzig", 1.0), "u1": Transcript("zwanzig vierzig siebenundachtzig", 1.0),
                "u2": Transcript("zwanzig vierzig", 1.0)}
    greedy = {"u0": Transcript("siebenundachtzig", 1.0), "u1": Transcript("zwanzig vierzig siebenundachtzg", 1.0),
              "u2": Transcript("zwanzig vierzg", 1.0)}
    known = {"zwanzig", "vierzig"}
    kept, dropped = filter_pseudo_labels(rows, composed, second_opinion=greedy, max_disagreement=50,
                                         known_words=known)
    assert [(row["ID"], row["wrd"]) for row in kept] == [("u0", "siebenundachtzig"), ("u2", "zwanzig vierzig")]
    assert dropped == {"unusable audio": 0, "empty": 0, "confidence": 0, "disagreement": 0, "unseen word": 1}
    kept, dropped = filter_pseudo_labels(rows, composed, second_opinion=greedy, max_disagreement=50)
    assert len(kept) == 3 and "unseen word" not in dropped  # without known_words: the WER rule alone
    with pytest.raises(ValueError, match="needs a second_opinion"):
        filter_pseudo_labels(rows, composed, known_words=known)


def test_compounds_label_the_words_the_lexicon_lacks_from_their_morphs(tiny_corpus, tmp_path):
    """German numbers 1-199 but 87 are the lexicon; the teachers spell 87 ("siebenundachtzig"): the word
    lexicon forces it onto a known word and drops it, the second pass composes it from morphs."""
    from num2words import num2words

    from speechkd.data.manifest import read_manifest, write_manifest
    from speechkd.distill.transcripts import pseudo_label_from_teachers
    from speechkd.text import TokenInventory

    numbers = [num2words(n, lang="de") for n in range(1, 200) if n != 87]
    template = read_manifest(os.path.join(tiny_corpus, "train.csv"))[0]
    lexicon_csv = str(tmp_path / "train.csv")
    write_manifest(lexicon_csv, [{**template, "ID": f"t{i}", "lang": "de", "wrd": text}
                                 for i, text in enumerate(numbers)])
    inventory, _ = TokenInventory.from_training_texts([*numbers, "siebenundachtzig"])
    rows = read_manifest(os.path.join(tiny_corpus, "dev.csv"))[:3]
    spoken = {rows[0]["ID"]: "siebenundachtzig", rows[1]["ID"]: "dreiundzwanzig vierzig", rows[2]["ID"]: ""}
    unlabelled_csv = str(tmp_path / "unlabelled.csv")  # their own wrd ("falsch") must never become a label
    write_manifest(unlabelled_csv, [{**row, "lang": "de", "wrd": "falsch"} for row in rows])
    teachers = SpellingTeachers(inventory, spoken)

    def labels(folder, **options):
        labelled_csv, _ = pseudo_label_from_teachers(teachers, inventory, unlabelled_csv, tiny_corpus, str(folder),
                                                     decoding="lexicon", lexicon_csv=lexicon_csv,
                                                     strategy="average", **options)
        with open(folder / "pseudo_labels.json") as fin:
            return {row["ID"]: row["wrd"] for row in read_manifest(labelled_csv)}, json.load(fin)

    kept, summary = labels(tmp_path / "words")
    assert kept == {rows[1]["ID"]: "dreiundzwanzig vierzig"}
    assert "labelled_by_morph_pass" not in summary
    # the word lexicon on audio it cannot spell ends with a wrong word or with no hypothesis
    # (flashlight's beam is not deterministic there): dropped either way
    assert summary["dropped"]["unusable audio"] == 0
    assert summary["dropped"]["empty"] + summary["dropped"]["disagreement"] == 2
    kept, summary = labels(tmp_path / "morphs", compounds=True)
    assert kept == {rows[0]["ID"]: "siebenundachtzig", rows[1]["ID"]: "dreiundzwanzig vierzig"}
    assert summary["labelled_by_morph_pass"] == 1 and summary["pseudo_labelled"] == 2
    assert summary["dropped_by_word_pass"]["empty"] + summary["dropped_by_word_pass"]["disagreement"] == 2
    assert summary["dropped"] == {"unusable audio": 0, "empty": 1, "disagreement": 0, "unseen word": 0}
    with pytest.raises(ValueError, match="follows a lexicon pass"):
        pseudo_label_from_teachers(teachers, inventory, unlabelled_csv, tiny_corpus, str(tmp_path),
                                   decoding="greedy", strategy="average", compounds=True)
