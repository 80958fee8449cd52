"""The main job's stages end to end on the tiny corpus (hparams/pipelines/tiny.yaml)."""

import json
import os
import re
import shutil

import pytest
import soundfile as sf

from speechkd.data.manifest import read_manifest, write_manifest
from speechkd.data.pipelines import resolve_path
from speechkd.metrics import read_utterance_errors
from speechkd.pipeline import run
from speechkd.resampling import resample

REPORT_FILES = ["report.md", "results.json", "wer_vs_size.png", "curves.png"]


def narrowband_manifest(corpus, folder, n=3):
    """The first ``n`` test utterances of ``corpus`` at 8 kHz, as a stand-in real-speech manifest."""
    os.makedirs(folder, exist_ok=True)
    rows = read_manifest(os.path.join(corpus, "test.csv"))[:n]
    for row in rows:
        audio, rate = sf.read(resolve_path(row["wav"], corpus), dtype="float32")
        sf.write(os.path.join(folder, f"{row['ID']}.flac"), resample(audio, rate, 8000), 8000)
        row["wav"] = f"$data_root/{row['ID']}.flac"
    write_manifest(os.path.join(folder, "real.csv"), rows)
    return os.path.join(folder, "real.csv")


# A transfer set of 0.1 unlabelled minutes per language, synthesised by the corpus stage into
# a copy of the shared tiny corpus (its labelled audio is reused, not rebuilt)
TRANSFER = "--corpus_unlabelled_minutes=0.1"


@pytest.fixture(scope="module")
def transfer_corpus(tiny_corpus, tmp_path_factory):
    folder = str(tmp_path_factory.mktemp("transfer") / "numbers-tiny")
    shutil.copytree(tiny_corpus, folder)
    return folder


@pytest.fixture(scope="module")
def tiny_run(tiny_corpus, transfer_corpus, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("pipeline") / "run")
    real = narrowband_manifest(tiny_corpus, str(tmp_path_factory.mktemp("real8k")))
    overrides = [f"--output_folder={out}", f"--data_folder={transfer_corpus}", TRANSFER,
                 f"--real_speech_manifest={real}"]
    pipeline, status = run("hparams/pipelines/tiny.yaml", overrides=overrides)
    return out, pipeline, status, overrides


def test_every_stage_ran_and_wrote_its_marker(tiny_run):
    _, pipeline, status, _ = tiny_run
    assert set(status.values()) == {"done"}
    assert list(status) == ["corpus", "teacher_conformer", "teacher_crdnn", "teacher_tdnn",
                            "baseline", "cache", "distill", "evaluate", "export", "report"]
    for stage in pipeline.stages():
        assert os.path.exists(os.path.join(stage.folder, ".done")), stage.name


def test_report_files_exist_and_agree_with_wer_files(tiny_run):
    out, pipeline, _, _ = tiny_run
    for name in REPORT_FILES:
        assert os.path.getsize(os.path.join(out, name)) > 0, name
    with open(os.path.join(out, "results.json")) as fin:
        report = json.load(fin)
    for name, folder in pipeline.model_folders().items():
        with open(os.path.join(folder, "wer_test.txt")) as fin:
            wer = float(re.match(r"%WER ([\d.]+)", fin.readline()).group(1))
        assert report["models"][name]["wer"] == pytest.approx(wer, abs=0.01), name
    teachers = ["conformer", "crdnn", "tdnn"]
    ensemble = report["models"]["ensemble (average)"]
    assert ensemble["params"] == sum(report["models"][t]["params"] for t in teachers)
    ratio = ensemble["params"] / report["models"]["student_kd"]["params"]
    assert report["summary"]["compression_vs_ensemble"] == pytest.approx(ratio)
    with open(os.path.join(out, "report.md")) as fin:
        text = fin.read()
    assert "| student_kd |" in text and "smaller than the ensemble" in text
    # lexicon_decoding: every model and the ensemble decoded again over train.csv's words
    assert "WER % lexicon [95% CI]" in text and "bigram LM (column `WER % lexicon`)" in text
    for name in [*pipeline.model_folders(), "ensemble (average)"]:
        path = (os.path.join(out, "evaluate", "wer_test_ensemble_average_lexicon.txt") if name.startswith("ensemble")
                else os.path.join(out, "evaluate", "lexicon", name, "wer_test_lexicon.txt"))
        with open(path) as fin:
            wer = float(re.match(r"%WER ([\d.]+)", fin.readline()).group(1))
        assert report["models"][name]["wer_lexicon"] == pytest.approx(wer, abs=0.01), name
    lexicon = report["summary"]["lexicon"]
    assert lexicon["gain_wer_points"] == pytest.approx(
        report["models"]["baseline"]["wer_lexicon"] - report["models"]["student_kd"]["wer_lexicon"])
    assert os.path.exists(os.path.join(out, "export", "model.int8.onnx"))


