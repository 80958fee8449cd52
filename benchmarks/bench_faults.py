"""Fault injection: kill -9 at random (seeded) points of training, caching, the pipeline and export, reruns
with other settings, a second run into a busy folder and half-written checkpoints; the outcome of each.

    nice -n 10 python benchmarks/bench_faults.py --kills 10 --seed 0
    nice -n 10 python benchmarks/bench_faults.py --kills 10 --inputs 6     # + benchmarks/fault_inputs.py's cases

Each case is ``case(workdir: Path, rng: random.Random) -> dict(fault=str, outcome=str, detail=str)``; the
outcome is one of

    resumed-identical  rerun after the fault, result bit-identical to the run without it
    refused-named      refused with a message naming the culprit (setting, file, other run's pid)
    skipped-counted    the bad part skipped with a warning naming it, the rest works
    silent             finished with a different result, or left processes running, without a word
    lost               the work cannot be recovered without deleting files by hand
    not-injected       every one of the TRIES drawn kill points fell after the process had ended

and the script ends non-zero when any outcome is silent or lost. References (an uninterrupted tiny student,
cache, export and pipeline on the tiny corpus) are computed once under ``--workdir``.
"""

import argparse
import functools
import hashlib
import json
import os
import random
import shutil
import signal
import sys
import textwrap
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(REPO / "tests" / "reliability"), str(REPO / "tests" / "plugins")]

from machine import machine_line
from reliability_helpers import (
    STUDENT_SIZES,
    alive,
    checkpoint_epochs,
    descendants,
    final_weights,
    kill_when,
    max_difference,
    recipe_command,
    run,
    start,
    wait_until,
)

OUTCOMES = ("resumed-identical", "refused-named", "skipped-counted", "silent", "lost", "not-injected")
FAILURES = ("silent", "lost")
ENDED_FIRST, MISSED_SAVE = "ended before the kill", "missed the save, killed after it"
"""How a kill case's detail starts when its drawn kill point did not land (the process was faster)."""
TRIES = 3
"""Draws per kill case before it is reported ``not-injected``."""
EPOCHS = 4
PIPELINE = "hparams/pipelines/tiny.yaml"


# ----------------------------------------------------------------------------- references (once per workdir)
def corpus(workdir):
    """The tiny corpus, built once."""
    from speechkd.data.corpus import build_corpus

    folder = workdir / "corpus"
    if not (folder / "test.csv").exists():
        build_corpus("numbers", "tiny", folder, seed=0, workers=1, progress=False)
    return str(folder)


def student_command(workdir, folder, **changes):
    overrides = {"data_folder": corpus(workdir), "corpus_size": "tiny", "output_folder": folder,
                 "number_of_epochs": EPOCHS, "batch_size": 8, **STUDENT_SIZES, **changes}
    return recipe_command("ctc/train.py", "ctc/student.yaml", overrides)


def run_reference(workdir, name, command_for):
    """Run ``command_for(folder)`` uninterrupted into an empty ``<workdir>/reference-<name>``.

    Returns
    -------
    folder : str
    seconds : float
        Its wall time (kill points are drawn as fractions of it).
    """
    folder = str(workdir / f"reference-{name}")
    shutil.rmtree(folder, ignore_errors=True)
    begin = time.perf_counter()
    returncode, output = run(command_for(folder), folder + ".log")
    if returncode != 0:
        raise RuntimeError(f"reference {name} failed:\n{output[-2000:]}")
    return folder, time.perf_counter() - begin


@functools.cache
def reference_student(workdir):
    """Folder and wall seconds of the uninterrupted tiny student run."""
    return run_reference(workdir, "student", lambda folder: student_command(workdir, folder))


CACHE_SCRIPT = textwrap.dedent("""
    import sys
    sys.path[:0] = sys.argv[3:]
    from reliability_helpers import build_toy_cache
    build_toy_cache(sys.argv[1], sys.argv[2], shard_utts=5)
""")


def cache_command(workdir, folder):
    """Cache two toy teachers over the tiny corpus in shards of 5 utterances (many commit points to kill between)."""
    return [sys.executable, "-c", CACHE_SCRIPT, corpus(workdir), folder,
            str(REPO / "tests" / "reliability"), str(REPO / "tests" / "plugins")]


