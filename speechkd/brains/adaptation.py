"""Teacher-student domain adaptation on parallel audio (few or no target labels).

The source model (trained on clean speech, or an ensemble) is the teacher;
it hears the clean half of each parallel pair, from its posterior cache or
run online. The student hears the target-domain half (telephone, noise,
reverberation or a ``+`` chain) and learns to reproduce the teacher's
posteriors (Li et al. 2017; Asami et al. 2017). Options, all YAML switches:

- unsupervised T/S: ``alpha: 0``, ``target_labels: 0``;
- T/S plus a few target labels: ``target_labels`` (a count, or a fraction
  when a float below 1) utterances keep their transcript and add a CTC
  term weighted by ``alpha``; the others stay unlabelled;
- conditional T/S (Meng et al. 2019): ``conditional: frame | utterance``,
  see :mod:`speechkd.distill.conditional`;
- ``online: True`` runs the teacher in the step on the clean half;
  ``target_on_the_fly: True`` draws the target-domain version per epoch
  (fresh SNR, room, channel) with :func:`speechkd.data.domains.apply_domain`,
  the teacher hearing the clean original online.
"""

import hashlib
import logging
import os
import shutil

import soundfile as sf
import speechbrain as sb
import torch

from speechkd.brains.ctc import CTCBrain, fit_and_test, make_checkpointer
from speechkd.brains.distill import DistillBrain, cache_settings, teacher_folders
from speechkd.data.manifest import read_manifest, write_manifest
from speechkd.data.pipelines import BadInputError, make_dataset, resolve_path
from speechkd.distill.conditional import LEVELS, adaptation_loss
from speechkd.distill.losses import DistillationLoss
from speechkd.distill.teachers import TeacherEnsemble, open_cache_for

logger = logging.getLogger(__name__)


# --------------------------------------------------------------------------- data
def domain_manifest(data_folder, split, domain):
    """``<data_folder>/<split>_<domain>.csv`` (``<split>.csv`` for ``clean``)."""
    name = split if domain == "clean" else f"{split}_{domain}"
    return os.path.join(data_folder, f"{name}.csv")


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


def select_labelled(utt_ids, amount, seed=0):
    """The few target utterances whose transcripts may be used, chosen reproducibly.

    Arguments
    ---------
    utt_ids : iterable of str
    amount : int or float
        A count (int), or a fraction of the utterances (float in ``[0, 1]``).
    seed : int
        Utterances are ranked by ``sha256(seed, ID)``; the first ``amount`` are kept.

    Returns
    -------
    list of str
        The chosen IDs, in rank order.
    """
    utt_ids = sorted(set(utt_ids))
    if isinstance(amount, float):
        if not 0.0 <= amount <= 1.0:
            raise ValueError(f"target_labels as a fraction must be in [0, 1], got {amount}")
        count = round(amount * len(utt_ids))
    else:
        count = int(amount)
        if count < 0:
            raise ValueError(f"target_labels must be >= 0, got {amount}")
    rank = sorted(utt_ids, key=lambda u: hashlib.sha256(f"{seed}\x1f{u}".encode()).hexdigest())
    return rank[: min(count, len(utt_ids))]


def labelled_subset(hparams, folder):
    """Select the labelled target utterances of ``hparams`` and record them in ``folder``.

    Returns
    -------
    list of str
        IDs, also written to ``<folder>/labelled_ids.txt``.
    """
    ids = [row["ID"] for row in read_manifest(hparams["train_csv"])]
    chosen = select_labelled(ids, hparams["target_labels"], hparams["labels_seed"])
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "labelled_ids.txt"), "w") as fout:
        fout.writelines(f"{utt}\n" for utt in chosen)
    logger.info("%d of %d target utterances labelled", len(chosen), len(ids))
    return chosen


def add_on_the_fly_target(dataset, domain, seed, epoch_counter, options=None):
    """Add ``sig_target``: the clean ``sig`` turned into ``domain``, drawn anew each epoch.

    Arguments
    ---------
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
    """
    from speechkd.data.domains import apply_domain, parse_domain

    parse_domain(domain)
    options = {k: tuple(v) if isinstance(v, list) else v for k, v in (options or {}).items()}

    @sb.utils.data_pipeline.takes("sig", "id")
    @sb.utils.data_pipeline.provides("sig_target")
    def target_pipeline(sig, utt_id):
        out = apply_domain(sig.numpy(), 16000, domain, seed, utt_id,
                           epoch=epoch_counter.current, **options)
        return torch.from_numpy(out)

    dataset.add_dynamic_item(target_pipeline)
    dataset.set_output_keys([*dataset.pipeline.output_mapping, "sig_target"])
    return dataset


