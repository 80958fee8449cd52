"""Evaluation of a set of trained models and their fused ensemble, as the pipeline reports them.

The fused ensemble is decoded through one code path,
:meth:`speechkd.distill.target.TeacherTarget.fused_log_probs` (the KD target
at τ = 1 on the frames every teacher covers), whether the teachers come from
a posterior cache or run online (:func:`fused_error_rates`).
"""

import collections
import contextlib
import glob
import json
import logging
import os
import time

import numpy as np
import soundfile as sf
import speechbrain as sb
import torch

from speechkd.data.manifest import read_manifest
from speechkd.data.pipelines import (
    checked_rows,
    count_unknown_characters,
    make_dataset,
    resolve_path,
)
from speechkd.decoding import BigramWordLM, LexiconDecoder, greedy_transcripts
from speechkd.distill.agreement import spike_offsets, spike_tokens, teacher_agreement
from speechkd.distill.cache import PosteriorCache
from speechkd.distill.target import fused_posteriors
from speechkd.distill.teachers import TeacherEnsemble, build_cache
from speechkd.experiment import load_model, write_json
from speechkd.inference import iterate_posteriors
from speechkd.metrics import ErrorRates, wer_file_name
from speechkd.models import count_parameters

logger = logging.getLogger(__name__)


def checkpoint_bytes(folder):
    """Size on disk of the model weights in the experiment's best checkpoint."""
    sizes = [os.path.getsize(p) for p in glob.glob(os.path.join(folder, "save", "CKPT+*", "model.ckpt"))]
    return max(sizes) if sizes else None


