"""A small stage runner: ordered stages, fingerprints of their inputs, resumable runs.

Each stage owns a folder. When it finishes, a ``.done`` file in that folder
records the fingerprint of what it was run from (its configuration and the
fingerprints of the stages it depends on). A rerun skips a stage whose
``.done`` matches; a changed input, or ``force``, reruns it and, through the
fingerprints, everything downstream.

A stage that starts records the fingerprint it runs with in ``.started``: a
rerun after a kill resumes the stage's work when that fingerprint still
holds, and otherwise (``force``, or inputs changed since) calls the stage's
``restart`` first, so nothing trained under other settings is reloaded.

A whole run holds a lock on its output folder (:func:`folder_lock`), and the
processes it starts (:func:`spawn`) end when it ends, even by ``kill -9``.
"""

import contextlib
import dataclasses
import fcntl
import functools
import hashlib
import json
import logging
import os
import signal
import subprocess
import sys
import time
import traceback

logger = logging.getLogger(__name__)

DONE_FILE = ".done"
STARTED_FILE = ".started"
LOCK_FILE = ".speechkd.lock"
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
"""The checkout this ``speechkd`` is imported from."""
BACKGROUND_NICE = 19
"""CPU priority decrease of a ``background`` stage's process: it gets only the CPU time others leave idle."""
LOCK_HELD_ENV = "SPEECHKD_LOCK_HELD"
_LOCKED_HERE = set()
"""(pid, folder) of the locks this process holds: taking one again is a no-op (a forked child holds none)."""
"""Set (to the locked folder) in the processes a run starts: they work under their parent's lock."""


@dataclasses.dataclass
class Stage:
    """One step of a pipeline.

    Attributes
    ----------
    name : str
        Used by ``--from``, ``--to`` and ``--force``.
    folder : str
        Where the stage writes; holds its ``.done`` marker and ``log.txt``.
    run : callable
        ``run()`` does the work.
    config : object
        JSON-serialisable description of the stage's inputs (hparams file
        text, overrides, sizes...), part of its fingerprint.
    after : tuple of str
        Stages whose outputs this one reads.
    parallel : bool
        May run in its own process beside other stages, as soon as the
        stages it reads are done (see ``launch`` in :func:`run_stages`).
    background : bool
        A parallel stage that no later stage is waiting on in a hurry (the
        baseline student, when only the evaluation reads it): it starts as
        soon as it can, beside the ``workers`` others and not counted among
        them, at the lowest CPU priority (``nice`` 19), so that it takes the
        CPU time they leave idle and slows none of them. Its recorded wall
        time includes those waits. It fails the run as any stage does (the
        other processes are stopped), and is stopped when another fails.
    restart : callable, optional
        ``restart()`` removes the stage's partial work; called before a run
        that must start clean (forced, or inputs changed since it last
        started). Without it the stage's ``run`` always starts clean itself.
    """

    name: str
    folder: str
    run: object
    config: object
    after: tuple = ()
    parallel: bool = False
    background: bool = False
    restart: object = None


class StageFailed(RuntimeError):
    """A stage raised; the message names the stage and its log."""


class FolderLocked(RuntimeError):
    """Another run holds the output folder; the message names its process id."""