def test_transfer_set_is_cached_and_distilled_from_but_never_reaches_the_baseline(tiny_run, transfer_corpus,
                                                                                  tiny_corpus):
    out, _, _, _ = tiny_run
    transfer_ids = {row["ID"] for row in read_manifest(os.path.join(transfer_corpus, "unlabelled.csv"))}
    assert len(transfer_ids) >= 7  # every language has some
    for split in ("train", "dev", "test"):  # the labelled splits are those of the corpus without a transfer set
        with open(os.path.join(transfer_corpus, f"{split}.csv")) as a, open(os.path.join(tiny_corpus, f"{split}.csv")) as b:
            assert a.read() == b.read(), split
    with open(os.path.join(out, "cache", "index.json")) as fin:
        cached = set(json.load(fin)["utterances"])
    assert transfer_ids <= cached
    distilled_on = {row["ID"] for row in read_manifest(os.path.join(out, "distill", "train_and_unlabelled.csv"))}
    assert transfer_ids <= distilled_on
    # the teachers' lexicon transcripts label the transfer rows where the greedy path agrees: train words only
    with open(os.path.join(out, "distill", "pseudo_labels", "pseudo_labels.json")) as fin:
        counts = json.load(fin)
    assert counts["offered"] == len(transfer_ids) and counts["decoding"] == "lexicon"
    assert counts["pseudo_labelled"] + sum(counts["dropped"].values()) == counts["offered"]
    pseudo = read_manifest(os.path.join(out, "distill", "pseudo_labels", "pseudo_labelled.csv"))
    still = read_manifest(os.path.join(out, "distill", "pseudo_labels", "still_unlabelled.csv"), allow_empty_wrd=True)
    assert len(pseudo) == counts["pseudo_labelled"]
    assert {row["ID"] for row in pseudo} | {row["ID"] for row in still} == transfer_ids
    train_words = {word for row in read_manifest(os.path.join(tiny_corpus, "train.csv")) for word in row["wrd"].split()}
    assert all(set(row["wrd"].split()) <= train_words for row in pseudo)
    trained_on = {row["ID"]: row["wrd"] for row in read_manifest(os.path.join(out, "distill", "train_and_unlabelled.csv"))}
    assert all(trained_on[row["ID"]] == row["wrd"] for row in pseudo)  # the student's transcript is the teachers'
    assert not os.path.exists(os.path.join(out, "baseline", "train_and_unlabelled.csv"))
    with open(os.path.join(out, "baseline", "hyperparams.yaml")) as fin:
        assert "unlabelled_csv" not in fin.read()  # the baseline recipe is never handed the transfer set


