"""Dataset pipelines: manifest rows -> checked items -> SpeechBrain datasets.

Every recipe reads its data through :func:`make_dataset`: the manifest is
checked once up front (audio present and decodable to its last sample,
16 kHz mono, no NaN or infinite samples, a length that agrees with the
manifest's duration, non-empty transcript where one is needed), bad rows
are skipped and counted in the log with the file and line that caused them
(or raise, with ``strict``), so training never crashes mid-epoch on one
broken file. Decoding every file up front costs 1.4-2.4 s per hour of FLAC
(benchmarks/RESULTS.md, "Reliability: corrupted inputs"); the verdicts are
remembered beside the manifest (``<manifest>.checked.json``, keyed by the
manifest's sha256 and each file's size and mtime), so the next recipe of a
pipeline decodes only the files that changed.
"""

import collections
import hashlib
import json
import logging
import os
import tempfile

import numpy as np
import soundfile as sf
import speechbrain as sb
import torch

from speechkd.data.manifest import read_manifest
from speechkd.resampling import resample as resample_audio

logger = logging.getLogger(__name__)

SAMPLE_RATE = 16000
DURATION_TOLERANCE_S = 0.1
"""How far a manifest's ``duration`` may be from its audio's length before the row is skipped."""
UNENCODABLE = "transcript with characters outside the token inventory (which has no <unk>)"
"""Why a row is skipped whose transcript an inventory without ``<unk>`` cannot encode."""
CHECKED_SUFFIX = ".checked.json"
"""Sidecar of a manifest holding its audio verdicts (:class:`CheckedAudio`)."""


class BadInputError(ValueError):
    """An input file or manifest row that cannot be used, with its culprit named."""


def resolve_path(wav, data_root):
    """Substitute SpeechBrain's ``$data_root`` in a manifest path."""
    return wav.replace("$data_root", str(data_root))


def load_audio(path, sample_rate=SAMPLE_RATE, resample=False):
    """Read a mono waveform with soundfile.

    Parameters
    ----------
    path : str
        Audio file (any format soundfile reads: wav, flac, ogg).
    sample_rate : int
        Required sample rate; another rate is an error naming the file.
    resample : bool
        Convert another rate to ``sample_rate`` instead
        (:func:`speechkd.resampling.resample`, the resampler every input path shares).

    Returns
    -------
    torch.Tensor
        ``(samples,)`` float32 in [-1, 1].

    Raises
    ------
    BadInputError
        Naming the file: missing, unreadable, another rate, several
        channels, empty, or NaN/infinite samples.
    """
    if not os.path.isfile(path):
        raise BadInputError(f"file not found: {path}")
    try:
        audio, sr = sf.read(path, dtype="float32", always_2d=True)
    except Exception as err:  # soundfile raises several types for corrupt files
        raise BadInputError(f"{path}: cannot read audio ({err})") from err
    if sr != sample_rate and not resample:
        raise BadInputError(
            f"{path}: sample rate {sr} Hz, expected {sample_rate} Hz "
            f"(rerun with --resample to convert it)"
        )
    if audio.shape[1] != 1:
        raise BadInputError(f"{path}: {audio.shape[1]} channels, expected mono")
    if audio.shape[0] == 0:
        raise BadInputError(f"{path}: empty audio")
    if not np.isfinite(audio).all():
        raise BadInputError(f"{path}: {int((~np.isfinite(audio)).sum())} NaN or infinite samples")
    return torch.from_numpy(np.ascontiguousarray(resample_audio(audio[:, 0], sr, sample_rate)))


def text_problem(row, need_text, inventory=None):
    """Why a row's transcript is unusable (empty, or characters an inventory without ``<unk>`` lacks), or ``None``."""
    if not need_text:
        return None
    if not row["wrd"].strip():
        return "empty transcript"
    if inventory is not None and inventory.unk_index is None and inventory.missing([row["wrd"]]):
        return UNENCODABLE
    return None