def measure_rtf(model, dataset, threads, repeats=3, max_audio_seconds=60.0):
    """CPU real-time factor, one utterance at a time, median of ``repeats`` passes.

    Parameters
    ----------
    model : speechkd.models.AcousticModel
    dataset : DynamicItemDataset
        Provides ``sig``; its static data a ``duration`` per utterance (seconds).
    threads : int or None
        Torch intra-op threads (``None``: torch's choice).
    repeats : int
        Passes timed; their median is reported.
    max_audio_seconds : float or None
        Time every k-th utterance only, k the largest that still gives at least
        this much audio: a rate per audio second needs no whole test set, and
        utterances spread over the set keep every language (manifests are
        grouped by language). ``None``: all of it.

    Returns
    -------
    float
        Compute seconds per audio second.
    """
    timed = rtf_subset(dataset, max_audio_seconds)
    audio = sum(float(dataset.data[utt_id]["duration"]) for utt_id in timed.data_ids)
    with torch_threads(threads):
        runs = []
        for _ in range(repeats):
            start = time.perf_counter()
            for _batch in iterate_posteriors(model, timed, batch_size=1):
                pass
            runs.append(time.perf_counter() - start)
        return sorted(runs)[len(runs) // 2] / audio


def rtf_subset(dataset, max_audio_seconds):
    """Every k-th utterance of ``dataset``, k the largest giving at least ``max_audio_seconds`` of audio
    (durations read from the static data, no audio loaded); the whole set when that is None or more."""
    ids = list(dataset.data_ids)
    durations = [float(dataset.data[utt_id]["duration"]) for utt_id in ids]
    step = 1 if max_audio_seconds is None else max(1, int(sum(durations) // max_audio_seconds))
    while step > 1 and sum(durations[::step]) < max_audio_seconds:
        step -= 1
    return sb.dataio.dataset.FilteredSortedDynamicItemDataset(dataset, ids[::step])


@contextlib.contextmanager
def torch_threads(threads):
    """Run the block with ``threads`` intra-op torch threads (``None``: leave torch's choice)."""
    previous = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def audio_rates(rows, data_root):
    """Sample rate -> number of files among manifest ``rows`` (headers only)."""
    return collections.Counter(sf.info(resolve_path(row["wav"], data_root)).samplerate for row in rows)


def evaluate_manifest(model_folder, manifest, data_root=None, resample=False, threads=None, batch_size=16,
                      output=None, lexicon=None, lm_weight=0.5, word_score=0.0, decode=None):
    """WER/CER of a trained model on any labelled manifest, at any sample rate.

    Rows are checked as the training pipeline checks them (missing, corrupt,
    NaN audio, empty transcripts): skipped, counted and named with
    manifest:line in the log. A reference is never encoded, so characters
    outside the model's inventory do not drop its row (that would flatter
    the WER): they are counted and logged as the training pipeline counts
    them, and scored as the errors they are.
    Audio at another rate than the model's is resampled with the one
    resampler every input path shares (:func:`speechkd.resampling.resample`),
    or refused without ``resample``. Decoding is greedy, or with ``lexicon``
    a word beam search over the words of a training manifest with their
    bigram LM (:class:`speechkd.decoding.LexiconDecoder`); the valid frames
    come from each file's sample count, so the batch size does not change
    the result.

    Parameters
    ----------
    model_folder : str
        Experiment folder of a trained model (``model.json``, ``tokens.txt``, ``save/``).
    manifest : str
        SpeechBrain CSV with transcripts.
    data_root : str, optional
        Replacement for ``$data_root`` (default: the manifest's folder).
    resample : bool
    threads : int, optional
        torch intra-op threads.
    batch_size : int
    output : str, optional
        Folder for ``wer_<set>.txt`` (SpeechBrain's format) and ``evaluate_<set>.json``
        (``wer_<set>_lexicon.txt`` ... with ``lexicon``).
    lexicon : str, optional
        A manifest (the model's ``train.csv``) whose transcripts give the
        decoder's words and bigram LM; ``None``: greedy decoding.
    lm_weight, word_score : float
        The lexicon decoder's LM weight and per-word score.
    decode : callable, optional
        The decoder of ``lexicon`` already built for the model's inventory
        (:func:`make_decoder`), so that several models share one.

    Returns
    -------
    dict
        :meth:`ErrorRates.summary` plus ``decoding`` (``"greedy"`` or
        ``"lexicon"``), ``intervals`` (95 % bootstrap,
        :meth:`ErrorRates.intervals`), ``skipped`` (reason -> rows),
        ``resampled`` (source rate -> files), ``unknown_characters`` (reference
        characters the model cannot write), ``set``, ``manifest`` and ``model``.

    Raises
    ------
    ValueError
        Audio at another rate without ``resample`` (the message says how
        many files and which option converts them), or no usable row.
    """
    model, inventory = load_model(model_folder)
    data_root = data_root or os.path.dirname(os.path.abspath(manifest))
    set_name = os.path.splitext(os.path.basename(manifest))[0]
    rows, skipped = checked_rows(manifest, data_root, resample=True)
    if not rows:
        raise ValueError(f"{manifest}: no usable row ({dict(skipped)})")
    foreign = {rate: n for rate, n in audio_rates(rows, data_root).items() if rate != model.sample_rate}
    if foreign and not resample:
        raise ValueError(f"{manifest}: {sum(foreign.values())} of {len(rows)} files are not at the model's "
                         f"{model.sample_rate} Hz ({', '.join(f'{n} at {r} Hz' for r, n in sorted(foreign.items()))}); "
                         "rerun with --resample to convert them")
    if foreign:
        logger.info("%s: resampling %d of %d files to %d Hz (%s)", manifest, sum(foreign.values()), len(rows),
                    model.sample_rate, ", ".join(f"{n} from {r} Hz" for r, n in sorted(foreign.items())))
    unknown = count_unknown_characters(manifest, rows, inventory, consequence="are scored as errors")
    dataset = make_dataset(manifest, data_root, resample=True)
    decode = decode or make_decoder(inventory, lexicon, lm_weight=lm_weight, word_score=word_score)
    error_rates = ErrorRates()
    with torch_threads(threads):
        for batch, log_probs, frames in iterate_posteriors(model, dataset, batch_size=batch_size):
            error_rates.append(batch.id, batch.wrd, decode(log_probs, frames),
                               langs=batch.lang, domains=batch.domain)
    decoding = "lexicon" if lexicon else "greedy"
    result = {**scored(error_rates), "decoding": decoding, "skipped": dict(skipped),
              "speakers": len({row["spk_id"] for row in rows}),
              "unknown_characters": sum(unknown.values()),
              "resampled": {str(rate): n for rate, n in sorted(foreign.items())}, "set": set_name,
              "manifest": os.path.abspath(manifest), "model": os.path.abspath(model_folder)}
    if lexicon:
        result["lexicon"] = os.path.abspath(lexicon)
    if output:
        error_rates.write_wer_file(os.path.join(output, wer_file_name(set_name, bool(lexicon))))
        write_json(os.path.join(output, f"evaluate_{set_name}{'_lexicon' if lexicon else ''}.json"), result)
    return result


def make_decoder(inventory, lexicon=None, lm_weight=0.5, word_score=0.0):
    """``decode(log_probs, frames) -> list of str``: greedy, or with ``lexicon`` (a manifest
    whose ``wrd`` column gives the words and their bigram LM, or that
    :class:`~speechkd.decoding.BigramWordLM` itself) a :class:`~speechkd.decoding.LexiconDecoder`."""
    if lexicon is None:
        return lambda log_probs, frames: greedy_transcripts(log_probs, frames, inventory)
    if isinstance(lexicon, BigramWordLM):
        return LexiconDecoder(inventory, lexicon, lm_weight=lm_weight, word_score=word_score)
    return LexiconDecoder.from_manifest(inventory, lexicon, lm_weight=lm_weight, word_score=word_score)


def format_evaluation(result):
    """Markdown table of :func:`evaluate_manifest`'s result: WER and CER with 95 % intervals, overall and per language."""

    def cell(rate):
        if rate["rate"] is None:
            return "-"
        return f"{rate['rate']:.1f} [{rate['low']:.1f}, {rate['high']:.1f}]"

    intervals = result["intervals"]
    lines = [(f"{result['set']}: {result['n_utts']} utterances scored ({result.get('decoding', 'greedy')} "
              "decoding), "
             f"{sum(result['skipped'].values())} skipped, "
             f"{sum(result['resampled'].values())} resampled"),
             "", "| subset | utts | WER % [95 % CI] | CER % [95 % CI] |", "|---|---|---|---|",
             f"| all | {result['n_utts']} | {cell(intervals['wer'])} | {cell(intervals['cer'])} |"]
    for lang, rates in intervals["per_lang"].items():
        lines.append(f"| {lang} | {rates['wer']['n_utts']} | {cell(rates['wer'])} | {cell(rates['cer'])} |")
    return "\n".join(lines)


def fused_error_rates(teachers, inventory, dataset, strategy="average", strategy_options=None, dev_wer=None,
                      batch_size=16, decode=None):
    """WER/CER of the ensemble's fused posteriors (``strategy`` at τ = 1), greedy by default.

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
    decode : callable, optional
        ``decode(log_probs, frames) -> list of str`` (:func:`make_decoder`); default greedy.

    Returns
    -------
    speechkd.metrics.ErrorRates
    """
    decode = decode or make_decoder(inventory)
    error_rates = ErrorRates()
    for batch, log_probs, frames in fused_posteriors(teachers, inventory, dataset, strategy, strategy_options,
                                                      dev_wer=dev_wer, batch_size=batch_size):
        error_rates.append(batch.id, batch.wrd, decode(log_probs, frames), langs=batch.lang, domains=batch.domain)
    return error_rates


def evaluate_pipeline_models(model_folders, test_csv, data_folder, out, strategies, threads,
                             teacher_names, train_cache=None, real_speech=None, real_strategy="average",
                             lexicon=None):
    """Evaluate every model and the teachers' ensemble on the test set (and on real speech).

    Writes ``<out>/models.json`` (per model: params, bytes, frame shift, RTF,
    test summary from the model's own results.json) and
    ``<out>/ensemble.json`` (per strategy: WER/CER summary; teacher spike
    agreement). ``train_cache`` (a PosteriorCache folder) supplies the dev WER for ``weighted``.
    ``real_speech`` (a labelled manifest, any rate) adds ``<out>/real.json``
    (:func:`evaluate_real_speech`), the fused ensemble decoded with ``real_strategy``.
    ``lexicon`` (the train manifest) decodes the test set a second time with its words
    and bigram LM (:class:`~speechkd.decoding.LexiconDecoder`): ``test_lexicon`` per model
    in models.json (alignments in ``<out>/lexicon/<model>/``), ``lexicon`` per strategy in
    ensemble.json (``wer_<set>_ensemble_<strategy>_lexicon.txt``).
    """
    os.makedirs(out, exist_ok=True)
    test_name = os.path.splitext(os.path.basename(test_csv))[0]
    # one bigram for every model, one decoder per token inventory (the models usually share one)
    word_lm = BigramWordLM.from_manifest(lexicon) if lexicon else None
    lexicon_decoders = {}

    def lexicon_decoder(inventory):
        if inventory.fingerprint not in lexicon_decoders:
            lexicon_decoders[inventory.fingerprint] = make_decoder(inventory, word_lm)
        return lexicon_decoders[inventory.fingerprint]

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
        if lexicon:
            decoded = evaluate_manifest(folder, test_csv, data_root=data_folder, threads=threads,
                                        output=os.path.join(out, "lexicon", name), lexicon=lexicon,
                                        decode=lexicon_decoder(inventory))
            models[name]["test_lexicon"] = {key: decoded[key] for key in ("wer", "cer", "n_utts")}
    write_json(os.path.join(out, "models.json"), models)

    # each teacher's model.json name is its key here, so the cache names match teacher_names
    ensemble = TeacherEnsemble([model_folders[name] for name in teacher_names])
    dev_wer = PosteriorCache.open(train_cache).dev_wer_list() if train_cache else None
    dataset = make_dataset(test_csv, data_folder, ensemble.inventory, sort="none")
    cache, fused_rates = ensemble_error_rates(ensemble, dataset, test_csv, os.path.join(out, "test_cache"),
                                              strategies, dev_wer)
    fused, fused_lexicon = {}, {}
    for strategy, strategy_rates in fused_rates.items():
        fused[strategy] = strategy_rates.summary()
        strategy_rates.write_wer_file(os.path.join(out, f"wer_{test_name}_ensemble_{strategy}.txt"))
        if lexicon:
            decoded = fused_error_rates(cache, ensemble.inventory, dataset, strategy, dev_wer=dev_wer,
                                        decode=lexicon_decoder(ensemble.inventory))
            fused_lexicon[strategy] = decoded.summary()
            decoded.write_wer_file(os.path.join(out, wer_file_name(f"{test_name}_ensemble_{strategy}", True)))
    if real_speech is not None:
        evaluate_real_speech(model_folders, ensemble, real_speech, out, real_strategy, dev_wer, threads)
    agreement = teacher_agreement(cache, read_manifest(test_csv), strategies=[])
    delay = student_spike_delay(load_model(model_folders["baseline"])[0], dataset, cache)
    write_json(os.path.join(out, "ensemble.json"),
               {"strategies": fused, "agreement": agreement, "baseline_spike_delay": delay,
                **({"lexicon": fused_lexicon} if lexicon else {})})
    return models, fused


def ensemble_error_rates(ensemble, dataset, manifest, cache_folder, strategies, dev_wer=None):
    """Cache the teachers' full posteriors on ``dataset`` and decode their fusion with each strategy.

    Returns
    -------
    cache : PosteriorCache
    rates : dict
        Strategy -> :class:`ErrorRates` (``weighted`` only with ``dev_wer``).
    """
    split = os.path.splitext(os.path.basename(manifest))[0]
    cache = build_cache(ensemble, {"test": dataset}, cache_folder, k=0,
                        features={"sample_rate": 16000, "split": split},
                        dev_split=None, manifest=os.path.abspath(manifest))
    rates = {strategy: fused_error_rates(cache, ensemble.inventory, dataset, strategy, dev_wer=dev_wer)
             for strategy in strategies if strategy != "weighted" or dev_wer is not None}
    return cache, rates


def evaluate_real_speech(model_folders, ensemble, manifest, out, strategy, dev_wer=None, threads=None):
    """Every model and the fused ensemble on a real-speech manifest; writes and returns ``<out>/real.json``.

    A manifest that is not there is a note in the JSON (``missing``), not an
    error: the real-speech set is optional. Audio at another rate is
    resampled (:func:`evaluate_manifest`); alignments go to
    ``<out>/real/<model>/wer_<set>.txt``.

    Returns
    -------
    dict
        ``manifest``, and either ``missing`` (why nothing was measured) or
        ``models`` (name -> :func:`evaluate_manifest` result, the fused
        ensemble under ``ensemble (<strategy>)`` when it can be decoded).
    """
    os.makedirs(out, exist_ok=True)
    if not manifest or not os.path.exists(manifest):
        result = {"manifest": manifest, "missing": f"{manifest} not found: no real-speech evaluation"}
        write_json(os.path.join(out, "real.json"), result)
        return result
    models = {name: evaluate_manifest(folder, manifest, resample=True, threads=threads,
                                      output=os.path.join(out, "real", name))
              for name, folder in model_folders.items()}
    first = next(iter(models.values()))
    dataset = make_dataset(manifest, os.path.dirname(os.path.abspath(manifest)), sort="none", resample=True)
    with torch_threads(threads):
        _cache, fused = ensemble_error_rates(ensemble, dataset, manifest, os.path.join(out, "real", "cache"),
                                             [strategy], dev_wer)
    if strategy in fused:
        fused[strategy].write_wer_file(os.path.join(out, "real", f"wer_{first['set']}_ensemble_{strategy}.txt"))
        models[f"ensemble ({strategy})"] = {**first, **scored(fused[strategy])}
    result = {"manifest": os.path.abspath(manifest), "models": models}
    write_json(os.path.join(out, "real.json"), result)
    return result


def scored(error_rates):
    """:meth:`ErrorRates.summary` with the 95 % bootstrap ``intervals``."""
    return {**error_rates.summary(), "intervals": error_rates.intervals()}


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
