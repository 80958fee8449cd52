import pytest
import torch

from speechkd.models import (
    ARCHITECTURES,
    CRDNNCTC,
    TDNNCTC,
    AcousticModel,
    ConformerCTC,
    StreamingStudent,
    count_parameters,
    spec_augment,
)

SMALL = {
    ConformerCTC: {"d_model": 32, "num_layers": 1, "nhead": 2, "d_ffn": 64, "kernel_size": 7, "conv_channels": 8},
    CRDNNCTC: {"cnn_channels": (8, 8), "rnn_layers": 1, "rnn_neurons": 16, "dnn_neurons": 16},
    TDNNCTC: {"channels": 16, "dilations": (1, 2)},
    StreamingStudent: {"conv_channels": 16, "gru_hidden": 16},
}
LENGTHS = (160, 321, 4799, 16000, 16159)


@pytest.mark.parametrize("cls", list(SMALL), ids=lambda c: c.__name__)
@pytest.mark.parametrize("subsampling, shift_ms", [(2, 20), (4, 40)])
def test_shapes_and_declared_frame_shift(cls, subsampling, shift_ms):
    torch.manual_seed(0)
    model = cls(n_tokens=11, subsampling=subsampling, **SMALL[cls]).eval()
    assert isinstance(model, AcousticModel)
    assert model.frame_shift_ms == shift_ms and model.sample_rate == 16000
    for n in LENGTHS:
        log_probs = model(0.1 * torch.randn(2, n), torch.tensor([1.0, 0.5]))
        expected_frames = -(-(n // 160) // subsampling)
        assert model.output_frames(n) == expected_frames
        assert log_probs.shape == (2, expected_frames, 11)
        assert torch.allclose(log_probs.exp().sum(-1), torch.ones(2, expected_frames), atol=1e-5)
        # declared shift: output frames cover the audio at frame_shift_ms per frame
        assert abs(expected_frames * model.frame_shift_ms - 1000 * n / 16000) < model.frame_shift_ms


def test_default_sizes_are_small():
    sizes = {name: count_parameters(cls(n_tokens=40)) for name, cls in ARCHITECTURES.items()}
    for name in ("conformer", "crdnn", "tdnn"):
        assert 500_000 <= sizes[name] <= 2_000_000, sizes
    assert 50_000 <= sizes["student"] <= 200_000, sizes


def test_output_lengths_absolute():
    model = TDNNCTC(n_tokens=5, **SMALL[TDNNCTC])
    lens = torch.tensor([1.0, 4799 / 16000])
    assert model.output_lengths(lens, 16000).tolist() == [model.output_frames(16000),
                                                          model.output_frames(4799)]


def test_padding_does_not_change_the_output():
    torch.manual_seed(0)
    wav = 0.1 * torch.randn(1, 8000)
    batch = torch.cat([wav, torch.zeros(1, 8000)], dim=1)
    for cls, sizes in SMALL.items():
        model = cls(n_tokens=7, **sizes).eval()
        alone = model(wav, torch.ones(1))[0]
        padded = model(torch.cat([batch, 0.1 * torch.randn(1, 16000)]), torch.tensor([0.5, 1.0]))
        padded = padded[0, : alone.shape[0]]
        assert torch.allclose(padded, alone, atol=1e-5), cls.__name__


@pytest.mark.parametrize("chunks", [(8, 8, 8, 8, 8, 9), (1, 2, 3, 5, 7, 11, 13, 7), (49,)])
def test_student_streaming_equals_whole(chunks):
    torch.manual_seed(0)
    model = StreamingStudent(n_tokens=9, conv_layers=3, subsampling=4).eval()
    feats = torch.randn(2, sum(chunks), 80)
    whole = model.encode(feats, torch.ones(2))
    state, outputs, start = model.init_state(2), [], 0
    for size in chunks:
        logits, state = model.forward_chunk(feats[:, start: start + size], state)
        outputs.append(logits)
        start += size
    streamed = torch.cat(outputs, dim=1)
    assert streamed.shape == whole.shape == (2, model.output_frames(sum(chunks) * 160), 9)
    assert torch.allclose(streamed, whole, atol=1e-5)


def test_fit_normalizer_from_audio_and_features():
    model = StreamingStudent(n_tokens=5, **SMALL[StreamingStudent])
    assert not model.normalizer_fitted
    wavs = 0.1 * torch.randn(3, 8000)
    lens = torch.tensor([1.0, 0.8, 0.5])
    model.fit_normalizer([(wavs, lens)])
    assert model.normalizer_fitted
    feats = model.featurize(wavs, lens)
    valid = feats[0]
    assert abs(float(valid.mean())) < 0.5 and feats[2, 25:].abs().sum() == 0
    other = StreamingStudent(n_tokens=5, **SMALL[StreamingStudent])
    other.fit_normalizer([(model.logmel(wavs), lens)])
    assert torch.allclose(other.normalizer.mean, model.normalizer.mean)
    reloaded = StreamingStudent(n_tokens=5, **SMALL[StreamingStudent])
    reloaded.load_state_dict(model.state_dict())
    assert reloaded.normalizer_fitted


def test_too_short_input_is_refused():
    model = TDNNCTC(n_tokens=5, **SMALL[TDNNCTC])
    with pytest.raises(ValueError, match="shorter than one feature hop"):
        model(torch.zeros(1, 100), torch.ones(1))


def test_spec_augment_is_seeded_and_stays_in_bounds():
    feats = torch.randn(3, 100, 80) + 5.0
    lens = torch.tensor([1.0, 0.5, 0.3])
    a = spec_augment(feats, lens, generator=torch.Generator().manual_seed(1))
    b = spec_augment(feats, lens, generator=torch.Generator().manual_seed(1))
    c = spec_augment(feats, lens, generator=torch.Generator().manual_seed(2))
    assert torch.equal(a, b) and not torch.equal(a, c)
    masked = a == 0
    assert masked.any() and torch.equal(a[~masked], feats[~masked])
    assert masked.float().mean() < 0.5
    time_masked = masked.all(dim=2)  # whole frames masked = time masks
    assert not time_masked[1, 50:].any() and not time_masked[2, 30:].any()
    assert time_masked[0].sum() <= 2 * 20
