"""Teacher posterior cache: top-k log-probabilities per frame, per teacher, on disk.

Layout of a cache folder::

    meta.json            teachers (name, class, fingerprint, frame_shift_ms[, tokens]),
                         tokens {symbols, fingerprint}, features {...}, k (0 = full), dtype
    index.json           {"complete": bool, "utterances": {utt: [[shard, offset, frames], ...per teacher]}}
    teacher_errors.json  {"metrics": ["wer", "cer"], "dev_wer": {teacher: %},
                          "utterances": {utt: [[wer, cer], ...per teacher]}}
    shards/00000.t0.values.npy   (frames, width) float16 log-probabilities, best first
    shards/00000.t0.ids.npy      (frames, width) int16 token ids (absent when width == V: ids are 0..V-1)
    shards/00000.t0.rest.npy     (frames,) float32 log of the mass outside the stored columns,
                                 computed before fp16 rounding (LOG_PROB_FLOOR when width == V)
    shards/00000.json            the shard's own index, errors and the sha256 of its .npy files;
                                 its rename commits the shard

``width`` is ``k`` or, when ``k == 0`` or ``k >= V``, the teacher's full
vocabulary ``V``. Every file is written under a ``.tmp`` name and moved into
place with :func:`os.replace`; a shard counts only once its ``.json`` exists,
so a killed run leaves no half-written shard and a rerun resumes after the
last committed shard (:attr:`PosteriorCacheWriter.done_ids`).

Integrity (format version 2): every JSON file carries a ``sha256`` of its
own content (a "seal"), each shard's JSON the sha256 of its ``.npy`` files.
:meth:`PosteriorCache.open` checks the seals, the checksums and the values
of every shard (log-probabilities finite and <= 0, each frame's stored mass
plus its rest mass within :data:`MASS_TOLERANCE` of one, ids in range) and
raises :class:`CacheIntegrityError` naming the file; a cache of another
format version is refused with a message saying to rebuild it.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from collections.abc import KeysView, Sequence
from pathlib import Path

import numpy as np
import torch

FORMAT_VERSION = 2
"""2: per-frame rest mass (``.rest.npy``), sealed JSON files, per-shard checksums."""
VALUE_DTYPE = "float16"
LOG_PROB_FLOOR = -1.0e4
"""Stored log-probabilities are clamped here (fp16 has no room for -inf)."""
LOG_PROB_TOLERANCE = 1.0e-3
"""Largest stored log-probability accepted (log_softmax and fp16 rounding can give a hair above 0)."""
MASS_TOLERANCE = 1.0e-2
"""How far a frame's stored probabilities plus its rest mass may be from one (fp16 rounding is ~5e-4)."""

REBUILD_HINT = (
    "rebuild the cache with recipes/distill/cache_teachers.py for these teachers "
    "(or point the recipe at a cache built for them)"
)


class CacheIntegrityError(ValueError):
    """A cache file whose content is not what its writer wrote (checksum, values, format); names the file."""