# --------------------------------------------------------------------------- brain
class AdaptationBrain(DistillBrain):
    """DistillBrain whose student hears the target domain and whose loss is
    :func:`speechkd.distill.conditional.adaptation_loss`.

    Attributes set before ``fit``: those of :class:`DistillBrain`, plus
    ``student_signal`` (``sig`` or ``sig_target``), ``labelled_ids`` (set of
    IDs whose transcript is used) and ``conditional`` (None, ``frame`` or
    ``utterance``). Validation and test always read ``sig``.
    """

    student_signal = "sig"
    labelled_ids = frozenset()
    conditional = None

    def compute_forward(self, batch, stage):
        batch = batch.to(self.device)
        signal = self.student_signal if stage == sb.Stage.TRAIN else "sig"
        wavs, wav_lens = getattr(batch, signal)
        return self.student_log_probs(wavs, wav_lens, stage), wav_lens

    def compute_objectives(self, predictions, batch, stage):
        if stage != sb.Stage.TRAIN:
            return super().compute_objectives(predictions, batch, stage)
        log_probs, wav_lens = predictions
        labelled = torch.tensor([utt in self.labelled_ids for utt in batch.id], device=self.device)
        tokens, token_lens = batch.tokens if hasattr(batch, "tokens") else (None, None)
        parts = adaptation_loss(self.loss_fn, log_probs, wav_lens, self.teacher_batch(batch),
                                tokens, token_lens, labelled, self.conditional)
        for key in ("ctc", "kd"):
            self.loss_parts[key] += float(parts[key].detach())
        self.loss_parts["batches"] += 1
        if self.conditional is not None and bool(labelled.any()):
            self.teacher_share.append(float(parts["teacher_share"]))
        return parts["loss"]

    def on_stage_start(self, stage, epoch=None):
        super().on_stage_start(stage, epoch)
        self.teacher_share = []

    def on_stage_end(self, stage, stage_loss, epoch=None):
        super().on_stage_end(stage, stage_loss, epoch)
        if stage == sb.Stage.TRAIN and self.teacher_share:
            # conditional T/S: share of labelled frames learnt from the teacher (mean over batches)
            self.train_stats["teacher_frames"] = sum(self.teacher_share) / len(self.teacher_share)


def kd_loss_for(hparams, ensemble, cache, inventory, model):
    """The DistillationLoss giving the teacher target (cached or online teachers)."""
    options = {key: hparams[key] for key in ("alpha", "temperature", "strategy", "strategy_options")}
    if cache is not None:
        return DistillationLoss.from_cache(cache, inventory.symbols, model.frame_shift_ms, **options)
    return DistillationLoss(
        teacher_symbols=[ensemble.inventory.symbols] * len(ensemble.names),
        student_symbols=inventory.symbols,
        teacher_frame_shifts_ms=[m.frame_shift_ms for m in ensemble.models],
        student_frame_shift_ms=model.frame_shift_ms,
        k=hparams["top_k"], teacher_names=ensemble.names, **options,
    )


def init_from(model, source):
    """Copy a same-architecture source model's weights into ``model`` (Li et al. 2017)."""
    try:
        model.load_state_dict(source.state_dict())
    except RuntimeError as err:
        raise ValueError("init_from_source needs a student of the source's architecture and "
                         f"size (use init_from_source: False for a smaller student): {err}") from err


