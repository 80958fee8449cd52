"""torchaudio wav2vec2 / HuBERT CTC models as teachers, from a local state dict.

torchaudio's pipeline bundles download their weights; a user who has them
(``bundle.get_model()`` once, on a machine with a network) keeps a folder:

* ``model.pt``: the model's ``state_dict``;
* ``config.json``: ``{"model": {...keyword arguments of torchaudio.models.wav2vec2_model...},
  "labels": [...], "blank_index": 0, "normalize_waveform": false, "sample_rate": 16000}``.

:func:`save_torchaudio_teacher` writes that folder from a model and its labels.

    teachers:
        - !new:speechkd.distill.pretrained.TorchaudioCTCTeacher
            folder: /models/wav2vec2-asr-base-960h
"""

from __future__ import annotations

import json
import os

import torch
import torchaudio

from speechkd.distill.cache import fingerprint_module
from speechkd.distill.pretrained.base import PretrainedCTCTeacher


def save_torchaudio_teacher(model, model_config: dict, labels, folder: str, blank_index: int = 0,
                            normalize_waveform: bool = False, sample_rate: int = 16000):
    """Write ``model.pt`` and ``config.json`` for :class:`TorchaudioCTCTeacher`.

    Parameters
    ----------
    model : torchaudio.models.Wav2Vec2Model
    model_config : dict
        The keyword arguments that rebuild it with ``torchaudio.models.wav2vec2_model``.
    labels : sequence of str
        Output tokens in order (a bundle's ``get_labels()``: ``-`` is the blank, ``|`` the word delimiter).
    """
    os.makedirs(folder, exist_ok=True)
    torch.save(model.state_dict(), os.path.join(folder, "model.pt"))
    with open(os.path.join(folder, "config.json"), "w", encoding="utf-8") as fout:
        json.dump({"model": model_config, "labels": list(labels), "blank_index": blank_index,
                   "normalize_waveform": normalize_waveform, "sample_rate": sample_rate}, fout, indent=1)


class TorchaudioCTCTeacher(PretrainedCTCTeacher):
    """A ``torchaudio.models.wav2vec2_model`` (wav2vec2, HuBERT, WavLM architecture) with a CTC head.

    Parameters
    ----------
    folder : str
        Holds ``model.pt`` and ``config.json`` (see the module doc).
    name : str, optional
    lowercase, special_tokens, device, precision
        As for :class:`~speechkd.distill.pretrained.HuggingFaceCTCTeacher`.

    Notes
    -----
    A ``group_norm`` feature extractor (base models) normalizes over the whole
    padded input, so those models run one utterance at a time.
    """

    def __init__(self, folder: str, name: str | None = None, lowercase: bool = True,
                 special_tokens: str = "drop", device: str = "cpu", precision: str = "fp32"):
        config_path = os.path.join(folder, "config.json")
        if not os.path.exists(config_path):
            raise FileNotFoundError(f"no torchaudio teacher at {folder} (no config.json; see "
                                    "speechkd.distill.pretrained.save_torchaudio_teacher)")
        with open(config_path, encoding="utf-8") as fin:
            config = json.load(fin)
        model_config = config["model"]
        super().__init__(name or os.path.basename(os.path.normpath(folder)), device, precision,
                         batch_invariant=model_config.get("extractor_mode", "group_norm") != "group_norm")
        self.folder = folder
        model = torchaudio.models.wav2vec2_model(**model_config)
        model.load_state_dict(torch.load(os.path.join(folder, "model.pt"), map_location="cpu", weights_only=True))
        self.module = self.prepare_module(model)
        self.set_vocabulary(config["labels"], config.get("blank_index", 0), lowercase=lowercase,
                            special_tokens=special_tokens)
        self.sample_rate = int(config.get("sample_rate", 16000))
        self.normalize_waveform = bool(config.get("normalize_waveform", False))
        stride = 1
        for _, _, conv_stride in model_config.get("extractor_conv_layer_config") or [(0, 0, 5), *[(0, 0, 2)] * 6]:
            stride *= conv_stride
        self.frame_shift_ms = stride * 1000 // self.sample_rate

    @torch.no_grad()
    def forward_raw(self, wavs, lengths):
        logits, frames = self.module(wavs, lengths if self.batch_invariant else None)
        if frames is None:
            frames = torch.full((wavs.shape[0],), logits.shape[1], device=logits.device)
        return logits, frames

    def weights_fingerprint(self) -> str:
        return fingerprint_module(self.module)
