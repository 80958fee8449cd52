"""Every key of every recipe YAML is used (in the style of SpeechBrain's tests/consistency/test_yaml.py).

tests/recipes/recipes.csv lists which script takes which YAML (the pipeline
YAMLs are read by speechkd/pipeline.py). A key is used
when the script reads it (``hparams["key"]``, ``hparams.get("key")``), when
the Brain every recipe uses reads it (``self.hparams.key``), or when another
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
INCLUDED = os.path.join(REPO, "hparams", "common")


def recipe_rows():
    with open(os.path.join(REPO, "tests", "recipes", "recipes.csv")) as fin:
        return [(row["script"], row["hparams"]) for row in csv.DictReader(fin)]


def top_level_keys(yaml_path):
    """Top-level keys of a YAML file, in order (read as text: no object is built)."""
    with open(yaml_path) as fin:
        return [m.group(1) for m in re.finditer(r"^([A-Za-z_][\w]*):", fin.read(), flags=re.MULTILINE)]


def keys_read_by(path):
    """Keys a Python file reads from ``hparams``."""
    with open(path) as fin:
        text = fin.read()
    patterns = [r"hparams\[\"(\w+)\"\]", r"hparams\.get\(\"(\w+)\"", r"hparams\.(\w+)",
                r"getattr\(self\.hparams, \"(\w+)\""]
    return {key for pattern in patterns for key in re.findall(pattern, text)}


def keys_referenced(yaml_path):
    """Keys another entry of the YAML points at with ``<key>`` or ``<key[...]>``."""
    with open(yaml_path) as fin:
        return set(re.findall(r"<(\w+)[\[>]", fin.read()))


def test_every_yaml_under_hparams_is_listed():
    listed = {hparams for _, hparams in recipe_rows()}
    found = {os.path.relpath(p, REPO) for p in glob.glob(os.path.join(REPO, "hparams", "*", "*.yaml"))
             if not p.startswith(INCLUDED)}
    assert found - listed == set(), "YAML files no recipe takes (add them to tests/recipes/recipes.csv)"


@pytest.mark.parametrize(("script", "hparams"), recipe_rows())
def test_every_key_is_used(script, hparams):
    used = keys_read_by(os.path.join(REPO, script)) | keys_read_by(BRAIN) | keys_referenced(
        os.path.join(REPO, hparams))
    unused = [key for key in top_level_keys(os.path.join(REPO, hparams))
              if key not in used and not key.startswith("__")]
    assert unused == [], f"{hparams}: keys {script} never reads"


def test_an_unused_key_is_caught(tmp_path):
    """The check itself: a YAML with a stray key fails it."""
    yaml_path = tmp_path / "x.yaml"
    yaml_path.write_text("seed: 1\nname: !ref run<seed>\nstray: 3\n")
    script = tmp_path / "x.py"
    script.write_text('print(hparams["name"])\n')
    used = keys_read_by(str(script)) | keys_referenced(str(yaml_path))
    assert [k for k in top_level_keys(str(yaml_path)) if k not in used] == ["stray"]