@functools.cache
def reference_cache(workdir):
    return run_reference(workdir, "cache", lambda folder: cache_command(workdir, folder))


def export_command(workdir, out, model=None):
    """``speechkd export`` of ``model`` (default: the reference student) into ``out``, parity on 2 utterances."""
    model = model or reference_student(workdir)[0]
    return [sys.executable, "-m", "speechkd.cli", "export", "--model", str(model), "--out", out, "--no-torchscript",
            "--parity-utterances", "2", "--manifest", os.path.join(corpus(workdir), "test.csv"),
            "--data-root", corpus(workdir)]


@functools.cache
def reference_export(workdir):
    return run_reference(workdir, "export", lambda out: export_command(workdir, out))


def pipeline_command(out, *args):
    """The tiny pipeline up to the baseline (corpus, three teachers, baseline student) into ``out``."""
    return [sys.executable, "-m", "speechkd.cli", "run", PIPELINE, f"--output_folder={out}",
            f"--data_folder={out}/data", "--to", "baseline", *args]


@functools.cache
def reference_pipeline(workdir):
    return run_reference(workdir, "pipeline", pipeline_command)


# ----------------------------------------------------------------------------- comparisons
def weights_outcome(folder, reference, rerun_output, returncode):
    """Outcome of a rerun that should have resumed to ``reference``'s final weights."""
    if returncode != 0:
        return "lost", f"the rerun failed: {last_line(rerun_output)}"
    difference = max_difference(final_weights(folder), final_weights(reference))
    if difference == 0.0:
        return "resumed-identical", "final weights equal the uninterrupted run's"
    return "silent", f"final weights differ by up to {difference:.3g}"


def last_line(output):
    """The last line of a process's output (its error), shortened."""
    lines = output.strip().splitlines()
    return lines[-1][:200] if lines else "(no output)"


def file_digest(path):
    with open(path, "rb") as fin:
        return hashlib.sha256(fin.read()).hexdigest()


def cache_digest(folder):
    """Digest of a cache's content as read back (utterances, values, ids, errors, dev WER), shard layout aside."""
    from speechkd.distill.cache import PosteriorCache

    cache = PosteriorCache.open(folder)
    digest = hashlib.sha256(json.dumps(cache.dev_wer, sort_keys=True).encode())
    for utt in sorted(cache.utt_ids):
        digest.update(utt.encode())
        for values, ids in cache.get(utt):
            digest.update(values.tobytes())
            digest.update(ids.tobytes())
        digest.update(cache.teacher_error(utt).tobytes())
    return digest.hexdigest()


def kill_at_random_time(command, log, seconds, rng):
    """Start ``command``, SIGKILL it ``U(0.1, 0.95) * seconds`` later; returns (seconds waited, killed running)."""
    delay = rng.uniform(0.1, 0.95) * seconds
    proc = start(command, log)
    end = time.monotonic() + delay
    return delay, kill_when(proc, lambda: time.monotonic() >= end, timeout=delay + 60)


# ----------------------------------------------------------------------------- kill cases
def kill_training(workdir, rng):
    """kill -9 of a tiny student's training at a random point (0 to EPOCHS - 2 epochs done, plus up to 1 s)."""
    reference, _ = reference_student(workdir)
    folder = str(workdir / f"training-{rng.randrange(10**6)}")
    command = student_command(workdir, folder)
    epochs, extra = rng.randrange(EPOCHS - 1), rng.uniform(0.0, 1.0)  # the last epoch is over in about a second
    proc = start(command, folder + ".killed.log")
    killed = kill_when(proc, after(lambda: len(checkpoint_epochs(os.path.join(folder, "save"))) >= epochs, extra))
    returncode, output = run(command, folder + ".rerun.log")
    outcome, detail = weights_outcome(folder, reference, output, returncode)
    when = f"killed {extra:.2f} s after epoch {epochs}'s checkpoint" if killed else ENDED_FIRST
    return {"fault": "kill -9 during training", "outcome": outcome, "detail": f"{when}; {detail}"}


