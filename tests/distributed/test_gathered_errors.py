"""Error statistics of 2 ranks (gloo) gathered: every utterance once, as one process scores them."""

import os

import torch
from test_sharded_cache import rendezvous_file

from speechkd.brains.distill import mean_across_ranks
from speechkd.metrics import ErrorRates

REFS = {"u0": "one two three", "u1": "four five", "u2": "six", "u3": "seven eight nine ten", "u4": "eleven"}
HYPS = {"u0": "one too three", "u1": "four", "u2": "six", "u3": "seven eight nine ten ten", "u4": ""}
# A distributed sampler over 5 utterances on 2 ranks: rank 0 gets u0 u2 u4, rank 1 gets u1 u3 and u0 again
SHARES = [["u0", "u2", "u4"], ["u1", "u3", "u0"]]


def score(ids):
    rates = ErrorRates()
    rates.append(ids, [REFS[u] for u in ids], [HYPS[u] for u in ids])
    return rates


def gather_on_rank(rank, world, rendezvous, out):
    torch.distributed.init_process_group("gloo", init_method=rendezvous, rank=rank, world_size=world)
    try:
        summary = score(SHARES[rank]).gathered().summary()
        loss = mean_across_ranks(1.0 + 2.0 * rank)
        torch.save({"summary": summary, "loss": loss}, os.path.join(out, f"rank{rank}.pt"))
    finally:
        torch.distributed.destroy_process_group()


def test_ranks_gather_each_utterance_once(tmp_path):
    torch.multiprocessing.spawn(gather_on_rank, args=(2, rendezvous_file(tmp_path), str(tmp_path)), nprocs=2)
    expected = score(sorted(REFS)).summary()
    for rank in range(2):
        result = torch.load(tmp_path / f"rank{rank}.pt")
        assert result["summary"] == expected
        assert result["summary"]["n_utts"] == 5 and result["summary"]["word_edits"] == 4
        assert result["loss"] == 2.0
    assert score(SHARES[1]).gathered().summary()["n_utts"] == 3  # one process: the rates as they are
