"""Transcript-only teachers: models that give text, not frame posteriors, teach through pseudo-labels.

Whisper (any model that yields text), or a CTC model whose subword tokens
cannot be mapped onto a character student frame by frame, transcribes the
unlabelled audio once; its transcripts become the ``wrd`` of those
utterances, and the student's CTC term learns from them (sequence-level KD).
As in distil-whisper, a pseudo-label is kept only when the teacher is
confident enough and, when a second opinion is given, when the two agree
(word error rate between them at most ``max_disagreement``); dropped
utterances are counted by reason.

Transcripts are cached by utterance ID in a folder (``meta.json`` with the
teacher's fingerprint, ``transcripts.jsonl`` one utterance per line): a
rerun transcribes only what is missing, a cache from another teacher is
refused with both fingerprints named, and changing the filter thresholds
needs no teacher run.

Frame-level teachers give transcripts too (:func:`pseudo_label_from_teachers`):
their fused posteriors decoded over a lexicon label the unlabelled audio
where the greedy path agrees, which is how the main job's student learns
words, not only frames, from its transfer set.

Frame-level teachers and a transcript teacher train one student together:
the pseudo-labelled manifest is the distillation recipe's ``train_csv``
(its rows now labelled, so ``CTCTerm`` reads them), the posterior cache
covers the same utterances for ``PosteriorKL``.

    python recipes/distill/pseudo_label.py hparams/distill/pseudo_label.yaml --whisper_folder=/models/tiny.en
    python recipes/distill/train.py hparams/distill/student.yaml \
        --train_csv=results/distill/pseudo_labels/1234/train.csv
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import re
from abc import ABC, abstractmethod
from dataclasses import dataclass

import jiwer
import speechbrain as sb
import torch

from speechkd.data.manifest import read_manifest, write_manifest
from speechkd.data.pipelines import make_dataset
from speechkd.decoding import LexiconDecoder, MorphLexiconDecoder, ctc_greedy, greedy_transcripts
from speechkd.distill.pretrained.base import hash_files
from speechkd.distill.target import fused_posteriors
from speechkd.distill.teachers import as_teacher
from speechkd.text import normalize

logger = logging.getLogger(__name__)

THOUSANDS = re.compile(r"(?<=\d),(?=\d{3}\b)")  # "6,400" is one number to normalize()
WHISPER_OPTIONAL_FILES = ("tokenizer.json", "vocabulary.txt")
"""Model folder files that change Whisper's transcripts when present (hashed into its fingerprint)."""


def normalize_transcript(text: str, lang: str) -> str:
    """A teacher's transcript as a pseudo-label: thousands separators joined (``6,400``), then :func:`normalize`.

    Parameters
    ----------
    text : str
        The teacher's raw text.
    lang : str
        The utterance's language.

    Returns
    -------
    str
    """
    return normalize(THOUSANDS.sub("", text), lang)


@dataclass
class Transcript:
    """One utterance's transcript and the teacher's confidence in it (a probability in [0, 1])."""

    text: str
    confidence: float


class TranscriptTeacher(ABC):
    """A teacher that gives text: 16 kHz waveforms in, one :class:`Transcript` per utterance out.

    Attributes
    ----------
    name : str
    """

    name: str

    @abstractmethod
    def transcribe(self, wavs: torch.Tensor, wav_lens: torch.Tensor) -> list:
        """``(batch, samples)`` 16 kHz waveforms and ``(batch,)`` relative lengths -> list of :class:`Transcript`."""

    @abstractmethod
    def fingerprint(self) -> str:
        """Changes whenever the transcripts could (weights, decoding options)."""


class GreedyTranscripts(TranscriptTeacher):
    """Any CTC :class:`~speechkd.distill.teachers.Teacher` as a transcript teacher (greedy decoding).

    The path for subword (BPE) CTC models, whose frame posteriors do not map
    onto a character student. Confidence is the mean over frames of the most
    probable token's probability.

    Parameters
    ----------
    teacher : Teacher, str or dict
        A teacher, or what a ``teachers:`` entry may be (a model folder, ``{folder: ..., <options>}``).
    device : str
    """

    def __init__(self, teacher, device: str = "cpu"):
        self.teacher = as_teacher(teacher, device)
        self.name = self.teacher.name

    def transcribe(self, wavs, wav_lens):
        log_probs, frames = self.teacher.log_probs(wavs, wav_lens)
        best = log_probs.max(-1).values.exp()
        transcripts = []
        for row, ids in enumerate(ctc_greedy(log_probs, frames, self.teacher.blank_index)):
            text = self.teacher.decode(ids).replace("▁", " ")
            confidence = float(best[row, : int(frames[row])].mean()) if int(frames[row]) else 0.0
            transcripts.append(Transcript(" ".join(text.split()), confidence))
        return transcripts

    def fingerprint(self) -> str:
        return f"greedy-{self.teacher.fingerprint()}"


