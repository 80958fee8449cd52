"""Pretrained CTC teachers: each adapter gives its model's own log-probs, folded onto clean characters.

Every model is a tiny random-weight one built offline (tests/distill/pretrained_builders.py).
"""

import math

import pytest
import torch
from pretrained_builders import (
    HF_VOCAB,
    TORCHAUDIO_LABELS,
    build_hf_wav2vec2,
    build_mms,
    build_onnx,
    build_speechbrain,
    build_torchaudio,
)

from speechkd.distill.align import InventoryMap
from speechkd.distill.pretrained import (
    HuggingFaceCTCTeacher,
    OnnxCTCTeacher,
    SpeechBrainCTCTeacher,
    TorchaudioCTCTeacher,
    VocabularyFold,
)


def waveforms(lengths, seed=0):
    generator = torch.Generator().manual_seed(seed)
    wavs = torch.zeros(len(lengths), max(lengths))
    for row, length in enumerate(lengths):
        wavs[row, :length] = 0.1 * torch.randn(length, generator=generator)
    return wavs, torch.tensor(lengths, dtype=torch.float) / max(lengths)


def normalized(wav):
    return (wav - wav.mean()) / torch.sqrt(wav.var(unbiased=False) + 1e-7)


# ---------------------------------------------------------------- vocabulary mapping
def test_fold_merges_case_drops_special_tokens_and_renormalizes():
    raw = ["<pad>", "<s>", "</s>", "<unk>", "|", "A", "a", "B"]
    fold = VocabularyFold(raw, blank_index=0)
    assert fold.symbols == ["<pad>", "|", "a", "b"] and fold.blank_index == 0 and fold.word_delimiter == "|"
    assert fold.dropped == ["<s>", "</s>", "<unk>"]
    probs = torch.tensor([0.30, 0.05, 0.05, 0.10, 0.10, 0.15, 0.05, 0.20])
    folded = fold(probs.log()[None]).exp()[0]
    kept = 1.0 - 0.05 - 0.05 - 0.10
    assert torch.allclose(folded, torch.tensor([0.30, 0.10, 0.20, 0.20]) / kept, atol=1e-6)
    into_blank = VocabularyFold(raw, blank_index=0, special_tokens="blank")(probs.log()[None]).exp()[0]
    assert torch.allclose(into_blank, torch.tensor([0.50, 0.10, 0.20, 0.20]), atol=1e-6)


def test_fold_keeps_a_blank_anywhere_and_names_delimiters_canonically():
    fold = VocabularyFold(["▁", "x", "Y", "<unk>", "<blk>"], blank_index=4, lowercase=False)
    assert fold.symbols == ["▁", "x", "Y", "<blk>"] and fold.blank_index == 3 and fold.word_delimiter == "▁"
    # a frame whose mass sits on a dropped token keeps a valid distribution
    logits = torch.tensor([[-50.0, -40.0, -60.0, 0.0, -45.0]])
    assert torch.allclose(fold(logits).exp().sum(-1), torch.ones(1))


def test_subword_teacher_is_refused_frame_by_frame_with_the_transcript_path_offered():
    with pytest.raises(ValueError, match=r"subword.*transcript teacher"):
        InventoryMap(["<blank>", "▁th", "e", " "], ["<blank>", " ", "e", "t", "h"], teacher_name="bpe")
    # the same teacher beside a student that shares its tokens is fine
    InventoryMap(["<blank>", "▁th", "e", " "], ["<blank>", "▁th", "e", " "], teacher_name="bpe")


# ---------------------------------------------------------------- HuggingFace
def test_huggingface_teacher_equals_the_model_and_is_batch_independent(tmp_path):
    model = build_hf_wav2vec2(str(tmp_path / "w2v"))
    teacher = HuggingFaceCTCTeacher(str(tmp_path / "w2v"))
    assert teacher.frame_shift_ms == 20 and teacher.normalize_waveform and teacher.batch_invariant
    assert teacher.canonical_symbols[:3] == ["<blank>", " ", "a"] and "<unk>" not in teacher.symbols
    wavs, lens = waveforms([8000, 5000])
    log_probs, frames = teacher.log_probs(wavs, lens)
    with torch.no_grad():
        own = model(normalized(wavs[1, :5000])[None]).logits.log_softmax(-1)
    specials = [HF_VOCAB[s] for s in ("<s>", "</s>", "<unk>")]
    kept = [i for i in range(len(HF_VOCAB)) if i not in specials]
    expected = own[..., kept] - own[..., kept].logsumexp(-1, keepdim=True)
    assert frames.tolist() == [24, 15] and own.shape[1] == 15
    assert torch.allclose(log_probs[1:, :15], expected, atol=1e-4)  # padded beside a longer one


