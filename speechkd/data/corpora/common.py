"""What every real-corpus preparation shares: utterances in, manifests + 16 kHz FLAC + a report out.

A format module (``librispeech``, ``commonvoice``, ...) turns its layout into
:class:`SourceUtterance` lists per split; :func:`write_prepared_corpus` then

1. normalizes each transcript for its language (:func:`speechkd.text.normalize`),
   counting every change; a transcript left empty is skipped and counted;
2. cuts each utterance from its recording (segments honoured), mixes it to
   mono and resamples it to 16 kHz once, here (so every recipe, teacher and
   cache reads plain 16 kHz FLAC with soundfile, as for the embedded corpus);
   a missing or unreadable file, or a segment past the end of its recording,
   is skipped and counted with the file and line it came from;
3. writes ``train.csv``, ``dev.csv``, ``test.csv`` (``unlabelled.csv`` when
   given), ``tokens.txt`` (from the training transcripts: characters seen at
   least ``token_min_count`` times, ``<unk>`` for the rest) and
   ``prepare_report.json`` (counts, skips with their culprits, normalization
   changes, rare characters, source sample rates, per split and language
   hours and speakers).

Layout of ``out``::

    audio/<split>/<ID>.flac        16 kHz mono FLAC, PCM_16
    train.csv dev.csv test.csv     SpeechBrain manifests (wav = $data_root/audio/...)
    tokens.txt                     the training inventory
    prepare_report.json            what was kept, changed and skipped
    prepare.started                fingerprint of the preparation under way (a killed run resumes it)
    prepare.done                   fingerprint of the options: a rerun with equal options is skipped

A preparation with other options (or from another source) first clears what
an earlier one wrote (:func:`clear_prepared`), so no stale FLAC is reused.
"""

from __future__ import annotations

import collections
import concurrent.futures
import hashlib
import json
import logging
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import soundfile as sf

from speechkd.data.manifest import write_manifest
from speechkd.resampling import resample
from speechkd.text import LANGUAGES, TokenInventory, normalize

logger = logging.getLogger(__name__)

SAMPLE_RATE = 16000
SPLITS = ("train", "dev", "test")
DONE_FILE = "prepare.done"
STARTED_FILE = "prepare.started"
REPORT_FILE = "prepare_report.json"
EXAMPLES_PER_REASON = 5
SEGMENT_TOLERANCE_S = 0.01
"""A segment may end this far past its recording (rounding in segment files) before it is refused."""


class PreparationError(ValueError):
    """A corpus cannot be prepared; the message names the file (and line)."""


@dataclass
class SourceUtterance:
    """One utterance of a source corpus, before preparation.

    Attributes
    ----------
    utt_id : str
        Unique within the corpus (becomes the manifest ``ID``).
    recording : lhotse.Recording
        Where its audio is (a file, a command pipe, ...), any rate and channels.
    start : float
        Offset in the recording, seconds.
    duration : float or None
        Seconds; ``None`` runs to the end of the recording.
    speaker : str
    lang : str
        Language code, one of :data:`speechkd.text.LANGUAGES`.
    text : str
        Raw transcript (empty for unlabelled audio).
    where : str
        ``file:line`` (or file and ID) it came from, for messages.
    domain : str
        The manifest's ``domain`` (``clean``, ``other``, ...): WER is reported per domain.
    """

    utt_id: str
    recording: object
    start: float
    duration: float | None
    speaker: str
    lang: str
    text: str
    where: str
    domain: str = "clean"


@dataclass
class PreparationReport:
    """Counts of what a preparation kept, changed and skipped (``prepare_report.json``)."""

    source: str
    skipped: collections.Counter = field(default_factory=collections.Counter)
    examples: dict = field(default_factory=lambda: collections.defaultdict(list))
    normalization: collections.Counter = field(default_factory=collections.Counter)
    sample_rates: collections.Counter = field(default_factory=collections.Counter)
    channels: collections.Counter = field(default_factory=collections.Counter)

    def skip(self, reason: str, culprit: str) -> None:
        """Count a skipped utterance; the first few culprits are kept and every one is logged."""
        self.skipped[reason] += 1
        if len(self.examples[reason]) < EXAMPLES_PER_REASON:
            self.examples[reason].append(culprit)
        logger.warning("skipping %s: %s", culprit, reason)

    def as_dict(self) -> dict:
        return {"source": self.source, "skipped": dict(self.skipped),
                "skipped_examples": {k: v for k, v in self.examples.items()},
                "normalization": dict(sorted(self.normalization.items())),
                "source_sample_rates": {str(k): v for k, v in sorted(self.sample_rates.items())},
                "source_channels": {str(k): v for k, v in sorted(self.channels.items())}}


