#!/usr/bin/env python3
"""Real people's voices from Debian: do a few minutes of recorded words teach a model to hear people?

KDE's educational data packages ship short recordings of real people, one
per language: ``klettres-data`` (GPL-2+) the syllables and short words of
KLettres (``<lang>/sounds.xml`` names each clip's text: ``ba``, ``car``,
``БА``), ``ktuberling-data`` (GPL-2+) the object names of KTuberling (the
English theme names each clip by its word; Spanish files are named by
theirs). Neither is a synthesiser: they cannot say number words, so they
can only join the train set as they are. This benchmark builds one
:mod:`bench_real_speech` variant's corpus, trains it, then trains it again
with the recorded clips of its languages added to train (``--copies``
augmented copies of each, through the corpus's augmentation: the
``telephone`` preset by default, seeded per clip), and prints both rows
of the real-speech table. Clips whose text has a character the corpus's
train set lacks (``k``, ``ñ``: the CTC inventory is the corpus's), sounds
rather than words (``aw``, ``th``) and one-letter texts are left out and
listed.

    apt-get download klettres-data ktuberling-data && mkdir kde && for f in *.deb; do dpkg-deb -x $f kde; done
    nice python benchmarks/bench_recorded_clips.py --share kde/usr/share --epochs 30 --out /tmp/rec \\
        --variant 'pico-telephone={corpus_engines: [espeak, pico], corpus_augment: {preset: telephone}}'
"""

import argparse
import csv
import json
import os
import re
import shutil
import sys
from pathlib import Path

import numpy as np
import soundfile as sf
import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from bench_real_speech import table, train_and_evaluate

from speechkd.data.augment import Augmentation
from speechkd.data.corpus import to_pcm16, write_flac
from speechkd.data.voices.base import SAMPLE_RATE

SOUNDS = ("aw", "ch", "th")
"""KLettres' English 'syllables' that are sounds, not words (left out in any language)."""

KTUBERLING_SPELLING = {"palmtree": "palm tree", "fallingstar": "falling star", "sphynx": "sphinx",
                       "broccolli": "broccoli", "gafasdesol": "gafas de sol"}
"""KTuberling's file or key names that are not the word as written."""


def recorded_clips(share: Path, languages) -> list[tuple[str, str, str, Path]]:
    """``(lang, source, text, path)`` of every recorded clip of ``languages`` the packages ship.

    KLettres' syllables come with their text (``name`` in ``sounds.xml``);
    KTuberling's objects with an English key, which is the spoken word only in
    the English theme (other themes name the file after their word:
    Spanish ``ojo.wav``; German and others reuse the English key, so they
    are left out).
    """
    clips = []
    for lang in languages:
        sounds = share / "klettres" / lang / "sounds.xml"
        if sounds.exists():
            for name, file in re.findall(r'name="([^"]*)"\s+file="([^"]*/syllab/[^"]*)"', sounds.read_text()):
                clips.append((lang, "klettres", name.lower(), share / "klettres" / file))
        theme = share / "ktuberling" / "sounds" / f"{lang}.soundtheme"
        if theme.exists():
            for key, file in re.findall(r'name="([^"]*)"\s+file="([^"]*)"', theme.read_text()):
                stem = Path(file).stem
                if lang != "en" and stem == key:
                    continue  # the English key, not this language's word
                word = stem.split("_", 1)[-1]
                clips.append((lang, "ktuberling", KTUBERLING_SPELLING.get(word, word),
                              share / "ktuberling" / "sounds" / file))
    return list(dict.fromkeys(clips))