class WhisperTeacher(TranscriptTeacher):
    """Whisper in faster-whisper's CTranslate2 format, from a local folder (``model.bin``, ``config.json``,
    ``tokenizer.json``, ``vocabulary.txt``).

    Parameters
    ----------
    folder : str
    language : str
        Language code passed to Whisper (``en`` for ``*.en`` models).
    beam_size : int
    compute_type : str
        CTranslate2 compute type (``int8``, ``float32``, ``float16`` on GPU).
    device : str
    threads : int
        CPU threads (0 = CTranslate2's default).
    name : str, optional

    Notes
    -----
    The fingerprint hashes ``model.bin``, ``config.json`` and, when present,
    ``tokenizer.json`` and ``vocabulary.txt`` (they change the text), with
    the compute type and decoding options.
    Confidence is ``exp`` of the mean token log-probability over the
    utterance's segments (``avg_logprob``), times ``1 - no_speech_prob``.
    Decoding is greedy-deterministic (temperature 0, no fallback), not
    conditioned on previous text, without timestamps.
    """

    def __init__(self, folder: str, language: str = "en", beam_size: int = 1, compute_type: str = "int8",
                 device: str = "cpu", threads: int = 0, name: str | None = None):
        from faster_whisper import WhisperModel

        self.model_files = [os.path.join(folder, f) for f in ("model.bin", "config.json")]
        if not all(os.path.exists(f) for f in self.model_files):
            raise FileNotFoundError(f"no faster-whisper model at {folder} (model.bin and config.json needed)")
        self.model_files += [path for path in (os.path.join(folder, f) for f in WHISPER_OPTIONAL_FILES)
                             if os.path.exists(path)]
        self.model = WhisperModel(folder, device=device, compute_type=compute_type, cpu_threads=threads,
                                  local_files_only=True)
        self.name = name or f"whisper-{os.path.basename(os.path.normpath(folder))}"
        self.options = {"language": language, "beam_size": beam_size, "temperature": 0.0,
                        "condition_on_previous_text": False, "without_timestamps": True, "vad_filter": False}
        self.compute_type = compute_type

    def transcribe(self, wavs, wav_lens):
        lengths = torch.round(wav_lens * wavs.shape[1]).long().tolist()
        transcripts = []
        for wav, length in zip(wavs, lengths):
            segments, _ = self.model.transcribe(wav[:length].float().cpu().numpy(), **self.options)
            segments = list(segments)
            if not segments:
                transcripts.append(Transcript("", 0.0))
                continue
            avg_logprob = sum(s.avg_logprob for s in segments) / len(segments)
            no_speech = max(s.no_speech_prob for s in segments)
            text = " ".join(s.text.strip() for s in segments)
            transcripts.append(Transcript(text, math.exp(avg_logprob) * (1.0 - no_speech)))
        return transcripts

    def fingerprint(self) -> str:
        options = json.dumps(self.options, sort_keys=True)
        return f"{hash_files(self.model_files)}-{self.compute_type}-{hashlib.sha256(options.encode()).hexdigest()[:8]}"


class TranscriptCache:
    """Transcripts of one teacher by utterance ID (``meta.json`` + ``transcripts.jsonl``), appended as made.

    Parameters
    ----------
    folder : str
    teacher : TranscriptTeacher
        A cache made by another teacher (other fingerprint) is refused.
    """

    def __init__(self, folder: str, teacher: TranscriptTeacher):
        self.folder = folder
        self.path = os.path.join(folder, "transcripts.jsonl")
        meta = {"teacher": teacher.name, "fingerprint": teacher.fingerprint()}
        meta_path = os.path.join(folder, "meta.json")
        os.makedirs(folder, exist_ok=True)
        if os.path.exists(meta_path):
            with open(meta_path, encoding="utf-8") as fin:
                found = json.load(fin)
            if found.get("fingerprint") != meta["fingerprint"]:
                raise ValueError(f"transcript cache {folder} was made by teacher {found.get('teacher')!r} "
                                 f"(fingerprint {found.get('fingerprint')}), not {meta['teacher']!r} "
                                 f"({meta['fingerprint']}): give another folder or delete it")
        else:
            with open(meta_path, "w", encoding="utf-8") as fout:
                json.dump(meta, fout, indent=1)
        self.transcripts = {}
        if os.path.exists(self.path):
            with open(self.path, encoding="utf-8") as fin:
                for number, line in enumerate(fin, 1):
                    try:
                        record = json.loads(line)
                    except json.JSONDecodeError:  # a run killed mid-line leaves a partial last line
                        logger.warning("%s:%d: unreadable line skipped (its utterance is transcribed again)",
                                       self.path, number)
                        continue
                    self.transcripts[record["ID"]] = Transcript(record["text"], record["confidence"])

    def add(self, utt_id: str, transcript: Transcript):
        with open(self.path, "a", encoding="utf-8") as fout:
            fout.write(json.dumps({"ID": utt_id, "text": transcript.text,
                                   "confidence": transcript.confidence}, ensure_ascii=False) + "\n")
        self.transcripts[utt_id] = transcript


