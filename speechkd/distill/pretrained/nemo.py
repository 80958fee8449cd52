"""NeMo CTC models (``.nemo`` files: Citrinet, QuartzNet, Conformer-CTC, FastConformer-CTC) as teachers.

Needs ``nemo_toolkit[asr]`` (``pip install -e ".[nemo]"``; it installs beside
torch 2.11, see benchmarks/RESULTS.md). The model is restored from the local
file (``ASRModel.restore_from``), its preprocessor's dither and padding
switched off, and run in eval mode; its own front-end computes the features.
NeMo puts the blank last, after ``decoder.vocabulary``. Character models map
onto a character student; BPE models (``EncDecCTCModelBPE``, tokens such as
``▁the``) are refused frame by frame by the inventory mapping and teach
through their transcripts instead (:class:`speechkd.distill.transcripts.GreedyTranscripts`).

    teachers:
        - !new:speechkd.distill.pretrained.nemo.NemoCTCTeacher
            path: /models/stt_en_quartznet15x5.nemo
"""

from __future__ import annotations

import os

import torch

from speechkd.distill.cache import fingerprint_module
from speechkd.distill.pretrained.base import PretrainedCTCTeacher

PROBE_SECONDS = 4


class NemoCTCTeacher(PretrainedCTCTeacher):
    """A NeMo ``EncDecCTCModel`` (or ``...BPE``) restored from a ``.nemo`` file.

    Parameters
    ----------
    path : str
        The ``.nemo`` file.
    name : str, optional
        Defaults to the file's name without ``.nemo``.
    lowercase, special_tokens, device, precision
        As for :class:`~speechkd.distill.pretrained.HuggingFaceCTCTeacher`.
    """

    def __init__(self, path: str, name: str | None = None, lowercase: bool = True,
                 special_tokens: str = "drop", device: str = "cpu", precision: str = "fp32"):
        from nemo.collections.asr.models import ASRModel

        if not os.path.isfile(path):
            raise FileNotFoundError(f"no NeMo model at {path}")
        super().__init__(name or os.path.splitext(os.path.basename(path))[0], device, precision)
        self.path = path
        model = ASRModel.restore_from(path, map_location=torch.device(device))
        if not hasattr(model, "decoder") or not hasattr(model.decoder, "vocabulary"):
            raise ValueError(f"{path} is a {type(model).__name__}, not a NeMo CTC model")
        model.preprocessor.featurizer.dither = 0.0
        model.preprocessor.featurizer.pad_to = 0
        self.module = self.prepare_module(model)
        vocabulary = [" " if s == " " else str(s) for s in model.decoder.vocabulary]
        self.set_vocabulary([*vocabulary, "<blk>"], len(vocabulary), lowercase=lowercase,
                            special_tokens=special_tokens)
        self.sample_rate = int(model.cfg.get("sample_rate", 16000))
        self.frame_shift_ms = self._probe_frame_shift()

    @torch.no_grad()
    def _probe_frame_shift(self) -> int:
        samples = PROBE_SECONDS * self.sample_rate
        _, frames = self.forward_raw(torch.zeros(1, samples, dtype=self.dtype, device=self.device),
                                     torch.tensor([samples], device=self.device))
        return round(PROBE_SECONDS * 1000 / int(frames[0]))

    @torch.no_grad()
    def forward_raw(self, wavs, lengths):
        log_probs, frames, _ = self.module(input_signal=wavs, input_signal_length=lengths)
        return log_probs, frames

    def weights_fingerprint(self) -> str:
        return fingerprint_module(self.module)
