"""Tiny random-weight pretrained models of each kind, written to folders offline (test-only).

Each builder writes the folder layout its toolkit reads and returns the
model object, so a test can compare the teacher adapter with the model's own output.
"""

import json
import os

import torch

HF_VOCAB = {"<pad>": 0, "<s>": 1, "</s>": 2, "<unk>": 3, "|": 4, **{c: 5 + i for i, c in enumerate("ABCDEFGHIJKLMNOPQRSTUVWXYZ'")}}


def hf_config(vocab_size, conv_stride=(5, 64), layer_norm=True, adapter_dim=None):
    """A wav2vec2 config of a few thousand parameters; ``conv_stride`` sets the frame shift (320 = 20 ms)."""
    from transformers import Wav2Vec2Config

    return Wav2Vec2Config(
        vocab_size=vocab_size, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
        intermediate_size=32, conv_dim=(8, 8), conv_stride=conv_stride, conv_kernel=(10, conv_stride[1]),
        num_conv_pos_embeddings=8, num_conv_pos_embedding_groups=2, pad_token_id=0,
        feat_extract_norm="layer" if layer_norm else "group", do_stable_layer_norm=layer_norm,
        adapter_attn_dim=adapter_dim, hidden_dropout=0.0, activation_dropout=0.0,
        attention_dropout=0.0, feat_proj_dropout=0.0, layerdrop=0.0,
    )


def build_hf_wav2vec2(folder, vocab=None, conv_stride=(5, 64), layer_norm=True, seed=0):
    """``save_pretrained`` folder of a tiny ``Wav2Vec2ForCTC`` with ``vocab.json`` and a feature extractor."""
    from transformers import Wav2Vec2FeatureExtractor, Wav2Vec2ForCTC

    vocab = vocab or HF_VOCAB
    torch.manual_seed(seed)
    model = Wav2Vec2ForCTC(hf_config(len(vocab), conv_stride, layer_norm)).eval()
    os.makedirs(folder, exist_ok=True)
    model.save_pretrained(folder)
    with open(os.path.join(folder, "vocab.json"), "w") as fout:
        json.dump(vocab, fout)
    Wav2Vec2FeatureExtractor(do_normalize=True, return_attention_mask=layer_norm).save_pretrained(folder)
    return model


def build_mms(folder, vocabs, seed=0):
    """An MMS-style model: one adapter (and vocabulary) per language, ``adapter.<lang>.safetensors``."""
    from safetensors.torch import save_file
    from transformers import Wav2Vec2ForCTC

    first = next(iter(vocabs.values()))
    torch.manual_seed(seed)
    model = Wav2Vec2ForCTC(hf_config(len(first), adapter_dim=4)).eval()
    os.makedirs(folder, exist_ok=True)
    model.save_pretrained(folder)
    with open(os.path.join(folder, "vocab.json"), "w") as fout:
        json.dump(vocabs, fout)
    adapters = model._get_adapters()
    for number, (lang, vocab) in enumerate(vocabs.items()):
        generator = torch.Generator().manual_seed(seed + number + 1)
        weights = {}
        for key, value in adapters.items():
            shape = [len(vocab), *value.shape[1:]] if key.startswith("lm_head") else list(value.shape)
            weights[key] = torch.randn(shape, generator=generator) * 0.5
        save_file(weights, os.path.join(folder, f"adapter.{lang}.safetensors"))


TORCHAUDIO_CONFIG = {
    "extractor_mode": "layer_norm", "extractor_conv_layer_config": [[8, 10, 5], [8, 8, 4], [8, 4, 4], [8, 4, 4]],
    "extractor_conv_bias": True, "encoder_embed_dim": 16, "encoder_projection_dropout": 0.0,
    "encoder_pos_conv_kernel": 8, "encoder_pos_conv_groups": 2, "encoder_num_layers": 1,
    "encoder_num_heads": 2, "encoder_attention_dropout": 0.0, "encoder_ff_interm_features": 32,
    "encoder_ff_interm_dropout": 0.0, "encoder_dropout": 0.0, "encoder_layer_norm_first": True,
    "encoder_layer_drop": 0.0,
}
TORCHAUDIO_LABELS = ["-", "|", *"ETAONIHSRDLUMWCFGYPBVKXJQZ'"]


def build_torchaudio(folder, seed=0):
    """A torchaudio ``wav2vec2_model`` (strides 5 x 4 x 4 x 4 = 320 samples: 20 ms) saved for TorchaudioCTCTeacher."""
    import torchaudio

    from speechkd.distill.pretrained import save_torchaudio_teacher

    config = {**TORCHAUDIO_CONFIG, "aux_num_out": len(TORCHAUDIO_LABELS)}
    torch.manual_seed(seed)
    model = torchaudio.models.wav2vec2_model(**config).eval()
    save_torchaudio_teacher(model, config, TORCHAUDIO_LABELS, folder)
    return model


