"""Kaldi data dirs: ``wav.scp`` (files or ``cmd |`` pipes), ``segments`` (optional), ``text``, ``utt2spk``.

Read with lhotse's ``load_kaldi_data_dir`` (it runs the pipes, honours
``segments`` with ``end = -1``); checked here first: a pipe whose command
is not installed is an error naming the tool and the ``wav.scp`` line, a
segment past the end of its recording is skipped and counted with its
``segments`` line. A single dir is split by speaker; dev and test dirs may
be given instead.

    prepare_kaldi("/data/mycorpus/data/train", "data/mycorpus", lang="de")
"""

from __future__ import annotations

import io
import shlex
import shutil
import subprocess
import tempfile
from pathlib import Path

import soundfile as sf

from speechkd.data.corpora.common import (
    PreparationError,
    PreparationReport,
    SourceUtterance,
    already_prepared,
    check_language,
    speaker_disjoint_split,
    write_prepared_corpus,
)


def prepare_kaldi(train_dir, out, dev_dir=None, test_dir=None, lang="en", sampling_rate=16000,
                  dev_fraction=0.1, test_fraction=0.1, seed=0, domain="clean", token_min_count=1, workers=1):
    """Prepare Kaldi data dirs into ``out`` (see :mod:`speechkd.data.corpora.common`).

    Parameters
    ----------
    train_dir : str
        A Kaldi data dir; split by speaker when ``dev_dir``/``test_dir`` are not given.
    out : str
    dev_dir, test_dir : str, optional
    lang : str
        Language of every transcript.
    sampling_rate : int
        The rate ``wav.scp`` entries have (Kaldi dirs have one); resampled to 16 kHz.
    dev_fraction, test_fraction, seed
        The speaker-disjoint split of a single dir.
    domain : str
        The manifests' ``domain`` column.
    token_min_count, workers
        As for :func:`speechkd.data.corpora.common.write_prepared_corpus`.
    """
    dirs = {"train": train_dir, "dev": dev_dir, "test": test_dir}
    options = {"format": "kaldi", "dirs": {k: str(Path(v).resolve()) if v else None for k, v in dirs.items()},
               "lang": lang, "sampling_rate": sampling_rate, "fractions": [dev_fraction, test_fraction],
               "seed": seed, "domain": domain, "token_min_count": token_min_count}
    if already_prepared(out, options):
        return None
    check_language(lang, str(train_dir))
    report = PreparationReport(source=str(train_dir))
    utterances = {split: read_data_dir(Path(d), lang, sampling_rate, domain, report)
                  for split, d in dirs.items() if d}
    if dev_dir is None and test_dir is None:
        utterances = speaker_disjoint_split(utterances["train"], dev_fraction, test_fraction, seed,
                                            where=str(train_dir))
    elif dev_dir is None or test_dir is None:
        raise PreparationError(f"{train_dir}: give both dev_dir and test_dir, or neither (speaker split)")
    return write_prepared_corpus(utterances, out, report, options, token_min_count, workers)


def check_pipes(wav_scp):
    """Refuse a ``cmd |`` entry whose command is not installed, naming the tool and the line."""
    for line_number, line in enumerate(wav_scp.read_text(encoding="utf-8").splitlines(), start=1):
        _, _, entry = line.strip().partition(" ")
        entry = entry.strip()
        if entry.endswith("|"):
            tool = shlex.split(entry[:-1])[0]
            if shutil.which(tool) is None:
                raise PreparationError(f"{wav_scp}:{line_number}: the pipe needs {tool!r}, which is not "
                                       "installed (install it, or convert the audio to files)")


def read_data_dir(data_dir, lang, sampling_rate, domain, report):
    """The utterances of one Kaldi data dir, via lhotse."""
    from lhotse.kaldi import load_kaldi_data_dir

    for name in ("wav.scp", "text"):
        if not (data_dir / name).is_file():
            raise PreparationError(f"{data_dir}: no {name} (a Kaldi data dir needs wav.scp, text, utt2spk)")
    check_pipes(data_dir / "wav.scp")
    with tempfile.TemporaryDirectory() as copy:  # lhotse needs reco2dur for pipes: measured here, never written into the user's dir
        for name in ("wav.scp", "segments", "text", "utt2spk", "spk2gender"):
            if (data_dir / name).is_file():
                shutil.copy(data_dir / name, Path(copy) / name)
        write_reco2dur(data_dir / "wav.scp", Path(copy) / "reco2dur")
        recordings, supervisions, _ = load_kaldi_data_dir(copy, sampling_rate=sampling_rate, use_reco2dur=True)
    if supervisions is None:
        raise PreparationError(f"{data_dir}: lhotse found no supervisions (text/utt2spk empty?)")
    lines = source_lines(data_dir)
    return [SourceUtterance(s.id, recordings[s.recording_id], s.start, s.duration, s.speaker or s.id,
                            lang, s.text or "", lines.get(s.id, f"{data_dir}/text ({s.id})"), domain)
            for s in supervisions]


def write_reco2dur(wav_scp, reco2dur):
    """Durations of every ``wav.scp`` entry (a pipe is run once), in Kaldi's ``reco2dur`` format."""
    lines = []
    for line_number, line in enumerate(wav_scp.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        recording_id, _, entry = line.strip().partition(" ")
        entry = entry.strip()
        try:
            if entry.endswith("|"):
                data = subprocess.run(entry[:-1], shell=True, check=True, capture_output=True).stdout
                info = sf.info(io.BytesIO(data))
            else:
                info = sf.info(entry)
        except Exception as err:
            raise PreparationError(f"{wav_scp}:{line_number}: cannot read {entry!r} ({err})") from err
        lines.append(f"{recording_id} {info.frames / info.samplerate:.4f}")
    reco2dur.write_text("\n".join(lines) + "\n")


def source_lines(data_dir):
    """Utterance ID -> ``file:line`` of its ``segments`` line (or its ``text`` line without segments)."""
    source = data_dir / "segments" if (data_dir / "segments").is_file() else data_dir / "text"
    return {line.split(maxsplit=1)[0]: f"{source}:{n}"
            for n, line in enumerate(source.read_text(encoding="utf-8").splitlines(), start=1) if line.strip()}
