"""CTC decoding: batched greedy (torch), prefix beam search (numpy, log domain) and a
lexicon-constrained word beam search with a bigram LM (flashlight, through torchaudio)."""

from __future__ import annotations

import collections
import logging
import math
import os
import tempfile
from collections.abc import Sequence

import numpy as np
import torch

_NEG_INF = -np.inf
_CLOSED_FLOOR = -1.0e4
"""Log-probability of every token but the space in the frame that closes an utterance's last word."""

logger = logging.getLogger(__name__)


def ctc_greedy(log_probs: torch.Tensor, lengths_abs: torch.Tensor | Sequence[int],
               blank: int = 0) -> list[list[int]]:
    """Best-path decoding: argmax per frame, merge repeats, drop blanks.

    Parameters
    ----------
    log_probs : torch.Tensor
        (batch, time, V) log-probabilities (or logits: only the argmax matters).
    lengths_abs : torch.Tensor or sequence of int
        (batch,) number of valid frames per utterance.
    blank : int
        Index of the CTC blank.

    Returns
    -------
    list of list of int
        Token ids per utterance.
    """
    best = log_probs.argmax(dim=-1)  # (batch, time)
    previous = torch.nn.functional.pad(best, (1, 0), value=blank)[:, :-1]
    keep = (best != blank) & (best != previous)
    lengths = torch.as_tensor(lengths_abs).long().tolist()
    keep, best = keep.cpu(), best.cpu()
    return [best[i, :n][keep[i, :n]].tolist() for i, n in enumerate(lengths)]


def _logsumexp(a: float, b: float) -> float:
    if a == _NEG_INF:
        return b
    if b == _NEG_INF:
        return a
    m = max(a, b)
    return m + float(np.log1p(np.exp(-abs(a - b))))


def ctc_prefix_beam(log_probs: torch.Tensor | np.ndarray, beam: int = 8, blank: int = 0,
                    token_beam: int | None = None, return_score: bool = False):
    """CTC prefix beam search in the log domain (no language model).

    Each prefix keeps two scores: paths ending in blank and in its last
    token. Repeating the last token without a blank in between does not
    extend the prefix. All ``stay`` transitions are exact; only the tokens
    that may *extend* a prefix are pruned to the ``token_beam`` best of the
    frame.

    Parameters
    ----------
    log_probs : torch.Tensor or numpy.ndarray
        (time, V) log-probabilities of one utterance (valid frames only).
    beam : int
        Prefixes kept after each frame.
    blank : int
        Index of the CTC blank.
    token_beam : int or None
        Candidate extension tokens per frame (default: ``beam``; ``None``
        with ``beam >= V`` means all).
    return_score : bool
        Also return the prefix's total log-probability.

    Returns
    -------
    list of int, or (list of int, float)
        The best prefix (token ids), and its log-probability if asked.
    """
    if isinstance(log_probs, torch.Tensor):
        log_probs = log_probs.detach().cpu().double().numpy()
    log_probs = np.asarray(log_probs, dtype=np.float64)
    if log_probs.ndim != 2:
        raise ValueError(f"expected (time, V) log-probabilities, got shape {log_probs.shape}")
    n_tokens = log_probs.shape[1]
    n_candidates = min(n_tokens, token_beam or beam)
    beams: dict[tuple[int, ...], tuple[float, float]] = {(): (0.0, _NEG_INF)}
    for frame in log_probs:
        candidates = np.argpartition(-frame, n_candidates - 1)[:n_candidates]
        nxt: dict[tuple[int, ...], list[float]] = collections.defaultdict(lambda: [_NEG_INF, _NEG_INF])
        for prefix, (p_blank, p_token) in beams.items():
            p_total = _logsumexp(p_blank, p_token)
            entry = nxt[prefix]
            entry[0] = _logsumexp(entry[0], p_total + frame[blank])
            if prefix:
                last = prefix[-1]
                entry[1] = _logsumexp(entry[1], p_token + frame[last])
            for token in candidates:
                token = int(token)
                if token == blank:
                    continue
                extended = nxt[prefix + (token,)]
                source = p_blank if prefix and token == prefix[-1] else p_total
                extended[1] = _logsumexp(extended[1], source + frame[token])
        ranked = sorted(nxt.items(), key=lambda kv: _logsumexp(*kv[1]), reverse=True)
        beams = {prefix: (scores[0], scores[1]) for prefix, scores in ranked[:beam]}
    best_prefix, (p_blank, p_token) = max(beams.items(), key=lambda kv: _logsumexp(*kv[1]))
    if return_score:
        return list(best_prefix), _logsumexp(p_blank, p_token)
    return list(best_prefix)


