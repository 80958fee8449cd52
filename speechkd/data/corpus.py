"""Build the embedded offline multilingual speech corpus with espeak-ng, festival and flite.

Two tasks: ``numbers`` (spoken numbers, digit strings and dates in en de es
it fr ru uk) and ``sentences`` (real sentences from Debian's fortune cookie
packages in en de es it ru cs pl eo bg). Three sizes: ``tiny`` (tests, a few
seconds), ``small`` (quickstart, tens of minutes, under a minute on two
cores) and ``full`` (tens of hours, parallel, progress bar).

Pseudo-speakers are voices with a speaking rate and pitch, drawn per
language from every installed engine (:mod:`speechkd.data.voices`): espeak-ng
variants, and where a language has them, festival and flite voices of
recorded people (en, it, ru; es through festival's English voices by phone
mapping, :mod:`speechkd.data.voices.phones`). About half of a split's speakers are such
voices when the language has some for that split. Train, dev and test use
disjoint espeak-ng variants and disjoint recorded people (a person's festival
and flite voices stay in one split; with three or more people in a language,
the last goes to test, with four or more the one before it to dev, the rest
to train; a person keeps the split of the language they were recorded in in
every language), so test speakers are unseen.
Every utterance depends only on ``(task, size, seed, language, split,
index)``: the builder synthesizes a deterministic stream per language and
split and keeps its shortest prefix reaching the requested minutes. Equal
options give byte-identical manifests and audio; a rebuild skips files that
exist, so a killed build resumes.

Layout of ``out``::

    corpus.json                           summary (see build_corpus)
    audio/<domain>/<lang>/<ID>.flac       16 kHz mono FLAC, PCM_16
    audio/aug-<tag>/<domain>/<lang>/...   the same for augmented splits (tag: hash of the settings)
    augment.csv                           per augmented utterance: effects and parameters
    train.csv dev.csv test.csv            clean, labelled
    unlabelled.csv                        when unlabelled minutes are requested
    <split>_<domain>.csv                  same IDs and order as <split>.csv

Manifests carry two columns after SpeechBrain's: ``engine`` and ``voice``
(the engine's voice name) of each utterance's speaker.

Command line (registered by :func:`add_cli`)::

    speechkd corpus build --task numbers --size small --out data/numbers_small \\
        --lang-minutes uk=2 --unlabelled-minutes uk=10 --domains clean,telephone,noise \\
        --engines espeak,festival,flite --augment full

``--augment`` (``augment=`` of :func:`build_corpus`) draws a chain of
acoustic effects per utterance of the train and unlabelled splits
(:mod:`speechkd.data.augment`); the domains of an augmented utterance are
made from its augmented audio.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from speechkd.data.augment import Augmentation, write_augment_manifest
from speechkd.data.domains import DEFAULT_OPTIONS, apply_domain, parse_domain
from speechkd.data.manifest import write_manifest
from speechkd.data.voices import ENGINES, recorded_voices, resolve_engines
from speechkd.data.voices.base import SAMPLE_RATE, EngineVoice, Voice

BUILDER_VERSION = 3
"""Bumped whenever the same options would give different audio or text."""

AUGMENT_MANIFEST = "augment.csv"
"""Side file of an augmented corpus: ``ID,split,effects,params`` (see augment.py)."""

SPLITS = ("train", "dev", "test")
ID_BASES = {"train": 0, "unlabelled": 50000, "dev": 80000, "test": 90000}
"""Offset of each split's utterance numbers, so IDs never collide between splits."""

SPLIT_VARIANTS = {
    "train": ("m1", "f1", "m2", "Annie", "m3", "linda", "m4", "steph", "m5", "m8"),
    "dev": ("m6", "f4"),
    "test": ("m7", "aunty"),
}
"""espeak-ng voice variants of each split; disjoint, so test speakers are unseen.

Variants with breath noise (f2, f3, f5, ...) are left out: espeak-ng's breath
generator does not give the same samples twice, which would break the
byte-identical rebuilds."""

RATES = tuple(range(130, 215, 5))
PITCHES = tuple(range(25, 80, 5))


@dataclass(frozen=True)
class SizeSpec:
    """Per-language minutes of audio per split and speakers per split."""

    train_minutes: float
    dev_minutes: float
    test_minutes: float
    speakers: dict


