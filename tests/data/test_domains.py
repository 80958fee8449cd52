"""Tests of the seeded, length-preserving domain transforms."""

import numpy as np
import pytest

from speechkd.data.domains import (
    NOISE_TYPES,
    add_noise,
    apply_domain,
    domain_rng,
    parse_domain,
    reverberate,
    room_impulse_response,
    telephone,
)

SR = 16000


def speech_like(n_samples=SR + 123, seed=0):
    """Harmonic tone bursts with a broadband component, roughly speech-shaped."""
    rng = np.random.default_rng(seed)
    t = np.arange(n_samples) / SR
    voiced = sum(np.sin(2 * np.pi * 140 * k * t) / k for k in range(1, 40))
    envelope = 0.5 + 0.5 * np.sin(2 * np.pi * 3 * t)
    wav = envelope * voiced + 0.3 * rng.standard_normal(n_samples)
    return (0.5 * wav / np.max(np.abs(wav))).astype(np.float32)


def band_energy_fraction(wav, low_hz, high_hz=SR / 2):
    power = np.abs(np.fft.rfft(wav.astype(np.float64))) ** 2
    freqs = np.fft.rfftfreq(len(wav), 1 / SR)
    return power[(freqs >= low_hz) & (freqs <= high_hz)].sum() / power.sum()


@pytest.mark.parametrize("domain", ["clean", "telephone", "noise", "reverb",
                                    "telephone+noise", "reverb+noise+telephone"])
@pytest.mark.parametrize("n_samples", [16001, 4000, 37])
def test_transforms_preserve_length_and_dtype(domain, n_samples):
    out = apply_domain(speech_like(n_samples), SR, domain, seed=0, utt_id="en-a-00001")
    assert out.shape == (n_samples,) and out.dtype == np.float32
    assert np.all(np.isfinite(out))


@pytest.mark.parametrize("domain", ["telephone", "noise", "reverb", "telephone+noise"])
def test_transform_depends_only_on_seed_utterance_and_epoch(domain):
    wav = speech_like()
    first = apply_domain(wav, SR, domain, seed=7, utt_id="de-m1r150p40-00003")
    apply_domain(wav, SR, domain, seed=7, utt_id="other")  # no hidden state between calls
    assert np.array_equal(first, apply_domain(wav, SR, domain, seed=7,
                                              utt_id="de-m1r150p40-00003"))
    assert not np.array_equal(first, apply_domain(wav, SR, domain, seed=7,
                                                  utt_id="de-m1r150p40-00004"))
    assert not np.array_equal(first, apply_domain(wav, SR, domain, seed=8,
                                                  utt_id="de-m1r150p40-00003"))
    per_epoch = apply_domain(wav, SR, domain, seed=7, utt_id="de-m1r150p40-00003", epoch=2)
    assert not np.array_equal(first, per_epoch)
    assert np.array_equal(per_epoch, apply_domain(wav, SR, domain, seed=7,
                                                  utt_id="de-m1r150p40-00003", epoch=2))


def test_domain_rng_is_a_stable_hash():
    # a fixed value: changes here would silently change every stored corpus
    assert domain_rng(0, "en-m3r160p45-00001", "noise").integers(1 << 30) == 131562841


def test_telephone_keeps_the_300_to_3400_hz_band():
    wav = speech_like()
    assert band_energy_fraction(wav, 3600) > 0.05
    out = telephone(wav, SR, np.random.default_rng(0))
    assert band_energy_fraction(out, 3600) < 1e-3
    assert band_energy_fraction(out, 0, 150) < 1e-3
    assert band_energy_fraction(out, 300, 3400) > 0.98


def test_telephone_is_timing_preserving():
    wav = speech_like()
    out = telephone(wav, SR, np.random.default_rng(1))
    lags = np.arange(-40, 41)
    corr = [np.dot(out[40:-40], np.roll(wav, lag)[40:-40]) for lag in lags]
    assert lags[int(np.argmax(corr))] == 0


@pytest.mark.parametrize("noise_type", NOISE_TYPES)
@pytest.mark.parametrize("snr_db", [0.0, 10.0, 20.0])
def test_noise_is_added_at_the_requested_snr(noise_type, snr_db):
    wav = speech_like()
    noisy = add_noise(wav, SR, np.random.default_rng(3), snr_db=snr_db, noise_types=(noise_type,))
    noise = noisy.astype(np.float64) - wav
    measured = 10 * np.log10(np.mean(wav.astype(np.float64) ** 2) / np.mean(noise ** 2))
    assert measured == pytest.approx(snr_db, abs=0.05)


def test_noise_snr_is_drawn_from_the_range():
    wav = speech_like()
    snrs = []
    for i in range(30):
        noisy = apply_domain(wav, SR, "noise", seed=0, utt_id=f"u{i}", snr_db=(5, 15))
        noise = noisy.astype(np.float64) - wav
        snrs.append(10 * np.log10(np.mean(wav.astype(np.float64) ** 2) / np.mean(noise ** 2)))
    assert 4.95 < min(snrs) and max(snrs) < 15.05
    assert max(snrs) - min(snrs) > 5


@pytest.mark.parametrize("rt60", [0.3, 0.8])
def test_room_impulse_response_decays_with_the_requested_rt60(rt60):
    rir = room_impulse_response(SR, np.random.default_rng(0), rt60_s=rt60, drr_db=-10.0)
    assert rir[0] == 1.0 and len(rir) == int(SR * rt60)
    decay = 10 * np.log10(np.cumsum(rir[::-1] ** 2)[::-1])  # Schroeder integral, dB
    decay -= decay[1]
    t5, t25 = np.argmax(decay < -5) / SR, np.argmax(decay < -25) / SR
    assert 3 * (t25 - t5) == pytest.approx(rt60, rel=0.25)


def test_reverb_keeps_level_and_smears_energy():
    wav = np.zeros(SR, dtype=np.float32)
    wav[1000:1100] = 0.5
    out = reverberate(wav, SR, np.random.default_rng(0), rt60_s=0.6, drr_db=0.0)
    assert np.sqrt(np.mean(out ** 2)) == pytest.approx(np.sqrt(np.mean(wav ** 2)), rel=1e-4)
    assert np.sum(out[1260:] ** 2) > 0.25 * np.sum(out ** 2)  # tail after the pulse + 10 ms
    assert np.max(np.abs(out[:1000])) < 1e-6  # causal: nothing before the pulse


def test_invalid_domains_and_options_are_rejected():
    assert parse_domain("telephone+noise") == ("telephone", "noise")
    with pytest.raises(ValueError, match="unknown domain 'radio'"):
        apply_domain(speech_like(), SR, "radio", 0, "u")
    with pytest.raises(ValueError, match="cannot be combined"):
        parse_domain("clean+noise")
    with pytest.raises(TypeError, match="snr"):
        apply_domain(speech_like(), SR, "noise", 0, "u", snr=5)
    with pytest.raises(ValueError, match="unknown noise types"):
        apply_domain(speech_like(), SR, "noise", 0, "u", noise_types=("traffic",))