def transcribe_dataset(teacher: TranscriptTeacher, dataset, cache_folder: str, batch_size: int = 8) -> dict:
    """Transcribe every utterance of ``dataset`` (``sig``) not yet in the cache; return ID -> :class:`Transcript`."""
    cache = TranscriptCache(cache_folder, teacher)
    todo = [utt for utt in dataset.data_ids if utt not in cache.transcripts]
    if todo:
        logger.info("%s: transcribing %d utterances (%d cached)", teacher.name, len(todo),
                    len(dataset.data_ids) - len(todo))
        loader = sb.dataio.dataloader.make_dataloader(dataset, batch_size=batch_size)
        with torch.no_grad():
            for batch in loader:
                if all(utt in cache.transcripts for utt in batch.id):
                    continue
                wavs, wav_lens = batch.sig
                for utt_id, transcript in zip(batch.id, teacher.transcribe(wavs, wav_lens)):
                    cache.add(utt_id, transcript)
    return {utt: cache.transcripts[utt] for utt in dataset.data_ids}


def filter_pseudo_labels(rows, transcripts, min_confidence=0.0, second_opinion=None, max_disagreement=None,
                         known_words=None):
    """Rows of a manifest with their ``wrd`` set to the normalized pseudo-label; the rest counted by reason.

    Parameters
    ----------
    rows : list of dict
        Manifest rows (``ID``, ``lang``, ...).
    transcripts : dict
        ID -> :class:`Transcript` of the teacher; a row without one (its audio
        was unusable, and skipped when the teacher heard the manifest) is
        dropped as ``unusable audio``.
    min_confidence : float
    second_opinion : dict, optional
        ID -> :class:`Transcript` of another teacher.
    max_disagreement : float, optional
        Largest WER (percent) between the two transcripts for a row to be kept.
    known_words : set of str, optional
        With ``second_opinion``: a transcript word outside this set (one a
        morph lexicon composed) must be in the second opinion too, or the row
        is dropped as ``unseen word``.

    Returns
    -------
    kept : list of dict
    dropped : dict
        Reason (``unusable audio``, ``empty``, ``confidence``, ``disagreement``, and
        with ``known_words`` ``unseen word``) -> count.
    """
    kept, dropped = [], {"unusable audio": 0, "empty": 0, "confidence": 0, "disagreement": 0}
    if known_words is not None:
        if second_opinion is None:
            raise ValueError("known_words needs a second_opinion to check the unseen words against")
        dropped["unseen word"] = 0
    for row in rows:
        transcript = transcripts.get(row["ID"])
        if transcript is None:
            dropped["unusable audio"] += 1
            continue
        text = normalize_transcript(transcript.text, row["lang"])
        if not text:
            dropped["empty"] += 1
        elif transcript.confidence < min_confidence:
            dropped["confidence"] += 1
        elif second_opinion is not None and max_disagreement is not None and (
            100.0 * jiwer.wer(text, normalize_transcript(second_opinion[row["ID"]].text, row["lang"]) or "<none>")
            > max_disagreement
        ):
            dropped["disagreement"] += 1
        elif known_words is not None and not set(text.split()) - known_words <= set(
            normalize_transcript(second_opinion[row["ID"]].text, row["lang"]).split()
        ):
            dropped["unseen word"] += 1
        else:
            kept.append({**row, "wrd": text})
    return kept, dropped


TEACHER_DECODINGS = ("greedy", "lexicon")
"""How :func:`pseudo_label_from_teachers` decodes the fused teachers."""
PSEUDO_LABELLED_CSV = "pseudo_labelled.csv"
"""The rows :func:`pseudo_label_from_teachers` labels (``wrd``: the teachers' transcript)."""
STILL_UNLABELLED_CSV = "still_unlabelled.csv"
"""The rows it leaves unlabelled (their ``wrd``, the manifest's own, is never to be read)."""
PSEUDO_LABELS_JSON = "pseudo_labels.json"
"""Its settings and counts."""


