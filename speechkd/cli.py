"""The ``speechkd`` command.

    speechkd corpus build --task numbers --size small --out data/numbers-small
    speechkd prepare librispeech /data/LibriSpeech data/librispeech --workers=8
    speechkd run hparams/pipelines/quickstart.yaml [--from STAGE] [--to STAGE] [--force STAGE]
    speechkd transcribe --model results/ctc/student/1234 [--resample] [--threads N] [--lexicon CSV] a.wav b.flac
    speechkd evaluate --model results/ctc/student/1234 --manifest ../shared/realspeech-dev/dev.csv --resample \
        [--lexicon data/numbers-small/train.csv]
    speechkd teachers agreement results/quickstart/1234/cache
"""

import argparse
import logging
import sys


def add_transcribe(subparsers):
    parser = subparsers.add_parser("transcribe", help="print transcripts of audio files")
    parser.add_argument("--model", required=True, help="experiment folder of a trained model")
    parser.add_argument("--beam", type=int, default=0, help="prefix beam width (0 = greedy)")
    parser.add_argument("--device", default="cpu")
    add_audio_options(parser)
    add_lexicon_options(parser)
    parser.add_argument("files", nargs="+")
    parser.set_defaults(func=run_transcribe)


def add_audio_options(parser):
    """``--resample`` and ``--threads``, as ``speechkd-run`` has them."""
    parser.add_argument("--resample", action="store_true",
                        help="resample audio of another sample rate to the model's (soxr if installed, else FFT)")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads")


def add_lexicon_options(parser):
    """``--lexicon``, ``--lm_weight`` and ``--word_score`` (:class:`speechkd.decoding.LexiconDecoder`)."""
    parser.add_argument("--lexicon", help="decode over the words of this manifest's transcripts (the model's "
                                          "train.csv) with their bigram LM, instead of greedy")
    parser.add_argument("--lm_weight", type=float, default=0.5, help="bigram LM weight of --lexicon decoding")
    parser.add_argument("--word_score", type=float, default=0.0, help="per-word score of --lexicon decoding")


def run_transcribe(args):
    """Print ``path<TAB>text`` per file; a bad file is reported on stderr, counted, and skipped (status 1)."""
    from speechkd.evaluation import torch_threads
    from speechkd.inference import transcribe_files

    failed = 0
    with torch_threads(args.threads):
        transcripts = list(transcribe_files(args.model, args.files, beam=args.beam, device=args.device,
                                            resample=args.resample, lexicon=args.lexicon,
                                            lm_weight=args.lm_weight, word_score=args.word_score))
    for path, text, error in transcripts:
        if error is not None:
            print(f"speechkd: error: {error}", file=sys.stderr)
            failed += 1
            continue
        print(f"{path}\t{text}", flush=True)
    if failed:
        print(f"speechkd: {failed} of {len(args.files)} files failed", file=sys.stderr)
    return 1 if failed else 0


def add_evaluate(subparsers):
    parser = subparsers.add_parser("evaluate", help="WER/CER of a trained model on a labelled manifest")
    parser.add_argument("--model", required=True, help="experiment folder of a trained model")
    parser.add_argument("--manifest", required=True, help="SpeechBrain CSV with transcripts")
    parser.add_argument("--data_root", help="replacement for $data_root (default: the manifest's folder)")
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--output", help="folder for wer_<set>.txt and evaluate_<set>.json (default: MODEL/evaluate)")
    add_lexicon_options(parser)
    add_audio_options(parser)
    parser.set_defaults(func=run_evaluate)


def run_evaluate(args):
    """Print the WER/CER table (overall and per language, 95 % bootstrap intervals)."""
    import os

    from speechkd.evaluation import evaluate_manifest, format_evaluation
    from speechkd.metrics import wer_file_name

    output = args.output or os.path.join(args.model, "evaluate")
    result = evaluate_manifest(args.model, args.manifest, data_root=args.data_root, resample=args.resample,
                               threads=args.threads, batch_size=args.batch_size, output=output,
                               lexicon=args.lexicon, lm_weight=args.lm_weight, word_score=args.word_score)
    print(format_evaluation(result))
    print(f"alignments: {os.path.join(output, wer_file_name(result['set'], bool(args.lexicon)))}")


def add_run(subparsers):
    parser = subparsers.add_parser("run", help="run a pipeline of stages (the main job)")
    parser.add_argument("pipeline", help="hparams/pipelines/<name>.yaml")
    parser.add_argument("--from", dest="start", help="first stage to run")
    parser.add_argument("--to", dest="stop", help="last stage to run")
    parser.add_argument("--force", action="append", default=[], help="redo STAGE and what depends on it")
    parser.add_argument("overrides", nargs="*", help="YAML overrides as --key=value")
    parser.set_defaults(func=run_pipeline)


def run_pipeline(args):
    from speechkd.pipeline import run

    run(args.pipeline, overrides=args.overrides, start=args.start, stop=args.stop, force=args.force)


def add_teachers(subparsers):
    parser = subparsers.add_parser("teachers", help="diagnostics of a teacher ensemble")
    sub = parser.add_subparsers(dest="teachers_command", required=True)
    agreement = sub.add_parser("agreement", help="spike-timing agreement and fused-posterior WER")
    agreement.add_argument("cache", help="posterior cache folder")
    agreement.add_argument("--manifest", help="manifest with transcripts (default: the cache's own)")
    agreement.set_defaults(func=run_agreement)


def run_agreement(args):
    from speechkd.distill.agreement import agreement_for_cache_folder

    print(agreement_for_cache_folder(args.cache, manifest=args.manifest))


def main(argv=None):
    """Entry point of the ``speechkd`` console script."""
    from speechkd.data.corpora.cli import add_cli as add_prepare
    from speechkd.data.corpus import add_cli as add_corpus
    from speechkd.export.cli import add_cli as add_export
    from speechkd.stages import FolderLocked

    parser = argparse.ArgumentParser(prog="speechkd", description=__doc__.split("\n")[0])
    subparsers = parser.add_subparsers(dest="command", required=True)
    add_corpus(subparsers)
    add_prepare(subparsers)
    add_run(subparsers)
    add_transcribe(subparsers)
    add_evaluate(subparsers)
    add_teachers(subparsers)
    add_export(subparsers)
    args, unknown = parser.parse_known_args(argv)
    if unknown and args.command == "run":
        args.overrides = list(args.overrides) + unknown
    elif unknown and args.command == "prepare":
        args.options = unknown
    elif unknown:
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        return args.func(args) or 0
    except (ValueError, FileNotFoundError, FolderLocked) as err:
        print(f"speechkd: error: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
