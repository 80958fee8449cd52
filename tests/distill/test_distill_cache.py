"""Posterior cache: round trip, index, fingerprints, resume after a kill."""

import json

import numpy as np
import pytest
import torch
from distill_helpers import SYMBOLS, meta_for, random_log_probs

from speechkd.distill.cache import (
    LOG_PROB_FLOOR,
    PosteriorCache,
    PosteriorCacheWriter,
    fingerprint_module,
)

V = len(SYMBOLS)


def utterances(seed=0, n=5):
    g = torch.Generator().manual_seed(seed)
    out = {}
    for i in range(n):
        frames = 6 + 3 * i
        out[f"spk-{i:03d}"] = [
            random_log_probs(g, frames, V, dtype=torch.float32).numpy(),
            random_log_probs(g, (frames + 1) // 2, V, dtype=torch.float32).numpy(),
        ]
    return out


def test_round_trip_topk_values_ids_and_index(tmp_path):
    data = utterances()
    meta = meta_for(SYMBOLS, shifts=(10, 20), k=4)
    with PosteriorCacheWriter(tmp_path, meta, shard_utts=2) as writer:
        for i, (utt, per_teacher) in enumerate(data.items()):
            writer.add(
                utt, per_teacher, errors_per_teacher=[{"wer": 10.0 * i, "cer": 1.0}, (5.0, 2.0)]
            )
        writer.set_dev_wer({"t0": 12.5, "t1": 20.0})
    assert sorted(p.name for p in (tmp_path / "shards").glob("*.json")) == [
        "00000.json",
        "00001.json",
        "00002.json",
    ]

    cache = PosteriorCache.open(tmp_path, expect=meta)
    assert len(cache) == 5 and cache.frame_shifts_ms == [10, 20]
    for utt, per_teacher in data.items():
        got = cache.get(utt)
        assert cache.frames(utt) == [p.shape[0] for p in per_teacher]
        for (values, ids), full in zip(got, per_teacher):
            assert (
                isinstance(values, np.memmap)
                and values.dtype == np.float16
                and ids.dtype == np.int16
            )
            expected_ids = np.argsort(-full, -1)[:, :4]
            assert np.array_equal(ids, expected_ids)
            exact = np.take_along_axis(full, expected_ids, -1)
            assert np.all(
                np.abs(values.astype(np.float64) - exact) <= np.abs(exact) * 2**-11 + 1e-7
            )
    assert cache.teacher_error("spk-003").tolist() == [30.0, 5.0]
    assert cache.teacher_error("spk-003", "cer").tolist() == [1.0, 2.0]
    assert cache.dev_wer_list() == [12.5, 20.0]
    with pytest.raises(KeyError, match="not in the posterior cache"):
        cache.get("nope")


def test_full_distribution_cache_stores_no_ids(tmp_path):
    data = utterances(n=2)
    meta = meta_for(SYMBOLS, shifts=(10, 20), k=0)
    with PosteriorCacheWriter(tmp_path, meta) as writer:
        for utt, per_teacher in data.items():
            writer.add(utt, per_teacher)
    assert not list((tmp_path / "shards").glob("*.ids.npy"))
    values, ids = PosteriorCache.open(tmp_path).get("spk-001")[0]
    assert values.shape == (9, V) and np.array_equal(ids[3], np.arange(V))
    assert np.allclose(values.astype(np.float32), data["spk-001"][0], atol=1e-2)


def test_collate_pads_teachers_at_their_own_rates(tmp_path):
    data = utterances(n=3)
    meta = meta_for(SYMBOLS, shifts=(10, 20), k=3)
    with PosteriorCacheWriter(tmp_path, meta) as writer:
        for utt, per_teacher in data.items():
            writer.add(utt, per_teacher)
    cache = PosteriorCache.open(tmp_path)
    batch = cache.collate(["spk-002", "spk-000"])
    assert batch["log_probs"].shape == (2, 2, 12, 3) and batch["log_probs"].dtype == torch.float32
    assert batch["ids"].dtype == torch.long
    assert batch["frames"].tolist() == [[12, 6], [6, 3]]
    assert torch.isnan(batch["teacher_wer"]).all()
    assert (
        batch["log_probs"][1, 1, 3:, 0].eq(0).all()
        and batch["log_probs"][1, 1, 3:, 1:].eq(LOG_PROB_FLOOR).all()
    )
    assert torch.equal(
        batch["ids"][0, 0, :12], torch.from_numpy(cache.get("spk-002")[0][1].astype(np.int64))
    )


def test_stale_fingerprint_is_refused_naming_the_difference(tmp_path):
    meta = meta_for(SYMBOLS, shifts=(10, 20), k=4, names=["crdnn", "conformer"])
    with PosteriorCacheWriter(tmp_path, meta) as writer:
        writer.add("u", [np.log(np.full((4, V), 1 / V)), np.log(np.full((2, V), 1 / V))])
    asked = json.loads(json.dumps(meta))
    asked["teachers"][0]["fingerprint"] = "c3d4"
    with pytest.raises(
        ValueError,
        match=r"teacher 'crdnn' checkpoint fingerprint differs: cache fp-crdnn vs asked c3d4.*rebuild",
    ):
        PosteriorCache.open(tmp_path, expect=asked)
    asked = json.loads(json.dumps(meta))
    asked["features"]["domain"] = "telephone"
    asked["k"] = 8
    with pytest.raises(
        ValueError, match=r"feature setting 'domain' differs.*'k' differs: cache 4 vs asked 8"
    ):
        PosteriorCache.open(tmp_path, expect=asked)
    with pytest.raises(ValueError, match="checkpoint fingerprint differs"):
        PosteriorCacheWriter(
            tmp_path,
            {
                **meta,
                "teachers": [{**meta["teachers"][0], "fingerprint": "x"}, meta["teachers"][1]],
            },
        )
    assert PosteriorCache.open(tmp_path, expect={"teachers": meta["teachers"]}).k == 4


def test_killed_write_resumes_after_the_last_committed_shard(tmp_path):
    data = utterances(n=5)
    meta = meta_for(SYMBOLS, shifts=(10, 20), k=4)
    writer = PosteriorCacheWriter(tmp_path, meta, shard_utts=2)
    for utt, per_teacher in data.items():
        writer.add(utt, per_teacher)
    # "killed" here: the 5th utterance was only in memory; a half-written shard lies around
    del writer
    (tmp_path / "shards" / "00002.t0.values.npy.tmp").write_bytes(b"\x93NUMPY half")
    (tmp_path / "shards" / "00002.t0.values.npy").write_bytes(b"orphan, its json never written")
    with pytest.raises(ValueError, match="incomplete"):
        PosteriorCache.open(tmp_path)
    partial = PosteriorCache.open(tmp_path, allow_incomplete=True)
    assert len(partial) == 4

    writer = PosteriorCacheWriter(tmp_path, meta, shard_utts=2)
    assert writer.done_ids == {"spk-000", "spk-001", "spk-002", "spk-003"}
    assert not list((tmp_path / "shards").glob("*.tmp"))
    added = [writer.add(utt, per_teacher) for utt, per_teacher in data.items()]
    assert added == [False, False, False, False, True]
    writer.close()
    cache = PosteriorCache.open(tmp_path, expect=meta)
    assert len(cache) == 5
    _values, ids = cache.get("spk-004")[1]
    assert np.array_equal(ids, np.argsort(-data["spk-004"][1], -1)[:, :4])


def test_writer_rejects_bad_input(tmp_path):
    meta = meta_for(SYMBOLS, shifts=(10,), k=4)
    writer = PosteriorCacheWriter(tmp_path, meta)
    with pytest.raises(ValueError, match="expected \\(frames>0, 12\\)"):
        writer.add("u", [np.zeros((3, 5))])
    with pytest.raises(ValueError, match="from 2 teachers, the cache has 1"):
        writer.add("u", [np.zeros((3, V)), np.zeros((3, V))])
    bad = np.zeros((3, V))
    bad[1, 2] = np.nan
    with pytest.raises(
        ValueError, match="utterance u, teacher 't0': log-probabilities contain NaN"
    ):
        writer.add("u", [bad])


def test_fingerprint_module_is_deterministic_and_tracks_weights():
    torch.manual_seed(0)
    a = torch.nn.Linear(4, 3)
    b = torch.nn.Linear(4, 3)
    b.load_state_dict(a.state_dict())
    assert fingerprint_module(a) == fingerprint_module(b) and len(fingerprint_module(a)) == 16
    with torch.no_grad():
        b.bias[0] += 1e-6
    assert fingerprint_module(a) != fingerprint_module(b)


def test_cache_entry_of_a_teacher_records_weights_shift_and_canonical_inventory():
    """A teacher's ``meta["teachers"]`` record (what a cache fingerprints it by)."""
    from speechkd.distill.cache import symbols_fingerprint
    from speechkd.distill.teachers import Teacher

    class LinearTeacher(Teacher):
        def __init__(self, module):
            self.module, self.name, self.frame_shift_ms = module, "lin", 40
            self.symbols, self.blank_index = ["a", "b", "_"], 2  # blank last, as some toolkits do

        def forward_log_probs(self, wavs, wav_lens):
            raise NotImplementedError

        def fingerprint(self):
            return fingerprint_module(self.module)

    torch.manual_seed(0)
    teacher = LinearTeacher(torch.nn.Linear(4, 3))
    canonical = ["a", "b", "<blank>"]
    assert teacher.entry() == {
        "name": "lin",
        "class": "LinearTeacher",
        "fingerprint": fingerprint_module(teacher.module),
        "frame_shift_ms": 40,
        "tokens": {"symbols": canonical, "fingerprint": symbols_fingerprint(canonical)},
    }
