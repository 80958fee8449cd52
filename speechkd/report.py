"""The pipeline report: one table, two pictures, one JSON.

``report.md`` and ``results.json`` hold, for every model (each teacher, the
fused ensemble, the student trained alone, the distilled student): its
parameters, size on disk, test WER and CER overall and per language, and CPU
real-time factor; then the share of the baseline-to-ensemble WER gap the
distilled student closed and the compression ratio of student vs ensemble.
A separate table gives every model's WER/CER on real speech
(``evaluate/real.json``, the pipeline's ``real_speech_manifest``) when the
evaluate stage measured it, or says why not.

Every WER and CER carries a 95 % interval from a bootstrap over the test
utterances, and the gap closed and the gain (baseline minus distilled WER)
carry theirs from a paired bootstrap: the same resampled utterances score the
baseline, the distilled student and the ensemble (:func:`speechkd.metrics.bootstrap_error_rates`).
"""

import json
import os
import re

import numpy as np

from speechkd.experiment import HPARAMS_FILE, write_json, yaml_values
from speechkd.metrics import (
    bootstrap_error_rates,
    interval,
    read_utterance_char_errors,
    read_utterance_errors,
    wer_file_name,
)

STUDENTS = ("baseline", "student_kd")


def read_json(path):
    with open(path) as fin:
        return json.load(fin)


def gap_closed(baseline_wer, student_wer, ensemble_wer):
    """Share (in %) of the baseline-to-ensemble WER gap that distillation closed.

    None when there is no gap: an ensemble no better than the baseline (a
    ratio of two negative numbers would read as a share closed).
    """
    gap = baseline_wer - ensemble_wer
    if gap < 1e-9:
        return None
    return 100.0 * (baseline_wer - student_wer) / gap


def test_wer_files(out, model_folders, strategy, test_name="test", lexicon=False):
    """Report name -> the ``wer_<test_name>.txt`` it was scored from (the ensemble's from the evaluate stage);
    with ``lexicon`` the lexicon-decoded ones the evaluate stage wrote."""
    if lexicon:
        files = {name: os.path.join(out, "evaluate", "lexicon", name, wer_file_name(test_name, True))
                 for name in model_folders}
    else:
        files = {name: os.path.join(folder, wer_file_name(test_name)) for name, folder in model_folders.items()}
    files[f"ensemble ({strategy})"] = os.path.join(out, "evaluate",
                                                   wer_file_name(f"{test_name}_ensemble_{strategy}", lexicon))
    return files


def gain_and_gap(intervals):
    """``gain_wer_points``, ``gain_ci``, ``gap_closed_percent`` and ``gap_closed_ci`` of
    :func:`confidence_intervals`' result (the gap's are None when there is no gap)."""
    gain, closed = intervals["gain"], intervals["gap_closed"]
    return {"gain_wer_points": gain["value"], "gain_ci": [gain["low"], gain["high"]],
            "gap_closed_percent": closed["value"] if closed else None,
            "gap_closed_ci": [closed["low"], closed["high"]] if closed else None}


def pooled_errors(reader, paths):
    """Utterance ID -> ``(edits, reference units)`` summed over ``paths`` (runs of one system on one test set).

    Parameters
    ----------
    reader : callable
        :func:`~speechkd.metrics.read_utterance_errors` (words) or
        :func:`~speechkd.metrics.read_utterance_char_errors` (characters).
    paths : str or sequence of str
        One ``wer_<set>.txt``, or one per seed: every file must score the same utterances.
    """
    paths = [paths] if isinstance(paths, (str, os.PathLike)) else list(paths)
    runs = [reader(path) for path in paths]
    for path, errors in zip(paths[1:], runs[1:]):
        if errors.keys() != runs[0].keys():
            raise ValueError(f"{path} scores other utterances than {paths[0]}: runs pooled over seeds "
                             "must decode the same test set")
    return {utt: tuple(map(sum, zip(*(errors[utt] for errors in runs)))) for utt in runs[0]}


