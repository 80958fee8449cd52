"""The Teacher contract: input preparation, canonical symbols, decoding, the cache entry."""

import pytest
import torch

from speechkd.distill.teachers import Teacher, TeacherEnsemble


class RecordingTeacher(Teacher):
    """Records the input it is given; one frame per 20 ms at its own rate, uniform posteriors."""

    def __init__(self, sample_rate=16000, normalize_waveform=False):
        self.name = "recording"
        self.symbols = ["a", "|", "b", "<pad>"]
        self.blank_index = 3
        self.word_delimiter = "|"
        self.frame_shift_ms = 20
        self.sample_rate = sample_rate
        self.normalize_waveform = normalize_waveform
        self.seen = None

    def forward_log_probs(self, wavs, wav_lens):
        self.seen = wavs
        hop = self.sample_rate // 50
        frames = wavs.shape[1] // hop
        log_probs = torch.full((wavs.shape[0], frames, len(self.symbols)), -torch.log(torch.tensor(4.0)))
        return log_probs, torch.round(wav_lens * frames).long()

    def fingerprint(self):
        return "recording-v1"


def test_input_is_resampled_to_the_teachers_rate():
    teacher = RecordingTeacher(sample_rate=8000)
    t = torch.arange(16000) / 16000
    wavs = torch.sin(2 * torch.pi * 440 * t)[None]
    log_probs, frames = teacher.log_probs(wavs, torch.ones(1))
    assert teacher.seen.shape == (1, 8000)
    assert log_probs.shape[1] == 50 and frames.tolist() == [50]  # 1 s at 20 ms
    # a 440 Hz tone survives resampling with its amplitude (no aliasing below 4 kHz)
    assert teacher.seen.abs().max().item() == pytest.approx(1.0, abs=0.05)


def test_waveforms_are_normalized_over_their_valid_samples_only():
    teacher = RecordingTeacher(normalize_waveform=True)
    wavs = torch.zeros(2, 1600)
    wavs[0] = 3.0 + 2.0 * torch.randn(1600, generator=torch.Generator().manual_seed(0))
    wavs[1, :800] = 5.0 + torch.randn(800, generator=torch.Generator().manual_seed(1))
    lens = torch.tensor([1.0, 0.5])
    teacher.log_probs(wavs, lens)
    seen = teacher.seen
    assert seen[0].mean().item() == pytest.approx(0.0, abs=1e-5)
    assert seen[0].std(unbiased=False).item() == pytest.approx(1.0, abs=1e-4)
    assert seen[1, :800].mean().item() == pytest.approx(0.0, abs=1e-5)
    assert seen[1, :800].std(unbiased=False).item() == pytest.approx(1.0, abs=1e-4)
    assert torch.all(seen[1, 800:] == 0)  # padding stays silent


def test_canonical_symbols_decoding_and_cache_entry():
    teacher = RecordingTeacher(sample_rate=8000)
    assert teacher.canonical_symbols == ["a", " ", "b", "<blank>"]
    assert teacher.decode([0, 1, 2, 3, 1, 0]) == "a b a"
    entry = teacher.entry()
    assert entry["fingerprint"] == "recording-v1" and entry["frame_shift_ms"] == 20
    assert entry["tokens"]["symbols"] == ["a", " ", "b", "<blank>"]
    assert entry["input"] == {"sample_rate": 8000, "normalize_waveform": False}


def test_ensemble_names_repeats_and_refuses_a_shared_inventory_it_does_not_have():
    ensemble = TeacherEnsemble([RecordingTeacher(), RecordingTeacher()])
    assert ensemble.names == ["recording", "recording1"]
    with pytest.raises(ValueError, match="not a speechkd model"):
        _ = ensemble.inventory
    with pytest.raises(TypeError, match="experiment folder or a speechkd.distill.Teacher"):
        TeacherEnsemble([42])
