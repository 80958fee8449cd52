"""``speechkd export``: write and check the on-device files of a trained model.

    speechkd export --model results/ctc/student/1234 --out exports/student
    speechkd export --model results/ctc/student/1234 --out exports/student \
        --manifest data/numbers-small/test.csv --chunk-ms 320

The torch-free runtime is its own console script, ``speechkd-run``
(:mod:`speechkd.export.runtime`).
"""

import json


def add_cli(subparsers):
    """Register ``export`` on the ``speechkd`` command's subparsers."""
    from speechkd.export.onnx import DEFAULT_INT8_OPS
    from speechkd.export.parity import PARITY_ATOL

    parser = subparsers.add_parser(
        "export",
        help="ONNX fp32/int8 (+ streaming) and TorchScript files of a trained model, parity-checked",
    )
    parser.add_argument("--model", required=True, help="experiment folder of a trained model")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument(
        "--manifest", help="test manifest for the parity check (default: the experiment's)"
    )
    parser.add_argument("--data-root", help="$data_root of the manifest (default: its folder)")
    parser.add_argument(
        "--parity-utterances", type=int, default=8, help="utterances in the parity check"
    )
    parser.add_argument(
        "--atol", type=float, default=PARITY_ATOL, help="parity tolerance on log-probs"
    )
    parser.add_argument(
        "--chunk-ms", type=int, default=320, help="streaming chunk (StreamingStudent only)"
    )
    parser.add_argument(
        "--int8-ops",
        default=",".join(DEFAULT_INT8_OPS),
        help="operator types to quantize to int8, comma-separated",
    )
    parser.add_argument("--no-torchscript", action="store_true", help="do not write model.ts")
    parser.set_defaults(func=run_export)


def run_export(args):
    from speechkd.export.exporter import export_experiment

    report = export_experiment(
        args.model,
        args.out,
        manifest=args.manifest,
        data_root=args.data_root,
        parity_count=args.parity_utterances,
        chunk_ms=args.chunk_ms,
        int8_ops=tuple(op for op in args.int8_ops.split(",") if op),
        torchscript=not args.no_torchscript,
        atol=args.atol,
    )
    for key, path in report["files"].items():
        print(f"{key:18s} {report['sizes_bytes'][key]:>10d} B  {path}")
    print("parity:", json.dumps(report["parity"], sort_keys=True))