def after(condition, seconds):
    """A condition that holds ``seconds`` after ``condition()`` first held."""
    since = []

    def check():
        if not since and condition():
            since.append(time.monotonic())
        return bool(since) and time.monotonic() - since[0] >= seconds

    return check


def kill_checkpoint_save(workdir, rng):
    """kill -9 while a drawn epoch's checkpoint files are being written, then the same command again."""
    reference, _ = reference_student(workdir)
    folder = str(workdir / f"saving-{rng.randrange(10**6)}")
    command = student_command(workdir, folder)
    epoch = rng.randrange(1, EPOCHS + 1)
    save = Path(folder) / "save"

    def saving():
        return max(checkpoint_epochs(save), default=0) + 1 >= epoch and any(save.glob("*/CKPT.yaml.pending"))

    proc = start(command, folder + ".killed.log")
    killed = kill_when(proc, saving, poll=0.001)
    caught = killed and any(not (path.parent / "CKPT.yaml").exists() for path in save.glob("*/CKPT.yaml.pending"))
    saved = max(checkpoint_epochs(save), default=0)
    returncode, output = run(command, folder + ".rerun.log")
    outcome, detail = weights_outcome(folder, reference, output, returncode)
    when = f"killed while writing epoch {saved + 1}'s checkpoint" if caught else MISSED_SAVE
    return {"fault": "kill -9 while saving a checkpoint", "outcome": outcome, "detail": f"{when}; {detail}"}


def kill_caching(workdir, rng):
    """kill -9 of a posterior-cache run (two toy teachers, shards of 5) after a random number of shards, then again."""
    reference, _ = reference_cache(workdir)
    folder = str(workdir / f"cache-{rng.randrange(10**6)}")
    command = cache_command(workdir, folder)
    total = len(list(Path(reference).glob("shards/*.json")))
    shards = rng.randrange(1, total)
    proc = start(command, folder + ".killed.log")
    killed = kill_when(proc, lambda: len(list(Path(folder).glob("shards/*.json"))) >= shards, poll=0.001)
    returncode, output = run(command, folder + ".rerun.log")
    when = f"killed after shard {shards} of {total}" if killed else ENDED_FIRST
    if returncode != 0:
        return {"fault": "kill -9 during caching", "outcome": "lost",
                "detail": f"{when}; the rerun failed: {last_line(output)}"}
    same = cache_digest(folder) == cache_digest(reference)
    return {"fault": "kill -9 during caching", "outcome": "resumed-identical" if same else "silent",
            "detail": f"{when}; cache content and dev WER {'equal' if same else 'differ from'} the uninterrupted run's"}


def kill_pipeline(workdir, rng):
    """kill -9 of ``speechkd run`` (two stage processes side by side) at a random time: orphans, then a rerun."""
    reference, seconds = reference_pipeline(workdir)
    out = str(workdir / f"pipeline-{rng.randrange(10**6)}")
    delay = rng.uniform(0.1, 0.95) * seconds
    proc = start(pipeline_command(out), out + ".killed.log")
    end, seen = time.monotonic() + delay, {}

    def due():
        seen.update(descendants(proc.pid))
        return time.monotonic() >= end

    killed = kill_when(proc, due, timeout=delay + 60)
    wait_until(lambda: not alive(seen), timeout=15)
    orphans = alive(seen)
    for pid in orphans:
        os.kill(pid, signal.SIGKILL)
    returncode, output = run(pipeline_command(out), out + ".rerun.log")
    when = f"killed at {delay:.1f} s" if killed else ENDED_FIRST
    if orphans:
        return {"fault": "kill -9 of speechkd run", "outcome": "silent", "detail": f"{when}; {len(orphans)} orphans"}
    if returncode != 0:
        return {"fault": "kill -9 of speechkd run", "outcome": "lost", "detail": f"{when}; the rerun failed: {last_line(output)}"}
    models = ["baseline", *(f"teachers/{name}" for name in ("conformer", "crdnn", "tdnn"))]
    differ = [name for name in models
              if max_difference(final_weights(f"{out}/{name}"), final_weights(f"{reference}/{name}")) != 0.0]
    return {"fault": "kill -9 of speechkd run", "outcome": "silent" if differ else "resumed-identical",
            "detail": f"{when}; every process it had started ended with it; "
                      + (f"weights differ: {differ}" if differ else "teachers' and baseline's weights equal the reference")}


