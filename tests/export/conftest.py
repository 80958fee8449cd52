"""Tiny experiment folders (one per architecture) built directly, without training.

Each folder has what :func:`speechkd.experiment.load_model` reads (model.json,
tokens.txt, save/CKPT+*) plus a small test corpus of synthetic 16 kHz FLAC
utterances, so the export tests run in seconds on 2 cores.
"""

import pytest
import soundfile as sf
import torch
from export_helpers import TEXTS, TINY_SIZES, make_experiment, synthetic_utterance

from speechkd.data.manifest import write_manifest
from speechkd.text import TokenInventory


@pytest.fixture(scope="session")
def export_corpus(tmp_path_factory):
    """Corpus folder with test.csv of len(TEXTS) synthetic utterances: (manifest path, rows)."""
    root = tmp_path_factory.mktemp("export_corpus")
    (root / "audio" / "clean" / "en").mkdir(parents=True)
    rows = []
    for i, text in enumerate(TEXTS):
        utt_id = f"en-spk-{i:05d}"
        wav = synthetic_utterance(i)
        sf.write(root / "audio" / "clean" / "en" / f"{utt_id}.flac", wav, 16000, subtype="PCM_16")
        rows.append(
            {
                "ID": utt_id,
                "duration": len(wav) / 16000,
                "spk_id": "spk",
                "lang": "en",
                "domain": "clean",
                "wrd": text,
                "wav": f"$data_root/audio/clean/en/{utt_id}.flac",
            }
        )
    write_manifest(root / "test.csv", rows)
    return str(root / "test.csv"), rows


@pytest.fixture(scope="session")
def experiments(tmp_path_factory, export_corpus):
    """arch -> tiny experiment folder, for every architecture."""
    root = tmp_path_factory.mktemp("experiments")
    inventory = TokenInventory.from_training_texts(TEXTS)[0]
    wavs = [synthetic_utterance(i) for i in range(len(TEXTS))]
    folders = {}
    for arch in TINY_SIZES:
        make_experiment(root / arch, arch, inventory, wavs)
        folders[arch] = str(root / arch)
    return folders


@pytest.fixture(scope="session")
def exports(tmp_path_factory, experiments, export_corpus):
    """arch -> (export folder, report) of ``export_experiment`` on the tiny corpus."""
    from speechkd.export.exporter import export_experiment

    manifest, _ = export_corpus
    root = tmp_path_factory.mktemp("exports")
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return {
            arch: (
                str(root / arch),
                export_experiment(
                    folder, str(root / arch), manifest=manifest, parity_count=3, chunk_ms=160
                ),
            )
            for arch, folder in experiments.items()
        }
    finally:
        torch.set_num_threads(previous)
