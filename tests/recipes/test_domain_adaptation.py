"""The domain-adaptation recipes end to end on a tiny parallel corpus, one run per option."""

import glob
import json
import os
import runpy
import subprocess
import sys

import pytest
import soundfile as sf
import speechbrain as sb
import torch

from speechkd.data.corpus import build_corpus
from speechkd.data.manifest import read_manifest, write_manifest
from speechkd.data.parallel import check_parallel_pairs
from speechkd.data.pipelines import BadInputError, make_dataset
from speechkd.data.subsets import select_labelled
from speechkd.pipeline import overrides_to_argv
from speechkd.text import TokenInventory

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DOMAINS = ["clean", "telephone", "noise"]
TINY_TDNN = {"channels": 16, "dilations": [1, 2], "number_of_epochs": 1, "batch_size": 8}


def run(script, hparams, overrides):
    """``python recipes/<script> hparams/domain_adaptation/<hparams>.yaml --key=value ...``, in this process."""
    argv = [os.path.join(ROOT, "recipes", script), os.path.join(ROOT, "hparams", "domain_adaptation", f"{hparams}.yaml"),
            *overrides_to_argv(overrides), "--device=cpu", "--noprogressbar"]
    previous, sys.argv = sys.argv, argv
    try:
        runpy.run_path(argv[0], run_name="__main__")
    finally:
        sys.argv = previous


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """Tiny corpus with telephone and noise halves, a 1-epoch source model and its cache."""
    root = tmp_path_factory.mktemp("da")
    data = str(root / "corpus")
    build_corpus("numbers", "tiny", data, domains=DOMAINS, workers=1, progress=False)
    common = {"data_folder": data, "corpus_size": "tiny", "domains": DOMAINS}
    source = str(root / "source")
    run("ctc/train.py", "source", {**common, **TINY_TDNN, "output_folder": source,
                                   "test_csvs": [f"{data}/test_telephone.csv", f"{data}/test.csv"]})
    cache = str(root / "cache")
    run("distill/cache_teachers.py", "cache", {**common, "teachers": [source], "cache_folder": cache})
    return {"root": root, "data": data, "common": common, "source": source, "cache": cache}


def check_results(folder, domain):
    with open(os.path.join(folder, "results.json")) as fin:
        results = json.load(fin)
    for name in (f"test_{domain}", "test"):
        assert os.path.isfile(os.path.join(folder, f"wer_{name}.txt"))
        assert results["sets"][name]["n_utts"] > 0
    return results


def final_weights(folder):
    checkpoints = sorted(glob.glob(os.path.join(folder, "save", "CKPT+*", "model.ckpt")))
    return torch.load(checkpoints[-1], map_location="cpu")


OPTIONS = {
    "ts": {},
    "ts_labels": {"target_labels": 0.5, "alpha": 0.5},
    "cts_frame": {"target_labels": 4, "conditional": "frame"},
    "cts_utterance_online": {"target_labels": 4, "conditional": "utterance", "online": True},
    "on_the_fly_noise": {"domain": "noise", "student_signal": "sig_target", "domain_options": {"snr_db": [5, 15]}},
}


def adapt(setup, option):
    folder = str(setup["root"] / option)
    run("domain_adaptation/train.py", "adapt", {
        **setup["common"], **TINY_TDNN, "domain": "telephone", **OPTIONS[option],
        "teachers": [setup["source"]], "cache_folder": setup["cache"], "output_folder": folder,
    })
    return folder


@pytest.mark.parametrize("option", sorted(OPTIONS))
def test_adaptation_option_end_to_end(setup, option):
    overrides = OPTIONS[option]
    folder = adapt(setup, option)
    check_results(folder, overrides.get("domain", "telephone"))
    with open(os.path.join(folder, "labelled_ids.txt")) as fin:
        labelled = fin.read().split()
    n_train = len(read_manifest(os.path.join(setup["data"], "train.csv")))
    expected = overrides.get("target_labels", 0)
    assert len(labelled) == (round(expected * n_train) if isinstance(expected, float) else expected)
    with open(os.path.join(folder, "train_log.txt")) as fin:
        log = fin.read()
    assert "train kd" in log and "valid WER" in log
    assert ("train teacher_frames" in log) == ("conditional" in overrides)
    source = final_weights(setup["source"])
    assert any(not torch.equal(value, source[key]) for key, value in final_weights(folder).items())