def kill_export(workdir, rng):
    """kill -9 of ``speechkd export`` at a random time: nothing half-published, then a rerun."""
    reference, seconds = reference_export(workdir)
    out = str(workdir / f"export-{rng.randrange(10**6)}")
    delay, killed = kill_at_random_time(export_command(workdir, out), out + ".killed.log", seconds, rng)
    published = sorted(os.listdir(out)) if os.path.isdir(out) else []
    partial = published and not os.path.exists(os.path.join(out, "export.json"))
    returncode, output = run(export_command(workdir, out), out + ".rerun.log")
    when = f"killed at {delay:.1f} s, {len(published)} file(s) published" if killed else ENDED_FIRST
    if partial:
        return {"fault": "kill -9 during export", "outcome": "silent", "detail": f"{when}: {published} without export.json"}
    if returncode != 0:
        return {"fault": "kill -9 during export", "outcome": "lost", "detail": f"{when}; the rerun failed: {last_line(output)}"}
    same = file_digest(os.path.join(out, "model.onnx")) == file_digest(os.path.join(reference, "model.onnx"))
    return {"fault": "kill -9 during export", "outcome": "resumed-identical" if same else "silent",
            "detail": f"{when}; model.onnx {'equals' if same else 'differs from'} the reference export"}


KILL_CASES = [kill_training, kill_checkpoint_save, kill_caching, kill_pipeline, kill_export]


# ----------------------------------------------------------------------------- reruns and concurrent runs
CHANGES = {"lr": 0.01, "gru_hidden": 24, "dropout": 0.3, "subsampling": 4, "augment": False}


def rerun_other_settings(workdir, rng):
    """A rerun into the trained student's folder with one other hyperparameter."""
    reference, _ = reference_student(workdir)
    key = rng.choice(sorted(CHANGES))
    folder = str(workdir / f"rerun-{key}")
    shutil.rmtree(folder, ignore_errors=True)
    shutil.copytree(reference, folder)
    before = {name: file_digest(os.path.join(folder, name)) for name in ("model.json", "hyperparams.yaml", "tokens.txt")}
    returncode, output = run(student_command(workdir, folder, **{key: CHANGES[key]}), folder + ".log")
    after = {name: file_digest(os.path.join(folder, name)) for name in before}
    named = f"{key}: " in output and "other hyperparameters" in output
    if returncode != 0 and named and after == before:
        return {"fault": f"rerun with --{key}={CHANGES[key]}", "outcome": "refused-named",
                "detail": "refused naming it; model.json, hyperparams.yaml, tokens.txt unchanged"}
    return {"fault": f"rerun with --{key}={CHANGES[key]}", "outcome": "silent",
            "detail": f"exit {returncode}; files {'unchanged' if after == before else 'rewritten'}"}


def second_run_same_folder(workdir, rng):
    """A second ``speechkd run`` into the folder of one that is running."""
    del rng  # nothing to draw
    out = str(workdir / "busy-pipeline")
    shutil.rmtree(out, ignore_errors=True)
    first = start(pipeline_command(out), out + ".first.log")
    lock = Path(out) / ".speechkd.lock"
    wait_until(lambda: lock.exists() and lock.read_text().strip() == str(first.pid))
    returncode, output = run(pipeline_command(out), out + ".second.log")
    processes = descendants(first.pid)
    kill_when(first, lambda: True)
    wait_until(lambda: not alive(processes), timeout=15)
    if returncode != 0 and f"pid {first.pid}" in output:
        return {"fault": "second speechkd run into a busy folder", "outcome": "refused-named",
                "detail": f"refused naming the first run's pid {first.pid}"}
    return {"fault": "second speechkd run into a busy folder", "outcome": "silent", "detail": f"exit {returncode}"}


