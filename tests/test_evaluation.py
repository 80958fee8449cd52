"""The fused ensemble is decoded through one code path, from a cache or with the teachers online."""

import pytest
import speechbrain as sb
import torch
from speechbrain.dataio.dataset import DynamicItemDataset

from speechkd.decoding import ctc_greedy
from speechkd.distill.teachers import Teacher, TeacherEnsemble, build_cache
from speechkd.evaluation import fused_error_rates
from speechkd.text import TokenInventory

INVENTORY = TokenInventory(["<blank>", " ", "a", "b", "c"])
SAMPLES = {"u0": 4800, "u1": 3520, "u2": 2880, "u3": 4000, "u4": 1600}


class FramewiseTeacher(Teacher):
    """A fixed random linear map of each frame of samples to log-probabilities (padding-independent)."""

    def __init__(self, name, frame_shift_ms, seed):
        self.name, self.frame_shift_ms = name, frame_shift_ms
        self.inventory = INVENTORY
        self.symbols = list(INVENTORY.symbols)
        self.hop = 16 * frame_shift_ms
        generator = torch.Generator().manual_seed(seed)
        self.weight = torch.randn(self.hop, len(self.symbols), generator=generator) * 0.3
        self.weight[:, 0] += 0.02  # blank a little more likely, as in a CTC model

    def forward_log_probs(self, wavs, wav_lens):
        frames = torch.round(wav_lens * wavs.shape[1]).long() // self.hop
        n = wavs.shape[1] // self.hop
        log_probs = torch.log_softmax(wavs[:, : n * self.hop].reshape(wavs.shape[0], n, self.hop) @ self.weight, -1)
        return log_probs, frames

    def fingerprint(self):
        return f"framewise-{self.name}"


def dataset():
    generator = torch.Generator().manual_seed(0)
    waves = {utt: torch.randn(n, generator=generator) for utt, n in SAMPLES.items()}
    data = {utt: {"wrd": "ab c", "lang": "en", "domain": "clean"} for utt in SAMPLES}
    ds = DynamicItemDataset(data)

    @sb.utils.data_pipeline.takes("id")
    @sb.utils.data_pipeline.provides("sig")
    def audio(utt):
        return waves[utt]

    ds.add_dynamic_item(audio)
    ds.set_output_keys(["id", "sig", "wrd", "lang", "domain"])
    return ds


def by_hand_average(ensemble, ds):
    """Average of the fp16-rounded teachers, the 10 ms one pooled in probability to 20 ms, greedy-decoded."""
    hyps = {}
    for utt in SAMPLES:
        wav = ds[ds.data_ids.index(utt)]["sig"][None]
        fine, coarse = (t.log_probs(wav, torch.ones(1))[0][0].half().float().exp() for t in ensemble.teachers)
        n = coarse.shape[0]
        pooled = torch.stack([fine[2 * t : 2 * t + 2].mean(0) for t in range(n)])
        fused = (pooled / pooled.sum(-1, keepdim=True) + coarse / coarse.sum(-1, keepdim=True)) / 2
        hyps[utt] = INVENTORY.decode(ctc_greedy(fused[None], [n])[0])
    return hyps


@pytest.mark.parametrize("strategy", ["average", "geometric", "confidence"])
def test_cached_and_online_ensemble_decode_alike(tmp_path, strategy):
    ensemble = TeacherEnsemble([FramewiseTeacher("fine", 10, 1), FramewiseTeacher("coarse", 20, 2)])
    ds = dataset()
    cache = build_cache(ensemble, {"test": ds}, str(tmp_path / "cache"), k=0,
                        features={"sample_rate": 16000}, batch_size=2, dev_split=None)
    cached = fused_error_rates(cache, INVENTORY, ds, strategy, batch_size=3)
    online = fused_error_rates(ensemble, INVENTORY, ds, strategy, batch_size=2)
    cached_hyps = {u.utt_id: u.hyp for u in cached.utterances}
    online_hyps = {u.utt_id: u.hyp for u in online.utterances}
    assert cached_hyps == online_hyps
    assert set(cached_hyps) == set(SAMPLES)
    assert any(cached_hyps.values())  # the fixture decodes to something
    assert cached.summary()["wer"] == online.summary()["wer"]
    if strategy == "average":
        assert cached_hyps == by_hand_average(ensemble, ds)


def test_online_ensemble_refuses_strategies_it_has_no_inputs_for():
    ensemble = TeacherEnsemble([FramewiseTeacher("fine", 10, 1), FramewiseTeacher("coarse", 20, 2)])
    with pytest.raises(ValueError, match="dev WER"):
        fused_error_rates(ensemble, INVENTORY, dataset(), "weighted", batch_size=2)
    with pytest.raises(ValueError, match="teacher_wer"):
        fused_error_rates(ensemble, INVENTORY, dataset(), "best", batch_size=2)
    weighted = fused_error_rates(ensemble, INVENTORY, dataset(), "weighted",
                                 strategy_options={"weights": [1.0, 1.0]}, batch_size=2)
    average = fused_error_rates(ensemble, INVENTORY, dataset(), "average", batch_size=2)
    assert [u.hyp for u in weighted.utterances] == [u.hyp for u in average.utterances]


def test_the_rtf_is_timed_on_utterances_spread_over_the_set():
    """measure_rtf's subset: every k-th utterance, at least the asked audio, every language of a
    manifest grouped by language; durations from the static data (no audio is read)."""
    from speechkd.evaluation import rtf_subset

    rows = {f"{lang}-{i}": {"duration": 2.0, "lang": lang} for lang in ("en", "es") for i in range(10)}
    dataset = DynamicItemDataset(rows)
    subset = rtf_subset(dataset, 10.0)
    chosen = list(subset.data_ids)
    assert chosen == list(rows)[::4]  # 40 s of audio, k = 4: five utterances, 10 s
    assert {rows[utt]["lang"] for utt in chosen} == {"en", "es"}
    assert sum(rows[utt]["duration"] for utt in chosen) >= 10.0
    assert list(rtf_subset(dataset, 9.0).data_ids) == chosen  # k = 4 still gives 10 s >= 9
    assert list(rtf_subset(dataset, 11.0).data_ids) == list(rows)[::3]  # k = 3 is the largest with >= 11 s
    assert list(rtf_subset(dataset, None).data_ids) == list(rows)
    assert list(rtf_subset(dataset, 1000.0).data_ids) == list(rows)
