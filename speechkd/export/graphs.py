"""Torch modules that define the exported graphs (ONNX and TorchScript).

Two graphs are exported:

- :class:`WholeUtteranceGraph`: raw 16 kHz waveform ``(batch, samples)`` and
  absolute lengths ``(batch,)`` -> CTC log-probabilities ``(batch, frames,
  vocab)`` and absolute output lengths ``(batch,)``. Feature extraction and
  global normalization run inside the graph.
- :class:`StreamingChunkGraph` (streaming student only): one chunk of
  ``chunk_samples`` new samples plus the carried state -> the chunk's
  log-probabilities plus the new state. The state is the last
  ``context_samples`` samples of audio (feature-window overlap), one
  left-context buffer per causal convolution and the GRU hidden state.

Both wrap the trained model's own modules. The one thing they replace is
how the log-mel front-end computes its spectrum: :class:`StftLogMel` uses
``torch.stft`` (ONNX ``STFT``, opset 17) with the front-end's own window and
mel matrix instead of the ``conv1d`` DFT basis that
:class:`~speechkd.models.features.LogMelFilterbank` uses while exporting.
Same frames, same numbers (to ~1e-5), but the graph stores a 400-sample
window instead of a (514, 1, 400) basis: 0.8 MB less per file, which is
most of a small student's size.
"""

from __future__ import annotations

import torch
from torch import nn

from speechkd.models.base import AcousticModel
from speechkd.models.features import LogMelFilterbank, relative_lengths_to_mask
from speechkd.models.student import StreamingStudent

WAV_INPUT, LENGTHS_INPUT = "wavs", "wav_lens"
LOG_PROBS_OUTPUT, OUT_LENGTHS_OUTPUT = "log_probs", "out_lens"
CHUNK_INPUT, AUDIO_CONTEXT = "chunk", "audio_context"
HIDDEN_STATE = "gru_hidden"


def conv_buffer_name(index: int) -> str:
    """Name of the ``index``-th convolution left-context buffer input."""
    return f"conv_buffer_{index}"


def new_state_name(name: str) -> str:
    """Name of the output that carries the next value of state input ``name``."""
    return f"next_{name}"


class StftLogMel(nn.Module):
    """Log-mel features of a :class:`LogMelFilterbank` computed with ``torch.stft``.

    Parameters
    ----------
    fbank : LogMelFilterbank
        The model's front-end (window, hop, DFT size, mel matrix, floor).

    Notes
    -----
    ``torch.stft`` centres a window shorter than ``n_fft`` in each
    ``n_fft``-sample frame; padding ``(n_fft - win_length) // 2`` samples on
    each side puts every window exactly where the conv1d framing has it
    (the phase shift this causes does not change the power spectrum).

    The spectrum and mel energies are computed in float64 and cast back: in
    float32, two FFT implementations (torch's, onnxruntime's) disagree by
    rounding that the log of near-silent bins lifts to ~1e-4 in the model's
    log-probs, the size of the export's parity tolerance.
    """

    def __init__(self, fbank: LogMelFilterbank):
        super().__init__()
        self.fbank = fbank
        self.centre_offset = (fbank.n_fft - fbank.win_length) // 2

    def forward(self, wavs: torch.Tensor, pad: bool = True) -> torch.Tensor:
        """Same contract as :meth:`LogMelFilterbank.forward`: (batch, samples) -> (batch, frames, n_mels)."""
        fbank = self.fbank
        left = self.centre_offset + (fbank.context_samples if pad else 0)
        right = fbank.n_fft - fbank.win_length - self.centre_offset
        wavs = nn.functional.pad(wavs, (left, right)).double()
        spec = torch.stft(
            wavs,
            n_fft=fbank.n_fft,
            hop_length=fbank.hop_length,
            win_length=fbank.win_length,
            window=fbank.window.double(),
            center=False,
            onesided=True,
            return_complex=False,
        )  # (batch, freqs, frames, 2)
        power = (spec * spec).sum(-1).transpose(1, 2)
        mel = torch.matmul(power, fbank.mel_matrix.double())
        return torch.log(torch.clamp(mel, min=fbank.log_floor)).float()


