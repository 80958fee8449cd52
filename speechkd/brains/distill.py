"""The one Brain every speechkd training recipe uses: a CTC student, an objective of terms.

Plain CTC training is the objective with the ``ctc`` term alone; distillation
adds a posterior-KL term against a teacher target; domain adaptation makes
the student hear another signal (``student_signal``) and may condition the
KL on transcripts; the low-resource student mixes labelled and unlabelled
rows (the dataset's ``labelled`` item). None of that is a subclass.

The forward pass goes through ``model.forward`` (so SpeechBrain's DDP
wrapping works), and the Brain is configured through its constructor and the
YAML: ``objective`` (:class:`speechkd.distill.Objective`), ``teacher_target``
(a ``!name:speechkd.distill.TeacherTarget`` partial, when a term needs
teachers), ``augment``, ``batch_size``, ``epoch_counter``, ``train_logger``,
``lr_annealing`` (optional), ``student_signal`` (optional, default ``sig``),
``average_checkpoints`` (optional, default 1), ``ema_decay`` (optional, default
off) and ``output_folder``.
"""

import collections
import copy
import logging
import os

import speechbrain as sb
import torch
from torch.optim.swa_utils import get_ema_multi_avg_fn

from speechkd.decoding import greedy_transcripts
from speechkd.distill.cache import PosteriorCache
from speechkd.distill.objectives import CTCTerm, ObjectiveBatch
from speechkd.distill.teachers import distributed_rank_and_world
from speechkd.metrics import ErrorRates, write_results_json
from speechkd.models import count_parameters
from speechkd.models.layers import LayerRecorder

logger = logging.getLogger(__name__)

# Schedulers that anneal by epoch number (LinearDecay is one); the others (NewBob) follow the dev loss
EPOCH_SCHEDULERS = (sb.nnet.schedulers.LinearScheduler, sb.nnet.schedulers.StepScheduler)

AVERAGED = "averaged"
"""Meta key of the checkpoint :meth:`DistillBrain.add_averaged_checkpoint` writes: how many it averages."""


