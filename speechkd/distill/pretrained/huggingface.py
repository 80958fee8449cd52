"""HuggingFace transformers CTC models as teachers: wav2vec2, XLS-R, HuBERT, WavLM, MMS (any ``*ForCTC``).

Loaded from a local folder written by ``save_pretrained`` (``config.json``,
weights, ``vocab.json``, optionally ``preprocessor_config.json``) with
``local_files_only``: nothing is downloaded. MMS keeps one adapter per
language (``adapter.<lang>.safetensors``) and a vocabulary per language in
``vocab.json``: ``target_lang`` selects both.

    teachers:
        - !new:speechkd.distill.pretrained.HuggingFaceCTCTeacher
            folder: /models/wav2vec2-xls-r-300m-fr
        - !new:speechkd.distill.pretrained.HuggingFaceCTCTeacher
            folder: /models/mms-1b-all
            target_lang: deu
"""

from __future__ import annotations

import json
import os

import torch

from speechkd.distill.cache import fingerprint_module
from speechkd.distill.pretrained.base import PretrainedCTCTeacher


def _read_json(path):
    if not os.path.exists(path):
        return {}
    with open(path, encoding="utf-8") as fin:
        return json.load(fin)


class HuggingFaceCTCTeacher(PretrainedCTCTeacher):
    """A transformers ``*ForCTC`` model from a local folder.

    Parameters
    ----------
    folder : str
        The ``save_pretrained`` folder.
    target_lang : str, optional
        MMS: the language whose adapter and vocabulary are loaded.
    name : str, optional
        Defaults to the folder's name (with ``target_lang``).
    lowercase : bool
        Fold upper-case tokens onto lower case.
    special_tokens : {"drop", "blank"}
        ``<s>``, ``</s>``, ``<unk>``: dropped and renormalized, or added to the blank.
    device : str
    precision : {"fp32", "fp16", "bf16"}

    Notes
    -----
    The blank is the tokenizer's pad token (index 0 in HF vocabularies).
    Waveforms are normalized when the feature extractor says ``do_normalize``.
    Models with a group-normalized feature extractor (wav2vec2-base, HuBERT
    base) take no attention mask, so padding would change their output: they
    run one utterance at a time; the others run batched with a mask.
    """

    def __init__(self, folder: str, target_lang: str | None = None, name: str | None = None,
                 lowercase: bool = True, special_tokens: str = "drop", device: str = "cpu",
                 precision: str = "fp32"):
        from transformers import AutoConfig, AutoModelForCTC, Wav2Vec2CTCTokenizer

        if not os.path.exists(os.path.join(folder, "config.json")):
            raise FileNotFoundError(f"no HuggingFace model at {folder} (no config.json)")
        config = AutoConfig.from_pretrained(folder, local_files_only=True)
        features = _read_json(os.path.join(folder, "preprocessor_config.json"))
        uses_mask = features.get("return_attention_mask", getattr(config, "feat_extract_norm", "layer") == "layer")
        base_name = os.path.basename(os.path.normpath(folder))
        super().__init__(name or (f"{base_name}-{target_lang}" if target_lang else base_name), device,
                         precision, batch_invariant=bool(uses_mask))
        self.folder, self.target_lang = folder, target_lang
        extra = {"target_lang": target_lang, "ignore_mismatched_sizes": True} if target_lang else {}
        self.module = self.prepare_module(AutoModelForCTC.from_pretrained(folder, local_files_only=True, **extra))
        tokenizer = Wav2Vec2CTCTokenizer.from_pretrained(folder, local_files_only=True, target_lang=target_lang)
        raw_symbols = tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
        if len(raw_symbols) != self.module.config.vocab_size:
            raise ValueError(f"{folder}: the tokenizer has {len(raw_symbols)} tokens but the model outputs "
                             f"{self.module.config.vocab_size}" + ("" if target_lang else
                                                                  " (an MMS model needs target_lang)"))
        self.set_vocabulary(raw_symbols, tokenizer.pad_token_id, tokenizer.word_delimiter_token,
                            lowercase, special_tokens)
        self.sample_rate = int(features.get("sampling_rate", 16000))
        self.normalize_waveform = bool(features.get("do_normalize", True))
        self.frame_shift_ms = config.inputs_to_logits_ratio * 1000 // self.sample_rate

    @torch.no_grad()
    def forward_raw(self, wavs, lengths):
        mask = None
        if self.batch_invariant:
            mask = (torch.arange(wavs.shape[1], device=wavs.device)[None, :] < lengths[:, None]).long()
        logits = self.module(wavs, attention_mask=mask).logits
        frames = self.module._get_feat_extract_output_lengths(lengths).clamp(max=logits.shape[1])
        return logits, frames

    def weights_fingerprint(self) -> str:
        return fingerprint_module(self.module)