def adaptation_train_set(hparams, inventory, labelled):
    """The student's training data: target half (stored or drawn on the fly), tokens if needed."""
    need_text = bool(labelled)
    if hparams["target_on_the_fly"]:
        dataset = make_dataset(hparams["source_train_csv"], hparams["data_folder"], inventory,
                               need_text=need_text, sort=hparams["sorting"])
        return add_on_the_fly_target(dataset, hparams["domain"], hparams["corpus_seed"],
                                     hparams["epoch_counter"], hparams["domain_options"])
    check_parallel_pairs(hparams["train_csv"], hparams["source_train_csv"], hparams["data_folder"])
    return make_dataset(
        hparams["train_csv"], hparams["data_folder"], inventory, need_text=need_text,
        parallel_manifest=hparams["source_train_csv"] if hparams["online"] else None,
        sort=hparams["sorting"],
    )


def train_adaptation(hparams, run_opts=None):
    """Adapt the source model to the target domain by T/S learning, then test; the recipe's body.

    Returns
    -------
    dict
        The student's ``results.json`` (one entry per ``test_csvs`` set).
    """
    from speechkd.experiment import build_model

    folder = hparams["output_folder"]
    conditional = hparams["conditional"]
    if conditional is not None and conditional not in LEVELS:
        raise ValueError(f"conditional must be null or one of {LEVELS}, got {conditional!r}")
    device = (run_opts or {}).get("device") or "cpu"
    ensemble = TeacherEnsemble(teacher_folders(hparams), device=device)
    inventory = ensemble.inventory
    inventory.save(os.path.join(folder, "tokens.txt"))
    model = build_model(hparams["model"], inventory, folder, hparams["name"])
    if hparams["init_from_source"]:
        init_from(model, ensemble.models[0])
    labelled = labelled_subset(hparams, folder)
    if conditional is not None and not labelled:
        raise ValueError("conditional T/S needs some labelled target utterances (target_labels > 0)")
    online = hparams["online"] or hparams["target_on_the_fly"]
    datasets = {"train": adaptation_train_set(hparams, inventory, labelled),
                "valid": make_dataset(hparams["valid_csv"], hparams["data_folder"], inventory)}
    brain = AdaptationBrain(modules={"model": model}, opt_class=hparams["opt_class"],
                            hparams=hparams, run_opts=run_opts,
                            checkpointer=make_checkpointer(hparams, model))
    brain.inventory, brain.output_folder = inventory, folder
    brain.labelled_ids, brain.conditional = frozenset(labelled), conditional
    if hparams["target_on_the_fly"]:
        brain.student_signal = "sig_target"
    if online:
        brain.ensemble = ensemble
        brain.teacher_signal = "sig" if hparams["target_on_the_fly"] else "sig_parallel"
        cache = None
    else:
        cache = brain.cache = open_cache_for(ensemble, hparams["cache_folder"], hparams["top_k"],
                                             *cache_settings(hparams))
    brain.loss_fn = kd_loss_for(hparams, ensemble, cache, inventory, model)
    return fit_and_test(brain, model, datasets, hparams)


# --------------------------------------------------------------------------- baseline (b)
def finetune_source(hparams, run_opts=None):
    """Fine-tune the source model with CTC on the few labelled target utterances, then test.

    The labelled subset is :func:`select_labelled` with the YAML's
    ``target_labels`` and ``labels_seed``: the same utterances the T/S
    student may use. Writes ``train_labelled.csv`` into the output folder.
    """
    from speechkd.experiment import MODEL_CARD, TOKENS_FILE, load_model

    folder = hparams["output_folder"]
    source_folder = hparams["source_folder"]
    model, inventory = load_model(source_folder)
    for name in (MODEL_CARD, TOKENS_FILE):
        shutil.copy(os.path.join(source_folder, name), os.path.join(folder, name))
    chosen = set(labelled_subset(hparams, folder))
    if not chosen:
        raise ValueError("fine-tuning needs target_labels > 0")
    subset = os.path.join(folder, "train_labelled.csv")
    write_manifest(subset, [row for row in read_manifest(hparams["train_csv"]) if row["ID"] in chosen])
    datasets = {"train": make_dataset(subset, hparams["data_folder"], inventory, sort=hparams["sorting"]),
                "valid": make_dataset(hparams["valid_csv"], hparams["data_folder"], inventory)}
    brain = CTCBrain(modules={"model": model}, opt_class=hparams["opt_class"], hparams=hparams,
                     run_opts=run_opts, checkpointer=make_checkpointer(hparams, model))
    brain.inventory, brain.output_folder = inventory, folder
    return fit_and_test(brain, model, datasets, hparams)
