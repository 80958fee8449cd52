"""The main job behind ``speechkd run hparams/pipelines/<name>.yaml``.

Stages, in order (each the recipes' own library code, each skipped when
rerun with unchanged inputs; see :mod:`speechkd.stages`):

    corpus            build the embedded corpus
    baseline          train the student alone (recipes/ctc/train.py)
    guide             with ``teacher_guide: student``: the student trained alone for ``guide_epochs``
    guide_cache       with a ``teacher_guide``: the guide's posteriors on train and dev
    teacher_<name>    train each teacher: on CTC alone (recipes/ctc/train.py), or guided by the
                      student's spike timing (recipes/distill/train.py, hparams/distill/guided/)
    cache             cache the teachers' posteriors (recipes/distill/cache_teachers.py), on the
                      transfer set too when ``corpus_unlabelled_minutes`` > 0
    distill           distil the ensemble into the same student (recipes/distill/train.py),
                      its KD term also on the transfer set; with ``distill_from_baseline`` the
                      student starts from the baseline's weights
    evaluate          WER/CER/RTF of every model, the fused ensemble, teacher agreement;
                      WER/CER on real speech (``real_speech_manifest``) when it is there
    export            ONNX fp32/int8 + streaming + TorchScript of the distilled student, parity-checked
    report            report.md, results.json, wer_vs_size.png, curves.png

Every stage writes under ``<output_folder>/<stage>/``. A stage forced, or
whose settings changed, trains from scratch (its folder is emptied first); a
stage killed midway resumes. One run at a time holds ``<output_folder>``
(a second is refused, naming the first one's pid), and killing the run ends
the stage and recipe processes it started.
"""

import copy
import os
import shutil
import subprocess
import sys

from speechkd.experiment import load_hparams, resolved_yaml_text, yaml_blocks
from speechkd.report import record_stage_seconds
from speechkd.stages import (
    BACKGROUND_NICE,
    LOCK_HELD_ENV,
    REPO_ROOT,
    Stage,
    folder_lock,
    library_env,
    run_stages,
    spawn,
)


class YamlText(str):
    """An override value passed to a recipe as written (a tag such as ``!name:``), not quoted."""


PREPARED = YamlText("!name:speechkd.data.corpora.common.prepared_beforehand")
"""The ``prepare`` a recipe gets when the pipeline's corpus stage already wrote the manifests."""


def recipe_config(hparams_file, overrides):
    """The part of a stage's fingerprint that describes a recipe run."""
    return {"hparams": resolved_yaml_text(hparams_file), "overrides": overrides}


def run_recipe(script, hparams_file, overrides, threads=1, nproc=1, stdout=None):
    """Run ``python <script> <hparams_file> --key=value ...`` as a user would; raise if it fails.

    Parameters
    ----------
    script : str
        Recipe script, e.g. ``recipes/ctc/train.py``.
    hparams_file : str
    overrides : dict
        Values are written as YAML (flow style), as SpeechBrain parses them.
    threads : int
        Torch CPU threads of each recipe process (``OMP_NUM_THREADS``).
    nproc : int
        Processes: more than one runs the recipe through torchrun (see :func:`recipe_command`).
    stdout : file, optional
        Where the recipe's output goes (default: this process's stdout).
    """
    command = recipe_command(script, hparams_file, overrides, nproc)
    env = {**library_env(), "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    returncode = spawn(command, env=env, stdout=stdout).wait()
    if returncode != 0:
        raise subprocess.CalledProcessError(returncode, command)


def empty_folder(folder, keep=("stage.log",)):
    """Delete everything in ``folder`` but ``keep`` (a forced or changed stage starts from nothing)."""
    for name in set(os.listdir(folder)) - set(keep):
        path = os.path.join(folder, name)
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path)
        else:
            os.remove(path)


def recipe_command(script, hparams_file, overrides, nproc=1):
    """The command line of a recipe run: ``python <script> ...``, or with ``nproc`` > 1
    ``python -m torch.distributed.run --standalone --nproc_per_node=<nproc> <script> ...
    --distributed_backend=<nccl on GPUs, else gloo>`` (SpeechBrain's DDP)."""
    command = [os.path.join(REPO_ROOT, script), hparams_file, *overrides_to_argv(overrides)]
    if nproc == 1:
        return [sys.executable, *command]
    import torch

    backend = "nccl" if torch.cuda.is_available() else "gloo"
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
            *command, f"--distributed_backend={backend}"]