SIZES = {
    "tiny": SizeSpec(0.4, 0.1, 0.1, {"train": 3, "dev": 2, "test": 2, "unlabelled": 3}),
    "small": SizeSpec(5.0, 1.0, 1.0, {"train": 8, "dev": 2, "test": 2, "unlabelled": 72}),
    "full": SizeSpec(180.0, 10.0, 10.0, {"train": 45, "dev": 8, "test": 8, "unlabelled": 270}),
}
"""``speakers["unlabelled"]``: pseudo-speakers of the transfer set, new ones of the train
split's voices (other rates and pitches; nine times train's at size small, six times at full, as
many at tiny): a transfer set read by the train speakers teaches the student less about other
voices, and more of them teach it more. At size small, 15 minutes per language read by 72
speakers instead of 24 gave a distilled student 3.6 [1.2, 6.1] WER points better, 144 no better
than 72 (benchmarks/RESULTS.md, "Issue 12: the main job in 15 minutes"); full's is unmeasured."""

EXPECTED_SECONDS = {"numbers": 1.9, "sentences": 3.5}
"""Mean utterance duration guessed before anything is synthesized (first round only)."""


def task_languages(task: str) -> tuple[str, ...]:
    """Languages a task supports, in their canonical order."""
    if task == "numbers":
        from speechkd.data.numbers import NUMBER_LANGUAGES
        return NUMBER_LANGUAGES
    if task == "sentences":
        from speechkd.data.sentences import SENTENCE_LANGUAGES
        return SENTENCE_LANGUAGES
    raise ValueError(f"unknown corpus task {task!r}; tasks are numbers, sentences")


def stable_rng(*parts) -> np.random.Generator:
    """Generator seeded by a SHA-256 of ``parts`` (never Python's salted ``hash``)."""
    key = "\x1f".join(str(part) for part in parts).encode("utf-8")
    return np.random.default_rng(int.from_bytes(hashlib.sha256(key).digest()[:8], "little"))


def recorded_speaker_splits(voices: list[EngineVoice]) -> dict[str, str]:
    """Split of each recorded person: train first; the last of three or more to test,
    the one before it to dev when there are four or more."""
    people = list(dict.fromkeys(voice.speaker for voice in voices))
    splits = {person: "train" for person in people}
    if len(people) >= 3:
        splits[people[-1]] = "test"
    if len(people) >= 4:
        splits[people[-2]] = "dev"
    return splits


def person_splits(engines) -> dict[str, str]:
    """Split of every recorded person of ``engines``, decided per language among the
    voices recorded in it (:func:`recorded_speaker_splits`).

    A voice that speaks another language by phone mapping (festival's ``kal-es``,
    ``recorded_lang="en"``) does not take part, so its person lands in the split
    they have in their own language, in every language.
    """
    native = [voice for name in engines for voice in ENGINES[name][1] if not voice.recorded_lang]
    splits: dict[str, str] = {}
    for lang in dict.fromkeys(voice.lang for voice in native):
        splits.update(recorded_speaker_splits(
            [voice for voice in recorded_voices(lang, engines) if not voice.recorded_lang]))
    return splits