def decoded_transcripts(teachers, inventory, dataset, strategy, strategy_options=None, batch_size=16, decoder=None):
    """The fused teachers' greedy transcripts of ``dataset``, and ``decoder``'s.

    Parameters
    ----------
    teachers : PosteriorCache or TeacherEnsemble
        Holding (or hearing) every utterance of ``dataset``.
    inventory : speechkd.text.TokenInventory
    dataset : DynamicItemDataset
    strategy : str
    strategy_options : dict, optional
    batch_size : int
    decoder : callable, optional
        ``(log_probs (batch, time, V), frames (batch,)) -> list of str``, e.g. a
        :class:`~speechkd.decoding.LexiconDecoder`.

    Returns
    -------
    greedy, decoded : dict
        ID -> :class:`Transcript` (confidence 1); ``decoded`` is empty without a decoder.
    """
    greedy, decoded = {}, {}
    for batch, log_probs, frames in fused_posteriors(teachers, inventory, dataset, strategy, strategy_options,
                                                      batch_size=batch_size):
        for utt, text in zip(batch.id, greedy_transcripts(log_probs, frames, inventory)):
            greedy[utt] = Transcript(text, 1.0)
        if decoder is not None:
            for utt, text in zip(batch.id, decoder(log_probs, frames)):
                decoded[utt] = Transcript(text, 1.0)
    return greedy, decoded


