"""Tests of the per-utterance acoustic augmentation (each effect against a known answer)."""

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from speechkd.data.augment import (
    CODECS,
    EFFECTS,
    PRESETS,
    Augmentation,
    codec_round_trip,
    vtlp_warp,
)

SR = 16000


def sine(freq_hz, seconds=1.0, sr=SR, amplitude=0.5):
    t = np.arange(int(seconds * sr)) / sr
    return (amplitude * np.sin(2 * np.pi * freq_hz * t)).astype(np.float32)


def peak_hz(wav, sr=SR):
    """Frequency of the strongest FFT bin (1 Hz resolution for 1 s of audio)."""
    spectrum = np.abs(np.fft.rfft(wav.astype(np.float64) * np.hanning(len(wav))))
    return np.argmax(spectrum) * sr / len(wav)


def rms_db(wav):
    return 10 * np.log10(np.mean(np.square(wav, dtype=np.float64)))


def only(name, **options):
    """An augmentation that always applies one effect."""
    return Augmentation.from_config({name: {"p": 1.0, **options}})


@pytest.mark.parametrize("factor", [0.9, 1.1])
def test_speed_scales_duration_and_frequency(factor):
    out = only("speed", range=[factor, factor]).apply(sine(400), SR, seed=0, utt_id="u")
    assert len(out) == round(SR / factor)
    assert peak_hz(out) == pytest.approx(400 * factor, abs=2)


@pytest.mark.parametrize("semitones", [-2.0, 3.0])
@pytest.mark.parametrize("freq", [150, 500])
def test_pitch_moves_a_sine_by_the_semitone_ratio_and_keeps_the_length(semitones, freq):
    wav = sine(freq)
    out = only("pitch", range=[semitones, semitones]).apply(wav, SR, seed=0, utt_id="u")
    assert len(out) == len(wav)
    assert peak_hz(out) == pytest.approx(freq * 2 ** (semitones / 12), abs=1.5)
    # the level stays (a vocoder with incoherent phases cancels a low partial by ~10 dB)
    assert rms_db(out[2000:-2000]) == pytest.approx(rms_db(wav), abs=2.0)


@pytest.mark.parametrize("alpha", [0.9, 1.1])
def test_vtlp_warps_peaks_by_alpha_below_the_knee_and_keeps_the_band_edge(alpha):
    vtlp = only("vtlp", range=[alpha, alpha])
    for freq in (700, 2300):
        out = vtlp.apply(sine(freq), SR, seed=0, utt_id="u")
        assert len(out) == SR
        assert peak_hz(out) == pytest.approx(alpha * freq, abs=1.5)
    # above the knee the map is the straight line to Nyquist (Jaitly & Hinton 2013)
    warp = vtlp_warp(alpha, SR, 4800)
    assert float(warp(8000.0)) == pytest.approx(8000.0)
    out = vtlp.apply(sine(6000), SR, seed=0, utt_id="u")
    assert peak_hz(out) == pytest.approx(float(warp(6000.0)), abs=1.5)
    assert abs(peak_hz(out) - 6000 * alpha) > 50


@pytest.mark.parametrize("codec", ["ulaw", "alaw", "gsm", "opus", "vorbis", "mp3"])
def test_telephone_channel_leaves_no_energy_above_4khz(codec):
    rng = np.random.default_rng(0)
    wav = (0.2 * rng.standard_normal(SR)).astype(np.float32)  # white: energy up to 8 kHz
    out = only("telephone", codecs=[codec]).apply(wav, SR, seed=0, utt_id="u")
    power = np.abs(np.fft.rfft(out.astype(np.float64))) ** 2
    freqs = np.fft.rfftfreq(len(out), 1 / SR)
    assert len(out) == len(wav) and out.dtype == np.float32
    assert power[freqs > 4000].sum() / power.sum() < 1e-3
    assert power[(freqs > 500) & (freqs < 3000)].sum() / power.sum() > 0.5


@pytest.mark.parametrize("codec,sr", [(c, 8000) for c in CODECS]
                         + [(c, 16000) for c in ("opus", "vorbis", "mp3")])
def test_codec_round_trip_keeps_length_and_rate(codec, sr):
    wav = sine(1000, sr=sr, amplitude=0.3)[: sr - 123]
    out = codec_round_trip(wav, sr, codec, compression=0.9)
    assert out.shape == wav.shape and out.dtype == np.float32
    assert peak_hz(out, sr) == pytest.approx(1000, abs=3)  # a rate change would move the sine
    assert not np.array_equal(out, wav)


