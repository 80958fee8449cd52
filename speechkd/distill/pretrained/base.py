"""What every pretrained CTC teacher shares: its vocabulary folded to characters, its weights hashed.

A pretrained model names its outputs in its own way: HuggingFace and
torchaudio put the blank at index 0 (``<pad>``, ``-``), NeMo last (``<blk>``);
words are split by ``|``, ``▁`` or a space; letters may be upper case; and
special tokens (``<s>``, ``</s>``, ``<unk>``) hold some mass at every frame.
:class:`VocabularyFold` turns the model's raw per-frame log-probabilities into
ones over a clean character inventory:

* tokens that name the same symbol after case folding (``B`` and ``b``) are
  merged with log-sum-exp;
* special tokens are dropped (``special_tokens="drop"``, the default) or
  folded into the blank (``"blank"``), and the rest renormalized, so every
  frame still sums to one;
* the blank keeps its place, the word delimiter its own name (the
  :class:`~speechkd.distill.teachers.Teacher` interface renames both
  canonically: ``<blank>`` and ``" "``).

Subword (BPE) vocabularies pass through unchanged; pairing them frame by
frame with a character student is refused by the inventory mapping
(:class:`~speechkd.distill.align.InventoryMap`), which points to the
transcript-teacher path (:mod:`speechkd.distill.transcripts`).

:class:`PretrainedCTCTeacher` is the base of every adapter: it applies the
fold, runs models whose output depends on padding one utterance at a time
(so cached posteriors do not depend on how a batch was formed), casts to half
precision when asked, and fingerprints the weights with the fold settings.
"""

from __future__ import annotations

import hashlib
import os
from abc import abstractmethod

import torch

from speechkd.distill.teachers import INPUT_SAMPLE_RATE, Teacher
from speechkd.models.features import relative_lengths_to_absolute

SPECIAL_TOKENS = ("<s>", "</s>", "<unk>", "<pad>", "<bos>", "<eos>", "<sos>", "<sos/eos>",
                  "[UNK]", "[PAD]", "<|endoftext|>")
WORD_DELIMITERS = ("|", "▁", " ")
SPECIAL_MODES = ("drop", "blank")
PRECISIONS = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def guess_word_delimiter(symbols) -> str:
    """The first of ``|``, ``▁``, space that is a token of ``symbols`` (space when none is)."""
    return next((d for d in WORD_DELIMITERS if d in symbols), " ")


class VocabularyFold:
    """Map a model's raw vocabulary onto folded symbols, merging and dropping columns.

    Parameters
    ----------
    raw_symbols : sequence of str
        The model's tokens in output order.
    blank_index : int
        Index of the CTC blank in ``raw_symbols``.
    word_delimiter : str, optional
        The token between words; guessed (``|``, ``▁``, then space) when None.
    lowercase : bool
        Fold upper-case letters onto lower case (merging with log-sum-exp).
    special_tokens : {"drop", "blank"}
        Mass on :data:`SPECIAL_TOKENS` (other than the blank) is dropped and
        the rest renormalized, or added to the blank.

    Attributes
    ----------
    symbols : list of str
        The folded tokens, in order of first appearance.
    blank_index : int
        The blank's index in ``symbols``.
    word_delimiter : str
    dropped : list of str
        Raw tokens whose mass is dropped.
    """

    def __init__(self, raw_symbols, blank_index: int, word_delimiter: str | None = None,
                 lowercase: bool = True, special_tokens: str = "drop"):
        if special_tokens not in SPECIAL_MODES:
            raise ValueError(f"special_tokens must be one of {SPECIAL_MODES}, got {special_tokens!r}")
        raw_symbols = list(raw_symbols)
        if not 0 <= blank_index < len(raw_symbols):
            raise ValueError(f"blank index {blank_index} outside a vocabulary of {len(raw_symbols)} tokens")
        self.raw_size = len(raw_symbols)
        self.word_delimiter = guess_word_delimiter(raw_symbols) if word_delimiter is None else word_delimiter
        self.symbols, self.dropped, target = [], [], []
        for index, symbol in enumerate(raw_symbols):
            if index != blank_index and symbol in SPECIAL_TOKENS:
                if special_tokens == "drop":
                    self.dropped.append(symbol)
                    target.append(-1)
                    continue
                symbol = raw_symbols[blank_index]
            elif index != blank_index and lowercase:
                symbol = symbol.lower()
            if symbol not in self.symbols:
                self.symbols.append(symbol)
            target.append(self.symbols.index(symbol))
        self.blank_index = self.symbols.index(raw_symbols[blank_index])
        self.target_index = torch.tensor(target)
        self.identity = self.dropped == [] and target == list(range(len(raw_symbols)))
        matrix = torch.zeros(self.raw_size, len(self.symbols))
        kept = self.target_index >= 0
        matrix[torch.arange(self.raw_size)[kept], self.target_index[kept]] = 1.0
        self.matrix = matrix

    def settings(self) -> str:
        """The fold as text, for a fingerprint."""
        return f"fold:{self.symbols}|{self.dropped}|{self.target_index.tolist()}"

    def __call__(self, log_probs: torch.Tensor) -> torch.Tensor:
        """Fold raw log-probabilities.

        Parameters
        ----------
        log_probs : torch.Tensor
            ``(..., V_raw)`` log-probabilities (or logits: the result is normalized).

        Returns
        -------
        torch.Tensor
            ``(..., len(symbols))`` log-probabilities summing to one per frame.
        """
        if log_probs.shape[-1] != self.raw_size:
            raise ValueError(f"the model gave {log_probs.shape[-1]} outputs per frame, its vocabulary has "
                             f"{self.raw_size} tokens")
        log_probs = log_probs.float()
        if self.identity:
            return log_probs.log_softmax(-1)
        kept = (self.target_index >= 0).to(log_probs.device)
        masked = log_probs.masked_fill(~kept, float("-inf"))
        peak = masked.amax(-1, keepdim=True)
        mass = (masked - peak).exp() @ self.matrix.to(log_probs.device)
        folded = mass.clamp_min(torch.finfo(mass.dtype).tiny).log() + peak
        return folded.log_softmax(-1)