class FeatureCTC(torch.nn.Module):
    """Features ``(batch, time, dim)`` -> log-probs ``(batch, time / 4, V)`` and their lengths (icefall style)."""

    def __init__(self, dim, vocab, channels_first=False):
        super().__init__()
        self.channels_first = channels_first
        self.conv = torch.nn.Conv1d(dim, 16, kernel_size=4, stride=4)
        self.out = torch.nn.Linear(16, vocab)

    def forward(self, x, x_lens):
        if not self.channels_first:
            x = x.transpose(1, 2)
        hidden = self.conv(x).transpose(1, 2)
        return self.out(torch.tanh(hidden)).log_softmax(-1), torch.div(x_lens, 4, rounding_mode="floor")


def build_onnx(folder, symbols, channels_first=False, feat_dim=40, normalize_type="", seed=0):
    """A sherpa-onnx-style folder: ``model.onnx`` (metadata: subsampling 4, feat_dim, ...) and ``tokens.txt``."""
    import onnx

    torch.manual_seed(seed)
    model = FeatureCTC(feat_dim, len(symbols), channels_first).eval()
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, "model.onnx")
    names = ["audio_signal", "length"] if channels_first else ["x", "x_lens"]
    example = torch.randn(1, feat_dim, 40) if channels_first else torch.randn(1, 40, feat_dim)
    torch.onnx.export(model, (example, torch.tensor([40])), path, input_names=names,
                      output_names=["log_probs", "log_probs_len"], dynamo=False,
                      dynamic_axes={names[0]: {0: "N", 2 if channels_first else 1: "T"}, names[1]: {0: "N"},
                                    "log_probs": {0: "N", 1: "T"}, "log_probs_len": {0: "N"}})
    graph = onnx.load(path)
    for key, value in {"subsampling_factor": "4", "feat_dim": str(feat_dim), "normalize_type": normalize_type,
                       "vocab_size": str(len(symbols))}.items():
        graph.metadata_props.add(key=key, value=value)
    onnx.save(graph, path)
    with open(os.path.join(folder, "tokens.txt"), "w") as fout:
        fout.writelines(f"{s} {i}\n" for i, s in enumerate(symbols))
    return model


SPEECHBRAIN_YAML = """\
sample_rate: 16000
blank_index: 0
compute_features: !new:speechbrain.lobes.features.Fbank
    n_mels: 20
enc: !new:speechbrain.nnet.linear.Linear
    input_size: 20
    n_neurons: {vocab}
log_softmax: !new:speechbrain.nnet.activations.Softmax
    apply_log: True
encoder: !new:speechbrain.nnet.containers.LengthsCapableSequential
    - !ref <compute_features>
    - !ref <enc>
    - !ref <log_softmax>
tokenizer: !new:speechbrain.dataio.encoder.CTCTextEncoder
decoding_function: !name:speechbrain.decoders.ctc_greedy_decode
    blank_id: 0
modules:
    encoder: !ref <encoder>
pretrainer: !new:speechbrain.utils.parameter_transfer.Pretrainer
    loadables:
        enc: !ref <enc>
        tokenizer: !ref <tokenizer>
    paths:
        enc: {folder}/enc.ckpt
        tokenizer: {folder}/tokenizer.ckpt
"""


def build_speechbrain(folder, labels, seed=0):
    """An ``EncoderASR`` folder: Fbank -> linear CTC layer -> log-softmax, a CTCTextEncoder (blank 0, then ``labels``)."""
    from speechbrain.dataio.encoder import CTCTextEncoder

    os.makedirs(folder, exist_ok=True)
    torch.manual_seed(seed)
    layer = torch.nn.Linear(20, len(labels) + 1)
    torch.save({"w.weight": layer.weight.detach(), "w.bias": layer.bias.detach()}, os.path.join(folder, "enc.ckpt"))
    encoder = CTCTextEncoder()
    encoder.insert_blank(index=0)
    encoder.update_from_iterable(labels, sequence_input=False)
    encoder.save(os.path.join(folder, "tokenizer.ckpt"))
    with open(os.path.join(folder, "hyperparams.yaml"), "w") as fout:
        fout.write(SPEECHBRAIN_YAML.format(vocab=len(labels) + 1, folder=os.path.abspath(folder)))
    return layer