def ctc_path_log_prob(log_probs: torch.Tensor | np.ndarray, labels: Sequence[int],
                      blank: int = 0) -> float:
    """log P(labels | log_probs) summed over all CTC alignments (torch's ctc_loss)."""
    lp = torch.as_tensor(np.asarray(log_probs), dtype=torch.float64).unsqueeze(1)
    target = torch.as_tensor(list(labels), dtype=torch.long).unsqueeze(0)
    loss = torch.nn.functional.ctc_loss(
        lp, target, torch.tensor([lp.shape[0]]), torch.tensor([len(labels)]),
        blank=blank, reduction="sum", zero_infinity=False,
    )
    return -float(loss)


def greedy_transcripts(log_probs: torch.Tensor, frames: torch.Tensor, inventory) -> list[str]:
    """Greedy CTC transcripts of a batch.

    Parameters
    ----------
    log_probs : torch.Tensor
        ``(batch, time, V)`` log-probabilities.
    frames : torch.Tensor
        ``(batch,)`` valid frames (absolute).
    inventory : speechkd.text.TokenInventory
        Gives the blank and the symbols.

    Returns
    -------
    list of str
    """
    return [inventory.decode(ids) for ids in ctc_greedy(log_probs, frames, inventory.blank_index)]


def manifest_transcripts(manifest) -> list[str]:
    """The non-empty ``wrd`` of a manifest's rows (the training transcripts a lexicon and LM come from)."""
    from speechkd.data.manifest import read_manifest

    texts = [row["wrd"] for row in read_manifest(manifest) if row.get("wrd", "").strip()]
    if not texts:
        raise ValueError(f"{manifest}: no transcript to build a lexicon from")
    return texts


class BigramWordLM:
    """Word bigram language model with Dirichlet smoothing towards an add-one unigram.

    ``P(w | v) = (c(v, w) + prior * P(w)) / (c(v) + prior)`` and
    ``P(w) = (c(w) + 1) / (N + V)``, where ``v`` is the previous word or the
    sentence start and ``w`` a word or the sentence end. Every word of the
    vocabulary gets some probability after every history, so the decoder can
    still say a number the training transcripts never put in that place.

    Parameters
    ----------
    sentences : iterable of str
        Training transcripts (words split on spaces).
    prior : float
        Weight of the unigram in each bigram distribution (pseudo-counts).

    Attributes
    ----------
    words : list of str
        The vocabulary, in order of first appearance.
    """

    START, END = "<s>", "</s>"

    def __init__(self, sentences, prior: float = 5.0):
        self.prior = float(prior)
        unigrams: collections.Counter = collections.Counter()
        bigrams: collections.Counter = collections.Counter()
        for sentence in sentences:
            words = sentence.split()
            if not words:
                continue
            unigrams.update(words + [self.END])
            bigrams.update(zip([self.START, *words], [*words, self.END]))
        if not unigrams:
            raise ValueError("BigramWordLM needs at least one non-empty transcript")
        self.words = [word for word in unigrams if word != self.END]
        total, vocabulary = sum(unigrams.values()), len(unigrams)
        self._unigram = {word: (count + 1) / (total + vocabulary) for word, count in unigrams.items()}
        self._bigrams = bigrams
        self._history = collections.Counter()
        for (previous, _), count in bigrams.items():
            self._history[previous] += count

    @classmethod
    def from_manifest(cls, manifest, prior: float = 5.0) -> BigramWordLM:
        """The bigram of a manifest's ``wrd`` column (the model's ``train.csv``)."""
        return cls(manifest_transcripts(manifest), prior=prior)

    def log_prob(self, word: str, previous: str) -> float:
        """Natural log of ``P(word | previous)``; ``previous`` may be ``"<s>"``, ``word`` ``"</s>"``.

        A word outside the vocabulary gets ``-inf``.
        """
        unigram = self._unigram.get(word)
        if unigram is None:
            return -math.inf
        count = self._bigrams.get((previous, word), 0)
        return math.log((count + self.prior * unigram) / (self._history.get(previous, 0) + self.prior))


