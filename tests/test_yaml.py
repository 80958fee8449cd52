"""Every key of every recipe YAML is used (in the style of SpeechBrain's tests/consistency/test_yaml.py).

A recipe YAML is checked with its ``defaults:`` files merged in
(:func:`speechkd.experiment.resolved_yaml_text`): a shared block must be used by
every recipe that takes it.

tests/recipes/recipes.csv lists which script takes which YAML (the pipeline
YAMLs are read by speechkd/pipeline.py). A key is used
when the script reads it (``hparams["key"]``, ``hparams.get("key")``), when
the Brain reads it (``self.hparams.key``, for the scripts that train with it), or when another
key of the YAML refers to it (``!ref <key>``). Keys starting with ``__`` run
for their side effect (seeding) and count as used.
"""

import csv
import glob
import os
import re

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BRAIN = os.path.join(REPO, "speechkd", "brains", "distill.py")


def recipe_rows():
    with open(os.path.join(REPO, "tests", "recipes", "recipes.csv")) as fin:
        return [(row["script"], row["hparams"]) for row in csv.DictReader(fin)]


def merged_text(yaml_path):
    from speechkd.experiment import resolved_yaml_text

    return resolved_yaml_text(yaml_path)


def top_level_keys(text):
    """Top-level keys of YAML text, in order (read as text: no object is built)."""
    return [m.group(1) for m in re.finditer(r"^([A-Za-z_][\w]*):", text, flags=re.MULTILINE)]


def keys_read_by(path):
    """Keys a Python file reads from ``hparams``."""
    with open(path) as fin:
        text = fin.read()
    patterns = [r"hparams\[\"(\w+)\"\]", r"hparams\.get\(\"(\w+)\"", r"hparams\.(\w+)",
                r"getattr\(self\.hparams, \"(\w+)\""]
    return {key for pattern in patterns for key in re.findall(pattern, text)}


def keys_referenced(text):
    """Keys another entry of the YAML points at with ``<key>`` or ``<key[...]>``."""
    return set(re.findall(r"<(\w+)[\[>]", text))


def defaults_files():
    """YAML files other YAMLs name in their ``defaults:`` (shared blocks, not recipes)."""
    import yaml

    from speechkd.experiment import DEFAULTS_KEY, yaml_blocks

    found = set()
    for path in glob.glob(os.path.join(REPO, "hparams", "**", "*.yaml"), recursive=True):
        with open(path) as fin:
            block = yaml_blocks(fin.read()).get(DEFAULTS_KEY)
        if block:
            folder = os.path.dirname(path)
            found |= {os.path.normpath(os.path.join(folder, name)) for name in yaml.safe_load(block)[DEFAULTS_KEY]}
    return found


def test_every_yaml_under_hparams_is_listed():
    listed = {hparams for _, hparams in recipe_rows()}
    shared = defaults_files()
    found = {os.path.relpath(p, REPO) for p in glob.glob(os.path.join(REPO, "hparams", "*", "*.yaml"))
             if os.path.normpath(p) not in shared}
    assert found - listed == set(), "YAML files no recipe takes (add them to tests/recipes/recipes.csv)"


@pytest.mark.parametrize(("script", "hparams"), recipe_rows())
def test_every_key_is_used(script, hparams):
    text = merged_text(os.path.join(REPO, hparams))
    script_path = os.path.join(REPO, script)
    with open(script_path) as fin:
        brain_keys = keys_read_by(BRAIN) if "DistillBrain" in fin.read() else set()
    used = keys_read_by(script_path) | brain_keys | keys_referenced(text)
    unused = [key for key in top_level_keys(text) if key not in used and not key.startswith("__")]
    assert unused == [], f"{hparams}: keys {script} never reads"


def test_an_unused_key_is_caught(tmp_path):
    """The check itself: a YAML with a stray key fails it."""
    (tmp_path / "shared.yaml").write_text("stray: 3\nname: shared\n")
    yaml_path = tmp_path / "x.yaml"
    yaml_path.write_text("defaults: [shared.yaml]\nseed: 1\nname: !ref run<seed>\n")
    script = tmp_path / "x.py"
    script.write_text('print(hparams["name"])\n')
    text = merged_text(str(yaml_path))
    used = keys_read_by(str(script)) | keys_referenced(text)
    assert [k for k in top_level_keys(text) if k not in used] == ["stray"]