def check_language(lang: str, where: str) -> str:
    """``lang`` if :func:`speechkd.text.normalize` knows it, else an error naming ``where``."""
    if lang not in LANGUAGES:
        raise PreparationError(f"{where}: language {lang!r} has no normalization rules; "
                               f"supported: {', '.join(LANGUAGES)}")
    return lang


def file_recording(path, recording_id, report: PreparationReport, where: str):
    """A lhotse ``Recording`` of an audio file, or ``None`` (counted) when missing or unreadable."""
    from lhotse import Recording

    if not os.path.isfile(path):
        report.skip("missing audio", f"{where} ({path})")
        return None
    try:
        return Recording.from_file(path, recording_id=recording_id)
    except Exception as err:  # noqa: BLE001 - the audio backends raise many types for corrupt files
        report.skip("unreadable audio", f"{where} ({path}: {err})")
        return None


def speaker_disjoint_split(utterances, dev_fraction=0.1, test_fraction=0.1, seed=0, where=""):
    """Split utterances into train/dev/test with no speaker in two splits.

    Speakers are ranked by a hash of ``(seed, speaker)`` (stable, independent
    of order); dev takes speakers from the top of the ranking until it holds
    ``dev_fraction`` of the utterances, test the next ones until
    ``test_fraction``, train the rest.

    Returns
    -------
    dict
        ``{"train": [...], "dev": [...], "test": [...]}`` of the same objects, in input order.
    """
    speakers = sorted({u.speaker for u in utterances},
                      key=lambda s: hashlib.sha256(f"{seed}\x1f{s}".encode()).hexdigest())
    if len(speakers) < 3:
        raise PreparationError(f"{where}: {len(speakers)} speaker(s): a speaker-disjoint "
                               "train/dev/test split needs at least 3; give the splits instead")
    per_speaker = collections.Counter(u.speaker for u in utterances)
    split_of, filled = {}, {"dev": 0, "test": 0}
    wanted = {"dev": dev_fraction * len(utterances), "test": test_fraction * len(utterances)}
    for speaker in speakers:
        split = next((s for s in ("dev", "test") if filled[s] < wanted[s]), "train")
        if split != "train" and len(speakers) - len(split_of) <= 1:
            split = "train"  # the last speaker always trains
        split_of[speaker] = split
        if split != "train":
            filled[split] += per_speaker[speaker]
    return {split: [u for u in utterances if split_of[u.speaker] == split] for split in SPLITS}


def read_segment(utt: SourceUtterance):
    """The utterance's audio at its own rate: ``(samples, channels)`` float32, and the rate.

    Raises
    ------
    PreparationError
        The segment ends past its recording.
    """
    recording = utt.recording
    end = recording.duration if utt.duration is None else utt.start + utt.duration
    if utt.start < 0 or end > recording.duration + SEGMENT_TOLERANCE_S or end <= utt.start:
        raise PreparationError(f"segment {utt.start:.2f}-{end:.2f} s lies outside its recording "
                               f"({recording.duration:.2f} s)")
    duration = min(end, recording.duration) - utt.start
    audio = recording.load_audio(offset=utt.start, duration=duration)  # (channels, samples)
    return np.ascontiguousarray(np.asarray(audio, dtype=np.float32).T), recording.sampling_rate


def to_16k_mono(audio, rate):
    """``(samples, channels)`` at ``rate`` -> ``(samples,)`` at 16 kHz (channel mean, :func:`speechkd.resampling.resample`)."""
    mono = audio.mean(axis=1) if audio.ndim == 2 else audio
    return np.clip(resample(mono, rate, SAMPLE_RATE), -1.0, 1.0).astype(np.float32)


