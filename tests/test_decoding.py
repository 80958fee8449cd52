import itertools
import math

import numpy as np
import pytest
import torch

from speechkd.decoding import ctc_greedy, ctc_path_log_prob, ctc_prefix_beam


def _log_posteriors(rows):
    probs = np.asarray(rows, dtype=np.float64)
    return np.log(probs / probs.sum(axis=1, keepdims=True))


def test_greedy_merges_repeats_drops_blanks_and_respects_lengths():
    # path: a a _ a b b _  -> a a b ; second utterance only its first 3 frames: b _ b -> b b
    paths = [[1, 1, 0, 1, 2, 2, 0], [2, 0, 2, 1, 1, 1, 1]]
    log_probs = torch.full((2, 7, 3), -10.0)
    for b, path in enumerate(paths):
        for t, token in enumerate(path):
            log_probs[b, t, token] = 0.0
    assert ctc_greedy(log_probs, torch.tensor([7, 3])) == [[1, 1, 2], [2, 2]]
    assert ctc_greedy(log_probs, [0, 7]) == [[], [2, 2, 1]]


def test_prefix_beam_beats_greedy_on_known_case():
    # every frame: blank .4, a .35, b .25. Best path "__" gives "" (p=.16),
    # but "a" collects a_, _a and aa: .35*.4*2 + .35**2 = .4025.
    frames = _log_posteriors([[0.4, 0.35, 0.25]] * 2)
    greedy = ctc_greedy(torch.tensor(frames).unsqueeze(0), [2])[0]
    beam, score = ctc_prefix_beam(frames, beam=4, return_score=True)
    assert greedy == [] and beam == [1]
    assert math.isclose(math.exp(score), 0.4025, rel_tol=1e-9)
    assert math.isclose(score, ctc_path_log_prob(frames, [1]), rel_tol=1e-9)
    assert math.isclose(ctc_path_log_prob(frames, []), math.log(0.16), rel_tol=1e-9)


def test_prefix_beam_finds_exhaustive_best():
    rng = np.random.default_rng(3)
    frames = _log_posteriors(rng.dirichlet(np.ones(3) * 0.7, size=5))
    candidates = [list(seq) for n in range(6) for seq in itertools.product([1, 2], repeat=n)]
    scores = {tuple(c): ctc_path_log_prob(frames, c) for c in candidates}
    best = max(scores, key=scores.get)
    found, score = ctc_prefix_beam(torch.tensor(frames), beam=64, return_score=True)
    assert tuple(found) == best
    assert math.isclose(score, scores[best], rel_tol=1e-9)


def test_prefix_beam_handles_repeated_tokens():
    # a a with a blank in between must survive as [1, 1]
    frames = _log_posteriors([[0.05, 0.9, 0.05], [0.9, 0.05, 0.05], [0.05, 0.9, 0.05]])
    assert ctc_prefix_beam(frames, beam=8) == [1, 1]
    assert ctc_greedy(torch.tensor(frames).unsqueeze(0), [3]) == [[1, 1]]


def test_prefix_beam_rejects_batch():
    with pytest.raises(ValueError, match="expected \\(time, V\\)"):
        ctc_prefix_beam(np.zeros((1, 4, 3)))


def test_greedy_transcripts_and_exported_runtime_skip_unk():
    """``<unk>`` is a token, not text: neither the torch decoder nor the numpy runtime writes it."""
    from speechkd.decoding import greedy_transcripts
    from speechkd.export.runtime import ctc_greedy_ids, ids_to_text
    from speechkd.text import TokenInventory

    inventory, _ = TokenInventory.from_training_texts(["ab"], other_texts=["ac"])
    unk = inventory.unk_index
    path = torch.tensor([2, unk, 0, 3, unk])
    log_probs = torch.nn.functional.one_hot(path, len(inventory)).float().log_softmax(-1)[None]
    assert greedy_transcripts(log_probs, torch.tensor([5]), inventory) == ["ab"]
    ids, _ = ctc_greedy_ids(log_probs[0].numpy())
    assert ids == [2, unk, 3, unk] and ids_to_text(ids, inventory.symbols) == "ab"
