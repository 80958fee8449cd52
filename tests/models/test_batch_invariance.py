"""Decoding must not depend on the batch an utterance is padded in (issue 13)."""

import numpy as np
import pytest
import soundfile as sf
import torch

from speechkd.data.pipelines import make_dataset
from speechkd.decoding import greedy_transcripts
from speechkd.inference import iterate_posteriors
from speechkd.models import CRDNNCTC, TDNNCTC, ConformerCTC, StreamingStudent
from speechkd.text import TokenInventory

TINY = {
    ConformerCTC: {"d_model": 32, "num_layers": 2, "nhead": 2, "d_ffn": 64, "kernel_size": 7, "conv_channels": 8},
    CRDNNCTC: {"cnn_channels": (8, 8), "rnn_layers": 1, "rnn_neurons": 16, "dnn_neurons": 16},
    TDNNCTC: {"channels": 16, "dilations": (1, 2)},
    StreamingStudent: {"conv_channels": 16, "gru_hidden": 16},
}
# very different lengths, many of them not a whole number of hops, so relative lengths
# rounded at the frame rate would miss or add a frame (16159 -> 101 frames instead of 100)
SAMPLES = (16159, 1000, 40000, 2399, 8160, 12345, 321, 30001, 4799, 16160, 799, 22222, 5000, 39999, 161, 9999)


@pytest.fixture(scope="module")
def varied_manifest(tmp_path_factory):
    folder = tmp_path_factory.mktemp("varied")
    rng = np.random.default_rng(0)
    lines = ["ID,duration,wav,spk_id,lang,domain,wrd"]
    for index, n in enumerate(SAMPLES):
        sf.write(folder / f"u{index}.wav", (0.2 * rng.standard_normal(n)).astype(np.float32), 16000)
        lines.append(f"u{index},{n / 16000},$data_root/u{index}.wav,s,en,clean,abc")
    (folder / "varied.csv").write_text("\n".join(lines) + "\n")
    return str(folder / "varied.csv"), str(folder)


@pytest.mark.parametrize("cls", list(TINY), ids=lambda c: c.__name__)
@pytest.mark.parametrize("subsampling", [2, 4])
def test_batch_1_equals_batch_16(varied_manifest, cls, subsampling):
    manifest, root = varied_manifest
    inventory = TokenInventory.from_training_texts(["abcdefgh "])[0]
    torch.manual_seed(0)
    model = cls(n_tokens=len(inventory), subsampling=subsampling, **TINY[cls]).eval()
    dataset = make_dataset(manifest, root, inventory, sort="none")

    def decode(batch_size):
        out = {}
        for batch, log_probs, frames in iterate_posteriors(model, dataset, batch_size=batch_size):
            texts = greedy_transcripts(log_probs, frames, inventory)
            for row, utt_id in enumerate(batch.id):
                out[utt_id] = (log_probs[row, : frames[row]], texts[row])
        return out

    alone, padded = decode(1), decode(16)
    for index, n in enumerate(SAMPLES):
        single, batched = alone[f"u{index}"], padded[f"u{index}"]
        assert single[0].shape[0] == batched[0].shape[0] == model.output_frames(n)
        assert torch.allclose(single[0], batched[0], atol=1e-4), (cls.__name__, n)
        assert single[1] == batched[1]
