import pytest
import torch

from speechkd.decoding import ctc_greedy, ctc_prefix_beam
from speechkd.metrics import ErrorRates
from speechkd.models import TDNNCTC, StreamingStudent, spec_augment
from speechkd.text import TokenInventory


def _train_to_low_cer(model, texts, wavs, lens, max_steps, augment=False, stop_loss=0.05):
    inventory = TokenInventory.from_training_texts(texts)[0]
    targets = [torch.tensor(inventory.encode(t)) for t in texts]
    flat_targets = torch.cat(targets)
    target_lens = torch.tensor([len(t) for t in targets])
    out_lens = model.output_lengths(lens, wavs.shape[1])
    feat_lens = model.feature_lengths(lens, wavs.shape[1])
    model.fit_normalizer([(wavs, lens)])
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    generator = torch.Generator().manual_seed(0)
    for _ in range(max_steps):
        feats = model.featurize(wavs, lens)
        if augment:
            feats = spec_augment(feats, feat_lens, n_time_masks=1, max_time_width=3, generator=generator)
        log_probs = torch.log_softmax(model.encode(feats, feat_lens), dim=-1)
        loss = torch.nn.functional.ctc_loss(log_probs.transpose(0, 1), flat_targets, out_lens,
                                            target_lens, blank=inventory.blank_index)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if loss.item() < stop_loss:
            break
    model.eval()
    with torch.no_grad():
        log_probs = model(wavs, lens)
    greedy = [inventory.decode(ids) for ids in ctc_greedy(log_probs, out_lens)]
    beam = [inventory.decode(ctc_prefix_beam(lp[:n], beam=4)) for lp, n in zip(log_probs, out_lens)]
    return greedy, beam, loss.item()


@pytest.mark.parametrize("cls, sizes", [
    (StreamingStudent, {"conv_channels": 64, "gru_hidden": 64}),
    (TDNNCTC, {"channels": 64, "dilations": (1, 2)}),
], ids=["student", "tdnn"])
def test_small_model_overfits_tone_utterances(tone_batch, cls, sizes):
    torch.manual_seed(0)
    texts, wavs, lens = tone_batch
    model = cls(n_tokens=len(TokenInventory.from_training_texts(texts)[0]), dropout=0.0, **sizes)
    greedy, beam, loss = _train_to_low_cer(model, texts, wavs, lens, max_steps=150,
                                           augment=cls is TDNNCTC)
    rates = ErrorRates()
    rates.append([str(i) for i in range(len(texts))], texts, greedy)
    assert loss < 0.2
    assert rates.summary()["cer"] <= 5.0, greedy
    # prefix beam search sums over paths, so it may differ from the best path where the
    # model is unsure (e.g. 'abcc' vs 'abc'); both must recover the transcripts
    beam_rates = ErrorRates()
    beam_rates.append([str(i) for i in range(len(texts))], texts, beam)
    assert beam_rates.summary()["cer"] <= 5.0, beam
