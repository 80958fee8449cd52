#!/usr/bin/env python3
"""The KD-families study: four tables, each row one student trained by recipes/distill/train.py.

1. methods: CTC alone, posterior KD, each family beside CTC, the best combination;
2. capacity gap: students of about 1/30, 1/12, 1/3.5 and 1/2 of the teacher's parameters, each
   trained by CTC alone, posterior KD, the hint and the methods table's best combination;
3. label noise: 0, 20, 40, 60 % of train transcripts corrupted (seeded, recorded in
   ``conditions/noise<p>.json``), the teacher trained on the same noisy data;
4. class imbalance: languages 100 : 10 : 1 (en : de : es) in the train set, tail reported apart;
   and, separately, words: 40 % of each language's mid-frequency words (in 5 utterances or more,
   in 10 % or fewer) made ten times rarer (``conditions/imbalance_words/record.json``), the test
   utterances holding one reported apart.

Every row gives test WER and CER with 95 % bootstrap intervals over test utterances,
their differences to CTC alone on the same utterances (paired bootstrap) and WER/CER
per language. Runs already done (their ``results.json`` exists) are skipped; an output
folder made with other settings (epochs, ``--set``, the study's YAMLs, sizes, conditions)
is refused (``study.json``). With ``--seeds 1234 2024`` the methods table is run again
with every further student seed (same teacher, same combination as the first seed's,
``combo.json``) and given as ``methods, seed <s>``.

    python recipes/kd_families/study.py --tables 1 2 3 4 --jobs 2 --seeds 1234 2024
    python recipes/kd_families/study.py --tables 1 --set corpus_size=tiny --set lang_minutes=null

writes ``<output>/tables.md`` and ``<output>/tables.json``.
"""

import argparse
import concurrent.futures
import hashlib
import json
import os
import re
import subprocess
import sys

from speechkd.data.conditions import (
    corrupt_transcripts,
    long_tailed_subset,
    long_tailed_words,
    tail_utterances,
)
from speechkd.data.manifest import read_manifest, write_manifest
from speechkd.metrics import paired_bootstrap_wer, read_utterance_char_errors, read_utterance_errors

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# Each family beside CTC, with a weight that puts its first-epoch value near CTC's scale
METHODS = {
    "ctc": {},
    "kd": {"alpha": 0.5, "w_kd": 0.5},
    "hint": {"w_hint": 0.5},
    "energy": {"w_energy": 10},
    "boundary": {"alpha": 0.5, "w_boundary": 0.5},
    "rkd": {"w_rkd": 10},
    "sp": {"w_sp": 100},
    "dml": {"w_dml": 1},
    "one": {"w_one": 1},
}
FAMILIES = ["hint", "energy", "boundary", "rkd", "sp", "dml", "one"]
CAPACITY_METHODS = ("ctc", "kd", "hint", "combo")  # combo: the methods table's best combination
# Student sizes against the 283k-parameter teacher; {} is student.yaml's own (the methods table's)
SIZES = {"1/30": {"conv_channels": 16, "gru_hidden": 24}, "1/12": {"conv_channels": 32, "gru_hidden": 48},
         "1/3.5": {"conv_channels": 64, "gru_hidden": 96}, "1/2": {}}
DEFAULT_SIZE = "1/2"
NOISE = [0, 20, 40, 60]
IMBALANCE = {"en": 100, "de": 10, "es": 1}
WORD_IMBALANCE = {"tail_share": 0.4, "tail_ratio": 0.1, "max_share": 0.1}