def fingerprint(payload):
    """Short, stable hash of a JSON-serialisable payload."""
    text = json.dumps(payload, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def read_done(folder, marker=DONE_FILE):
    """The fingerprint in a stage folder's ``.done`` (or other ``marker``), None when absent."""
    path = os.path.join(folder, marker)
    if not os.path.exists(path):
        return None
    with open(path) as fin:
        return fin.read().strip()


def must_start_clean(folder, stage_print):
    """Whether a stage's folder holds work done under another fingerprint (finished or started)."""
    return any(read_done(folder, marker) not in (None, stage_print) for marker in (DONE_FILE, STARTED_FILE))


def upstream_of(stages, names):
    """Names of every stage that ``names`` depend on, directly or not."""
    by_name = {stage.name: stage for stage in stages}
    needed, todo = set(), list(names)
    while todo:
        for dep in by_name[todo.pop()].after:
            if dep not in needed:
                needed.add(dep)
                todo.append(dep)
    return needed


def run_stages(stages, start=None, stop=None, force=(), echo=print, launch=None, workers=1,
               timings=None):
    """Run ``stages``, each once the stages it reads are done, skipping those done with the same inputs.

    Parameters
    ----------
    stages : list of Stage
        In preferred order; ``after`` may only name earlier stages.
    start, stop : str, optional
        First and last stage to consider (``--from`` / ``--to``); the stages
        those depend on must already be done.
    force : iterable of str
        Stages to redo even when done; their dependents follow.
    echo : callable
        Receives one progress line per stage.
    launch : callable, optional
        ``launch(stage, fresh) -> subprocess.Popen`` running that one stage in
        its own process (which writes the stage's ``.done``); ``fresh``: the
        stage must be redone from a clean start (forced, or a stage it reads
        was just redone), which the process must be told (``--force``). With ``workers`` > 1,
        every ``parallel`` stage runs this way, up to ``workers`` at a time,
        as soon as the stages it reads are done: a stage does not wait for
        unrelated ones (a distilled student from random weights trains beside the baseline once
        the teachers are cached). ``background`` stages run this way too,
        beside those and not counted in ``workers`` (``launch`` runs them at
        low priority). The other stages run in this process, when no
        foreground process runs.
    workers : int
        Processes for parallel stages, background ones not counted.
    timings : dict, optional
        Receives stage name -> wall seconds of each stage run.

    Returns
    -------
    dict
        Stage name -> ``"done"``, ``"skipped"`` or ``"not run"``.
    """
    names = [stage.name for stage in stages]
    for name in [start, stop, *force]:
        if name is not None and name not in names:
            raise ValueError(f"unknown stage {name!r}; stages are: {', '.join(names)}")
    first = names.index(start) if start else 0
    last = names.index(stop) if stop else len(stages) - 1
    needed = upstream_of(stages, names[first : last + 1])
    prints, status, ran = stage_fingerprints(stages), {}, set()
    timings = {} if timings is None else timings
    pending = list(enumerate(stages))
    running = {}  # name -> (stage, process, start time)
    in_processes = launch is not None and workers > 1
    try:
        while pending or running:
            unresolved = {stage.name for _, stage in pending} | set(running)
            for index, stage in list(pending):
                if any(dep in unresolved for dep in stage.after):
                    continue
                done = read_done(stage.folder) == prints[stage.name]
                forced = stage.name in force or any(dep in ran for dep in stage.after)
                if index < first or index > last:
                    if index < first and stage.name in needed and not done:
                        raise StageFailed(
                            f"stage '{stage.name}' is not done (or its inputs changed) but --from "
                            f"starts at '{start}'; run it first"
                        )
                    status[stage.name] = "not run"
                elif done and not forced:
                    echo(f"[{stage.name}] up to date, skipped")
                    status[stage.name] = "skipped"
                elif in_processes and stage.parallel:
                    foreground = [name for name, (other, _, _) in running.items() if not other.background]
                    if not stage.background and len(foreground) >= workers:
                        continue
                    os.makedirs(stage.folder, exist_ok=True)
                    priority = " at low priority" if stage.background else ""
                    echo(f"[{stage.name}] running in its own process{priority} (log: {stage.folder}/stage.log) ...")
                    running[stage.name] = (stage, launch(stage, fresh=forced), time.perf_counter())
                elif any(not other.background for other, _, _ in running.values()):
                    continue  # a stage run in this process runs alone, background processes aside
                else:
                    timings[stage.name] = run_one(stage, prints[stage.name], echo, fresh=forced)
                    status[stage.name] = "done"
                    ran.add(stage.name)
                pending.remove((index, stage))
                break  # the stages it unblocks are looked at from the start of the list again
            else:
                if running:
                    time.sleep(0.5)
                    for name, seconds in poll_finished(running, prints).items():
                        timings[name] = seconds
                        echo(f"[{name}] done in {seconds:.1f} s")
                        status[name] = "done"
                        ran.add(name)
    finally:  # a failure, or an interrupt of this process: the others stop too
        for _, process, _ in running.values():
            process.terminate()
    return {name: status[name] for name in names}  # in the stages' order, whatever order they finished in


def stage_fingerprints(stages):
    """Stage name -> fingerprint of its config and of every upstream stage's fingerprint."""
    prints = {}
    for stage in stages:
        upstream = {dep: prints[dep] for dep in stage.after}
        prints[stage.name] = fingerprint({"config": stage.config, "upstream": upstream})
    return prints


def run_one(stage, stage_print, echo, fresh=False):
    """Run one stage in this process and write its ``.done`` marker.

    The stage resumes its own partial work (a killed run) unless ``fresh`` or
    its folder holds work under another fingerprint: then ``stage.restart()``
    clears it first.

    Returns
    -------
    float
        Wall seconds.

    Raises
    ------
    StageFailed
        With the traceback written to ``<stage folder>/error.txt``.
    """
    begin = time.perf_counter()
    echo(f"[{stage.name}] running ...")
    os.makedirs(stage.folder, exist_ok=True)
    if stage.restart is not None and (fresh or must_start_clean(stage.folder, stage_print)):
        echo(f"[{stage.name}] starting clean (forced, or its inputs changed)")
        stage.restart()
    marker = os.path.join(stage.folder, DONE_FILE)
    if os.path.exists(marker):
        os.remove(marker)
    with open(os.path.join(stage.folder, STARTED_FILE), "w") as fout:
        fout.write(stage_print + "\n")
    try:
        stage.run()
    except Exception as err:
        log_path = os.path.join(stage.folder, "error.txt")
        with open(log_path, "w") as fout:
            traceback.print_exc(file=fout)
        raise StageFailed(
            f"stage '{stage.name}' failed: {err} (traceback in {log_path}; "
            "rerun the same command to continue from this stage)"
        ) from err
    with open(marker, "w") as fout:
        fout.write(stage_print + "\n")
    seconds = time.perf_counter() - begin
    echo(f"[{stage.name}] done in {seconds:.1f} s")
    return seconds


def poll_finished(running, prints):
    """Remove the finished processes from ``running``; raise StageFailed on the first failure.

    Parameters
    ----------
    running : dict
        Stage name -> ``(stage, process, start time)``; finished ones are removed.
    prints : dict
        Stage name -> the fingerprint its ``.done`` must hold.

    Returns
    -------
    dict
        Stage name -> wall seconds, for the stages that finished.
    """
    finished = {}
    for name, (stage, process, begin) in list(running.items()):
        if process.poll() is None:
            continue
        del running[name]
        if process.returncode != 0 or read_done(stage.folder) != prints[name]:
            raise StageFailed(
                f"stage '{name}' failed (exit code {process.returncode}; log in "
                f"{stage.folder}/stage.log; rerun the same command to continue from this stage)"
            )
        finished[name] = time.perf_counter() - begin
    return finished


@contextlib.contextmanager
def folder_lock(folder):
    """Hold ``<folder>/.speechkd.lock`` (``fcntl.flock``) while the block runs.

    The operating system releases the lock when the holder ends, however it
    ends. A process started by the holder (``LOCK_HELD_ENV`` naming the
    folder), or a nested block of the holder itself, works under the
    holder's lock.

    Raises
    ------
    FolderLocked
        Another process holds the lock; the message names its pid.
    """
    folder = os.path.abspath(folder)
    if os.environ.get(LOCK_HELD_ENV) == folder or (os.getpid(), folder) in _LOCKED_HERE:
        yield
        return
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, LOCK_FILE)
    descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(descriptor, 64, 0).decode(errors="replace").strip() or "unknown"
            raise FolderLocked(
                f"{folder} is in use by another speechkd run (pid {holder}, lock {path}); wait for it to "
                "end or stop it, or write to another --output_folder"
            ) from None
        os.ftruncate(descriptor, 0)
        os.pwrite(descriptor, f"{os.getpid()}\n".encode(), 0)
        _LOCKED_HERE.add((os.getpid(), folder))
        try:
            yield
        finally:
            _LOCKED_HERE.discard((os.getpid(), folder))
    finally:
        os.close(descriptor)


