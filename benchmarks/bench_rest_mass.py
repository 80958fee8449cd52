"""How far a top-k cache's teacher target is from the full-distribution one, with and without the stored rest mass.

Runs trained teachers over a manifest, keeps their full posteriors, and
builds the fused teacher target (``TeacherTarget``) three ways: from the
full distributions (the reference), from top-k fp16 values plus each frame's
log rest mass as cache format 2 stores it, and from the top-k values alone
(format 1: rest = 1 − Σ cached, lost to fp16 rounding on confident frames).
Prints, per strategy and temperature, the mean total-variation distance to
the reference over all frames, the same distance over the k + 1 buckets
that :func:`speechkd.distill.losses.topk_kl` reads of the target it trains
on (that target's top-k tokens and one rest bucket), the largest error of
the mass outside the reference's top-k (the loss's rest bucket), and the
largest per-frame distance between the two top-k targets. With
``--nearby-tau`` it also prints both distances between the full target at
τ and the full target at another temperature, a perturbation of known size.

    python benchmarks/bench_rest_mass.py --teachers T1 T2 T3 --manifest data/numbers-small/dev.csv
    python benchmarks/bench_rest_mass.py --teachers T1 T2 --manifest train.csv --strategies weighted \
        --dev-wer 23.4 34.0
"""

from __future__ import annotations

import argparse
import datetime
import os
import sys
from pathlib import Path
from types import SimpleNamespace

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from machine import machine_line

from speechkd.data.pipelines import make_dataset
from speechkd.distill.losses import teacher_batch_from_log_probs
from speechkd.distill.target import TeacherTarget
from speechkd.distill.teachers import TeacherEnsemble, teacher_posteriors


