"""The low-resource recipe end to end on the tiny corpus, and the inventory extension."""

import json
import runpy
import sys
from pathlib import Path

import pytest
import torch

from speechkd.data.manifest import read_manifest
from speechkd.models import TDNNCTC
from speechkd.models.surgery import extend_output_layer, freeze_for_adaptation
from speechkd.text import TokenInventory

ROOT = Path(__file__).resolve().parents[2]

DATA = [
    "--corpus_size=tiny", "--corpus_languages=[ru, de, uk]", "--corpus_target_minutes=0.3",
    "--unlabelled_minutes=0.3", "--target_minutes=0.2", "--batch_size=8",
]
TRAINING = ["--number_of_epochs=1"]
SIZES = {
    "teacher_conformer": ["--d_model=16", "--num_layers=1", "--nhead=2", "--d_ffn=32",
                          "--kernel_size=3", "--conv_channels=4"],
    "teacher_crdnn": ["--cnn_channels=[4, 4]", "--rnn_layers=1", "--rnn_neurons=16", "--dnn_neurons=16"],
    "teacher_tdnn": ["--channels=16", "--dilations=[1, 2]", "--teacher_languages=[ru]"],
}
STUDENT = ["--conv_channels=8", "--conv_layers=1", "--gru_hidden=8", "--number_of_epochs=1"]


def run_recipe(script, hparams, *overrides):
    """``python recipes/<script> hparams/low_resource/<hparams> ...`` in this process (in the test's folder)."""
    argv = [str(ROOT / "recipes" / script), str(ROOT / "hparams/low_resource" / hparams),
            *DATA, *overrides, "--device=cpu", "--noprogressbar"]
    previous, sys.argv = sys.argv, argv
    try:
        runpy.run_path(argv[0], run_name="__main__")
    finally:
        sys.argv = previous


def results(folder):
    return json.loads((Path(folder) / "results.json").read_text())


@pytest.fixture(autouse=True)
def one_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def test_recipe_end_to_end(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for teacher, sizes in SIZES.items():
        run_recipe("ctc/train.py", f"{teacher}.yaml", *sizes, *TRAINING)
    for teacher in SIZES:
        name = teacher.split("_")[1]
        layers = "output" if name == "tdnn" else "all"
        run_recipe("low_resource/adapt_teacher.py", "adapt.yaml", f"--teacher_name={name}",
                   f"--adapt_layers={layers}", *TRAINING)
    run_recipe("low_resource/cache_teachers.py", "cache.yaml")
    run_recipe("ctc/train.py", "scratch.yaml", *STUDENT)
    student = ("low_resource/train_student.py", "student.yaml")
    run_recipe(*student, "--use_unlabelled=False", "--name=kd_labelled", *STUDENT)
    run_recipe(*student, "--name=kd_all", *STUDENT)
    run_recipe(*student, "--name=kd_filtered", "--agreement_filter=teacher_cer", "--agreement_threshold=1000",
               *STUDENT)

    exp = tmp_path / "results/low_resource/uk-0.2min"
    pool_train = (exp / "manifests/pool_train.csv").read_text()
    assert "uk-" not in pool_train and "ru-" in pool_train and "de-" in pool_train
    pool = tmp_path / "results/low_resource/uk-pool"
    tdnn_train = (pool / "tdnn/1234/train.csv").read_text()
    assert "de-" not in tdnn_train and "ru-" in tdnn_train
    teacher_tokens = {(pool / f"{name}/1234/tokens.txt").read_text() for name in ("conformer", "crdnn", "tdnn")}
    assert len(teacher_tokens) == 1  # the whole pool's inventory, whatever a teacher's languages

    adapted = results(exp / "adapted_conformer/1234")
    pool_symbols = TokenInventory.load(tmp_path / "results/low_resource/uk-pool/conformer/1234/tokens.txt")
    target_chars = {ch for path in ("target_train", "target_dev", "target_test")
                    for row in read_manifest(exp / f"manifests/{path}.csv") for ch in row["wrd"]}
    assert adapted["added_tokens"] == sorted(target_chars - set(pool_symbols.symbols))
    assert "і" in adapted["added_tokens"]  # a Ukrainian letter Russian lacks
    extended = TokenInventory.load(exp / "adapted_conformer/1234/tokens.txt")
    assert extended.symbols == pool_symbols.symbols + adapted["added_tokens"]
    assert adapted["sets"]["target_test"]["per_lang"].keys() == {"uk"}
    tdnn = results(exp / "adapted_tdnn/1234")
    assert tdnn["adapt_layers"] == "output" and tdnn["trainable_params"] < tdnn["params"]

    ensemble = results(exp / "ensemble/1234")
    assert ensemble["params"] == sum(
        results(exp / f"adapted_{n}/1234")["params"] for n in ("conformer", "crdnn", "tdnn"))
    assert 0.0 <= ensemble["sets"]["target_test"]["wer"]

    unlabelled = len(read_manifest(exp / "manifests/target_unlabelled.csv"))
    labelled = len(read_manifest(exp / "manifests/target_train.csv"))
    assert unlabelled > 0 and labelled > 0
    for name, offered in (("kd_labelled", 0), ("kd_all", unlabelled), ("kd_filtered", unlabelled)):
        student = results(exp / f"{name}/1234")
        assert student["unlabelled"]["offered"] == offered
        assert "target_test" in student["sets"]
        rows = len(read_manifest(exp / f"{name}/1234/train.csv"))
        assert rows == labelled + student["unlabelled"]["kept"]
    assert results(exp / "kd_filtered/1234")["unlabelled"]["kept_share"] == 1.0  # threshold 1000 %
    tokens = (exp / "kd_all/1234/tokens.txt").read_text().split("\n")
    assert "ы" not in tokens and "і" in tokens  # the student's own (target) inventory
    assert results(exp / "student_scratch/1234")["params"] == results(exp / "kd_all/1234")["params"]


def test_inventory_extension_keeps_old_indices_and_output_rows():
    old = TokenInventory(["<blank>", " ", "а", "б", "ы"])
    new, added = old.extend(["а", "і", "ї", "б", " "])
    assert added == ["і", "ї"]
    assert new.symbols[: len(old)] == old.symbols
    assert [new.index(s) for s in added] == [5, 6]

    torch.manual_seed(0)
    model = TDNNCTC(n_tokens=len(old), channels=8, dilations=[1], kernel_size=3)
    before_w, before_b = model.ctc_lin.weight.detach().clone(), model.ctc_lin.bias.detach().clone()
    extend_output_layer(model, len(new))
    assert model.ctc_lin.weight.shape == (7, 8) and model.n_tokens == 7
    assert torch.equal(model.ctc_lin.weight[:5], before_w)
    assert torch.equal(model.ctc_lin.bias[:5], before_b)
    wavs = torch.randn(1, 8000)
    assert model(wavs, torch.ones(1)).shape[-1] == 7

    freeze_for_adaptation(model, "output")
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {"ctc_lin.weight", "ctc_lin.bias"}
    with pytest.raises(ValueError, match="shrink"):
        extend_output_layer(model, 3)
