"""On-device benchmark: file size, real-time factor, WER and peak memory of exported models.

For each experiment folder given (the distilled student and the biggest
teacher), the script exports it (``speechkd.export.export_experiment``,
parity-checked) and measures, on every utterance of the test manifest
decoded one at a time (batch 1, greedy CTC):

- file size of the fp32 and int8 ONNX files;
- real-time factor (compute seconds / audio seconds, median of ``--runs``
  passes over the whole test set, after one warm-up utterance) with 1 and 2
  intra-op threads, for PyTorch eager, ONNX fp32 and ONNX int8 (and the
  streaming int8 graph of a StreamingStudent, fed 320 ms chunks);
- WER (all languages, and English only) of each engine;
- peak resident memory (``VmHWM``) of a fresh worker process per engine
  and thread count: model load + the test set's audio + decoding. The ONNX
  workers never import torch, as on a device.

A real on-device engine runs beside them on the English test audio:
pocketsphinx 5 with its bundled US-English acoustic model and dictionary,
(a) with its default US-English trigram language model, and (b) with a
JSGF word-loop grammar over the English number words of the *training*
manifest (a fair setup for the numbers task: the grammar knows the
vocabulary, not the test sentences).

Command::

    .venv/bin/python benchmarks/bench_export.py \\
        --student results/quickstart/1234/student --teacher results/ctc/conformer/1234 \\
        --manifest data/numbers-small/test.csv [--train-manifest data/numbers-small/train.csv]

Prints a markdown report (command, machine, date, versions, tables).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from machine import cpu_model

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

ENGINES = ("torch", "onnx_fp32", "onnx_int8", "onnx_stream_int8")


# --------------------------------------------------------------------------- shared helpers




def test_rows(manifest: str, data_root: str | None, lang: str | None = None) -> list[dict]:
    """Manifest rows with ``path`` resolved (torch-free)."""
    from speechkd.data.manifest import read_manifest

    root = data_root or os.path.dirname(os.path.abspath(manifest))
    rows = read_manifest(manifest)
    for row in rows:
        row["path"] = row["wav"].replace("$data_root", root)
    return [row for row in rows if lang is None or row["lang"] == lang]


# --------------------------------------------------------------------------- workers (subprocesses)


def _load_waves(rows):
    import soundfile as sf

    return [sf.read(row["path"], dtype="float32")[0] for row in rows]


def _time_passes(transcribe, waves, runs):
    """Median seconds of ``runs`` passes over ``waves``; hypotheses of the last pass."""
    transcribe(waves[0])  # warm-up (graph optimization, allocations)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        hyps = [transcribe(wav) for wav in waves]
        times.append(time.perf_counter() - start)
    return statistics.median(times), hyps


def _torch_transcriber(folder, threads):
    import torch

    from speechkd.decoding import ctc_greedy
    from speechkd.experiment import load_model

    torch.set_num_threads(threads)
    model, inventory = load_model(folder)

    @torch.no_grad()
    def transcribe(wav):
        log_probs = model(torch.from_numpy(wav)[None], torch.ones(1))
        return inventory.decode(ctc_greedy(log_probs, [log_probs.shape[1]])[0])

    return transcribe


def _onnx_transcriber(path, threads, streaming):
    from speechkd.export.runtime import OnnxRecognizer, OnnxStreamer

    return (OnnxStreamer if streaming else OnnxRecognizer)(path, threads=threads).transcribe


def _pocketsphinx_transcriber(mode, grammar_path):
    import numpy as np
    from pocketsphinx import Decoder

    kwargs = {"samprate": 16000, "loglevel": "FATAL"}
    if mode == "jsgf":
        kwargs.update(jsgf=grammar_path)
    decoder = Decoder(**kwargs)

    def transcribe(wav):
        pcm = (np.clip(wav, -1, 1) * 32767).astype(np.int16).tobytes()
        decoder.start_utt()
        decoder.process_raw(pcm, full_utt=True)
        decoder.end_utt()
        hyp = decoder.hyp()
        return hyp.hypstr if hyp is not None else ""

    return transcribe


def worker(spec: dict) -> dict:
    """Run one engine over the test rows; returns timing, hypotheses and peak RSS."""
    rows = test_rows(spec["manifest"], spec["data_root"], spec.get("lang"))
    waves = _load_waves(rows)
    engine = spec["engine"]
    if engine == "torch":
        transcribe = _torch_transcriber(spec["folder"], spec["threads"])
    elif engine.startswith("pocketsphinx"):
        transcribe = _pocketsphinx_transcriber(spec["mode"], spec.get("grammar"))
    else:
        transcribe = _onnx_transcriber(spec["path"], spec["threads"], engine == "onnx_stream_int8")
    seconds, hyps = _time_passes(transcribe, waves, spec["runs"])
    audio = sum(len(w) for w in waves) / 16000
    return {
        "rtf": seconds / audio,
        "audio_seconds": audio,
        "ids": [r["ID"] for r in rows],
        "hyps": hyps,
        "peak_rss_mb": peak_rss_mb(),
        "torch_loaded": "torch" in sys.modules,
    }


def peak_rss_mb() -> float:
    """Peak resident memory of this process in MiB.

    ``VmHWM`` of /proc/self/status: unlike ``getrusage().ru_maxrss``, Linux
    does not carry the parent's peak over into it across fork + exec.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_worker(spec: dict) -> dict:
    result = subprocess.run(
        [sys.executable, __file__, "--worker", json.dumps(spec)],
        check=False,
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    if result.returncode != 0:
        raise RuntimeError(f"worker {spec['engine']} failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


# --------------------------------------------------------------------------- scoring


def wer_of(rows: list[dict], ids: list[str], hyps: list[str], lang: str | None = None) -> float:
    from speechkd.metrics import ErrorRates

    refs = {row["ID"]: row for row in rows}
    chosen = [(i, h) for i, h in zip(ids, hyps) if lang is None or refs[i]["lang"] == lang]
    rates = ErrorRates()
    rates.append(
        [i for i, _ in chosen], [refs[i]["wrd"] for i, _ in chosen], [h for _, h in chosen]
    )
    return rates.summary()["wer"]


def number_grammar(train_manifest: str, data_root: str | None, path: str) -> list[str]:
    """JSGF word loop over the English words of the training transcripts, known to pocketsphinx."""
    from pocketsphinx import get_model_path

    words = sorted(
        {w for row in test_rows(train_manifest, data_root, "en") for w in row["wrd"].split()}
    )
    with open(os.path.join(get_model_path(), "en-us", "cmudict-en-us.dict")) as fin:
        known = {line.split()[0] for line in fin if line.strip()}
    missing = [w for w in words if w not in known]
    words = [w for w in words if w in known]
    with open(path, "w") as fout:
        fout.write("#JSGF V1.0;\ngrammar numbers;\n")
        fout.write(f"public <utterance> = <word>+;\n<word> = {' | '.join(words)};\n")
    return missing


# --------------------------------------------------------------------------- main


def export_models(folders: dict, out_root: str, manifest: str, data_root: str | None) -> dict:
    from speechkd.export.exporter import export_experiment

    exports = {}
    for role, folder in folders.items():
        report = export_experiment(
            folder,
            os.path.join(out_root, role),
            manifest=manifest,
            data_root=data_root,
            parity_count=4,
            torchscript=False,
        )
        exports[role] = report
    return exports


def benchmark(args) -> str:
    folders = {
        role: folder
        for role, folder in (("student", args.student), ("teacher", args.teacher))
        if folder
    }
    out_root = args.export_dir or tempfile.mkdtemp(prefix="bench_export_")
    exports = export_models(folders, out_root, args.manifest, args.data_root)
    rows = test_rows(args.manifest, args.data_root)
    base = {"manifest": args.manifest, "data_root": args.data_root, "runs": args.runs}

    size_lines = [
        "| model | class | fp32 ONNX (KiB) | int8 ONNX (KiB) | int8 / fp32 | int8 quantized ops | kept fp32 |",
        "|---|---|---:|---:|---:|---|---|",
    ]
    perf_lines = [
        "| model | engine | threads | RTF (median) | WER % (all) | WER % (en) | peak RSS (MiB) |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for role, report in exports.items():
        sizes = report["sizes_bytes"]
        q = report["int8"]["whole"]
        size_lines.append(
            f"| {role} ({report['model']}) | {report['metadata']['model_class'].rsplit('.', 1)[1]} "
            f"| {sizes['onnx'] / 1024:.0f} | {sizes['onnx_int8'] / 1024:.0f} "
            f"| {sizes['onnx_int8'] / sizes['onnx']:.2f} | {q['quantized']} | {q['kept_fp32']} |"
        )
        files = report["files"]
        for engine in ENGINES:
            if engine == "onnx_stream_int8" and "stream_onnx_int8" not in files:
                continue
            for threads in args.threads:
                spec = dict(
                    base,
                    engine=engine,
                    threads=threads,
                    folder=folders[role],
                    path={
                        "onnx_fp32": files["onnx"],
                        "onnx_int8": files["onnx_int8"],
                        "onnx_stream_int8": files.get("stream_onnx_int8"),
                    }.get(engine),
                )
                result = run_worker(spec)
                perf_lines.append(
                    f"| {role} | {engine} | {threads} | {result['rtf']:.4f} "
                    f"| {wer_of(rows, result['ids'], result['hyps']):.2f} "
                    f"| {wer_of(rows, result['ids'], result['hyps'], 'en'):.2f} | {result['peak_rss_mb']:.0f} |"
                )
                print(perf_lines[-1], file=sys.stderr)

    sphinx_lines = []
    if not args.no_pocketsphinx:
        sphinx_lines = pocketsphinx_section(args, rows, base, out_root)

    command = "python benchmarks/bench_export.py " + " ".join(sys.argv[1:])
    import onnxruntime
    import torch

    header = [
        "## On-device export benchmark (`benchmarks/bench_export.py`)",
        "",
        f"- command: `{command}`",
        f"- machine: {cpu_model()}, {os.cpu_count()} logical CPUs; {platform.platform()}",
        f"- date: {datetime.datetime.now().strftime('%Y-%m-%d %H:%M')}",
        (
            f"- torch {torch.__version__}, onnxruntime {onnxruntime.__version__}; batch 1, greedy CTC, "
            f"RTF = median over {args.runs} passes of compute / audio seconds ({len(rows)} utterances, "
            f"{sum(float(r['duration']) for r in rows):.1f} s of audio); peak RSS = VmHWM of one "
            "worker process per row (the ONNX workers do not import torch)"
        ),
        "",
        "### File size",
        "",
        *size_lines,
        "",
        "### Speed, accuracy, memory",
        "",
        *perf_lines,
        "",
    ]
    return "\n".join(header + sphinx_lines)


def pocketsphinx_section(args, rows, base, out_root) -> list[str]:
    try:
        import pocketsphinx  # noqa: F401
    except ImportError:
        return [
            "### pocketsphinx",
            "",
            "pocketsphinx is not installed (`pip install pocketsphinx`); skipped.",
            "",
        ]
    grammar = os.path.join(out_root, "numbers.jsgf")
    missing = number_grammar(args.train_manifest or args.manifest, args.data_root, grammar)
    lines = [
        "### pocketsphinx 5 (bundled en-us model) on the English test audio",
        "",
        "| setup | threads | RTF (median) | WER % (en) | peak RSS (MiB) |",
        "|---|---:|---:|---:|---:|",
    ]
    en_rows = [r for r in rows if r["lang"] == "en"]
    for mode, label in (
        ("lm", "default en-us trigram LM"),
        ("jsgf", "JSGF word loop over the number words"),
    ):
        result = run_worker(
            dict(base, engine=f"pocketsphinx_{mode}", mode=mode, grammar=grammar, lang="en")
        )
        lines.append(
            f"| {label} | 1 | {result['rtf']:.4f} | {wer_of(en_rows, result['ids'], result['hyps']):.2f} "
            f"| {result['peak_rss_mb']:.0f} |"
        )
    source = args.train_manifest or args.manifest
    lines += [
        "",
        f"Grammar vocabulary: English words of `{source}`"
        + (f"; not in the pocketsphinx dictionary, left out: {missing}" if missing else "")
        + ".",
        "",
    ]
    return lines


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--student", help="experiment folder of the distilled student")
    parser.add_argument("--teacher", help="experiment folder of the biggest teacher")
    parser.add_argument("--manifest", help="test manifest")
    parser.add_argument(
        "--train-manifest",
        help="manifest whose English words make the pocketsphinx grammar "
        "(default: the test manifest)",
    )
    parser.add_argument(
        "--data-root", help="$data_root of the manifests (default: the manifest's folder)"
    )
    parser.add_argument(
        "--runs", type=int, default=3, help="timed passes over the test set (median)"
    )
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--export-dir", help="where to export (default: a temporary folder)")
    parser.add_argument("--no-pocketsphinx", action="store_true")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(json.loads(args.worker))))
        return 0
    if not (args.student or args.teacher) or not args.manifest:
        parser.error("give --manifest and at least one of --student / --teacher")
    print(benchmark(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