def test_gain_in_db_with_and_without_clipping():
    wav = sine(300, amplitude=0.2)
    quieter = EFFECTS["gain"](wav, SR, None, gain_db=-12.0, clip=False)
    assert rms_db(quieter) - rms_db(wav) == pytest.approx(-12.0, abs=1e-3)
    louder = EFFECTS["gain"](wav, SR, None, gain_db=18.0, clip=False)
    assert np.max(np.abs(louder)) == pytest.approx(0.2 * 10 ** (18 / 20), rel=1e-3)
    clipped = EFFECTS["gain"](wav, SR, None, gain_db=18.0, clip=True)
    assert np.max(np.abs(clipped)) <= 1.0
    assert np.mean(np.abs(clipped) >= 32767 / 32768) > 0.3  # a flat-topped sine


def test_dc_offset_shifts_the_mean():
    out = only("dc", range=[0.03, 0.03]).apply(sine(300), SR, seed=0, utt_id="u")
    assert float(np.mean(out)) == pytest.approx(0.03, abs=1e-4)


def test_same_seed_same_audio_other_utterance_or_seed_other_draw():
    aug = Augmentation.from_config("full")
    wav = sine(220, seconds=1.3) + 0.05 * np.random.default_rng(1).standard_normal(
        int(1.3 * SR)).astype(np.float32)
    first = aug.apply(wav, SR, seed=3, utt_id="en-a-00001")
    aug.apply(wav, SR, seed=3, utt_id="en-a-00002")  # no state carried between calls
    assert np.array_equal(first, aug.apply(wav, SR, seed=3, utt_id="en-a-00001"))
    plans = [aug.plan(3, f"en-a-{i:05d}") for i in range(40)]
    assert len({json.dumps(plan, sort_keys=True) for plan in plans}) == 40
    assert aug.plan(4, "en-a-00001") != aug.plan(3, "en-a-00001")


def test_probabilities_zero_is_identity_and_one_always_applies():
    assert Augmentation.from_config({"speed": {"p": 0}, "noise": 0.0}) is None
    assert Augmentation.from_config(None) is None and Augmentation.from_config("none") is None
    chain = Augmentation.from_config({"gain": {"p": 0.0}, "dc": {"p": 1e-9}})
    wav = sine(300)
    assert np.array_equal(chain.apply(wav, SR, seed=0, utt_id="u"), wav)
    always = Augmentation.from_config({"noise": 1.0, "gain": 1})
    assert all(set(always.plan(0, f"u{i}")) == {"noise", "gain"} for i in range(20))


def test_shares_follow_p_and_effects_draw_independently():
    half = Augmentation.from_config({"telephone": 0.5, "speed": 0.3})
    plans = [half.plan(0, f"utt{i}") for i in range(2000)]
    assert np.mean(["telephone" in plan for plan in plans]) == pytest.approx(0.5, abs=0.04)
    assert np.mean(["speed" in plan for plan in plans]) == pytest.approx(0.3, abs=0.04)
    # changing speed's settings does not move any telephone draw
    other = Augmentation.from_config({"telephone": 0.5, "speed": {"p": 0.9, "range": [1, 1.2]}})
    assert [p.get("telephone") for p in plans] == \
        [other.plan(0, f"utt{i}").get("telephone") for i in range(2000)]


def test_presets_and_overrides_and_bad_configs():
    full = Augmentation.from_config({"preset": "full", "speed": {"range": [0.95, 1.05]},
                                     "splits": ["train"]})
    assert list(full.effects) == list(EFFECTS)  # all nine, in chain order
    assert full.effects["speed"]["range"] == [0.95, 1.05] and full.effects["speed"]["p"] == 0.5
    assert full.splits == ("train",)
    assert full.tag != Augmentation.from_config("full").tag
    assert set(PRESETS) == {"none", "light", "telephone", "full"}
    for bad, message in [({"sped": 0.5}, "unknown augment effects"),
                         ({"speed": {"rnage": [1, 2]}}, "unknown options"),
                         ({"speed": {"p": 1.5}}, "p must be in"),
                         ({"speed": {"range": [1.2, 0.8]}}, "low <= high"),
                         ("heavy", "unknown augment preset")]:
        with pytest.raises(ValueError, match=message):
            Augmentation.from_config(bad)
    with pytest.raises(ValueError, match="unknown codecs"):
        only("telephone", codecs=["g729"]).plan(0, "u")


