"""SpeechBrain-style CSV manifests: ``ID,duration,wav,spk_id,lang,domain,wrd``.

``duration`` is in seconds; ``wav`` is usually written relative to the
corpus folder as ``$data_root/audio/<domain>/<lang>/<ID>.flac`` and resolved
by SpeechBrain's ``replacements={"data_root": ...}``.

Example
-------
>>> rows = [{"ID": "en-m3r160p45-00000", "duration": 1.25,
...          "wav": "$data_root/audio/clean/en/en-m3r160p45-00000.flac",
...          "spk_id": "m3r160p45", "lang": "en", "domain": "clean", "wrd": "twenty three"}]
>>> import tempfile, os
>>> path = os.path.join(tempfile.mkdtemp(), "train.csv")
>>> write_manifest(path, rows)
>>> read_manifest(path)[0]["duration"]
1.25
"""

from __future__ import annotations

import csv
import math
import os
from pathlib import Path

COLUMNS = ("ID", "duration", "wav", "spk_id", "lang", "domain", "wrd")
"""Columns every manifest has, in the order they are written."""


class ManifestError(ValueError):
    """A manifest is malformed; the message starts with ``<file>:<line>:``."""


def format_duration(seconds: float) -> str:
    """Duration as written to manifests: seconds with 4 decimals."""
    return f"{float(seconds):.4f}"


def write_manifest(path, rows) -> None:
    """Write ``rows`` (dicts with at least :data:`COLUMNS`) as a CSV manifest.

    The file is written to a temporary name and renamed, so a killed writer
    never leaves half a manifest. Extra keys become extra columns after the
    standard ones, in first-seen order. Line ends are ``\\n`` and durations
    have 4 decimals, so equal rows give byte-identical files.

    Parameters
    ----------
    path : str or Path
        Output CSV file.
    rows : iterable of dict
        One dict per utterance.
    """
    rows = list(rows)
    extra = []
    for row in rows:
        missing = [column for column in COLUMNS if column not in row]
        if missing:
            raise ManifestError(f"{path}: row {row.get('ID', row)!r} lacks columns {missing}")
        extra += [key for key in row if key not in COLUMNS and key not in extra]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")  # one per process: concurrent writers never collide
    with open(tmp, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(COLUMNS + tuple(extra))
        for row in rows:
            values = dict(row, duration=format_duration(row["duration"]))
            writer.writerow([values.get(column, "") for column in COLUMNS + tuple(extra)])
    os.replace(tmp, path)


def read_manifest(path, allow_empty_wrd: bool = False) -> list[dict]:
    """Read and validate a CSV manifest.

    Parameters
    ----------
    path : str or Path
        CSV file with header ``ID,duration,wav,spk_id,lang,domain,wrd`` (any
        order; extra columns are kept).
    allow_empty_wrd : bool
        Accept rows with an empty transcript (unlabelled data).

    Returns
    -------
    list of dict
        One dict per row; ``duration`` is a float, everything else a string.

    Raises
    ------
    ManifestError
        Naming the file and line: missing column, wrong number of fields,
        empty or duplicate ID, non-numeric or non-positive duration, empty
        wav, or empty wrd when not allowed.
    """
    path = Path(path)
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.reader(handle)
        header = next(reader, None)
        if header is None:
            raise ManifestError(f"{path}:1: empty file, expected header {','.join(COLUMNS)}")
        missing = [column for column in COLUMNS if column not in header]
        if missing:
            raise ManifestError(f"{path}:1: header lacks column(s) {', '.join(missing)} "
                                f"(expected {','.join(COLUMNS)}, got {','.join(header)})")
        rows, seen = [], set()
        for fields in reader:
            line = reader.line_num
            if not fields:
                continue
            rows.append(_check_row(dict(zip(header, fields)), len(fields), len(header),
                                   f"{path}:{line}", seen, allow_empty_wrd))
    return rows


def _check_row(row: dict, n_fields: int, n_columns: int, where: str, seen: set,
               allow_empty_wrd: bool) -> dict:
    if n_fields != n_columns:
        raise ManifestError(f"{where}: {n_fields} fields, header has {n_columns}")
    if not row["ID"]:
        raise ManifestError(f"{where}: empty ID")
    if row["ID"] in seen:
        raise ManifestError(f"{where}: duplicate ID {row['ID']!r}")
    seen.add(row["ID"])
    try:
        duration = float(row["duration"])
    except ValueError:
        raise ManifestError(f"{where}: duration {row['duration']!r} of {row['ID']!r} "
                            "is not a number") from None
    if not math.isfinite(duration) or duration <= 0:
        raise ManifestError(f"{where}: duration {row['duration']!r} of {row['ID']!r} "
                            "must be a positive number of seconds")
    if not row["wav"]:
        raise ManifestError(f"{where}: empty wav path for {row['ID']!r}")
    if not row["wrd"].strip() and not allow_empty_wrd:
        raise ManifestError(f"{where}: empty wrd for {row['ID']!r} "
                            "(pass allow_empty_wrd=True for unlabelled data)")
    row["duration"] = duration
    return row