def describe_call(partial):
    """A ``!name:`` partial as JSON-able data (for a stage's fingerprint)."""
    return {"function": f"{partial.func.__module__}.{partial.func.__qualname__}",
            "arguments": {key: list(v) if isinstance(v, tuple) else v for key, v in partial.keywords.items()}}


def overrides_to_argv(overrides):
    """``{"teachers": ["a", "b"], "lr": 0.1}`` -> ``["--teachers=[a, b]", "--lr=0.1"]``."""
    import yaml

    argv = []
    for key, value in overrides.items():
        if isinstance(value, YamlText):
            argv.append(f"--{key}={value}")
            continue
        text = yaml.safe_dump([value], default_flow_style=True, width=float("inf")).strip()
        argv.append(f"--{key}={text[1:-1]}")
    return argv


class Pipeline:
    """Builds the stage list from a pipeline YAML.

    Parameters
    ----------
    hparams : dict
        The loaded pipeline YAML (see ``hparams/pipelines/quickstart.yaml``).
    """

    def __init__(self, hparams):
        self.hparams = hparams
        self.timings = {}
        self.out = hparams["output_folder"]
        if hparams.get("recipes_read_prepared", False):  # a real corpus: the corpus stage prepared it
            self.data = {"data_folder": hparams["data_folder"], "seed": hparams["seed"], "prepare": PREPARED}
        else:  # the embedded corpus: every recipe builds (or finds) the same one
            self.data = {
                "data_folder": hparams["data_folder"],
                "corpus_task": hparams["corpus_task"],
                "corpus_size": hparams["corpus_size"],
                "corpus_seed": hparams["corpus_seed"],
                "corpus_unlabelled_minutes": hparams.get("corpus_unlabelled_minutes", 0),
                "corpus_languages": hparams.get("corpus_languages"),
                "domains": hparams.get("domains", ["clean"]),
                "seed": hparams["seed"],
            }
            if hparams.get("corpus_augment"):
                self.data["corpus_augment"] = hparams["corpus_augment"]
            if hparams.get("corpus_engines"):
                self.data["corpus_engines"] = hparams["corpus_engines"]

    def transfer_set(self):
        """The embedded corpus's ``unlabelled.csv`` when ``corpus_unlabelled_minutes`` asks for one, else None.

        The teachers label it in the cache stage and the distilled student's KD
        term learns from it beside the labelled train set; the baseline, which
        needs transcripts, never sees it.
        """
        if not self.data.get("corpus_unlabelled_minutes"):
            return None
        return os.path.join(self.data["data_folder"], "unlabelled.csv")

    def folder(self, *parts):
        return os.path.join(self.out, *parts)

    def teacher_folders(self):
        return [self.folder("teachers", name) for name in self.hparams["teachers"]]

    def pretrained_teachers(self):
        """Teachers the pipeline does not train: model folders or ``{folder: ..., <options>}`` entries."""
        return list(self.hparams.get("pretrained_teachers") or [])

    def pretrained_files(self):
        """Name, size and modification time of every file of the pretrained teachers (a cheap stand-in
        for their weights hash, which the cache checks itself): new weights in a folder redo the cache."""
        listing = {}
        for spec in self.pretrained_teachers():
            path = spec["folder"] if isinstance(spec, dict) else spec
            files = ([os.path.join(root, f) for root, _, names in os.walk(path) for f in names]
                     if os.path.isdir(path) else [path])
            listing[path] = sorted((os.path.relpath(f, path) if f != path else os.path.basename(f),
                                    os.path.getsize(f), int(os.path.getmtime(f))) for f in files)
        return listing

    def recipe_stage(self, name, script, spec, overrides, folder, after, folder_key="output_folder",
                     parallel=False, background=False, inputs=None):
        """A stage that runs a recipe script on its YAML, with overrides.

        ``spec`` holds ``hparams`` (the recipe YAML), ``overrides`` and
        optionally ``threads`` (torch CPU threads for this stage; default
        ``train_threads``) and ``nproc`` (processes, launched through
        torchrun when more than one; such a stage runs alone, not beside
        other stages). ``folder_key`` names the YAML key that receives
        the stage's folder. ``inputs`` joins the stage's fingerprint (e.g.
        the files of pretrained teachers).
        """
        if "hparams" not in spec:
            raise ValueError(f"pipeline stage {name!r} names no recipe YAML (`hparams:`); its entry: {spec}")
        hparams_file = spec["hparams"]
        overrides = {**self.data, **overrides, **spec["overrides"], folder_key: folder}
        threads = spec.get("threads", self.hparams["train_threads"])
        nproc = int(spec.get("nproc", 1))
        if nproc < 1:
            raise ValueError(f"stage {name}: nproc must be >= 1, got {nproc}")

        def run():
            run_recipe(script, hparams_file, overrides, threads, nproc)

        config = {**recipe_config(hparams_file, overrides), "script": script, "threads": threads,
                  **({"nproc": nproc} if nproc > 1 else {}), **({"inputs": inputs} if inputs else {})}
        return Stage(name, folder, run, config, after=after, parallel=parallel and nproc == 1,
                     background=background and nproc == 1, restart=lambda: empty_folder(folder))

    def corpus_stage(self):
        """The ``corpus`` stage. A real corpus (``recipes_read_prepared``) forced or with changed
        settings starts from an empty ``data_folder`` (:func:`~speechkd.data.corpora.common.clear_prepared`):
        its preparation would otherwise find its ``prepare.done`` and reuse the old audio. The
        embedded corpus checks its own content (``corpus.json``) and needs no restart."""
        restart = None
        if self.hparams.get("recipes_read_prepared", False):
            from speechkd.data.corpora.common import clear_prepared

            def restart():
                clear_prepared(self.data["data_folder"])

        return Stage("corpus", self.folder("corpus"), self.build_corpus,
                     {**self.data, "prepare": describe_call(self.hparams["prepare"])}, restart=restart)

    def teacher_guide_stages(self):
        """``(stages, teacher script, teacher overrides, teacher after)`` for ``teacher_guide``.

        ``teacher_guide: null`` (default): the teachers train on CTC alone
        (``recipes/ctc/train.py``) from the corpus. Otherwise a guide, the
        student trained alone, times the teachers: a ``guide_cache`` stage
        caches its posteriors on train and dev, and every teacher trains with
        ``recipes/distill/train.py`` on CTC plus the guide's spike timing (its
        YAML one of ``hparams/distill/guided/``; see
        ``hparams/common/guided_teacher.yaml``), so that the teachers spike
        together, and where the student does. ``teacher_guide: baseline``:
        the guide is the baseline, which then trains before the teachers;
        ``teacher_guide: student``: a ``guide`` stage trains the student
        alone for ``guide_epochs`` (its timing is set long before its
        accuracy), and the baseline trains beside the teachers.
        """
        guide = self.hparams.get("teacher_guide")
        self.check_teacher_recipes(guided=guide is not None)
        if guide is None:
            return [], "recipes/ctc/train.py", {}, ("corpus",)
        if guide == "baseline":
            guide_training, guide_stage, guide_folder = [], "baseline", self.folder("baseline")
        elif guide == "student":
            epochs = self.hparams.get("guide_epochs")
            if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
                raise ValueError(f"teacher_guide: student needs guide_epochs, a positive number of epochs; got {epochs!r}")
            student = self.hparams["student"]
            guide_spec = {**student, "overrides": {**student["overrides"], "number_of_epochs": epochs}}
            guide_stage, guide_folder = "guide", self.folder("guide_model")
            guide_training = [self.recipe_stage(guide_stage, "recipes/ctc/train.py", guide_spec, {"name": "guide"},
                                                guide_folder, after=("corpus",), parallel=True)]
        else:
            raise ValueError(f"teacher_guide must be null, 'baseline' (the student trained alone) or 'student' "
                             f"(the student trained alone for guide_epochs), got {guide!r}")
        cache = self.recipe_stage("guide_cache", "recipes/distill/cache_teachers.py", self.hparams["cache"],
                                  {"teachers": [guide_folder], "top_k": self.hparams["top_k"]},
                                  self.folder("guide"), after=(guide_stage,), folder_key="cache_folder",
                                  parallel=True)
        overrides = {"teachers": [guide_folder], "cache_folder": cache.folder, "top_k": self.hparams["top_k"]}
        return [*guide_training, cache], "recipes/distill/train.py", overrides, (cache.name,)

    def check_teacher_recipes(self, guided):
        """Refuse, naming it, a teacher YAML that does not fit ``teacher_guide``: a guided teacher
        needs a guide cache (``cache_folder``, as in ``hparams/distill/guided/``), a CTC recipe has none."""
        for name, spec in self.hparams["teachers"].items():
            takes_guide = "cache_folder" in yaml_blocks(resolved_yaml_text(spec["hparams"]))
            if takes_guide != guided:
                wanted = "hparams/distill/guided/<model>.yaml" if guided else "hparams/ctc/<model>.yaml"
                raise ValueError(
                    f"teacher {name!r}: {spec['hparams']} does not fit teacher_guide: "
                    f"{self.hparams.get('teacher_guide') or 'null'} (use a YAML like {wanted}, or "
                    f"{'teacher_guide: null' if guided else 'teacher_guide: baseline'})")

    def stages(self):
        stages = [self.corpus_stage()]
        guide_stages, teacher_script, teacher_overrides, teacher_after = self.teacher_guide_stages()
        baseline_guides = self.hparams.get("teacher_guide") == "baseline"
        # distill_from_baseline: the distilled student continues the baseline's training (same size and tokens)
        baseline_starts_student = bool(self.hparams.get("distill_from_baseline"))
        # Unless it guides the teachers or starts the distilled student, only the evaluation reads the
        # baseline: it trains at low priority from the start, on the CPU time the stages towards the
        # distilled student leave idle
        baseline = self.recipe_stage("baseline", "recipes/ctc/train.py", self.hparams["student"], {"name": "baseline"},
                                     self.folder("baseline"), after=("corpus",), parallel=True,
                                     background=not baseline_guides and not baseline_starts_student)
        if baseline_guides:  # it goes first
            stages.append(baseline)
        stages += guide_stages
        teacher_stages = []
        for name, spec in self.hparams["teachers"].items():
            stage = self.recipe_stage(f"teacher_{name}", teacher_script, spec, {"name": name, **teacher_overrides},
                                      self.folder("teachers", name), after=teacher_after, parallel=True)
            stages.append(stage)
            teacher_stages.append(stage.name)
        if not baseline_guides:  # the teachers, longer, start first
            stages.append(baseline)
        kd_common = {"teachers": [*self.teacher_folders(), *self.pretrained_teachers()], "top_k": self.hparams["top_k"]}
        transfer = self.transfer_set()
        cache_extra = {} if transfer is None else {"cache_splits": {
            split: os.path.join(self.data["data_folder"], f"{split}.csv") for split in ("train", "dev")
        } | {"unlabelled": transfer}}
        stages.append(self.recipe_stage("cache", "recipes/distill/cache_teachers.py", self.hparams["cache"],
                                        {**kd_common, **cache_extra},
                                        self.folder("cache"), after=tuple(teacher_stages),
                                        folder_key="cache_folder", inputs=self.pretrained_files(),
                                        parallel=True))
        kd_common["cache_folder"] = self.folder("cache")
        distill_spec = {**self.hparams["distill"], "overrides": {**self.hparams["student"]["overrides"],
                                                        **self.hparams["distill"]["overrides"]}}
        distill_spec.setdefault("threads", self.hparams["student"].get("threads", self.hparams["train_threads"]))
        from_baseline = {"init_from": self.folder("baseline")} if baseline_starts_student else {}
        stages.append(self.recipe_stage(
            "distill", "recipes/distill/train.py", distill_spec,
            {"name": "student_kd", "strategy": self.hparams["strategy"], **kd_common, **from_baseline,
             **({} if transfer is None else {"unlabelled_csv": transfer})}, self.folder("distill"),
            after=("cache", "baseline") if from_baseline else ("cache",), parallel=True,
        ))
        models = ["baseline", "distill", *teacher_stages]
        stages.append(Stage("evaluate", self.folder("evaluate"), self.evaluate,
                            {"strategies": self.hparams["ensemble_strategies"], "threads": self.hparams["rtf_threads"],
                             "real_speech_manifest": self.real_speech_manifest()},
                            after=tuple(models), restart=lambda: empty_folder(self.folder("evaluate"))))
        stages.append(Stage("export", self.folder("export"), self.export, {"version": 1},
                            after=("distill",)))
        stages.append(Stage("report", self.out, self.report, {"version": 1},
                            after=("evaluate", "export")))
        return stages

    def build_corpus(self):
        self.hparams["prepare"]()

    def model_folders(self):
        """Report name -> experiment folder, teachers first."""
        folders = {name: self.folder("teachers", name) for name in self.hparams["teachers"]}
        folders["baseline"] = self.folder("baseline")
        folders["student_kd"] = self.folder("distill")
        return folders

    def real_speech_manifest(self):
        """``real_speech_manifest`` resolved against the repository (``None`` when the YAML has none).

        A path that does not exist is kept: the evaluate stage notes it is
        missing and the report says so.
        """
        path = self.hparams.get("real_speech_manifest")
        return os.path.normpath(os.path.join(REPO_ROOT, path)) if path else None

    def evaluate(self):
        from speechkd.evaluation import evaluate_pipeline_models

        evaluate_pipeline_models(
            self.model_folders(),
            test_csv=os.path.join(self.data["data_folder"], "test.csv"),
            data_folder=self.data["data_folder"],
            out=self.folder("evaluate"),
            strategies=self.hparams["ensemble_strategies"],
            threads=self.hparams["rtf_threads"],
            teacher_names=list(self.hparams["teachers"]),
            # the cache's dev WER covers the pretrained teachers too, the evaluated ensemble only the trained ones
            train_cache=None if self.pretrained_teachers() else self.folder("cache"),
            real_speech=self.real_speech_manifest(),
            real_strategy=self.hparams["strategy"],
            lexicon=(os.path.join(self.data["data_folder"], "train.csv")
                     if self.hparams.get("lexicon_decoding", False) else None),
        )

    def export(self):
        from speechkd.export import export_experiment

        export_experiment(self.folder("distill"), self.folder("export"),
                          manifest=os.path.join(self.data["data_folder"], "test.csv"),
                          data_root=self.data["data_folder"])

    def report(self):
        from speechkd.report import write_report

        print(write_report(self.out, self.model_folders(), list(self.hparams["teachers"]),
                           self.hparams["strategy"], self.timings))


