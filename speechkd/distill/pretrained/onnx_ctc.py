"""ONNX CTC models as teachers, in sherpa-onnx's folder layout, run with onnxruntime.

The folder holds ``model.onnx`` and ``tokens.txt`` (``<symbol> <id>`` per
line); the model's metadata (``metadata_props``) says how to compute its
input, as sherpa-onnx reads it:

* ``subsampling_factor`` (default 4): output frames per 10 ms feature frame;
  the teacher's frame shift is ``10 * subsampling_factor`` ms;
* ``feat_dim`` (default 80): log-mel filterbank channels (Kaldi fbank,
  25 ms window, 10 ms shift, no dither, ``snip_edges=False``);
* ``normalize_type``: ``per_feature`` (NeMo: each channel to zero mean and
  unit variance over the utterance) or empty;
* ``window_type`` (default ``povey``); ``blank_id`` (else the token named
  ``<blk>``, ``<blank>`` or ``<eps>``).

Inputs are ``(features, lengths)``: NeMo's graphs take features as
``(batch, dim, time)`` (input named ``audio_signal``), icefall's and WeNet's
as ``(batch, time, dim)``. The first output is per-frame log-probabilities
(or logits), the second, when there is one, the valid frames.

    teachers:
        - !new:speechkd.distill.pretrained.OnnxCTCTeacher
            folder: /models/sherpa-onnx-nemo-ctc-en-citrinet-512
"""

from __future__ import annotations

import os

import numpy as np
import torch
import torchaudio

from speechkd.distill.pretrained.base import PretrainedCTCTeacher, hash_files

BLANK_NAMES = ("<blk>", "<blank>", "<eps>")
CHANNELS_FIRST_INPUTS = ("audio_signal",)


def read_tokens(path: str) -> list:
    """Symbols of a sherpa-onnx ``tokens.txt`` in id order; a bad line is an error naming it."""
    tokens = {}
    with open(path, encoding="utf-8") as fin:
        for number, line in enumerate(fin, 1):
            line = line.rstrip("\n")
            if not line.strip():
                continue
            symbol, _, index = line.rpartition(" ")
            if not index.isdigit():
                raise ValueError(f"{path}:{number}: expected '<symbol> <id>', got {line!r}")
            tokens[int(index)] = symbol if symbol else " "
    if sorted(tokens) != list(range(len(tokens))):
        raise ValueError(f"{path}: token ids are not 0..{len(tokens) - 1}")
    return [tokens[i] for i in range(len(tokens))]


class OnnxCTCTeacher(PretrainedCTCTeacher):
    """An ONNX CTC acoustic model with its tokens and metadata (see the module doc).

    Parameters
    ----------
    folder : str
    model : str
        The graph's file name in ``folder`` (e.g. ``model.int8.onnx``).
    name : str, optional
    lowercase, special_tokens
        As for :class:`~speechkd.distill.pretrained.HuggingFaceCTCTeacher`.
    device : str
        ``cuda`` uses onnxruntime's CUDA provider when it is installed.
    threads : int
        onnxruntime intra-op threads (0 = its default).
    """

    def __init__(self, folder: str, model: str = "model.onnx", name: str | None = None,
                 lowercase: bool = True, special_tokens: str = "drop", device: str = "cpu", threads: int = 0):
        import onnxruntime

        self.model_path = os.path.join(folder, model)
        self.tokens_path = os.path.join(folder, "tokens.txt")
        for path in (self.model_path, self.tokens_path):
            if not os.path.exists(path):
                raise FileNotFoundError(f"no ONNX CTC teacher at {folder}: {os.path.basename(path)} is missing")
        super().__init__(name or os.path.basename(os.path.normpath(folder)), device, "fp32")
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        providers = (["CUDAExecutionProvider", "CPUExecutionProvider"] if str(device).startswith("cuda")
                     else ["CPUExecutionProvider"])
        self.session = onnxruntime.InferenceSession(self.model_path, options, providers=providers)
        self.metadata = self.session.get_modelmeta().custom_metadata_map
        raw_symbols = read_tokens(self.tokens_path)
        self.set_vocabulary(raw_symbols, self._blank_index(raw_symbols), lowercase=lowercase,
                            special_tokens=special_tokens)
        self.subsampling = int(self.metadata.get("subsampling_factor", 4))
        self.feat_dim = int(self.metadata.get("feat_dim", 80))
        self.normalize_type = self.metadata.get("normalize_type", "")
        self.window_type = self.metadata.get("window_type", "povey")
        self.frame_shift_ms = 10 * self.subsampling
        inputs = self.session.get_inputs()
        self.input_names = [i.name for i in inputs]
        self.channels_first = inputs[0].name in CHANNELS_FIRST_INPUTS

    def _blank_index(self, symbols) -> int:
        if "blank_id" in self.metadata:
            return int(self.metadata["blank_id"])
        for name in BLANK_NAMES:
            if name in symbols:
                return symbols.index(name)
        raise ValueError(f"{self.tokens_path}: no blank token ({', '.join(BLANK_NAMES)}) and no blank_id "
                         "in the model's metadata")

    def features(self, wav: torch.Tensor) -> torch.Tensor:
        """``(samples,)`` -> ``(frames, feat_dim)`` log-mel filterbank as the metadata asks."""
        feats = torchaudio.compliance.kaldi.fbank(
            wav[None].float().cpu(), num_mel_bins=self.feat_dim, sample_frequency=self.sample_rate,
            frame_length=25.0, frame_shift=10.0, dither=0.0, snip_edges=False, window_type=self.window_type)
        if self.normalize_type == "per_feature":
            feats = (feats - feats.mean(0)) / (feats.std(0) + 1e-5)
        return feats

    def forward_raw(self, wavs, lengths):
        outputs, frames = [], []
        for wav, length in zip(wavs, lengths.tolist()):
            feats = self.features(wav[:length]).numpy()[None]
            if self.channels_first:
                feats = feats.transpose(0, 2, 1)
            feeds = {self.input_names[0]: np.ascontiguousarray(feats),
                     self.input_names[1]: np.array([feats.shape[2 if self.channels_first else 1]], dtype=np.int64)}
            result = self.session.run(None, feeds)
            outputs.append(torch.from_numpy(result[0][0]))
            frames.append(int(result[1][0]) if len(result) > 1 else result[0].shape[1])
        logits = torch.zeros(len(outputs), max(o.shape[0] for o in outputs), outputs[0].shape[-1])
        for i, row in enumerate(outputs):
            logits[i, : row.shape[0]] = row
        return logits.to(wavs.device), torch.tensor(frames, device=wavs.device)

    def weights_fingerprint(self) -> str:
        return hash_files([self.model_path, self.tokens_path]) + f"-{self.normalize_type}-{self.window_type}"
