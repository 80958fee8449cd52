"""The Brain's training loader batches by total duration when the YAML sets ``dynamic_batching``."""

import os
from types import SimpleNamespace

import speechbrain as sb

from speechkd.brains.distill import DistillBrain
from speechkd.data.pipelines import make_dataset
from speechkd.text import TokenInventory


def loader_kwargs(dataset, **hparams):
    brain = SimpleNamespace(hparams=SimpleNamespace(batch_size=4, sorting="random", **hparams))
    return DistillBrain.train_loader_kwargs(brain, dataset)


def test_batches_hold_at_most_max_batch_length_seconds_and_cover_every_utterance(tiny_corpus):
    dataset = make_dataset(os.path.join(tiny_corpus, "train.csv"), tiny_corpus,
                           TokenInventory.from_languages(["en", "de", "es", "it", "fr", "ru", "uk"]), sort="none")
    durations = {utt_id: item["duration"] for utt_id, item in dataset.data.items()}
    kwargs = loader_kwargs(dataset, dynamic_batching={"max_batch_length": 8.0, "num_buckets": 4})
    loader = sb.dataio.dataloader.make_dataloader(dataset, **kwargs)
    seen, sizes = [], []
    for batch in loader:
        seen += batch.id
        sizes.append(len(batch.id))
        assert sum(durations[i] for i in batch.id) <= 8.0 + 1e-6
        assert batch.sig.data.shape[0] == len(batch.id)
    assert sorted(seen) == sorted(durations)
    assert len(set(sizes)) > 1  # sizes follow durations, not a fixed batch_size
    assert loader_kwargs(dataset, dynamic_batching={}) == {"batch_size": 4, "shuffle": True}