def test_corpus_augments_train_only_with_true_durations_and_a_record(tiny_corpus, tmp_path):
    from speechkd.data.corpus import build_corpus, main
    from speechkd.data.manifest import read_manifest

    tiny_corpus = Path(tiny_corpus)
    out = tmp_path / "aug"
    # through the command line, as a user would; speed always on so durations must change
    assert main(["build", "--task", "numbers", "--size", "tiny", "--out", str(out),
                 "--langs", "en", "--quiet", "--workers", "1",
                 "--augment", "{preset: light, speed: {p: 1.0, range: [0.85, 0.9]}}"]) == 0
    summary = json.loads((out / "corpus.json").read_text())
    assert summary["augment_shares"]["train"]["speed"] == 1.0
    train = read_manifest(out / "train.csv")
    with open(out / "augment.csv", newline="") as handle:
        record = {row["ID"]: row for row in csv.DictReader(handle)}
    assert set(record) == {row["ID"] for row in train}
    clean_train = {row["ID"]: row for row in read_manifest(tiny_corpus / "train.csv")}
    for row in train:
        path = row["wav"].replace("$data_root", str(out))
        assert "/aug-" in path
        frames = sf.info(path).frames
        assert float(row["duration"]) == pytest.approx(frames / SR, abs=1e-4)
        factor = json.loads(record[row["ID"]]["params"])["speed"]["factor"]
        assert float(row["duration"]) == pytest.approx(
            float(clean_train[row["ID"]]["duration"]) / factor, abs=2e-3)
    # dev and test stay as synthesized: the same bytes as the clean tiny corpus
    for split in ("dev", "test"):
        for row in read_manifest(out / f"{split}.csv"):
            assert "/aug-" not in row["wav"]
            mine = sf.read(row["wav"].replace("$data_root", str(out)))[0]
            theirs = sf.read(row["wav"].replace("$data_root", str(tiny_corpus)))[0]
            assert np.array_equal(mine, theirs)
    # same options again elsewhere: byte-identical audio and record
    again = build_corpus("numbers", "tiny", tmp_path / "again", seed=0, languages=["en"],
                         workers=1, progress=False,
                         augment={"preset": "light", "speed": {"p": 1.0, "range": [0.85, 0.9]}})
    assert again["fingerprint"] == summary["fingerprint"]
    assert (out / "augment.csv").read_bytes() == (tmp_path / "again" / "augment.csv").read_bytes()
    for row in train[:5]:
        relative = row["wav"].replace("$data_root/", "")
        assert (out / relative).read_bytes() == (tmp_path / "again" / relative).read_bytes()
    # other settings in the same folder: a new fingerprint, audio in a new folder
    changed = build_corpus("numbers", "tiny", out, seed=0, languages=["en"], workers=1,
                           progress=False, augment={"gain": 1.0})
    assert changed["fingerprint"] != summary["fingerprint"]
    new_train = read_manifest(out / "train.csv")
    assert new_train[0]["wav"] != train[0]["wav"]
    assert [row["duration"] for row in new_train] == \
        [clean_train[row["ID"]]["duration"] for row in new_train]


def test_command_line_dict_merges_into_the_yaml_and_reaches_the_recipes():
    from speechkd.experiment import load_hparams
    from speechkd.pipeline import Pipeline, overrides_to_argv

    hparams, _ = load_hparams("hparams/pipelines/quickstart.yaml",
                              {"corpus_augment": {"speed": {"p": 0.7}}})
    merged = Augmentation.from_config(hparams["prepare"].keywords["augment"])
    # the quickstart's own dict (empty: no augmentation) plus the effect the command line adds
    assert set(merged.effects) == {"speed"} and merged.effects["speed"]["p"] == 0.7
    argv = overrides_to_argv(Pipeline(hparams).data)
    assert "--corpus_augment={speed: {p: 0.7}}" in argv
    recipe, _ = load_hparams("hparams/ctc/tdnn.yaml", "\n".join(
        arg[2:].replace("=", ": ", 1) for arg in argv if arg.startswith("--corpus_augment")))
    assert Augmentation.from_config(recipe["prepare"].keywords["augment"]) == merged
    alone, _ = load_hparams("hparams/ctc/tdnn.yaml")
    assert Augmentation.from_config(alone["prepare"].keywords["augment"]) is None
