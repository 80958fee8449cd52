"""Teachers: the interface every teacher implements, speechkd's own models, and the ensemble.

A teacher is anything that, given a batch of 16 kHz waveforms, returns
per-frame log-probabilities with their lengths, and declares its frame
shift, its symbols (with the blank's index, wherever it is) and the input it
wants (sample rate, waveform normalization). :class:`Teacher` is that
contract; :class:`SpeechkdTeacher` (a trained speechkd experiment folder) is
one implementation, a posterior cache (:class:`~speechkd.distill.cache.PosteriorCache`)
the other source of teacher batches. A new kind of teacher is one subclass
of :class:`Teacher`, named in the YAML's ``teachers`` list with ``!new:``.

:class:`TeacherEnsemble` runs several teachers on one batch; their
inventories and frame shifts may differ (the teacher target maps
inventories by symbol and pools frames).
"""

from __future__ import annotations

import contextlib
import logging
import os
from abc import ABC, abstractmethod
from typing import Protocol

import jiwer
import speechbrain as sb
import torch
import torchaudio

from speechkd.decoding import ctc_greedy
from speechkd.distill.cache import (
    PosteriorCache,
    PosteriorCacheWriter,
    fingerprint_module,
    make_meta,
    symbols_fingerprint,
)
from speechkd.distill.losses import teacher_batch_from_log_probs
from speechkd.experiment import load_model, model_name
from speechkd.models.features import relative_lengths_to_absolute
from speechkd.models.layers import LayerRecorder
from speechkd.stages import folder_lock
from speechkd.text import BLANK, UNK

logger = logging.getLogger(__name__)

INPUT_SAMPLE_RATE = 16000


class TeacherSource(Protocol):
    """Where a training step's teacher batches come from: a :class:`TeacherEnsemble` run online, or a
    :class:`~speechkd.distill.cache.PosteriorCache`. :class:`~speechkd.distill.target.TeacherTarget`
    reads the description; the Brain calls :meth:`teacher_batch`.
    """

    teacher_names: list
    symbols: list            # one list per teacher, blank named ``<blank>``
    frame_shifts_ms: list
    k: int                   # tokens per frame in the teacher batches (0 = all)

    def dev_wer_list(self) -> list | None:
        """Each teacher's dev WER (percent), or None."""

    def teacher_batch(self, batch, device=None) -> dict:
        """``log_probs``/``ids`` ``(batch, teachers, time, width)``, ``frames`` ``(batch, teachers)``."""


