"""Evaluation of a set of trained models and their fused ensemble, as the pipeline reports them.

The fused ensemble is decoded through one code path,
:meth:`speechkd.distill.target.TeacherTarget.fused_log_probs` (the KD target
at τ = 1 on the frames every teacher covers), whether the teachers come from
a posterior cache or run online (:func:`fused_error_rates`).
"""

import glob
import json
import os
import time

import numpy as np
import speechbrain as sb
import torch

from speechkd.data.manifest import read_manifest
from speechkd.data.pipelines import make_dataset
from speechkd.decoding import greedy_transcripts
from speechkd.distill.agreement import spike_offsets, spike_tokens, teacher_agreement
from speechkd.distill.cache import PosteriorCache
from speechkd.distill.target import TeacherTarget
from speechkd.distill.teachers import TeacherEnsemble, build_cache
from speechkd.experiment import load_model, write_json
from speechkd.inference import iterate_posteriors
from speechkd.metrics import ErrorRates
from speechkd.models import count_parameters


def checkpoint_bytes(folder):
    """Size on disk of the model weights in the experiment's best checkpoint."""
    sizes = [os.path.getsize(p) for p in glob.glob(os.path.join(folder, "save", "CKPT+*", "model.ckpt"))]
    return max(sizes) if sizes else None


def measure_rtf(model, dataset, threads, repeats=3):
    """CPU real-time factor, one utterance at a time, median of ``repeats`` passes.

    Returns
    -------
    float
        Compute seconds per audio second.
    """
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        audio = sum(dataset[i]["duration"] for i in range(len(dataset)))
        runs = []
        for _ in range(repeats):
            start = time.perf_counter()
            for _batch in iterate_posteriors(model, dataset, batch_size=1):
                pass
            runs.append(time.perf_counter() - start)
        return sorted(runs)[len(runs) // 2] / audio
    finally:
        torch.set_num_threads(previous)


def fused_error_rates(teachers, inventory, dataset, strategy="average", strategy_options=None, dev_wer=None,
                      batch_size=16):
    """Greedy WER/CER of the ensemble's fused posteriors (``strategy`` at τ = 1).

    One code path for cached and online teachers: the KD target
    (:meth:`~speechkd.distill.target.TeacherTarget.fused_log_probs`) of
    whatever :meth:`teacher_batch` gives.

    Parameters
    ----------
    teachers : speechkd.distill.teachers.TeacherSource
        A :class:`~speechkd.distill.cache.PosteriorCache` of the teachers on
        ``dataset``, or a :class:`~speechkd.distill.teachers.TeacherEnsemble`
        run now.
    inventory : speechkd.text.TokenInventory
        The teachers' inventory, in which the fused posteriors are decoded.
    dataset : DynamicItemDataset
        With ``wrd``, ``lang`` and ``domain`` (and the audio an online ensemble hears).
    strategy : str
        ``best`` picks per utterance the teacher closest to the reference:
        an oracle at test time, reported as such (a cache only: online
        teachers have no per-utterance errors, nor a dev WER for ``weighted``
        without static ``strategy_options.weights``).
    strategy_options : dict, optional
    dev_wer : list of float, optional
        Teachers' dev WER for ``weighted`` (a test cache has none); defaults to the teachers'.
    batch_size : int

    Returns
    -------
    speechkd.metrics.ErrorRates
    """
    target = TeacherTarget(teachers, inventory.symbols, max(teachers.frame_shifts_ms), strategy=strategy,
                           strategy_options=strategy_options, dev_wer=dev_wer)
    error_rates = ErrorRates()
    for batch in sb.dataio.dataloader.make_dataloader(dataset, batch_size=batch_size):
        log_probs, frames = target.fused_log_probs(teachers.teacher_batch(batch))
        error_rates.append(batch.id, batch.wrd, greedy_transcripts(log_probs, frames, inventory),
                           langs=batch.lang, domains=batch.domain)
    return error_rates


def evaluate_pipeline_models(model_folders, test_csv, data_folder, out, strategies, threads,
                             teacher_names, train_cache=None):
    """Evaluate every model and the teachers' ensemble on the test set.

    Writes ``<out>/models.json`` (per model: params, bytes, frame shift, RTF,
    test summary from the model's own results.json) and
    ``<out>/ensemble.json`` (per strategy: WER/CER summary; teacher spike
    agreement). ``train_cache`` (a PosteriorCache folder) supplies the dev WER for ``weighted``.
    """
    os.makedirs(out, exist_ok=True)
    test_name = os.path.splitext(os.path.basename(test_csv))[0]
    models = {}
    for name, folder in model_folders.items():
        model, inventory = load_model(folder)
        dataset = make_dataset(test_csv, data_folder, inventory)
        with open(os.path.join(folder, "results.json")) as fin:
            results = json.load(fin)
        models[name] = {
            "folder": folder,
            "params": count_parameters(model),
            "bytes": checkpoint_bytes(folder),
            "frame_shift_ms": model.frame_shift_ms,
            "rtf": measure_rtf(model, dataset, threads),
            "rtf_threads": threads,
            "test": results["sets"][test_name],
        }
    write_json(os.path.join(out, "models.json"), models)

    # each teacher's model.json name is its key here, so the cache names match teacher_names
    ensemble = TeacherEnsemble([model_folders[name] for name in teacher_names])
    dataset = make_dataset(test_csv, data_folder, ensemble.inventory, sort="none")
    cache = build_cache(ensemble, {"test": dataset}, os.path.join(out, "test_cache"), k=0,
                        features={"sample_rate": 16000, "split": test_name},
                        dev_split=None, manifest=os.path.abspath(test_csv))
    dev_wer = PosteriorCache.open(train_cache).dev_wer_list() if train_cache else None
    fused = {}
    for strategy in strategies:
        if strategy == "weighted" and dev_wer is None:
            continue
        strategy_rates = fused_error_rates(cache, ensemble.inventory, dataset, strategy, dev_wer=dev_wer)
        fused[strategy] = strategy_rates.summary()
        strategy_rates.write_wer_file(os.path.join(out, f"wer_{test_name}_ensemble_{strategy}.txt"))
    agreement = teacher_agreement(cache, read_manifest(test_csv), strategies=[])
    delay = student_spike_delay(load_model(model_folders["baseline"])[0], dataset, cache)
    write_json(os.path.join(out, "ensemble.json"),
               {"strategies": fused, "agreement": agreement, "baseline_spike_delay": delay})
    return models, fused


def student_spike_delay(student, dataset, cache):
    """Median frames by which a student's spikes follow each teacher's (test set).

    Parameters
    ----------
    student : speechkd.models.AcousticModel
        Same inventory and frame shift as the cached teachers.
    dataset : DynamicItemDataset
    cache : PosteriorCache
        Full-distribution cache of the teachers on ``dataset``.

    Returns
    -------
    dict
        Teacher name -> median offset in frames (positive: the student is later).
    """
    offsets = {name: [] for name in cache.teacher_names}
    for batch, log_probs, frames in iterate_posteriors(student, dataset):
        for row, utt_id in enumerate(batch.id):
            mine = spike_tokens(log_probs[row, : frames[row]].numpy())
            for name, (values, _ids) in zip(cache.teacher_names, cache.get(utt_id)):
                offsets[name] += spike_offsets(spike_tokens(np.asarray(values, dtype=np.float32)), mine)
    return {name: float(np.median(o)) if o else None for name, o in offsets.items()}
