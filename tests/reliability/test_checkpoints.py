"""Item 3 of issue 11: a kill while a checkpoint is written leaves nothing that training, transcribe or export load."""

import logging
import os
import shutil
import sys
import textwrap

import torch
from reliability_helpers import run

from speechkd.checkpoints import Checkpointer

# Saves one checkpoint, then dies by SIGKILL in the middle of writing the second one's files.
KILLED_WHILE_SAVING = textwrap.dedent("""
    import os, signal, sys
    import torch
    from speechbrain.utils.checkpoints import mark_as_saver, mark_as_loader, register_checkpoint_hooks
    from speechkd.checkpoints import Checkpointer

    @register_checkpoint_hooks
    class DiesOnSecondSave:
        saves = 0
        @mark_as_saver
        def save(self, path):
            DiesOnSecondSave.saves += 1
            if DiesOnSecondSave.saves == 2:
                os.kill(os.getpid(), signal.SIGKILL)
            open(path, "w").write("saved")
        @mark_as_loader
        def load(self, path, end_of_epoch):
            pass

    layer = torch.nn.Linear(2, 2)
    checkpointer = Checkpointer(sys.argv[1], {"layer": layer, "zzz_last": DiesOnSecondSave()})
    torch.nn.init.constant_(layer.weight, 1.0)
    checkpointer.save_checkpoint(meta={"WER": 50.0})
    torch.nn.init.constant_(layer.weight, 2.0)
    checkpointer.save_checkpoint(meta={"WER": 10.0})
""")


def test_a_save_killed_midway_is_invisible_and_removed_by_the_next_save(tmp_path):
    save = tmp_path / "save"
    returncode, output = run([sys.executable, "-c", KILLED_WHILE_SAVING, str(save)], str(tmp_path / "log"))
    assert returncode == -9, output
    folders = sorted(save.iterdir())
    assert len(folders) == 2 and (folders[1] / "layer.ckpt").exists()  # the second save had begun

    layer = torch.nn.Linear(2, 2)
    checkpointer = Checkpointer(save, {"layer": layer})
    assert [ckpt.path for ckpt in checkpointer.list_checkpoints()] == [folders[0]]
    checkpointer.recover_if_possible(min_key="WER")
    assert torch.equal(layer.weight, torch.ones(2, 2))
    checkpointer.save_checkpoint(meta={"WER": 5.0})  # may reuse the interrupted folder's name: it was removed
    assert sorted(ckpt.meta["WER"] for ckpt in checkpointer.list_checkpoints()) == [5.0, 50.0]
    assert all((folder / "CKPT.yaml").exists() for folder in save.iterdir())


def test_incomplete_checkpoints_of_older_runs_are_skipped_with_a_warning(tmp_path, caplog):
    layer = torch.nn.Linear(2, 2)
    checkpointer = Checkpointer(tmp_path, {"layer": layer})
    good = checkpointer.save_checkpoint(meta={"WER": 50.0}).path
    broken = {"empty meta": "CKPT.yaml is empty or incomplete", "truncated": "layer.ckpt is truncated",
              "empty file": "layer.ckpt is empty", "missing file": "layer.ckpt is missing"}
    for name in broken:
        shutil.copytree(good, tmp_path / f"CKPT+{name}")
    open(tmp_path / "CKPT+empty meta" / "CKPT.yaml", "w").close()
    data = (good / "layer.ckpt").read_bytes()
    (tmp_path / "CKPT+truncated" / "layer.ckpt").write_bytes(data[: len(data) // 2])
    open(tmp_path / "CKPT+empty file" / "layer.ckpt", "w").close()
    os.remove(tmp_path / "CKPT+missing file" / "layer.ckpt")

    with caplog.at_level(logging.WARNING):
        listed = [ckpt.path for ckpt in checkpointer.list_checkpoints()]

    assert listed == [good]
    for name, reason in broken.items():
        assert f"ignoring incomplete checkpoint {tmp_path / f'CKPT+{name}'}: {reason}" in caplog.text


def test_transcribe_and_export_skip_a_zero_byte_checkpoint(trained_student, tiny_corpus, tmp_path):
    from speechkd.data.manifest import read_manifest
    from speechkd.export import export_experiment
    from speechkd.inference import transcribe_files

    folder = str(tmp_path / "student")
    shutil.copytree(trained_student, folder)
    audio = read_manifest(os.path.join(tiny_corpus, "test.csv"))[0]["wav"].replace("$data_root", tiny_corpus)
    expected = list(transcribe_files(folder, [audio]))
    broken = os.path.join(folder, "save", "CKPT+2099-01-01+00-00-00+00")
    os.makedirs(broken)
    open(os.path.join(broken, "CKPT.yaml"), "w").close()

    assert list(transcribe_files(folder, [audio])) == expected
    report = export_experiment(folder, str(tmp_path / "export"), manifest=os.path.join(tiny_corpus, "test.csv"),
                               data_root=tiny_corpus, parity_count=2, torchscript=False)
    assert os.path.exists(tmp_path / "export" / "model.onnx"), report