class WholeUtteranceGraph(nn.Module):
    """Waveform + absolute lengths -> log-probs + absolute output lengths.

    Parameters
    ----------
    model : AcousticModel
        Trained model, in eval mode.
    """

    def __init__(self, model: AcousticModel):
        super().__init__()
        self.model = model
        self.stft_logmel = StftLogMel(model.features)
        self.eval()  # the exporters restore the wrapper's mode onto the model: keep it eval

    def forward(
        self, wavs: torch.Tensor, wav_lens: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Run the model on a padded batch.

        Parameters
        ----------
        wavs : torch.Tensor
            (batch, samples) float32 waveforms at 16 kHz.
        wav_lens : torch.Tensor
            (batch,) int64 number of valid samples of each waveform.

        Returns
        -------
        log_probs : torch.Tensor
            (batch, frames, vocab) CTC log-probabilities.
        out_lens : torch.Tensor
            (batch,) int64 number of valid output frames.
        """
        feat_lens = self.model.feature_lengths(wav_lens, wavs.shape[1])  # as AcousticModel.forward
        feats = self.model.normalizer(self.stft_logmel(wavs))
        feats = feats * relative_lengths_to_mask(feat_lens, feats.shape[1]).unsqueeze(-1)
        log_probs = torch.log_softmax(self.model.encode(feats, feat_lens), dim=-1)
        return log_probs, self.model.output_lengths(wav_lens, wavs.shape[1])


class StreamingChunkGraph(nn.Module):
    """One fixed-size chunk of audio + carried state -> chunk log-probs + new state.

    Parameters
    ----------
    model : StreamingStudent
        Trained streaming student, in eval mode.
    chunk_frames : int
        Feature frames per chunk (a positive multiple of the model's
        subsampling); a chunk holds ``chunk_frames * hop_length`` samples.

    Notes
    -----
    Feeding the chunks of an utterance in order, starting from
    :meth:`initial_state`, and zero-padding the last chunk gives the
    whole-utterance log-probs followed by extra frames that the caller drops
    (the model is causal, so padding never changes earlier frames).
    """

    def __init__(self, model: StreamingStudent, chunk_frames: int):
        super().__init__()
        if not isinstance(model, StreamingStudent):
            raise TypeError(
                f"streaming export needs a StreamingStudent, got {type(model).__name__}"
            )
        if chunk_frames <= 0 or chunk_frames % model.subsampling:
            raise ValueError(
                f"chunk_frames must be a positive multiple of the subsampling ({model.subsampling}), "
                f"got {chunk_frames}"
            )
        self.model = model
        self.stft_logmel = StftLogMel(model.features)
        self.chunk_frames = chunk_frames
        self.chunk_samples = chunk_frames * model.features.hop_length
        self.context_samples = model.features.context_samples
        self.eval()  # the exporters restore the wrapper's mode onto the model: keep it eval

    @property
    def n_conv_buffers(self) -> int:
        return len(self.model.convs)

    @property
    def state_names(self) -> list[str]:
        """Names of the state inputs, in :meth:`forward` order."""
        return (
            [AUDIO_CONTEXT]
            + [conv_buffer_name(i) for i in range(self.n_conv_buffers)]
            + [HIDDEN_STATE]
        )

    def initial_state(self, batch: int = 1) -> list[torch.Tensor]:
        """Zero state for a new utterance, in :attr:`state_names` order."""
        buffers, hidden = self.model.init_state(batch)
        return [torch.zeros(batch, self.context_samples), *buffers, hidden]

    def forward(self, chunk: torch.Tensor, audio_context: torch.Tensor, *state: torch.Tensor):
        """Process one chunk.

        Parameters
        ----------
        chunk : torch.Tensor
            (batch, chunk_samples) new audio samples.
        audio_context : torch.Tensor
            (batch, context_samples) samples preceding the chunk (zeros at the start).
        *state : torch.Tensor
            Conv buffers (batch, channels, n_i), then the GRU hidden state
            (layers, batch, hidden).

        Returns
        -------
        tuple of torch.Tensor
            Chunk log-probs (batch, chunk_frames / subsampling, vocab), then
            the new state in :attr:`state_names` order (every state keeps its
            shape: a conv buffer always holds ``kernel_size - 1`` frames when
            chunks are a multiple of the subsampling).
        """
        *buffers, hidden = state
        audio = torch.cat([audio_context, chunk], dim=1)
        feats = self.model.normalizer(self.stft_logmel(audio, pad=False))
        logits, (new_buffers, new_hidden) = self.model.forward_chunk(
            feats, (tuple(buffers), hidden)
        )
        new_context = audio[:, audio.shape[1] - self.context_samples :]
        return (torch.log_softmax(logits, dim=-1), new_context, *new_buffers, new_hidden)
