"""The KD-families study in small: every family in one objective, and the study's table on two runs."""

import json
import os
import re
import sys

import pytest
from helpers import REPO, run_recipe, tiny_overrides


def student(tiny_corpus, teacher, folder, **weights):
    overrides = tiny_overrides("student", tiny_corpus, folder)
    overrides.update(teachers=f"[{teacher}]", teacher_dim=32, lang_minutes="null", corpus_languages="null",
                     corpus_engines="null", **weights)  # the shared tiny corpus's engines, not the study's
    run_recipe("distill/train.py", "kd_families/student.yaml", **overrides)
    return folder


@pytest.fixture(scope="module")
def runs(tiny_corpus, tiny_tdnn_teacher, tmp_path_factory):
    root = tmp_path_factory.mktemp("kd_families")
    every = {"w_kd": 0.5, "w_hint": 0.5, "w_energy": 1, "w_boundary": 0.5, "w_rkd": 1, "w_sp": 1, "w_dml": 1, "w_one": 1}
    return {"ctc": student(tiny_corpus, tiny_tdnn_teacher, str(root / "ctc")),
            "all": student(tiny_corpus, tiny_tdnn_teacher, str(root / "all"), **every)}


def test_every_family_trains_in_one_objective_and_logs_its_value(runs):
    with open(os.path.join(runs["all"], "train_log.txt")) as fin:
        log = fin.read()
    for term in ("ctc", "kd", "hint", "energy", "boundary", "rkd", "sp", "dml", "one"):
        assert float(re.search(rf"train {term}: ([\d.e+-]+)", log).group(1)) > 0, term
    assert 0 < float(re.search(r"boundary_flips: ([\d.e+-]+)", log).group(1)) < 1
    checkpoint = next(d for d in os.listdir(os.path.join(runs["all"], "save")) if d.startswith("CKPT"))
    assert os.path.exists(os.path.join(runs["all"], "save", checkpoint, "objective.ckpt"))  # peers, projection
    with open(os.path.join(runs["ctc"], "train_log.txt")) as fin:
        assert "train hint: 0.00e+00, train energy: 0.00e+00" in fin.read()  # weight-0 terms are not computed


def test_study_table_has_intervals_and_the_paired_difference(runs):
    sys.path.insert(0, os.path.join(REPO, "recipes", "kd_families"))
    from study import summarize

    summary, markdown = summarize({"methods": {"ctc": runs["ctc"], "kd+all": runs["all"]}})
    ctc, every = summary["methods"]["ctc"], summary["methods"]["kd+all"]
    assert ctc["wer"]["low"] <= ctc["wer"]["difference"] <= ctc["wer"]["high"]
    assert ctc["delta_wer_vs_ctc"] is None and ctc["delta_cer_vs_ctc"] is None
    for rate in ("wer", "cer"):
        assert every[f"delta_{rate}_vs_ctc"]["difference"] == pytest.approx(
            every[rate]["difference"] - ctc[rate]["difference"])
    with open(os.path.join(runs["all"], "results.json")) as fin:
        assert every["cer"]["difference"] == pytest.approx(json.load(fin)["sets"]["test"]["cer"])
    assert set(every["per_lang"]) == {"en", "de", "es", "fr", "it", "ru", "uk"}
    assert "| kd+all |" in markdown
    with open(os.path.join(runs["ctc"], "results.json")) as fin:
        assert json.load(fin)["params"] == ctc["params"]


def test_study_reports_a_subset_of_test_utterances_apart(runs):
    sys.path.insert(0, os.path.join(REPO, "recipes", "kd_families"))
    from study import summarize

    from speechkd.metrics import read_utterance_errors

    ctc_errors = read_utterance_errors(os.path.join(runs["ctc"], "wer_test.txt"))
    half = set(sorted(ctc_errors)[: len(ctc_errors) // 2])
    summary, markdown = summarize({"imbalance (words)": {"ctc": runs["ctc"], "kd+all": runs["all"]}},
                                  {"imbalance (words)": {"tail-word utts": half}})
    ctc, every = (summary["imbalance (words)"][k]["tail-word utts"] for k in ("ctc", "kd+all"))
    edits, words = (sum(ctc_errors[u][i] for u in half) for i in (0, 1))
    assert ctc["wer"]["difference"] == pytest.approx(100 * edits / words)  # the subset's own WER
    assert ctc["wer"]["n_utts"] == len(half) and ctc["delta_wer_vs_ctc"] is None
    assert every["delta_wer_vs_ctc"]["difference"] == pytest.approx(
        every["wer"]["difference"] - ctc["wer"]["difference"])
    assert f"tail-word utts ({len(half)}): WER [95 % CI] | Δ vs CTC |" in markdown


def study_module():
    sys.path.insert(0, os.path.join(REPO, "recipes", "kd_families"))
    import study

    return study


def test_study_rows_sort_by_the_condition_as_a_number():
    study = study_module()
    keys = ["kd 1/2", "ctc 1/30", "ctc 1/2", "hint 1/3.5", "ctc 1/12", "kd 40%", "ctc 20%"]
    assert sorted(keys, key=study.sort_key) == ["ctc 1/30", "ctc 1/12", "hint 1/3.5", "ctc 1/2", "kd 1/2",
                                                "ctc 20%", "kd 40%"]


def test_study_refuses_an_output_folder_made_with_other_settings(tmp_path):
    study = study_module()
    args = ["--output", str(tmp_path), "--report", "--tables", "1", "--epochs", "15"]
    study.Study(study.parse_args(args))  # records study.json
    study.Study(study.parse_args(args))  # the same settings: accepted
    with pytest.raises(SystemExit, match="holds runs made with other epochs"):
        study.Study(study.parse_args([*args[:-2], "--epochs", "20"]))
    with pytest.raises(SystemExit):
        study.parse_args(["--seeds", "1234", "1234"])


def test_across_seeds_averages_the_methods_tables_and_marks_intervals_that_exclude_zero():
    study = study_module()

    def row(wer, cer, delta=None):
        ci = None if delta is None else {"difference": delta[0], "low": delta[1], "high": delta[2]}
        return {"wer": {"difference": wer}, "cer": {"difference": cer}, "delta_wer_vs_ctc": ci, "delta_cer_vs_ctc": ci}

    summary = {"methods": {"ctc": row(40, 8), "kd": row(38, 7, (-2, -3, -1))},
               "methods, seed 2": {"ctc": row(44, 10), "kd": row(45, 9, (1, -1, 3))},
               "capacity": {"ctc 1/2": row(0, 0)}}
    table = study.across_seeds(summary)
    assert "| ctc | 2 | 42.0 | — | — | 9.0 | — |" in table
    assert "| kd | 2 | 41.5 | -2.0* / +1.0 | -0.5 | 8.0 | -2.0* / +1.0 |" in table
    assert study.across_seeds({"methods": summary["methods"]}) == ""  # one seed: no table
