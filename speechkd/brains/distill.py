"""Distillation of a teacher ensemble into a student (cached or online teachers)."""

import os

import speechbrain as sb
import torch

from speechkd.brains.ctc import CTCBrain, fit_and_test, make_brain
from speechkd.data.pipelines import make_dataset
from speechkd.distill.losses import DistillationLoss
from speechkd.distill.teachers import TeacherEnsemble, build_cache, open_cache_for
from speechkd.experiment import build_model, inventory_for, model_name


class DistillBrain(CTCBrain):
    """CTCBrain whose training objective is DESIGN.md's KD loss.

    ``alpha * CTC + (1 - alpha) * tau^2 * mean_t KL(teacher^tau || student^tau)``,
    teachers read from a posterior cache by utterance ID, or run online on
    the batch (``online: True``) when the teacher's input is transformed on
    the fly. The CTC and KD parts are logged separately.

    Attributes set before ``fit``: ``loss_fn`` (DistillationLoss), ``cache``
    (PosteriorCache or None), ``ensemble`` (TeacherEnsemble, online only),
    ``teacher_signal`` (batch item the online teachers hear: ``sig`` or
    ``sig_parallel``).
    """

    cache = None
    ensemble = None
    teacher_signal = "sig"

    def teacher_batch(self, batch):
        """The teachers' tensors for this batch, from the cache or computed online."""
        if self.cache is not None:
            return self.cache.collate(batch.id, device=self.device)
        wavs, wav_lens = getattr(batch, self.teacher_signal)
        return self.ensemble.teacher_batch(wavs, wav_lens, self.loss_fn_k)

    @property
    def loss_fn_k(self):
        return self.hparams.top_k

    def compute_objectives(self, predictions, batch, stage):
        log_probs, wav_lens = predictions
        if stage != sb.Stage.TRAIN:
            self.track_errors(log_probs, wav_lens, batch)
            if not hasattr(batch, "tokens"):
                return torch.zeros((), device=self.device)
            return self.ctc_loss(log_probs, wav_lens, batch)
        tokens, token_lens = batch.tokens if self.loss_fn.alpha > 0 else (None, None)
        parts = self.loss_fn(log_probs, wav_lens, self.teacher_batch(batch), tokens, token_lens)
        for key in ("ctc", "kd"):
            self.loss_parts[key] += float(parts[key].detach())
        self.loss_parts["batches"] += 1
        return parts["loss"]

    def on_stage_start(self, stage, epoch=None):
        super().on_stage_start(stage, epoch)
        if stage == sb.Stage.TRAIN:
            self.loss_parts = {"ctc": 0.0, "kd": 0.0, "batches": 0}

    def on_stage_end(self, stage, stage_loss, epoch=None):
        super().on_stage_end(stage, stage_loss, epoch)
        if stage == sb.Stage.TRAIN:
            batches = max(self.loss_parts["batches"], 1)
            self.train_stats.update(
                ctc=self.loss_parts["ctc"] / batches, kd=self.loss_parts["kd"] / batches
            )


def teacher_folders(hparams):
    """``teachers`` in YAML (a list of experiment folders) -> {name: folder}.

    Names come from each folder's ``model.json``; a repeated name gets the
    folder's position appended.
    """
    folders = {}
    for index, folder in enumerate(hparams["teachers"]):
        if not os.path.exists(os.path.join(folder, "model.json")):
            raise FileNotFoundError(f"teacher {index}: no trained model at {folder} (no model.json)")
        name = model_name(folder)
        folders[f"{name}{index}" if name in folders else name] = folder
    return folders


def cache_settings(hparams):
    """What the cached posteriors depend on besides the teachers and k (recorded in meta.json).

    Returns
    -------
    features : dict
        Sample rate, corpus folder and the domain the teachers heard.
    manifest : str
        Absolute path of the dev manifest, the transcripts of the agreement diagnostic.
    """
    features = {"sample_rate": 16000, "data_folder": os.path.abspath(hparams["data_folder"]),
                "teacher_domain": hparams["teacher_domain"]}
    return features, os.path.abspath(hparams["dev_csv"])


def cache_teachers(hparams, run_opts=None):
    """Cache the ensemble's top-k posteriors on the train and dev manifests; the cache recipe's body."""
    device = (run_opts or {}).get("device") or "cpu"
    ensemble = TeacherEnsemble(teacher_folders(hparams), device=device)
    datasets = {
        split: make_dataset(csv, hparams["data_folder"], need_text=False, sort="none")
        for split, csv in {"train": hparams["train_csv"], "dev": hparams["dev_csv"]}.items()
    }
    features, manifest = cache_settings(hparams)
    return build_cache(
        ensemble, datasets, hparams["cache_folder"], hparams["top_k"], features,
        batch_size=hparams["batch_size"], manifest=manifest,
    )


def train_distill(hparams, run_opts=None):
    """Distil the teachers into the YAML's student, then test it; the distill recipe's body.

    Returns
    -------
    dict
        The student's ``results.json``.
    """

    folder = hparams["output_folder"]
    device = (run_opts or {}).get("device") or "cpu"
    ensemble = TeacherEnsemble(teacher_folders(hparams), device=device)
    inventory = student_inventory(hparams, ensemble, folder)
    model = build_model(hparams["model"], inventory, folder, hparams["name"])
    need_text = hparams["alpha"] > 0
    online = hparams["online"]
    train_set = make_dataset(
        hparams["train_csv"], hparams["data_folder"], inventory, need_text=need_text,
        parallel_manifest=hparams.get("teacher_csv") if online else None,
        sort=hparams["sorting"],
    )
    datasets = {"train": train_set,
                "valid": make_dataset(hparams["valid_csv"], hparams["data_folder"], inventory)}
    brain = make_brain(DistillBrain, model, inventory, hparams, run_opts)
    kd_options = dict(
        alpha=hparams["alpha"], temperature=hparams["temperature"], strategy=hparams["strategy"],
        strategy_options=hparams["strategy_options"], oov_mode=hparams["oov_mode"],
        blank_threshold=hparams["blank_threshold"], blank_weight=hparams["blank_weight"],
        teacher_delay=hparams["teacher_delay"],
    )
    if online:
        brain.ensemble = ensemble
        brain.teacher_signal = "sig_parallel" if hparams.get("teacher_csv") else "sig"
        brain.loss_fn = DistillationLoss(
            teacher_symbols=[ensemble.inventory.symbols] * len(ensemble.names),
            student_symbols=inventory.symbols,
            teacher_frame_shifts_ms=[m.frame_shift_ms for m in ensemble.models],
            student_frame_shift_ms=model.frame_shift_ms,
            k=hparams["top_k"], teacher_names=ensemble.names, **kd_options,
        )
    else:
        brain.cache = open_cache_for(ensemble, hparams["cache_folder"], hparams["top_k"],
                                     *cache_settings(hparams))
        brain.loss_fn = DistillationLoss.from_cache(
            brain.cache, inventory.symbols, model.frame_shift_ms, **kd_options
        )
    return fit_and_test(brain, model, datasets, hparams)


def student_inventory(hparams, ensemble, folder):
    """The student's tokens: the teachers' (``student_tokens: teachers``) or its data's (``own``).

    With ``own``, the KD loss maps teacher tokens to the student's by symbol.
    """
    path = os.path.join(folder, "tokens.txt")
    if hparams["student_tokens"] == "teachers":
        ensemble.inventory.save(path)
        return ensemble.inventory
    labelled = [hparams["train_csv"]] if hparams["alpha"] > 0 else []
    return inventory_for([*labelled, hparams["valid_csv"], *hparams["test_csvs"]], path)