def hash_files(paths) -> str:
    """sha256 (first 16 hex characters) over the bytes of ``paths`` in the order given."""
    digest = hashlib.sha256()
    for path in paths:
        digest.update(os.path.basename(path).encode())
        with open(path, "rb") as fin:
            for chunk in iter(lambda: fin.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()[:16]


class PretrainedCTCTeacher(Teacher):
    """Base of the pretrained-model adapters: raw model output -> folded log-probabilities.

    Subclasses load the model, call :meth:`set_vocabulary`, set
    ``frame_shift_ms``/``sample_rate``/``normalize_waveform`` and implement
    :meth:`forward_raw` and :meth:`weights_fingerprint`.

    Parameters
    ----------
    name : str
    device : str
    precision : {"fp32", "fp16", "bf16"}
        Weights and activations of the model (log-probabilities are float32).
    batch_invariant : bool
        False for models whose output depends on the padding (group-normalized
        feature extractors, no attention mask): they are run one utterance at a time.
    """

    module: torch.nn.Module | None = None

    def __init__(self, name: str, device: str = "cpu", precision: str = "fp32", batch_invariant: bool = True):
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {sorted(PRECISIONS)}, got {precision!r}")
        self.name = name
        self.device = device
        self.precision = precision
        self.dtype = PRECISIONS[precision]
        self.batch_invariant = batch_invariant
        self.sample_rate = INPUT_SAMPLE_RATE
        self.normalize_waveform = False

    def set_vocabulary(self, raw_symbols, blank_index, word_delimiter=None, lowercase=True,
                       special_tokens="drop"):
        """Fold the model's vocabulary (see :class:`VocabularyFold`) and set ``symbols``/``blank_index``."""
        self.fold = VocabularyFold(raw_symbols, blank_index, word_delimiter, lowercase, special_tokens)
        self.symbols = self.fold.symbols
        self.blank_index = self.fold.blank_index
        self.word_delimiter = self.fold.word_delimiter

    def prepare_module(self, module: torch.nn.Module) -> torch.nn.Module:
        """Eval mode, frozen, on the device, in the precision asked for."""
        module.eval().requires_grad_(False)
        return module.to(device=self.device, dtype=self.dtype)

    def to(self, device):
        self.device = device
        if self.module is not None:
            self.module.to(device)
        return self

    @abstractmethod
    def forward_raw(self, wavs: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Run the model.

        Parameters
        ----------
        wavs : torch.Tensor
            ``(batch, samples)`` prepared input in the model's dtype.
        lengths : torch.Tensor
            ``(batch,)`` long, valid samples.

        Returns
        -------
        logits : torch.Tensor
            ``(batch, frames, V_raw)`` logits or log-probabilities over the raw vocabulary.
        frames : torch.Tensor
            ``(batch,)`` long, valid frames.
        """

    @abstractmethod
    def weights_fingerprint(self) -> str:
        """A hash of the model's weights."""

    def forward_log_probs(self, wavs, wav_lens):
        lengths = relative_lengths_to_absolute(wav_lens.to(wavs.device), wavs.shape[1])
        wavs = wavs.to(self.dtype)
        if self.batch_invariant or wavs.shape[0] == 1:
            logits, frames = self.forward_raw(wavs, lengths)
            return self.fold(logits), frames.long()
        outputs = [self.forward_raw(wavs[i : i + 1, : int(lengths[i])], lengths[i : i + 1])
                   for i in range(wavs.shape[0])]
        frames = torch.cat([f for _, f in outputs]).long()
        logits = wavs.new_full((wavs.shape[0], int(frames.max()), self.fold.raw_size), 0.0, dtype=torch.float32)
        for i, (row, _) in enumerate(outputs):
            logits[i, : row.shape[1]] = row[0].float()
        return self.fold(logits), frames

    def fingerprint(self) -> str:
        return f"{self.weights_fingerprint()}-{hashlib.sha256(self.fold.settings().encode()).hexdigest()[:8]}"
