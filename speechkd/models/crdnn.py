"""CRDNN-CTC teacher: Conv2d blocks, bidirectional LSTM, DNN, CTC layer."""

from __future__ import annotations

import torch
from torch import nn

from speechkd.models.base import AcousticModel, mask_time, subsampled_lengths


class CRDNNCTC(AcousticModel):
    """Convolutional + recurrent + dense network with a CTC head.

    Parameters
    ----------
    n_tokens : int
        CTC output size.
    cnn_channels : sequence of int
        One Conv2d (3x3, frequency stride 2) block per entry; the first
        ``log2(subsampling)`` blocks also stride time by 2.
    rnn_layers, rnn_neurons : int
        Bidirectional LSTM depth and per-direction width.
    dnn_neurons : int
        Width of the dense layer before the CTC layer.
    dropout : float
        Dropout between blocks.
    n_mels, subsampling : int
    f_max : float or None
        See :class:`~speechkd.models.base.AcousticModel`.

    Example
    -------
    >>> model = CRDNNCTC(n_tokens=30)
    >>> model(torch.zeros(2, 16000), torch.tensor([1.0, 0.5])).shape
    torch.Size([2, 50, 30])
    """

    def __init__(
        self,
        n_tokens: int,
        cnn_channels: tuple[int, ...] = (32, 32),
        rnn_layers: int = 2,
        rnn_neurons: int = 128,
        dnn_neurons: int = 192,
        dropout: float = 0.15,
        n_mels: int = 80,
        f_max: float | None = None,
        subsampling: int = 2,
    ):
        super().__init__(n_tokens, n_mels=n_mels, subsampling=subsampling, f_max=f_max)
        cnn_channels = list(cnn_channels)
        if len(cnn_channels) < self.n_stages:
            raise ValueError(f"need at least {self.n_stages} CNN blocks for subsampling {subsampling}")
        blocks, in_ch, freq = [], 1, n_mels
        for i, channels in enumerate(cnn_channels):
            time_stride = 2 if i < self.n_stages else 1
            blocks.append(nn.Sequential(
                nn.Conv2d(in_ch, channels, 3, stride=(time_stride, 2), padding=1),
                nn.BatchNorm2d(channels),
                nn.LeakyReLU(),
                nn.Dropout2d(dropout),
            ))
            in_ch, freq = channels, (freq + 1) // 2
        self.cnn = nn.ModuleList(blocks)
        self.proj = nn.Sequential(nn.Linear(in_ch * freq, dnn_neurons), nn.LayerNorm(dnn_neurons))
        self.rnn = nn.LSTM(
            dnn_neurons,
            rnn_neurons,
            num_layers=rnn_layers,
            batch_first=True,
            bidirectional=True,
            dropout=dropout if rnn_layers > 1 else 0.0,
        )
        self.dnn = nn.Sequential(
            nn.Dropout(dropout),
            nn.Linear(2 * rnn_neurons, dnn_neurons),
            nn.LayerNorm(dnn_neurons),
            nn.LeakyReLU(),
            nn.Dropout(dropout),
        )
        self.ctc_lin = nn.Linear(dnn_neurons, n_tokens)

    def encode(self, feats: torch.Tensor, feat_lens: torch.Tensor) -> torch.Tensor:
        x, lengths = feats.unsqueeze(1), feat_lens
        for i, block in enumerate(self.cnn):  # padding frames are zeroed so they act like conv padding
            lengths = subsampled_lengths(lengths, 1 if i < self.n_stages else 0)
            x = mask_time(block(x), lengths, time_dim=2)  # (batch, channels, frames', freq')
        batch, channels, frames, freq = x.shape
        x = self.proj(x.permute(0, 2, 1, 3).reshape(batch, frames, channels * freq))
        lengths = lengths.clamp(min=1).cpu()
        packed = nn.utils.rnn.pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
        x, _ = self.rnn(packed)
        x, _ = nn.utils.rnn.pad_packed_sequence(x, batch_first=True, total_length=frames)
        return self.ctc_lin(self.dnn(x))
