import itertools
import math

import numpy as np
import pytest
import torch

from speechkd.decoding import (
    BigramWordLM,
    LexiconDecoder,
    MorphLexiconDecoder,
    MorphSegmenter,
    ctc_greedy,
    ctc_path_log_prob,
    ctc_prefix_beam,
)
from speechkd.text import TokenInventory


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


# ---- lexicon decoding with a bigram word LM ----------------------------------------------


def test_bigram_lm_has_the_smoothed_probabilities_by_hand():
    lm = BigramWordLM(["one two", "one three", "two"], prior=2.0)
    # unigrams (with </s>): one 2, two 2, three 1, </s> 3 -> N = 8, V = 4, P(w) = (c + 1) / 12
    assert lm.words == ["one", "two", "three"]
    assert math.isclose(lm.log_prob("two", "one"), math.log((1 + 2 * 3 / 12) / (2 + 2)))
    assert math.isclose(lm.log_prob("one", "<s>"), math.log((2 + 2 * 3 / 12) / (3 + 2)))
    assert math.isclose(lm.log_prob("</s>", "three"), math.log((1 + 2 * 4 / 12) / (1 + 2)))
    assert math.isclose(lm.log_prob("three", "three"), math.log((0 + 2 * 2 / 12) / (1 + 2)))
    for previous in ("<s>", "one", "two", "three"):  # a distribution after every history
        total = sum(math.exp(lm.log_prob(w, previous)) for w in [*lm.words, "</s>"])
        assert math.isclose(total, 1.0)
    assert lm.log_prob("four", "one") == -math.inf
    with pytest.raises(ValueError, match="at least one non-empty transcript"):
        BigramWordLM(["", "  "])


def _spelled(inventory, text, frames_per_char=2, floor=-8.0):
    """(time, V) log-probs that spell ``text`` (one char per ``frames_per_char`` frames, blank between)."""
    rows = []
    for char in text:
        for _ in range(frames_per_char):
            row = torch.full((len(inventory),), floor)
            row[inventory.index(char)] = 0.0
            rows.append(row)
        blank = torch.full((len(inventory),), floor)
        blank[inventory.blank_index] = 0.0
        rows.append(blank)
    return torch.log_softmax(torch.stack(rows), dim=-1)


def test_lexicon_decoder_snaps_a_misspelling_to_a_word_and_ignores_padding():
    texts = ["seven", "seventy", "eleven", "seven eleven"]
    inventory = TokenInventory.from_training_texts(texts)[0]
    decoder = LexiconDecoder.from_transcripts(inventory, texts, lm_weight=0.0)
    misspelt = _spelled(inventory, "seve")  # greedy says "seve", not a word
    exact = _spelled(inventory, "seven eleven")
    assert _greedy_text(misspelt, inventory) == "seve"
    assert decoder(misspelt.unsqueeze(0), torch.tensor([len(misspelt)])) == ["seven"]
    # batch of two with padding frames that spell garbage: each utterance decodes as alone
    garbage = _spelled(inventory, "l" * 12)
    padded = torch.cat([misspelt, garbage])[: len(exact)]
    batch = torch.stack([padded, exact])
    assert decoder(batch, torch.tensor([len(misspelt), len(exact)])) == ["seven", "seven eleven"]


@pytest.mark.parametrize("floor", [-8.0, -80.0])
def test_the_last_word_is_kept_though_nothing_follows_it(floor):
    """The model writes no space after the last word; confident frames (floor -80) leave
    no path to a word boundary but the one the decoder adds."""
    texts = ["seven eleven", "seven", "eleven seven"]
    inventory = TokenInventory.from_training_texts(texts)[0]
    decoder = LexiconDecoder.from_transcripts(inventory, texts, lm_weight=0.0)
    for text in ("seven eleven", "seven", "eleven seven"):
        log_probs = _spelled(inventory, text, floor=floor).unsqueeze(0)
        assert decoder(log_probs, torch.tensor([log_probs.shape[1]])) == [text]
    empty = torch.zeros(1, 0, len(inventory))
    assert decoder(empty, torch.tensor([0])) == [""]


