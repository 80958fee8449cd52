"""Parallel audio for teacher-student domain adaptation: stored pairs and pairs drawn on the fly.

The teacher hears the source-domain (clean) half of a pair, the student the
target-domain half, frame by frame (Li et al. 2017). The pairs are either
stored (the corpus builder writes ``<split>_<domain>.csv`` with the clean
manifest's utterance IDs and sample counts; :func:`check_parallel_pairs`
refuses any that are not frame-aligned, and ``make_dataset``'s
``parallel_manifest`` gives the other half as ``sig_parallel``), or drawn
anew each epoch from the clean audio (:func:`add_on_the_fly_target`).
"""

import soundfile as sf
import speechbrain as sb
import torch

from speechkd.data.domains import apply_domain, parse_domain
from speechkd.data.manifest import read_manifest
from speechkd.data.pipelines import SAMPLE_RATE, BadInputError, resolve_path


def check_parallel_pairs(target_manifest, source_manifest, data_root):
    """Refuse parallel pairs that would not be frame-aligned, naming the utterance.

    Every utterance of ``target_manifest`` needs a partner with the same ID
    in ``source_manifest`` whose audio has exactly as many samples.

    Returns
    -------
    int
        Number of pairs checked.

    Raises
    ------
    BadInputError
        On a missing partner or a length mismatch.
    """
    partners = {row["ID"]: row for row in read_manifest(source_manifest)}
    rows = read_manifest(target_manifest)
    for line, row in enumerate(rows, start=2):
        partner = partners.get(row["ID"])
        if partner is None:
            raise BadInputError(f"{target_manifest}:{line}: utterance {row['ID']} has no "
                                f"partner in {source_manifest}")
        target_wav = resolve_path(row["wav"], data_root)
        source_wav = resolve_path(partner["wav"], data_root)
        n_target, n_source = sf.info(target_wav).frames, sf.info(source_wav).frames
        if n_target != n_source:
            raise BadInputError(
                f"utterance {row['ID']}: {target_wav} has {n_target} samples, {source_wav} has "
                f"{n_source}; teacher-student adaptation needs frame-aligned parallel pairs"
            )
    return len(rows)


def add_on_the_fly_target(dataset, domain, seed, epoch_counter, options=None):
    """Add ``sig_target``: the clean ``sig`` turned into ``domain``, drawn anew each epoch.

    Parameters
    ----------
    dataset : DynamicItemDataset
        Clean audio (``sig``, ``id``).
    domain : str
        ``telephone``, ``noise``, ``reverb`` or a ``+`` chain.
    seed : int
        Corpus seed; with the utterance ID and the epoch it fixes the draw.
    epoch_counter : speechbrain.utils.epoch_loop.EpochCounter
        Its ``current`` epoch is mixed into the draw.
    options : dict, optional
        Overrides of :data:`speechkd.data.domains.DEFAULT_OPTIONS` (e.g. ``snr_db: [5, 15]``).

    Returns
    -------
    DynamicItemDataset
        ``dataset``, with ``sig_target`` ``(samples,)`` among its output keys.
    """
    parse_domain(domain)
    options = {k: tuple(v) if isinstance(v, list) else v for k, v in (options or {}).items()}

    @sb.utils.data_pipeline.takes("sig", "id")
    @sb.utils.data_pipeline.provides("sig_target")
    def target_pipeline(sig, utt_id):
        out = apply_domain(sig.numpy(), SAMPLE_RATE, domain, seed, utt_id,
                           epoch=epoch_counter.current, **options)
        return torch.from_numpy(out)

    dataset.add_dynamic_item(target_pipeline)
    dataset.set_output_keys([*dataset.pipeline.output_mapping, "sig_target"])
    return dataset
