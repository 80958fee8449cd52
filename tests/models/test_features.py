import warnings

import numpy as np
import pytest
import torch

from speechkd.models import GlobalNormalizer, LogMelFilterbank


def test_frame_count_and_shape():
    fbank = LogMelFilterbank()
    assert (fbank.win_length, fbank.hop_length, fbank.n_fft) == (400, 160, 512)
    assert fbank.context_samples == 240
    for n in (160, 399, 16000, 16159):
        feats = fbank(torch.randn(2, n))
        assert feats.shape == (2, n // 160, 80) == (2, fbank.num_frames(n), 80)


def test_matches_torch_stft_power():
    """The conv1d DFT equals torch.stft on the same causal frames."""
    fbank = LogMelFilterbank(log_floor=1e-12)
    wav = torch.randn(1, 4000, dtype=torch.float32)
    # torch.stft centres the 400-sample window in the 512-sample frame: shift by 56
    padded = torch.nn.functional.pad(wav, (240 + 56, 56))
    stft = torch.stft(padded, n_fft=512, hop_length=160, win_length=400, center=False,
                      window=torch.hann_window(400, periodic=True), return_complex=True)
    power = (stft.abs() ** 2).transpose(1, 2)  # (1, frames, 257)
    expected = torch.log(torch.clamp(power @ fbank.mel_matrix, min=1e-12))
    got = fbank(wav)
    assert got.shape == expected.shape
    assert torch.allclose(got, expected, atol=1e-3, rtol=1e-4)


def test_fft_and_conv_paths_agree():
    wav = 0.3 * torch.randn(2, 12345)
    fast, exportable = LogMelFilterbank(use_fft=True), LogMelFilterbank(use_fft=False)
    assert torch.allclose(fast(wav), exportable(wav), atol=1e-4)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(fast, (wav,))
    graph = str(traced.inlined_graph)
    assert "aten::_convolution" in graph and "fft" not in graph


def test_chunked_features_equal_whole():
    fbank = LogMelFilterbank()
    wav = torch.randn(1, 16000 + 37)
    whole = fbank(wav)
    context = torch.zeros(1, fbank.context_samples)
    stream = torch.cat([context, wav], dim=1)
    chunks, start = [], 0
    for n_frames in (3, 10, 1, 50, 36):  # 100 frames
        new = n_frames * fbank.hop_length
        chunk = stream[:, start: start + fbank.context_samples + new]
        chunks.append(fbank(chunk, pad=False))
        start += new
    assert torch.allclose(torch.cat(chunks, dim=1), whole, atol=1e-5)


def test_normalizer_fit_uses_valid_frames_only():
    norm = GlobalNormalizer(n_mels=3)
    assert not norm.is_fitted
    feats = torch.tensor([[[1.0, 2, 3], [3, 4, 5], [100, 100, 100]]])
    norm.fit([(feats, torch.tensor([2 / 3]))])
    assert norm.is_fitted
    assert torch.allclose(norm.mean, torch.tensor([2.0, 3, 4]))
    assert torch.allclose(norm.std, torch.ones(3))
    state = norm.state_dict()
    assert set(state) == {"mean", "std", "fitted"}
    fresh = GlobalNormalizer(n_mels=3)
    fresh.load_state_dict(state)
    assert fresh.is_fitted and torch.allclose(fresh(feats), norm(feats))


def test_onnx_export_parity(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    fbank = LogMelFilterbank().eval()
    path = tmp_path / "fbank.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TracerWarnings of the legacy exporter
        torch.onnx.export(
            fbank, (torch.randn(1, 16000),), str(path), opset_version=17, dynamo=False,
            input_names=["wavs"], output_names=["feats"],
            dynamic_axes={"wavs": {0: "batch", 1: "samples"}, "feats": {0: "batch", 1: "frames"}},
        )
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for shape in ((2, 16000), (3, 8123)):
        wav = 0.3 * torch.randn(*shape)
        expected = fbank(wav).numpy()
        got = session.run(None, {"wavs": wav.numpy()})[0]
        assert got.shape == expected.shape
        np.testing.assert_allclose(got, expected, atol=1e-4, rtol=1e-4)



@pytest.mark.parametrize("name", ["StreamingStudent", "TDNNCTC", "CRDNNCTC", "ConformerCTC"])
def test_a_telephone_band_front_end_does_not_hear_above_f_max(name):
    """f_max=3800: a loud 6 kHz tone added to noise below 3.6 kHz leaves the log-mel features
    as they were (up to window leakage); the default 8 kHz front-end hears it."""
    from speechkd import models

    noise = torch.randn(16000, generator=torch.Generator().manual_seed(0))
    spectrum = torch.fft.rfft(noise)
    spectrum[torch.fft.rfftfreq(16000, 1 / 16000) > 3600] = 0
    low = 0.1 * torch.fft.irfft(spectrum, n=16000)
    high = low + 0.3 * torch.sin(2 * torch.pi * 6000 * torch.arange(16000) / 16000)
    lens = torch.ones(1)
    for f_max, hears in ((3800.0, False), (None, True)):
        model = getattr(models, name)(n_tokens=5, f_max=f_max).eval()
        change = (model.featurize(low[None], lens) - model.featurize(high[None], lens))[0, 3:].abs()
        assert (change.max() > 5.0) if hears else (change.max() < 0.2 and change.mean() < 0.01), change.max()