class LexiconDecoder:
    """CTC beam search over the words of a lexicon, with a word bigram LM.

    The search is flashlight's lexicon decoder (``torchaudio.models.decoder.
    ctc_decoder``, PyPI ``flashlight-text``): hypotheses may only spell words of
    the lexicon, and each finished word adds ``lm_weight`` times its bigram log
    probability (:class:`BigramWordLM`) and ``word_score``. On a closed
    vocabulary (the ``numbers`` corpus) this turns a character model's near
    misses (``"seen"`` for ``seven``) into words, and the bigram scores
    word sequences.

    Parameters
    ----------
    inventory : speechkd.text.TokenInventory
        The acoustic model's symbols; ``" "`` separates words.
    lm : BigramWordLM
        Gives the lexicon (its words that the inventory can spell) and the LM scores.
    beam : int
        Hypotheses kept per frame.
    lm_weight, word_score : float
        LM weight and per-word score (a negative score discourages insertions).

    Attributes
    ----------
    words : list of str
        The lexicon: the LM's words the inventory can spell (the others are
        left out with a warning).

    Notes
    -----
    A lexicon word ends with the word boundary (the space), which the
    acoustic model writes between words but not after the last one; each
    utterance is therefore given one more frame that says "space", so its
    last word is finished too. One decoder serves one thread at a time (its
    LM keeps per-utterance state).

    Example
    -------
    >>> decoder = LexiconDecoder.from_transcripts(inventory, train_texts)  # doctest: +SKIP
    >>> decoder(log_probs, frames)  # doctest: +SKIP
    ['twenty three', 'siete']
    """

    def __init__(self, inventory, lm: BigramWordLM, beam: int = 50, lm_weight: float = 0.5,
                 word_score: float = 0.0):
        from torchaudio.models.decoder import ctc_decoder

        if "|" in inventory.symbols:
            raise ValueError("the inventory holds '|', which the lexicon decoder uses for the word boundary")
        if " " not in inventory.symbols:
            raise ValueError("the inventory has no space: a lexicon decoder needs the word boundary")
        self.inventory, self.lm = inventory, lm
        spellable = [word for word in lm.words if all(char in inventory for char in self.characters(word))]
        self.words = spellable
        if not spellable:
            raise ValueError("none of the LM's words can be spelled with the model's inventory")
        if len(spellable) < len(lm.words):
            logger.warning("lexicon decoder: %d of %d words have characters the model cannot write "
                           "and are left out", len(lm.words) - len(spellable), len(lm.words))
        self._space = inventory.index(" ")
        tokens = ["|" if symbol == " " else symbol for symbol in inventory.symbols]
        entries = [*spellable, "<unk>"]  # the decoder's word indices: their line numbers in lm_dict
        with tempfile.TemporaryDirectory(prefix="speechkd-lexicon-") as folder:
            lexicon, lm_dict = os.path.join(folder, "lexicon.txt"), os.path.join(folder, "words.txt")
            with open(lexicon, "w", encoding="utf-8") as out:
                out.writelines(f"{word}\t{self.spelling(word)}\n" for word in spellable)
            with open(lm_dict, "w", encoding="utf-8") as out:
                out.writelines(f"{word}\n" for word in entries)
            self._decoder = ctc_decoder(
                lexicon=lexicon, tokens=tokens, lm=_flashlight_bigram(lm, entries), lm_dict=lm_dict,
                nbest=1, beam_size=beam, lm_weight=lm_weight, word_score=word_score, sil_score=0.0,
                blank_token=inventory.symbols[inventory.blank_index], sil_token="|", unk_word="<unk>")

    @staticmethod
    def characters(entry: str) -> str:
        """The characters a lexicon entry spells (a word: itself)."""
        return entry

    def spelling(self, entry: str) -> str:
        """The entry's line in flashlight's lexicon: its tokens, then the word boundary."""
        return f"{' '.join(entry)} |"

    def text(self, entries: list[str]) -> str:
        """The transcript of a decoded entry sequence."""
        return " ".join(entries)

    @classmethod
    def from_transcripts(cls, inventory, texts, prior: float = 5.0, **options) -> LexiconDecoder:
        """A decoder whose lexicon and bigram come from ``texts`` (training transcripts)."""
        return cls(inventory, BigramWordLM(texts, prior=prior), **options)

    @classmethod
    def from_manifest(cls, inventory, manifest, prior: float = 5.0, **options) -> LexiconDecoder:
        """A decoder from the ``wrd`` column of a manifest (the model's ``train.csv``)."""
        return cls.from_transcripts(inventory, manifest_transcripts(manifest), prior=prior, **options)

    def __call__(self, log_probs: torch.Tensor, frames: torch.Tensor) -> list[str]:
        """Transcripts of a batch.

        Parameters
        ----------
        log_probs : torch.Tensor
            ``(batch, time, V)`` log-probabilities.
        frames : torch.Tensor
            ``(batch,)`` valid frames (absolute).

        Returns
        -------
        list of str
        """
        emissions = log_probs.detach().float().cpu()
        lengths = torch.as_tensor(frames).long().cpu()
        batch, time, vocabulary = emissions.shape
        closed = torch.full((batch, time + 1, vocabulary), _CLOSED_FLOOR)
        closed[:, :time] = emissions
        rows = torch.arange(batch)
        closed[rows, lengths] = _CLOSED_FLOOR  # the frame after each utterance's last: a space
        closed[rows, lengths, self._space] = 0.0
        results = self._decoder(closed.contiguous(), lengths + 1)
        return [self.text(hypotheses[0].words) if hypotheses else "" for hypotheses in results]