def test_smaller_student_and_finetune_baseline(setup):
    small = str(setup["root"] / "small")
    run("domain_adaptation/train.py", "adapt_small", {
        **setup["common"], "number_of_epochs": 1, "batch_size": 8, "gru_hidden": 16,
        "conv_channels": 8, "teachers": [setup["source"]], "cache_folder": setup["cache"],
        "output_folder": small,
    })
    check_results(small, "telephone")
    with open(os.path.join(small, "model.json")) as fin:
        assert json.load(fin)["class"].endswith("StreamingStudent")
    finetuned = str(setup["root"] / "finetune")
    run("domain_adaptation/finetune.py", "finetune", {
        **setup["common"], "number_of_epochs": 1, "target_labels": 4, "domain": "telephone",
        "source_folder": setup["source"], "output_folder": finetuned,
    })
    check_results(finetuned, "telephone")
    assert len(read_manifest(os.path.join(finetuned, "train_labelled.csv"))) == 4


def test_source_weights_are_refused_for_a_smaller_student(setup, tmp_path):
    with pytest.raises(ValueError, match="init_from_source"):
        run("domain_adaptation/train.py", "adapt_small", {
            **setup["common"], "number_of_epochs": 1, "init_from_source": True,
            "teachers": [setup["source"]], "cache_folder": setup["cache"], "output_folder": str(tmp_path),
        })


def test_recipe_script_runs(setup):
    folder = setup["root"] / "script"
    overrides = {**setup["common"], **TINY_TDNN, "teachers": [setup["source"]], "cache_folder": setup["cache"],
                 "output_folder": str(folder), "domain": "noise"}
    command = [sys.executable, os.path.join(ROOT, "recipes", "domain_adaptation", "train.py"),
               os.path.join(ROOT, "hparams", "domain_adaptation", "adapt.yaml"), *overrides_to_argv(overrides),
               "--noprogressbar", "--device=cpu"]
    proc = subprocess.run(command, check=False, cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": "1"},
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    check_results(str(folder), "noise")


def test_labelled_rows_alone_carry_tokens(setup):
    """``make_dataset(labelled_ids=...)``: transcripts of the labelled rows only, and which rows those are."""
    data = setup["data"]
    inventory = TokenInventory.load(os.path.join(setup["source"], "tokens.txt"))
    rows = read_manifest(os.path.join(data, "train_telephone.csv"))
    labelled = {rows[0]["ID"], rows[3]["ID"]}
    dataset = make_dataset(os.path.join(data, "train_telephone.csv"), data, inventory, labelled_ids=labelled,
                           sort="none")
    batch = next(iter(sb.dataio.dataloader.make_dataloader(dataset, batch_size=len(rows))))
    assert batch.labelled.tolist() == [row["ID"] in labelled for row in rows]
    tokens, lens = batch.tokens
    frames = (lens * tokens.shape[1]).round().long()
    for b, row in enumerate(rows):
        expected = inventory.encode(row["wrd"]) if row["ID"] in labelled else [inventory.blank_index]
        assert tokens[b, : frames[b]].tolist() == expected
    with pytest.raises(ValueError, match="inventory"):
        make_dataset(os.path.join(data, "train_telephone.csv"), data, labelled_ids=labelled)


def test_parallel_length_check_refuses_a_mismatched_pair(setup, tmp_path):
    data = setup["data"]
    rows = read_manifest(os.path.join(data, "train_telephone.csv"))
    victim = rows[1]
    wav = victim["wav"].replace("$data_root", data)
    audio, rate = sf.read(wav, dtype="float32")
    short = tmp_path / "short.flac"
    sf.write(short, audio[:-160], rate)
    rows[1] = {**victim, "wav": str(short)}
    manifest = str(tmp_path / "train_telephone.csv")
    write_manifest(manifest, rows)
    with pytest.raises(BadInputError, match=victim["ID"]):
        check_parallel_pairs(manifest, os.path.join(data, "train.csv"), data)
    assert check_parallel_pairs(os.path.join(data, "train_telephone.csv"),
                                os.path.join(data, "train.csv"), data) == len(rows)
    dataset = make_dataset(manifest, data, need_text=False, sort="none",
                           parallel_manifest=os.path.join(data, "train.csv"))
    with pytest.raises(BadInputError, match=victim["ID"]):
        [item["sig_parallel"] for item in dataset]


def test_select_labelled_is_reproducible():
    ids = [f"en-x-{i:05d}" for i in range(40)]
    chosen = select_labelled(ids, 0.25, seed=3)
    assert len(chosen) == 10 and len(set(chosen)) == 10 and set(chosen) <= set(ids)
    assert chosen == select_labelled(list(reversed(ids)), 10, seed=3)
    assert chosen != select_labelled(ids, 10, seed=4)
    assert select_labelled(ids, 0) == [] and len(select_labelled(ids, 100)) == 40
    with pytest.raises(ValueError):
        select_labelled(ids, 1.5)
    assert len(select_labelled(ids, 1.0)) == 40
