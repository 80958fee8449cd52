"""The domain-adaptation recipe end to end on a tiny parallel corpus, one run per option."""

import json
import os
import subprocess
import sys

import pytest
import soundfile as sf
import torch

from speechkd.brains.adaptation import (
    check_parallel_pairs,
    finetune_source,
    select_labelled,
    train_adaptation,
)
from speechkd.brains.ctc import train_ctc
from speechkd.brains.distill import cache_teachers
from speechkd.data.corpus import build_corpus
from speechkd.data.manifest import read_manifest, write_manifest
from speechkd.data.pipelines import BadInputError, make_dataset
from speechkd.experiment import open_experiment

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
HPARAMS = os.path.join(ROOT, "hparams", "domain_adaptation")
DOMAINS = ["clean", "telephone", "noise"]
CORPUS_OPTIONS = {"domains": DOMAINS, "languages": ["en", "de"]}
TINY_TDNN = {"channels": 16, "dilations": [1, 2], "number_of_epochs": 1, "batch_size": 8}
RUN_OPTS = {"device": "cpu", "noprogressbar": True}


def run_yaml(name, function, overrides):
    hparams = open_experiment(os.path.join(HPARAMS, f"{name}.yaml"), overrides)
    return function(hparams, RUN_OPTS)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """Tiny en+de corpus with telephone and noise halves, a 1-epoch source model and its cache."""
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("da")
    data = str(root / "corpus")
    build_corpus("numbers", "tiny", data, progress=False, **CORPUS_OPTIONS)
    common = {"data_folder": data, "corpus_size": "tiny", "corpus_options": CORPUS_OPTIONS}
    source = str(root / "source")
    tests = [f"{data}/test_telephone.csv", f"{data}/test.csv"]
    run_yaml("source", train_ctc, {**common, **TINY_TDNN, "output_folder": source, "test_csvs": tests})
    cache = str(root / "cache")
    run_yaml("cache", cache_teachers, {**common, "teachers": [source], "cache_folder": cache})
    return {"root": root, "data": data, "common": common, "source": source, "cache": cache}


def check_results(folder, domain):
    with open(os.path.join(folder, "results.json")) as fin:
        results = json.load(fin)
    for name in (f"test_{domain}", "test"):
        assert os.path.isfile(os.path.join(folder, f"wer_{name}.txt"))
        assert 0.0 <= results["sets"][name]["wer"] and results["sets"][name]["n_utts"] > 0
    return results


OPTIONS = {
    "ts": {},
    "ts_labels": {"target_labels": 0.5, "alpha": 0.5},
    "cts_frame": {"target_labels": 4, "conditional": "frame"},
    "cts_utterance_online": {"target_labels": 4, "conditional": "utterance", "online": True},
    "on_the_fly_noise": {"domain": "noise", "target_on_the_fly": True,
                         "domain_options": {"snr_db": [5, 15]}},
}


@pytest.mark.parametrize("option", sorted(OPTIONS))
def test_adaptation_option_end_to_end(setup, option):
    overrides = {"domain": "telephone", **OPTIONS[option]}
    folder = str(setup["root"] / option)
    run_yaml("adapt", train_adaptation, {
        **setup["common"], **TINY_TDNN, **overrides, "teachers": [setup["source"]],
        "cache_folder": setup["cache"], "output_folder": folder,
    })
    check_results(folder, overrides["domain"])
    with open(os.path.join(folder, "labelled_ids.txt")) as fin:
        labelled = fin.read().split()
    n_train = len(read_manifest(os.path.join(setup["data"], "train.csv")))
    expected = overrides.get("target_labels", 0)
    assert len(labelled) == (round(expected * n_train) if isinstance(expected, float) else expected)
    with open(os.path.join(folder, "train_log.txt")) as fin:
        log = fin.read()
    assert "train kd" in log and "valid WER" in log
    assert ("train teacher_frames" in log) == ("conditional" in overrides)


def test_smaller_student_and_finetune_baseline(setup):
    small = str(setup["root"] / "small")
    run_yaml("adapt_small", train_adaptation, {
        **setup["common"], "number_of_epochs": 1, "batch_size": 8, "gru_hidden": 16,
        "conv_channels": 8, "teachers": [setup["source"]], "cache_folder": setup["cache"],
        "output_folder": small,
    })
    check_results(small, "telephone")
    finetuned = str(setup["root"] / "finetune")
    run_yaml("finetune", finetune_source, {
        **setup["common"], "number_of_epochs": 1, "target_labels": 4, "domain": "telephone",
        "source_folder": setup["source"], "output_folder": finetuned,
    })
    check_results(finetuned, "telephone")
    assert len(read_manifest(os.path.join(finetuned, "train_labelled.csv"))) == 4


def test_recipe_script_runs(setup):
    folder = setup["root"] / "script"
    command = [
        sys.executable, os.path.join(ROOT, "recipes", "domain_adaptation", "train.py"),
        os.path.join(HPARAMS, "adapt.yaml"), f"--data_folder={setup['data']}", "--corpus_size=tiny",
        f"--corpus_options={json.dumps(CORPUS_OPTIONS)}", "--channels=16", "--dilations=[1, 2]",
        "--number_of_epochs=1", f"--teachers=[{setup['source']}]", f"--cache_folder={setup['cache']}",
        f"--output_folder={folder}", "--domain=noise", "--noprogressbar", "--device=cpu",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run(command, check=True, cwd=ROOT, env=env, capture_output=True)
    check_results(str(folder), "noise")


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