def test_report_gives_intervals(tiny_run, transfer_corpus):
    out, _, _, _ = tiny_run
    with open(os.path.join(out, "results.json")) as fin:
        report = json.load(fin)
    for name, row in report["models"].items():
        low, high = row["wer_ci"]
        assert low - 1e-6 <= row["wer"] <= high + 1e-6, name
        low, high = row["cer_ci"]
        assert low - 1e-6 <= row["cer"] <= high + 1e-6, name
    summary = report["summary"]
    low, high = summary["gain_ci"]
    assert low - 1e-6 <= summary["gain_wer_points"] <= high + 1e-6
    assert summary["bootstrap"]["n_utts"] == len(read_manifest(os.path.join(transfer_corpus, "test.csv")))


def test_rerun_skips_every_stage(tiny_run):
    _, _, _, overrides = tiny_run
    _, status = run("hparams/pipelines/tiny.yaml", overrides=overrides)
    assert set(status.values()) == {"skipped"}


def test_real_speech_table_has_every_model_and_the_ensemble(tiny_run):
    out, pipeline, _, _ = tiny_run
    with open(os.path.join(out, "results.json")) as fin:
        real = json.load(fin)["real_speech"]["models"]
    assert sorted(real) == sorted([*pipeline.model_folders(), "ensemble (average)"])
    for name in pipeline.model_folders():
        errors = read_utterance_errors(os.path.join(out, "evaluate", "real", name, "wer_real.txt"))
        edits, words = map(sum, zip(*errors.values()))
        assert real[name]["wer"] == pytest.approx(100.0 * edits / words), name
        assert real[name]["n_utts"] == 3 and real[name]["resampled"] == {"8000": 3}
        assert real[name]["intervals"]["wer"]["rate"] == pytest.approx(real[name]["wer"])
    with open(os.path.join(out, "report.md")) as fin:
        text = fin.read()
    speakers = len({row["spk_id"] for row in read_manifest(pipeline.real_speech_manifest())})
    assert f"## Real speech\n\nReal human recordings, not synthetic: 3 files from {speakers} speaker(s) " \
           "(3 files at 8000 Hz, resampled to 16 kHz" in text
    assert "| ensemble (average) |" in text.split("## Real speech")[1]


def test_a_missing_real_speech_manifest_is_a_note(tmp_path):
    from speechkd.evaluation import evaluate_real_speech
    from speechkd.report import real_speech_rows, real_speech_section

    missing = str(tmp_path / "absent" / "dev.csv")
    evaluate_real_speech({}, None, missing, str(tmp_path / "evaluate"), "average")
    section = real_speech_section(real_speech_rows(str(tmp_path)))
    assert section == f"## Real speech\n\nSkipped: {missing} not found: no real-speech evaluation."
    assert real_speech_section(real_speech_rows(str(tmp_path / "never-evaluated"))) == ""


def test_a_guided_teacher_trains_on_the_guide_s_cached_posteriors_end_to_end(tiny_corpus, tmp_path):
    """The main job's path, tiny: guide (the student, 1 epoch) -> guide_cache -> a TDNN teacher trained
    on CTC plus the KL to the guide's posteriors (the run stops there: the baseline is not upstream)."""
    from speechkd.distill.cache import PosteriorCache

    pipeline_file = tmp_path / "guided.yaml"
    pipeline_file.write_text(
        f"defaults:\n    - {os.path.abspath('hparams/pipelines/tiny.yaml')}\n"
        "teacher_guide: student\nguide_epochs: 1\n"
        "teachers:\n    tdnn:\n        hparams: hparams/distill/guided/tdnn.yaml\n"
        "        overrides: {number_of_epochs: 1, channels: 32, dilations: [1, 2]}\n")
    out = str(tmp_path / "run")
    _, status = run(str(pipeline_file), overrides=[f"--output_folder={out}", f"--data_folder={tiny_corpus}"],
                           stop="teacher_tdnn")
    assert [name for name, state in status.items() if state == "done"] == [
        "corpus", "guide", "guide_cache", "teacher_tdnn"]
    guide, teacher = os.path.join(out, "guide_model"), os.path.join(out, "teachers", "tdnn")
    with open(os.path.join(guide, "train_log.txt")) as fin:
        assert sum(line.startswith("epoch:") for line in fin) == 1  # guide_epochs
    assert PosteriorCache.open(os.path.join(out, "guide")).teacher_names == ["guide"]
    with open(os.path.join(teacher, "train_log.txt")) as fin:
        log = fin.read()
    assert "train ctc:" in log and "train kd:" in log  # CTC plus the guide's KL
    with open(os.path.join(teacher, "hyperparams.yaml")) as fin:
        teacher_hparams = fin.read()
    assert re.search(r"^conditional: frame\b", teacher_hparams, re.MULTILINE)
    # (the dump wraps a long value onto the next line)
    assert re.search(r"^cache_folder:\s+(\S+)\n", teacher_hparams, re.MULTILINE).group(1) == os.path.join(out, "guide")


