"""Build small trees in the real corpora's layouts from the embedded tiny corpus (for tests).

Each builder takes manifest rows per split (``{"train": [...], "dev": [...],
"test": [...]}`` as :func:`speechkd.data.manifest.read_manifest` gives them,
``wav`` resolved) and writes the layout under ``root``, the transcripts
written back in the corpus's own style (upper case, punctuation, digits),
so that preparing the tree must give back the rows' ``wrd``.
"""

import json
import os
from pathlib import Path

import numpy as np
import soundfile as sf

from speechkd.data.manifest import read_manifest
from speechkd.data.pipelines import resolve_path


def corpus_rows(corpus, lang=None):
    """Rows of the tiny corpus per split (``wav`` resolved), optionally one language."""
    rows = {}
    for split in ("train", "dev", "test"):
        split_rows = read_manifest(os.path.join(corpus, f"{split}.csv"))
        rows[split] = [dict(r, wav=resolve_path(r["wav"], corpus)) for r in split_rows
                       if lang is None or r["lang"] == lang]
    return rows


def audio(row):
    return sf.read(row["wav"], dtype="float32")[0]


def speaker_numbers(rows):
    speakers = sorted({r["spk_id"] for split_rows in rows.values() for r in split_rows})
    return {s: 100 + i for i, s in enumerate(speakers)}


def librispeech_tree(root, rows):
    """``<part>/<spk>/<chapter>/<spk>-<chapter>-<n>.flac`` + ``trans.txt``; test split in clean and other.

    Returns
    -------
    dict
        LibriSpeech utterance ID -> source row.
    """
    numbers, expected = speaker_numbers(rows), {}
    parts = {"train-clean-100": rows["train"], "dev-clean": rows["dev"],
             "test-clean": rows["test"][::2], "test-other": rows["test"][1::2]}
    for part, part_rows in parts.items():
        lines = {}
        for n, row in enumerate(part_rows):
            spk = numbers[row["spk_id"]]
            folder = Path(root, part, str(spk), "7")
            folder.mkdir(parents=True, exist_ok=True)
            utt_id = f"{spk}-7-{n:04d}"
            sf.write(folder / f"{utt_id}.flac", audio(row), 16000)
            lines.setdefault(folder / f"{spk}-7.trans.txt", []).append(f"{utt_id} {row['wrd'].upper()}")
            expected[utt_id] = dict(row, domain="other" if part.endswith("other") else "clean")
        for path, text in lines.items():
            path.write_text("\n".join(text) + "\n")
    return expected


OLD_CV_HEADER = ["client_id", "path", "sentence", "up_votes", "down_votes", "age", "gender", "accent"]
NEW_CV_HEADER = ["client_id", "path", "sentence_id", "sentence", "sentence_domain", "up_votes",
                 "down_votes", "age", "gender", "accents", "variant", "locale", "segment"]


def resample(samples, rate):
    import soxr

    return soxr.resample(samples, 16000, rate)


def commonvoice_tree(root, rows, lang, new_header):
    """``<lang>/clips/*.mp3`` (48 kHz stereo) and train/dev/test/validated TSVs with an old or new header.

    Returns
    -------
    dict
        Prepared utterance ID (``<lang>-<clip stem>``) -> source row.
    """
    folder = Path(root, lang)
    (folder / "clips").mkdir(parents=True, exist_ok=True)
    header = NEW_CV_HEADER if new_header else OLD_CV_HEADER
    expected, validated = {}, []
    for split in ("train", "dev", "test"):
        lines = []
        for n, row in enumerate(rows[split]):
            clip = f"common_voice_{lang}_{split}{n}.mp3"
            stereo = np.stack([resample(audio(row), 48000)] * 2, axis=1)
            sf.write(folder / "clips" / clip, stereo, 48000, format="MP3")
            values = {"client_id": f"client{row['spk_id']}", "path": clip,
                      "sentence": row["wrd"].capitalize() + ".", "locale": lang}
            lines.append("\t".join(values.get(c, "") for c in header))
            expected[f"{lang}-{Path(clip).stem}"] = dict(row, split=split)
        (folder / f"{split}.tsv").write_text("\t".join(header) + "\n" + "\n".join(lines) + "\n")
        validated += lines
    (folder / "validated.tsv").write_text("\t".join(header) + "\n" + "\n".join(validated) + "\n")
    return expected


