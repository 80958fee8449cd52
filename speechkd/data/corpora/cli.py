"""``speechkd prepare FORMAT SOURCE OUT [--key=value ...]``: one real corpus to speechkd's manifests.

    speechkd prepare librispeech /data/LibriSpeech data/librispeech --workers=8
    speechkd prepare commonvoice /data/cv-corpus-17.0 data/cv --languages="[uk, ru]"
    speechkd prepare kaldi /data/kaldi/train data/kaldi --lang=de
    speechkd prepare lhotse "{train: cuts_train.jsonl.gz}" data/mine --lang=en

Each ``--key=value`` is a keyword argument of the format's prepare function
(its docstring lists them), the value read as YAML (``8``, ``true``,
``[uk, ru]``). The folder written is what ``--data_folder`` of every recipe
takes, with ``--prepare='!name:speechkd.data.corpora.common.prepared_beforehand'``.
"""

import importlib

import yaml

FORMATS = {
    "librispeech": "speechkd.data.corpora.librispeech:prepare_librispeech",
    "commonvoice": "speechkd.data.corpora.commonvoice:prepare_commonvoice",
    "mls": "speechkd.data.corpora.mls:prepare_mls",
    "fleurs": "speechkd.data.corpora.fleurs:prepare_fleurs",
    "kaldi": "speechkd.data.corpora.kaldi:prepare_kaldi",
    "lhotse": "speechkd.data.corpora.lhotse_manifests:prepare_lhotse",
}
"""Format name -> ``module:function`` of its prepare function."""


def prepare_function(name):
    """The prepare function of format ``name`` (one of :data:`FORMATS`)."""
    module, function = FORMATS[name].split(":")
    return getattr(importlib.import_module(module), function)


def keyword_options(options):
    """``["--workers=8", "--languages=[uk, ru]"]`` -> ``{"workers": 8, "languages": ["uk", "ru"]}``.

    Raises
    ------
    ValueError
        An option not written as ``--key=value``.
    """
    parsed = {}
    for option in options:
        key, sep, value = option.partition("=")
        if not key.startswith("--") or not sep or len(key) < 3:
            raise ValueError(f"prepare options are --key=value, got {option!r}")
        parsed[key[2:]] = yaml.safe_load(value)
    return parsed


def add_cli(subparsers):
    """Register ``speechkd prepare``; its ``--key=value`` options arrive as ``args.options``."""
    parser = subparsers.add_parser("prepare", help="prepare a real corpus (LibriSpeech, Common Voice, ...) "
                                                   "into speechkd's manifests and 16 kHz audio")
    parser.add_argument("format", choices=sorted(FORMATS))
    parser.add_argument("source", help="the corpus folder (kaldi: the train data dir; lhotse: a YAML "
                                       "mapping of split to manifest files)")
    parser.add_argument("out", help="the prepared corpus's folder (a recipe's --data_folder)")
    parser.set_defaults(func=run_prepare, options=[])


def run_prepare(args):
    source = yaml.safe_load(args.source) if args.source.lstrip().startswith("{") else args.source
    prepare_function(args.format)(source, args.out, **keyword_options(args.options))
    print(f"prepared {args.source} into {args.out} (manifests, audio, tokens.txt, prepare_report.json)")