class Study:
    def __init__(self, args):
        self.args, self.out = args, os.path.abspath(args.output)
        self.common = dict(item.split("=", 1) for item in args.set)
        self.pool = concurrent.futures.ThreadPoolExecutor(args.jobs)
        self.data_folder = self.common.get("data_folder", os.path.join(REPO, "data", "numbers-kd"))
        self.check_settings()

    def check_settings(self):
        """Refuse an output folder whose runs were made with other settings; record them in a new one."""
        yamls = {}
        for name in sorted(os.listdir(os.path.join(REPO, "hparams", "kd_families"))):
            with open(os.path.join(REPO, "hparams", "kd_families", name), "rb") as fin:
                yamls[name] = hashlib.sha256(fin.read()).hexdigest()[:16]
        settings = {"epochs": self.args.epochs, "teacher_epochs": self.args.teacher_epochs,
                    "set": sorted(self.args.set), "hparams": yamls, "sizes": SIZES, "noise": NOISE,
                    "imbalance": IMBALANCE, "word_imbalance": WORD_IMBALANCE}
        path = os.path.join(self.out, "study.json")
        if os.path.exists(path):
            with open(path) as fin:
                before = json.load(fin)
            changed = sorted(key for key in settings if before.get(key) != json.loads(json.dumps(settings[key])))
            if changed:
                raise SystemExit(f"{self.out} holds runs made with other {', '.join(changed)} ({path}): "
                                 "give another --output")
            return
        os.makedirs(self.out, exist_ok=True)
        with open(path, "w") as fout:
            json.dump(settings, fout, indent=1)

    def run(self, script, hparams, folder, overrides):
        """One recipe run in ``folder`` (skipped when its results.json exists); returns the folder."""
        if os.path.exists(os.path.join(folder, "results.json")):
            return folder
        if self.args.report:  # tables from the runs done so far
            return None
        args = [sys.executable, os.path.join(REPO, "recipes", script), os.path.join(REPO, "hparams", hparams),
                f"--output_folder={folder}", *(f"--{k}={v}" for k, v in {**self.common, **overrides}.items())]
        env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": REPO}
        proc = subprocess.run(args, cwd=REPO, capture_output=True, text=True, env=env, check=False)
        if proc.returncode:
            raise RuntimeError(f"{' '.join(args)} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
        return folder

    def teacher(self, name, train_csv=None):
        overrides = {"number_of_epochs": self.args.teacher_epochs, "name": name}
        if train_csv:
            overrides["train_csv"] = train_csv
        return self.pool.submit(self.run, "ctc/train.py", "kd_families/teacher.yaml",
                                os.path.join(self.out, "teachers", name), overrides)

    def student(self, name, teacher, method, train_csv=None, seed=None, **extra):
        """One student run (``students/<name>``, or ``students/<name>-seed<seed>`` for a further seed)."""
        seed = seed or self.args.seeds[0]
        overrides = {"number_of_epochs": self.args.epochs, "teachers": f"[{teacher}]", "seed": seed,
                     **METHODS[method], **extra}
        if train_csv:
            overrides["train_csv"] = train_csv
        if seed != self.args.seeds[0]:
            name = f"{name}-seed{seed}"
        return self.pool.submit(self.run, "distill/train.py", "kd_families/student.yaml",
                                os.path.join(self.out, "students", name), overrides)

    def condition(self, name, make):
        """Write ``conditions/<name>/train.csv`` (and its record) from the clean train manifest."""
        folder = os.path.join(self.out, "conditions", name)
        path = os.path.join(folder, "train.csv")
        if not os.path.exists(path):
            self.run_prepare()
            rows, record = make(read_manifest(os.path.join(self.data_folder, "train.csv")))
            os.makedirs(folder, exist_ok=True)
            write_manifest(path, rows)
            with open(os.path.join(folder, "record.json"), "w") as fout:
                json.dump(record, fout, indent=1, ensure_ascii=False)
        return path

    def run_prepare(self):
        if not os.path.exists(os.path.join(self.data_folder, "train.csv")):
            self.teacher("teacher").result()  # its prepare step builds the corpus

    # ------------------------------------------------------------------ the tables
    def tables(self):
        """Run what the chosen tables need; ``{table: {row: run folder}}`` and the tail utterances of table 4."""
        teacher = self.teacher("teacher").result()
        rows, subsets = {}, {}
        noisy, teachers = {}, {}  # the condition teachers are queued first: they train while the students do
        tables = set(self.args.tables)
        if 3 in tables:
            noisy = {p: self.condition(f"noise{p}", lambda r, p=p: corrupt_transcripts(r, p / 100, seed=0))
                     for p in NOISE if p}
            teachers = {p: self.teacher(f"teacher_noise{p}", csv) for p, csv in noisy.items()}
        if 4 in tables:
            tail_csv = self.condition("imbalance", lambda r: long_tailed_subset(r, IMBALANCE, seed=0))
            words_csv = self.condition("imbalance_words", lambda r: long_tailed_words(r, **WORD_IMBALANCE, seed=0))
            tail_teacher = self.teacher("teacher_imbalance", tail_csv)
            words_teacher = self.teacher("teacher_imbalance_words", words_csv)
        if {1, 2} & tables:
            runs = {m: self.student(m, teacher, m) for m in METHODS}
            rows["methods"] = {m: f.result() for m, f in runs.items()}
            best = self.combination(rows["methods"])
            METHODS["combo"] = {k: v for m in ["kd", *best] for k, v in METHODS[m].items()}
            combo_name = "kd+" + "+".join(best)
            rows["methods"][combo_name] = self.student("combo", teacher, "combo").result()
        if 1 in tables:
            for seed in self.args.seeds[1:]:  # the student's seed; the same teacher
                runs = {m: self.student(m, teacher, m, seed=seed) for m in METHODS}
                rows[f"methods, seed {seed}"] = {(combo_name if m == "combo" else m): f.result()
                                                 for m, f in runs.items()}
        if 2 in tables:
            runs = {(size, m): self.student(f"{m}_{size.replace('/', 'of')}", teacher, m, **SIZES[size])
                    for size in SIZES if size != DEFAULT_SIZE for m in CAPACITY_METHODS}
            rows["capacity"] = {f"{m} {size}": f.result() for (size, m), f in runs.items()}
            rows["capacity"].update({f"{m} {DEFAULT_SIZE}": rows["methods"][combo_name if m == "combo" else m]
                                     for m in CAPACITY_METHODS})
        if 3 in tables:
            runs = {(p, m): self.student(f"{m}_noise{p}", teachers[p].result(), m, noisy[p])
                    for p in noisy for m in ("ctc", "kd") if teachers[p].result()}
            rows["noise"] = {f"{m} {p}%": f.result() for (p, m), f in runs.items()}
            if 1 in tables:
                rows["noise"].update({f"{m} 0%": rows["methods"][m] for m in ("ctc", "kd")})
        if 4 in tables:
            for table, csv, condition_teacher in (("imbalance", tail_csv, tail_teacher),
                                                  ("imbalance (words)", words_csv, words_teacher)):
                runs = {m: self.student(f"{m}_{table.replace(' (words)', '_words')}", condition_teacher.result(),
                                        m, csv) for m in ("ctc", "kd", "hint") if condition_teacher.result()}
                rows[table] = {m: f.result() for m, f in runs.items()}
            subsets["imbalance (words)"] = self.word_subsets()
        rows["teachers"] = {"teacher": teacher, **{f"teacher {p}%": f.result() for p, f in teachers.items()}}
        if 4 in tables:
            rows["teachers"].update({"teacher imbalance": tail_teacher.result(),
                                     "teacher imbalance (words)": words_teacher.result()})
        return rows, subsets

    def combination(self, runs):
        """The two families with the lowest dev (WER, CER) alone, kept in ``combo.json`` once every
        family's run is done (so that reports and further seeds name what ``students/combo`` trained)."""
        path = os.path.join(self.out, "combo.json")
        if os.path.exists(path):
            with open(path) as fin:
                return json.load(fin)["families"]
        dev = {m: best_dev(runs[m]) for m in FAMILIES if runs[m]}
        best = sorted(dev, key=dev.get)[:2]
        if len(dev) == len(FAMILIES):
            with open(path, "w") as fout:
                json.dump({"families": best, "dev_wer_cer": {m: dev[m] for m in FAMILIES}}, fout, indent=1)
        return best

    def word_subsets(self):
        """Test utterance IDs holding a word the word-imbalance condition made rare, and the others."""
        with open(os.path.join(self.out, "conditions", "imbalance_words", "record.json")) as fin:
            tail = json.load(fin)["tail"]
        test = read_manifest(os.path.join(self.data_folder, "test.csv"))
        with_tail = tail_utterances(test, tail)
        return {"tail-word utts": with_tail, "other utts": {row["ID"] for row in test} - with_tail}


def best_dev(folder):
    """Lowest ``(valid WER, valid CER)`` in a run's train_log.txt: how the combination's families are chosen
    (CER breaks ties: small students at a short budget often all sit at 100 % WER)."""
    with open(os.path.join(folder, "train_log.txt")) as fin:
        log = fin.read()
    return (min(float(w) for w in re.findall(r"valid WER: ([\d.e+-]+)", log)),
            min(float(c) for c in re.findall(r"valid CER: ([\d.e+-]+)", log)))


def tested_checkpoint(folder):
    """``epoch_tested`` (the best-dev-WER checkpoint the test ran on) and ``last_dev_cer``.

    At 100 % dev WER every epoch ties and the tested checkpoint may be an early
    one; the last epoch's dev CER shows what the run reached.
    """
    with open(os.path.join(folder, "train_log.txt")) as fin:
        log = fin.read()
    return {"epoch_tested": int(re.findall(r"Epoch loaded: (\d+)", log)[-1]),
            "last_dev_cer": float(re.findall(r"valid CER: ([\d.e+-]+)", log)[-1])}


def rate_interval(errors):
    """Error rate and its 95 % bootstrap interval (a paired bootstrap against a system with no error)."""
    perfect = {utt: (0, units) for utt, (_, units) in errors.items()}
    return paired_bootstrap_wer(perfect, errors)


def interval_text(ci, signed=False):
    return "—" if ci is None else (f"{ci['difference']:+.1f} [{ci['low']:+.1f}, {ci['high']:+.1f}]" if signed
                                   else f"{ci['difference']:.1f} [{ci['low']:.1f}, {ci['high']:.1f}]")


def summarize(rows, subsets=None):
    """``{table: {row: {...}}}`` and the markdown tables: WER and CER with their intervals, per language.

    ``subsets`` (``{table: {name: test utterance IDs}}``) adds, to that table, each
    subset's WER and its paired difference to CTC alone (e.g. the test utterances
    holding a word the word-imbalance condition made rare).
    """
    summary, lines = {}, []
    subsets = subsets or {}
    for table, runs in rows.items():
        runs = {key: folder for key, folder in runs.items() if folder}  # --report: runs not done yet are left out
        summary[table] = {}
        baseline_key = next((k for k in runs if k.split()[0] == "ctc" and k.split()[1:] == []), None)
        parts = subsets.get(table, {})
        extra = "".join(f" {name} ({len(ids)}): WER [95 % CI] | Δ vs CTC |" for name, ids in parts.items())
        lines += [f"\n### {table}\n", ("| row | params | WER [95 % CI] | Δ WER vs CTC [95 % CI] | CER [95 % CI] "
                  "| Δ CER vs CTC [95 % CI] | WER per lang | CER per lang | epoch tested | dev CER, last epoch |"
                  + extra), "|---|---|---|---|---|---|---|---|---|---|" + "---|---|" * len(parts)]
        errors = {k: {"wer": read_utterance_errors(os.path.join(f, "wer_test.txt")),
                      "cer": read_utterance_char_errors(os.path.join(f, "wer_test.txt"))} for k, f in runs.items()}
        for key, folder in sorted(runs.items(), key=lambda kv: sort_key(kv[0])):
            with open(os.path.join(folder, "results.json")) as fin:
                result = json.load(fin)
            base = baseline_for(key, runs, baseline_key)
            row = {"params": result["params"], "per_lang": result["sets"]["test"]["per_lang"],
                   "folder": os.path.relpath(folder, REPO), **tested_checkpoint(folder)}
            for rate in ("wer", "cer"):
                row[rate] = rate_interval(errors[key][rate])
                row[f"delta_{rate}_vs_ctc"] = (paired_bootstrap_wer(errors[base][rate], errors[key][rate])
                                               if base and base != key else None)
            for name, ids in parts.items():
                mine = {utt: e for utt, e in errors[key]["wer"].items() if utt in ids}
                row[name] = {"wer": rate_interval(mine) if mine else None, "delta_wer_vs_ctc": (
                    paired_bootstrap_wer({u: e for u, e in errors[base]["wer"].items() if u in ids}, mine)
                    if mine and base and base != key else None)}
            summary[table][key] = row
            langs = sorted(row["per_lang"].items())
            lines.append(f"| {key} | {row['params']} | {interval_text(row['wer'])} | "
                         f"{interval_text(row['delta_wer_vs_ctc'], True)} | {interval_text(row['cer'])} | "
                         f"{interval_text(row['delta_cer_vs_ctc'], True)} | "
                         + " ".join(f"{lang} {v['wer']:.1f}" for lang, v in langs) + " | "
                         + " ".join(f"{lang} {v['cer']:.1f}" for lang, v in langs)
                         + f" | {row['epoch_tested']} | {row['last_dev_cer']:.1f} |"
                         + "".join(f" {interval_text(row[name]['wer'])} | "
                                   f"{interval_text(row[name]['delta_wer_vs_ctc'], True)} |" for name in parts))
    return summary, "\n".join(lines) + "\n"


def across_seeds(summary):
    """The methods table over its seeds (``methods``, ``methods, seed <s>``): per row the mean
    WER and CER and each seed's difference to CTC alone, ``*`` where its 95 % interval excludes zero."""
    tables = [t for t in summary if t == "methods" or t.startswith("methods, seed ")]
    if len(tables) < 2:
        return ""
    lines = ["\n### methods, across seeds\n",
             "| row | seeds | mean WER | Δ WER vs CTC, per seed | mean Δ WER | mean CER | Δ CER vs CTC, per seed |",
             "|---|---|---|---|---|---|---|"]

    def deltas(rows, rate):
        found = [row[f"delta_{rate}_vs_ctc"] for row in rows if row[f"delta_{rate}_vs_ctc"]]
        text = " / ".join(f"{d['difference']:+.1f}{'*' if d['low'] > 0 or d['high'] < 0 else ''}" for d in found)
        return text or "—", (sum(d["difference"] for d in found) / len(found) if found else None)

    for key in sorted(summary["methods"], key=sort_key):
        rows = [summary[t][key] for t in tables if key in summary[t]]
        wer_text, wer_mean = deltas(rows, "wer")
        cer_text, _ = deltas(rows, "cer")
        mean = {rate: sum(row[rate]["difference"] for row in rows) / len(rows) for rate in ("wer", "cer")}
        lines.append(f"| {key} | {len(rows)} | {mean['wer']:.1f} | {wer_text} | "
                     f"{'—' if wer_mean is None else f'{wer_mean:+.1f}'} | {mean['cer']:.1f} | {cer_text} |")
    return "\n".join(lines) + "\n"


def sort_key(key):
    """Rows by condition (``1/30`` before ``1/12``, ``20%`` before ``40%``), then method order."""
    order = [*METHODS, "combo"]
    head, *condition = key.split()
    return ([condition_value(part) for part in condition], order.index(head) if head in order else len(order), key)


def condition_value(part):
    """``"1/30"`` -> 0.033, ``"20%"`` -> 20.0; anything else sorts after, as text."""
    number = re.fullmatch(r"(\d+(?:\.\d+)?)/(\d+(?:\.\d+)?)|(\d+(?:\.\d+)?)%", part)
    if not number:
        return (1, part)
    fraction, denominator, percent = number.groups()
    return (0, float(fraction) / float(denominator) if fraction else float(percent))


def baseline_for(key, runs, default):
    """The CTC-alone row of the same condition (``ctc 40%`` for ``kd 40%``)."""
    parts = key.split()
    same = " ".join(["ctc", *parts[1:]])
    return same if same in runs else default


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tables", type=int, nargs="+", default=[1, 2, 3, 4])
    parser.add_argument("--epochs", type=int, default=15, help="student epochs (every row the same budget)")
    parser.add_argument("--teacher_epochs", type=int, default=15)
    parser.add_argument("--jobs", type=int, default=1, help="recipe runs at a time")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1234],
                        help="student seeds: every table with the first, the methods table again with the others")
    parser.add_argument("--output", default=os.path.join(REPO, "results", "kd_families", "study"))
    parser.add_argument("--set", action="append", default=[], help="key=value override for every run")
    parser.add_argument("--report", action="store_true", help="tables of the runs done so far; start none")
    args = parser.parse_args(argv)
    if len(set(args.seeds)) != len(args.seeds):
        parser.error(f"--seeds repeats a seed: {args.seeds}")
    return args


def main(argv=None):
    args = parse_args(argv)
    study = Study(args)
    rows, subsets = study.tables()
    summary, markdown = summarize(rows, subsets)
    markdown += across_seeds(summary)
    with open(os.path.join(study.out, "tables.json"), "w") as fout:
        json.dump(summary, fout, indent=1)
    with open(os.path.join(study.out, "tables.md"), "w") as fout:
        fout.write(markdown)
    print(markdown)
    return summary


if __name__ == "__main__":
    main()
