"""CTC training of any speechkd acoustic model with SpeechBrain's Brain."""

import json
import logging
import os

import speechbrain as sb
import torch

from speechkd.data.pipelines import make_dataset
from speechkd.decoding import ctc_greedy
from speechkd.experiment import build_model, inventory_for
from speechkd.metrics import ErrorRates, write_results_json
from speechkd.models import count_parameters, spec_augment

logger = logging.getLogger(__name__)


def decode_batch(log_probs, rel_lens, inventory):
    """Greedy CTC transcripts of a batch.

    Arguments
    ---------
    log_probs : torch.Tensor
        ``(batch, time, vocab)`` log-posteriors.
    rel_lens : torch.Tensor
        ``(batch,)`` relative lengths (SpeechBrain convention).
    inventory : speechkd.text.TokenInventory

    Returns
    -------
    list of str
    """
    abs_lens = (rel_lens * log_probs.shape[1]).round().long()
    return [inventory.decode(ids) for ids in ctc_greedy(log_probs, abs_lens)]


class CTCBrain(sb.Brain):
    """Trains ``modules.model`` with CTC on raw waveforms.

    Expected hparams: ``augment`` (bool), ``epoch_counter``, ``train_logger``,
    ``lr_annealing`` (optional). Set ``inventory`` (a TokenInventory),
    ``output_folder`` and ``test_name`` attributes before ``evaluate``.
    """

    inventory = None
    output_folder = None

    def student_log_probs(self, wavs, wav_lens, stage):
        """Features (SpecAugment while training) -> encoder -> log-softmax.

        Returns
        -------
        torch.Tensor
            ``(batch, frames, vocab)``.
        """
        model = self.modules.model
        feats = model.featurize(wavs, wav_lens)
        if stage == sb.Stage.TRAIN and self.hparams.augment:
            feats = spec_augment(feats, wav_lens)
        return model.encode(feats, wav_lens).log_softmax(dim=-1)

    def compute_forward(self, batch, stage):
        batch = batch.to(self.device)
        wavs, wav_lens = batch.sig
        return self.student_log_probs(wavs, wav_lens, stage), wav_lens

    def ctc_loss(self, log_probs, wav_lens, batch):
        tokens, token_lens = batch.tokens
        return sb.nnet.losses.ctc_loss(log_probs, tokens, wav_lens, token_lens, blank_index=0)

    def compute_objectives(self, predictions, batch, stage):
        log_probs, wav_lens = predictions
        loss = self.ctc_loss(log_probs, wav_lens, batch)
        if stage != sb.Stage.TRAIN:
            self.track_errors(log_probs, wav_lens, batch)
        return loss

    def track_errors(self, log_probs, wav_lens, batch):
        """Decode greedily and accumulate WER/CER for the current stage."""
        hyps = decode_batch(log_probs, wav_lens, self.inventory)
        self.error_rates.append(batch.id, batch.wrd, hyps, langs=batch.lang, domains=batch.domain)

    def on_stage_start(self, stage, epoch=None):
        if stage != sb.Stage.TRAIN:
            self.error_rates = ErrorRates()

    def on_stage_end(self, stage, stage_loss, epoch=None):
        stats = {"loss": stage_loss}
        if stage == sb.Stage.TRAIN:
            self.train_stats = stats
            return
        summary = self.error_rates.summary()
        stats.update(WER=summary["wer"], CER=summary["cer"])
        if stage == sb.Stage.VALID:
            lr = self.optimizer.param_groups[0]["lr"]
            annealing = getattr(self.hparams, "lr_annealing", None)
            if annealing is not None:  # on the dev loss: early on the WER sits at 100 while CTC learns
                lr, new_lr = annealing(stats["loss"])
                sb.nnet.schedulers.update_learning_rate(self.optimizer, new_lr)
            self.hparams.train_logger.log_stats(
                stats_meta={"epoch": epoch, "lr": lr},
                train_stats=self.train_stats,
                valid_stats=stats,
            )
            self.checkpointer.save_and_keep_only(meta={"WER": stats["WER"]}, min_keys=["WER"])
        else:
            self.hparams.train_logger.log_stats(
                stats_meta={"Epoch loaded": self.hparams.epoch_counter.current},
                test_stats=stats,
            )
            self.write_test_results(summary)

    def write_test_results(self, summary):
        """Write ``wer_<set>.txt`` and merge this set into ``results.json``."""
        name = self.test_name
        self.error_rates.write_wer_file(os.path.join(self.output_folder, f"wer_{name}.txt"))
        model = self.modules.model
        write_results_json(
            os.path.join(self.output_folder, "results.json"),
            {
                "params": count_parameters(model),
                "frame_shift_ms": model.frame_shift_ms,
                "sets": {name: summary},
            },
        )


