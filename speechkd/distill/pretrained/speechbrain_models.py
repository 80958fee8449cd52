"""SpeechBrain CTC models as teachers: an ``EncoderASR`` folder (``hyperparams.yaml`` + checkpoints).

The folder is what ``EncoderASR.from_hparams`` reads (e.g. a copy of
speechbrain/asr-wav2vec2-commonvoice-fr): its ``encoder`` maps waveforms to
per-frame log-probabilities (features, model, CTC layer and log-softmax
inside), its ``tokenizer`` is a ``CTCTextEncoder`` (characters) or a
SentencePiece model (subwords: usable as a transcript teacher only). Paths
in the YAML's pretrainer point into the folder; nothing is downloaded.

    teachers:
        - !new:speechkd.distill.pretrained.SpeechBrainCTCTeacher
            folder: /models/asr-wav2vec2-commonvoice-fr
"""

from __future__ import annotations

import os
import tempfile

import torch

from speechkd.distill.cache import fingerprint_module
from speechkd.distill.pretrained.base import PretrainedCTCTeacher
from speechkd.models.features import relative_lengths_to_absolute

PROBE_SECONDS = 4


def tokenizer_symbols(tokenizer) -> list:
    """Tokens of a SpeechBrain ``CTCTextEncoder`` or a SentencePiece processor, in index order."""
    if hasattr(tokenizer, "ind2lab"):
        return [tokenizer.ind2lab[i] for i in range(len(tokenizer.ind2lab))]
    if hasattr(tokenizer, "id_to_piece"):
        return [tokenizer.id_to_piece(i) for i in range(tokenizer.vocab_size())]
    raise TypeError(f"unsupported SpeechBrain tokenizer {type(tokenizer).__name__}: "
                    "expected a CTCTextEncoder or a SentencePiece processor")


class SpeechBrainCTCTeacher(PretrainedCTCTeacher):
    """A SpeechBrain ``EncoderASR`` CTC model from a local folder.

    Parameters
    ----------
    folder : str
    hparams_file : str
        The YAML's name in ``folder``.
    blank_index : int, optional
        Defaults to the YAML's ``blank_index``, else the tokenizer's blank label, else 0.
    frame_shift_ms : int, optional
        Defaults to what the encoder gives on a probe of silence.
    name, lowercase, special_tokens, device
        As for :class:`~speechkd.distill.pretrained.HuggingFaceCTCTeacher`.
    """

    def __init__(self, folder: str, hparams_file: str = "hyperparams.yaml", blank_index: int | None = None,
                 frame_shift_ms: int | None = None, name: str | None = None, lowercase: bool = True,
                 special_tokens: str = "drop", device: str = "cpu"):
        from speechbrain.inference.ASR import EncoderASR

        if not os.path.exists(os.path.join(folder, hparams_file)):
            raise FileNotFoundError(f"no SpeechBrain model at {folder} (no {hparams_file})")
        super().__init__(name or os.path.basename(os.path.normpath(folder)), device, "fp32")
        self.folder = os.path.abspath(folder)
        self.asr = EncoderASR.from_hparams(source=self.folder, hparams_file=hparams_file,
                                           savedir=tempfile.mkdtemp(prefix="speechkd-sb-"),
                                           run_opts={"device": device})
        self.module = self.prepare_module(self.asr.mods)
        raw_symbols = tokenizer_symbols(self.asr.tokenizer)
        if blank_index is None:
            blank_index = getattr(self.asr.hparams, "blank_index", None)
        if blank_index is None and hasattr(self.asr.tokenizer, "lab2ind"):
            blank_index = self.asr.tokenizer.lab2ind.get(getattr(self.asr.tokenizer, "blank_label", "<blank>"))
        self.set_vocabulary(raw_symbols, blank_index or 0, lowercase=lowercase, special_tokens=special_tokens)
        self.sample_rate = int(getattr(self.asr.hparams, "sample_rate", 16000))
        self.frame_shift_ms = frame_shift_ms or self._probe_frame_shift()

    @torch.no_grad()
    def _probe_frame_shift(self) -> int:
        wavs = torch.zeros(1, PROBE_SECONDS * self.sample_rate, device=self.device)
        frames = self.asr.encode_batch(wavs, torch.ones(1, device=self.device)).shape[1]
        return round(PROBE_SECONDS * 1000 / frames)

    @torch.no_grad()
    def forward_raw(self, wavs, lengths):
        log_probs = self.asr.encode_batch(wavs, lengths.float() / wavs.shape[1])
        return log_probs, relative_lengths_to_absolute(lengths.float() / wavs.shape[1], log_probs.shape[1])

    def weights_fingerprint(self) -> str:
        return fingerprint_module(self.module)
