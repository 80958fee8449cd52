"""Tests of manifest reading and writing."""

import pytest

from speechkd.data.manifest import COLUMNS, ManifestError, read_manifest, write_manifest

HEADER = ",".join(COLUMNS)


def row(utt_id="en-m3r160p45-00000", duration=1.25, wrd="twenty three", **extra):
    return {"ID": utt_id, "duration": duration,
            "wav": f"$data_root/audio/clean/en/{utt_id}.flac", "spk_id": "m3r160p45",
            "lang": "en", "domain": "clean", "wrd": wrd, **extra}


def write_text(tmp_path, text, name="bad.csv"):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_roundtrip_is_exact_and_byte_stable(tmp_path):
    rows = [row(), row("en-f1r150p30-00001", 2.0, "la vit e una question, di cul", speed="1.1")]
    write_manifest(tmp_path / "a.csv", rows)
    write_manifest(tmp_path / "b.csv", rows)
    assert (tmp_path / "a.csv").read_bytes() == (tmp_path / "b.csv").read_bytes()
    text = (tmp_path / "a.csv").read_text()
    assert text.splitlines()[0] == HEADER + ",speed"
    assert "\r" not in text and "1.2500" in text
    back = read_manifest(tmp_path / "a.csv")
    assert back[1]["wrd"] == "la vit e una question, di cul"
    assert back[0]["duration"] == 1.25 and back[1]["speed"] == "1.1"
    assert [r["ID"] for r in back] == [r["ID"] for r in rows]


def test_write_refuses_rows_missing_columns(tmp_path):
    bad = row()
    del bad["spk_id"]
    with pytest.raises(ManifestError, match="spk_id"):
        write_manifest(tmp_path / "x.csv", [bad])


def test_missing_column_names_file_line_and_column(tmp_path):
    path = write_text(tmp_path, "ID,duration,wav,spk_id,lang,wrd\nu1,1.0,a.flac,s,en,hi\n")
    with pytest.raises(ManifestError, match=rf"{path}:1: header lacks column\(s\) domain"):
        read_manifest(path)


def test_non_numeric_duration_names_file_and_line(tmp_path):
    path = write_text(tmp_path, f"{HEADER}\nu1,1.0,a.flac,s,en,clean,hi\n"
                                f"u2,long,b.flac,s,en,clean,ho\n")
    with pytest.raises(ManifestError, match=rf"{path}:3: duration 'long' of 'u2' is not a number"):
        read_manifest(path)


@pytest.mark.parametrize("duration", ["0", "-1.5", "nan", "inf"])
def test_non_positive_duration_is_rejected(tmp_path, duration):
    path = write_text(tmp_path, f"{HEADER}\nu1,{duration},a.flac,s,en,clean,hi\n")
    with pytest.raises(ManifestError, match=rf"{path}:2: duration"):
        read_manifest(path)


def test_empty_wrd_only_when_allowed(tmp_path):
    path = write_text(tmp_path, f"{HEADER}\nu1,1.0,a.flac,s,en,clean,hi\n"
                                f"u2,1.0,b.flac,s,en,clean,\n")
    with pytest.raises(ManifestError, match=rf"{path}:3: empty wrd for 'u2'"):
        read_manifest(path)
    assert read_manifest(path, allow_empty_wrd=True)[1]["wrd"] == ""


def test_wrong_field_count_and_duplicates(tmp_path):
    path = write_text(tmp_path, f"{HEADER}\nu1,1.0,a.flac,s,en,clean\n")
    with pytest.raises(ManifestError, match=rf"{path}:2: 6 fields, header has 7"):
        read_manifest(path)
    path = write_text(tmp_path, f"{HEADER}\nu1,1.0,a.flac,s,en,clean,a\n"
                                f"u1,1.0,a.flac,s,en,clean,b\n", name="dup.csv")
    with pytest.raises(ManifestError, match=rf"{path}:3: duplicate ID 'u1'"):
        read_manifest(path)


def test_empty_file_is_an_error(tmp_path):
    path = write_text(tmp_path, "")
    with pytest.raises(ManifestError, match=rf"{path}:1: empty file"):
        read_manifest(path)
