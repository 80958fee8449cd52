"""Bring your own teachers, end to end through the recipes on the tiny corpus.

A mixed ensemble (a speechkd TDNN: blank 0, 20 ms; a HuggingFace wav2vec2:
``<pad>`` blank, ``|`` delimiter, upper case, ``<s>``/``</s>``/``<unk>``,
10 ms) is cached and distilled into a student with its own inventory, whose
CTC term learns a transcript teacher's pseudo-labels; the pseudo-label
recipe runs with a CTC teacher decoded greedily.
"""

import json
import os
import re
import sys

import pytest
from helpers import REPO, run_recipe, tiny_overrides

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(__file__)), "distill"))
from pretrained_builders import build_hf_wav2vec2


@pytest.fixture(scope="module")
def teachers(tiny_tdnn_teacher, tmp_path_factory):
    root = tmp_path_factory.mktemp("byot")
    tdnn = tiny_tdnn_teacher
    hf = str(root / "wav2vec2")
    build_hf_wav2vec2(hf, conv_stride=(5, 32))  # 160 samples: 10 ms
    return {"root": root, "tdnn": tdnn, "hf": hf,
            "list": f"[{tdnn}, {{folder: {hf}, lowercase: true}}]"}


def test_mixed_ensemble_and_a_transcript_teacher_train_one_student(teachers, tiny_corpus):
    from toy import prepare_first_rows

    from speechkd.data.manifest import read_manifest, write_manifest
    from speechkd.data.pipelines import make_dataset
    from speechkd.distill.pretrained import HuggingFaceCTCTeacher
    from speechkd.distill.transcripts import (
        GreedyTranscripts,
        filter_pseudo_labels,
        transcribe_dataset,
    )

    subset = teachers["root"] / "subset"  # 24 rows per split keep the two recipe runs short
    prepare_first_rows(tiny_corpus, str(subset), rows=24)
    splits = {split: str(subset / f"{split}.csv") for split in ("train", "dev", "test")}
    cache = str(teachers["root"] / "cache")
    common = {"data_folder": tiny_corpus, "corpus_size": "tiny", "teachers": teachers["list"], "top_k": 4}
    run_recipe("distill/cache_teachers.py", "distill/cache.yaml", cache_folder=cache, batch_size=8, **common,
               cache_splits=f"{{train: {splits['train']}, dev: {splits['dev']}}}")
    with open(os.path.join(cache, "meta.json")) as fin:
        entries = json.load(fin)["teachers"]
    hf = HuggingFaceCTCTeacher(teachers["hf"])
    assert [e["frame_shift_ms"] for e in entries] == [20, 10]
    assert entries[1]["fingerprint"] == hf.fingerprint()  # weights hash + vocabulary fold
    assert entries[1]["tokens"]["symbols"][:3] == ["<blank>", " ", "a"]
    assert "<unk>" not in entries[1]["tokens"]["symbols"]

    # A transcript teacher (another wav2vec2, 40 ms, decoded greedily: at most 25 characters a second,
    # so a 20 ms student can emit them) labels the train rows: its pseudo-labels feed the CTC term
    # while the cached frame-level teachers feed the KL term of the same student
    speaker = str(teachers["root"] / "wav2vec2-40ms")
    build_hf_wav2vec2(speaker, conv_stride=(5, 128), seed=1)
    pseudo_csv = str(teachers["root"] / "train_pseudo.csv")
    rows = read_manifest(splits["train"])
    dataset = make_dataset(splits["train"], tiny_corpus, need_text=False, sort="none")
    transcripts = transcribe_dataset(GreedyTranscripts(speaker), dataset, str(teachers["root"] / "transcripts"))
    kept, dropped = filter_pseudo_labels(rows, transcripts)
    assert kept and len(kept) + sum(dropped.values()) == len(rows)
    assert {r["wrd"] for r in kept}.isdisjoint({r["wrd"] for r in rows})  # the teacher's words, not the corpus's
    write_manifest(pseudo_csv, kept)

    student = str(teachers["root"] / "student")
    sizes = tiny_overrides("student", tiny_corpus, student)
    run_recipe("distill/train.py", "distill/student.yaml", **{**sizes, **common}, cache_folder=cache,
               student_tokens="own", teacher_delay=0, train_csv=pseudo_csv, valid_csv=splits["dev"],
               test_csvs=f"[{splits['test']}]")
    with open(os.path.join(student, "train_log.txt")) as fin:
        ctc, kd = map(float, re.search(r"train ctc: ([\d.e+-]+), train kd: ([\d.e+-]+)", fin.read()).groups())
    assert ctc > 0 and kd > 0  # both terms learnt (a pseudo-label too long for the student would give CTC 0)
    with open(os.path.join(student, "results.json")) as fin:
        assert "test" in json.load(fin)["sets"]


