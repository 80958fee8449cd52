"""TDNN-CTC teacher: a stack of residual dilated 1-D convolutions."""

from __future__ import annotations

import torch
from torch import nn

from speechkd.models.base import AcousticModel, mask_time, subsampled_lengths


class _FrameLayerNorm(nn.LayerNorm):
    """LayerNorm over channels of a (batch, channels, time) tensor."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.transpose(1, 2)).transpose(1, 2)


class TDNNCTC(AcousticModel):
    """Time-delay neural network (dilated Conv1d) with a CTC head.

    Parameters
    ----------
    n_tokens : int
        CTC output size.
    channels : int
        Width of every TDNN layer.
    dilations : sequence of int
        One residual ``Conv1d(kernel_size, dilation=d)`` layer per entry.
    kernel_size : int
        Odd kernel size of the TDNN layers (and 3 for the subsampling convs).
    dropout : float
        Dropout after each layer.
    n_mels, subsampling : int
    f_max : float or None
        See :class:`~speechkd.models.base.AcousticModel`.

    Example
    -------
    >>> model = TDNNCTC(n_tokens=30)
    >>> model(torch.zeros(2, 16000), torch.tensor([1.0, 0.5])).shape
    torch.Size([2, 50, 30])
    """

    def __init__(
        self,
        n_tokens: int,
        channels: int = 256,
        dilations: tuple[int, ...] = (1, 2, 4, 1, 2),
        kernel_size: int = 3,
        dropout: float = 0.1,
        n_mels: int = 80,
        f_max: float | None = None,
        subsampling: int = 2,
    ):
        super().__init__(n_tokens, n_mels=n_mels, subsampling=subsampling, f_max=f_max)
        if kernel_size % 2 != 1:
            raise ValueError(f"kernel_size must be odd, got {kernel_size}")
        front, in_ch = [], n_mels
        for i in range(max(1, self.n_stages)):
            stride = 2 if i < self.n_stages else 1
            front += [nn.Conv1d(in_ch, channels, 3, stride=stride, padding=1), nn.ReLU(),
                      _FrameLayerNorm(channels)]
            in_ch = channels
        self.frontend = nn.Sequential(*front)
        self.layers = nn.ModuleList(
            nn.Sequential(
                nn.Conv1d(channels, channels, kernel_size, dilation=d, padding=d * (kernel_size - 1) // 2),
                nn.ReLU(),
                _FrameLayerNorm(channels),
                nn.Dropout(dropout),
            )
            for d in dilations
        )
        self.ctc_lin = nn.Linear(channels, n_tokens)

    def layer_taps(self):
        """``encoder`` (the last layer's output), ``frontend`` and ``layer<i>`` (each TDNN layer's residual branch)."""
        taps = super().layer_taps()
        taps["frontend"] = (self.frontend[-1], "output_channels_first")  # the front-end's last norm
        taps.update({f"layer{i}": (layer, "output_channels_first") for i, layer in enumerate(self.layers)})
        return taps

    def encode(self, feats: torch.Tensor, feat_lens: torch.Tensor) -> torch.Tensor:
        x, lengths = feats.transpose(1, 2), feat_lens
        for start in range(0, len(self.frontend), 3):  # conv, ReLU, norm: padding zeroed after each stage
            stage = self.frontend[start: start + 3]
            lengths = subsampled_lengths(lengths, 1 if stage[0].stride[0] == 2 else 0)
            x = mask_time(stage(x), lengths, time_dim=2)
        for layer in self.layers:  # (batch, channels, frames'); padding kept at zero
            x = mask_time(x + layer(x), lengths, time_dim=2)
        return self.ctc_lin(x.transpose(1, 2))