def convert_utterance(utt: SourceUtterance, dest: str):
    """Write ``utt`` as 16 kHz mono FLAC at ``dest`` (kept when it exists: a killed run resumes).

    :func:`write_prepared_corpus` clears ``audio/`` first unless the
    preparation under way has the same fingerprint, so an existing file was
    made from the same source with the same options.

    Returns
    -------
    tuple
        ``(samples written, source rate, source channels)``, or ``(None, reason)``
        when the utterance cannot be used.
    """
    if os.path.exists(dest):
        return sf.info(dest).frames, utt.recording.sampling_rate, utt.recording.num_channels
    try:
        audio, rate = read_segment(utt)
    except PreparationError as err:
        return None, f"segment past the end of its recording ({err})"
    except Exception as err:  # noqa: BLE001 - decoders and pipes fail in many ways
        return None, f"unreadable audio ({type(err).__name__}: {err})"
    samples = to_16k_mono(audio, rate)
    if samples.size == 0:
        return None, "empty audio"
    tmp = f"{dest}.{os.getpid()}.tmp.flac"
    sf.write(tmp, samples, SAMPLE_RATE, format="FLAC", subtype="PCM_16")
    os.replace(tmp, dest)
    return samples.size, rate, audio.shape[1]


def _convert_many(jobs):
    return [convert_utterance(utt, dest) for utt, dest in jobs]