def _espeak_voices(size: str, seed: int, split: str, count: int,
                   taken: tuple[Voice, ...] = ()) -> list[Voice]:
    """``count`` distinct espeak-ng pseudo-speakers of ``split``'s variants, none of ``taken``;
    the unlabelled split draws from train's variants."""
    rng = stable_rng("speakers", size, seed, split)
    variants = SPLIT_VARIANTS["train" if split == "unlabelled" else split]
    per_variant = -(-count // len(variants))  # variants are taken in turn
    free = min(len(RATES) * len(PITCHES) - sum(v.variant == variant for v in taken) for variant in variants)
    if per_variant > free:
        raise ValueError(f"{count} {split} speakers need {per_variant} rate/pitch pairs of each espeak-ng "
                         f"variant; {free} are free")
    voices: list[Voice] = []
    while len(voices) < count:
        voice = Voice(variants[len(voices) % len(variants)],
                      int(rng.choice(RATES)), int(rng.choice(PITCHES)))
        if voice not in voices and voice not in taken:
            voices.append(voice)
    return voices


def _recorded_voices(size: str, seed: int, lang: str, split: str, pool: list[EngineVoice],
                     count: int, taken: tuple[Voice, ...] = ()) -> list[Voice]:
    """``count`` distinct pseudo-speakers from ``pool``, none of ``taken``, taking its voices
    in turn; a voice whose every rate and pitch is used is passed over (Italian: festival's
    ``pc`` has one pitch, so ten pseudo-speakers, beside Pico's woman)."""
    rng = stable_rng("recorded speakers", size, seed, lang, split)

    def used(base, voices):
        return sum(voice.variant == base.variant and voice.engine == base.engine for voice in voices)

    count = min(count, sum(len(v.rates) * len(v.pitches) - used(v, taken) for v in pool))
    voices: list[Voice] = []
    turn = 0
    while len(voices) < count:
        base = pool[turn % len(pool)]
        if used(base, voices) + used(base, taken) == len(base.rates) * len(base.pitches):
            turn += 1
            continue
        voice = Voice(base.variant, int(rng.choice(base.rates)), int(rng.choice(base.pitches)),
                      base.engine)
        if voice not in voices and voice not in taken:
            voices.append(voice)
            turn += 1
    return voices


def split_speakers(size: str, seed: int, lang: str, engines=("espeak",)
                   ) -> dict[str, list[Voice]]:
    """Pseudo-speakers of each split for one language.

    With ``engines=("espeak",)`` these are the espeak-ng speakers every
    language had before other engines existed. Otherwise, where the split has
    recorded voices of ``lang``, half its speakers (rounded down) are those
    voices and they alternate with espeak-ng's in the list. A recorded person
    is in the same split in every language (:func:`person_splits`). The
    unlabelled split (the transfer set) has new pseudo-speakers of the train
    split's voices and people: other rates and pitches, never a dev or test voice.
    """
    recorded_engines = [name for name in engines if name != "espeak"]
    pool = recorded_voices(lang, recorded_engines)
    person_split = person_splits(recorded_engines)
    speakers: dict[str, list[Voice]] = {}
    for split in (*SPLITS, "unlabelled"):
        count = SIZES[size].speakers[split]
        split_of_voices = "train" if split == "unlabelled" else split
        taken = tuple(speakers.get("train", ())) if split == "unlabelled" else ()
        own = [voice for voice in pool if person_split[voice.speaker] == split_of_voices]
        recorded = (_recorded_voices(size, seed, lang, split, own, count // 2, taken)
                    if own else [])
        espeak = (_espeak_voices(size, seed, split, count - len(recorded), taken)
                  if "espeak" in engines else [])
        speakers[split] = [voice for pair in zip(espeak, recorded) for voice in pair] \
            + espeak[len(recorded):] + recorded[len(espeak):]
        if not speakers[split]:
            raise ValueError(f"no {split} speakers for {lang} with engines {list(engines)}: "
                             f"espeak-ng speaks every language, keep it among the engines")
    return speakers


@dataclass(frozen=True)
class Utterance:
    """One planned utterance: everything the synthesis worker needs."""

    utt_id: str
    lang: str
    split: str
    voice: Voice
    text: str


class Planner:
    """Deterministic utterance streams: ``utterance(lang, split, n)`` depends on nothing else."""

    def __init__(self, task: str, size: str, seed: int, engines=("espeak",)):
        self.task, self.size, self.seed, self.engines = task, size, seed, tuple(engines)
        self._speakers: dict = {}
        self._orders: dict = {}

    def speakers(self, lang: str) -> dict[str, list[Voice]]:
        """``{split: [Voice, ...]}`` of ``lang`` (see :func:`split_speakers`)."""
        if lang not in self._speakers:
            self._speakers[lang] = split_speakers(self.size, self.seed, lang, self.engines)
        return self._speakers[lang]

    def text(self, lang: str, split: str, index: int) -> str:
        from speechkd.text import normalize

        if self.task == "numbers":
            from speechkd.data.numbers import number_prompt
            prompt = number_prompt(lang, stable_rng("text", self.task, self.seed, lang, split,
                                                    index))
            return normalize(prompt, lang)
        from speechkd.data.sentences import sentence_pools
        pool = sentence_pools(lang)[split]
        key = (lang, split)
        if key not in self._orders:
            self._orders[key] = stable_rng("order", self.task, self.seed, lang, split
                                           ).permutation(len(pool))
        return pool[self._orders[key][index % len(pool)]]

    def utterance(self, lang: str, split: str, index: int) -> Utterance:
        capacity = min(base for base in ID_BASES.values() if base > ID_BASES[split]) \
            if split != "test" else 100000
        number = ID_BASES[split] + index
        if number >= capacity:
            raise ValueError(f"too many {split} utterances for {lang} (more than "
                             f"{capacity - ID_BASES[split]}); ask for fewer minutes")
        speakers = self.speakers(lang)[split]
        voice = speakers[index % len(speakers)]
        return Utterance(f"{lang}-{voice.name}-{number:05d}", lang, split, voice,
                         self.text(lang, split, index))


def audio_folder(domain: str, augment_tag: str | None = None) -> str:
    """Folder under ``audio/`` of a domain; augmented audio has one per augmentation setting."""
    return domain if augment_tag is None else f"aug-{augment_tag}/{domain}"


def audio_path(out: Path, domain: str, lang: str, utt_id: str, augment_tag: str | None = None
               ) -> Path:
    """Where an utterance's audio lives in the corpus folder."""
    return Path(out) / "audio" / audio_folder(domain, augment_tag) / lang / f"{utt_id}.flac"


def split_augmentation(augment: Augmentation | None, split: str) -> Augmentation | None:
    """The augmentation applied to ``split`` (None when the split stays as synthesized)."""
    return augment if augment is not None and split in augment.splits else None


def to_pcm16(wav: np.ndarray) -> np.ndarray:
    """Float audio to int16, scaled down first if it would clip."""
    peak = float(np.max(np.abs(wav))) if len(wav) else 0.0
    if peak > 32767 / 32768:
        wav = wav * (0.99 / peak)
    return np.clip(np.round(wav * 32768.0), -32768, 32767).astype(np.int16)


def write_flac(path: Path, pcm: np.ndarray) -> None:
    """Write int16 samples as 16 kHz mono FLAC through a temporary name."""
    import soundfile as sf

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".part")
    sf.write(tmp, pcm, SAMPLE_RATE, format="FLAC", subtype="PCM_16")
    os.replace(tmp, path)


_SYNTHESIZERS: dict = {}


def build_utterance(job: tuple) -> tuple[str, int]:
    """Synthesize one utterance and its domain versions unless their files exist.

    Parameters
    ----------
    job : tuple
        ``(utt_id, lang, (variant, rate, pitch, engine), text, domains, out, seed, augment)``,
        ``augment`` an :class:`~speechkd.data.augment.Augmentation` or None.

    Returns
    -------
    tuple
        ``(utt_id, n_samples)`` of the clean audio.
    """
    import soundfile as sf

    from speechkd.data.voices import make_synthesizer

    utt_id, lang, voice, text, domains, out, seed, augment = job
    tag = augment.tag if augment is not None else None
    clean_path = audio_path(out, "clean", lang, utt_id, tag)
    clean = None
    if clean_path.exists():
        n_samples = sf.info(str(clean_path)).frames
    else:
        voice = Voice(*voice)
        if voice.engine not in _SYNTHESIZERS:
            _SYNTHESIZERS[voice.engine] = make_synthesizer(voice.engine)
        wav = _SYNTHESIZERS[voice.engine].synthesize(text, lang, voice)
        if augment is not None:
            wav = augment.apply(wav, SAMPLE_RATE, seed, utt_id)
        pcm = to_pcm16(wav)
        write_flac(clean_path, pcm)
        clean, n_samples = pcm.astype(np.float32) / 32768.0, len(pcm)
    for domain in domains:
        path = audio_path(out, domain, lang, utt_id, tag)
        if domain == "clean" or path.exists():
            continue
        if clean is None:
            clean = sf.read(str(clean_path), dtype="float32")[0]
        write_flac(path, to_pcm16(apply_domain(clean, SAMPLE_RATE, domain, seed, utt_id)))
    return utt_id, n_samples


class _Runner:
    """Runs synthesis jobs in this process or in a pool of spawned worker processes."""

    def __init__(self, workers: int, progress: bool, description: str):
        self.workers, self.progress, self.description = workers, progress, description
        self._pool = None

    def __enter__(self):
        if self.workers > 1:
            import multiprocessing
            self._pool = multiprocessing.get_context("spawn").Pool(self.workers)
        return self

    def __exit__(self, *exc):
        if self._pool is not None:
            self._pool.terminate() if exc[0] else self._pool.close()
            self._pool.join()

    def run(self, jobs: list) -> dict[str, int]:
        from tqdm import tqdm

        if self._pool is None:
            results = map(build_utterance, jobs)
        else:
            chunksize = max(1, min(16, len(jobs) // (4 * self.workers)))
            results = self._pool.imap_unordered(build_utterance, jobs, chunksize=chunksize)
        bar = tqdm(results, total=len(jobs), desc=self.description, unit="utt",
                   disable=not self.progress)
        return dict(bar)


def _options(task, size, seed, languages, lang_minutes, unlabelled_minutes, domains,
             engines, augment: Augmentation | None = None) -> dict:
    """Everything that shapes the corpus, fingerprinted; ``voices`` lists the installed
    festival and flite voices used (``engine:voice``), which can differ between machines."""
    spec = SIZES[size]
    targets = {}
    for lang in languages:
        minutes = {"train": lang_minutes.get(lang, spec.train_minutes),
                   "dev": spec.dev_minutes, "test": spec.test_minutes}
        if lang in unlabelled_minutes:
            minutes["unlabelled"] = unlabelled_minutes[lang]
        targets[lang] = minutes
    return {
        "builder_version": BUILDER_VERSION, "task": task, "size": size, "seed": seed,
        "languages": list(languages), "domains": list(domains), "engines": list(engines),
        "voices": [f"{voice.engine}:{voice.variant}" for lang in languages
                   for voice in recorded_voices(lang, engines)],
        "minutes": targets, "domain_options": {k: list(v) if isinstance(v, tuple) else v
                                               for k, v in DEFAULT_OPTIONS.items()},
        # only when set, so an unaugmented corpus keeps its fingerprint from before augment.py
        **({"augment": augment.describe()} if augment is not None else {}),
        # transfer sets of train's own pseudo-speakers (before) have another fingerprint
        **({"unlabelled_speakers": spec.speakers["unlabelled"]}
           if any(minutes > 0 for minutes in unlabelled_minutes.values()) else {}),
    }


def _fingerprint(options: dict) -> str:
    return hashlib.sha256(json.dumps(options, sort_keys=True).encode()).hexdigest()[:16]


def _check_same_content(out: Path, options: dict) -> None:
    """Refuse to mix audio of different (task, size, seed) in one folder.

    A folder an older builder made with the same task, size and seed is
    emptied of its corpus (audio, manifests, summary) and rebuilt, with a
    warning: the same options now give other audio, which must not be reused.
    Engines and voices may change between builds into one folder (e.g.
    ``corpus_engines: [espeak]`` after a build with every engine): utterance
    IDs name the engine, voice, rate and pitch, so their audio never collides,
    and the manifests and fingerprint are rewritten for the engines asked.
    """
    marker = out / ".corpus-build.json"
    content = {key: options[key] for key in ("builder_version", "task", "size", "seed")}
    if marker.exists():
        previous = json.loads(marker.read_text())
        differing = [key for key in content if previous.get(key) != content[key]]
        if _is_older_build(previous, content, differing):
            _remove_old_build(out, previous["builder_version"])
            differing = []
        if differing:
            raise ValueError(
                f"{out} holds a corpus built with other options ("
                + ", ".join(f"{key}: {previous.get(key)!r} there, {content[key]!r} asked"
                            for key in differing)
                + "); choose another --out folder or delete it")
        if marker.exists():
            return
    out.mkdir(parents=True, exist_ok=True)
    marker.write_text(json.dumps(content, indent=2) + "\n")


def _is_older_build(previous: dict, content: dict, differing: list) -> bool:
    """Whether only the builder version (and what it did not record yet) differ."""
    older = isinstance(previous.get("builder_version"), int) and \
        previous["builder_version"] < content["builder_version"]
    return older and set(differing) <= {"builder_version"} | set(content).difference(previous)


def _remove_old_build(out: Path, version: int) -> None:
    """Delete what an older builder wrote in ``out``: audio, manifests, summary, marker."""
    import shutil
    import warnings

    warnings.warn(f"{out} holds a corpus of builder version {version} (now "
                  f"{BUILDER_VERSION}): its audio would differ, so it is deleted and rebuilt",
                  stacklevel=3)
    shutil.rmtree(out / "audio", ignore_errors=True)
    for path in [*out.glob("*.csv"), out / "corpus.json", out / ".corpus-build.json"]:
        path.unlink(missing_ok=True)


def _is_complete(out: Path, fingerprint: str) -> dict | None:
    from speechkd.data.manifest import read_manifest

    summary_path = out / "corpus.json"
    if not summary_path.exists():
        return None
    summary = json.loads(summary_path.read_text())
    if summary.get("fingerprint") != fingerprint:
        return None
    if summary.get("augment") and not (out / AUGMENT_MANIFEST).exists():
        return None
    for name in summary["manifests"]:
        if not (out / name).exists():
            return None
        for row in read_manifest(out / name, allow_empty_wrd=True):
            if not Path(row["wav"].replace("$data_root", str(out))).exists():
                return None
    return summary


def _synthesize_streams(planner: Planner, targets: dict, domains, out: Path, seed: int,
                        runner: _Runner, augment: Augmentation | None = None) -> dict:
    """Synthesize each (lang, split) stream until its prefix reaches its target seconds.

    Returns
    -------
    dict
        ``{(lang, split): [(Utterance, n_samples), ...]}``, the kept prefix.
    """
    done = {key: [] for key in targets}
    expected = EXPECTED_SECONDS[planner.task]
    while True:
        jobs, planned = [], {}
        for key, target_s in targets.items():
            have = sum(n for _, n in done[key]) / SAMPLE_RATE
            if have >= target_s:
                continue
            mean = (sum(n for _, n in done[key]) / SAMPLE_RATE / len(done[key])
                    if done[key] else expected)
            count = math.ceil((target_s - have) / mean * 1.1) + 1
            start = len(done[key])
            for index in range(start, start + count):
                utt = planner.utterance(*key, index)
                planned[utt.utt_id] = (key, utt)
                voice = (utt.voice.variant, utt.voice.rate, utt.voice.pitch, utt.voice.engine)
                jobs.append((utt.utt_id, utt.lang, voice, utt.text, tuple(domains), str(out),
                             seed, split_augmentation(augment, utt.split)))
        if not jobs:
            break
        samples = runner.run(jobs)
        for utt_id, (key, utt) in planned.items():
            done[key].append((utt, samples[utt_id]))
    kept = {}
    for key, target_s in targets.items():
        total, prefix = 0, []
        for utt, n in done[key]:
            if total / SAMPLE_RATE >= target_s:
                tag = getattr(split_augmentation(augment, utt.split), "tag", None)
                for domain in domains:
                    audio_path(out, domain, utt.lang, utt.utt_id, tag).unlink(missing_ok=True)
                continue
            prefix.append((utt, n))
            total += n
        kept[key] = prefix
    return kept


def _manifest_rows(utterances, domain: str, augment_tag: str | None = None) -> list[dict]:
    folder = audio_folder(domain, augment_tag)
    return [{
        "ID": utt.utt_id, "duration": n / SAMPLE_RATE,
        "wav": f"$data_root/audio/{folder}/{utt.lang}/{utt.utt_id}.flac",
        "spk_id": utt.voice.name, "lang": utt.lang, "domain": domain, "wrd": utt.text,
        "engine": utt.voice.engine, "voice": utt.voice.variant,
    } for utt, n in utterances]


def _augment_record(out: Path, kept: dict, splits, languages, augment, seed: int) -> dict:
    """Write ``augment.csv`` (or remove a stale one); ``{"augment_shares": split -> effect -> share}``."""
    if augment is None:
        (out / AUGMENT_MANIFEST).unlink(missing_ok=True)
        return {}
    rows, shares = [], {}
    for split in splits:
        if split_augmentation(augment, split) is None:
            continue
        plans = [(utt.utt_id, split, augment.plan(seed, utt.utt_id))
                 for lang in languages for utt, _ in kept.get((lang, split), [])]
        rows += plans
        shares[split] = {name: round(sum(name in plan for *_, plan in plans) / max(1, len(plans)), 4)
                         for name in augment.effects}
    write_augment_manifest(out / AUGMENT_MANIFEST, rows)
    return {"augment_shares": shares}


def _write_outputs(out: Path, kept: dict, options: dict, planner: Planner, fingerprint: str,
                   augment: Augmentation | None = None) -> dict:
    splits = [s for s in (*SPLITS, "unlabelled")
              if any(key[1] == s for key in kept)]
    manifests, stats = [], {}
    for split in splits:
        utterances = [item for lang in options["languages"] for item in kept.get((lang, split), [])]
        tag = getattr(split_augmentation(augment, split), "tag", None)
        for domain in options["domains"]:
            name = f"{split}.csv" if domain == "clean" else f"{split}_{domain}.csv"
            write_manifest(out / name, _manifest_rows(utterances, domain, tag))
            manifests.append(name)
        stats[split] = {}
        for lang in options["languages"]:
            items = kept.get((lang, split), [])
            seconds = sum(n for _, n in items) / SAMPLE_RATE
            stats[split][lang] = {"utterances": len(items), "seconds": round(seconds, 2),
                                  "hours": round(seconds / 3600, 4),
                                  "speakers": len({utt.voice.name for utt, _ in items}),
                                  "engines": _count_by_engine(items)}
    total_seconds = sum(v["seconds"] for split in stats.values() for v in split.values())
    summary = {
        **{key: options[key] for key in ("task", "size", "seed", "languages", "domains",
                                         "engines", "voices")},
        "builder_version": BUILDER_VERSION,
        "fingerprint": fingerprint,
        "sample_rate": SAMPLE_RATE,
        "minutes_requested": options["minutes"],
        "domain_options": options["domain_options"],
        "augment": options.get("augment"),
        **_augment_record(out, kept, splits, options["languages"], augment, planner.seed),
        "speakers": {split: {lang: [{"name": voice.name, "engine": voice.engine,
                                     "voice": voice.variant}
                                    for voice in planner.speakers(lang)[split]]
                             for lang in options["languages"]}
                     for split in (*SPLITS, "unlabelled") if split in splits},
        "splits": stats,
        "total": {"utterances": sum(v["utterances"] for s in stats.values() for v in s.values()),
                  "hours": round(total_seconds / 3600, 4)},
        "manifests": manifests,
    }
    tmp = out / "corpus.json.tmp"
    tmp.write_text(json.dumps(summary, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(tmp, out / "corpus.json")
    return summary


def _count_by_engine(items) -> dict[str, int]:
    """Utterances per engine among ``[(Utterance, n_samples), ...]``."""
    counts = {name: 0 for name in ENGINES}
    for utt, _ in items:
        counts[utt.voice.engine] += 1
    return {name: count for name, count in counts.items() if count}


def _resolve_domains(domains) -> list[str]:
    names = ["clean"] + [d for d in dict.fromkeys(domains) if d != "clean"]
    for name in names:
        parse_domain(name)
    return names


def build_corpus(task: str, size: str, out, seed: int = 0, languages=None,
                 lang_minutes: dict | None = None, unlabelled_minutes: dict | None = None,
                 domains=("clean",), workers: int | None = None, progress: bool = True,
                 engines=None, augment=None) -> dict:
    """Synthesize a corpus folder (see the module docstring for its layout).

    Parameters
    ----------
    task : str
        ``"numbers"`` or ``"sentences"``.
    size : str
        ``"tiny"``, ``"small"`` or ``"full"`` (minutes and speakers per split: :data:`SIZES`).
    out : str or Path
        Corpus folder; created if needed.
    seed : int
        Fixes speakers, texts and domain transforms.
    languages : sequence of str, optional
        Subset of the task's languages (default all).
    lang_minutes : dict, optional
        ``{lang: minutes}`` of labelled train audio, overriding the size's amount.
    unlabelled_minutes : dict or float, optional
        ``{lang: minutes}`` of unlabelled audio (new pseudo-speakers of the train
        voices, utterances and texts disjoint from train) written to
        ``unlabelled.csv``; a number
        gives every chosen language that many minutes (0: none). The labelled
        splits are the same with or without it.
    domains : sequence of str
        ``clean`` (always built) plus ``telephone``, ``noise``, ``reverb`` or
        ``+``-chains; each gives ``<split>_<domain>.csv`` and its audio.
    workers : int, optional
        Synthesis processes; default 1 for tiny, 2 for small, all cores for full.
    progress : bool
        Show a tqdm progress bar.
    engines : sequence of str, optional
        Synthesis engines to draw speakers from (``espeak``, ``festival``,
        ``flite``); default all. Those not installed are left out with a
        warning; ``["espeak"]`` gives the espeak-ng-only corpus.
    augment : None, str or dict
        Acoustic augmentation drawn per utterance (a preset name ``none``,
        ``light``, ``telephone``, ``full`` or a dict of effects; see
        :mod:`speechkd.data.augment`), applied to the train and unlabelled
        splits unless its ``splits`` say otherwise; what each utterance got
        is written to ``augment.csv``. None: audio as synthesized.

    Returns
    -------
    dict
        The ``corpus.json`` summary: task, size, seed, languages, domains,
        engines used, fingerprint, requested minutes, speakers per split and
        language (``{"name", "engine", "voice"}``), per split and language
        ``{"utterances", "seconds", "hours", "speakers", "engines"}`` (utterances
        per engine), totals, the list of manifests, the augmentation settings and,
        when there are any, ``augment_shares`` (split -> effect -> share of utterances).
    """
    if size not in SIZES:
        raise ValueError(f"unknown corpus size {size!r}; sizes are {', '.join(SIZES)}")
    known = task_languages(task)
    languages = list(known if languages is None else languages)
    if isinstance(unlabelled_minutes, (int, float)):
        unlabelled_minutes = {lang: float(unlabelled_minutes) for lang in languages} if unlabelled_minutes else {}
    lang_minutes, unlabelled_minutes = dict(lang_minutes or {}), dict(unlabelled_minutes or {})
    for what, names in (("languages", languages), ("lang_minutes", lang_minutes),
                        ("unlabelled_minutes", unlabelled_minutes)):
        unknown = [lang for lang in names if lang not in known or lang not in languages]
        if unknown:
            raise ValueError(f"{what} names {unknown}, not among the {task} languages "
                             f"chosen ({', '.join(languages)}); {task} has {', '.join(known)}")
    if task == "sentences":
        from speechkd.data.sentences import sentence_pools
        for lang in languages:
            sentence_pools(lang)
    domains = _resolve_domains(domains)
    engines = resolve_engines(engines)
    augment = Augmentation.from_config(augment)
    options = _options(task, size, int(seed), languages, lang_minutes, unlabelled_minutes,
                       domains, engines, augment)
    fingerprint = _fingerprint(options)
    out = Path(out)
    _check_same_content(out, options)
    summary = _is_complete(out, fingerprint)
    if summary is not None:
        return summary
    planner = Planner(task, size, int(seed), engines)
    targets = {(lang, split): minutes * 60 for lang in languages
               for split, minutes in options["minutes"][lang].items()}
    if workers is None:
        workers = {"tiny": 1, "small": 2}.get(size, os.cpu_count() or 1)
    workers = max(1, min(int(workers), os.cpu_count() or 1))
    with _Runner(workers, progress, f"corpus {task}/{size}") as runner:
        kept = _synthesize_streams(planner, targets, domains, out, int(seed), runner, augment)
    return _write_outputs(out, kept, options, planner, fingerprint, augment)


def _parse_minutes(values) -> dict:
    minutes = {}
    for value in values or []:
        for item in value.split(","):
            lang, sep, amount = item.partition("=")
            try:
                minutes[lang.strip()] = float(amount)
            except ValueError:
                raise argparse.ArgumentTypeError(
                    f"expected LANG=MINUTES (e.g. uk=5), got {item!r}") from None
            if not sep or minutes[lang.strip()] < 0:
                raise argparse.ArgumentTypeError(
                    f"expected LANG=MINUTES with minutes >= 0, got {item!r}")
    return minutes


def _parse_augment(text: str | None):
    """``--augment``: a preset name, or a YAML/JSON dict such as ``{speed: {p: 0.5}}``."""
    import yaml

    if text is None:
        return None
    value = yaml.safe_load(text)
    if not isinstance(value, (str, dict)) and value is not None:
        raise argparse.ArgumentTypeError(f"--augment takes a preset name or a YAML dict, "
                                         f"got {text!r}")
    return value


def _run_build(args) -> int:
    summary = build_corpus(
        args.task, args.size, args.out, seed=args.seed,
        languages=args.langs.split(",") if args.langs else None,
        lang_minutes=_parse_minutes(args.lang_minutes),
        unlabelled_minutes=_parse_minutes(args.unlabelled_minutes),
        domains=args.domains.split(","), workers=args.workers, progress=not args.quiet,
        engines=args.engines.split(",") if args.engines else None,
        augment=_parse_augment(args.augment))
    print(format_summary(summary))
    return 0


def format_summary(summary: dict) -> str:
    """A short table of utterances and minutes per split and language."""
    lines = [(f"corpus {summary['task']}/{summary['size']} seed {summary['seed']}: "
              f"{summary['total']['utterances']} utterances, {summary['total']['hours']:.3f} h, "
              f"domains {', '.join(summary['domains'])}, "
              f"engines {', '.join(summary.get('engines', ['espeak']))}")]
    for split, per_lang in summary["splits"].items():
        cells = ", ".join(f"{lang} {v['utterances']} ({v['seconds'] / 60:.1f} min)"
                          for lang, v in per_lang.items())
        lines.append(f"  {split}: {cells}")
    return "\n".join(lines)


def add_cli(subparsers) -> None:
    """Register ``corpus build`` on an argparse ``subparsers`` object.

    The handler is set with ``set_defaults(func=...)``; it takes the parsed
    arguments and returns the exit status.
    """
    corpus = subparsers.add_parser("corpus", help="build the synthetic speech corpus")
    commands = corpus.add_subparsers(dest="corpus_command", required=True)
    build = commands.add_parser("build", help="synthesize a corpus folder (espeak-ng, festival, "
                                "flite)",
                                description=__doc__.split("\n\n")[0])
    build.add_argument("--task", required=True, choices=("numbers", "sentences"))
    build.add_argument("--size", required=True, choices=tuple(SIZES))
    build.add_argument("--out", required=True, help="corpus folder")
    build.add_argument("--seed", type=int, default=0)
    build.add_argument("--langs", help="comma-separated subset of the task's languages")
    build.add_argument("--lang-minutes", action="append", metavar="LANG=MIN",
                       help="labelled train minutes per language, e.g. uk=5 (repeatable)")
    build.add_argument("--unlabelled-minutes", action="append", metavar="LANG=MIN",
                       help="unlabelled minutes per language, e.g. uk=30 (repeatable)")
    build.add_argument("--domains", default="clean",
                       help="comma-separated: clean,telephone,noise,reverb or chains like "
                            "telephone+noise")
    build.add_argument("--augment", metavar="PRESET|YAML",
                       help="per-utterance acoustic augmentation of train (and unlabelled): "
                            "none, light, telephone, full, or a YAML dict like "
                            "'{preset: full, speed: {p: 0.5, range: [0.9, 1.1]}}'")
    build.add_argument("--engines", help="comma-separated synthesis engines (default all "
                       "installed): " + ",".join(ENGINES))
    build.add_argument("--workers", type=int, help="synthesis processes")
    build.add_argument("--quiet", action="store_true", help="no progress bar")
    build.set_defaults(func=_run_build)


def main(argv=None) -> int:
    """Run ``corpus build ...`` standalone: ``python -m speechkd.data.corpus build ...``."""
    parser = argparse.ArgumentParser(prog="python -m speechkd.data.corpus")
    subparsers = parser.add_subparsers(dest="command", required=True)
    add_cli(subparsers)
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parser.parse_args(["corpus", *argv])
    return args.func(args)


if __name__ == "__main__":
    raise SystemExit(main())
