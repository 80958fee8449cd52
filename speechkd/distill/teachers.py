"""Teacher ensembles: loading trained teachers, caching their posteriors, running them online."""

import logging
import os

import jiwer
import speechbrain as sb
import torch

from speechkd.decoding import ctc_greedy
from speechkd.distill.cache import (
    PosteriorCache,
    PosteriorCacheWriter,
    make_meta,
    teacher_entry,
)
from speechkd.distill.losses import teacher_batch_from_log_probs
from speechkd.experiment import load_model

logger = logging.getLogger(__name__)


class TeacherEnsemble:
    """Trained teachers sharing one token inventory.

    Arguments
    ---------
    folders : dict
        Teacher name -> experiment folder of a trained CTC model.
    device : str

    Raises
    ------
    ValueError
        If two teachers were trained with different token inventories
        (names both and the symbols that differ).
    """

    def __init__(self, folders, device="cpu"):
        self.names = list(folders)
        self.models, inventories = [], []
        for name in self.names:
            model, inventory = load_model(folders[name], device=device)
            self.models.append(model)
            inventories.append(inventory)
        first = inventories[0]
        for name, inventory in zip(self.names[1:], inventories[1:]):
            if inventory.symbols != first.symbols:
                differ = sorted(set(inventory.symbols) ^ set(first.symbols)) or "order"
                raise ValueError(
                    f"teachers '{self.names[0]}' and '{name}' use different token inventories "
                    f"(differ in: {differ}); a cache holds teachers of one inventory"
                )
        self.inventory = first
        self.device = device

    def meta(self, k, features, manifest=None):
        """Cache ``meta`` fingerprinting these teachers (weights, inventory, shift), ``k`` and features.

        ``manifest`` (a CSV with transcripts) is recorded for ``speechkd teachers agreement``.
        """
        entries = [
            teacher_entry(name, model, self.inventory.symbols)
            for name, model in zip(self.names, self.models)
        ]
        return make_meta(
            entries,
            self.inventory.symbols,
            features=features,
            k=k,
            tokens_fingerprint=self.inventory.fingerprint,
            manifest=manifest,
        )

    @torch.no_grad()
    def log_probs(self, wavs, wav_lens):
        """Each teacher's log-posteriors for a batch.

        Returns
        -------
        list of torch.Tensor
            One ``(batch, frames_i, vocab)`` per teacher (own frame rate).
        """
        return [model(wavs, wav_lens) for model in self.models]

    def teacher_batch(self, wavs, wav_lens, k):
        """Online teachers in the cache's form (top-k, fp16-rounded): what ``PosteriorCache.collate`` gives."""
        log_probs = self.log_probs(wavs, wav_lens)
        return teacher_batch_from_log_probs(log_probs, [wav_lens] * len(log_probs), k)


def utterance_errors(ref, hyp):
    """``{"wer", "cer"}`` in percent of one hypothesis; an empty reference counts every word inserted."""
    if not ref.strip():
        return {"wer": 100.0 * len(hyp.split()), "cer": 100.0 * len(hyp)}
    return {"wer": 100.0 * jiwer.wer(ref, hyp), "cer": 100.0 * jiwer.cer(ref, hyp)}


def build_cache(ensemble, datasets, cache_folder, k, features, batch_size=16, dev_split="dev",
                manifest=None):
    """Run every teacher once over ``datasets`` and store top-k posteriors.

    Utterances already in the cache (a resumed run) are skipped; a cache made
    from other teachers or settings is refused with the difference named.

    Arguments
    ---------
    ensemble : TeacherEnsemble
    datasets : dict
        Split name -> DynamicItemDataset (``sig``, ``wrd``).
    cache_folder : str
    k : int
        Tokens kept per frame (0 = full distribution).
    features : dict
        Audio/feature settings recorded in ``meta.json`` (sample rate, domain, ...).
    batch_size : int
    dev_split : str
        Split whose WER per teacher is stored for the ``weighted`` strategy.
    manifest : str, optional
        Manifest recorded in ``meta.json`` for the agreement diagnostic.

    Returns
    -------
    speechkd.distill.cache.PosteriorCache
    """
    writer = PosteriorCacheWriter(cache_folder, ensemble.meta(k, features, manifest))
    dev_errors = {name: [0.0, 0] for name in ensemble.names}
    for split, dataset in datasets.items():
        todo = [utt for utt in dataset.data_ids if utt not in writer.done_ids]
        if not todo:
            continue
        logger.info(
            "caching %d %s utterances (%d already cached)",
            len(todo),
            split,
            len(dataset.data_ids) - len(todo),
        )
        for batch, per_teacher, frames in teacher_posteriors(ensemble, dataset, batch_size):
            for row, utt_id in enumerate(batch.id):
                if utt_id in writer.done_ids:
                    continue
                errors = []
                for name, log_probs, n_frames in zip(ensemble.names, per_teacher, frames):
                    lp = log_probs[row, : n_frames[row]]
                    hyp = ensemble.inventory.decode(
                        ctc_greedy(lp[None], n_frames[row : row + 1])[0]
                    )
                    errors.append(utterance_errors(batch.wrd[row], hyp))
                    if split == dev_split:
                        ref_words = max(len(batch.wrd[row].split()), 1)
                        dev_errors[name][0] += errors[-1]["wer"] * ref_words / 100.0
                        dev_errors[name][1] += ref_words
                writer.add(
                    utt_id,
                    [lp[row, : n[row]] for lp, n in zip(per_teacher, frames)],
                    errors_per_teacher=errors,
                )
    if all(count for _, count in dev_errors.values()):
        writer.set_dev_wer({name: 100.0 * e / n for name, (e, n) in dev_errors.items()})
    writer.close()
    return PosteriorCache.open(cache_folder)


@torch.no_grad()
def teacher_posteriors(ensemble, dataset, batch_size, signal="sig"):
    """Yield ``(batch, per_teacher_log_probs, per_teacher_frames)`` over a dataset.

    The audio is read once per batch and fed to every teacher; log-probs are
    ``(batch, frames_i, vocab)`` on the CPU, frames ``(batch,)`` valid frames.
    """
    loader = sb.dataio.dataloader.make_dataloader(dataset, batch_size=batch_size)
    for batch in loader:
        wavs, wav_lens = getattr(batch, signal)
        wavs, wav_lens = wavs.to(ensemble.device), wav_lens.to(ensemble.device)
        per_teacher = [lp.cpu() for lp in ensemble.log_probs(wavs, wav_lens)]
        frames = [(wav_lens.cpu() * lp.shape[1]).round().long() for lp in per_teacher]
        yield batch, per_teacher, frames


def open_cache_for(ensemble, cache_folder, k, features, manifest=None):
    """Open a cache, refusing it unless it was made from exactly these teachers and settings."""
    if not os.path.exists(os.path.join(cache_folder, "meta.json")):
        raise FileNotFoundError(
            f"no posterior cache at {cache_folder}; run recipes/distill/cache_teachers.py first"
        )
    return PosteriorCache.open(cache_folder, expect=ensemble.meta(k, features, manifest))