def library_env(*extra_paths):
    """This process's environment with this speechkd first on ``PYTHONPATH``, then ``extra_paths``.

    A recipe, CLI or test subprocess then imports the same library as its
    parent (a script's own folder comes first on its path, so it would
    otherwise import whichever speechkd the virtualenv has installed).
    Paths already there are not repeated.

    Returns
    -------
    dict
        A copy of ``os.environ`` with ``PYTHONPATH`` set.
    """
    current = [path for path in os.environ.get("PYTHONPATH", "").split(os.pathsep) if path]
    paths = dict.fromkeys([REPO_ROOT, *map(str, extra_paths), *current])
    return {**os.environ, "PYTHONPATH": os.pathsep.join(paths)}


def spawn(command, nice=0, **popen_kwargs):
    """``subprocess.Popen(command)`` whose process ends when this one ends (Linux: ``PR_SET_PDEATHSIG``).

    So killing a run, even with ``kill -9``, leaves no stage or recipe running
    as an orphan: each process started this way gets SIGTERM when its parent
    dies, and passes it on to the processes it started the same way. ``nice``
    lowers the process's CPU priority by that much (19: it runs only on CPU
    time that others leave idle); the processes it starts inherit it.
    """
    if sys.platform.startswith("linux"):
        popen_kwargs["preexec_fn"] = functools.partial(start_child, os.getpid(), nice)
    elif nice:
        popen_kwargs["preexec_fn"] = functools.partial(os.nice, nice)
    return subprocess.Popen(command, **popen_kwargs)


def start_child(parent_pid, nice=0):
    """In a just-forked child: ask the kernel for SIGTERM when the parent dies (and exit if it already has);
    lower the child's CPU priority by ``nice``."""
    import ctypes

    pr_set_pdeathsig = 1
    ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)
    if os.getppid() != parent_pid:
        os._exit(1)
    if nice:
        os.nice(nice)
