"""Low-resource target language (Cui et al. 2017): multilingual teachers, adapted, distilled.

The recipe's steps, each a function a thin script calls:

1. :func:`train_pool_teacher`: a CTC teacher on the pooled high-resource
   languages (optionally a subset of them, for diversity). All teachers share
   one inventory, built from the whole pool's text, so they form one ensemble.
2. :func:`adapt_teacher`: the teacher fine-tuned on the target's few labelled
   minutes, whole model or output layer only (``adapt_layers``). The token
   inventory is extended with the target's new characters: old tokens keep
   their indices and their output-layer rows, the added ones are logged and
   recorded in ``results.json`` and ``model.json``.
3. :func:`cache_target`: the adapted ensemble's top-k posteriors cached on
   the target's labelled, unlabelled and dev audio; the ensemble itself is
   evaluated on the target's test speakers.
4. :func:`train_student`: a small student with the target's own inventory
   distilled on the labelled minutes plus (optionally) the unlabelled audio,
   optionally only the utterances the teachers agree on
   (:mod:`speechkd.distill.filtering`). Loss:
   ``alpha * CTC(labelled rows) + (1 - alpha) * KD(all rows)``, the KD
   restricted to the student's tokens by symbol (``oov_mode``).
"""

import json
import logging
import os

import speechbrain as sb
import torch

from speechkd.brains.ctc import (
    CTCBrain,
    decode_batch,
    fit_and_test,
    make_checkpointer,
)
from speechkd.brains.distill import DistillBrain, cache_settings, teacher_folders
from speechkd.data.manifest import read_manifest, write_manifest
from speechkd.data.subsets import concat_manifests, select_rows, write_language_manifests
from speechkd.experiment import MODEL_CARD, TOKENS_FILE, load_model, write_json
from speechkd.metrics import ErrorRates, write_results_json
from speechkd.models import count_parameters
from speechkd.text import TokenInventory

logger = logging.getLogger(__name__)


# --------------------------------------------------------------------------- data
def prepare_target_data(hparams):
    """Build the corpus (main process) and write its pooled and target-only manifests.

    Keys used: ``corpus_task``, ``corpus_size``, ``corpus_seed``, ``data_folder``,
    ``corpus_languages`` (list or null = all the task's languages),
    ``target_lang``, ``corpus_target_minutes`` (labelled target minutes built),
    ``unlabelled_minutes`` (target audio built as unlabelled), ``subset_folder``,
    ``pool_languages`` (list or null = all corpus languages but the target) and
    ``target_minutes`` (labelled minutes used: a prefix of those built; null = all).
    """
    from speechkd.data.corpus import build_corpus

    target = hparams["target_lang"]
    sb.utils.distributed.run_on_main(
        build_corpus,
        kwargs={"task": hparams["corpus_task"], "size": hparams["corpus_size"],
                "out": hparams["data_folder"], "seed": hparams["corpus_seed"],
                "languages": hparams["corpus_languages"],
                "lang_minutes": {target: hparams["corpus_target_minutes"]},
                "unlabelled_minutes": {target: hparams["unlabelled_minutes"]}, "progress": False},
    )
    sb.utils.distributed.run_on_main(
        write_language_manifests,
        kwargs={"data_folder": hparams["data_folder"], "out_folder": hparams["subset_folder"],
                "target": target, "pool": hparams["pool_languages"],
                "target_minutes": hparams["target_minutes"]},
    )


def texts_of(manifests):
    """Transcripts of several manifests, in order."""
    return [row["wrd"] for path in manifests for row in read_manifest(path)]


# --------------------------------------------------------------------------- step 1
def train_pool_teacher(hparams, run_opts=None):
    """Train a multilingual CTC teacher on (a subset of) the pooled languages.

    Keys used besides :func:`speechkd.brains.ctc.train_ctc`'s: ``pool_train_csv``
    (the whole pool), ``teacher_languages`` (list, or null for the whole pool)
    and ``pool_inventory_csvs`` (manifests whose text makes the shared inventory).
    ``train_csv`` receives this teacher's language subset of ``pool_train_csv``.
    """
    from speechkd.brains.ctc import train_ctc

    folder = hparams["output_folder"]
    tokens_path = os.path.join(folder, TOKENS_FILE)
    if not os.path.exists(tokens_path):
        TokenInventory.from_texts(texts_of(hparams["pool_inventory_csvs"])).save(tokens_path)
    rows = select_rows(read_manifest(hparams["pool_train_csv"]), hparams["teacher_languages"])
    if not rows:
        raise ValueError(f"{hparams['pool_train_csv']} has no utterances in {hparams['teacher_languages']}")
    write_manifest(hparams["train_csv"], rows)
    return train_ctc(hparams, run_opts)