def test_the_main_job_trains_every_model_on_the_same_duration_bucketed_batches():
    """Teachers, baseline and distilled student all get the pipeline's `dynamic_batching`; the
    distilled student continues the baseline (same model, its weights), on two processes."""
    from speechkd.experiment import load_hparams
    from speechkd.pipeline import Pipeline

    hparams, _ = load_hparams("hparams/pipelines/quickstart.yaml")
    batching = hparams["dynamic_batching"]
    assert batching["max_batch_length"] > 0 and batching["num_buckets"] > 1
    stages = {stage.name: stage for stage in Pipeline(hparams).stages()}
    training = [name for name in stages if name.startswith("teacher_")] + ["baseline", "distill"]
    assert len(training) >= 4
    for name in training:
        assert stages[name].config["overrides"]["dynamic_batching"] == batching, name
    baseline, distill = stages["baseline"].config["overrides"], stages["distill"].config["overrides"]
    assert {key: baseline[key] for key in ("conv_channels", "gru_hidden")} == \
        {key: distill[key] for key in ("conv_channels", "gru_hidden")}
    assert distill["init_from"] == os.path.join(hparams["output_folder"], "baseline")
    assert set(stages["distill"].after) == {"cache", "baseline"}
    # the cache and the distilled student take both cores, as two processes, once the teachers are done
    for name in ("cache", "distill"):
        assert stages[name].config["nproc"] == 2 and not stages[name].parallel, name
    unchained, _ = load_hparams("hparams/pipelines/quickstart.yaml", {"distill_from_baseline": False})
    distill = {stage.name: stage for stage in Pipeline(unchained).stages()}["distill"]
    assert "init_from" not in distill.config["overrides"] and set(distill.after) == {"cache"}


def test_guided_teachers_wait_for_the_baseline_and_learn_its_timing():
    """teacher_guide: baseline puts baseline -> guide_cache -> teachers (distill recipe, the baseline as
    the guide); null keeps the teachers on CTC alone, beside the baseline from the start."""
    from speechkd.experiment import load_hparams
    from speechkd.pipeline import Pipeline

    hparams, _ = load_hparams("hparams/pipelines/quickstart.yaml")
    assert hparams["teacher_guide"] == "baseline"  # the main job's
    stages = {stage.name: stage for stage in Pipeline(hparams).stages()}
    assert "guide" not in stages and list(stages).index("baseline") < list(stages).index("teacher_tdnn")
    assert not stages["baseline"].background  # the teachers wait for it
    guide = stages["guide_cache"].config["overrides"]
    assert stages["guide_cache"].after == ("baseline",) and guide["teachers"] == [os.path.join(hparams["output_folder"], "baseline")]
    for name in ("teacher_tdnn", "teacher_conformer"):
        stage = stages[name]
        assert stage.after == ("guide_cache",) and stage.config["script"] == "recipes/distill/train.py"
        assert stage.config["overrides"]["cache_folder"] == guide["cache_folder"]
        assert stage.config["overrides"]["teachers"] == guide["teachers"]
    assert stages["distill"].config["overrides"]["teacher_delay"] == 0

    unguided, _ = load_hparams("hparams/pipelines/quickstart.yaml", {
        "teacher_guide": None,
        "teachers": {name: {"hparams": f"hparams/ctc/{name}.yaml"} for name in ("tdnn", "conformer")}})
    stages = {stage.name: stage for stage in Pipeline(unguided).stages()}
    assert "guide_cache" not in stages
    assert stages["teacher_tdnn"].after == ("corpus",) and stages["teacher_tdnn"].config["script"] == "recipes/ctc/train.py"
    assert not stages["baseline"].background  # the distilled student starts from it (distill_from_baseline)
    unguided["distill_from_baseline"] = False
    assert {stage.name: stage for stage in Pipeline(unguided).stages()}["baseline"].background  # only the evaluation reads it
    with pytest.raises(ValueError, match="teacher 'tdnn': hparams/distill/guided/tdnn.yaml does not fit teacher_guide: null"):
        Pipeline(load_hparams("hparams/pipelines/quickstart.yaml", {"teacher_guide": None})[0]).stages()
    with pytest.raises(ValueError, match="teacher_guide must be null, 'baseline' .* or 'student'"):
        Pipeline(load_hparams("hparams/pipelines/quickstart.yaml", {"teacher_guide": "tdnn"})[0]).stages()


