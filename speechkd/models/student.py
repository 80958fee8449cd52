"""Compact streaming student: causal 1-D convolutions, unidirectional GRU, CTC layer.

Every layer only looks at the past, so the model runs chunk by chunk with
:meth:`StreamingStudent.forward_chunk` and gives the same output as
:meth:`StreamingStudent.encode` on the whole utterance, for any chunk sizes.
"""

from __future__ import annotations

import torch
from torch import nn

from speechkd.models.base import AcousticModel

StudentState = tuple[tuple[torch.Tensor, ...], torch.Tensor]
"""``(conv_buffers, gru_hidden)``: per conv layer the (batch, channels, n) input
frames not consumed yet (left context), and the GRU state (layers, batch, hidden)."""


class CausalConvBlock(nn.Module):
    """Conv1d over a left-padded input, ReLU, LayerNorm over channels, dropout.

    The input is seen as ``kernel_size - 1`` zeros followed by the frames;
    output ``j`` covers padded positions ``[j * stride, j * stride + kernel_size)``.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int,
                 dropout: float):
        super().__init__()
        self.kernel_size, self.stride, self.in_channels = kernel_size, stride, in_channels
        self.conv = nn.Conv1d(in_channels, out_channels, kernel_size, stride=stride)
        self.norm = nn.LayerNorm(out_channels)
        self.dropout = nn.Dropout(dropout)

    def initial_buffer(self, batch: int, device=None, dtype=None) -> torch.Tensor:
        return torch.zeros(batch, self.in_channels, self.kernel_size - 1, device=device, dtype=dtype)

    def forward(self, x: torch.Tensor, buffer: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(batch, channels, frames), buffer -> (batch, out_channels, frames'), new buffer."""
        x = torch.cat([buffer, x], dim=2)
        n_out = (x.shape[2] - self.kernel_size) // self.stride + 1 if x.shape[2] >= self.kernel_size else 0
        new_buffer = x[:, :, n_out * self.stride:]
        if n_out == 0:
            y = x.new_zeros(x.shape[0], self.conv.out_channels, 0)
        else:
            y = self.conv(x[:, :, : (n_out - 1) * self.stride + self.kernel_size])
            y = self.norm(torch.relu(y).transpose(1, 2)).transpose(1, 2)
        return self.dropout(y), new_buffer


class StreamingStudent(AcousticModel):
    """Causal CNN + GRU student with a CTC head; streamable.

    Parameters
    ----------
    n_tokens : int
        CTC output size.
    conv_channels : int
        Width of the causal conv layers.
    conv_layers : int
        Number of causal conv layers (>= log2(subsampling)); the first
        ``log2(subsampling)`` have stride 2.
    kernel_size : int
        Kernel size of the conv layers (>= 2).
    gru_hidden, gru_layers : int
        Unidirectional GRU size.
    dropout : float
        Dropout after each conv layer and before the CTC layer.
    n_mels, subsampling : int
    f_max : float or None
        See :class:`~speechkd.models.base.AcousticModel`.

    Example
    -------
    >>> model = StreamingStudent(n_tokens=30).eval()
    >>> feats = torch.randn(1, 40, 80)
    >>> whole = model.encode(feats, torch.ones(1))
    >>> state = model.init_state(1)
    >>> a, state = model.forward_chunk(feats[:, :16], state)
    >>> b, state = model.forward_chunk(feats[:, 16:], state)
    >>> torch.allclose(torch.cat([a, b], 1), whole, atol=1e-5)
    True
    """

    def __init__(
        self,
        n_tokens: int,
        conv_channels: int = 96,
        conv_layers: int = 2,
        kernel_size: int = 3,
        gru_hidden: int = 128,
        gru_layers: int = 1,
        dropout: float = 0.1,
        n_mels: int = 80,
        f_max: float | None = None,
        subsampling: int = 2,
    ):
        super().__init__(n_tokens, n_mels=n_mels, subsampling=subsampling, f_max=f_max)
        if conv_layers < self.n_stages:
            raise ValueError(f"need at least {self.n_stages} conv layers for subsampling {subsampling}")
        if kernel_size < 2:
            raise ValueError(f"kernel_size must be >= 2 to cover a stride of 2, got {kernel_size}")
        self.convs = nn.ModuleList(
            CausalConvBlock(
                n_mels if i == 0 else conv_channels,
                conv_channels,
                kernel_size,
                stride=2 if i < self.n_stages else 1,
                dropout=dropout,
            )
            for i in range(conv_layers)
        )
        self.gru_layers, self.gru_hidden = gru_layers, gru_hidden
        self.gru = nn.GRU(conv_channels, gru_hidden, num_layers=gru_layers, batch_first=True)
        self.dropout = nn.Dropout(dropout)
        self.ctc_lin = nn.Linear(gru_hidden, n_tokens)

    def layer_taps(self):
        """``encoder`` (the GRU output), ``gru`` (the same, before dropout) and ``conv<i>`` (each conv block)."""
        taps = super().layer_taps()
        taps["gru"] = (self.gru, "output")
        taps.update({f"conv{i}": (conv, "output_channels_first") for i, conv in enumerate(self.convs)})
        return taps

    def init_state(self, batch: int) -> StudentState:
        """Zero state for a new utterance (batch of ``batch`` streams)."""
        ref = self.ctc_lin.weight
        buffers = tuple(c.initial_buffer(batch, ref.device, ref.dtype) for c in self.convs)
        hidden = torch.zeros(self.gru_layers, batch, self.gru_hidden, device=ref.device, dtype=ref.dtype)
        return buffers, hidden

    def forward_chunk(self, feats_chunk: torch.Tensor, state: StudentState
                      ) -> tuple[torch.Tensor, StudentState]:
        """Process the next chunk of normalized features.

        Parameters
        ----------
        feats_chunk : torch.Tensor
            (batch, frames, n_mels), any number of frames (>= 0).
        state : StudentState
            From :meth:`init_state` or the previous call.

        Returns
        -------
        logits : torch.Tensor
            (batch, frames', n_tokens): the output frames completed by this chunk.
        state : StudentState
            To pass with the next chunk.
        """
        buffers, hidden = state
        x = feats_chunk.transpose(1, 2)
        new_buffers = []
        for conv, buffer in zip(self.convs, buffers):
            x, buffer = conv(x, buffer)
            new_buffers.append(buffer)
        x = x.transpose(1, 2)
        if x.shape[1] > 0:
            x, hidden = self.gru(x, hidden)
        else:
            x = x.new_zeros(x.shape[0], 0, self.gru_hidden)
        return self.ctc_lin(self.dropout(x)), (tuple(new_buffers), hidden)

    def encode(self, feats: torch.Tensor, feat_lens: torch.Tensor) -> torch.Tensor:
        logits, _ = self.forward_chunk(feats, self.init_state(feats.shape[0]))
        return logits