def check_audio(path, duration, sample_rate=SAMPLE_RATE, resample=False):
    """Why the audio at ``path`` is unusable, or ``None`` when it is fine.

    The whole file is decoded: a truncated or corrupt FLAC passes
    ``soundfile.info`` (its header is intact) and would otherwise fail in
    the middle of an epoch.

    Parameters
    ----------
    path : str
    duration : float
        Seconds, as the manifest says.
    sample_rate : int
    resample : bool
        Another sample rate is fine (the audio will be resampled).
    """
    if not os.path.isfile(path):
        return "missing audio"
    try:
        info = sf.info(path)
        audio, _ = sf.read(path, dtype="float32", always_2d=True)
    except Exception:  # noqa: BLE001 - soundfile raises several types for corrupt files
        return "corrupt audio"
    if info.samplerate != sample_rate and not resample:
        return f"sample rate {info.samplerate} Hz"
    if info.channels != 1:
        return f"{info.channels} channels"
    if info.frames == 0 or audio.shape[0] == 0:
        return "empty audio"
    if audio.shape[0] != info.frames:
        return "truncated audio"
    if not np.isfinite(audio).all():
        return "NaN or infinite samples"
    if abs(audio.shape[0] / info.samplerate - duration) > DURATION_TOLERANCE_S:
        return f"manifest duration differs from the audio by more than {DURATION_TOLERANCE_S} s"
    return None


class CheckedAudio:
    """The audio verdicts of one manifest, remembered in ``<manifest>.checked.json``.

    Decoding every file is the slow part of :func:`checked_rows` and every
    recipe of a pipeline reads the same manifests: a verdict is kept with
    the manifest's sha256 and the file's ``(size, mtime_ns)``, and a file is
    decoded again only when one of them changed. The sidecar is replaced
    atomically; a folder that cannot be written only loses the memory.

    Parameters
    ----------
    manifest : str
        The CSV manifest the verdicts belong to.
    """

    def __init__(self, manifest):
        self.path = f"{manifest}{CHECKED_SUFFIX}"
        with open(manifest, "rb") as fin:
            self.manifest_sha256 = hashlib.sha256(fin.read()).hexdigest()
        self.verdicts, self.changed, self.decoded = {}, False, 0
        try:
            with open(self.path, encoding="utf-8") as fin:
                stored = json.load(fin)
            if stored.get("manifest_sha256") == self.manifest_sha256:
                self.verdicts = stored["verdicts"]
        except (OSError, ValueError, KeyError, AttributeError):  # absent or unreadable: check everything
            pass

    def check(self, path, duration, sample_rate=SAMPLE_RATE, resample=False):
        """:func:`check_audio` of ``path``, decoding it only when its remembered verdict is stale."""
        try:
            stat = os.stat(path)
        except OSError:
            return "missing audio"
        key = f"{path}|{duration!r}|{sample_rate}" + ("|resample" if resample else "")
        stamp = [stat.st_size, stat.st_mtime_ns]
        known = self.verdicts.get(key)
        if known is not None and known[:2] == stamp:
            return known[2]
        verdict = check_audio(path, duration, sample_rate, resample)
        self.decoded += 1
        self.verdicts[key] = [*stamp, verdict]
        self.changed = True
        return verdict

    def save(self):
        """Write the sidecar (when a verdict is new) through a temporary file and ``os.replace``."""
        if not self.changed:
            return
        payload = {"manifest_sha256": self.manifest_sha256, "verdicts": self.verdicts}
        try:
            fd, tmp = tempfile.mkstemp(dir=os.path.dirname(os.path.abspath(self.path)),
                                       prefix=os.path.basename(self.path), suffix=".tmp")
            with os.fdopen(fd, "w", encoding="utf-8") as fout:
                json.dump(payload, fout)
            os.replace(tmp, self.path)
        except OSError as err:
            logger.info("%s: verdicts not remembered (%s); the next run decodes the audio again", self.path, err)