def fingerprint(options: dict) -> str:
    """First 16 hex chars of the sha256 of the options as sorted JSON."""
    return hashlib.sha256(json.dumps(options, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _marker(out, name):
    path = Path(out) / name
    return path.read_text().strip() if path.exists() else None


def already_prepared(out, options) -> bool:
    """Whether ``out`` holds a preparation made with exactly ``options``."""
    return _marker(out, DONE_FILE) == fingerprint(options)


def clear_prepared(out, splits=()) -> None:
    """Delete what a preparation wrote in ``out``: ``audio/``, the manifests (and their
    ``.checked.json``), ``tokens.txt``, the report and the markers; anything else stays.

    Parameters
    ----------
    out : str or Path
        Prepared corpus folder (absent: nothing to do).
    splits : iterable of str
        Split names whose manifests go too, besides train, dev, test,
        unlabelled and those the old report lists.
    """
    out = Path(out)
    if not out.is_dir():
        return
    names = {*SPLITS, "unlabelled", *splits}
    try:
        names |= set(json.loads((out / REPORT_FILE).read_text(encoding="utf-8")).get("splits", {}))
    except (OSError, ValueError, AttributeError):
        pass
    files = [f"{name}{suffix}" for name in names for suffix in (".csv", ".csv.checked.json")]
    for name in [*files, "tokens.txt", REPORT_FILE, DONE_FILE, STARTED_FILE]:
        (out / name).unlink(missing_ok=True)
    shutil.rmtree(out / "audio", ignore_errors=True)
    logger.info("%s: cleared the earlier preparation's audio, manifests, tokens and report", out)


def start_preparation(out, options, splits=()) -> None:
    """Clear ``out`` (:func:`clear_prepared`) unless a preparation with ``options`` is done or
    under way there (a killed run then resumes, keeping its FLAC), and mark this one as started."""
    out = Path(out)
    print_ = fingerprint(options)
    if print_ not in (_marker(out, DONE_FILE), _marker(out, STARTED_FILE)):
        clear_prepared(out, splits)
    out.mkdir(parents=True, exist_ok=True)
    (out / STARTED_FILE).write_text(print_ + "\n")


def prepared_beforehand():
    """A recipe's ``prepare`` when the manifests in its ``data_folder`` were written before (by
    ``speechkd run's`` corpus stage, or by calling a ``prepare_<corpus>`` function once)."""


def write_prepared_corpus(splits, out, report: PreparationReport, options: dict,
                          token_min_count: int = 1, workers: int = 1, labelled=SPLITS) -> dict:
    """Normalize, convert and write a corpus (see the module docstring).

    Parameters
    ----------
    splits : dict
        Split name (``train``, ``dev``, ``test``, ``unlabelled``, ...) -> list
        of :class:`SourceUtterance`.
    out : str or Path
        Prepared corpus folder.
    report : PreparationReport
        Holds what the format's parser already skipped; completed here.
    options : dict
        What the preparation was asked for (fingerprinted in ``prepare.done``).
    token_min_count : int
        Training occurrences a character needs to get its own token.
    workers : int
        Processes converting audio.
    labelled : sequence of str
        Splits whose transcripts are required (an empty one is skipped).

    Returns
    -------
    dict
        The report, as written to ``prepare_report.json``.
    """
    began = time.perf_counter()
    out = Path(out)
    ids = collections.Counter(u.utt_id for utts in splits.values() for u in utts)
    duplicated = sorted(i for i, n in ids.items() if n > 1)
    if duplicated:
        raise PreparationError(f"{report.source}: utterance IDs occur more than once, e.g. {duplicated[:3]}")
    start_preparation(out, options, splits)
    rows = {}
    for split, utterances in splits.items():
        texts = normalized_texts(utterances, report, need_text=split in labelled)
        rows[split] = convert_split(split, [u for u in utterances if u.utt_id in texts], texts,
                                    out, report, workers)
    for split, split_rows in rows.items():
        write_manifest(out / f"{split}.csv", split_rows)
    inventory, rare = TokenInventory.from_training_texts(
        [r["wrd"] for r in rows.get("train", [])], min_count=token_min_count,
        other_texts=[r["wrd"] for s in rows if s != "train" for r in rows[s]])
    inventory.save(out / "tokens.txt")
    summary = {**report.as_dict(), "token_min_count": token_min_count, "tokens": len(inventory),
               "rare_characters": rare["rare"], "characters_unseen_in_train": rare["unseen"],
               "splits": split_statistics(rows), "seconds": round(time.perf_counter() - began, 2)}
    (out / REPORT_FILE).write_text(json.dumps(summary, indent=2, ensure_ascii=False, sort_keys=True) + "\n",
                                   encoding="utf-8")
    (out / DONE_FILE).write_text(fingerprint(options) + "\n")
    (out / STARTED_FILE).unlink(missing_ok=True)
    logger.info("prepared %s into %s: %s", report.source, out,
                {s: v["utterances"] for s, v in summary["splits"].items()})
    return summary


def normalized_texts(utterances, report, need_text=True):
    """Utterance ID -> normalized transcript; empty ones are skipped (counted) where text is needed."""
    texts = {}
    for utt in utterances:
        text = normalize(utt.text, utt.lang, report.normalization)
        if need_text and not text:
            reason = "empty transcript" if not utt.text.strip() else "transcript empty after normalization"
            report.skip(reason, f"{utt.where} ({utt.utt_id}: {utt.text!r})")
            continue
        texts[utt.utt_id] = text
    return texts


def convert_split(split, utterances, texts, out, report, workers=1):
    """Convert a split's audio (in ``workers`` processes) and return its manifest rows, in input order."""
    folder = out / "audio" / split
    folder.mkdir(parents=True, exist_ok=True)
    jobs = [(utt, str(folder / f"{utt.utt_id}.flac")) for utt in utterances]
    chunks = [jobs[i:i + 64] for i in range(0, len(jobs), 64)]
    if workers > 1 and len(chunks) > 1:
        with concurrent.futures.ProcessPoolExecutor(workers) as pool:
            results = [r for chunk in pool.map(_convert_many, chunks) for r in chunk]
    else:
        results = [r for chunk in chunks for r in _convert_many(chunk)]
    rows = []
    for (utt, _), result in zip(jobs, results):
        if result[0] is None:
            report.skip(result[1].split(" (")[0], f"{utt.where} ({utt.utt_id}): {result[1]}")
            continue
        samples, rate, channels = result
        report.sample_rates[rate] += 1
        report.channels[channels] += 1
        rows.append({"ID": utt.utt_id, "duration": samples / SAMPLE_RATE,
                     "wav": f"$data_root/audio/{split}/{utt.utt_id}.flac", "spk_id": utt.speaker,
                     "lang": utt.lang, "domain": utt.domain, "wrd": texts[utt.utt_id]})
    return rows


def split_statistics(rows):
    """Per split: utterances, hours, speakers, and the same per language."""
    stats = {}
    for split, split_rows in rows.items():
        by_lang = collections.defaultdict(list)
        for row in split_rows:
            by_lang[row["lang"]].append(row)
        stats[split] = {**_count(split_rows), "languages": {lang: _count(r) for lang, r in sorted(by_lang.items())}}
    return stats


def _count(rows):
    return {"utterances": len(rows), "hours": round(sum(r["duration"] for r in rows) / 3600, 4),
            "speakers": len({r["spk_id"] for r in rows})}
