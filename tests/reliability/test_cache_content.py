"""Issue 11, items 7 and 8: what a posterior cache holds is checked, and the KD math survives its edge cases."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from distill.distill_helpers import SYMBOLS, meta_for, random_log_probs

from speechkd.distill.cache import (
    CacheIntegrityError,
    PosteriorCache,
    PosteriorCacheWriter,
    _atomic_npy,
    _atomic_sealed_json,
    read_sealed_json,
)
from speechkd.distill.losses import teacher_batch_from_log_probs, temper, topk_kl
from speechkd.distill.target import TeacherTarget

V = len(SYMBOLS)
CONFIDENT = np.array([0.99] + [0.0033] * 3 + [1.25e-6] * 8)  # the frame: 12 tokens, k = 4


def write_cache(folder, per_utt, k=4, shard_utts=2, dev_wer=(12.5,)):
    """A one-teacher cache of ``{utt: (frames, V) log-probs}``; returns its meta."""
    meta = meta_for(SYMBOLS, shifts=(20,), k=k)
    with PosteriorCacheWriter(folder, meta, shard_utts=shard_utts) as writer:
        for utt, lp in per_utt.items():
            writer.add(utt, [lp], errors_per_teacher=[(10.0, 5.0)])
        writer.set_dev_wer(list(dev_wer))
    return meta


def random_cache(folder, n_utts=4):
    g = torch.Generator().manual_seed(0)
    return write_cache(folder, {f"u{i}": random_log_probs(g, 5 + i, V, dtype=torch.float32)
                                for i in range(n_utts)})


def confident_log_probs(frames=3):
    p = CONFIDENT / CONFIDENT.sum()
    return torch.tensor(np.log(p), dtype=torch.float32).expand(frames, V).clone()


# --------------------------------------------------------------------------- item 8: rest mass
def test_rest_mass_of_a_confident_frame_survives_fp16_rounding(tmp_path):
    write_cache(tmp_path, {"u": confident_log_probs()})
    cache = PosteriorCache.open(tmp_path)
    target = TeacherTarget(cache, SYMBOLS, 20)
    tau = 4.0
    got = target(cache.collate(["u"]), torch.tensor([3]), 3, temperature=tau, dtype=torch.float64)
    tempered = CONFIDENT ** (1 / tau) / (CONFIDENT ** (1 / tau)).sum()
    true_rest = tempered[4:].sum()
    assert true_rest == pytest.approx(0.1348, abs=1e-4)
    rest_bucket = got[0, :, 4:V].sum(-1)  # the 8 tokens outside the cached top-4
    assert torch.allclose(rest_bucket, torch.full((3,), true_rest, dtype=torch.float64), rtol=2e-3)
    # without the stored rest mass (a teacher batch of values alone) the bucket is off by >= 15 %
    lossy = {key: value for key, value in cache.collate(["u"]).items() if key != "rest_log_probs"}
    off = target(lossy, torch.tensor([3]), 3, temperature=tau, dtype=torch.float64)[0, :, 4:V].sum(-1)
    assert abs(off[0].item() - true_rest) / true_rest > 0.15


def test_geometric_fusion_at_tau_2_matches_the_full_distributions(tmp_path):
    g = torch.Generator().manual_seed(4)
    other = torch.log_softmax(torch.randn(3, V, generator=g) * 4, -1)
    meta = meta_for(SYMBOLS, shifts=(20, 20), k=4)
    with PosteriorCacheWriter(tmp_path, meta) as writer:
        writer.add("u", [confident_log_probs(), other])
    cache = PosteriorCache.open(tmp_path)
    got = TeacherTarget(cache, SYMBOLS, 20, strategy="geometric")(
        cache.collate(["u"]), torch.tensor([3]), 3, temperature=2.0, dtype=torch.float64)[0, :, :V]
    # reference: each teacher's top-4 kept, its true rest mass spread evenly, tempered, normalized geometric mean
    dense = []
    for lp in (confident_log_probs().double(), other.double()):
        p = lp.exp()
        top = torch.topk(p, 4, -1).indices
        kept = torch.zeros_like(p, dtype=torch.bool).scatter_(-1, top, True)
        rest = p.masked_fill(kept, 0).sum(-1, keepdim=True) / (V - 4)
        dense.append(temper(torch.where(kept, p, rest), 2.0))
    geometric = torch.softmax((dense[0].log() + dense[1].log()) / 2, -1)
    assert torch.allclose(got, geometric, rtol=5e-3, atol=1e-6)


# --------------------------------------------------------------------------- item 8: KL edge cases
def test_student_minus_inf_log_prob_gives_no_nan():
    target = torch.tensor([[[0.7, 0.3, 0.0, 0.0, 0.0]]], dtype=torch.float64)  # V_s = 4 + OOV column
    logits = torch.tensor([[[1.0, 0.5, float("-inf"), 0.0]]], dtype=torch.float64, requires_grad=True)
    for k in (2, 4):
        student = F.log_softmax(logits, -1)
        kl = topk_kl(target, student, k)
        s = student.detach().exp()[0, 0]
        expected = 0.7 * np.log(0.7 / s[0].item()) + 0.3 * np.log(0.3 / s[1].item())
        assert kl.item() == pytest.approx(expected, abs=1e-12)
        kl.sum().backward()
        assert torch.isfinite(logits.grad[..., [0, 1, 3]]).all()
        logits.grad = None


def test_renormalize_keeps_the_kl_non_negative_when_a_teacher_top_k_is_all_oov():
    teacher_symbols = ["<blank>", "a", "b", "x", "y"]
    one = torch.log(torch.tensor([0.6, 0.3, 0.1, 0.0, 0.0]))
    all_oov = torch.log(torch.tensor([0.0, 0.0, 0.0, 0.5, 0.5]))  # no mass at all on the student's tokens
    teachers = [one[None, None], all_oov[None, None]]
    batch = teacher_batch_from_log_probs(teachers, [torch.ones(1), torch.ones(1)], 2)
    source = type("Teachers", (), {"teacher_names": ["t0", "t1"], "symbols": [teacher_symbols] * 2,
                                   "frame_shifts_ms": [20, 20], "k": 2, "dev_wer_list": lambda self: None})()
    target = TeacherTarget(source, ["<blank>", "a", "b"], 20, oov_mode="renormalize")
    q = target(batch, torch.tensor([1]), 1, dtype=torch.float64)
    assert q.sum().item() == pytest.approx(1.0, abs=1e-6)
    # t0: top-2 kept, its rest 0.1 spread over b, x, y, then x and y dropped and renormalized;
    # t1 says nothing about the student's tokens: uniform. The average of the two:
    t0 = torch.tensor([0.6, 0.3, 0.1 / 3], dtype=torch.float64) / (0.9 + 0.1 / 3)
    assert torch.allclose(q[0, 0, :3], (t0 + 1 / 3) / 2, atol=1e-3)
    student = torch.log(torch.tensor([[[0.9, 0.05, 0.05]]], dtype=torch.float64))
    assert topk_kl(q, student, target.k).item() > 0


def test_a_kl_k_other_than_the_cache_width_is_refused(tmp_path):
    random_cache(tmp_path)
    cache = PosteriorCache.open(tmp_path)
    for k in (2, 8):
        with pytest.raises(ValueError, match=rf"KL's k \({k}\) differs from the teachers' cache width k = 4"):
            TeacherTarget(cache, SYMBOLS, 20, k=k)
    target = TeacherTarget(cache, SYMBOLS, 20)
    online_full = teacher_batch_from_log_probs([random_log_probs(torch.Generator(), 1, 5, V)], [torch.ones(1)], 0)
    with pytest.raises(ValueError, match="has 12 columns per frame, the target was built for k = 4"):
        target(online_full, torch.tensor([5]), 5)


def test_nan_or_inf_teacher_values_are_refused_naming_the_utterance(tmp_path):
    lp = random_log_probs(torch.Generator().manual_seed(1), 4, V, dtype=torch.float32)
    writer = PosteriorCacheWriter(tmp_path, meta_for(SYMBOLS, shifts=(20,), k=4))
    for bad in (float("nan"), float("inf")):
        broken = lp.clone()
        broken[2, 3] = bad
        with pytest.raises(ValueError, match="utterance spk1-007, teacher 't0': log-probabilities contain NaN"):
            writer.add("spk1-007", [broken])
    batch = teacher_batch_from_log_probs([torch.stack([lp, lp])], [torch.ones(2), torch.ones(2)], 4)
    batch["log_probs"][1, 0, 2, 0] = float("nan")
    batch["utt_ids"] = ["good-1", "bad-2"]
    target = TeacherTarget(type("T", (), {"teacher_names": ["t0"], "symbols": [SYMBOLS], "frame_shifts_ms": [20],
                                          "k": 4, "dev_wer_list": lambda self: None})(), SYMBOLS, 20)
    with pytest.raises(ValueError, match="utterance bad-2: log-probabilities contain NaN"):
        target(batch, torch.tensor([4, 4]), 4)


# --------------------------------------------------------------------------- item 7: shard content
def shard_file(folder, name="00001.t0.values.npy"):
    return Path(folder) / "shards" / name


@pytest.mark.parametrize("damage", ["zeroed", "flipped_bit", "truncated", "random_bytes", "deleted"])
def test_damaged_shard_is_refused_at_open_naming_the_file(tmp_path, damage):
    random_cache(tmp_path)
    path = shard_file(tmp_path)
    data = bytearray(path.read_bytes())
    if damage == "zeroed":
        values = np.load(path)
        np.save(path, np.zeros_like(values))  # every frame's top-4 sums to 4
    elif damage == "flipped_bit":
        data[-3] ^= 0x04
        path.write_bytes(bytes(data))
    elif damage == "truncated":
        path.write_bytes(bytes(data[: len(data) // 2]))
    elif damage == "random_bytes":
        path.write_bytes(np.random.default_rng(0).bytes(len(data)))
    else:
        path.unlink()
    with pytest.raises(CacheIntegrityError, match=r"00001\.t0\.values\.npy"):
        PosteriorCache.open(tmp_path)


@pytest.mark.parametrize("name", ["00000.t0.rest.npy", "00001.t0.ids.npy"])
def test_rest_and_id_files_are_checked_too(tmp_path, name):
    random_cache(tmp_path)
    path = shard_file(tmp_path, name)
    array = np.load(path)
    np.save(path, np.zeros_like(array) + 1)
    with pytest.raises(CacheIntegrityError, match=name.replace(".", r"\.")):
        PosteriorCache.open(tmp_path)


def reseal(folder, name, array):
    """Rewrite a shard array and its checksum, as a buggy writer would: only value sanity can tell."""
    path = shard_file(folder, name)
    shard_json = path.parent / f"{name[:5]}.json"
    shard = read_sealed_json(shard_json)
    shard["files"][name] = _atomic_npy(path, array)
    _atomic_sealed_json(shard_json, {k: v for k, v in shard.items() if k != "sha256"})


def test_insane_values_with_valid_checksums_are_refused_naming_the_file(tmp_path):
    random_cache(tmp_path)
    values = np.load(shard_file(tmp_path))
    reseal(tmp_path, "00001.t0.values.npy", np.zeros_like(values))
    with pytest.raises(CacheIntegrityError, match=r"00001\.t0\.values\.npy: frame 0 holds probability mass 4\.0"):
        PosteriorCache.open(tmp_path)
    random_cache(tmp_path / "b")
    positive = np.load(shard_file(tmp_path / "b")).copy()
    positive[1, 0] = 0.5
    reseal(tmp_path / "b", "00001.t0.values.npy", positive)
    with pytest.raises(CacheIntegrityError, match=r"values\.npy: holds 0\.5, not a log-probability"):
        PosteriorCache.open(tmp_path / "b")
    random_cache(tmp_path / "c")
    ids = np.load(shard_file(tmp_path / "c", "00000.t0.ids.npy")).copy()
    ids[0, 0] = V
    reseal(tmp_path / "c", "00000.t0.ids.npy", ids)
    with pytest.raises(CacheIntegrityError, match=r"00000\.t0\.ids\.npy: token ids outside 0\.\.11"):
        PosteriorCache.open(tmp_path / "c")


def test_edited_dev_wer_and_index_are_refused(tmp_path):
    random_cache(tmp_path)
    errors_path = tmp_path / "teacher_errors.json"
    errors = json.loads(errors_path.read_text())
    assert errors["dev_wer"] == {"t0": 12.5}
    errors["dev_wer"]["t0"] = 1.0
    errors_path.write_text(json.dumps(errors))
    with pytest.raises(CacheIntegrityError, match="teacher_errors.json: content does not match its sha256"):
        PosteriorCache.open(tmp_path)
    random_cache(tmp_path / "b")
    index_path = tmp_path / "b" / "index.json"
    index_path.write_text(index_path.read_text().replace('"u1": [[0, 5, 6]]', '"u1": [[0, 5, 60]]'))
    with pytest.raises(CacheIntegrityError, match="index.json: content does not match its sha256"):
        PosteriorCache.open(tmp_path / "b")


def test_cache_of_the_previous_format_is_refused_with_a_rebuild_message(tmp_path):
    random_cache(tmp_path)
    meta_path = tmp_path / "meta.json"
    meta = json.loads(meta_path.read_text())
    meta["format_version"] = 1
    meta_path.write_text(json.dumps(meta))
    for opener in (lambda: PosteriorCache.open(tmp_path),
                   lambda: PosteriorCacheWriter(tmp_path, meta_for(SYMBOLS, shifts=(20,), k=4))):
        with pytest.raises(CacheIntegrityError, match="format version 1, this speechkd reads version 2.*rebuild"):
            opener()


def test_intact_cache_round_trips_with_its_rest_mass(tmp_path):
    lp = confident_log_probs(5)
    write_cache(tmp_path, {"u": lp})
    cache = PosteriorCache.open(tmp_path)
    (rest,) = cache.rest_log_probs("u")
    expected = torch.logsumexp(torch.topk(lp, V - 4, -1, largest=False).values, -1)
    assert np.allclose(rest, expected.numpy(), rtol=1e-6)
    assert cache.collate(["u"])["rest_log_probs"].shape == (1, 1, 5)