def test_transcript_teacher_pseudo_labels_the_unlabelled_rows(teachers, tiny_corpus):
    from speechkd.data.manifest import read_manifest

    out = str(teachers["root"] / "pseudo")
    greedy = os.path.join(REPO, "tests", "plugins", "pseudo_label_greedy.yaml")
    run_recipe("distill/pseudo_label.py", greedy, data_folder=tiny_corpus,
               corpus_size="tiny", output_folder=out, ctc_teacher=teachers["tdnn"],
               labelled_csv=os.path.join(tiny_corpus, "dev.csv"), languages="[en, de]", min_confidence=0.0)
    with open(os.path.join(out, "pseudo_labels.json")) as fin:
        summary = json.load(fin)
    train = read_manifest(os.path.join(tiny_corpus, "train.csv"))
    asked = [row for row in train if row["lang"] in ("en", "de")]
    assert summary["pseudo_labelled"] + sum(summary["dropped"].values()) == len(asked)
    written = read_manifest(os.path.join(out, "train.csv"))
    assert len(written) == summary["labelled"] + summary["pseudo_labelled"]
    with open(os.path.join(out, "transcripts", "transcripts.jsonl")) as fin:
        cached = [json.loads(line) for line in fin]
    assert sorted(r["ID"] for r in cached) == sorted(r["ID"] for r in asked)
    by_id = {r["ID"]: r for r in cached}
    for row in written[summary["labelled"]:]:
        assert row["wrd"] == " ".join(by_id[row["ID"]]["text"].split())  # the teacher's words, normalized


def test_pipeline_passes_pretrained_teachers_to_cache_and_distillation(tmp_path):
    from speechkd.experiment import load_hparams
    from speechkd.pipeline import Pipeline, overrides_to_argv

    models = {}
    for name in ("xlsr", "mms"):
        models[name] = tmp_path / name
        models[name].mkdir()
        (models[name] / "model.safetensors").write_bytes(b"weights")
    hparams, _ = load_hparams(os.path.join(REPO, "hparams", "pipelines", "pretrained_teachers.yaml"),
                              {"xlsr_folder": str(models["xlsr"]), "mms_folder": str(models["mms"]),
                               "output_folder": str(tmp_path)})
    stages = {stage.name: stage for stage in Pipeline(hparams).stages()}
    assert "teacher_conformer" in stages and "teacher_crdnn" not in stages
    xlsr, mms = str(models["xlsr"]), str(models["mms"])
    expected = [os.path.join(str(tmp_path), "teachers", "conformer"), xlsr, {"folder": mms, "target_lang": "deu"}]
    for name in ("cache", "distill"):
        overrides = stages[name].config["overrides"]
        assert overrides["teachers"] == expected
        # what the recipe process reads back from its command line
        argv = overrides_to_argv({"teachers": overrides["teachers"]})[0]
        assert argv == f"--teachers=[{expected[0]}, {xlsr}, {{folder: {mms}, target_lang: deu}}]"
    assert stages["distill"].config["overrides"]["student_tokens"] == "own"
    # new weights in a teacher's folder change the cache stage's fingerprint
    before = stages["cache"].config["inputs"]
    assert before[mms][0][:2] == ("model.safetensors", 7)
    (models["mms"] / "model.safetensors").write_bytes(b"new weights")
    again = {stage.name: stage for stage in Pipeline(hparams).stages()}
    assert again["cache"].config["inputs"] != before
