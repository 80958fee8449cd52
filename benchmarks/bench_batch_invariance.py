"""Does decoding depend on batch padding? WER/CER and differing transcripts at batch 1 vs batch 16.

Runs whichever ``speechkd`` is importable, so the same command measures two
revisions (``PYTHONPATH=<checkout>``):

    PYTHONPATH=. python benchmarks/bench_batch_invariance.py --model results/ctc/tdnn/1234 \\
        --manifest data/numbers-small/test.csv
"""

import argparse
import os

import torch

import speechkd
from speechkd.data.pipelines import make_dataset
from speechkd.decoding import greedy_transcripts
from speechkd.experiment import load_model
from speechkd.inference import iterate_posteriors
from speechkd.metrics import ErrorRates


def decode(model, inventory, dataset, batch_size):
    """(summary, utterance -> transcript) of greedy decoding at ``batch_size``."""
    rates, hyps = ErrorRates(), {}
    for batch, log_probs, frames in iterate_posteriors(model, dataset, batch_size=batch_size):
        texts = greedy_transcripts(log_probs, frames, inventory)
        rates.append(batch.id, batch.wrd, texts)
        hyps.update(zip(batch.id, texts))
    return rates.summary(), hyps


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", required=True, help="experiment folder")
    parser.add_argument("--manifest", required=True, help="16 kHz labelled manifest")
    parser.add_argument("--data_root", help="default: the manifest's folder")
    args = parser.parse_args()
    torch.set_num_threads(1)
    model, inventory = load_model(args.model)
    dataset = make_dataset(args.manifest, args.data_root or os.path.dirname(os.path.abspath(args.manifest)), inventory)
    (one, hyps_one), (sixteen, hyps_sixteen) = (decode(model, inventory, dataset, b) for b in (1, 16))
    differ = sorted(u for u in hyps_one if hyps_one[u] != hyps_sixteen[u])
    print(f"speechkd at {os.path.dirname(os.path.dirname(speechkd.__file__))}: batch 1 WER {one['wer']:.2f} "
          f"CER {one['cer']:.2f}; batch 16 WER {sixteen['wer']:.2f} CER {sixteen['cer']:.2f}; "
          f"{len(differ)} of {len(hyps_one)} transcripts differ {differ[:5]}")
    for utt in differ[:5]:
        print(f"  {utt}: batch 1 {hyps_one[utt]!r}, batch 16 {hyps_sixteen[utt]!r}")


if __name__ == "__main__":
    main()
