"""Torch-free runtime for exported speechkd models: numpy + soundfile + onnxruntime.

Importing this module never imports torch (a test checks ``sys.modules`` in
a fresh interpreter), so it is what a device or a server ships with the
``.onnx`` files written by ``speechkd export``.

Whole-utterance transcription::

    asr = OnnxRecognizer("export/model.int8.onnx")
    print(asr.transcribe(read_audio("a.wav", asr.sample_rate)))

Streaming (``model.stream.onnx`` / ``model.stream.int8.onnx`` of a
:class:`~speechkd.models.StreamingStudent`)::

    streamer = OnnxStreamer("export/model.stream.int8.onnx")
    stream = streamer.start()
    for block in microphone_blocks():           # any block sizes, float32 16 kHz
        print(stream.accept(block))             # text so far
    print(stream.finish())

Command line (console script ``speechkd-run``)::

    speechkd-run export/model.int8.onnx a.wav b.flac
    speechkd-run --stream export/model.stream.int8.onnx a.wav
    speechkd-run --resample --downmix export/model.onnx phone_8k_stereo.wav
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence

import numpy as np
import onnxruntime as ort
import soundfile as sf

from speechkd.resampling import resample

BLANK_INDEX = 0
UNK = "<unk>"
"""Stands for characters the training inventory lacked; never written in a transcript."""


class AudioInputError(ValueError):
    """An input file the model cannot take as it is; the message names the file and the fix."""


class ModelFileError(ValueError):
    """An ``.onnx`` file that is not a speechkd export of the kind asked for."""


# --------------------------------------------------------------------------- decoding


def ctc_greedy_ids(
    log_probs: np.ndarray, previous: int = BLANK_INDEX, blank: int = BLANK_INDEX
) -> tuple[list[int], int]:
    """Best-path CTC decoding of one utterance (or one more piece of it).

    Parameters
    ----------
    log_probs : np.ndarray
        (frames, vocab) log-probabilities (or logits: only the argmax matters).
    previous : int
        Best token of the frame before ``log_probs[0]`` (``blank`` at the
        start); lets a stream be decoded piece by piece.
    blank : int
        Index of the CTC blank.

    Returns
    -------
    ids : list of int
        Tokens after merging repeats and dropping blanks.
    last : int
        Best token of the last frame, to pass as ``previous`` next time.
    """
    best = np.asarray(log_probs).argmax(axis=-1)
    if best.size == 0:
        return [], previous
    shifted = np.concatenate([[previous], best[:-1]])
    keep = (best != blank) & (best != shifted)
    return best[keep].tolist(), int(best[-1])


def ids_to_text(ids: Sequence[int], tokens: Sequence[str], blank: int = BLANK_INDEX) -> str:
    """Characters of ``ids`` (blanks and ``<unk>`` skipped), as ``TokenInventory.decode``."""
    return "".join(tokens[i] for i in ids if i != blank and tokens[i] != UNK)


# --------------------------------------------------------------------------- audio


def read_audio(
    path: str,
    sample_rate: int,
    resample_to_rate: bool = False,
    downmix: bool = False,
    min_samples: int = 1,
) -> np.ndarray:
    """Read a mono waveform at ``sample_rate``, or explain what is wrong with the file.

    Parameters
    ----------
    path : str
        Any format soundfile reads (wav, flac, ogg, ...).
    sample_rate : int
        Rate the model needs.
    resample_to_rate : bool
        Convert another sample rate instead of refusing it.
    downmix : bool
        Average the channels of a multi-channel file instead of refusing it.
    min_samples : int
        Fewest samples (after resampling) the model can take.

    Returns
    -------
    np.ndarray
        (samples,) float32 in [-1, 1].

    Raises
    ------
    AudioInputError
        Missing, unreadable, empty, too short, wrong-rate or multi-channel
        audio, or NaN/infinite samples, with the option that fixes it where there is one.
    """
    if not os.path.exists(path):
        raise AudioInputError(f"{path}: no such file")
    if os.path.isdir(path):
        raise AudioInputError(f"{path}: is a folder, not an audio file")
    try:
        audio, rate = sf.read(path, dtype="float32", always_2d=True)
    except Exception as err:  # noqa: BLE001 (soundfile raises several types for bad files)
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise AudioInputError(
            f"{path}: not an audio file soundfile can read ({reason}); give a wav, flac or ogg file"
        ) from None
    if audio.shape[0] == 0:
        raise AudioInputError(f"{path}: empty audio (0 samples)")
    if not np.isfinite(audio).all():
        raise AudioInputError(f"{path}: {int((~np.isfinite(audio)).sum())} NaN or infinite samples")
    if audio.shape[1] != 1:
        if not downmix:
            raise AudioInputError(
                f"{path}: {audio.shape[1]} channels, the model needs mono; "
                "rerun with --downmix to average the channels"
            )
        audio = audio.mean(axis=1, keepdims=True)
    audio = audio[:, 0]
    if rate != sample_rate:
        if not resample_to_rate:
            raise AudioInputError(
                f"{path}: sample rate {rate} Hz, the model needs {sample_rate} Hz; "
                "rerun with --resample to convert it"
            )
        audio = resample(audio, rate, sample_rate)
    if len(audio) < min_samples:
        raise AudioInputError(
            f"{path}: {len(audio)} samples ({1000 * len(audio) / sample_rate:.1f} ms) is shorter "
            f"than the {min_samples} samples ({1000 * min_samples / sample_rate:.0f} ms) "
            "the model needs for one frame"
        )
    return np.ascontiguousarray(audio, dtype=np.float32)


# --------------------------------------------------------------------------- models


def make_session(path: str, threads: int | None = None) -> ort.InferenceSession:
    """CPU onnxruntime session with ``threads`` intra-op threads (``None``: onnxruntime's choice)."""
    if not os.path.isfile(path):
        raise ModelFileError(f"{path}: no such model file")
    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    options.log_severity_level = 3
    try:
        return ort.InferenceSession(path, sess_options=options, providers=["CPUExecutionProvider"])
    except Exception as err:  # noqa: BLE001 (onnxruntime raises its own unexported types)
        raise ModelFileError(f"{path}: onnxruntime cannot load it ({err})") from None


def model_metadata(session: ort.InferenceSession, path: str) -> dict:
    """The speechkd metadata of an exported model, values decoded from JSON."""
    raw = session.get_modelmeta().custom_metadata_map
    if "speechkd_graph" not in raw:
        raise ModelFileError(f"{path}: not a speechkd export (no speechkd metadata)")
    return {key: json.loads(value) for key, value in raw.items()}


class _ExportedModel:
    """Session + metadata shared by the whole-utterance and streaming runners."""

    graph_kind = ""

    def __init__(self, path: str, threads: int | None = None):
        self.path = path
        self.session = make_session(path, threads)
        self.metadata = model_metadata(self.session, path)
        if self.metadata["speechkd_graph"] != self.graph_kind:
            raise ModelFileError(self._wrong_kind_message())
        self.tokens: list[str] = self.metadata["tokens"]
        self.sample_rate: int = self.metadata["sample_rate"]
        self.hop_length: int = self.metadata["hop_length"]
        self.frame_shift_ms: int = self.metadata["frame_shift_ms"]
        self.subsampling: int = self.metadata["subsampling"]
        self.name: str = self.metadata["model_name"]

    def _wrong_kind_message(self) -> str:
        return f"{self.path}: a {self.metadata['speechkd_graph']} graph, expected {self.graph_kind}"

    @property
    def min_samples(self) -> int:
        """Fewest samples giving one output frame."""
        return self.hop_length

    def output_frames(self, n_samples: int) -> int:
        """Valid output frames of ``n_samples`` samples (as ``AcousticModel.output_frames``)."""
        frames = n_samples // self.hop_length
        stages = self.subsampling.bit_length() - 1
        for _ in range(stages):
            frames = (frames + 1) // 2
        return frames

    def decode(self, log_probs: np.ndarray) -> str:
        """Greedy transcript of (frames, vocab) log-probs."""
        return ids_to_text(ctc_greedy_ids(log_probs)[0], self.tokens)


class OnnxRecognizer(_ExportedModel):
    """Whole-utterance model (``model.onnx`` / ``model.int8.onnx``).

    Parameters
    ----------
    path : str
        ONNX file written by ``speechkd export``.
    threads : int, optional
        onnxruntime intra-op threads.
    """

    graph_kind = "whole"

    def _wrong_kind_message(self) -> str:
        return (
            f"{self.path} is a streaming (chunk) graph; without --stream use the "
            "whole-utterance model.onnx / model.int8.onnx"
        )

    def log_probs_batch(
        self, wavs: np.ndarray, wav_lens: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Run a padded batch.

        Parameters
        ----------
        wavs : np.ndarray
            (batch, samples) float32.
        wav_lens : np.ndarray
            (batch,) int64 valid samples per row.

        Returns
        -------
        log_probs : np.ndarray
            (batch, frames, vocab).
        out_lens : np.ndarray
            (batch,) valid frames per row.
        """
        log_probs, out_lens = self.session.run(
            None, {"wavs": np.asarray(wavs, np.float32), "wav_lens": np.asarray(wav_lens, np.int64)}
        )
        return log_probs, out_lens

    def log_probs(self, wav: np.ndarray) -> np.ndarray:
        """(samples,) float32 -> (frames, vocab) log-probs of one utterance."""
        if len(wav) < self.min_samples:
            raise AudioInputError(
                f"{len(wav)} samples is shorter than one frame ({self.min_samples})"
            )
        log_probs, out_lens = self.log_probs_batch(wav[None, :], np.array([len(wav)]))
        return log_probs[0, : int(out_lens[0])]

    def transcribe(self, wav: np.ndarray) -> str:
        """(samples,) float32 at :attr:`sample_rate` -> greedy transcript."""
        return self.decode(self.log_probs(wav))


class OnnxStreamer(_ExportedModel):
    """Streaming model (``model.stream.onnx``): one fixed-size chunk per call, state carried.

    Parameters
    ----------
    path : str
        Streaming ONNX file written by ``speechkd export`` for a StreamingStudent.
    threads : int, optional
        onnxruntime intra-op threads.
    """

    graph_kind = "streaming"

    def __init__(self, path: str, threads: int | None = None):
        super().__init__(path, threads)
        self.chunk_samples: int = self.metadata["chunk_samples"]
        self.state_names: list[str] = self.metadata["state_inputs"]
        self.state_outputs: list[str] = self.metadata["state_outputs"]
        shapes = {i.name: i.shape for i in self.session.get_inputs()}
        self._state_shapes = [shapes[name] for name in self.state_names]

    def _wrong_kind_message(self) -> str:
        return (
            f"{self.path} is a whole-utterance graph; --stream needs the streaming export "
            "model.stream.onnx / model.stream.int8.onnx (written for StreamingStudent models)"
        )

    def initial_state(self) -> list[np.ndarray]:
        """Zero state of one stream (symbolic batch dims set to 1)."""
        return [
            np.zeros([d if isinstance(d, int) else 1 for d in shape], np.float32)
            for shape in self._state_shapes
        ]

    def run_chunk(
        self, chunk: np.ndarray, state: list[np.ndarray]
    ) -> tuple[np.ndarray, list[np.ndarray]]:
        """One chunk of exactly :attr:`chunk_samples` samples -> ((frames, vocab), new state)."""
        feeds = {"chunk": chunk[None, :].astype(np.float32, copy=False)}
        feeds.update(zip(self.state_names, state))
        log_probs, *new_state = self.session.run(None, feeds)
        return log_probs[0], new_state

    def start(self) -> Stream:
        """A new utterance."""
        return Stream(self)

    def log_probs(self, wav: np.ndarray) -> np.ndarray:
        """Whole waveform fed chunk by chunk -> (frames, vocab), equal to the whole-utterance graph."""
        stream = self.start()
        stream.accept(wav)
        stream.finish()
        return stream.log_probs

    def transcribe(self, wav: np.ndarray) -> str:
        return self.decode(self.log_probs(wav))


class Stream:
    """One utterance being recognized by an :class:`OnnxStreamer`.

    Audio is accepted in blocks of any size; every complete chunk is run at
    once and the greedy transcript grows as frames arrive.
    """

    def __init__(self, streamer: OnnxStreamer):
        self.streamer = streamer
        self.state = streamer.initial_state()
        self.pending = np.zeros(0, np.float32)
        self.n_samples = 0
        self.pieces: list[np.ndarray] = []
        self.ids: list[int] = []
        self.last_token = BLANK_INDEX
        self.finished = False

    @property
    def text(self) -> str:
        """Transcript so far."""
        return ids_to_text(self.ids, self.streamer.tokens)

    @property
    def log_probs(self) -> np.ndarray:
        """(frames, vocab) log-probs emitted so far (after :meth:`finish`: exactly the utterance's)."""
        vocab = len(self.streamer.tokens)
        frames = np.concatenate(self.pieces) if self.pieces else np.zeros((0, vocab), np.float32)
        if self.finished:
            frames = frames[: self.streamer.output_frames(self.n_samples)]
        return frames

    def accept(self, samples: np.ndarray) -> str:
        """Add (samples,) float32 audio; run every complete chunk; return the text so far."""
        if self.finished:
            raise RuntimeError("stream already finished; call OnnxStreamer.start() for a new one")
        samples = np.asarray(samples, np.float32).reshape(-1)
        self.n_samples += len(samples)
        self.pending = np.concatenate([self.pending, samples])
        size = self.streamer.chunk_samples
        while len(self.pending) >= size:
            self._run(self.pending[:size])
            self.pending = self.pending[size:]
        return self.text

    def finish(self) -> str:
        """Run the zero-padded last chunk, keep only the utterance's frames; the final text."""
        if self.finished:
            return self.text
        self.finished = True
        if len(self.pending):
            padded = np.zeros(self.streamer.chunk_samples, np.float32)
            padded[: len(self.pending)] = self.pending
            self.pending = np.zeros(0, np.float32)
            self._run(padded, final=True)
        return self.text

    def _run(self, chunk: np.ndarray, final: bool = False) -> None:
        log_probs, self.state = self.streamer.run_chunk(chunk, self.state)
        if final:  # drop the frames made of padding only
            emitted = sum(len(p) for p in self.pieces)
            log_probs = log_probs[: max(0, self.streamer.output_frames(self.n_samples) - emitted)]
        self.pieces.append(log_probs)
        new_ids, self.last_token = ctc_greedy_ids(log_probs, self.last_token)
        self.ids.extend(new_ids)


# --------------------------------------------------------------------------- command line


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="speechkd-run",
        description="Transcribe audio files with a speechkd ONNX export (no PyTorch needed).",
    )
    parser.add_argument(
        "model", help="model.onnx / model.int8.onnx (or model.stream*.onnx with --stream)"
    )
    parser.add_argument("files", nargs="+", help="16 kHz mono audio files")
    parser.add_argument(
        "--stream",
        action="store_true",
        help="feed the audio chunk by chunk and print the partial text as it grows",
    )
    parser.add_argument(
        "--block-ms",
        type=float,
        default=100.0,
        help="with --stream: audio block size handed to the recognizer (default 100 ms)",
    )
    parser.add_argument(
        "--resample",
        action="store_true",
        help="resample audio of another sample rate (soxr if installed, else FFT)",
    )
    parser.add_argument(
        "--downmix", action="store_true", help="average the channels of stereo audio"
    )
    parser.add_argument("--threads", type=int, default=None, help="onnxruntime intra-op threads")
    return parser


def _transcribe_streaming(
    streamer: OnnxStreamer, path: str, wav: np.ndarray, block: int, out
) -> str:
    """Feed ``wav`` in blocks of ``block`` samples, printing each new partial text."""
    interactive = out.isatty()
    stream, shown = streamer.start(), None
    for start in range(0, len(wav), block):
        text = stream.accept(wav[start : start + block])
        if text != shown:
            seconds = min(len(wav), start + block) / streamer.sample_rate
            if interactive:
                out.write(f"\r{path}\t{text}")
            else:
                out.write(f"{path}\t[{seconds:.2f}s]\t{text}\n")
            out.flush()
            shown = text
    final = stream.finish()
    if interactive:
        out.write("\r\x1b[K")
    return final


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``speechkd-run`` console script; returns the exit status."""
    args = build_parser().parse_args(argv)
    try:
        runner = (OnnxStreamer if args.stream else OnnxRecognizer)(args.model, threads=args.threads)
    except ModelFileError as err:
        print(f"speechkd-run: error: {err}", file=sys.stderr)
        return 2
    failed = 0
    block = max(1, int(args.block_ms * runner.sample_rate / 1000))
    for path in args.files:
        try:
            wav = read_audio(
                path,
                runner.sample_rate,
                resample_to_rate=args.resample,
                downmix=args.downmix,
                min_samples=runner.min_samples,
            )
        except AudioInputError as err:
            print(f"speechkd-run: error: {err}", file=sys.stderr)
            failed += 1
            continue
        if args.stream:
            text = _transcribe_streaming(runner, path, wav, block, sys.stdout)
        else:
            text = runner.transcribe(wav)
        print(f"{path}\t{text}", flush=True)
    if failed:
        print(f"speechkd-run: {failed} of {len(args.files)} files failed", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
