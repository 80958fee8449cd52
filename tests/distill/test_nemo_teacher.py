"""NeMo CTC teacher: a tiny random-weight EncDecCTCModel saved as .nemo, restored, compared with its own output.

Runs only where ``nemo_toolkit[asr]`` is installed (the ``nemo`` extra, not
part of ``make test``: it pulls lightning, hydra and CUDA wheels).
"""

import pytest
import torch

asr = pytest.importorskip("nemo.collections.asr")

LABELS = [" ", "a", "b", "C", "'"]


def tiny_config():
    from omegaconf import OmegaConf

    return OmegaConf.create({
        "sample_rate": 16000,
        "labels": LABELS,
        "preprocessor": {"_target_": "nemo.collections.asr.modules.AudioToMelSpectrogramPreprocessor",
                         "sample_rate": 16000, "features": 16, "n_fft": 512, "window_size": 0.025,
                         "window_stride": 0.01, "normalize": "per_feature", "dither": 0.00001, "pad_to": 16},
        "encoder": {"_target_": "nemo.collections.asr.modules.ConvASREncoder", "feat_in": 16,
                    "activation": "relu", "conv_mask": True,
                    "jasper": [{"filters": 8, "repeat": 1, "kernel": [3], "stride": [2], "dilation": [1],
                                "dropout": 0.0, "residual": False, "separable": False}]},
        "decoder": {"_target_": "nemo.collections.asr.modules.ConvASRDecoder", "feat_in": 8,
                    "num_classes": len(LABELS), "vocabulary": LABELS},
    })


def test_nemo_teacher_equals_the_model_with_its_blank_last(tmp_path):
    from speechkd.distill.pretrained.nemo import NemoCTCTeacher

    torch.manual_seed(0)
    model = asr.models.EncDecCTCModel(cfg=tiny_config()).eval()
    path = str(tmp_path / "tiny.nemo")
    model.save_to(path)
    teacher = NemoCTCTeacher(path)
    assert teacher.frame_shift_ms == 20 and teacher.blank_index == len(LABELS)
    assert teacher.canonical_symbols == [" ", "a", "b", "c", "'", "<blank>"]
    wavs = 0.1 * torch.randn(2, 8000, generator=torch.Generator().manual_seed(1))
    wavs[1, 5000:] = 0
    log_probs, frames = teacher.log_probs(wavs, torch.tensor([1.0, 5000 / 8000]))
    model.preprocessor.featurizer.dither = 0.0
    model.preprocessor.featurizer.pad_to = 0
    with torch.no_grad():
        own, own_frames, _ = model(input_signal=wavs[1:, :5000], input_signal_length=torch.tensor([5000]))
    assert int(frames[1]) == int(own_frames[0])
    n = int(frames[1])
    assert torch.allclose(log_probs[1, :n], own[0, :n].log_softmax(-1), atol=1e-4)
    from speechkd.distill.teachers import as_teacher

    assert as_teacher(path).fingerprint() == teacher.fingerprint()  # a .nemo file is a teachers: entry