class MorphSegmenter:
    """Words split into morphs learnt from a word list (Morfessor Baseline; Creutz & Lagus 2007).

    Morfessor finds the parts that many words share ("drei", "und",
    "zwanzig", "cento") by minimum description length, without knowing the
    language. Trained on word types (each word once), as is usual for finding
    morphs rather than frequent words. Deterministic: Python's ``random``
    is seeded for the training and restored after it.

    Parameters
    ----------
    words : iterable of str
        The vocabulary, e.g. every word of the training transcripts.
    seed : int
        Seeds Python's ``random`` for Morfessor's training (restored after).

    Example
    -------
    >>> segmenter = MorphSegmenter(num2words(n, lang="de") for n in range(1, 200) if n != 87)  # doctest: +SKIP
    >>> segmenter.units("siebenundachtzig hundert")  # doctest: +SKIP
    ['siebenund+', 'achtzig', 'hundert']
    """

    CONTINUES = "+"
    """Marks a morph that does not end its word."""

    def __init__(self, words, seed: int = 0):
        import random

        import morfessor
        import morfessor.utils

        self.vocabulary = sorted(set(words))
        if not self.vocabulary:
            raise ValueError("MorphSegmenter needs at least one word")
        marked = [word for word in self.vocabulary if self.CONTINUES in word]
        if marked:
            raise ValueError(f"words hold the morph marker {self.CONTINUES!r}: {marked[:3]}")
        self._model = morfessor.BaselineModel()
        self._model.load_data([(1, word) for word in self.vocabulary])
        state, progress = random.getstate(), morfessor.utils.show_progress_bar
        random.seed(seed)
        morfessor.utils.show_progress_bar = False  # its dots would interleave with the recipes' logs
        try:
            self._model.train_batch()
        finally:
            random.setstate(state)
            morfessor.utils.show_progress_bar = progress
        self._morphs: dict[str, list[str]] = {}

    def segment(self, word: str) -> list[str]:
        """The morphs of ``word``: its Viterbi split over the learnt morphs (a training word's and a new one's alike)."""
        if word not in self._morphs:
            self._morphs[word] = list(self._model.viterbi_segment(word)[0])
        return self._morphs[word]

    def units(self, text: str) -> list[str]:
        """``"dreiundzwanzig eins"`` -> ``["drei+", "und+", "zwanzig", "eins"]``."""
        units = []
        for word in text.split():
            morphs = self.segment(word)
            units += [morph + self.CONTINUES for morph in morphs[:-1]] + [morphs[-1]]
        return units

    @classmethod
    def join(cls, units: list[str]) -> str:
        """The inverse of :meth:`units`: ``["drei+", "und+", "zwanzig"]`` -> ``"dreiundzwanzig"``."""
        return " ".join(units).replace(cls.CONTINUES + " ", "").replace(cls.CONTINUES, "")