def test_group_norm_huggingface_model_runs_utterances_alone(tmp_path):
    model = build_hf_wav2vec2(str(tmp_path / "base"), layer_norm=False, conv_stride=(5, 32))
    teacher = HuggingFaceCTCTeacher(str(tmp_path / "base"))
    assert teacher.frame_shift_ms == 10 and not teacher.batch_invariant
    wavs, lens = waveforms([6000, 3200])
    log_probs, frames = teacher.log_probs(wavs, lens)
    with torch.no_grad():
        own = model(normalized(wavs[1, :3200])[None]).logits
    assert frames[1] == own.shape[1]
    fold = teacher.fold
    assert torch.allclose(log_probs[1:, : own.shape[1]], fold(own), atol=1e-4)


def test_mms_adapters_are_selected_by_language(tmp_path):
    from transformers import Wav2Vec2ForCTC

    letters = {"fra": "abcé", "deu": "abcäB"}
    vocabs = {lang: {"<pad>": 0, "<s>": 1, "</s>": 2, "<unk>": 3, "|": 4, **{c: 5 + i for i, c in enumerate(chars)}}
              for lang, chars in letters.items()}
    build_mms(str(tmp_path / "mms"), vocabs)
    wavs, lens = waveforms([4800])
    outputs = {}
    for lang in letters:
        teacher = HuggingFaceCTCTeacher(str(tmp_path / "mms"), target_lang=lang)
        outputs[lang] = teacher
        model = Wav2Vec2ForCTC.from_pretrained(str(tmp_path / "mms"), local_files_only=True)
        model.load_adapter(lang)
        with torch.no_grad():
            own = model.eval()(normalized(wavs[0])[None]).logits
        assert torch.allclose(teacher.log_probs(wavs, lens)[0], teacher.fold(own), atol=1e-4)
    assert outputs["fra"].symbols == ["<pad>", "|", "a", "b", "c", "é"]
    assert outputs["deu"].symbols == ["<pad>", "|", "a", "b", "c", "ä"]  # "B" folded onto "b"
    assert outputs["fra"].name == "mms-fra" and outputs["fra"].fingerprint() != outputs["deu"].fingerprint()


# ---------------------------------------------------------------- torchaudio
def test_torchaudio_teacher_equals_the_model(tmp_path):
    model = build_torchaudio(str(tmp_path / "ta"))
    teacher = TorchaudioCTCTeacher(str(tmp_path / "ta"))
    assert teacher.frame_shift_ms == 20 and teacher.canonical_symbols[:4] == ["<blank>", " ", "e", "t"]
    assert len(teacher.symbols) == len(TORCHAUDIO_LABELS)
    wavs, lens = waveforms([9600, 6400])
    log_probs, frames = teacher.log_probs(wavs, lens)
    with torch.no_grad():
        own, own_frames = model(wavs, torch.tensor([9600, 6400]))
    assert frames.tolist() == own_frames.tolist()
    assert torch.allclose(log_probs, own.log_softmax(-1), atol=1e-5)
    assert teacher.fingerprint() == TorchaudioCTCTeacher(str(tmp_path / "ta")).fingerprint()


# ---------------------------------------------------------------- ONNX
@pytest.mark.parametrize("channels_first", [False, True])
def test_onnx_teacher_computes_the_features_its_metadata_asks_for(tmp_path, channels_first):
    import torchaudio

    symbols = ["<blk>", "a", "b", "c", "▁"] if channels_first else ["<blank>", "a", "b", "C", "▁"]
    model = build_onnx(str(tmp_path / "onnx"), symbols, channels_first=channels_first,
                       normalize_type="per_feature" if channels_first else "")
    teacher = OnnxCTCTeacher(str(tmp_path / "onnx"))
    assert teacher.frame_shift_ms == 40 and teacher.word_delimiter == "▁"
    assert teacher.canonical_symbols == ["<blank>", "a", "b", "c", " "]  # "C" folded, "<blk>" named
    wavs, lens = waveforms([8000, 4000])
    log_probs, frames = teacher.log_probs(wavs, lens)
    feats = torchaudio.compliance.kaldi.fbank(wavs[1:, :4000], num_mel_bins=40, dither=0.0, snip_edges=False)
    if channels_first:
        feats = (feats - feats.mean(0)) / (feats.std(0) + 1e-5)
    feats = feats[None].transpose(1, 2) if channels_first else feats[None]
    with torch.no_grad():
        own, own_frames = model(feats, torch.tensor([feats.shape[-1] if channels_first else feats.shape[1]]))
    assert frames.tolist()[1] == int(own_frames) == 25 // 4  # 0.25 s: 25 feature frames
    assert torch.allclose(log_probs[1, : frames[1]], own[0], atol=1e-4)