def mls_tree(root, rows, name="english"):
    """``mls_<name>_opus/<split>/transcripts.txt`` + ``audio/<spk>/<book>/<id>.opus``."""
    numbers, expected = speaker_numbers(rows), {}
    for split, split_rows in rows.items():
        lines = []
        for n, row in enumerate(split_rows):
            spk = numbers[row["spk_id"]]
            utt_id = f"{spk}_33_{n:06d}"
            folder = Path(root, f"mls_{name}_opus", split, "audio", str(spk), "33")
            folder.mkdir(parents=True, exist_ok=True)
            sf.write(folder / f"{utt_id}.opus", audio(row), 16000, format="OGG", subtype="OPUS")
            lines.append(f"{utt_id}\t{row['wrd']}")
            expected[f"{row['lang']}-{utt_id}"] = row
        Path(root, f"mls_{name}_opus", split, "transcripts.txt").write_text("\n".join(lines) + "\n")
    return expected


def fleurs_tree(root, rows, name="en_us"):
    """``<name>/<split>.tsv`` (no header) + ``<name>/audio/<split>/<n>.wav``; sentence ids shared in pairs."""
    expected, number = {}, 1000
    for split, split_rows in rows.items():
        folder = Path(root, name, "audio", split)
        folder.mkdir(parents=True, exist_ok=True)
        lines = []
        for n, row in enumerate(split_rows):
            number += 1
            sf.write(folder / f"{number}.wav", audio(row), 16000)
            raw = row["wrd"].capitalize() + "!"
            lines.append("\t".join([str(n // 2), f"{number}.wav", raw, row["wrd"], "", str(len(audio(row))), "MALE"]))
            expected[f"{name}-{number}"] = row
        Path(root, name, f"{split}.tsv").write_text("\n".join(lines) + "\n")
    return expected


def kaldi_tree(root, rows, pipe=True):
    """A Kaldi dir: per speaker one long 16 kHz wav (0.25 s gaps) with ``segments``; the first as a ``cat |`` pipe.

    The last segment of each recording ends with ``-1``.
    """
    folder = Path(root)
    (folder / "wavs").mkdir(parents=True, exist_ok=True)
    by_speaker = {}
    for row in (r for split_rows in rows.values() for r in split_rows):
        by_speaker.setdefault(row["spk_id"], []).append(row)
    gap = np.zeros(4000, dtype=np.float32)
    wav_scp, segments, text, utt2spk, expected = [], [], [], [], {}
    for i, (spk, spk_rows) in enumerate(sorted(by_speaker.items())):
        pieces, start = [], 0.0
        for n, row in enumerate(spk_rows):
            samples = audio(row)
            utt_id = f"{spk}-{n:03d}"
            end = "-1" if n == len(spk_rows) - 1 else f"{start + len(samples) / 16000:.6f}"
            segments.append(f"{utt_id} rec{i} {start:.6f} {end}")
            text.append(f"{utt_id} {row['wrd'].upper()}")
            utt2spk.append(f"{utt_id} {spk}")
            expected[utt_id] = row
            pieces += [samples, gap] if n < len(spk_rows) - 1 else [samples]
            start += (len(samples) + (len(gap) if n < len(spk_rows) - 1 else 0)) / 16000
        path = folder / "wavs" / f"rec{i}.wav"
        sf.write(path, np.concatenate(pieces), 16000, subtype="PCM_16")
        wav_scp.append(f"rec{i} cat {path} |" if pipe and i == 0 else f"rec{i} {path}")
    for name, lines in {"wav.scp": wav_scp, "segments": segments, "text": sorted(text),
                        "utt2spk": sorted(utt2spk)}.items():
        (folder / name).write_text("\n".join(lines) + "\n")
    return expected


def lhotse_tree(root, rows):
    """``recordings.jsonl`` + ``supervisions.jsonl`` per split, and ``cuts_train.jsonl`` (lhotse)."""
    from lhotse import CutSet, Recording, RecordingSet, SupervisionSegment, SupervisionSet

    Path(root).mkdir(parents=True, exist_ok=True)
    manifests, expected = {}, {}
    for split, split_rows in rows.items():
        recordings = RecordingSet.from_recordings(Recording.from_file(r["wav"], recording_id=r["ID"])
                                                  for r in split_rows)
        supervisions = SupervisionSet.from_segments(
            SupervisionSegment(id=r["ID"], recording_id=r["ID"], start=0.0, duration=recordings[r["ID"]].duration,
                               text=r["wrd"].upper(), speaker=r["spk_id"], language=r["lang"]) for r in split_rows)
        paths = [str(Path(root, f"recordings_{split}.jsonl")), str(Path(root, f"supervisions_{split}.jsonl"))]
        recordings.to_file(paths[0])
        supervisions.to_file(paths[1])
        manifests[split] = paths
        if split == "train":
            cuts = CutSet.from_manifests(recordings=recordings, supervisions=supervisions)
            cuts.to_file(Path(root, "cuts_train.jsonl"))
        expected.update({r["ID"]: r for r in split_rows})
    Path(root, "manifests.json").write_text(json.dumps(manifests))
    return manifests, expected
