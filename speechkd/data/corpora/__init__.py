"""Real corpora as prepare functions a recipe YAML names (``prepare: !name:speechkd.data.corpora...``).

One module per layout, each with one ``prepare_<corpus>(corpus_folder, out, ...)``
that parses the layout (with lhotse where lhotse's parser fits) into
:class:`~speechkd.data.corpora.common.SourceUtterance` lists and hands them to
:func:`~speechkd.data.corpora.common.write_prepared_corpus`, which writes the
project's manifests, 16 kHz FLAC audio, ``tokens.txt`` and ``prepare_report.json``.

- :mod:`.librispeech`: ``<split>/<spk>/<chapter>/*.flac`` + ``*.trans.txt`` (lhotse)
- :mod:`.commonvoice`: ``<lang>/{train,dev,test,validated}.tsv`` + ``clips/*.mp3``, any release
- :mod:`.mls`: Multilingual LibriSpeech ``<split>/transcripts.txt`` + flac or opus
- :mod:`.fleurs`: ``<lang>/<split>.tsv`` (header-less) + ``audio/<split>/*.wav``
- :mod:`.kaldi`: Kaldi data dirs ``wav.scp`` (files and ``cmd |`` pipes), ``segments``, ``text``, ``utt2spk`` (lhotse)
- :mod:`.lhotse_manifests`: lhotse recordings + supervisions, or cuts, JSONL (lhotse)
"""

from speechkd.data.corpora.common import (
    PreparationError,
    PreparationReport,
    SourceUtterance,
    speaker_disjoint_split,
    write_prepared_corpus,
)

__all__ = ["PreparationError", "PreparationReport", "SourceUtterance", "speaker_disjoint_split",
           "write_prepared_corpus"]