def distances(reference: torch.Tensor, approx: torch.Tensor, valid: torch.Tensor, k: int) -> tuple[float, float, float]:
    """Distances between two ``(batch, time, V + 1)`` targets over the valid ``(batch, time)`` frames.

    Returns
    -------
    tuple of float
        The summed total variation; the summed total variation over the k + 1
        buckets a KL trained on ``approx`` reads (``approx``'s top-k tokens,
        the rest summed); the largest rest-bucket error (mass outside the
        reference's top-k).
    """
    tv = 0.5 * (reference - approx).abs().sum(-1)

    def outside_top_k(target):
        top = torch.topk(target[..., :-1], k, dim=-1).indices
        return top, torch.ones_like(target, dtype=torch.bool).scatter_(-1, top, False)

    _, outside = outside_top_k(reference)
    rest_error = ((reference * outside).sum(-1) - (approx * outside).sum(-1)).abs()
    top, outside = outside_top_k(approx)
    bucket_rest = ((reference * outside).sum(-1) - (approx * outside).sum(-1)).abs()
    bucket_tv = 0.5 * ((reference - approx).gather(-1, top).abs().sum(-1) + bucket_rest)
    if not bool(valid.any()):
        return 0.0, 0.0, 0.0
    return float(tv[valid].sum()), float(bucket_tv[valid].sum()), float(rest_error[valid].max())


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--teachers", nargs="+", required=True, help="speechkd experiment folders")
    parser.add_argument("--manifest", required=True)
    parser.add_argument("--data-root", help="$data_root (default: the manifest's folder)")
    parser.add_argument("--k", type=int, default=8)
    parser.add_argument("--taus", type=float, nargs="+", default=[1.0, 2.0, 4.0])
    parser.add_argument("--strategies", nargs="+", default=["average", "geometric"])
    parser.add_argument("--dev-wer", type=float, nargs="+",
                        help="the teachers' dev WER (percent), for the `weighted` strategy (a cache's teacher_errors.json)")
    parser.add_argument("--utterances", type=int, default=200)
    parser.add_argument("--nearby-tau", type=float,
                        help="also print the mean TV between the full targets at tau and at this temperature "
                             "(a perturbation of known size, to set the top-k error beside)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    ensemble = TeacherEnsemble(args.teachers)
    dataset = make_dataset(args.manifest, args.data_root or os.path.dirname(os.path.abspath(args.manifest)),
                           need_text=False, sort="none")
    dataset = dataset.filtered_sorted(select_n=args.utterances)
    symbols, shift = ensemble.symbols[0], max(ensemble.frame_shifts_ms)

    def target(k, strategy):
        source = SimpleNamespace(teacher_names=ensemble.names, symbols=ensemble.symbols, k=k,
                                 frame_shifts_ms=ensemble.frame_shifts_ms, dev_wer_list=lambda: args.dev_wer)
        return TeacherTarget(source, symbols, shift, strategy=strategy)

    targets = {strategy: (target(0, strategy), target(args.k, strategy)) for strategy in args.strategies}
    totals, frames_total = {}, 0
    for _batch, outputs in teacher_posteriors(ensemble, dataset, batch_size=8):
        log_probs, lens = [lp for lp, _ in outputs], [n for _, n in outputs]
        full = teacher_batch_from_log_probs(log_probs, lens, 0)
        topk = teacher_batch_from_log_probs(log_probs, lens, args.k)
        lossy = {key: value for key, value in topk.items() if key != "rest_log_probs"}
        frames = targets[args.strategies[0]][0].pooled_frames(full)
        time = int(frames.max())
        valid = torch.arange(time)[None, :] < frames[:, None]
        frames_total += int(valid.sum())
        for strategy, (reference, cached) in targets.items():
            for tau in args.taus:
                ref = reference(full, frames, time, tau, torch.float64)
                approx = {}
                for name, batch in (("with rest mass", topk), ("values only", lossy)):
                    approx[name] = cached(batch, frames, time, tau, torch.float64)
                    tv, bucket_tv, rest = distances(ref, approx[name], valid, args.k)
                    entry = totals.setdefault((strategy, tau, name), [0.0, 0.0, 0.0])
                    entry[0] += tv
                    entry[1] += bucket_tv
                    entry[2] = max(entry[2], rest)
                if args.nearby_tau:
                    nearby = reference(full, frames, time, args.nearby_tau, torch.float64)
                    tv, bucket_tv, _ = distances(ref, nearby, valid, args.k)
                    entry = totals.setdefault((strategy, tau, "nearby"), [0.0, 0.0])
                    entry[0] += tv
                    entry[1] += bucket_tv
                between = 0.5 * (approx["with rest mass"] - approx["values only"]).abs().sum(-1)[valid]
                totals[strategy, tau, "between"] = max(totals.get((strategy, tau, "between"), 0.0),
                                                       float(between.max()))
    print(f"Command: `python benchmarks/bench_rest_mass.py {' '.join(sys.argv[1:])}`")
    print(f"Machine: {machine_line()}")
    print(f"Date: {datetime.date.today().isoformat()}")
    print(f"{len(dataset)} utterances, {frames_total} frames, teachers {ensemble.names}, k = {args.k}\n")
    print("| strategy | tau | mean TV to full, values only (format 1) | with rest mass (format 2) "
          "| mean TV over the KL's k + 1 buckets (format 2) "
          "| max rest-bucket error, values only | with rest mass | max TV between the two |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for strategy in args.strategies:
        for tau in args.taus:
            old, new = totals[strategy, tau, "values only"], totals[strategy, tau, "with rest mass"]
            print(f"| {strategy} | {tau:g} | {old[0] / frames_total:.4e} | {new[0] / frames_total:.4e} "
                  f"| {new[1] / frames_total:.4e} | {old[2]:.4f} | {new[2]:.4f} "
                  f"| {totals[strategy, tau, 'between']:.2e} |")
    if args.nearby_tau:
        print(f"\nThe full target at tau against the full target at tau = {args.nearby_tau:g}:")
        for strategy in args.strategies:
            for tau in args.taus:
                tv, bucket_tv = (value / frames_total for value in totals[strategy, tau, "nearby"])
                print(f"- {strategy}, tau {tau:g}: mean TV {tv:.4e}, over the k + 1 buckets {bucket_tv:.4e}")


if __name__ == "__main__":
    main()