class MorphLexiconDecoder(LexiconDecoder):
    """A lexicon decoder that also spells words the training transcripts never did, from their morphs.

    In German and Italian a number is one word ("dreihundertvierundzwanzig",
    "centoventitré"): few of them are in any training list, and a word
    lexicon forces the others onto the words it has. Here the lexicon's
    entries are the training words and their morphs (:class:`MorphSegmenter`):
    a word-internal morph (``drei+``) is spelled without the word boundary, a
    word-final one (``zwanzig``) and a whole word with it, so a hypothesis may
    compose a new word. The bigram (:class:`BigramWordLM`) learns each
    training transcript twice, as whole words (a known word keeps its word
    bigram) and as morphs (how morphs follow each other). The composed words
    are not checked here: :func:`speechkd.distill.transcripts.filter_pseudo_labels`
    keeps a new word only where the greedy path spells it too.

    Known limits: flashlight lets the word boundary through as silence after
    any entry, so a hypothesis may also join two spoken words through a
    word-internal morph (only the bigram argues against it), and a character
    spoken over several frames costs a word-internal morph a little (its
    repeats are scored as that silence). On the main job's transfer set the
    rows this decoder labelled after the word lexicon had 21 % WER against
    what was said (the word pass's 4.3 %): mostly a wrong composed word that
    the greedy path spells the same way (benchmarks/RESULTS.md, "Run of
    2026-12-02 (late afternoon)").

    Parameters
    ----------
    inventory : speechkd.text.TokenInventory
        The acoustic model's symbols; ``" "`` separates words, and ``"+"`` must not be one.
    texts : list of str
        Training transcripts.
    segmenter : MorphSegmenter, optional
        Default: one trained on the words of ``texts``.
    prior : float
        The bigram's smoothing (:class:`BigramWordLM`).
    **options
        ``beam``, ``lm_weight``, ``word_score`` (:class:`LexiconDecoder`).

    Attributes
    ----------
    segmenter : MorphSegmenter
    """

    def __init__(self, inventory, texts, segmenter: MorphSegmenter | None = None, prior: float = 5.0, **options):
        if MorphSegmenter.CONTINUES in inventory.symbols:
            raise ValueError(f"the inventory holds {MorphSegmenter.CONTINUES!r}, which marks a word-internal morph")
        texts = [text for text in texts if text.split()]
        self.segmenter = segmenter or MorphSegmenter(word for text in texts for word in text.split())
        morphs = [" ".join(self.segmenter.units(text)) for text in texts]
        super().__init__(inventory, BigramWordLM([*texts, *morphs], prior=prior), **options)

    @classmethod
    def from_transcripts(cls, inventory, texts, prior: float = 5.0, **options) -> MorphLexiconDecoder:
        """A decoder whose words, morphs and bigram come from ``texts`` (training transcripts)."""
        return cls(inventory, texts, prior=prior, **options)

    @staticmethod
    def characters(entry: str) -> str:
        """A morph's characters, without the word-internal marker."""
        return entry.removesuffix(MorphSegmenter.CONTINUES)

    def spelling(self, entry: str) -> str:
        """A word-internal morph's tokens have no word boundary after them; a word-final one's do."""
        if entry.endswith(MorphSegmenter.CONTINUES):
            return " ".join(self.characters(entry))
        return super().spelling(entry)

    def text(self, entries: list[str]) -> str:
        """Morphs joined back into words (:meth:`MorphSegmenter.join`)."""
        return MorphSegmenter.join(entries)


def _flashlight_bigram(lm: BigramWordLM, words: list[str]):
    """Wrap ``lm`` as torchaudio's ``CTCDecoderLM``; ``words[i]`` is the decoder's word ``i``."""
    from torchaudio.models.decoder import CTCDecoderLM, CTCDecoderLMState

    class FlashlightBigram(CTCDecoderLM):
        """A bigram's state is its last word: every state is a child of the start state,
        so flashlight merges hypotheses that end in the same word."""

        def __init__(self):
            super().__init__()
            self.start_state = None
            self.previous = {}  # state -> the word that led to it

        def start(self, start_with_nothing: bool):
            self.start_state = CTCDecoderLMState()
            self.previous = {self.start_state: BigramWordLM.START}
            return self.start_state

        def score(self, state, usr_token_idx: int):
            word = words[usr_token_idx]
            child = self.start_state.child(usr_token_idx)
            self.previous.setdefault(child, word)
            return child, lm.log_prob(word, self.previous[state])

        def finish(self, state):
            return state, lm.log_prob(BigramWordLM.END, self.previous[state])

    return FlashlightBigram()

