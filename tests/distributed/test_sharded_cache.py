"""A posterior cache built by 2 ranks (gloo) is the cache one process builds: same index, values, dev WERs."""

import json
import os
from pathlib import Path

import numpy as np
import speechbrain as sb
import torch
from speechbrain.dataio.dataset import DynamicItemDataset
from test_evaluation import FramewiseTeacher

from speechkd.distill.cache import PosteriorCache
from speechkd.distill.teachers import TeacherEnsemble, build_cache

# 13 utterances over two splits, cut in shards of 3: the shard crossing the split boundary, and a last
# partial one, go to different ranks; batches of 2 cross shard boundaries
SPLITS = {"train": {f"tr{i}": 1600 + 320 * ((7 * i) % 9) for i in range(8)},
          "dev": {f"dv{i}": 1920 + 480 * i for i in range(5)}}


def datasets():
    out = {}
    for split, samples in SPLITS.items():
        generator = torch.Generator().manual_seed(len(split))
        waves = {utt: torch.randn(n, generator=generator) for utt, n in samples.items()}
        data = {utt: {"wrd": "ab c", "duration": n / 16000} for utt, n in samples.items()}
        dataset = DynamicItemDataset(data)

        @sb.utils.data_pipeline.takes("id")
        @sb.utils.data_pipeline.provides("sig")
        def audio(utt, waves=waves):
            return waves[utt]

        dataset.add_dynamic_item(audio)
        dataset.set_output_keys(["id", "sig", "wrd"])
        out[split] = dataset.filtered_sorted(sort_key="duration")
    return out


def cache(folder, precision="fp32"):
    ensemble = TeacherEnsemble([FramewiseTeacher("fine", 10, 1), FramewiseTeacher("coarse", 20, 2)])
    return build_cache(ensemble, datasets(), folder, k=3, features={"sample_rate": 16000}, batch_size=2,
                       shard_utts=3, precision=precision)


def cache_on_rank(rank, world, folder, rendezvous):
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world))
    torch.set_num_threads(1)
    torch.distributed.init_process_group("gloo", init_method=rendezvous, rank=rank, world_size=world)
    try:
        cache(folder)
    finally:
        torch.distributed.destroy_process_group()


def rendezvous_file(folder):
    """A ``file://`` rendezvous for a process group (no TCP port to race for with other processes)."""
    return f"file://{os.path.join(folder, 'rendezvous')}"


def read(path):
    return json.loads(Path(path).read_text())


def test_two_rank_cache_equals_single_process_cache(tmp_path):
    single = cache(str(tmp_path / "single"))
    torch.multiprocessing.spawn(cache_on_rank, args=(2, str(tmp_path / "sharded"), rendezvous_file(tmp_path)), nprocs=2)
    sharded = PosteriorCache.open(tmp_path / "sharded")
    sharded.verify()

    for name in ("meta.json", "index.json", "teacher_errors.json"):
        assert read(tmp_path / "sharded" / name) == read(tmp_path / "single" / name), name
    shard_files = sorted(p.name for p in (tmp_path / "single" / "shards").glob("*.json"))
    assert len(shard_files) == 5  # ceil(13 / 3)
    assert sorted(p.name for p in (tmp_path / "sharded" / "shards").glob("*")) == \
        sorted(p.name for p in (tmp_path / "single" / "shards").glob("*"))
    for name in shard_files:  # the shard records carry each array file's sha256
        assert read(tmp_path / "sharded" / "shards" / name) == read(tmp_path / "single" / "shards" / name)
    assert sorted(sharded.utt_ids) == sorted(utt for samples in SPLITS.values() for utt in samples)
    for utt in single.utt_ids:
        for (values_a, ids_a), (values_b, ids_b) in zip(single.get(utt), sharded.get(utt)):
            np.testing.assert_array_equal(values_a, values_b)
            np.testing.assert_array_equal(ids_a, ids_b)
        for rest_a, rest_b in zip(single.rest_log_probs(utt), sharded.rest_log_probs(utt)):
            np.testing.assert_array_equal(rest_a, rest_b)
    assert single.dev_wer_list() == sharded.dev_wer_list() is not None


def test_bf16_teachers_cache_what_fp32_teachers_do_to_bf16_precision(tmp_path):
    """Autocast runs the teachers in bf16 (values move), the cache stays fp16 top-k of about the same values."""
    exact, mixed = cache(str(tmp_path / "fp32")), cache(str(tmp_path / "bf16"), precision="bf16")
    agree, total, gap = 0, 0, 0.0
    for utt in exact.utt_ids:
        for (values_a, ids_a), (values_b, ids_b) in zip(exact.get(utt), mixed.get(utt)):
            assert values_b.dtype == np.float16 and values_b.shape == values_a.shape
            same = ids_a == ids_b
            agree, total = agree + int(same.sum()), total + same.size
            gap = max(gap, float(np.abs(values_a[same].astype(float) - values_b[same]).max()))
    assert 0 < gap < 0.1  # bf16 keeps 8 bits of mantissa: log-probs of a few nats move by ~0.01
    assert agree > 0.9 * total  # the same tokens are kept almost everywhere