# --------------------------------------------------------------------------- helpers
def fingerprint_module(module: torch.nn.Module) -> str:
    """Deterministic fingerprint of a module's weights.

    sha256 over the state_dict entries in name order (name, dtype, shape and raw
    bytes of each tensor), first 16 hex characters. Independent of device and of
    the order parameters were registered in.
    """
    digest = hashlib.sha256()
    state = module.state_dict()
    for name in sorted(state):
        tensor = state[name].detach().cpu().contiguous()
        digest.update(name.encode())
        digest.update(str(tensor.dtype).encode())
        digest.update(str(tuple(tensor.shape)).encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return digest.hexdigest()[:16]


def symbols_fingerprint(symbols: Sequence[str]) -> str:
    """sha256 of the newline-joined symbols, first 16 hex characters."""
    return hashlib.sha256("\n".join(symbols).encode()).hexdigest()[:16]


def make_meta(
    teachers: Sequence[dict],
    symbols: Sequence[str],
    features: dict | None = None,
    k: int = 0,
    tokens_fingerprint: str | None = None,
    manifest: str | None = None,
) -> dict:
    """Assemble a cache ``meta`` dict.

    Parameters
    ----------
    teachers : sequence of dict
        :meth:`speechkd.distill.Teacher.entry` records.
    symbols : sequence of str
        Token inventory shared by the teachers (``TokenInventory.symbols``).
    features : dict, optional
        Feature/audio settings the posteriors depend on (sample rate, domain, ...).
    k : int
        Tokens kept per frame; 0 keeps the full distribution.
    tokens_fingerprint : str, optional
        ``TokenInventory.fingerprint``; computed from ``symbols`` when omitted.
    manifest : str, optional
        The manifest the cache was built from (absolute or relative to the
        cache folder); ``speechkd teachers agreement`` reads transcripts from it.
        Informational: not compared by :meth:`PosteriorCache.open`.
    """
    meta = {
        "teachers": [dict(t) for t in teachers],
        "tokens": {
            "symbols": list(symbols),
            "fingerprint": tokens_fingerprint or symbols_fingerprint(symbols),
        },
        "features": dict(features or {}),
        "k": int(k),
        "dtype": VALUE_DTYPE,
    }
    if manifest is not None:
        meta["manifest"] = str(manifest)
    return meta


def teacher_symbols(meta: dict) -> list[list[str]]:
    """Each teacher's token symbols (its own ``tokens`` entry, else the cache's)."""
    return [list(t.get("tokens", meta["tokens"])["symbols"]) for t in meta["teachers"]]


def stored_width(k: int, vocab_size: int) -> int:
    """Columns stored per frame: ``k``, or ``vocab_size`` when ``k`` is 0 or >= it."""
    return vocab_size if k <= 0 or k >= vocab_size else k


def topk_fp16(
    log_probs: torch.Tensor, k: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Keep the ``k`` most probable tokens per frame, rounded as the cache stores them.

    Used both when writing the cache and for online teachers
    (:func:`speechkd.distill.losses.teacher_batch_from_log_probs`), so both
    paths see bit-identical teacher values.

    Parameters
    ----------
    log_probs : torch.Tensor
        ``(..., V)`` log-probabilities.
    k : int
        Tokens to keep; 0 (or >= V) keeps all V in index order.

    Returns
    -------
    values : torch.Tensor
        ``(..., width)`` float16 log-probabilities (sorted best first when
        truncated), clamped at :data:`LOG_PROB_FLOOR`.
    ids : torch.Tensor
        ``(..., width)`` int16 token ids.
    rest : torch.Tensor
        ``(...)`` float32 log of the mass on the ``V - width`` tokens not kept,
        computed from the unrounded input (a log-sum-exp, so a confident
        frame keeps its small rest mass that ``1 - sum(exp(values))`` would
        lose to fp16 rounding); :data:`LOG_PROB_FLOOR` when nothing is left out.
    """
    vocab_size = log_probs.shape[-1]
    if vocab_size > np.iinfo(np.int16).max:
        raise ValueError(f"vocabulary of {vocab_size} tokens does not fit int16 token ids")
    width = stored_width(k, vocab_size)
    log_probs = log_probs.detach().float()
    if width == vocab_size:
        values = log_probs
        ids = torch.arange(vocab_size, device=log_probs.device).expand_as(log_probs)
        rest = torch.full(log_probs.shape[:-1], LOG_PROB_FLOOR, device=log_probs.device)
    else:
        values, ids = torch.topk(log_probs, width, dim=-1, sorted=True)
        others = log_probs.scatter(-1, ids, float("-inf"))
        rest = torch.logsumexp(others, dim=-1).clamp_min(LOG_PROB_FLOOR)
    return values.clamp_min(LOG_PROB_FLOOR).to(torch.float16), ids.to(torch.int16), rest


def check_finite_log_probs(log_probs: torch.Tensor, where: str) -> None:
    """Refuse NaN or +inf log-probabilities (-inf is a probability of zero), naming ``where``."""
    bad = ~(log_probs <= LOG_PROB_TOLERANCE)
    if bool(bad.any()):
        example = log_probs[bad].flatten()[0].item()
        raise ValueError(
            f"{where}: log-probabilities contain NaN, +inf or values > 0 ({int(bad.sum())}, e.g. {example}); "
            "a teacher must output finite log-probabilities"
        )


def _atomic_json(path: Path, payload: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as f:
        json.dump(payload, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _json_digest(payload: dict) -> str:
    body = {key: value for key, value in payload.items() if key != "sha256"}
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


def _atomic_sealed_json(path: Path, payload: dict) -> None:
    """Write ``payload`` with a ``sha256`` of its own content, so an edit is noticed on reading."""
    _atomic_json(path, {**payload, "sha256": _json_digest(payload)})


def read_sealed_json(path: Path) -> dict:
    """Read a JSON file written by :func:`_atomic_sealed_json`, checking its seal.

    Raises
    ------
    CacheIntegrityError
        Unreadable JSON, or content that does not match its ``sha256``; names ``path``.
    """
    try:
        with open(path) as f:
            payload = json.load(f)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise CacheIntegrityError(f"{path}: unreadable cache file ({err}); {REBUILD_HINT}") from None
    if not isinstance(payload, dict) or payload.get("sha256") != _json_digest(payload):
        raise CacheIntegrityError(
            f"{path}: content does not match its sha256 (edited or corrupted after it was written); "
            f"{REBUILD_HINT}"
        )
    return payload


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _atomic_npy(path: Path, array: np.ndarray) -> str:
    """Write ``array`` under a temporary name, fsync, rename; returns the file's sha256."""
    buffer = io.BytesIO()
    np.save(buffer, array)
    data = buffer.getvalue()
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return hashlib.sha256(data).hexdigest()


SHARD_ARRAYS = ("values", "ids", "rest")
"""The arrays of one shard and teacher, in the order :func:`topk_fp16` returns them."""


def _shard_stem(shard: int, teacher: int) -> str:
    return f"{shard:05d}.t{teacher}"


def read_meta(folder: Path) -> dict:
    """A cache's ``meta.json``, refused unless it is of this :data:`FORMAT_VERSION` and sealed."""
    path = folder / "meta.json"
    try:
        with open(path) as f:
            version = json.load(f).get("format_version")
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, AttributeError) as err:
        raise CacheIntegrityError(f"{path}: unreadable cache meta ({err}); {REBUILD_HINT}") from None
    if version != FORMAT_VERSION:
        raise CacheIntegrityError(
            f"posterior cache {folder} has format version {version}, this speechkd reads version "
            f"{FORMAT_VERSION} (which also stores each frame's rest mass and checksums): delete the folder "
            f"and {REBUILD_HINT}"
        )
    return read_sealed_json(path)


# --------------------------------------------------------------------------- meta comparison
def meta_differences(cached: dict, expect: dict) -> list[str]:
    """Human-readable differences between a cache's meta and the one asked for.

    Only keys present in ``expect`` are compared, so a partial ``expect``
    (e.g. just ``teachers``) is allowed.
    """
    diffs: list[str] = []
    if "teachers" in expect:
        have = {t["name"]: t for t in cached["teachers"]}
        want_names = [t["name"] for t in expect["teachers"]]
        have_names = [t["name"] for t in cached["teachers"]]
        if want_names != have_names:
            diffs.append(f"teachers differ: cache has {have_names} vs asked {want_names}")
        labels = {
            "fingerprint": "checkpoint fingerprint",
            "class": "class",
            "frame_shift_ms": "frame shift (ms)",
        }
        for want in expect["teachers"]:
            got = have.get(want["name"])
            if got is None:
                continue
            for key, label in labels.items():
                if key in want and got.get(key) != want[key]:
                    diffs.append(
                        f"teacher '{want['name']}' {label} differs: cache {got.get(key)} vs asked {want[key]}"
                    )
            if (
                "tokens" in want
                and got.get("tokens", cached["tokens"])["fingerprint"]
                != want["tokens"]["fingerprint"]
            ):
                diffs.append(f"teacher '{want['name']}' token inventory differs")
    if "tokens" in expect:
        got, want = cached["tokens"], expect["tokens"]
        if "fingerprint" in want and got.get("fingerprint") != want["fingerprint"]:
            diffs.append(
                f"token inventory fingerprint differs: cache {got.get('fingerprint')} vs asked {want['fingerprint']}"
            )
        elif "symbols" in want and list(got["symbols"]) != list(want["symbols"]):
            extra = sorted(set(want["symbols"]) ^ set(got["symbols"]))
            diffs.append(
                f"token inventory symbols differ (symmetric difference {extra or 'none: order differs'})"
            )
    if "features" in expect:
        got, want = cached.get("features", {}), expect["features"]
        for key in sorted(set(got) | set(want)):
            if got.get(key) != want.get(key):
                diffs.append(
                    f"feature setting '{key}' differs: cache {got.get(key)!r} vs asked {want.get(key)!r}"
                )
    for key in ("k", "dtype"):
        if key in expect and cached.get(key) != expect[key]:
            diffs.append(f"'{key}' differs: cache {cached.get(key)!r} vs asked {expect[key]!r}")
    return diffs


def _check_meta(meta: dict) -> None:
    for key in ("teachers", "tokens", "k"):
        if key not in meta:
            raise ValueError(
                f"cache meta lacks required key '{key}' (see speechkd.distill.cache.make_meta)"
            )
    names = [t["name"] for t in meta["teachers"]]
    if not names or len(set(names)) != len(names):
        raise ValueError(f"cache meta needs at least one teacher with unique names, got {names}")
    for t in meta["teachers"]:
        for key in ("name", "fingerprint", "frame_shift_ms"):
            if key not in t:
                raise ValueError(f"teacher entry {t} lacks '{key}'")


# --------------------------------------------------------------------------- writer
class PosteriorCacheWriter:
    """Write teacher posteriors shard by shard; resume after a killed run.

    Parameters
    ----------
    folder : str or Path
        Cache folder (created). If it already holds a cache with the same meta,
        writing resumes: utterances in committed shards are listed in
        :attr:`done_ids` and :meth:`add` skips them. A different meta raises
        ``ValueError`` naming the difference.
    meta : dict
        See :func:`make_meta`.
    shard_utts : int
        Utterances per shard.
    publish : bool
        Whether this writer maintains the folder's ``index.json`` and
        ``teacher_errors.json``. A rank writing its share of a sharded cache
        writes its shards only (``publish=False``); the main rank then calls
        :meth:`reload` and :meth:`close` to publish the merged index.

    Examples
    --------
    >>> with PosteriorCacheWriter(folder, meta) as writer:          # doctest: +SKIP
    ...     for utt, per_teacher in batches:
    ...         if utt not in writer.done_ids:
    ...             writer.add(utt, per_teacher, errors_per_teacher=[{"wer": 10.0, "cer": 3.1}, ...])
    ...     writer.set_dev_wer({"conformer": 8.2, "crdnn": 11.0})
    """

    def __init__(self, folder: str | os.PathLike, meta: dict, shard_utts: int = 256, publish: bool = True):
        _check_meta(meta)
        self.folder = Path(folder)
        self.shard_dir = self.folder / "shards"
        self.shard_dir.mkdir(parents=True, exist_ok=True)
        self.meta = {**meta, "dtype": VALUE_DTYPE, "format_version": FORMAT_VERSION}
        self.shard_utts = int(shard_utts)
        self.vocab_sizes = [len(s) for s in teacher_symbols(self.meta)]
        self.widths = [stored_width(self.meta["k"], v) for v in self.vocab_sizes]
        self.n_teachers = len(self.meta["teachers"])
        meta_path = self.folder / "meta.json"
        if meta_path.exists():
            existing = read_meta(self.folder)
            diffs = meta_differences(existing, self.meta)
            if diffs:
                raise ValueError(
                    f"cache at {self.folder} was built for different settings: "
                    + "; ".join(diffs)
                    + "; delete the folder (or write to another one) to rebuild the cache for these teachers"
                )
        else:
            _atomic_sealed_json(meta_path, self.meta)
        self.publish = publish
        if publish:  # a rank writing shards only must not remove the other ranks' files in flight
            for stale in self.shard_dir.glob("*.tmp"):
                stale.unlink()
        self.reload()
        self._dev_wer: dict[str, float] | None = None
        errors_path = self.folder / "teacher_errors.json"
        if errors_path.exists():
            self._dev_wer = read_sealed_json(errors_path).get("dev_wer")
        self._pending: list[
            tuple[str, list[tuple[np.ndarray, np.ndarray, np.ndarray]], list[list[float]] | None]
        ] = []
        self._pending_ids: set[str] = set()
        self.closed = False

    def reload(self) -> None:
        """Rebuild the index and per-utterance errors from the committed shards on disk.

        Sets :attr:`next_shard` past the highest shard found: the number the
        next flushed shard gets (a rank of a sharded build sets it to the
        shard it writes next).
        """
        self._index: dict[str, list[list[int]]] = {}
        self._errors: dict[str, list[list[float]]] = {}
        self.next_shard = 0
        for shard_json in sorted(self.shard_dir.glob("*.json")):
            shard = read_sealed_json(shard_json)
            for utt, spans in shard["utterances"].items():
                self._index[utt] = [[shard["shard"], off, n] for off, n in spans]
            self._errors.update(shard.get("errors", {}))
            self.next_shard = max(self.next_shard, shard["shard"] + 1)

    @property
    def done_ids(self) -> KeysView[str]:
        """Utterance IDs already committed to disk (skipped by :meth:`add`).

        A live set-like view (O(1) ``in``), updated as shards are committed.
        """
        return self._index.keys()

    def __contains__(self, utt_id: str) -> bool:
        return utt_id in self._index or utt_id in self._pending_ids

    @property
    def pending_count(self) -> int:
        """Utterances queued for the next shard."""
        return len(self._pending)

    def add(
        self,
        utt_id: str,
        log_probs_per_teacher: Sequence[np.ndarray | torch.Tensor],
        errors_per_teacher: Sequence[dict | Sequence[float]] | None = None,
    ) -> bool:
        """Queue one utterance; flushes a shard every ``shard_utts`` utterances.

        Parameters
        ----------
        utt_id : str
        log_probs_per_teacher : sequence of array
            One ``(T_i, V_i)`` log-probability array per teacher (meta order),
            unpadded, each at that teacher's own frame rate.
        errors_per_teacher : sequence, optional
            Per teacher ``{"wer": %, "cer": %}`` (or ``(wer, cer)``) against the
            transcript; used by the ``best`` strategy.

        Returns
        -------
        bool
            False if the utterance was already cached (skipped), else True.
        """
        if self.closed:
            raise RuntimeError("cannot add to a closed PosteriorCacheWriter")
        if utt_id in self:
            return False
        if len(log_probs_per_teacher) != self.n_teachers:
            raise ValueError(
                f"utterance {utt_id}: got posteriors from {len(log_probs_per_teacher)} teachers, "
                f"the cache has {self.n_teachers}"
            )
        stored = []
        for i, lp in enumerate(log_probs_per_teacher):
            name = self.meta["teachers"][i]["name"]
            lp = torch.as_tensor(lp)
            if lp.dim() != 2 or lp.shape[1] != self.vocab_sizes[i] or lp.shape[0] == 0:
                raise ValueError(
                    f"utterance {utt_id}, teacher '{name}': expected (frames>0, {self.vocab_sizes[i]}) "
                    f"log-probabilities, got shape {tuple(lp.shape)}"
                )
            check_finite_log_probs(lp, f"utterance {utt_id}, teacher '{name}'")
            stored.append(tuple(x.cpu().numpy() for x in topk_fp16(lp, self.meta["k"])))
        errors = None
        if errors_per_teacher is not None:
            if len(errors_per_teacher) != self.n_teachers:
                raise ValueError(
                    f"utterance {utt_id}: errors for {len(errors_per_teacher)} teachers, need {self.n_teachers}"
                )
            errors = [
                [float(e["wer"]), float(e["cer"])]
                if isinstance(e, dict)
                else [float(e[0]), float(e[1])]
                for e in errors_per_teacher
            ]
        self._pending.append((utt_id, stored, errors))
        self._pending_ids.add(utt_id)
        if len(self._pending) >= self.shard_utts:
            self.flush()
        return True

    def stored_errors(self, utt_id: str) -> list[list[float]] | None:
        """Per teacher ``[wer, cer]`` committed for an utterance (any run), None if none were stored."""
        return self._errors.get(utt_id)

    def set_dev_wer(self, dev_wer: dict[str, float] | Sequence[float]) -> None:
        """Record each teacher's dev-set WER (percent), for the ``weighted`` strategy."""
        names = [t["name"] for t in self.meta["teachers"]]
        if not isinstance(dev_wer, dict):
            dev_wer = dict(zip(names, dev_wer, strict=True))
        missing = [n for n in names if n not in dev_wer]
        if missing:
            raise ValueError(f"dev WER missing for teacher(s) {missing}")
        self._dev_wer = {n: float(dev_wer[n]) for n in names}
        self._write_errors()

    def flush(self) -> None:
        """Write the queued utterances as one shard and commit it."""
        if not self._pending:
            return
        shard = self.next_shard
        shard_index: dict[str, list[list[int]]] = {}
        files: dict[str, str] = {}
        for teacher in range(self.n_teachers):
            offset = 0
            for utt, stored, _ in self._pending:
                frames = stored[teacher][0].shape[0]
                shard_index.setdefault(utt, []).append([offset, frames])
                offset += frames
            stem = _shard_stem(shard, teacher)
            for column, kind in enumerate(SHARD_ARRAYS):
                if kind == "ids" and self.widths[teacher] == self.vocab_sizes[teacher]:
                    continue
                name = f"{stem}.{kind}.npy"
                array = np.concatenate([stored[teacher][column] for _, stored, _ in self._pending])
                files[name] = _atomic_npy(self.shard_dir / name, array)
        errors = {utt: err for utt, _, err in self._pending if err is not None}
        _atomic_sealed_json(
            self.shard_dir / f"{shard:05d}.json",
            {"shard": shard, "utterances": shard_index, "errors": errors, "files": files},
        )
        for utt, spans in shard_index.items():
            self._index[utt] = [[shard, off, n] for off, n in spans]
        self._errors.update(errors)
        self._pending, self._pending_ids = [], set()
        self.next_shard += 1
        self._write_index(complete=False)
        self._write_errors()

    def _write_index(self, complete: bool) -> None:
        if not self.publish:
            return
        _atomic_sealed_json(self.folder / "index.json", {"complete": complete, "utterances": self._index})

    def _write_errors(self) -> None:
        if not self.publish:
            return
        _atomic_sealed_json(
            self.folder / "teacher_errors.json",
            {"metrics": ["wer", "cer"], "dev_wer": self._dev_wer, "utterances": self._errors},
        )

    def close(self) -> None:
        """Flush the last shard and mark the cache complete."""
        if self.closed:
            return
        self.flush()
        self._write_index(complete=True)
        self._write_errors()
        self.closed = True

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()


# --------------------------------------------------------------------------- reader
class PosteriorCache:
    """Read-only, memory-mapped access to a posterior cache. Use :meth:`open`."""

    def __init__(self, folder: Path, meta: dict, index: dict, errors: dict):
        self.folder = folder
        self.meta = meta
        self._index = index
        self._errors = errors.get("utterances", {})
        self.dev_wer: dict[str, float] | None = errors.get("dev_wer")
        self.teacher_names = [t["name"] for t in meta["teachers"]]
        self.frame_shifts_ms = [t["frame_shift_ms"] for t in meta["teachers"]]
        self.symbols = teacher_symbols(meta)
        self.vocab_sizes = [len(s) for s in self.symbols]
        self.k = int(meta["k"])
        self.widths = [stored_width(self.k, v) for v in self.vocab_sizes]
        self._maps: dict[tuple[int, int], tuple[np.ndarray, np.ndarray | None, np.ndarray]] = {}
        self._full_ids = [
            np.broadcast_to(np.arange(v, dtype=np.int16), (1, v)) for v in self.vocab_sizes
        ]

    @classmethod
    def open(
        cls,
        folder: str | os.PathLike,
        expect: dict | None = None,
        allow_incomplete: bool = False,
        verify: bool = True,
    ) -> PosteriorCache:
        """Open a cache, checking it was built for the teachers/settings in ``expect``.

        Parameters
        ----------
        folder : str or Path
        expect : dict, optional
            The meta asked for (:func:`make_meta`); each difference is named.
        allow_incomplete : bool
            Open a cache whose writer was never closed.
        verify : bool
            Check every shard up front (:meth:`verify`); reading then never
            meets a corrupt shard mid-epoch. 2.6-5.8 s per GB of shards
            (benchmarks/RESULTS.md, "Cost of verifying a cache when it is opened").

        Raises
        ------
        FileNotFoundError
            No cache in ``folder``.
        CacheIntegrityError
            Another format version, a file edited or corrupted since it was
            written, or values that are no log-probabilities; names the file.
        ValueError
            ``expect`` differs from the cache's meta (the message names each
            differing key), or the writer was never closed (unless
            ``allow_incomplete``).
        """
        folder = Path(folder)
        if not (folder / "meta.json").exists():
            raise FileNotFoundError(f"no posterior cache at {folder} (meta.json missing)")
        meta = read_meta(folder)
        if expect is not None:
            diffs = meta_differences(meta, expect)
            if diffs:
                raise ValueError(
                    f"posterior cache {folder} does not match: "
                    + "; ".join(diffs)
                    + f"; {REBUILD_HINT}"
                )
        index = {"complete": False, "utterances": {}}
        if (folder / "index.json").exists():
            index = read_sealed_json(folder / "index.json")
        if not index["complete"] and not allow_incomplete:
            raise ValueError(
                f"posterior cache {folder} is incomplete ({len(index['utterances'])} utterances committed, "
                f"writer never closed); rerun the caching step to resume it"
            )
        errors: dict = {}
        if (folder / "teacher_errors.json").exists():
            errors = read_sealed_json(folder / "teacher_errors.json")
        cache = cls(folder, meta, index["utterances"], errors)
        if verify:
            cache.verify()
        return cache

    def verify(self) -> None:
        """Check every shard the index uses: seal, file checksums, values, and the index's spans.

        Raises
        ------
        CacheIntegrityError
            Naming the shard file (or the shard's JSON) that fails.
        """
        ends: dict[tuple[int, int], int] = {}
        for spans in self._index.values():
            for teacher, (shard, offset, frames) in enumerate(spans):
                ends[shard, teacher] = max(ends.get((shard, teacher), 0), offset + frames)
        for shard in sorted({shard for shard, _ in ends}):
            shard_json = self.folder / "shards" / f"{shard:05d}.json"
            if not shard_json.exists():
                raise CacheIntegrityError(f"{shard_json}: missing, but index.json lists utterances in it; "
                                          f"{REBUILD_HINT}")
            checksums = read_sealed_json(shard_json).get("files", {})
            for teacher in range(len(self.teacher_names)):
                for name in self._shard_files(shard, teacher):
                    path = self.folder / "shards" / name
                    if not path.exists() or checksums.get(name) != _file_sha256(path):
                        raise CacheIntegrityError(
                            f"{path}: {'missing' if not path.exists() else 'content does not match its sha256 in'}"
                            f" {shard_json.name} (corrupted or truncated after it was written); {REBUILD_HINT}"
                        )
                self._check_values(shard, teacher, ends.get((shard, teacher), 0))

    def _shard_files(self, shard: int, teacher: int) -> list[str]:
        stem = _shard_stem(shard, teacher)
        full = self.widths[teacher] == self.vocab_sizes[teacher]
        return [f"{stem}.{kind}.npy" for kind in SHARD_ARRAYS if not (full and kind == "ids")]

    def _check_values(self, shard: int, teacher: int, frames_needed: int) -> None:
        """Values are log-probabilities, each frame's mass (stored + rest) is one, ids are tokens."""
        values, ids, rest = self._arrays(shard, teacher)
        stem = self.folder / "shards" / _shard_stem(shard, teacher)
        if values.shape[0] < frames_needed or rest.shape != values.shape[:1]:
            raise CacheIntegrityError(f"{stem}.values.npy: {values.shape[0]} frames, the index needs "
                                      f"{frames_needed} (rest: {rest.shape[0]}); {REBUILD_HINT}")
        largest = max(float(values.max(initial=LOG_PROB_FLOOR)), float(rest.max(initial=LOG_PROB_FLOOR)))
        if not largest <= LOG_PROB_TOLERANCE:
            raise CacheIntegrityError(f"{stem}.values.npy: holds {largest}, not a log-probability (finite, <= 0); "
                                      f"{REBUILD_HINT}")
        mass = np.exp(values.astype(np.float32)).sum(-1) + np.exp(rest.astype(np.float32))
        off = np.abs(mass - 1.0) > MASS_TOLERANCE
        if off.any():
            frame = int(np.argmax(off))
            raise CacheIntegrityError(
                f"{stem}.values.npy: frame {frame} holds probability mass {mass[frame]:.4f} (stored + rest), "
                f"not 1; {int(off.sum())} such frames; {REBUILD_HINT}"
            )
        if ids is not None and ids.size and (ids.min() < 0 or ids.max() >= self.vocab_sizes[teacher]):
            raise CacheIntegrityError(f"{stem}.ids.npy: token ids outside 0..{self.vocab_sizes[teacher] - 1}; "
                                      f"{REBUILD_HINT}")

    def __len__(self) -> int:
        return len(self._index)

    def __contains__(self, utt_id: str) -> bool:
        return utt_id in self._index

    @property
    def utt_ids(self) -> list[str]:
        return list(self._index)

    def _arrays(self, shard: int, teacher: int) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
        """Memory-mapped ``(values, ids or None, rest)`` of one shard and teacher."""
        key = (shard, teacher)
        if key not in self._maps:
            arrays = {}
            for name in self._shard_files(shard, teacher):
                path = self.folder / "shards" / name
                try:
                    arrays[name.split(".")[-2]] = np.load(path, mmap_mode="r")
                except (OSError, ValueError) as err:  # missing, truncated or not an .npy file
                    raise CacheIntegrityError(f"{path}: unreadable cache shard ({err}); {REBUILD_HINT}") from None
            self._maps[key] = (arrays["values"], arrays.get("ids"), arrays["rest"])
        return self._maps[key]

    def frames(self, utt_id: str) -> list[int]:
        """Frames per teacher (each at its own rate)."""
        return [n for _, _, n in self._entry(utt_id)]

    def _entry(self, utt_id: str) -> list[list[int]]:
        try:
            return self._index[utt_id]
        except KeyError:
            raise KeyError(
                f"utterance {utt_id!r} is not in the posterior cache {self.folder}"
            ) from None

    def get(self, utt_id: str) -> list[tuple[np.ndarray, np.ndarray]]:
        """Per teacher ``(values, ids)``: ``(T_i, width)`` float16 log-probs and int16 ids.

        Memory-mapped slices (no copy); for full caches ``ids`` is a read-only
        broadcast of ``0..V-1``.
        """
        out = []
        for teacher, (shard, offset, frames) in enumerate(self._entry(utt_id)):
            values, ids, _ = self._arrays(shard, teacher)
            values = values[offset : offset + frames]
            if ids is None:
                ids = np.broadcast_to(self._full_ids[teacher], values.shape)
            else:
                ids = ids[offset : offset + frames]
            out.append((values, ids))
        return out

    def rest_log_probs(self, utt_id: str) -> list[np.ndarray]:
        """Per teacher ``(T_i,)`` float32 log of the mass outside the stored columns (see :func:`topk_fp16`)."""
        return [self._arrays(shard, teacher)[2][offset : offset + frames]
                for teacher, (shard, offset, frames) in enumerate(self._entry(utt_id))]

    def require(self, utt_ids, what: str) -> None:
        """Refuse, up front, utterances the cache lacks (naming a few of them and ``what`` needs them)."""
        missing = [utt for utt in utt_ids if utt not in self._index]
        if missing:
            raise ValueError(
                f"{len(missing)} utterances of {what} are not in the posterior cache {self.folder}, "
                f"e.g. {missing[:3]}; {REBUILD_HINT}"
            )

    def teacher_error(self, utt_id: str, metric: str = "wer") -> np.ndarray | None:
        """``(teachers,)`` error (``"wer"`` or ``"cer"``, percent) of each teacher on the utterance, or None."""
        column = {"wer": 0, "cer": 1}[metric]
        errors = self._errors.get(utt_id)
        if errors is None:
            return None
        return np.array([e[column] for e in errors], dtype=np.float64)

    def dev_wer_list(self) -> list[float] | None:
        """Dev WER per teacher in meta order, or None when not recorded."""
        if not self.dev_wer:
            return None
        return [self.dev_wer[n] for n in self.teacher_names]

    def teacher_batch(self, batch, device: str | torch.device | None = None) -> dict:
        """The cached teachers of a SpeechBrain batch (by ``batch.id``): what online teachers would give."""
        return self.collate(batch.id, device=device)

    def collate(self, utt_ids: Sequence[str], device: str | torch.device | None = None) -> dict:
        """Padded teacher tensors for a batch (the ``teacher`` argument of the KD loss).

        Returns
        -------
        dict
            ``log_probs`` ``(batch, teachers, time, width)`` float32;
            ``ids`` ``(batch, teachers, time, width)`` long; ``frames``
            ``(batch, teachers)`` long, valid frames of each teacher at its own
            rate; ``rest_log_probs`` ``(batch, teachers, time)`` float32, log of
            the mass outside the stored columns; ``teacher_wer`` / ``teacher_cer`` ``(batch, teachers)``
            float32 (NaN where not recorded); ``utt_ids``. ``time`` is the
            longest teacher sequence in the batch, ``width`` the widest
            teacher. Padding frames put probability one on token 0 (blank),
            padding columns hold :data:`LOG_PROB_FLOOR` on token 0.
        """
        per_utt = [self.get(u) for u in utt_ids]
        frames = np.array(
            [[v.shape[0] for v, _ in teachers] for teachers in per_utt], dtype=np.int64
        )
        width = max(self.widths)
        batch, n_teachers, time = len(utt_ids), len(self.teacher_names), int(frames.max())
        values = np.full((batch, n_teachers, time, width), LOG_PROB_FLOOR, dtype=np.float32)
        values[..., 0] = 0.0
        ids = np.zeros((batch, n_teachers, time, width), dtype=np.int64)
        rest = np.full((batch, n_teachers, time), LOG_PROB_FLOOR, dtype=np.float32)
        for b, (utt, teachers) in enumerate(zip(utt_ids, per_utt)):
            for i, ((v, t), r) in enumerate(zip(teachers, self.rest_log_probs(utt))):
                values[b, i, : v.shape[0], : v.shape[1]] = v
                values[b, i, : v.shape[0], v.shape[1] :] = LOG_PROB_FLOOR
                ids[b, i, : t.shape[0], : t.shape[1]] = t
                rest[b, i, : r.shape[0]] = r
        errors = {}
        for metric in ("wer", "cer"):
            rows = [self.teacher_error(u, metric) for u in utt_ids]
            errors[f"teacher_{metric}"] = torch.tensor(
                np.stack([r if r is not None else np.full(n_teachers, np.nan) for r in rows]),
                dtype=torch.float32,
            )
        out = {
            "log_probs": torch.from_numpy(values),
            "ids": torch.from_numpy(ids),
            "frames": torch.from_numpy(frames),
            "rest_log_probs": torch.from_numpy(rest),
            **errors,
        }
        if device is not None:
            out = {k: v.to(device) for k, v in out.items()}
        out["utt_ids"] = list(utt_ids)
        return out
