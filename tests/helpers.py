"""Helpers for tests that run recipes on the tiny corpus with tiny models."""

import os
import subprocess
import sys

from speechkd.stages import library_env

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Model sizes small enough that one epoch on the tiny corpus takes seconds.
TINY_SIZES = {
    "conformer": {"d_model": 32, "num_layers": 1, "d_ffn": 64, "conv_channels": 8},
    "crdnn": {"cnn_channels": [8, 8], "rnn_layers": 1, "rnn_neurons": 32, "dnn_neurons": 32},
    "tdnn": {"channels": 32, "dilations": [1, 2]},
    "student": {"conv_channels": 16, "gru_hidden": 16},
}


def run_recipe(script, hparams, **overrides):
    """Run ``python recipes/<script> hparams/<hparams> --key=value ...``; fail with its output.

    Returns
    -------
    subprocess.CompletedProcess
    """
    args = [sys.executable, os.path.join(REPO, "recipes", script), os.path.join(REPO, "hparams", hparams)]
    env = {**library_env(os.path.join(REPO, "tests", "plugins")), "OMP_NUM_THREADS": "1"}
    for key, value in overrides.items():
        args.append(f"--{key}={value}")
    proc = subprocess.run(args, cwd=REPO, capture_output=True, text=True, env=env, check=False)
    assert proc.returncode == 0, f"{' '.join(args)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


def tiny_overrides(architecture, corpus, output_folder, epochs=1):
    """Overrides that run a recipe YAML on the tiny corpus with a tiny model."""
    sizes = {key: (str(value).replace(" ", "") if isinstance(value, list) else value)
             for key, value in TINY_SIZES[architecture].items()}
    return {"data_folder": corpus, "corpus_size": "tiny", "output_folder": output_folder,
            "number_of_epochs": epochs, "batch_size": 8, **sizes}