def confidence_intervals(wer_files, baseline, student, ensemble, n_resamples=2000, seed=0):
    """95 % bootstrap intervals of every system's WER and CER, of the gain and of the gap closed.

    Parameters
    ----------
    wer_files : dict
        System name -> its ``wer_<set>.txt`` (SpeechBrain's format, one block per utterance),
        or a list of them, one per seed: the system's errors are then pooled over its seeds
        (:func:`pooled_errors`: its WER is the mean of the seeds' on one test set) and every
        resample draws the same utterances for all of them. The interval covers the test
        set's sampling, not the spread between seeds.
    baseline, student, ensemble : str
        The names (keys of ``wer_files``) of the student trained alone, the
        distilled student and the fused ensemble.

    Returns
    -------
    dict
        ``rates`` and ``cer_rates`` (name -> WER, CER), ``wer`` and ``cer`` (name -> ``[low, high]``), ``gain`` (baseline minus
        student WER in points: ``{"value", "low", "high"}``), ``gap_closed``
        (in %, same keys; None when the ensemble is no better than the
        baseline), ``n_utts`` and ``n_resamples``.
    """
    words = bootstrap_error_rates({name: pooled_errors(read_utterance_errors, paths)
                                   for name, paths in wer_files.items()}, n_resamples, seed)
    chars = bootstrap_error_rates({name: pooled_errors(read_utterance_char_errors, paths)
                                   for name, paths in wer_files.items()}, n_resamples, seed)
    rate, draw = words["rates"], words["draws"]
    gain_draws = draw[baseline] - draw[student]
    gain = {"value": rate[baseline] - rate[student], **dict(zip(("low", "high"), interval(gain_draws)))}
    closed = gap_closed(rate[baseline], rate[student], rate[ensemble])
    if closed is not None:
        with np.errstate(divide="ignore", invalid="ignore"):
            closed_draws = 100.0 * gain_draws / (draw[baseline] - draw[ensemble])
        closed = {"value": closed, **dict(zip(("low", "high"), interval(closed_draws)))}
    return {
        "rates": rate,
        "cer_rates": chars["rates"],
        "wer": {name: list(interval(d)) for name, d in draw.items()},
        "cer": {name: list(interval(d)) for name, d in chars["draws"].items()},
        "gain": gain,
        "gap_closed": closed,
        "n_utts": words["n_utts"],
        "n_resamples": n_resamples,
    }


def parse_train_log(path):
    """Epoch -> {"train loss", "valid loss", "valid WER", ...} from a SpeechBrain train_log.txt."""
    curves = {}
    with open(path) as fin:
        for line in fin:
            match = re.match(r"epoch: (\d+)", line)
            if not match:
                continue
            epoch = int(match.group(1))
            curves[epoch] = {
                key.strip(): float(value)
                for key, value in re.findall(r"((?:train|valid) [A-Za-z ]+): ([-+.\deE]+)", line)
            }
    return curves


def collect(out, model_folders, teacher_names, strategy):
    """Gather the evaluation stage's outputs into the report's rows.

    Returns
    -------
    dict
        ``models`` (name -> row, the fused ensemble included) and ``summary``.
    """
    evaluated = read_json(os.path.join(out, "evaluate", "models.json"))
    ensemble_eval = read_json(os.path.join(out, "evaluate", "ensemble.json"))
    cache_meta = read_json(os.path.join(out, "cache", "meta.json"))
    rows = {}
    for name, info in evaluated.items():
        rows[name] = {
            "role": "teacher" if name in teacher_names else "student",
            "params": info["params"],
            "megabytes": info["bytes"] / 1e6 if info["bytes"] else None,
            "frame_shift_ms": info["frame_shift_ms"],
            "wer": info["test"]["wer"],
            "cer": info["test"]["cer"],
            "per_lang": {lang: v["wer"] for lang, v in info["test"]["per_lang"].items()},
            "rtf": info["rtf"],
        }
    ensemble_params = sum(rows[name]["params"] for name in teacher_names)
    fused = ensemble_eval["strategies"][strategy]
    rows[f"ensemble ({strategy})"] = {
        "role": "ensemble",
        "params": ensemble_params,
        "megabytes": sum(rows[n]["megabytes"] or 0 for n in teacher_names),
        "frame_shift_ms": max(rows[n]["frame_shift_ms"] for n in teacher_names),
        "wer": fused["wer"],
        "cer": fused["cer"],
        "per_lang": {lang: v["wer"] for lang, v in fused["per_lang"].items()},
        "rtf": sum(rows[n]["rtf"] for n in teacher_names),
    }
    intervals = confidence_intervals(test_wer_files(out, model_folders, strategy), "baseline", "student_kd",
                                     f"ensemble ({strategy})")
    for name, row in rows.items():
        row["wer_ci"], row["cer_ci"] = intervals["wer"][name], intervals["cer"][name]
    lexicon = None
    if "lexicon" in ensemble_eval and all("test_lexicon" in info for info in evaluated.values()):
        for name, info in evaluated.items():
            rows[name]["wer_lexicon"] = info["test_lexicon"]["wer"]
        rows[f"ensemble ({strategy})"]["wer_lexicon"] = ensemble_eval["lexicon"][strategy]["wer"]
        decoded = confidence_intervals(test_wer_files(out, model_folders, strategy, lexicon=True), "baseline",
                                       "student_kd", f"ensemble ({strategy})")
        for name, row in rows.items():
            row["wer_lexicon_ci"] = decoded["wer"][name]
        lexicon = gain_and_gap(decoded)
    summary = {
        "ensemble_strategy": strategy,
        "top_k": cache_meta["k"],
        **gain_and_gap(intervals),
        "lexicon": lexicon,
        "bootstrap": {"n_utts": intervals["n_utts"], "n_resamples": intervals["n_resamples"]},
        "compression_vs_ensemble": ensemble_params / rows["student_kd"]["params"],
        "ensemble_strategies": {name: s["wer"] for name, s in ensemble_eval["strategies"].items()},
        "teacher_agreement": ensemble_eval["agreement"].get("overall"),
        "baseline_spike_delay_frames": ensemble_eval.get("baseline_spike_delay"),
        **distillation_settings(model_folders.get("student_kd")),
    }
    return {"models": rows, "summary": summary}


