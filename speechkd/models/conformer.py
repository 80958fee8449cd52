"""Conformer-CTC teacher: Conv2d subsampling front-end + SpeechBrain ConformerEncoder."""

from __future__ import annotations

import torch
from speechbrain.lobes.models.transformer.Conformer import ConformerEncoder
from speechbrain.nnet.attention import RelPosEncXL
from torch import nn

from speechkd.models.base import (
    AcousticModel,
    lengths_to_padding_mask,
    mask_time,
    subsampled_lengths,
)


class Conv2dSubsampling(nn.Module):
    """Two 3x3 Conv2d layers halving frequency each; time halved ``n_stages`` times.

    (batch, frames, n_mels) -> (batch, frames', d_model) where every time-stride
    stage maps ``n`` frames to ``ceil(n / 2)``.
    """

    def __init__(self, n_mels: int, channels: int, d_model: int, n_stages: int):
        super().__init__()
        n_convs = max(2, n_stages)
        layers, in_ch, freq = [], 1, n_mels
        for i in range(n_convs):
            time_stride = 2 if i < n_stages else 1
            layers += [nn.Conv2d(in_ch, channels, 3, stride=(time_stride, 2), padding=1), nn.ReLU()]
            in_ch, freq = channels, (freq + 1) // 2
        self.convs = nn.ModuleList(nn.Sequential(*layers[i: i + 2]) for i in range(0, len(layers), 2))
        self.proj = nn.Linear(channels * freq, d_model)
        self.n_stages = n_stages

    def forward(self, feats: torch.Tensor, feat_lens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(batch, frames, n_mels), (batch,) int64 valid frames -> (batch, frames', d_model), valid frames'."""
        x, lengths = feats.unsqueeze(1), feat_lens
        for i, conv in enumerate(self.convs):  # padding frames are zeroed so they act like conv padding
            lengths = subsampled_lengths(lengths, 1 if i < self.n_stages else 0)
            x = mask_time(conv(x), lengths, time_dim=2)  # (batch, channels, frames', freq')
        batch, channels, frames, freq = x.shape
        return self.proj(x.permute(0, 2, 1, 3).reshape(batch, frames, channels * freq)), lengths


def zero_padding_before_depthwise_conv(encoder: ConformerEncoder) -> None:
    """Make each Conformer convolution module blind to padding frames.

    SpeechBrain's convolution module masks its output, not the input of its
    depthwise convolution, so in a padded batch the last ``kernel_size // 2``
    valid frames would see the (non-zero) padding positions and differ from
    the same utterance alone. Hooks (no new parameters: checkpoints load
    unchanged) zero those positions where the module's padding mask says so.
    """
    for layer in encoder.layers:
        module = layer.convolution_module
        state = {}

        def remember_mask(_module, args, state=state):
            state["mask"] = args[1] if len(args) > 1 else None

        def zero_padding(_conv, args, state=state):
            mask = state.get("mask")  # (batch, frames, 1) bool, True on padding
            if mask is None:
                return None
            return (args[0].masked_fill(mask.transpose(1, 2), 0.0),)  # (batch, channels, frames)

        module.register_forward_pre_hook(remember_mask)
        module.conv.register_forward_pre_hook(zero_padding)


class ConformerCTC(AcousticModel):
    """Conformer encoder with relative positional attention and a CTC head.

    Parameters
    ----------
    n_tokens : int
        CTC output size.
    d_model, num_layers, nhead, d_ffn, kernel_size : int
        Conformer sizes (SpeechBrain ``ConformerEncoder`` arguments).
    conv_channels : int
        Channels of the Conv2d subsampling front-end.
    dropout : float
        Dropout inside the Conformer layers and before the CTC layer.
    n_mels, subsampling : int
    f_max : float or None
        See :class:`~speechkd.models.base.AcousticModel`.

    Notes
    -----
    Padding is masked in attention, zeroed after the front-end and before
    each depthwise convolution (:func:`zero_padding_before_depthwise_conv`),
    so an utterance's outputs do not depend on the batch it is padded in.

    Example
    -------
    >>> model = ConformerCTC(n_tokens=30)
    >>> model(torch.zeros(2, 16000), torch.tensor([1.0, 0.5])).shape
    torch.Size([2, 50, 30])
    """

    def __init__(
        self,
        n_tokens: int,
        d_model: int = 96,
        num_layers: int = 4,
        nhead: int = 4,
        d_ffn: int = 384,
        kernel_size: int = 15,
        conv_channels: int = 32,
        dropout: float = 0.1,
        n_mels: int = 80,
        f_max: float | None = None,
        subsampling: int = 2,
    ):
        super().__init__(n_tokens, n_mels=n_mels, subsampling=subsampling, f_max=f_max)
        self.frontend = Conv2dSubsampling(n_mels, conv_channels, d_model, self.n_stages)
        self.pos_enc = RelPosEncXL(d_model)
        self.encoder = ConformerEncoder(
            num_layers=num_layers,
            d_model=d_model,
            d_ffn=d_ffn,
            nhead=nhead,
            kernel_size=kernel_size,
            dropout=dropout,
            attention_type="RelPosMHAXL",
        )
        zero_padding_before_depthwise_conv(self.encoder)
        self.dropout = nn.Dropout(dropout)
        self.ctc_lin = nn.Linear(d_model, n_tokens)

    def encode(self, feats: torch.Tensor, feat_lens: torch.Tensor) -> torch.Tensor:
        x, out_lens = self.frontend(feats, feat_lens)
        padding = lengths_to_padding_mask(out_lens, x.shape[1])
        x, _ = self.encoder(x, src_key_padding_mask=padding, pos_embs=self.pos_enc(x))
        return self.ctc_lin(self.dropout(x))