def test_a_short_student_run_guides_the_teachers_while_the_baseline_trains_beside_them():
    """teacher_guide: student: a `guide` stage (the student recipe, guide_epochs) -> guide_cache ->
    teachers; the baseline no longer gates the teachers, and guide_epochs must be given."""
    from speechkd.experiment import load_hparams
    from speechkd.pipeline import Pipeline

    chained, _ = load_hparams("hparams/pipelines/quickstart.yaml", {"teacher_guide": "student", "guide_epochs": 3})
    assert not {stage.name: stage for stage in Pipeline(chained).stages()}["baseline"].background  # distill starts from it
    hparams, _ = load_hparams("hparams/pipelines/quickstart.yaml", {"teacher_guide": "student", "guide_epochs": 3,
                                                                    "distill_from_baseline": False})
    stages = {stage.name: stage for stage in Pipeline(hparams).stages()}
    guide, cache, baseline = stages["guide"], stages["guide_cache"], stages["baseline"]
    assert guide.after == ("corpus",) and guide.parallel and guide.config["script"] == "recipes/ctc/train.py"
    assert guide.config["overrides"]["number_of_epochs"] == 3
    assert baseline.config["overrides"]["number_of_epochs"] == hparams["student"]["overrides"]["number_of_epochs"]
    # the guide is the student's recipe and batches, only shorter
    assert guide.config["hparams"] == baseline.config["hparams"]
    for key in ("dynamic_batching", "seed", "data_folder"):
        assert guide.config["overrides"][key] == baseline.config["overrides"][key], key
    assert cache.after == ("guide",) and cache.config["overrides"]["teachers"] == [guide.folder]
    # only the evaluation reads the baseline: it trains from the start, at low priority
    assert baseline.after == ("corpus",) and baseline.parallel and baseline.background
    assert not any(stage.background for stage in stages.values() if stage.name != "baseline")
    for name in ("teacher_tdnn", "teacher_conformer"):
        assert stages[name].after == ("guide_cache",)
        assert stages[name].config["overrides"]["teachers"] == [guide.folder]
        assert stages[name].config["overrides"]["cache_folder"] == cache.folder
    assert len({guide.folder, cache.folder, baseline.folder}) == 3
    # the teachers, longer, are preferred to the baseline when a worker frees up
    order = list(stages)
    assert order.index("teacher_tdnn") < order.index("baseline")
    with pytest.raises(ValueError, match="teacher_guide: student needs guide_epochs"):
        Pipeline(load_hparams("hparams/pipelines/quickstart.yaml", {"teacher_guide": "student", "guide_epochs": 0})[0]).stages()