def checked_rows(manifest, data_root, need_text=True, strict=False, inventory=None, resample=False):
    """Read a manifest and drop (or refuse) unusable rows.

    Parameters
    ----------
    manifest : str
        Path of a SpeechBrain CSV manifest.
    data_root : str
        Replacement for ``$data_root`` in the ``wav`` column.
    need_text : bool
        Whether an empty ``wrd`` makes a row unusable.
    strict : bool
        Raise :class:`BadInputError` on the first bad row instead of skipping.
    inventory : speechkd.text.TokenInventory, optional
        With ``need_text``: an inventory without ``<unk>`` makes a row whose
        transcript has characters it lacks unusable (it could not be encoded).
    resample : bool
        Audio at another sample rate is usable (it will be resampled).

    Returns
    -------
    rows : list of dict
        The usable rows, in manifest order.
    skipped : collections.Counter
        Reason -> number of rows skipped.

    Notes
    -----
    Audio verdicts are remembered beside the manifest (:class:`CheckedAudio`):
    only new or changed files are decoded again.
    """
    rows = read_manifest(manifest, allow_empty_wrd=True)  # an empty transcript is a counted skip
    audio = CheckedAudio(manifest)
    good, skipped = [], collections.Counter()
    for line, row in enumerate(rows, start=2):
        reason = text_problem(row, need_text, inventory) or audio.check(
            resolve_path(row["wav"], data_root), float(row["duration"]), resample=resample)
        if reason is None:
            good.append(row)
            continue
        culprit = f"{manifest}:{line} ({row['ID']}, {resolve_path(row['wav'], data_root)})"
        if reason == UNENCODABLE:
            reason_detail = f"{reason}: {''.join(sorted(inventory.missing([row['wrd']])))!r}"
        else:
            reason_detail = reason
        if strict:
            audio.save()
            raise BadInputError(f"{culprit}: {reason_detail}")
        logger.warning("skipping %s: %s", culprit, reason_detail)
        skipped[reason] += 1
    audio.save()
    if skipped:
        logger.warning(
            "%s: skipped %d of %d rows (%s)",
            manifest,
            sum(skipped.values()),
            len(rows),
            ", ".join(f"{n} {why}" for why, n in skipped.items()),
        )
    return good, skipped


def refuse_conflicting_ids(manifests, data_root):
    """Refuse an ID that two manifests give to different audio (a cache keyed by ID would keep one).

    Parameters
    ----------
    manifests : sequence of str
        CSV manifests read together (e.g. the train and dev splits a cache is built from).
    data_root : str
        Replacement for ``$data_root``.

    Raises
    ------
    BadInputError
        Naming the ID and both manifests. The same ID on the same file (or
        on byte-identical files) is allowed.
    """
    first_seen = {}
    for manifest in manifests:
        for row in read_manifest(manifest, allow_empty_wrd=True):
            path = resolve_path(row["wav"], data_root)
            if row["ID"] not in first_seen:
                first_seen[row["ID"]] = (manifest, path)
                continue
            other_manifest, other_path = first_seen[row["ID"]]
            if not same_audio(path, other_path):
                raise BadInputError(
                    f"utterance ID {row['ID']!r} names {other_path} in {other_manifest} and {path} in "
                    f"{manifest}; IDs must be unique across the splits (rename one of them)"
                )


def same_audio(path, other):
    """Whether two paths hold the same audio (the same file, or equal bytes)."""
    if os.path.realpath(path) == os.path.realpath(other):
        return True
    try:
        with open(path, "rb") as a, open(other, "rb") as b:
            return a.read() == b.read()
    except OSError:  # a missing file is counted by checked_rows
        return False