def run(pipeline_file, overrides=(), start=None, stop=None, force=()):
    """Run a pipeline YAML from the shell (``speechkd run``).

    With ``workers`` > 1 in the YAML, the recipe stages (teachers, baseline,
    cache, distill) run in their own processes, each running this same
    command for that one stage, ``workers`` at a time, each as soon as the
    stages it reads are done: the teachers side by side, and the cache and
    the distilled student as soon as the teachers are done. The baseline,
    unless it guides the teachers, is a background stage: it starts at once,
    beside those and at the lowest CPU priority (``BACKGROUND_NICE``), and
    trains on the CPU time they leave idle.
    """
    override_dict = parse_overrides(overrides)
    hparams, _ = load_hparams(pipeline_file, override_dict)
    pipeline = Pipeline(hparams)

    def launch(stage, fresh=False):
        command = [sys.executable, "-m", "speechkd.cli", "run", pipeline_file, *overrides,
                   "--workers=1", "--from", stage.name, "--to", stage.name]
        if fresh:  # forced, or a stage it reads was redone: its own `.done` would still match
            command += ["--force", stage.name]
        env = {**library_env(), "OMP_NUM_THREADS": "1", LOCK_HELD_ENV: os.path.abspath(pipeline.out)}
        with open(os.path.join(stage.folder, "stage.log"), "w") as log:  # the child keeps its copy
            return spawn(command, nice=BACKGROUND_NICE if stage.background else 0, stdout=log,
                         stderr=subprocess.STDOUT, env=env)

    with folder_lock(pipeline.out):
        try:
            status = run_stages(pipeline.stages(), start=start, stop=stop, force=force, launch=launch,
                                workers=hparams["workers"], timings=pipeline.timings)
        finally:  # a failed run keeps the times of the stages it finished (the launching run records them)
            if os.environ.get(LOCK_HELD_ENV) != os.path.abspath(pipeline.out):
                record_stage_seconds(pipeline.out, pipeline.timings)
    return pipeline, status


def parse_overrides(overrides):
    """``["--key=value", ...]`` -> dict, values parsed as YAML (as SpeechBrain does)."""
    import yaml

    parsed = {}
    for item in overrides:
        key, _, value = item.lstrip("-").partition("=")
        parsed[key] = yaml.safe_load(value)
    return copy.deepcopy(parsed)