# --------------------------------------------------------------------------- step 2
def extend_output_layer(model, n_tokens):
    """Grow the model's CTC output layer (``ctc_lin``) to ``n_tokens`` rows, keeping the old rows.

    Arguments
    ---------
    model : speechkd.models.AcousticModel
        Any speechkd model (its output layer is ``model.ctc_lin``, ``(V, hidden)``).
    n_tokens : int
        New vocabulary size, at least the current one.

    Returns
    -------
    speechkd.models.AcousticModel
        The same model; rows ``[0, V)`` of the new layer equal the old layer's,
        new rows get the layer's default initialisation.
    """
    old = model.ctc_lin
    if n_tokens < old.out_features:
        raise ValueError(f"cannot shrink the output layer from {old.out_features} to {n_tokens} tokens")
    if n_tokens == old.out_features:
        return model
    new = torch.nn.Linear(old.in_features, n_tokens, bias=old.bias is not None).to(old.weight.device)
    with torch.no_grad():
        new.weight[: old.out_features] = old.weight
        if old.bias is not None:
            new.bias[: old.out_features] = old.bias
    model.ctc_lin = new
    model.n_tokens = n_tokens
    return model


def freeze_for_adaptation(model, adapt_layers):
    """``all``: every parameter trains; ``output``: only the output layer (``ctc_lin``)."""
    if adapt_layers not in ("all", "output"):
        raise ValueError(f"adapt_layers must be 'all' or 'output', got {adapt_layers!r}")
    for name, param in model.named_parameters():
        param.requires_grad = adapt_layers == "all" or name.startswith("ctc_lin.")
    return model


def adapted_model(teacher_folder, target_texts):
    """Load a trained teacher and extend its inventory and output layer to the target's characters.

    Arguments
    ---------
    teacher_folder : str
        Experiment folder of the trained teacher.
    target_texts : iterable of str
        Target-language transcripts the inventory must cover.

    Returns
    -------
    model : speechkd.models.AcousticModel
        The teacher (normalizer and weights), output layer extended.
    inventory : speechkd.text.TokenInventory
        The teacher's inventory with the new characters appended.
    added : list of str
        The characters added, in index order.
    """
    model, teacher_inventory = load_model(teacher_folder)
    chars = sorted({ch for text in target_texts for ch in text})
    inventory, added = teacher_inventory.extend(chars)
    extend_output_layer(model, len(inventory))
    return model.train(), inventory, added


def write_adapted_card(teacher_folder, folder, name, inventory, added):
    """``model.json`` of the adapted teacher: the teacher's card with the new inventory."""
    with open(os.path.join(teacher_folder, MODEL_CARD)) as fin:
        card = json.load(fin)
    card.update(name=name, n_tokens=len(inventory), tokens_fingerprint=inventory.fingerprint,
                adapted_from=os.path.abspath(teacher_folder), added_tokens=added)
    write_json(os.path.join(folder, MODEL_CARD), card)


class AdaptBrain(CTCBrain):
    """CTC fine-tuning; reports the whole model's parameters even when only the output layer trained."""

    def on_evaluate_start(self, max_key=None, min_key=None):
        super().on_evaluate_start(max_key=max_key, min_key=min_key)
        for param in self.modules.parameters():
            param.requires_grad = True


