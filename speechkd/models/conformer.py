"""Conformer-CTC teacher: Conv2d subsampling front-end + SpeechBrain ConformerEncoder."""

from __future__ import annotations

import torch
from speechbrain.lobes.models.transformer.Conformer import ConformerEncoder
from speechbrain.nnet.attention import RelPosEncXL
from torch import nn

from speechkd.models.base import AcousticModel, lengths_to_padding_mask, mask_time


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

    def forward(self, feats: torch.Tensor, rel_lens: torch.Tensor) -> torch.Tensor:
        x = feats.unsqueeze(1)
        for conv in self.convs:  # padding frames are zeroed so they act like conv padding
            x = mask_time(conv(x), rel_lens, time_dim=2)  # (batch, channels, frames', freq')
        batch, channels, frames, freq = x.shape
        return self.proj(x.permute(0, 2, 1, 3).reshape(batch, frames, channels * freq))


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
        See :class:`~speechkd.models.base.AcousticModel`.

    Notes
    -----
    Padding is masked in attention and zeroed after the front-end, but
    SpeechBrain's convolution module masks its output, not its input, so in
    a padded batch the last ``kernel_size // 2`` valid frames of each layer
    see the padding; outputs differ slightly from the same utterance alone.

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
        subsampling: int = 2,
    ):
        super().__init__(n_tokens, n_mels=n_mels, subsampling=subsampling)
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
        self.dropout = nn.Dropout(dropout)
        self.ctc_lin = nn.Linear(d_model, n_tokens)

    def encode(self, feats: torch.Tensor, feat_lens: torch.Tensor) -> torch.Tensor:
        x = self.frontend(feats, feat_lens)
        padding = lengths_to_padding_mask(feat_lens, x.shape[1])
        x, _ = self.encoder(x, src_key_padding_mask=padding, pos_embs=self.pos_enc(x))
        return self.ctc_lin(self.dropout(x))