def incomplete_checkpoint(workdir, rng):
    """A newest checkpoint left half-written by an older run (0-byte CKPT.yaml or truncated model.ckpt):
    transcribe and export."""
    reference, _ = reference_student(workdir)
    kind = rng.choice(["0-byte CKPT.yaml", "truncated model.ckpt"])
    folder = workdir / f"broken-{kind.split()[0]}"
    shutil.rmtree(folder, ignore_errors=True)
    shutil.copytree(reference, folder)
    good = next((folder / "save").glob("CKPT+*"))
    broken = folder / "save" / "CKPT+2099-01-01+00-00-00+00"
    shutil.copytree(good, broken)
    if kind.startswith("0-byte"):
        open(broken / "CKPT.yaml", "w").close()
    else:
        data = (broken / "model.ckpt").read_bytes()
        (broken / "model.ckpt").write_bytes(data[: len(data) // 3])
    audio = next(Path(corpus(workdir), "audio").rglob("*.flac"))
    transcribe = [sys.executable, "-m", "speechkd.cli", "transcribe", "--model", str(folder), str(audio)]
    results = [run(transcribe, f"{folder}.transcribe.log"),
               run(export_command(workdir, f"{folder}-export", model=folder), f"{folder}.export.log")]
    warned = all(f"ignoring incomplete checkpoint {broken}" in output for _, output in results)
    if all(code == 0 for code, _ in results) and warned:
        return {"fault": f"checkpoint with {kind}", "outcome": "skipped-counted",
                "detail": "transcribe and export skip it with a warning naming it"}
    return {"fault": f"checkpoint with {kind}", "outcome": "lost",
            "detail": f"exit codes {[code for code, _ in results]}, warned: {warned}"}


OTHER_CASES = [rerun_other_settings, second_run_same_folder, incomplete_checkpoint]


def input_cases(count):
    """``count`` corrupted-input cases from benchmarks/fault_inputs.py (another engineer's), when it exists."""
    if count == 0:
        return []
    try:
        from fault_inputs import input_fault_cases
    except ImportError:
        print("benchmarks/fault_inputs.py not found: no input cases", file=sys.stderr)
        return []
    cases = input_fault_cases()
    return [in_fresh_folder(cases[index % len(cases)], f"input-{index:02d}") for index in range(count)]


def in_fresh_folder(case, name):
    """``case`` run in an empty ``<workdir>/<name>`` (an input case damages the files it builds there)."""

    def fresh(workdir, rng):
        folder = workdir / name
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        return case(folder, rng)

    return fresh


def table(rows):
    lines = ["| # | fault | outcome | detail | seconds |", "|---|---|---|---|---|"]
    lines += [f"| {i} | {r['fault']} | {r['outcome']} | {r['detail']} | {r['seconds']:.0f} |"
              for i, r in enumerate(rows, 1)]
    counts = {outcome: sum(r["outcome"] == outcome for r in rows) for outcome in OUTCOMES}
    lines.append("")
    lines.append(", ".join(f"{outcome}: {n}" for outcome, n in counts.items())
                 + f" — silent or lost: {counts['silent'] + counts['lost']}")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kills", type=int, default=10, help="kill -9 cases, spread over the kill kinds")
    parser.add_argument("--inputs", type=int, default=0, help="corrupted-input cases (benchmarks/fault_inputs.py)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workdir", default="/tmp/speechkd-bench-faults")
    args = parser.parse_args(argv)
    os.environ["OMP_NUM_THREADS"] = "1"
    workdir = Path(args.workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    rng = random.Random(args.seed)
    cases = [KILL_CASES[index % len(KILL_CASES)] for index in range(args.kills)] + OTHER_CASES
    cases += input_cases(args.inputs)
    rows, begin = [], time.perf_counter()
    for case in cases:
        case_begin = time.perf_counter()
        for _ in range(TRIES):  # a kill drawn after the process ended injected nothing: draw again
            row = case(workdir, rng)
            if not row["detail"].startswith((ENDED_FIRST, MISSED_SAVE)):
                break
        else:
            row["outcome"] = "not-injected"
        row["seconds"] = time.perf_counter() - case_begin
        rows.append(row)
        print(f"{row['fault']}: {row['outcome']} ({row['detail']})", flush=True)
    print(f"\n{len(rows)} cases in {time.perf_counter() - begin:.0f} s, seed {args.seed}, {machine_line()}\n")
    print(table(rows))
    return 1 if any(row["outcome"] in FAILURES for row in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
