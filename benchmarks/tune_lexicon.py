#!/usr/bin/env python3
"""Choose the lexicon decoder's LM weight and word score on a corpus's synthetic dev set.

Decodes ``DATA/dev.csv`` with a trained model greedily and with
:class:`speechkd.decoding.LexiconDecoder` (words and bigram from
``DATA/train.csv``) for each ``--lm_weights`` x ``--word_scores`` pair, and
prints WER/CER per setting. Tune here, on synthetic dev, never on the
real-speech set (which is only measured).

    python benchmarks/tune_lexicon.py --model results/bench_real_speech/models/espeak-clean \\
        --data results/bench_real_speech/data/espeak-clean
"""

import argparse
import itertools
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from machine import machine_line

from speechkd.data.pipelines import make_dataset
from speechkd.decoding import BigramWordLM
from speechkd.evaluation import make_decoder
from speechkd.experiment import load_model
from speechkd.inference import iterate_posteriors
from speechkd.metrics import ErrorRates


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="experiment folder of a trained model")
    parser.add_argument("--data", required=True, help="corpus folder with train.csv and dev.csv")
    parser.add_argument("--lm_weights", type=float, nargs="+", default=[0.0, 0.5, 1.0])
    parser.add_argument("--word_scores", type=float, nargs="+", default=[0.0, -1.0])
    args = parser.parse_args()
    model, inventory = load_model(args.model)
    word_lm = BigramWordLM.from_manifest(os.path.join(args.data, "train.csv"))
    settings = list(itertools.product(args.lm_weights, args.word_scores))
    decoders = {"greedy": make_decoder(inventory)}
    decoders.update({f"lexicon, LM weight {w:g}, word score {s:g}": make_decoder(inventory, word_lm, w, s)
                     for w, s in settings})
    rates = {name: ErrorRates() for name in decoders}
    dataset = make_dataset(os.path.join(args.data, "dev.csv"), args.data, inventory)
    for batch, log_probs, frames in iterate_posteriors(model, dataset):
        for name, decode in decoders.items():
            rates[name].append(batch.id, batch.wrd, decode(log_probs, frames))
    print(machine_line())
    print(f"Model `{args.model}`, synthetic dev `{args.data}/dev.csv`\n")
    print("| decoding | dev WER % | dev CER % |\n|---|---|---|")
    for name, error_rates in rates.items():
        summary = error_rates.summary()
        print(f"| {name} | {summary['wer']:.1f} | {summary['cer']:.1f} |")


if __name__ == "__main__":
    main()