def adapt_teacher(hparams, run_opts=None):
    """Adapt a pooled teacher to the target language; the adaptation recipe's body.

    Keys used: ``teacher`` (folder), ``adapt_layers`` (``all`` | ``output``),
    ``name``, ``train_csv``/``valid_csv``/``test_csvs`` (target manifests) and
    :func:`speechkd.brains.ctc.fit_and_test`'s.

    Returns
    -------
    dict
        ``results.json``, with ``added_tokens`` and ``adapt_layers``.
    """
    from speechkd.data.pipelines import make_dataset

    folder = hparams["output_folder"]
    texts = texts_of([hparams["train_csv"], hparams["valid_csv"], *hparams["test_csvs"]])
    model, inventory, added = adapted_model(hparams["teacher"], texts)
    logger.info("adapting %s to the target: added %d characters to its inventory: %s",
                hparams["teacher"], len(added), " ".join(added) or "(none)")
    inventory.save(os.path.join(folder, TOKENS_FILE))
    write_adapted_card(hparams["teacher"], folder, hparams["name"], inventory, added)
    freeze_for_adaptation(model, hparams["adapt_layers"])
    datasets = {
        "train": make_dataset(hparams["train_csv"], hparams["data_folder"], inventory, sort=hparams["sorting"]),
        "valid": make_dataset(hparams["valid_csv"], hparams["data_folder"], inventory),
    }
    brain = AdaptBrain(modules={"model": model}, opt_class=hparams["opt_class"], hparams=hparams,
                       run_opts=run_opts, checkpointer=make_checkpointer(hparams, model))
    brain.inventory, brain.output_folder = inventory, folder
    write_results_json(os.path.join(folder, "results.json"),
                   {"added_tokens": added, "adapt_layers": hparams["adapt_layers"],
                    "trainable_params": count_parameters(model)})
    return fit_and_test(brain, model, datasets, hparams)


# --------------------------------------------------------------------------- step 3
def hide_transcripts(dataset):
    """Blank the ``wrd`` of every item: unlabelled audio's text is for analysis only."""
    for item in dataset.data.values():
        item["wrd"] = ""
    return dataset


