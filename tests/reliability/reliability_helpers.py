"""Fault injection for the reliability tests and benchmarks/bench_faults.py: start a recipe, kill it at a chosen point."""

import os
import signal
import subprocess
import sys
import time

import torch

from speechkd.stages import library_env

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
STUDENT_SIZES = {"conv_channels": 16, "gru_hidden": 16}


def recipe_command(script, hparams, overrides):
    """``python recipes/<script> hparams/<hparams> --key=value ...`` as an argument list."""
    return [sys.executable, os.path.join(REPO, "recipes", script), os.path.join(REPO, "hparams", hparams),
            *(f"--{key}={value}" for key, value in overrides.items())]


def repo_env(**extra):
    """The environment a recipe or ``speechkd`` runs in: this checkout's library, one thread."""
    return {**library_env(), "OMP_NUM_THREADS": "1", **extra}


def start(command, log_path):
    """Start ``command`` from the repository root, output to ``log_path``; returns the Popen."""
    with open(log_path, "w") as log:
        return subprocess.Popen(command, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, env=repo_env())


def run(command, log_path):
    """Run ``command`` to its end; returns ``(returncode, output)``."""
    proc = start(command, log_path)
    proc.wait()
    with open(log_path) as fin:
        return proc.returncode, fin.read()


def kill_when(proc, condition, timeout=120.0, poll=0.01):
    """SIGKILL ``proc`` as soon as ``condition()`` holds.

    Returns
    -------
    bool
        True when the process was still running at the kill; False when it
        ended first (or the timeout passed, then it is killed anyway).
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None and not condition():
        time.sleep(poll)
    alive = proc.poll() is None and time.monotonic() < deadline
    if proc.poll() is None:
        proc.send_signal(signal.SIGKILL)
    proc.wait()
    return alive


def wait_until(condition, timeout=60.0, poll=0.05):
    """Poll ``condition()`` until it holds (True) or ``timeout`` seconds pass (False)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(poll)
    return True


def checkpoint_epochs(save_dir):
    """Epochs of the complete checkpoints (``CKPT.yaml`` present) in a ``save`` folder."""
    epochs = []
    if not os.path.isdir(save_dir):
        return epochs
    for name in os.listdir(save_dir):
        counter = os.path.join(save_dir, name, "counter.ckpt")
        if os.path.exists(os.path.join(save_dir, name, "CKPT.yaml")) and os.path.exists(counter):
            with open(counter) as fin:
                text = fin.read().strip()
            if text:
                epochs.append(int(text))
    return sorted(epochs)


def final_weights(folder):
    """The model weights of the newest complete checkpoint of an experiment folder."""
    from speechkd.checkpoints import Checkpointer

    checkpoint = Checkpointer(os.path.join(folder, "save")).find_checkpoint()
    return torch.load(checkpoint.paramfiles["model"], map_location="cpu")


def max_difference(weights, other):
    """Largest absolute difference between two state dicts with the same keys."""
    return max(float((weights[key].double() - other[key].double()).abs().max()) for key in weights)


def process_table():
    """pid -> (parent pid, start time in clock ticks) of every living process (from /proc; zombies left out)."""
    table = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as fin:
                    fields = fin.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if fields[0] != "Z":
                table[int(entry)] = (int(fields[1]), int(fields[19]))
    return table


def descendants(pid):
    """Every living descendant of ``pid``: pid -> start time (which tells a process from a later one with its pid)."""
    table = process_table()
    found, todo = {}, [pid]
    while todo:
        parent = todo.pop()
        for child, (ppid, started) in table.items():
            if ppid == parent:
                found[child] = started
                todo.append(child)
    return found


def alive(processes):
    """The pids of ``processes`` (pid -> start time, from :func:`descendants`) still running."""
    table = process_table()
    return [pid for pid, started in processes.items() if pid in table and table[pid][1] == started]


def build_toy_cache(corpus, cache_folder, shard_utts=256):
    """Cache two random toy teachers (tests/plugins/toy.py) over the corpus's train and dev sets, as the recipe does."""
    from toy import RandomTeacher

    from speechkd.data.pipelines import make_dataset
    from speechkd.distill.teachers import TeacherEnsemble, build_cache, cache_features

    torch.manual_seed(0)  # the toy teachers' biases come from the global generator
    ensemble = TeacherEnsemble([RandomTeacher(seed=0, name="first"), RandomTeacher(seed=1, name="second")])
    datasets = {split: make_dataset(os.path.join(corpus, f"{split}.csv"), corpus, need_text=False, sort="none")
                for split in ("train", "dev")}
    return build_cache(ensemble, datasets, cache_folder, 4, cache_features(corpus, "clean"), batch_size=8,
                       shard_utts=shard_utts)