@torch.no_grad()
def fit_normalizer(model, dataset, batch_size=16, max_batches=50):
    """Fit the model's global feature normalizer on (part of) a dataset.

    Arguments
    ---------
    model : speechkd.models.AcousticModel
    dataset : DynamicItemDataset
        Must provide ``sig``.
    batch_size : int
    max_batches : int
        Enough batches for stable mean/std; the rest is not read.
    """
    loader = sb.dataio.dataloader.make_dataloader(dataset, batch_size=batch_size)

    def feature_batches():
        for index, batch in enumerate(loader):
            if index == max_batches:
                break
            yield batch.sig  # raw (wavs, rel_lens): the model computes its own log-mels

    model.fit_normalizer(feature_batches())


def prepare_data(hparams):
    """Build the embedded corpus named in ``hparams`` unless it is built (main process only).

    Keys used: ``data_folder``, ``corpus_task``, ``corpus_size``, ``corpus_seed``,
    and optionally ``corpus_options`` (dict passed to ``build_corpus``).
    """
    from speechkd.data.corpus import build_corpus

    sb.utils.distributed.run_on_main(
        build_corpus,
        kwargs={
            "task": hparams["corpus_task"],
            "size": hparams["corpus_size"],
            "out": hparams["data_folder"],
            "seed": hparams["corpus_seed"],
            **hparams.get("corpus_options", {}),
        },
    )


def train_ctc(hparams, run_opts=None):
    """Train and test a CTC model as the YAML describes; the CTC recipe's body.

    Arguments
    ---------
    hparams : dict
        Loaded hyperpyyaml (see ``hparams/ctc/*.yaml`` for the keys).
    run_opts : dict, optional
        SpeechBrain run options (device, ...).

    Returns
    -------
    dict
        ``results.json`` contents after testing.
    """
    folder = hparams["output_folder"]
    inventory = inventory_for(
        [hparams["train_csv"], hparams["valid_csv"], *hparams["test_csvs"]],
        os.path.join(folder, "tokens.txt"),
    )
    model = build_model(hparams["model"], inventory, folder, hparams["name"])
    datasets = {
        "train": make_dataset(hparams["train_csv"], hparams["data_folder"], inventory, sort=hparams["sorting"]),
        "valid": make_dataset(hparams["valid_csv"], hparams["data_folder"], inventory),
    }
    brain = make_brain(CTCBrain, model, inventory, hparams, run_opts)
    return fit_and_test(brain, model, datasets, hparams)


def make_brain(brain_class, model, inventory, hparams, run_opts):
    """A ``brain_class`` over ``model`` with the YAML's optimizer and a checkpointer.

    ``inventory`` decodes the dev/test transcripts; results go to ``output_folder``.
    """
    brain = brain_class(
        modules={"model": model},
        opt_class=hparams["opt_class"],
        hparams=hparams,
        run_opts=run_opts,
        checkpointer=make_checkpointer(hparams, model),
    )
    brain.inventory, brain.output_folder = inventory, hparams["output_folder"]
    return brain


def make_checkpointer(hparams, model):
    """Checkpointer over the model, epoch counter and LR annealing (the optimizer joins in Brain)."""
    recoverables = {"model": model, "counter": hparams["epoch_counter"]}
    if hparams.get("lr_annealing") is not None:
        recoverables["scheduler"] = hparams["lr_annealing"]
    return sb.utils.checkpoints.Checkpointer(hparams["save_folder"], recoverables=recoverables)


def fit_and_test(brain, model, datasets, hparams):
    """Fit the normalizer (fresh runs), train, then test every ``test_csvs`` set.

    A resumed run recovers the normalizer with the model from its checkpoint.
    """
    if brain.checkpointer.find_checkpoint() is None and not model.normalizer_fitted:  # fine-tuning keeps its own
        fit_normalizer(model, datasets["train"], batch_size=hparams["batch_size"])
    shuffle = hparams["sorting"] == "random"
    brain.fit(
        brain.hparams.epoch_counter,
        datasets["train"],
        datasets["valid"],
        train_loader_kwargs={"batch_size": hparams["batch_size"], "shuffle": shuffle},
        valid_loader_kwargs={"batch_size": hparams["batch_size"]},
    )
    for test_csv in hparams["test_csvs"]:
        brain.test_name = os.path.splitext(os.path.basename(test_csv))[0]
        test_set = make_dataset(test_csv, hparams["data_folder"], brain.inventory)
        brain.evaluate(test_set, min_key="WER", test_loader_kwargs={"batch_size": hparams["batch_size"]})
    with open(os.path.join(brain.output_folder, "results.json")) as fin:
        return json.load(fin)