@torch.no_grad()
def ensemble_error_rates(ensemble, dataset, batch_size, strategy="average"):
    """Greedy-decode the combined ensemble posterior (at τ = 1) and score it.

    Arguments
    ---------
    ensemble : speechkd.distill.teachers.TeacherEnsemble
    dataset : DynamicItemDataset
        With ``sig`` and ``wrd``.
    batch_size : int
    strategy : str
        Ensemble strategy not needing per-utterance errors (``average``,
        ``geometric``, ``confidence``).

    Returns
    -------
    speechkd.metrics.ErrorRates
    """
    from speechkd.distill.losses import DistillationLoss, teacher_batch_from_log_probs
    from speechkd.distill.teachers import teacher_posteriors

    symbols = ensemble.inventory.symbols
    shifts = [m.frame_shift_ms for m in ensemble.models]
    combiner = DistillationLoss([symbols] * len(shifts), symbols, shifts, max(shifts), k=0,
                                alpha=0.0, strategy=strategy, teacher_names=ensemble.names)
    errors = ErrorRates()
    for batch, per_teacher, frames in teacher_posteriors(ensemble, dataset, batch_size):
        teacher = teacher_batch_from_log_probs(per_teacher, frames, 0)
        factors = [max(shifts) // s for s in shifts]
        student_frames = torch.stack([(f + q - 1) // q for f, q in zip(frames, factors)], 1).min(1).values
        time = int(student_frames.max())
        probs = combiner.teacher_target(teacher, student_frames, time)[..., : len(symbols)]
        hyps = decode_batch(probs.clamp_min(1e-12).log(), student_frames.float() / time, ensemble.inventory)
        errors.append(batch.id, batch.wrd, hyps, langs=batch.lang, domains=batch.domain)
    return errors


def evaluate_ensemble(ensemble, test_csv, data_folder, folder, batch_size, strategy="average"):
    """Score the ensemble on a test set: ``wer_<set>.txt`` and ``results.json`` in ``folder``."""
    from speechkd.data.pipelines import make_dataset

    name = os.path.splitext(os.path.basename(test_csv))[0]
    dataset = make_dataset(test_csv, data_folder, sort="none")
    errors = ensemble_error_rates(ensemble, dataset, batch_size, strategy)
    os.makedirs(folder, exist_ok=True)
    errors.write_wer_file(os.path.join(folder, f"wer_{name}.txt"))
    summary = errors.summary()
    write_results_json(os.path.join(folder, "results.json"), {
        "params": sum(count_parameters(m, trainable_only=False) for m in ensemble.models),
        "teachers": ensemble.names, "strategy": strategy, "sets": {name: summary}})
    logger.info("adapted ensemble (%s) on %s: WER %.2f%% CER %.2f%%", strategy, name,
                summary["wer"], summary["cer"])
    return summary


def cache_target(hparams, run_opts=None):
    """Cache the adapted ensemble on the target's audio and evaluate it; the cache recipe's body.

    Keys used: ``teachers``, ``cache_folder``, ``top_k``, ``batch_size``,
    ``data_folder``, ``teacher_domain``, ``train_csv`` (labelled),
    ``unlabelled_csv``, ``dev_csv``, ``test_csvs``, ``ensemble_folder``,
    ``ensemble_strategy``.

    Returns
    -------
    speechkd.distill.cache.PosteriorCache
    """
    from speechkd.data.pipelines import make_dataset
    from speechkd.distill.teachers import TeacherEnsemble, build_cache

    device = (run_opts or {}).get("device") or "cpu"
    ensemble = TeacherEnsemble(teacher_folders(hparams), device=device)
    datasets = {
        "train": make_dataset(hparams["train_csv"], hparams["data_folder"], need_text=False, sort="none"),
        "unlabelled": hide_transcripts(
            make_dataset(hparams["unlabelled_csv"], hparams["data_folder"], need_text=False, sort="none")),
        "dev": make_dataset(hparams["dev_csv"], hparams["data_folder"], need_text=False, sort="none"),
    }
    features, manifest = cache_settings(hparams)
    cache = build_cache(ensemble, datasets, hparams["cache_folder"], hparams["top_k"], features,
                        batch_size=hparams["batch_size"], manifest=manifest)
    for test_csv in hparams["test_csvs"]:
        evaluate_ensemble(ensemble, test_csv, hparams["data_folder"], hparams["ensemble_folder"],
                          hparams["batch_size"], hparams["ensemble_strategy"])
    return cache


# --------------------------------------------------------------------------- step 4
class LowResourceDistillBrain(DistillBrain):
    """``alpha * CTC`` on the labelled rows of a batch plus ``(1 - alpha) * KD`` on every row.

    Batches mix labelled and unlabelled utterances (``labelled`` item, bool);
    ``loss_fn`` is built with ``alpha = 0`` (KD only), the CTC term is added
    here over the labelled rows. ``ctc_weight`` holds ``alpha``.
    """

    ctc_weight = 0.0

    def compute_objectives(self, predictions, batch, stage):
        if stage != sb.Stage.TRAIN:
            return super().compute_objectives(predictions, batch, stage)
        log_probs, wav_lens = predictions
        kd = self.loss_fn(log_probs, wav_lens, self.teacher_batch(batch))["kd"]
        labelled = batch.labelled.to(self.device).bool()
        ctc = torch.zeros((), device=self.device)
        if self.ctc_weight > 0 and labelled.any():
            tokens, token_lens = batch.tokens
            ctc = sb.nnet.losses.ctc_loss(log_probs[labelled], tokens[labelled], wav_lens[labelled],
                                          token_lens[labelled], blank_index=0)
        self.loss_parts["ctc"] += float(ctc.detach())
        self.loss_parts["kd"] += float(kd.detach())
        self.loss_parts["batches"] += 1
        return self.ctc_weight * ctc + (1.0 - self.ctc_weight) * kd


def student_train_manifest(hparams, cache):
    """Labelled rows plus the unlabelled rows chosen by ``use_unlabelled`` and the agreement filter.

    Writes ``<output_folder>/train.csv`` and returns its path and the filter report.
    """
    from speechkd.distill.filtering import agreement_filter, cache_agreement_scores

    folder = hparams["output_folder"]
    parts = [hparams["train_csv"]]
    report = {"offered": 0, "kept": 0, "kept_share": 0.0, "method": None, "threshold": None}
    if hparams["use_unlabelled"]:
        rows = read_manifest(hparams["unlabelled_csv"])
        report.update(offered=len(rows), kept=len(rows), kept_share=1.0 if rows else 0.0)
        if hparams["agreement_filter"] is not None:
            scores = cache_agreement_scores(cache, [row["ID"] for row in rows])
            kept, report = agreement_filter(scores, hparams["agreement_filter"],
                                            hparams["agreement_threshold"])
            kept = set(kept)
            rows = [row for row in rows if row["ID"] in kept]
        unlabelled_path = os.path.join(folder, "unlabelled_kept.csv")
        write_manifest(unlabelled_path, rows)
        parts.append(unlabelled_path)
    return concat_manifests(parts, os.path.join(folder, "train.csv")), report


def mixed_dataset(manifest, data_folder, inventory, labelled_ids, sort):
    """Dataset whose ``tokens`` encode labelled rows only (unlabelled rows: one blank, never read).

    Output keys: ``id, sig, wrd, lang, domain, duration, tokens, labelled``.
    """
    from speechkd.data.pipelines import make_dataset

    dataset = make_dataset(manifest, data_folder, need_text=False, sort=sort)

    @sb.utils.data_pipeline.takes("id", "wrd")
    @sb.utils.data_pipeline.provides("tokens", "labelled")
    def text_pipeline(utt_id, wrd):
        labelled = utt_id in labelled_ids
        yield torch.LongTensor(inventory.encode(wrd) if labelled else [0])
        yield labelled

    dataset.add_dynamic_item(text_pipeline)
    dataset.set_output_keys(["id", "sig", "wrd", "lang", "domain", "duration", "tokens", "labelled"])
    return dataset


def train_student(hparams, run_opts=None):
    """Distil the adapted ensemble into a target-language student; the student recipe's body.

    Keys used: ``teachers``, ``cache_folder``, ``top_k``, ``teacher_domain``,
    ``dev_csv``, ``train_csv`` (labelled), ``unlabelled_csv``, ``use_unlabelled``,
    ``agreement_filter`` (null | confidence | teacher_cer), ``agreement_threshold``,
    ``alpha``, ``temperature``, ``strategy``, ``strategy_options``, ``oov_mode``,
    ``blank_threshold``, ``blank_weight``, ``model``, ``name`` and
    :func:`speechkd.brains.ctc.fit_and_test`'s.

    Returns
    -------
    dict
        The student's ``results.json`` (with ``unlabelled``: the filter report).
    """
    from speechkd.data.pipelines import make_dataset
    from speechkd.distill.losses import DistillationLoss
    from speechkd.distill.teachers import TeacherEnsemble, open_cache_for
    from speechkd.experiment import build_model, inventory_for

    folder = hparams["output_folder"]
    ensemble = TeacherEnsemble(teacher_folders(hparams))
    cache = open_cache_for(ensemble, hparams["cache_folder"], hparams["top_k"], *cache_settings(hparams))
    inventory = inventory_for([hparams["train_csv"], hparams["valid_csv"], *hparams["test_csvs"]],
                              os.path.join(folder, TOKENS_FILE))
    model = build_model(hparams["model"], inventory, folder, hparams["name"])
    train_csv, report = student_train_manifest(hparams, cache)
    labelled_ids = {row["ID"] for row in read_manifest(hparams["train_csv"])}
    datasets = {
        "train": mixed_dataset(train_csv, hparams["data_folder"], inventory, labelled_ids, hparams["sorting"]),
        "valid": make_dataset(hparams["valid_csv"], hparams["data_folder"], inventory),
    }
    brain = LowResourceDistillBrain(modules={"model": model}, opt_class=hparams["opt_class"],
                                    hparams=hparams, run_opts=run_opts,
                                    checkpointer=make_checkpointer(hparams, model))
    brain.inventory, brain.output_folder, brain.cache = inventory, folder, cache
    brain.ctc_weight = float(hparams["alpha"])
    brain.loss_fn = DistillationLoss.from_cache(
        cache, inventory.symbols, model.frame_shift_ms, alpha=0.0, temperature=hparams["temperature"],
        strategy=hparams["strategy"], strategy_options=hparams["strategy_options"],
        oov_mode=hparams["oov_mode"], blank_threshold=hparams["blank_threshold"],
        blank_weight=hparams["blank_weight"], teacher_delay=hparams["teacher_delay"],
    )
    write_results_json(os.path.join(folder, "results.json"), {"unlabelled": report})
    return fit_and_test(brain, model, datasets, hparams)