def make_dataset(
    manifest,
    data_root,
    inventory=None,
    need_text=True,
    parallel_manifest=None,
    sort="ascending",
    strict=False,
    labelled_ids=None,
    resample=False,
):
    """Build a ``DynamicItemDataset`` giving audio, tokens and metadata.

    Parameters
    ----------
    manifest : str
        CSV manifest (``ID,duration,wav,spk_id,lang,domain,wrd``).
    data_root : str
        Replacement for ``$data_root``.
    inventory : speechkd.text.TokenInventory, optional
        When given (and ``need_text``), the ``tokens`` item holds the
        encoded transcript.
    need_text : bool
        False for unlabelled audio (alpha = 0 distillation): no ``tokens``.
    parallel_manifest : str, optional
        Manifest of the same utterances in another domain (same IDs): adds
        ``sig_parallel``, the other version of the audio, for teacher-student
        domain adaptation. A pair whose lengths differ is an error naming
        the utterance.
    sort : str
        ``ascending``, ``descending`` or ``none`` (by duration).
    strict : bool
        Raise on the first bad row instead of skipping it.
    labelled_ids : collection of str, optional
        Utterances whose transcript may be used, the others being unlabelled
        (a few labelled target utterances among many): ``tokens`` then
        encodes those rows only (an unlabelled row gets one blank, never
        read), ``labelled`` (bool) says which rows are which, and no row
        needs a transcript. Needs ``inventory``.
    resample : bool
        Resample audio at another rate to 16 kHz (:func:`load_audio`)
        instead of skipping it.

    Returns
    -------
    speechbrain.dataio.dataset.DynamicItemDataset
        Output keys: ``id, sig, wrd, lang, domain, duration`` (+ ``tokens``,
        ``labelled``, ``sig_parallel``). ``sig`` is ``(samples,)``.
    """
    if labelled_ids is not None and inventory is None:
        raise ValueError("make_dataset: labelled_ids needs the inventory that encodes their transcripts")
    need_text = need_text and labelled_ids is None
    rows, _ = checked_rows(manifest, data_root, need_text=need_text, strict=strict,
                           inventory=inventory if need_text else None, resample=resample)
    data = {
        row["ID"]: {
            "wav": resolve_path(row["wav"], data_root),
            "duration": float(row["duration"]),
            "wrd": row["wrd"],
            "lang": row["lang"],
            "domain": row["domain"],
            "spk_id": row["spk_id"],
        }
        for row in rows
    }
    if parallel_manifest is not None:
        attach_parallel(data, parallel_manifest, data_root)
    dataset = sb.dataio.dataset.DynamicItemDataset(data)
    keys = ["id", "sig", "wrd", "lang", "domain", "duration"]
    keys += add_audio_items(dataset, parallel=parallel_manifest is not None, resample=resample)
    if labelled_ids is not None:
        keys += add_labelled_tokens(dataset, inventory, usable_labels(manifest, rows, labelled_ids, inventory))
    elif inventory is not None and need_text:
        if inventory.unk_index is not None:
            count_unknown_characters(manifest, rows, inventory)
        keys += add_tokens(dataset, inventory)
    dataset.set_output_keys(keys)
    if sort in ("ascending", "descending"):
        dataset = dataset.filtered_sorted(sort_key="duration", reverse=sort == "descending")
    return dataset


def count_unknown_characters(manifest, rows, inventory, consequence="become <unk>"):
    """Log how many transcript characters an inventory with ``<unk>`` lacks (encoded as ``<unk>``); returns the counts.

    ``consequence`` says in the log what happens to them (evaluation scores them as errors).

    Rows an inventory without ``<unk>`` cannot encode never get here:
    :func:`checked_rows` skips them, naming manifest and line.
    """
    unknown = collections.Counter(char for row in rows for char in row["wrd"] if char not in inventory)
    if unknown:
        logger.warning("%s: %d characters are not in the token inventory and %s: %s",
                       manifest, sum(unknown.values()), consequence, dict(unknown.most_common(10)))
    return unknown


def add_audio_items(dataset, parallel=False, resample=False):
    """Add ``sig`` (and ``sig_parallel``, the other half of a parallel pair) to ``dataset``.

    Returns
    -------
    list of str
        The keys added.
    """

    @sb.utils.data_pipeline.takes("wav")
    @sb.utils.data_pipeline.provides("sig")
    def audio_pipeline(wav):
        return load_audio(wav, resample=resample)

    dataset.add_dynamic_item(audio_pipeline)
    if not parallel:
        return ["sig"]

    @sb.utils.data_pipeline.takes("wav_parallel", "wav", "id")
    @sb.utils.data_pipeline.provides("sig_parallel")
    def parallel_pipeline(wav_parallel, wav, utt_id):
        other = load_audio(wav_parallel)
        if other.shape[0] != sf.info(wav).frames:
            raise BadInputError(
                f"utterance {utt_id}: parallel audio {wav_parallel} has "
                f"{other.shape[0]} samples, {wav} has {sf.info(wav).frames}; "
                "teacher-student adaptation needs frame-aligned pairs"
            )
        return other

    dataset.add_dynamic_item(parallel_pipeline)
    return ["sig", "sig_parallel"]


