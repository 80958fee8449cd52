"""recipes/distill/*.py end to end on the tiny corpus with two tiny teachers."""

import json
import os
import re

import pytest
from helpers import run_recipe, tiny_overrides


@pytest.fixture(scope="module")
def teachers(tiny_corpus, tmp_path_factory):
    root = tmp_path_factory.mktemp("teachers")
    folders = []
    for arch in ("tdnn", "crdnn"):
        folder = str(root / arch)
        run_recipe("ctc/train.py", f"ctc/{arch}.yaml", name=arch,
                   **tiny_overrides(arch, tiny_corpus, folder))
        folders.append(folder)
    return folders


@pytest.fixture(scope="module")
def cache(teachers, tiny_corpus, tmp_path_factory):
    folder = str(tmp_path_factory.mktemp("cache") / "cache")
    run_recipe("distill/cache_teachers.py", "distill/cache.yaml", data_folder=tiny_corpus,
               corpus_size="tiny", teachers="[" + ",".join(teachers) + "]", cache_folder=folder)
    return folder


def distill(teachers, cache, tiny_corpus, folder, **extra):
    overrides = tiny_overrides("student", tiny_corpus, folder)
    overrides.update(teachers="[" + ",".join(teachers) + "]", cache_folder=cache, **extra)
    return run_recipe("distill/train.py", "distill/student.yaml", **overrides)


def test_cache_records_teachers_errors_and_dev_wer(cache, tiny_corpus):
    from speechkd.data.manifest import read_manifest
    from speechkd.distill.cache import PosteriorCache

    opened = PosteriorCache.open(cache)
    train_ids = {row["ID"] for row in read_manifest(os.path.join(tiny_corpus, "train.csv"))}
    assert train_ids <= set(opened.utt_ids)
    assert opened.teacher_names == ["tdnn", "crdnn"]
    assert len(opened.dev_wer_list()) == 2
    some = next(iter(train_ids))
    assert opened.teacher_error(some).shape == (2,)


@pytest.mark.parametrize("extra", [{"alpha": 0.3, "strategy": "average"},
                                   {"alpha": 0.0, "strategy": "best", "temperature": 2.0}])
def test_distill_writes_results_and_logs_loss_parts(teachers, cache, tiny_corpus, tmp_path, extra):
    folder = str(tmp_path / "student")
    distill(teachers, cache, tiny_corpus, folder, **extra)
    with open(os.path.join(folder, "train_log.txt")) as fin:
        log = fin.read()
    assert re.search(r"train ctc: [\d.e+-]+, train kd: [\d.e+-]+", log)
    with open(os.path.join(folder, "results.json")) as fin:
        results = json.load(fin)
    assert 0 <= results["sets"]["test"]["wer"]
    assert os.path.exists(os.path.join(folder, "wer_test.txt"))


def test_cache_from_other_teachers_is_refused(teachers, cache, tiny_corpus, tmp_path):
    """Asking for the teachers in another order (or other teachers) names the difference."""
    import subprocess
    import sys

    from helpers import REPO

    overrides = tiny_overrides("student", tiny_corpus, str(tmp_path / "s"))
    overrides.update(teachers="[" + ",".join(reversed(teachers)) + "]", cache_folder=cache)
    args = [sys.executable, "recipes/distill/train.py", "hparams/distill/student.yaml"]
    args += [f"--{k}={v}" for k, v in overrides.items()]
    proc = subprocess.run(args, cwd=REPO, capture_output=True, text=True, check=False)
    assert proc.returncode != 0
    output = proc.stdout + proc.stderr  # SpeechBrain logs the exception to stdout
    assert "does not match: teachers differ: cache has ['tdnn', 'crdnn']" in output, output[-2000:]


def test_teachers_agreement_cli_reads_the_cache_and_its_manifest(cache, capsys):
    from speechkd.cli import main

    assert main(["teachers", "agreement", cache]) == 0
    out = capsys.readouterr().out
    assert "Overall agreement" in out and "| teacher tdnn |" in out and "| weighted |" in out


def test_the_non_streaming_student_recipe_distils_a_tdnn(teachers, cache, tiny_corpus, tmp_path):
    """hparams/distill/tdnn_student.yaml: the same run as student.yaml with a TDNN as the student."""
    folder = str(tmp_path / "tdnn_student")
    overrides = {**tiny_overrides("tdnn", tiny_corpus, folder),
                 "teachers": "[" + ",".join(teachers) + "]", "cache_folder": cache}
    run_recipe("distill/train.py", "distill/tdnn_student.yaml", **overrides)
    with open(os.path.join(folder, "model.json")) as fin:
        card = json.load(fin)
    assert card["class"] == "speechkd.models.tdnn.TDNNCTC" and card["kwargs"]["channels"] == 32
    with open(os.path.join(folder, "train_log.txt")) as fin:
        assert re.search(r"train ctc: [\d.e+-]+, train kd: [\d.e+-]+", fin.read())