def test_onnx_tokens_file_errors_name_the_line(tmp_path):
    build_onnx(str(tmp_path / "onnx"), ["<blank>", "a"])
    (tmp_path / "onnx" / "tokens.txt").write_text("<blank> 0\na one\n")
    with pytest.raises(ValueError, match=r"tokens.txt:2"):
        OnnxCTCTeacher(str(tmp_path / "onnx"))


# ---------------------------------------------------------------- SpeechBrain
def test_speechbrain_teacher_equals_its_encoder(tmp_path):
    from speechbrain.lobes.features import Fbank

    layer = build_speechbrain(str(tmp_path / "sb"), list("abc "))
    teacher = SpeechBrainCTCTeacher(str(tmp_path / "sb"))
    assert teacher.frame_shift_ms == 10 and teacher.canonical_symbols == ["<blank>", "a", "b", "c", " "]
    wavs, lens = waveforms([4000])
    log_probs, frames = teacher.log_probs(wavs, lens)
    with torch.no_grad():
        own = layer(Fbank(n_mels=20)(wavs)).log_softmax(-1)
    assert frames.tolist() == [own.shape[1]] and math.isclose(own.shape[1], 26, abs_tol=1)
    assert torch.allclose(log_probs, own, atol=1e-5)


def test_half_precision_is_close_to_full_and_fingerprinted_apart(tmp_path):
    build_hf_wav2vec2(str(tmp_path / "w2v"))
    full = HuggingFaceCTCTeacher(str(tmp_path / "w2v"))
    half = HuggingFaceCTCTeacher(str(tmp_path / "w2v"), precision="bf16")
    wavs, lens = waveforms([6400])
    expected, frames = full.log_probs(wavs, lens)
    got, half_frames = half.log_probs(wavs, lens)
    assert got.dtype == torch.float32 and half_frames.tolist() == frames.tolist()
    assert (got.exp() - expected.exp()).abs().max() < 0.05
    assert half.fingerprint() != full.fingerprint()
    with pytest.raises(ValueError, match="precision"):
        HuggingFaceCTCTeacher(str(tmp_path / "w2v"), precision="int4")


def test_teacher_kind_is_found_from_the_folder(tmp_path):
    from speechkd.distill.pretrained import detect_kind
    from speechkd.distill.teachers import as_teacher

    layouts = {"hf": ["config.json", "vocab.json"], "ta": ["config.json", "model.pt"],
               "onnx": ["model.int8.onnx", "tokens.txt"], "sb": ["hyperparams.yaml"], "none": ["notes.txt"]}
    for name, files in layouts.items():
        (tmp_path / name).mkdir()
        for file in files:
            (tmp_path / name / file).write_text("")
    (tmp_path / "m.nemo").write_text("")
    assert [detect_kind(str(tmp_path / n)) for n in ("hf", "ta", "onnx", "sb")] == \
        ["huggingface", "torchaudio", "onnx", "speechbrain"]
    assert detect_kind(str(tmp_path / "m.nemo")) == "nemo"
    with pytest.raises(ValueError, match="no model folder speechkd knows"):
        detect_kind(str(tmp_path / "none"))
    with pytest.raises(FileNotFoundError, match="no trained speechkd model"):
        as_teacher(str(tmp_path / "missing"))
    build_torchaudio(str(tmp_path / "real"))
    assert isinstance(as_teacher({"folder": str(tmp_path / "real"), "name": "ta"}), TorchaudioCTCTeacher)


def test_hubert_is_loaded_as_any_transformers_ctc_model(tmp_path):
    import json

    from transformers import HubertConfig, HubertForCTC, Wav2Vec2FeatureExtractor

    folder = tmp_path / "hubert"
    torch.manual_seed(0)
    config = HubertConfig(vocab_size=len(HF_VOCAB), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                          intermediate_size=32, conv_dim=(8, 8), conv_stride=(5, 64), conv_kernel=(10, 64),
                          num_conv_pos_embeddings=8, num_conv_pos_embedding_groups=2, pad_token_id=0,
                          feat_extract_norm="layer", do_stable_layer_norm=True)
    model = HubertForCTC(config).eval()
    model.save_pretrained(str(folder))
    (folder / "vocab.json").write_text(json.dumps(HF_VOCAB))
    Wav2Vec2FeatureExtractor(do_normalize=False, return_attention_mask=True).save_pretrained(str(folder))
    teacher = HuggingFaceCTCTeacher(str(folder))
    assert not teacher.normalize_waveform and teacher.frame_shift_ms == 20
    wavs, lens = waveforms([6400])
    with torch.no_grad():
        own = model(wavs).logits
    assert torch.allclose(teacher.log_probs(wavs, lens)[0], teacher.fold(own), atol=1e-4)