class Teacher(ABC):
    """One acoustic-model teacher: 16 kHz waveforms in, per-frame log-probabilities out.

    Subclasses set the attributes below (in ``__init__``) and implement
    :meth:`forward_log_probs` and :meth:`fingerprint`.

    Attributes
    ----------
    name : str
        The teacher's name in caches, logs and reports.
    symbols : list of str
        Output tokens in index order, as the model names them.
    blank_index : int
        Index of the CTC blank in ``symbols`` (0 for speechkd and HF, last for some toolkits).
    frame_shift_ms : int
        Output frame shift.
    sample_rate : int
        Input sample rate the model wants; 16 kHz batches are resampled to it.
    normalize_waveform : bool
        Whether each waveform is scaled to zero mean and unit variance over its
        valid samples first (wav2vec2-style feature extractors).
    word_delimiter : str
        The symbol that separates words (``" "``; ``"|"`` for wav2vec2 vocabularies).
    """

    name: str
    symbols: list
    blank_index: int = 0
    frame_shift_ms: int
    sample_rate: int = INPUT_SAMPLE_RATE
    normalize_waveform: bool = False
    word_delimiter: str = " "

    @abstractmethod
    def forward_log_probs(self, wavs: torch.Tensor, wav_lens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Run the model on prepared input.

        Parameters
        ----------
        wavs : torch.Tensor
            ``(batch, samples)`` at :attr:`sample_rate`, normalized if asked.
        wav_lens : torch.Tensor
            ``(batch,)`` relative lengths.

        Returns
        -------
        log_probs : torch.Tensor
            ``(batch, frames, len(symbols))``.
        frames : torch.Tensor
            ``(batch,)`` long, valid output frames per utterance.
        """

    @abstractmethod
    def fingerprint(self) -> str:
        """A string that changes whenever the teacher's outputs could (e.g. a hash of its weights)."""

    def to(self, device):
        """Move the teacher's weights to ``device`` (the ensemble calls it); returns the teacher.

        Teachers with weights override it; the default has none to move.
        """
        return self

    @property
    def canonical_symbols(self) -> list:
        """``symbols`` with the blank named ``<blank>`` and the word delimiter ``" "``.

        Inventories then map onto each other by symbol, wherever a toolkit puts its blank.
        """
        symbols = [" " if s == self.word_delimiter else s for s in self.symbols]
        symbols[self.blank_index] = BLANK
        return symbols

    @property
    def tokens_fingerprint(self) -> str:
        """Fingerprint of the inventory as a whole (a cache's ``tokens.fingerprint`` is its first teacher's)."""
        return symbols_fingerprint(self.canonical_symbols)

    def entry(self) -> dict:
        """This teacher's record in a cache's ``meta.json``."""
        entry = {"name": self.name, "class": self.class_name, "fingerprint": self.fingerprint(),
                 "frame_shift_ms": int(self.frame_shift_ms)}
        entry["tokens"] = {"symbols": self.canonical_symbols,
                           "fingerprint": symbols_fingerprint(self.canonical_symbols)}
        if self.sample_rate != INPUT_SAMPLE_RATE or self.normalize_waveform:
            entry["input"] = {"sample_rate": self.sample_rate, "normalize_waveform": self.normalize_waveform}
        return entry

    @property
    def class_name(self) -> str:
        return type(self).__name__

    def prepare_input(self, wavs: torch.Tensor, wav_lens: torch.Tensor) -> torch.Tensor:
        """16 kHz ``(batch, samples)`` -> the input this teacher wants (rate, normalization; padding stays 0)."""
        if self.sample_rate != INPUT_SAMPLE_RATE:
            wavs = torchaudio.functional.resample(wavs, INPUT_SAMPLE_RATE, self.sample_rate)
        if self.normalize_waveform:
            valid = (torch.arange(wavs.shape[1], device=wavs.device)[None, :]
                     < relative_lengths_to_absolute(wav_lens, wavs.shape[1])[:, None]).to(wavs.dtype)
            count = valid.sum(1, keepdim=True).clamp_min(1.0)
            mean = (wavs * valid).sum(1, keepdim=True) / count
            var = (((wavs - mean) * valid) ** 2).sum(1, keepdim=True) / count
            wavs = (wavs - mean) / torch.sqrt(var + 1e-7) * valid
        return wavs

    @torch.no_grad()
    def log_probs(self, wavs: torch.Tensor, wav_lens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(batch, frames, V)`` log-probabilities and ``(batch,)`` frames of 16 kHz waveforms."""
        return self.forward_log_probs(self.prepare_input(wavs, wav_lens), wav_lens)

    def log_probs_and_states(self, wavs: torch.Tensor, wav_lens: torch.Tensor, layers) -> tuple:
        """:meth:`log_probs` plus ``{layer: (batch, frames, dim)}`` named intermediate layers at the output rate.

        Representation terms (hint, activation energy, relational on layers)
        read them from teachers run online; a teacher that exposes no layers
        refuses with this message.
        """
        raise NotImplementedError(f"teacher '{self.name}' ({self.class_name}) exposes no intermediate layers "
                                  f"(asked for {list(layers)}); layer terms need speechkd teachers run online")

    def decode(self, ids) -> str:
        """Text of CTC-collapsed token ids (blank and ``<unk>`` skipped, word delimiter -> space)."""
        symbols = [self.symbols[int(i)] for i in ids if int(i) != self.blank_index]
        text = "".join(s for s in symbols if s != UNK)
        return " ".join(text.replace(self.word_delimiter, " ").split())


class SpeechkdTeacher(Teacher):
    """A model trained by a speechkd recipe, loaded from its experiment folder (best checkpoint).

    Parameters
    ----------
    folder : str
        Experiment folder with ``model.json``, ``tokens.txt`` and ``save/``.
    name : str, optional
        Defaults to the name in ``model.json``.
    device : str
    """

    def __init__(self, folder: str, name: str | None = None, device: str = "cpu"):
        if not os.path.exists(os.path.join(folder, "model.json")):
            raise FileNotFoundError(f"no trained speechkd model at {folder} (no model.json)")
        self.folder = folder
        self.model, self.inventory = load_model(folder, device=device)
        self.name = name or model_name(folder)
        self.symbols = list(self.inventory.symbols)
        self.blank_index = self.inventory.blank_index
        self.frame_shift_ms = self.model.frame_shift_ms

    def to(self, device):
        self.model.to(device)
        return self

    def forward_log_probs(self, wavs, wav_lens):
        log_probs = self.model(wavs, wav_lens)
        return log_probs, self.model.output_lengths(wav_lens, wavs.shape[1]).to(log_probs.device)

    def log_probs_and_states(self, wavs, wav_lens, layers):
        with LayerRecorder(self.model, layers) as recorder:
            log_probs, frames = self.log_probs(wavs, wav_lens)
        return log_probs, frames, recorder.states

    def fingerprint(self) -> str:
        return fingerprint_module(self.model)

    @property
    def class_name(self) -> str:
        return type(self.model).__name__

    @property
    def tokens_fingerprint(self) -> str:
        return self.inventory.fingerprint

    def decode(self, ids) -> str:
        return self.inventory.decode(ids)


def as_teacher(spec, device: str = "cpu") -> Teacher:
    """A :class:`Teacher` from a YAML entry: a Teacher object, a speechkd experiment folder, or a
    pretrained model's folder (or ``{folder: ..., <options>}``, see :func:`speechkd.distill.pretrained.load_teacher`).
    """
    if isinstance(spec, Teacher):
        return spec
    if isinstance(spec, (str, os.PathLike)) and os.path.exists(os.path.join(spec, "model.json")):
        return SpeechkdTeacher(str(spec), device=device)
    if isinstance(spec, (str, os.PathLike)) and not os.path.exists(spec):
        raise FileNotFoundError(f"no trained speechkd model at {spec} (no model.json)")
    if isinstance(spec, (str, os.PathLike, dict)):
        from speechkd.distill.pretrained import load_teacher

        options = dict(spec) if isinstance(spec, dict) else {"folder": str(spec)}
        return load_teacher(**{"device": device, **options})
    raise TypeError(f"a teacher must be a pretrained model folder, a speechkd experiment folder or a "
                    f"speechkd.distill.Teacher, got {type(spec).__name__}")


class TeacherEnsemble:
    """Several teachers run on the same batch (inventories and frame shifts may differ).

    Parameters
    ----------
    teachers : list
        :class:`Teacher` objects or speechkd experiment folders. A repeated
        name gets the teacher's position appended.
    device : str
    k : int
        Tokens per frame kept when the ensemble gives teacher batches online
        (the same top-k and fp16 rounding as a cache of that k; 0 = all).
    signal : str
        The batch item the teachers hear online (``sig``; ``sig_parallel``
        for the clean half of a parallel pair).
    """

    def __init__(self, teachers, device: str = "cpu", k: int = 0, signal: str = "sig"):
        if not teachers:
            raise ValueError("the ensemble needs at least one teacher")
        self.teachers = [as_teacher(spec, device).to(device) for spec in teachers]
        self.names = []
        for index, teacher in enumerate(self.teachers):
            self.names.append(f"{teacher.name}{index}" if teacher.name in self.names else teacher.name)
        self.device, self.k, self.signal = device, int(k), signal

    # ---- the description a TeacherTarget reads (a PosteriorCache declares the same)
    @property
    def teacher_names(self) -> list:
        return self.names

    @property
    def symbols(self) -> list:
        return [t.canonical_symbols for t in self.teachers]

    @property
    def frame_shifts_ms(self) -> list:
        return [int(t.frame_shift_ms) for t in self.teachers]

    def dev_wer_list(self):
        """Online teachers have no recorded dev WER (a cache has)."""
        return

    @property
    def inventory(self):
        """The token inventory all teachers share (speechkd teachers only)."""
        first = self.teachers[0]
        for name, teacher in zip(self.names[1:], self.teachers[1:]):
            if teacher.canonical_symbols != first.canonical_symbols:
                differ = sorted(set(teacher.canonical_symbols) ^ set(first.canonical_symbols)) or "order"
                raise ValueError(f"teachers '{self.names[0]}' and '{name}' use different token inventories "
                                 f"(differ in: {differ}); give the student its own (student_tokens: own)")
        if not hasattr(first, "inventory"):
            raise ValueError(f"teacher '{self.names[0]}' is not a speechkd model: give the student its own "
                             "inventory (student_tokens: own)")
        return first.inventory

    def meta(self, k, features, manifest=None):
        """Cache ``meta`` fingerprinting these teachers (weights, inventory, shift, input), ``k`` and features.

        Every teacher records its inventory; the cache's own is the first teacher's.
        """
        first = self.teachers[0]
        entries = [{**teacher.entry(), "name": name} for name, teacher in zip(self.names, self.teachers)]
        return make_meta(entries, first.canonical_symbols, features=features, k=k,
                         tokens_fingerprint=first.tokens_fingerprint, manifest=manifest)

    @torch.no_grad()
    def log_probs(self, wavs, wav_lens, precision="fp32"):
        """Each teacher's ``((batch, frames_i, V_i) log-probs, (batch,) frames)`` at its own rate.

        Runs in full precision whatever autocast the training step uses, so
        online teachers give what their cache would; ``precision`` (``bf16``,
        ``fp16``) autocasts them instead (caching with ``--precision``).
        """
        wavs, wav_lens = wavs.to(self.device), wav_lens.to(self.device)
        with autocast(precision, self.device):
            return [teacher.log_probs(wavs.float(), wav_lens) for teacher in self.teachers]

    @torch.no_grad()
    def log_probs_and_states(self, wavs, wav_lens, layers):
        """Each teacher's ``(log-probs, frames, {layer: (batch, frames_i, dim)})`` (see :meth:`log_probs`)."""
        wavs, wav_lens = wavs.to(self.device), wav_lens.to(self.device)
        with torch.autocast(device_type=torch.device(self.device).type, enabled=False):
            return [teacher.log_probs_and_states(wavs.float(), wav_lens, layers) for teacher in self.teachers]

    def teacher_batch(self, batch, device=None, layers=()):
        """The teachers run on ``batch``'s :attr:`signal`, in a cache's form (top-k, fp16-rounded).

        With ``layers``, the batch also holds ``states``: ``{layer: [(batch, frames_i, dim_i) per teacher]}``
        (full precision; online only, a posterior cache stores no states).
        """
        wavs, wav_lens = getattr(batch, self.signal)
        if layers:
            outputs = self.log_probs_and_states(wavs, wav_lens, layers)
            states = {name: [out[2][name] for out in outputs] for name in layers}
        else:
            outputs = self.log_probs(wavs, wav_lens)
        teacher = teacher_batch_from_log_probs([out[0] for out in outputs], [out[1] for out in outputs], self.k)
        if layers:
            teacher["states"] = states
        if device is not None:
            teacher = {key: (value.to(device) if torch.is_tensor(value) else
                             {name: [s.to(device) for s in per] for name, per in value.items()})
                       for key, value in teacher.items()}
        if hasattr(batch, "id"):
            teacher["utt_ids"] = list(batch.id)  # a bad teacher output is then refused naming the utterance
        return teacher


def utterance_errors(ref, hyp):
    """``{"wer", "cer"}`` in percent of one hypothesis; an empty reference counts every word inserted."""
    if not ref.strip():
        return {"wer": 100.0 * len(hyp.split()), "cer": 100.0 * len(hyp)}
    return {"wer": 100.0 * jiwer.wer(ref, hyp), "cer": 100.0 * jiwer.cer(ref, hyp)}


def build_cache(ensemble, datasets, cache_folder, k, features, batch_size=16, dev_split="dev",
                manifest=None, precision="fp32", shard_utts=256):
    """Run every teacher once over ``datasets`` and store top-k posteriors.

    Utterances already in the cache (a resumed run) are skipped; a cache made
    from other teachers or settings is refused with the difference named; a
    second run into a folder being written is refused, naming the first's pid.
    Under torchrun every rank caches its share, whole shards at a time (shard
    ``s`` goes to rank ``s % world_size``), in the batches a single process
    would form; the main rank then publishes the merged index and each
    teacher's dev WER, computed from the errors stored in the shards for every
    dev utterance (whichever run or rank cached it). The result has the index,
    values and dev WERs of a single-process cache.

    Parameters
    ----------
    ensemble : TeacherEnsemble
    datasets : dict
        Split name -> DynamicItemDataset (``sig``, ``wrd``).
    cache_folder : str
    k : int
        Tokens kept per frame (0 = full distribution).
    features : dict
        Audio/feature settings recorded in ``meta.json`` (sample rate, domain, ...).
    batch_size : int
    dev_split : str
        Split whose WER per teacher is stored for the ``weighted`` strategy.
    manifest : str, optional
        Manifest recorded in ``meta.json`` for the agreement diagnostic.
    precision : str
        ``fp32``, ``bf16`` or ``fp16``: autocast for the teachers' forward
        pass (SpeechBrain's ``--precision``); the cache stays fp16 top-k.
    shard_utts : int
        Utterances per shard.

    Returns
    -------
    speechkd.distill.cache.PosteriorCache
    """
    rank, world = distributed_rank_and_world()
    # the main rank holds the folder (a second run is refused); the other ranks work under its lock
    with folder_lock(cache_folder) if rank == 0 else contextlib.nullcontext():
        writer = open_writer_on_every_rank(cache_folder, ensemble.meta(k, features, manifest), shard_utts)
        write_shards(writer, ensemble, datasets, batch_size, precision, shard_utts, rank, world)
        publish_cache(writer, ensemble.names, datasets.get(dev_split))
    return PosteriorCache.open(cache_folder)


def write_shards(writer, ensemble, datasets, batch_size, precision, shard_utts, rank, world):
    """This rank's share of the work of :func:`build_cache`: every utterance not cached yet, shard by shard."""
    first_shard, position, planned = writer.next_shard, 0, set(writer.done_ids)
    for split, dataset in datasets.items():
        positions = {}  # utterance -> its place in the order a single process adds utterances
        for utt in dataset.data_ids:
            if utt not in planned:
                planned.add(utt)
                positions[utt] = position
                position += 1
        mine = {utt: pos for utt, pos in positions.items() if (pos // shard_utts) % world == rank}
        logger.info("caching %d of %d %s utterances on rank %d of %d (%d already cached)", len(mine),
                    len(positions), split, rank, world, len(dataset.data_ids) - len(positions))
        for batch, outputs in teacher_posteriors(ensemble, dataset, batch_size, mine, precision):
            for row, utt_id in enumerate(batch.id):
                if utt_id not in mine or utt_id in writer:
                    continue
                if not writer.pending_count:
                    writer.next_shard = first_shard + mine[utt_id] // shard_utts
                errors = []
                for teacher, (log_probs, frames) in zip(ensemble.teachers, outputs):
                    hyp = teacher.decode(ctc_greedy(log_probs[row : row + 1], frames[row : row + 1],
                                                    teacher.blank_index)[0])
                    errors.append(utterance_errors(batch.wrd[row], hyp))
                writer.add(utt_id, [lp[row, : n[row]] for lp, n in outputs], errors_per_teacher=errors)


def dev_wer_from_stored(writer, dev_set, names):
    """Each teacher's dev WER (percent) from the per-utterance errors stored in the cache's shards.

    Computed over every dev utterance, whichever run (or rank) cached it, so a
    run resumed after a kill (or a finished cache whose WER was never
    written) gets the WER of the whole dev set.

    Parameters
    ----------
    writer : speechkd.distill.cache.PosteriorCacheWriter
        With every dev utterance committed.
    dev_set : DynamicItemDataset
        The dev split (its ``wrd`` weights each utterance by its words).
    names : list of str
        Teacher names, in the cache's order.

    Returns
    -------
    dict
        Teacher name -> WER in percent.
    """
    errors, words = [0.0] * len(names), 0
    for utt_id in dev_set.data_ids:
        stored = writer.stored_errors(utt_id)
        if stored is None:
            raise ValueError(f"{writer.folder}: no teacher errors stored for dev utterance {utt_id}; "
                             "delete the cache folder to rebuild it")
        ref_words = max(len(dev_set.data[utt_id]["wrd"].split()), 1)
        words += ref_words
        for index, (wer, _cer) in enumerate(stored):
            errors[index] += wer * ref_words / 100.0
    return {name: 100.0 * errors[index] / max(words, 1) for index, name in enumerate(names)}


def distributed_rank_and_world():
    """``(rank, world_size)`` of this process: ``(0, 1)`` unless torch.distributed is initialized."""
    if not torch.distributed.is_available() or not torch.distributed.is_initialized():
        return 0, 1
    return torch.distributed.get_rank(), torch.distributed.get_world_size()


def open_writer_on_every_rank(cache_folder, meta, shard_utts):
    """The main rank opens (or creates) the cache first; the others then open it to write shards only."""
    writer = None
    if sb.utils.distributed.if_main_process():
        writer = PosteriorCacheWriter(cache_folder, meta, shard_utts=shard_utts)
    sb.utils.distributed.ddp_barrier()
    if writer is None:
        writer = PosteriorCacheWriter(cache_folder, meta, shard_utts=shard_utts, publish=False)
    sb.utils.distributed.ddp_barrier()  # nobody writes before every rank has read the committed shards
    return writer


def publish_cache(writer, names, dev_set=None):
    """Wait for every rank's shards; the main rank merges them into the index and stores the dev WERs.

    Parameters
    ----------
    writer : PosteriorCacheWriter
    names : list of str
        Teacher names, in the cache's order.
    dev_set : DynamicItemDataset, optional
        The dev split: each teacher's WER on it is computed from the errors
        stored in the shards (:func:`dev_wer_from_stored`).
    """
    writer.flush()
    sb.utils.distributed.ddp_barrier()  # every rank's shards are on disk
    if writer.publish:
        writer.reload()
        if dev_set is not None:
            writer.set_dev_wer(dev_wer_from_stored(writer, dev_set, names))
    writer.close()
    sb.utils.distributed.ddp_barrier()


@torch.no_grad()
def teacher_posteriors(ensemble, dataset, batch_size, wanted=None, precision="fp32"):
    """Yield ``(batch, [(log_probs, frames) per teacher])`` over a dataset, on the CPU.

    The audio (the ensemble's ``signal``) is read once per batch and fed to
    every teacher. Batches are the dataset's order cut every ``batch_size``
    rows; with ``wanted`` (utterance IDs), batches holding none of them are
    not read.
    """
    batches = [list(range(start, min(start + batch_size, len(dataset))))
               for start in range(0, len(dataset), batch_size)]
    if wanted is not None:
        batches = [rows for rows in batches if any(dataset.data_ids[row] in wanted for row in rows)]
    loader = sb.dataio.dataloader.make_dataloader(dataset, batch_sampler=batches)
    for batch in loader:
        wavs, wav_lens = getattr(batch, ensemble.signal)
        outputs = ensemble.log_probs(wavs, wav_lens, precision)
        yield batch, [(lp.float().cpu(), frames.cpu()) for lp, frames in outputs]


def autocast(precision, device):
    """``torch.autocast`` for SpeechBrain's ``--precision`` name (``fp32`` turns it off)."""
    dtype = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]
    return torch.autocast(torch.device(device).type, dtype=dtype, enabled=dtype is not None)


def cache_features(data_folder, teacher_domain, sample_rate=INPUT_SAMPLE_RATE):
    """What cached posteriors depend on besides the teachers and k (recorded in, and checked against, ``meta.json``).

    Parameters
    ----------
    data_folder : str
        The corpus the teachers heard (made absolute).
    teacher_domain : str
        The domain of the audio they heard (``clean`` for the clean half of parallel data).
    """
    return {"sample_rate": sample_rate, "data_folder": os.path.abspath(data_folder),
            "teacher_domain": teacher_domain}


def open_cache_for(ensemble, cache_folder, k, features, manifest=None):
    """Open a cache, refusing it unless it was made from exactly these teachers and settings."""
    if not os.path.exists(os.path.join(cache_folder, "meta.json")):
        raise FileNotFoundError(
            f"no posterior cache at {cache_folder}; run recipes/distill/cache_teachers.py first"
        )
    return PosteriorCache.open(cache_folder, expect=ensemble.meta(k, features, manifest))