class DistillBrain(sb.Brain):
    """Trains ``modules.model`` (a CTC acoustic model) on the YAML's ``objective``.

    Parameters
    ----------
    modules, opt_class, hparams, run_opts, checkpointer
        As for :class:`speechbrain.Brain`.
    inventory : speechkd.text.TokenInventory
        The student's tokens: decodes dev and test transcripts.
    teachers : PosteriorCache or TeacherEnsemble, optional
        Where teacher batches come from (by utterance ID, or run online on the
        batch); required when a term of the objective needs teachers.

    Dev and test loss is CTC on the transcripts (the LR schedule follows it);
    dev WER picks the checkpoint; ``evaluate(test_set, name=...)`` writes
    ``wer_<name>.txt`` and merges ``<name>`` into ``results.json``. With
    ``average_checkpoints: N`` (N > 1) the N best-dev-WER checkpoints are kept
    and averaged after the last epoch into one more candidate
    (:meth:`add_averaged_checkpoint`). With ``ema_decay`` set, an exponential
    moving average of the weights (:meth:`update_moving_average`) is what dev
    and test decode and the checkpoint's ``model`` (what ``transcribe``,
    ``export`` and ``init_from`` load); the trained weights, from which a
    killed run resumes, are its ``trained_model``.
    """

    def __init__(self, modules=None, opt_class=None, hparams=None, run_opts=None, checkpointer=None,
                 *, inventory, teachers=None):
        objective = hparams["objective"]
        objective.bind(modules["model"])  # terms that build modules from the student (cohort peers)
        for name, term in objective.terms.items():
            if not objective.weights[name]:  # off: its parameters get no gradient (DDP would wait for them)
                term.requires_grad_(False)
        if any(p.requires_grad for p in objective.parameters()):  # a term that learns (e.g. a hint projection)
            modules = {**modules, "objective": objective}  # trains, is checkpointed and DDP-wrapped with the model
            if checkpointer is not None:
                checkpointer.add_recoverable("objective", objective)
        super().__init__(modules, opt_class, hparams, run_opts, checkpointer)
        self.inventory = inventory
        self.student = self.modules.model  # the bare model: DDP wraps self.modules.model at fit start
        self.objective = self.hparams.objective
        self.teachers = teachers
        self.target = None
        if self.objective.needs_teacher:
            if teachers is None:
                raise ValueError("the objective has a teacher term but the recipe gave no teachers "
                                 "(a posterior cache or an online TeacherEnsemble)")
            if self.objective.teacher_layers and not hasattr(teachers, "log_probs_and_states"):
                raise ValueError(f"objective terms read teacher layers {self.objective.teacher_layers}, which a "
                                 "posterior cache does not store: run the teachers online (online: True)")
            self.target = self.hparams.teacher_target(teachers, inventory.symbols, self.student.frame_shift_ms,
                                                      blank_index=inventory.blank_index)
        self.dev_ctc = CTCTerm(blank_index=inventory.blank_index)
        self.test_name = "test"
        self.average_count = int(getattr(self.hparams, "average_checkpoints", 1))
        if self.average_count < 1:
            raise ValueError(f"average_checkpoints must be >= 1 (1: off), got {self.average_count}")
        self.moving_average = self.track_moving_average(getattr(self.hparams, "ema_decay", None), checkpointer)

    def track_moving_average(self, decay, checkpointer):
        """The model that dev and test decode: the student itself, or (``decay`` set) a copy of it
        holding an exponential moving average of its weights, registered as the checkpoint's ``model``.

        Parameters
        ----------
        decay : float or None
            Weight of the average against each optimizer step's weights (e.g. 0.999);
            None: no average.
        checkpointer : Checkpointer or None
            Gets the average as ``model`` and the trained weights as ``trained_model``.

        Returns
        -------
        torch.nn.Module or None
            The average (eval mode, no gradients), or None without ``decay``.
        """
        if decay is None:
            return None
        if not 0.0 < float(decay) < 1.0:
            raise ValueError(f"ema_decay must be between 0 and 1 (e.g. 0.999), or null for no average; got {decay}")
        self.average_step = get_ema_multi_avg_fn(float(decay))
        average = copy.deepcopy(self.student).eval().requires_grad_(False)
        if checkpointer is not None:
            checkpointer.add_recoverable("model", average)
            checkpointer.add_recoverable("trained_model", self.student)
        return average

    @property
    def evaluated_model(self):
        """The bare model that dev and test decode: the moving average when there is one, else the student."""
        return self.student if self.moving_average is None else self.moving_average

    @torch.no_grad()
    def update_moving_average(self):
        """Move the average's floating-point weights and buffers ``1 - ema_decay`` of the way to the
        student's (torch's ``get_ema_multi_avg_fn``); other buffers (counters) are copied."""
        averaged, trained = self.moving_average.state_dict(), self.student.state_dict()
        floating = [name for name, value in trained.items() if value.is_floating_point()]
        self.average_step([averaged[name] for name in floating], [trained[name] for name in floating], None)
        for name, value in trained.items():
            if not value.is_floating_point():
                averaged[name].copy_(value)

    # ------------------------------------------------------------------ forward and objective
    def compute_forward(self, batch, stage):
        batch = batch.to(self.device)
        signal = getattr(self.hparams, "student_signal", "sig") if stage == sb.Stage.TRAIN else "sig"
        wavs, wav_lens = getattr(batch, signal)
        augment = stage == sb.Stage.TRAIN and self.hparams.augment
        layers = self.objective.student_layers if stage == sb.Stage.TRAIN else []
        model = self.modules.model if stage == sb.Stage.TRAIN else self.evaluated_model
        with LayerRecorder(self.student, layers) as recorder:  # named layers for representation terms
            log_probs = model(wavs, wav_lens, spec_augment=augment)
        self.student_states = recorder.states
        return log_probs, self.student.output_lengths(wav_lens, wavs.shape[1]).to(self.device)

    def compute_objectives(self, predictions, batch, stage):
        log_probs, frames = predictions
        tokens, token_lens = batch.tokens if hasattr(batch, "tokens") else (None, None)
        if stage != sb.Stage.TRAIN:
            self.track_errors(log_probs, frames, batch)
            if tokens is None:
                return torch.zeros((), device=self.device)
            return self.dev_ctc(ObjectiveBatch(log_probs, frames, tokens, token_lens))
        if not self.objective.needs_transcripts:
            tokens = token_lens = None
        labelled = getattr(batch, "labelled", None)
        layers = self.objective.teacher_layers
        teacher = (None if self.target is None else self.teachers.teacher_batch(batch, self.device, layers=layers)
                   if layers else self.teachers.teacher_batch(batch, self.device))
        objective = self.modules["objective"] if "objective" in self.modules else self.objective  # noqa: SIM401 (ModuleDict has no .get)
        inputs = getattr(batch, getattr(self.hparams, "student_signal", "sig")) if self.objective.needs_inputs else None
        values = objective(ObjectiveBatch(log_probs, frames, tokens, token_lens, labelled,
                                               teacher, self.target, student_states=self.student_states,
                                               inputs=inputs, model=self.student, teachers=self.teachers))
        self.log_terms(values)
        return values["loss"]

    def on_fit_batch_end(self, batch, outputs, loss, should_step):
        if should_step and self.moving_average is not None:
            self.update_moving_average()

    def log_terms(self, values):
        """Accumulate each term's value (and its statistics) for the epoch's train stats."""
        if len(self.objective.terms) < 2:
            return
        for key, value in values.items():
            if key != "loss":
                self.term_sums[key][0] += float(value.detach() if torch.is_tensor(value) else value)
                self.term_sums[key][1] += 1

    def track_errors(self, log_probs, frames, batch):
        """Decode greedily (``frames``: (batch,) valid output frames) and accumulate WER/CER for the current stage."""
        hyps = greedy_transcripts(log_probs, frames, self.inventory)
        self.error_rates.append(batch.id, batch.wrd, hyps, langs=batch.lang, domains=batch.domain)

    # ------------------------------------------------------------------ stages
    def fit(self, epoch_counter, train_set, valid_set=None, **kwargs):
        """Fit the student's feature normalizer on ``train_set`` (fresh runs only), then SpeechBrain's fit.

        A resumed run recovers the normalizer with the model; a model that
        arrives fitted (fine-tuning) keeps its own. Loaders default to the
        YAML's ``batch_size``, the training one shuffled when ``sorting: random``,
        or batched by total duration with ``dynamic_batching`` (see
        :meth:`train_loader_kwargs`). A training utterance missing from the
        posterior cache is refused here, before the first epoch. With
        ``average_checkpoints`` above 1 the best checkpoints are averaged
        after the last epoch (:meth:`add_averaged_checkpoint`). The moving
        average (``ema_decay``) starts from the student's weights as they arrive
        (random, or ``init_from``'s) with its normalizer fitted; a resumed run
        recovers it.
        """
        if self.target is not None and isinstance(self.teachers, PosteriorCache):
            self.teachers.require(train_set.data_ids, f"the training set ({len(train_set)} utterances)")
        if self.checkpointer.find_checkpoint() is None and not self.student.normalizer_fitted:
            _, world = distributed_rank_and_world()
            # in batches of the global batch: every rank fits what a single process would
            fit_normalizer(self.student, train_set, batch_size=self.hparams.batch_size * world)
        if self.moving_average is not None:
            self.moving_average.load_state_dict(self.student.state_dict())
        kwargs.setdefault("train_loader_kwargs", self.train_loader_kwargs(train_set))
        kwargs.setdefault("valid_loader_kwargs", self.eval_loader_kwargs(valid_set))
        super().fit(epoch_counter, train_set, valid_set, **kwargs)
        if self.average_count > 1 and valid_set is not None:
            self.add_averaged_checkpoint(valid_set)

    def add_averaged_checkpoint(self, valid_set):
        """Average the best checkpoints' weights into one more checkpoint, scored on ``valid_set``.

        The ``average_checkpoints`` checkpoints with the lowest dev WER (kept
        for this by :meth:`on_stage_end`, beside as many of the most recent) are
        averaged parameter by parameter (SpeechBrain's ``average_checkpoints``,
        with :func:`average_weights`), as SpeechBrain's and ESPnet's recipes do
        before testing. The average is decoded on ``valid_set`` and saved as a
        checkpoint whose ``WER`` is that dev WER, ``averaged`` how many it
        averages and ``of`` their folders; the test, ``transcribe`` and
        ``export`` load the lowest dev WER of all, so the average is used only
        where it wins on dev (a tie goes to the trained checkpoint). A rerun
        with the same best checkpoints leaves it; one that trained more epochs
        replaces it.

        Parameters
        ----------
        valid_set : DynamicItemDataset
            The dev set of :meth:`fit`.
        """
        trained = self.checkpointer.find_checkpoints(ckpt_predicate=lambda ckpt: AVERAGED not in ckpt.meta)
        best = self.checkpointer.find_checkpoints(min_key="WER", max_num_checkpoints=self.average_count,
                                                  ckpt_predicate=lambda ckpt: AVERAGED not in ckpt.meta)
        sources = sorted(ckpt.path.name for ckpt in best)
        old = self.checkpointer.find_checkpoints(ckpt_predicate=lambda ckpt: AVERAGED in ckpt.meta)
        if [ckpt.meta.get("of") for ckpt in old] == [sources]:
            return
        if old:  # from before this run trained more epochs
            self.checkpointer.delete_checkpoints(num_to_keep=0, ckpt_predicate=lambda ckpt: AVERAGED in ckpt.meta)
        if len(best) < self.average_count:
            logger.warning("average_checkpoints is %d, but %s holds %d checkpoints with a dev WER (a run started "
                           "before the key was set keeps one): averaging %d", self.average_count,
                           self.checkpointer.checkpoints_dir, len(best), len(best))
        if len(best) < 2:
            return
        averaged = sb.utils.checkpoints.average_checkpoints(best, "model", averager=average_weights)
        self.evaluated_model.load_state_dict(averaged)
        summary = self.score(valid_set)
        # Dated before every trained checkpoint: SpeechBrain resumes from the most recent checkpoint
        # (training more epochs must go on from the last epoch's weights, not from the average) and
        # breaks dev-WER ties by recency (a tie must keep the trained checkpoint)
        oldest = min(ckpt.meta["unixtime"] for ckpt in trained)
        self.checkpointer.save_checkpoint(
            meta={"WER": summary["wer"], AVERAGED: len(best), "of": sources, "unixtime": oldest - 1.0},
            name=f"average-of-{len(best)}")
        self.hparams.train_logger.log_stats(stats_meta={"averaged checkpoints": len(best)},
                                            valid_stats={"WER": summary["wer"], "CER": summary["cer"]})
        logger.info("Averaged the %d best checkpoints (dev WER %s): dev WER %.2f, CER %.2f",
                    len(best), ", ".join(f"{ckpt.meta['WER']:.2f}" for ckpt in best), summary["wer"], summary["cer"])

    @torch.no_grad()
    def score(self, dataset):
        """Greedy WER/CER of the model as it is on ``dataset`` (no checkpoint loaded or saved).

        Starts a dev stage: resets the Brain's ``error_rates`` and puts the modules in eval mode.

        Parameters
        ----------
        dataset : DynamicItemDataset
            Provides ``sig``, ``wrd``, ``lang`` and ``domain``.

        Returns
        -------
        dict
            :meth:`speechkd.metrics.ErrorRates.summary` (``wer``, ``cer``, ...), every rank's share gathered.
        """
        # ckpt_prefix=None: SpeechBrain would otherwise register the loader as a recoverable, and every
        # checkpoint saved before it would then lack that file and be skipped as incomplete
        loader = self.make_dataloader(dataset, sb.Stage.VALID, ckpt_prefix=None, **self.eval_loader_kwargs(dataset))
        self.on_stage_start(sb.Stage.VALID)
        self.modules.eval()
        for batch in loader:
            log_probs, frames = self.compute_forward(batch, sb.Stage.VALID)
            self.track_errors(log_probs, frames, batch)
        return self.error_rates.gathered().summary()

    def train_loader_kwargs(self, train_set):
        """``batch_size`` and ``shuffle``, or a duration-bucketed batch sampler when the YAML's
        ``dynamic_batching`` is set (the keyword arguments of SpeechBrain's
        ``DynamicBatchSampler``, e.g. ``{max_batch_length: 300, num_buckets: 30}``, in seconds).

        The sampler is seeded with the YAML's ``seed`` and becomes the Brain's
        ``train_sampler``, so SpeechBrain calls its ``set_epoch`` before every
        epoch: in one process each epoch's batches are a function of (seed,
        epoch), and a resumed run draws the same ones as an uninterrupted run.
        Under torchrun SpeechBrain's ``DistributedSamplerWrapper`` replaces it
        and deals the batches out with its own seed, deterministic per epoch.
        """
        dynamic = getattr(self.hparams, "dynamic_batching", None)
        if not dynamic:
            return {"batch_size": self.hparams.batch_size, "shuffle": self.hparams.sorting == "random"}
        ordering = self.hparams.sorting if self.hparams.sorting in ("random", "descending") else "ascending"
        sampler = sb.dataio.sampler.DynamicBatchSampler(
            train_set, length_func=lambda item: item["duration"], shuffle=ordering == "random",
            batch_ordering=ordering, **{"seed": self.hparams.seed, **dynamic})
        _, world = distributed_rank_and_world()
        if world > 1 and len(sampler) <= world:  # SpeechBrain's DistributedSamplerWrapper breaks on 1 batch a rank
            raise ValueError(f"dynamic_batching {dict(dynamic)} cuts the training set ({len(train_set)} utterances) "
                             f"into {len(sampler)} batches, too few for {world} ranks: lower max_batch_length")
        self.train_sampler = sampler  # under DDP, SpeechBrain wraps it and replaces this
        return {"batch_sampler": sampler}

    def eval_loader_kwargs(self, dataset):
        """``batch_size``; under torchrun also a sampler giving each rank its share of the set, in order
        (the ranks' error statistics are gathered in :meth:`on_stage_end`)."""
        if not self.distributed_launch or dataset is None:
            return {"batch_size": self.hparams.batch_size}
        sampler = torch.utils.data.DistributedSampler(dataset, rank=self.rank, shuffle=False)
        return {"batch_size": self.hparams.batch_size, "sampler": sampler}

    def evaluate(self, test_set, name="test", min_key="WER", **kwargs):
        """SpeechBrain's evaluate on the best-dev-WER checkpoint; results go to ``wer_<name>.txt`` and ``results.json``."""
        self.test_name = name
        kwargs.setdefault("test_loader_kwargs", self.eval_loader_kwargs(test_set))
        return super().evaluate(test_set, min_key=min_key, **kwargs)

    def on_stage_start(self, stage, epoch=None):
        if stage != sb.Stage.TRAIN:
            self.error_rates = ErrorRates()
        else:
            self.term_sums = collections.defaultdict(lambda: [0.0, 0])

    def on_stage_end(self, stage, stage_loss, epoch=None):
        stats = {"loss": stage_loss}
        if stage == sb.Stage.TRAIN:
            stats.update({key: total / count for key, (total, count) in self.term_sums.items()})
            self.train_stats = stats
            return
        self.error_rates = self.error_rates.gathered()  # every rank's share, padding counted once
        stats["loss"] = mean_across_ranks(stage_loss)  # one LR schedule and checkpoint choice on every rank
        summary = self.error_rates.summary()
        stats.update(WER=summary["wer"], CER=summary["cer"])
        if stage == sb.Stage.VALID:
            lr = self.optimizer.param_groups[0]["lr"]
            annealing = getattr(self.hparams, "lr_annealing", None)
            if annealing is not None:  # NewBob on the dev loss (early on the WER sits at 100), LinearDecay by epoch
                lr, new_lr = annealing(epoch if isinstance(annealing, EPOCH_SCHEDULERS) else stats["loss"])
                sb.nnet.schedulers.update_learning_rate(self.optimizer, new_lr)
            self.hparams.train_logger.log_stats(
                stats_meta={"epoch": epoch, "lr": lr}, train_stats=self.train_stats, valid_stats=stats,
            )
            self.checkpointer.save_and_keep_only(meta={"WER": stats["WER"]}, min_keys=["WER"],
                                                 num_to_keep=self.average_count)
        else:
            self.hparams.train_logger.log_stats(
                stats_meta={"Epoch loaded": self.hparams.epoch_counter.current}, test_stats=stats,
            )
            self.write_test_results(summary)

    def write_test_results(self, summary):
        """Write ``wer_<name>.txt`` and merge this set into ``results.json`` (main process only)."""
        if not sb.utils.distributed.if_main_process():
            return
        folder = self.hparams.output_folder
        self.error_rates.write_wer_file(os.path.join(folder, f"wer_{self.test_name}.txt"))
        write_results_json(os.path.join(folder, "results.json"), {
            "params": count_parameters(self.student, trainable_only=False),  # frozen layers count too
            "frame_shift_ms": self.student.frame_shift_ms,
            "sets": {self.test_name: summary},
        })


