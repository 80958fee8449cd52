"""Items 2 and 6 of issue 11: a rerun into a trained folder with other hyperparameters is refused, the differences
named, before any file of the trained model is rewritten (so is a run into a folder another run writes);
``--restart=True`` starts clean."""

import os
import shutil

from conftest import student_overrides
from reliability_helpers import recipe_command, run

from speechkd.experiment import load_model
from speechkd.stages import folder_lock


def folder_bytes(folder):
    """Relative path -> bytes of every file of an experiment folder but its append-only logs and lock."""
    found = {}
    for root, _, files in os.walk(folder):
        for name in files:
            if name not in ("log.txt", "env.log", ".speechkd.lock"):
                path = os.path.join(root, name)
                with open(path, "rb") as fin:
                    found[os.path.relpath(path, folder)] = fin.read()
    return found


def test_other_hyperparameters_are_refused_then_restart_trains_from_scratch(trained_student, tiny_corpus, tmp_path):
    folder = str(tmp_path / "student")
    shutil.copytree(trained_student, folder)
    before = folder_bytes(folder)

    changed = student_overrides(tiny_corpus, folder, gru_hidden=32, lr=0.01, subsampling=4)
    with folder_lock(folder):  # another run writing into the folder
        returncode, output = run(recipe_command("ctc/train.py", "ctc/student.yaml", changed),
                                 str(tmp_path / "busy.log"))
    assert returncode != 0 and f"is in use by another speechkd run (pid {os.getpid()}," in output
    returncode, output = run(recipe_command("ctc/train.py", "ctc/student.yaml", changed), str(tmp_path / "refused.log"))

    assert returncode != 0
    assert f"{folder} holds a run trained with other hyperparameters: lr: 0.003 -> 0.01; gru_hidden: 16 -> 32; " \
           "subsampling: 2 -> 4. Rerun with its settings" in output
    assert folder_bytes(folder) == before
    load_model(folder)  # still the trained model, for transcribe and export

    returncode, output = run(recipe_command("ctc/train.py", "ctc/student.yaml", {**changed, "number_of_epochs": 1,
                                                                                   "restart": True}),
                             str(tmp_path / "restart.log"))

    assert returncode == 0, output[-3000:]
    model, _ = load_model(folder)
    assert model.frame_shift_ms == 40
    with open(os.path.join(folder, "train_log.txt")) as fin:
        assert [line.split(",")[0] for line in fin if line.startswith("epoch")] == ["epoch: 1"]


def test_differences_name_what_the_user_changed_not_what_follows_from_it():
    from speechkd.experiment import hparams_differences

    source = "number_of_epochs: 3\nlr: 0.1\nopt_class: !name:torch.optim.Adam\n    lr: !ref <lr>\n" \
             "counter: !new:speechbrain.utils.epoch_loop.EpochCounter\n    limit: !ref <number_of_epochs>\n"
    saved = "# comment\nnumber_of_epochs: 3\nlr: 0.1\nopt_class: !name:torch.optim.Adam\n    lr: 0.1\n" \
            "counter: !new:speechbrain.utils.epoch_loop.EpochCounter\n    limit: 3\n"
    longer = saved.replace("3", "6")
    other_lr = saved.replace("0.1", "0.5")

    assert hparams_differences(saved, longer, source) == []
    assert hparams_differences(saved, saved + "new_option: 1\n", source) == []  # added to the YAML since
    assert hparams_differences(saved, other_lr, source) == ["lr: 0.1 -> 0.5"]
    assert hparams_differences(saved, saved.replace("Adam", "SGD"), source) == [
        "opt_class: !name:torch.optim.Adam {'lr': 0.1} -> !name:torch.optim.SGD {'lr': 0.1}"]


def test_a_cache_run_into_a_busy_folder_is_refused_before_it_writes_anything(tiny_corpus, tmp_path):
    cache_folder = tmp_path / "cache"
    cache_folder.mkdir()
    (cache_folder / "hyperparams.yaml").write_text("the running cache's settings\n")
    overrides = {"data_folder": tiny_corpus, "corpus_size": "tiny", "cache_folder": str(cache_folder)}

    with folder_lock(cache_folder):
        returncode, output = run(recipe_command("distill/cache_teachers.py", "distill/cache.yaml", overrides),
                                 str(tmp_path / "busy.log"))

    assert returncode != 0 and f"is in use by another speechkd run (pid {os.getpid()}," in output
    assert (cache_folder / "hyperparams.yaml").read_text() == "the running cache's settings\n"
