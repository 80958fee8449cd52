"""The Brain's training loader batches by total duration when the YAML sets ``dynamic_batching``."""

import os
from types import SimpleNamespace

import speechbrain as sb

from speechkd.brains.distill import DistillBrain
from speechkd.data.pipelines import make_dataset
from speechkd.text import TokenInventory


def loader_kwargs(dataset, brain=None, **hparams):
    brain = brain or SimpleNamespace()
    brain.hparams = SimpleNamespace(batch_size=4, sorting="random", seed=1234, **hparams)
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


def test_each_epochs_batches_depend_only_on_seed_and_epoch(tiny_corpus):
    """What a resumed run needs: SpeechBrain calls set_epoch on the Brain's train_sampler."""
    dataset = make_dataset(os.path.join(tiny_corpus, "train.csv"), tiny_corpus,
                           TokenInventory.from_languages(["en", "de", "es", "it", "fr", "ru", "uk"]), sort="none")
    dynamic = {"max_batch_length": 8.0, "num_buckets": 4}

    def epoch_batches(brain, epoch):
        brain.train_sampler.set_epoch(epoch)
        return [list(batch) for batch in brain.train_sampler]

    uninterrupted, resumed = SimpleNamespace(), SimpleNamespace()
    loader_kwargs(dataset, uninterrupted, dynamic_batching=dynamic)
    loader_kwargs(dataset, resumed, dynamic_batching=dynamic)
    first, second, third = (epoch_batches(uninterrupted, epoch) for epoch in (1, 2, 3))
    assert first != second  # reshuffled every epoch
    assert epoch_batches(resumed, 3) == third  # a run resumed at epoch 3 draws epoch 3's batches