def distillation_settings(folder):
    """``{"alpha": ..., "teacher_delay": ..., "w_kd": ...}`` of the distilled student's run (its ``hyperparams.yaml``).

    ``w_kd`` is the KL weight of a recipe that sets it apart from ``alpha``
    (``hparams/distill/student_hint.yaml``). A value the file does not hold
    (or a folder without the file) is ``None``.
    """
    path = os.path.join(folder, HPARAMS_FILE) if folder else None
    if path is None or not os.path.exists(path):
        return {"alpha": None, "teacher_delay": None, "w_kd": None}
    with open(path, encoding="utf-8") as fin:
        values = yaml_values(fin.read())
    return {key: values.get(key) if isinstance(values.get(key), (int, float)) else None
            for key in ("alpha", "teacher_delay", "w_kd")}


def markdown_table(report):
    """The report's main table as markdown."""
    rows = report["models"]
    langs = sorted({lang for row in rows.values() for lang in row["per_lang"]})
    lexicon = all("wer_lexicon" in row for row in rows.values())
    head = ["model", "params", "MB", "shift ms", "WER % [95% CI]", "CER % [95% CI]",
            *(["WER % lexicon [95% CI]"] if lexicon else []), *[f"{l} WER" for l in langs], "RTF"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, row in rows.items():
        cells = [
            name,
            f"{row['params'] / 1e3:.0f}k",
            f"{row['megabytes']:.2f}" if row["megabytes"] else "-",
            str(row["frame_shift_ms"]),
            with_interval(row["wer"], row.get("wer_ci")),
            with_interval(row["cer"], row.get("cer_ci")),
            *([with_interval(row["wer_lexicon"], row.get("wer_lexicon_ci"))] if lexicon else []),
            *[f"{row['per_lang'].get(lang, float('nan')):.1f}" for lang in langs],
            f"{row['rtf']:.4f}",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def real_speech_rows(out):
    """The ``real`` rows of the report from ``<out>/evaluate/real.json``, or ``None`` when it was not asked for.

    Returns
    -------
    dict or None
        ``manifest`` and either ``missing`` (the note) or ``models``: name ->
        ``{"n_utts", "speakers", "resampled", "wer", "cer", "intervals"}``
        (:func:`speechkd.evaluation.evaluate_manifest`).
    """
    path = os.path.join(out, "evaluate", "real.json")
    if not os.path.exists(path):
        return None
    real = read_json(path)
    if "missing" in real:
        return real
    keep = ("n_utts", "speakers", "resampled", "skipped", "wer", "cer", "intervals")
    return {"manifest": real["manifest"],
            "models": {name: {k: row[k] for k in keep} for name, row in real["models"].items()}}


def real_speech_section(real):
    """Markdown: what the real-speech set is, then WER/CER with 95 % intervals per model and language."""
    if real is None:
        return ""
    if "missing" in real:
        return f"## Real speech\n\nSkipped: {real['missing']}."
    models = real["models"]
    first = next(iter(models.values()))
    rates = ", ".join(f"{n} files at {rate} Hz" for rate, n in first["resampled"].items()) or "none resampled"
    langs = sorted({lang for row in models.values() for lang in row["intervals"]["per_lang"]})

    def cell(rate):
        return "-" if rate["rate"] is None else f"{rate['rate']:.1f} [{rate['low']:.0f}, {rate['high']:.0f}]"

    head = ["model", "WER % [95 % CI]", "CER % [95 % CI]", *[f"{l} {m}" for l in langs for m in ("WER", "CER")]]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, row in models.items():
        per_lang = row["intervals"]["per_lang"]
        cells = [name, cell(row["intervals"]["wer"]), cell(row["intervals"]["cer"])]
        cells += [cell(per_lang[lang][m]) if lang in per_lang else "-" for lang in langs for m in ("wer", "cer")]
        lines.append("| " + " | ".join(cells) + " |")
    intro = (f"## Real speech\n\nReal human recordings, not synthetic: {first['n_utts']} files from "
             f"{first['speakers']} speaker(s) ({rates}, resampled to 16 kHz; languages {', '.join(langs)}), "
             f"from `{real['manifest']}`. A dev set: measured here, never trained on. "
             "95 % intervals: bootstrap over utterances.")
    return intro + "\n\n" + "\n".join(lines)


def with_interval(value, bounds, digits=1):
    """``"37.1 [34.0, 40.2]"`` (the value alone when ``bounds`` is None)."""
    text = f"{value:.{digits}f}"
    return text if bounds is None else f"{text} [{bounds[0]:.{digits}f}, {bounds[1]:.{digits}f}]"


def summary_lines(report):
    s = report["summary"]
    gap = s["gap_closed_percent"]
    lines = [
        f"- Distilled student closes **{with_interval(gap, s.get('gap_closed_ci'), 0)} %** of the "
        "baseline-to-ensemble WER gap (95 % paired bootstrap interval over test utterances)"
        if gap is not None else "- The ensemble is no better than the baseline: no gap to close",
        f"- Gain from distillation: {with_interval(s['gain_wer_points'], s.get('gain_ci'))} WER points "
        "(baseline minus distilled student; "
        + ("the interval excludes zero)" if s.get("gain_ci") and (s["gain_ci"][0] > 0 or s["gain_ci"][1] < 0)
           else "the interval includes zero: not distinguishable from no gain)"),
        *lexicon_lines(s.get("lexicon")),
        f"- Student is **{s['compression_vs_ensemble']:.1f}x** smaller than the ensemble",
        f"- Ensemble ({s['ensemble_strategy']}, k={s['top_k'] or 'full'} in the cache) WER by "
        "fusion strategy: " + ", ".join(f"{k} {v:.1f}%" for k, v in s["ensemble_strategies"].items())
        + " (`best` picks the teacher closest to the reference: an oracle on test)",
    ]
    if s["teacher_agreement"] is not None:
        lines.append("- Teacher spike agreement (non-blank spikes within one frame of the same "
                     f"token in another teacher): {100 * s['teacher_agreement']:.0f}%")
    delay = s.get("baseline_spike_delay_frames")
    if delay:
        lines.append(spike_delay_line(delay, s.get("alpha"), s.get("teacher_delay"), s.get("w_kd")))
    return "\n".join(lines)


def spike_delay_line(delay, alpha=None, teacher_delay=None, w_kd=None):
    """The summary line on how late the baseline spikes against each teacher, and what the KL does about it.

    Parameters
    ----------
    delay : dict
        Teacher name -> median frames by which the baseline's spikes follow the teacher's (or None).
    alpha : float, optional
        The distilled student's CTC weight: at 1 no frame-level KL reads the teachers' frames.
    teacher_delay : int, optional
        Frames by which the distill stage delayed the teachers' frame targets.
    w_kd : float, optional
        The KL weight where a recipe sets it apart from ``alpha`` (else ``1 - alpha``).

    Returns
    -------
    str
    """
    offsets = ", ".join(f"{v:+.0f}" for v in delay.values() if v is not None)
    line = f"- The student trained alone spikes {offsets} frames after the teachers (median); "
    kl_weight = w_kd if w_kd is not None else None if alpha is None else 1 - alpha
    if kl_weight is not None and kl_weight <= 0:
        return line + "the distilled student reads no teacher frames (no KL term), so no delay applies"
    if teacher_delay is None:
        return line + "distillation delays the teacher targets by `teacher_delay` frames to match"
    if teacher_delay == 0:
        return line + "distillation does not delay the teacher targets (`teacher_delay` 0)"
    return line + f"distillation delays the teacher targets by {teacher_delay} frames (`teacher_delay`)"


def lexicon_lines(lexicon):
    """The summary line of the lexicon-decoded test set (none when it was not decoded)."""
    if lexicon is None:
        return []
    gap = lexicon["gap_closed_percent"]
    closed = (f"closes {with_interval(gap, lexicon['gap_closed_ci'], 0)} % of the gap"
              if gap is not None else "no gap to close")
    gain = with_interval(lexicon["gain_wer_points"], lexicon["gain_ci"])
    return ["- Decoded over the corpus's words with their bigram LM (column `WER % lexicon`): gain "
            + f"{gain} WER points, {closed}"]


def record_stage_seconds(out, timings):
    """Merge this run's seconds per stage into ``<out>/stage_seconds.json``; return all of them.

    A stage skipped in a rerun keeps the time of the run that did it.
    """
    path = os.path.join(out, "stage_seconds.json")
    merged = read_json(path) if os.path.exists(path) else {}
    merged.update({name: round(seconds, 1) for name, seconds in timings.items()})
    os.makedirs(out, exist_ok=True)
    write_json(path, merged)
    return merged


def timing_line(seconds):
    """One line: wall time of each stage (parallel stages overlap)."""
    if not seconds:
        return ""
    parts = ", ".join(f"{name} {value:.0f} s" for name, value in seconds.items())
    return (f"Stage wall times (recipe stages run side by side, `workers` at a time; a background stage, "
            f"the baseline unless it guides the teachers, counts the time it waited at low priority): {parts}")


def plot_wer_vs_size(report, path):
    """WER against parameter count (log x), each model labelled, the KD gain an arrow."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = report["models"]
    colors = {"teacher": "tab:blue", "ensemble": "tab:purple", "student": "tab:orange"}
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for name, row in rows.items():
        low, high = row.get("wer_ci") or (row["wer"], row["wer"])
        ax.errorbar(row["params"], row["wer"], yerr=[[row["wer"] - low], [high - row["wer"]]],
                    color=colors[row["role"]], fmt="o", ms=6, capsize=3, zorder=3)
        ax.annotate(name, (row["params"], row["wer"]), textcoords="offset points", xytext=(6, 4),
                    fontsize=8)
    base, kd = rows["baseline"], rows["student_kd"]
    ax.annotate("", xy=(kd["params"], kd["wer"]), xytext=(base["params"], base["wer"]),
                arrowprops={"arrowstyle": "->", "color": "tab:green", "lw": 2})
    ax.set_xscale("log")
    ax.set_xlabel("parameters")
    ax.set_ylabel("test WER (%)")
    ax.set_title("WER vs model size, 95 % CIs (arrow: gain from distillation)")
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_curves(model_folders, path):
    """Validation WER per epoch of the baseline and the distilled student."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    for name in STUDENTS:
        curves = parse_train_log(os.path.join(model_folders[name], "train_log.txt"))
        epochs = sorted(curves)
        ax.plot(epochs, [curves[e].get("valid WER") for e in epochs], marker="o", label=name)
    ax.set_xlabel("epoch")
    ax.set_ylabel("dev WER (%)")
    ax.set_title("Student training: alone vs distilled")
    ax.legend()
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_report(out, model_folders, teacher_names, strategy, timings=None):
    """Write report.md, results.json, wer_vs_size.png and curves.png into ``out``.

    Returns
    -------
    str
        The markdown report (also printed by the pipeline).
    """
    report = collect(out, model_folders, teacher_names, strategy)
    report["stage_seconds"] = record_stage_seconds(out, timings or {})
    export_path = os.path.join(out, "export", "export.json")
    if os.path.exists(export_path):
        report["export"] = read_json(export_path)
    real = real_speech_rows(out)
    if real is not None:
        report["real_speech"] = real
    write_json(os.path.join(out, "results.json"), report)
    plot_wer_vs_size(report, os.path.join(out, "wer_vs_size.png"))
    plot_curves(model_folders, os.path.join(out, "curves.png"))
    text = "\n\n".join([
        f"# speechkd report: {out}",
        markdown_table(report),
        summary_lines(report),
        real_speech_section(real),
        timing_line(report["stage_seconds"]),
        "![WER vs size](wer_vs_size.png)\n\n![training curves](curves.png)",
    ]) + "\n"
    with open(os.path.join(out, "report.md"), "w") as fout:
        fout.write(text)
    return text