def pseudo_label_from_teachers(teachers, inventory, unlabelled_csv, data_folder, output_folder, decoding="lexicon",
                               lexicon_csv=None, strategy="weighted", strategy_options=None, max_disagreement=50.0,
                               beam=10, batch_size=16, compounds=False):
    """Label unlabelled audio with the frame-level teachers' own transcripts of it.

    Sequence-level distillation (Kim & Rush 2016) beside the frame-level KL:
    the teachers' fused posteriors at τ = 1 (as the report decodes the
    ensemble: :func:`speechkd.distill.target.fused_posteriors`, read from a
    posterior cache, or the online teachers run) are decoded, ``greedy`` (best
    path) or ``lexicon`` (over the words and word bigram of ``lexicon_csv``,
    :class:`~speechkd.decoding.LexiconDecoder`), and a transcript becomes the
    utterance's ``wrd``, which the CTC term then learns. With ``lexicon`` the
    greedy transcript is a second opinion (:func:`filter_pseudo_labels`): a
    row whose two transcripts differ by more than ``max_disagreement`` % WER
    keeps no label, as does an empty transcript. A spoken word the lexicon
    lacks is forced onto its words (a German or Italian compound number the
    training transcripts never spelled), and the greedy path, which spells
    it, then disagrees. With ``compounds`` the rows the word lexicon left
    without a label are decoded again over morphs
    (:class:`~speechkd.decoding.MorphLexiconDecoder`), which can compose such a
    word from the parts of the training words, and kept under the same rule,
    a composed word only where the greedy path spells it too. Rows without a
    label stay unlabelled: the KL term alone learns from them.

    Parameters
    ----------
    teachers : PosteriorCache or TeacherEnsemble
        Holding (or hearing) every row of ``unlabelled_csv``.
    inventory : speechkd.text.TokenInventory
        The inventory the fused posteriors are decoded in (the student's).
    unlabelled_csv : str
        Manifest of the unlabelled audio; its ``wrd``, if any, is never read.
    data_folder : str
        Replaces ``$data_root``.
    output_folder : str
        Gets :data:`PSEUDO_LABELLED_CSV`, :data:`STILL_UNLABELLED_CSV` and
        :data:`PSEUDO_LABELS_JSON` (the settings and the counts by reason).
    decoding : {"greedy", "lexicon"}
        How the fused posteriors are decoded.
    lexicon_csv : str, optional
        Manifest whose transcripts give the lexicon's words and bigram (``lexicon`` only).
    strategy : str
        The ensemble strategy (:class:`~speechkd.distill.target.TeacherTarget`); not ``best``,
        which picks a teacher per utterance by its errors against the manifest's ``wrd``.
    strategy_options : dict, optional
    max_disagreement : float
        Largest WER (percent) between the lexicon and greedy transcripts of a kept row.
    beam : int
        The lexicon decoder's beam. On the main job's transfer set (3,619 utterances)
        10 decoded in 8 s at 13.3 % WER against what was said, 50 (the report's) in
        20 s at 15.2 %, 5 in 6 s at 17.1 %.
    batch_size : int
        Utterances decoded together.
    compounds : bool
        ``lexicon`` only: the second pass over morphs, above. The summary then
        also has ``labelled_by_morph_pass`` and ``dropped_by_word_pass`` (the
        first pass's reasons); ``dropped`` counts what neither pass labelled,
        by the second pass's reasons. On the main job's
        transfer set it labelled 2,416 utterances instead of 2,123 (German 26 ->
        44 %, Italian 26 -> 58 %) at 5.0 % WER against what was said instead of 4.3
        (benchmarks/RESULTS.md, "Run of 2026-12-02 (late afternoon)").

    Returns
    -------
    pseudo_labelled_csv, still_unlabelled_csv : str
        The two manifests written.
    """
    if decoding not in TEACHER_DECODINGS:
        raise ValueError(f"decoding must be one of {TEACHER_DECODINGS}, got {decoding!r}")
    if decoding == "lexicon" and not lexicon_csv:
        raise ValueError("lexicon decoding of the teachers needs lexicon_csv (a manifest whose transcripts "
                         "give the words), e.g. the labelled train_csv")
    if strategy == "best":
        raise ValueError("the teachers' transcripts cannot use strategy 'best': it picks a teacher per utterance "
                         "by its errors against the manifest's transcripts, which unlabelled audio must not reach")
    rows = read_manifest(unlabelled_csv, allow_empty_wrd=True)
    dataset = make_dataset(unlabelled_csv, data_folder, need_text=False, sort="none")
    if compounds and decoding != "lexicon":
        raise ValueError(f"compounds: the second pass over morphs follows a lexicon pass (decoding: lexicon), "
                         f"not {decoding!r}")
    lexicon_decoder = (LexiconDecoder.from_manifest(inventory, lexicon_csv, beam=beam)
                       if decoding == "lexicon" else None)
    decode = {"teachers": teachers, "inventory": inventory, "strategy": strategy,
              "strategy_options": strategy_options, "batch_size": batch_size}
    greedy, lexicon = decoded_transcripts(dataset=dataset, decoder=lexicon_decoder, **decode)
    composed_kept, word_pass_dropped = [], None
    if decoding == "lexicon":
        kept, dropped = filter_pseudo_labels(rows, lexicon, second_opinion=greedy, max_disagreement=max_disagreement)
        if compounds:  # the rows the words left unlabelled, again over morphs
            word_pass_dropped = {reason: count for reason, count in dropped.items() if reason != "confidence"}
            labelled = {row["ID"]: row for row in kept}
            morph_decoder = MorphLexiconDecoder.from_manifest(inventory, lexicon_csv, beam=beam)
            unlabelled = dataset.filtered_sorted(key_test={"id": lambda utt: utt in greedy and utt not in labelled})
            _, composed = decoded_transcripts(dataset=unlabelled, decoder=morph_decoder, **decode)
            composed_kept, dropped = filter_pseudo_labels(
                [row for row in rows if row["ID"] not in labelled], composed, second_opinion=greedy,
                max_disagreement=max_disagreement, known_words=set(morph_decoder.segmenter.vocabulary))
            labelled.update((row["ID"], row) for row in composed_kept)
            kept = [labelled[row["ID"]] for row in rows if row["ID"] in labelled]  # the manifest's order
    else:
        kept, dropped = filter_pseudo_labels(rows, greedy)
    del dropped["confidence"]  # a decoded path has no confidence threshold here
    kept_ids = {row["ID"] for row in kept}
    os.makedirs(output_folder, exist_ok=True)
    paths = os.path.join(output_folder, PSEUDO_LABELLED_CSV), os.path.join(output_folder, STILL_UNLABELLED_CSV)
    write_manifest(paths[0], kept)
    write_manifest(paths[1], [row for row in rows if row["ID"] in greedy and row["ID"] not in kept_ids])
    summary = {"decoding": decoding, "strategy": strategy, "beam": beam if lexicon_decoder else None,
               "max_disagreement": max_disagreement if lexicon_decoder else None,
               "offered": len(rows), "pseudo_labelled": len(kept),
               **({"labelled_by_morph_pass": len(composed_kept), "dropped_by_word_pass": word_pass_dropped}
                  if compounds else {}), "dropped": dropped}
    with open(os.path.join(output_folder, PSEUDO_LABELS_JSON), "w", encoding="utf-8") as fout:
        json.dump(summary, fout, indent=1)
    logger.info("%s: %d of %d utterances pseudo-labelled with the teachers' %s transcripts (dropped: %s)",
                unlabelled_csv, len(kept), len(rows), decoding, dropped)
    return paths