def test_init_from_starts_the_student_from_a_trained_model_and_refuses_another_size(
        teachers, cache, tiny_corpus, tmp_path):
    """``init_from``: the student begins at the baseline's weights (at lr 0 it ends there too, the
    feature normalizer included); a baseline of another size is refused, naming the key."""
    import subprocess
    import sys

    import torch
    from helpers import REPO

    from speechkd.experiment import load_model

    baseline = str(tmp_path / "baseline")
    run_recipe("ctc/train.py", "ctc/student.yaml", name="baseline", **tiny_overrides("student", tiny_corpus, baseline))
    continued = str(tmp_path / "continued")
    distill(teachers, cache, tiny_corpus, continued, init_from=baseline, lr=0.0)
    source, _ = load_model(baseline)
    student, _ = load_model(continued)
    for name, value in source.state_dict().items():
        assert torch.equal(student.state_dict()[name], value), name

    overrides = tiny_overrides("student", tiny_corpus, str(tmp_path / "other_size"))
    overrides.update(teachers="[" + ",".join(teachers) + "]", cache_folder=cache, init_from=baseline,
                     gru_hidden=24)
    args = [sys.executable, "recipes/distill/train.py", "hparams/distill/student.yaml"]
    args += [f"--{k}={v}" for k, v in overrides.items()]
    proc = subprocess.run(args, cwd=REPO, capture_output=True, text=True, check=False)
    assert proc.returncode != 0
    assert "init_from needs a student of the source's architecture and size" in proc.stdout + proc.stderr


def test_init_from_a_model_of_other_tokens_is_refused_naming_both_sizes(teachers, cache, tiny_corpus, tmp_path):
    """A source model that speaks another inventory (here English letters only) is refused before
    any training, naming the folder and both inventory sizes."""
    import functools
    import subprocess
    import sys

    from helpers import REPO

    from speechkd.checkpoints import Checkpointer
    from speechkd.experiment import TOKENS_FILE, build_model
    from speechkd.models import StreamingStudent
    from speechkd.text import TokenInventory

    source = str(tmp_path / "english_only")
    inventory = TokenInventory.from_languages(["en"])
    model = build_model(functools.partial(StreamingStudent, conv_channels=16, gru_hidden=16), inventory, source)
    inventory.save(os.path.join(source, TOKENS_FILE))
    Checkpointer(os.path.join(source, "save"), recoverables={"model": model}).save_checkpoint(meta={"WER": 50.0})

    overrides = tiny_overrides("student", tiny_corpus, str(tmp_path / "student"))
    overrides.update(teachers="[" + ",".join(teachers) + "]", cache_folder=cache, init_from=source)
    args = [sys.executable, "recipes/distill/train.py", "hparams/distill/student.yaml"]
    args += [f"--{k}={v}" for k, v in overrides.items()]
    proc = subprocess.run(args, cwd=REPO, capture_output=True, text=True, check=False)
    assert proc.returncode != 0
    assert re.search(rf"init_from: {re.escape(source)} speaks other tokens than this student \({len(inventory)} "
                     r"against \d+\)", proc.stdout + proc.stderr), (proc.stdout + proc.stderr)[-2000:]
    assert not os.path.exists(os.path.join(str(tmp_path / "student"), "train_log.txt"))


def test_transcripts_alone_leave_the_rows_without_one_out_of_training(teachers, cache, tiny_corpus, tmp_path):
    """alpha 1 with the teachers' transcripts of a transfer set: CTC reads the labelled rows only, so
    the rows the teachers left without a transcript are not trained on (they would only add
    zero-loss steps), and the log counts them."""
    from speechkd.data.manifest import read_manifest, write_manifest

    folder = str(tmp_path / "transcripts_only")
    # the cached dev split, its transcripts blanked, stands in for the transfer set
    transfer = [{**row, "wrd": ""} for row in read_manifest(os.path.join(tiny_corpus, "dev.csv"))]
    write_manifest(str(tmp_path / "unlabelled.csv"), transfer)
    distill(teachers, cache, tiny_corpus, folder, alpha=1.0, unlabelled_csv=str(tmp_path / "unlabelled.csv"),
            unlabelled_transcripts="greedy")
    labels = os.path.join(folder, "pseudo_labels")
    pseudo = {row["ID"] for row in read_manifest(os.path.join(labels, "pseudo_labelled.csv"), allow_empty_wrd=True)}
    still = {row["ID"] for row in read_manifest(os.path.join(labels, "still_unlabelled.csv"), allow_empty_wrd=True)}
    assert still  # one-epoch teachers: mostly blank, so most rows get no transcript (pseudo may be empty)
    train = {row["ID"] for row in read_manifest(os.path.join(tiny_corpus, "train.csv"))}
    trained_on = {row["ID"] for row in read_manifest(os.path.join(folder, "train_and_unlabelled.csv"))}
    assert trained_on == train | pseudo and len(pseudo) + len(still) == len(transfer)
    with open(os.path.join(folder, "log.txt")) as fin:
        assert f"{len(still)} unlabelled rows without a transcript left out of training" in fin.read()