def average_weights(state_dicts):
    """The parameter-wise mean of model state dicts (an ``averager`` for SpeechBrain's ``average_checkpoints``).

    Floating-point tensors are averaged; the others (a fitted flag, counters)
    are taken from the first state dict, the best checkpoint's.

    Parameters
    ----------
    state_dicts : iterable of dict
        State dicts of one architecture.

    Returns
    -------
    dict
        Name -> tensor.
    """
    iterator = iter(state_dicts)
    first = next(iterator, None)
    if first is None:
        raise ValueError("no state dicts to average")
    sums = {name: value.double() if value.is_floating_point() else value for name, value in first.items()}
    count = 1
    for state in iterator:
        if state.keys() != first.keys():
            raise ValueError(f"cannot average checkpoints of different models: parameters "
                             f"{sorted(state.keys() ^ first.keys())[:5]} are in one and not the other")
        for name, value in state.items():
            if value.shape != first[name].shape:
                raise ValueError(f"cannot average checkpoints of different models: {name} is "
                                 f"{tuple(value.shape)} in one and {tuple(first[name].shape)} in the other")
            if value.is_floating_point():
                sums[name] += value.double()
        count += 1
    return {name: (value / count).to(first[name].dtype) if first[name].is_floating_point() else value
            for name, value in sums.items()}


def mean_across_ranks(value):
    """The mean of a float over the torchrun ranks (the value itself in a single process)."""
    _, world = distributed_rank_and_world()
    if world == 1:
        return value
    total = torch.tensor(float(value), dtype=torch.float64)
    torch.distributed.all_reduce(total)
    return total.item() / world


@torch.no_grad()
def fit_normalizer(model, dataset, batch_size=16, max_batches=50):
    """Fit the model's global feature normalizer on (part of) a dataset.

    Parameters
    ----------
    model : speechkd.models.AcousticModel
    dataset : DynamicItemDataset
        Must provide ``sig``.
    batch_size : int
    max_batches : int
        Enough batches for stable mean/std; the rest is not read.
    """
    loader = sb.dataio.dataloader.make_dataloader(dataset, batch_size=batch_size)

    def audio_batches():
        for index, batch in enumerate(loader):
            if index == max_batches:
                break
            yield batch.sig  # raw (wavs, rel_lens): the model computes its own log-mels

    model.fit_normalizer(audio_batches())