def test_the_bigram_decides_between_words_the_audio_leaves_open():
    """Frames half 'two', half 'ten' after 'one ': the LM picks the pair training said more often."""
    inventory = TokenInventory.from_training_texts(["one two ten"])[0]
    either = torch.logaddexp(_spelled(inventory, "two"), _spelled(inventory, "ten")) - math.log(2)
    log_probs = torch.cat([_spelled(inventory, "one "), either]).unsqueeze(0)
    frames = torch.tensor([log_probs.shape[1]])
    for frequent, rare in (("two", "ten"), ("ten", "two")):
        texts = [f"one {frequent}"] * 5 + [f"one {rare}", "two", "ten"]
        decoder = LexiconDecoder.from_transcripts(inventory, texts, lm_weight=1.0)
        assert decoder(log_probs, frames) == [f"one {frequent}"]
    with pytest.raises(ValueError, match="none of the LM's words can be spelled"):
        LexiconDecoder.from_transcripts(TokenInventory(["<blank>", " ", "x"]), ["seven"])
    with pytest.raises(ValueError, match="has no space"):
        LexiconDecoder.from_transcripts(TokenInventory(["<blank>", "x"]), ["x"])
    with pytest.raises(ValueError, match="holds '|'"):
        LexiconDecoder.from_transcripts(TokenInventory(["<blank>", " ", "|", "x"]), ["x"])


def _greedy_text(log_probs, inventory):
    return inventory.decode(ctc_greedy(log_probs.unsqueeze(0), [len(log_probs)])[0])


def _german_numbers(held_out):
    """German number words 1-199 (num2words), but ``held_out``."""
    from num2words import num2words

    return [num2words(n, lang="de") for n in range(1, 200) if n not in held_out]


def test_morphs_are_parts_the_training_words_share_and_join_back():
    words = _german_numbers(held_out=(87, 143))
    segmenter = MorphSegmenter(words)
    for unseen in ("siebenundachtzig", "hundertdreiundvierzig"):  # split by the morphs learnt
        parts = segmenter.segment(unseen)
        assert len(parts) >= 2 and "".join(parts) == unseen
    units = segmenter.units("hundertdreiundvierzig zwanzig")
    assert all(unit.endswith("+") for unit in units[:-2]) and units[-2:] == [units[-2].rstrip("+"), "zwanzig"]
    assert MorphSegmenter.join(units) == "hundertdreiundvierzig zwanzig"
    assert MorphSegmenter(words).segment("hundertdreiundvierzig") == segmenter.segment("hundertdreiundvierzig")
    with pytest.raises(ValueError, match="morph marker"):
        MorphSegmenter(["drei+"])


def test_the_morph_decoder_spells_a_word_the_transcripts_never_did():
    texts = [*_german_numbers(held_out=(87,)), "dreiundzwanzig vierzig"]
    inventory = TokenInventory.from_training_texts([*texts, "siebenundachtzig"])[0]
    unseen = _spelled(inventory, "siebenundachtzig").unsqueeze(0)
    frames = torch.tensor([unseen.shape[1]])
    words = LexiconDecoder.from_transcripts(inventory, texts, lm_weight=0.0)
    morphs = MorphLexiconDecoder.from_transcripts(inventory, texts, lm_weight=0.0)
    assert words(unseen, frames)[0] in texts  # forced onto a word it has
    assert morphs(unseen, frames) == ["siebenundachtzig"]
    # known words and sequences decode as the word lexicon decodes them
    for text in ("dreiundzwanzig vierzig", "zwanzig", "einhundertneunundneunzig"):
        known = _spelled(inventory, text).unsqueeze(0)
        assert morphs(known, torch.tensor([known.shape[1]])) == [text]
    assert any(unit.endswith("+") for unit in morphs.words) and "zwanzig" in morphs.words
    with pytest.raises(ValueError, match="marks a word-internal morph"):
        MorphLexiconDecoder(TokenInventory(["<blank>", " ", "+", "x"]), ["x"])