def add_clips(data_folder: Path, clips, copies: int, augment, seed: int = 0) -> dict:
    """Append ``copies`` augmented copies of each usable clip to ``data_folder``'s train.csv.

    Returns
    -------
    dict
        ``{"clips", "rows", "minutes", "left_out"}``; ``left_out`` the texts not used.
    """
    import torch
    import torchaudio

    with open(data_folder / "train.csv", newline="") as fin:
        rows = list(csv.DictReader(fin))
    inventory = {char for row in rows for char in row["wrd"]}
    used, left_out = [], []
    for lang, source, text, path in clips:
        usable = (path.exists() and set(text) <= inventory and len(text.replace(" ", "")) > 1
                  and text not in SOUNDS)
        (used if usable else left_out).append((lang, source, text, path))
    new_rows = []
    for index, (lang, source, text, path) in enumerate(used):
        wav, rate = sf.read(str(path), dtype="float32", always_2d=True)
        wav = torch.from_numpy(wav.mean(axis=1))
        if rate != SAMPLE_RATE:
            wav = torchaudio.functional.resample(wav, rate, SAMPLE_RATE)
        wav = wav.numpy()
        wav = 0.5 * wav / max(1e-4, float(np.abs(wav).max()))
        for copy in range(copies):
            utt_id = f"{lang}-rec-{source}-{index:03d}-c{copy}"
            audio = augment.apply(wav, SAMPLE_RATE, seed, utt_id) if augment is not None else wav
            relative = f"audio/recorded/{lang}/{utt_id}.flac"
            (data_folder / relative).parent.mkdir(parents=True, exist_ok=True)
            write_flac(data_folder / relative, to_pcm16(audio))
            new_rows.append({**dict.fromkeys(rows[0], ""), "ID": utt_id, "duration": f"{len(audio) / SAMPLE_RATE:.3f}",
                             "wav": f"$data_root/{relative}", "spk_id": f"{source}-{lang}", "lang": lang,
                             "domain": "clean", "wrd": text, "engine": "recorded", "voice": source})
    with open(data_folder / "train.csv", "a", newline="") as fout:
        csv.DictWriter(fout, fieldnames=list(rows[0])).writerows(new_rows)
    (data_folder / "train.csv.checked.json").unlink(missing_ok=True)
    return {"clips": len(used), "rows": len(new_rows),
            "minutes": sum(float(row["duration"]) for row in new_rows) / 60,
            "left_out": sorted({text for _, _, text, _ in left_out})}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--share", default="/usr/share", help="where klettres/ and ktuberling/ are")
    parser.add_argument("--variant", required=True, help="NAME=YAML corpus overrides (bench_real_speech.py)")
    parser.add_argument("--copies", type=int, default=3, help="augmented copies of each clip")
    parser.add_argument("--augment", default="telephone", help="augmentation of the clips (preset name)")
    parser.add_argument("--recipe", default="hparams/ctc/tdnn.yaml")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--size", default="small")
    parser.add_argument("--languages", default="en,es")
    parser.add_argument("--real", default=os.path.join(ROOT, "..", "shared", "realspeech-dev", "dev.csv"))
    parser.add_argument("--out", default="results/bench_recorded_clips")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    args.languages = args.languages.split(",")
    args.recipe_overrides = {}
    name, _, overrides = args.variant.partition("=")
    overrides = yaml.safe_load(overrides) or {}
    if not os.path.exists(args.real):
        raise SystemExit(f"{args.real}: no real-speech manifest (give --real)")
    clips = recorded_clips(Path(args.share), args.languages)
    if not clips:
        raise SystemExit(f"{args.share}: no klettres/ or ktuberling/ recordings for {args.languages} "
                         "(apt-get install klettres-data ktuberling-data, or --share)")
    rows = {}
    for variant in (name, f"{name}+recorded"):
        if variant != name:
            source, target = Path(args.out, "data", name), Path(args.out, "data", variant)
            settings = {"share": str(Path(args.share).resolve()), "copies": args.copies, "augment": args.augment}
            marker = target / "recorded.json"
            if not marker.exists() or json.loads(marker.read_text()) != settings:  # absent, half-made or other settings
                shutil.rmtree(target, ignore_errors=True)
                shutil.copytree(source, target)
                added = add_clips(target, clips, args.copies, Augmentation.from_config(args.augment))
                marker.write_text(json.dumps(settings))
                print(f"{variant}: {added['clips']} recorded clips x {args.copies} copies = {added['rows']} train "
                      f"rows, {added['minutes']:.1f} min; left out: {', '.join(added['left_out'])}")
        rows[variant] = train_and_evaluate(variant, overrides, args)
    print(f"Recipe `{args.recipe}`, {args.epochs} epochs, corpus `{args.size}` ({','.join(args.languages)})\n")
    print(table(rows, sorted({lang for _, real in rows.values() for lang in real["intervals"]["per_lang"]})))


if __name__ == "__main__":
    main()