def add_tokens(dataset, inventory):
    """Add ``tokens``, the encoded transcript; returns the keys added."""

    @sb.utils.data_pipeline.takes("wrd")
    @sb.utils.data_pipeline.provides("tokens")
    def text_pipeline(wrd):
        return torch.LongTensor(inventory.encode(wrd))

    dataset.add_dynamic_item(text_pipeline)
    return ["tokens"]


def usable_labels(manifest, rows, labelled_ids, inventory=None):
    """The labelled IDs whose transcript can be used; the others' rows become unlabelled (counted in the log).

    A transcript is unusable when empty, or when ``inventory`` has no
    ``<unk>`` and lacks one of its characters (it could not be encoded).
    """
    labelled_ids = frozenset(labelled_ids)
    unusable = collections.defaultdict(list)
    for row in rows:
        if row["ID"] in labelled_ids:
            reason = text_problem(row, True, inventory)
            if reason is not None:
                unusable[reason].append(row["ID"])
    for reason, ids in unusable.items():
        logger.warning("%s: %d labelled rows are used as unlabelled (%s), e.g. %s",
                       manifest, len(ids), reason, ids[0])
    return labelled_ids - {utt for ids in unusable.values() for utt in ids}


def add_labelled_tokens(dataset, inventory, labelled_ids):
    """Add ``tokens`` (the transcript of labelled rows, one blank elsewhere, never read) and ``labelled`` (bool).

    Returns
    -------
    list of str
        The keys added.
    """

    @sb.utils.data_pipeline.takes("id", "wrd")
    @sb.utils.data_pipeline.provides("tokens", "labelled")
    def labelled_text_pipeline(utt_id, wrd):
        labelled = utt_id in labelled_ids
        yield torch.LongTensor(inventory.encode(wrd) if labelled else [inventory.blank_index])
        yield labelled

    dataset.add_dynamic_item(labelled_text_pipeline)
    return ["tokens", "labelled"]


def attach_parallel(data, parallel_manifest, data_root):
    """Add ``wav_parallel`` to each item of ``data`` from a parallel manifest.

    Items without a partner are dropped and counted; partners whose
    durations differ are refused, naming the utterance.
    """
    partners = {row["ID"]: row for row in read_manifest(parallel_manifest)}
    missing = [utt_id for utt_id in data if utt_id not in partners]
    for utt_id in missing:
        del data[utt_id]
    if missing:
        logger.warning(
            "%d utterances have no partner in %s (skipped), e.g. %s",
            len(missing),
            parallel_manifest,
            missing[0],
        )
    for utt_id, item in data.items():
        partner = partners[utt_id]
        if abs(float(partner["duration"]) - item["duration"]) > 1e-3:
            raise BadInputError(
                f"utterance {utt_id}: {parallel_manifest} says {partner['duration']} s, "
                f"the primary manifest says {item['duration']} s; parallel pairs "
                "must have equal lengths"
            )
        item["wav_parallel"] = resolve_path(partner["wav"], data_root)


def hide_transcripts(dataset):
    """Blank the ``wrd`` of every item: an unlabelled set's text is for analysis only, never read."""
    for item in dataset.data.values():
        item["wrd"] = ""
    return dataset


def test_sets(manifests, data_root, inventory):
    """``(name, dataset)`` for each test manifest; the name is the file's stem (``test_noise.csv`` -> ``test_noise``)."""
    for manifest in manifests:
        yield os.path.splitext(os.path.basename(manifest))[0], make_dataset(manifest, data_root, inventory)
