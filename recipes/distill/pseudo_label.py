#!/usr/bin/env python3
"""Pseudo-label unlabelled audio with a transcript teacher (Whisper or any text-yielding model).

The teacher's transcripts (cached by utterance ID, fingerprinted) become the
``wrd`` of the unlabelled utterances it is confident about (and, with a
second opinion, agrees on); the labelled rows are kept as they are. The
written manifest is the distillation recipe's ``train_csv``:

    python recipes/distill/pseudo_label.py hparams/distill/pseudo_label.yaml --whisper_folder=/models/tiny.en
    python recipes/distill/train.py hparams/distill/student.yaml \
        --train_csv=results/distill/pseudo_labels/1234/train.csv
"""

import json
import os
import sys

import speechbrain as sb

from speechkd.data.manifest import read_manifest, write_manifest
from speechkd.data.pipelines import make_dataset
from speechkd.distill.transcripts import filter_pseudo_labels, transcribe_dataset
from speechkd.experiment import load_hparams, open_experiment


def pseudo_label(hparams):
    """Transcribe, filter and write ``train.csv`` and ``pseudo_labels.json`` (the main process runs it)."""
    out = hparams["output_folder"]
    # The unlabelled rows the teacher speaks the language of (a labelled row keeps its own transcript)
    labelled = read_manifest(hparams["labelled_csv"]) if hparams["labelled_csv"] else []
    labelled_ids = {row["ID"] for row in labelled}
    rows = [row for row in read_manifest(hparams["unlabelled_csv"], allow_empty_wrd=True)
            if row["lang"] in hparams["languages"] and row["ID"] not in labelled_ids]
    subset = os.path.join(out, "unlabelled.csv")
    write_manifest(subset, rows)
    dataset = make_dataset(subset, hparams["data_folder"], need_text=False, sort="ascending")  # skips bad audio

    transcripts = transcribe_dataset(hparams["transcript_teacher"], dataset, os.path.join(out, "transcripts"),
                                     hparams["batch_size"])
    second = hparams["second_opinion"]
    second_opinion = (None if second is None else
                      transcribe_dataset(second, dataset, os.path.join(out, "second_opinion"), hparams["batch_size"]))
    kept, dropped = filter_pseudo_labels(rows, transcripts, hparams["min_confidence"], second_opinion,
                                         hparams["max_disagreement"])

    write_manifest(os.path.join(out, "train.csv"), labelled + kept)
    summary = {"labelled": len(labelled), "pseudo_labelled": len(kept), "dropped": dropped}
    with open(os.path.join(out, "pseudo_labels.json"), "w") as fout:
        json.dump(summary, fout, indent=1)
    print(f"pseudo-labelled {len(kept)} of {len(rows)} utterances (dropped: {dropped}); "
          f"{len(labelled)} labelled rows kept; manifest: {os.path.join(out, 'train.csv')}")


if __name__ == "__main__":
    hparams_file, run_opts, overrides = sb.parse_arguments(sys.argv[1:])
    hparams, resolved_file = load_hparams(hparams_file, overrides)
    sb.utils.distributed.ddp_init_group(run_opts)
    open_experiment(hparams["output_folder"], resolved_file, overrides)  # one run at a time writes transcripts
    sb.utils.distributed.run_on_main(hparams["prepare"])
    # One process transcribes (under torchrun the other ranks wait): the cached transcripts are one file
    sb.utils.distributed.run_on_main(pseudo_label, args=[hparams])
