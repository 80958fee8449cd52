"""Experiment folders: token inventory, model construction, reloading a trained model.

An experiment folder (``results/<name>/<seed>/``) holds, besides SpeechBrain's
``hyperparams.yaml``, ``log.txt``, ``train_log.txt`` and ``save/CKPT+*``:

- ``tokens.txt``: the token inventory the model was trained with;
- ``model.json``: the model class and its constructor arguments, so any
  tool (transcribe, cache, export) can rebuild the model without the YAML;
  an adapted teacher's (:func:`adapted_model`) also records ``adapted_from``
  and ``added_tokens``.
"""

import functools
import importlib
import json
import logging
import os
import re

import speechbrain as sb

from speechkd.data.manifest import read_manifest
from speechkd.models.surgery import extend_output_layer
from speechkd.text import UNK, TokenInventory

logger = logging.getLogger(__name__)

MODEL_CARD = "model.json"
TOKENS_FILE = "tokens.txt"


def inventory_for(manifests, tokens_path):
    """Load the experiment's inventory, or build it from the training transcripts.

    Parameters
    ----------
    manifests : list of str
        The training manifest first, then the evaluation manifests. The
        inventory comes from the corpus folder's ``tokens.txt`` when its
        preparation wrote one (:func:`speechkd.data.corpora.write_prepared_corpus`:
        training text, a minimum count, ``<unk>``), else from the training
        transcripts (:meth:`TokenInventory.from_training_texts`); evaluation
        text never adds a symbol: a character training lacks is ``<unk>``
        (counted in the log).
    tokens_path : str
        Where the inventory is saved; an existing file is reused, and a
        character it lacks is an error naming it unless it has ``<unk>``.

    Returns
    -------
    speechkd.text.TokenInventory
    """
    texts = {path: [row["wrd"] for row in read_manifest(path, allow_empty_wrd=True)] for path in manifests}
    if os.path.exists(tokens_path):
        inventory = TokenInventory.load(tokens_path)
        missing = sorted(inventory.missing(text for path_texts in texts.values() for text in path_texts))
        if missing and inventory.unk_index is None:
            raise ValueError(
                f"{tokens_path} lacks characters {missing} found in {manifests}; "
                "delete it to rebuild, or extend the inventory"
            )
        return inventory
    corpus_tokens = os.path.join(os.path.dirname(os.path.abspath(manifests[0])), TOKENS_FILE)
    if os.path.exists(corpus_tokens):
        inventory = TokenInventory.load(corpus_tokens)
    else:  # the same on every process; the main one saves it
        train, *others = texts.values()
        inventory, report = TokenInventory.from_training_texts(
            train, other_texts=[text for path_texts in others for text in path_texts])
        if report["unseen"]:
            logger.warning("characters of %s not in the training text %s become %s: %s",
                           manifests[1:], manifests[0], UNK, report["unseen"])
    if sb.utils.distributed.if_main_process():
        os.makedirs(os.path.dirname(tokens_path) or ".", exist_ok=True)
        inventory.save(tokens_path)
    return inventory


def run_device(run_opts):
    """The device a recipe runs on: ``--device``, else SpeechBrain's choice (``cuda:<LOCAL_RANK>`` or ``cpu``)."""
    return (run_opts or {}).get("device") or sb.utils.distributed.infer_device()


def run_precision(run_opts):
    """SpeechBrain's ``--precision`` (``fp32``, ``bf16`` or ``fp16``), ``fp32`` when not given."""
    return (run_opts or {}).get("precision") or "fp32"


def student_inventory(tokens, ensemble, manifests, tokens_path):
    """The student's tokens: the teachers' (``tokens="teachers"``) or built from its data (``"own"``).

    With ``own``, the teacher target maps teacher tokens to the student's by symbol.

    Parameters
    ----------
    tokens : {"teachers", "own"}
    ensemble : speechkd.distill.TeacherEnsemble
    manifests : list of str
        Manifests whose transcripts an ``own`` inventory must cover.
    tokens_path : str
        Where the inventory is saved (``tokens.txt`` of the experiment).
    """
    if tokens == "teachers":
        if sb.utils.distributed.if_main_process():
            ensemble.inventory.save(tokens_path)
        return ensemble.inventory
    if tokens != "own":
        raise ValueError(f"student_tokens must be 'teachers' or 'own', got {tokens!r}")
    return inventory_for(manifests, tokens_path)


def build_model(model_factory, inventory, folder, name=None):
    """Instantiate the YAML's ``model`` (a ``!name:`` partial) and write ``model.json``.

    Parameters
    ----------
    model_factory : functools.partial
        ``!name:speechkd.models.<Class>`` with its size arguments.
    inventory : speechkd.text.TokenInventory
        Sets the number of output tokens.
    folder : str
        Experiment folder receiving ``model.json``.
    name : str, optional
        The model's name in reports and caches (default: the folder's).

    Returns
    -------
    speechkd.models.AcousticModel
    """
    if not isinstance(model_factory, functools.partial):
        raise TypeError("hparams 'model' must be a !name: partial, e.g. !name:speechkd.models.TDNNCTC")
    kwargs = dict(model_factory.keywords)
    model = model_factory(n_tokens=len(inventory))
    card = {
        "name": name or os.path.basename(os.path.normpath(folder)),
        "class": f"{model_factory.func.__module__}.{model_factory.func.__qualname__}",
        "kwargs": kwargs,
        "n_tokens": len(inventory),
        "tokens_fingerprint": inventory.fingerprint,
        "frame_shift_ms": model.frame_shift_ms,
    }
    if sb.utils.distributed.if_main_process():
        write_json(os.path.join(folder, MODEL_CARD), card)
    return model


def model_name(folder):
    """The name a model was trained under (``name`` in its ``model.json``)."""
    with open(os.path.join(folder, MODEL_CARD)) as fin:
        return json.load(fin).get("name") or os.path.basename(os.path.normpath(folder))


def load_model(folder, device="cpu", min_key="WER"):
    """Rebuild a trained model from its experiment folder, best checkpoint loaded.

    Parameters
    ----------
    folder : str
        Experiment folder written by a speechkd recipe.
    device : str
        Torch device for the model.
    min_key : str
        Checkpoint meta key to minimise when choosing the checkpoint.

    Returns
    -------
    model : speechkd.models.AcousticModel
        In eval mode.
    inventory : speechkd.text.TokenInventory
    """
    card_path = os.path.join(folder, MODEL_CARD)
    if not os.path.exists(card_path):
        raise FileNotFoundError(f"{folder} is not a speechkd experiment folder (no {MODEL_CARD})")
    with open(card_path) as fin:
        card = json.load(fin)
    module_name, _, class_name = card["class"].rpartition(".")
    model_class = getattr(importlib.import_module(module_name), class_name)
    inventory = TokenInventory.load(os.path.join(folder, TOKENS_FILE))
    if inventory.fingerprint != card["tokens_fingerprint"]:
        raise ValueError(f"{folder}: tokens.txt does not match the inventory the model was built with")
    model = model_class(n_tokens=len(inventory), **card["kwargs"])
    checkpointer = sb.utils.checkpoints.Checkpointer(
        os.path.join(folder, "save"), recoverables={"model": model}
    )
    checkpoint = checkpointer.find_checkpoint(min_key=min_key)
    if checkpoint is None:
        raise FileNotFoundError(f"{folder}/save holds no checkpoint with '{min_key}'")
    weights = os.path.join(checkpoint.path, "model.ckpt")  # SpeechBrain names it after the recoverable
    if not os.path.isfile(weights):
        raise FileNotFoundError(f"file not found: {weights} (the model's weights in its best checkpoint); "
                                "restore it or retrain the model")
    try:
        checkpointer.load_checkpoint(checkpoint)
    except Exception as err:  # noqa: BLE001 - torch.load raises many types for a damaged file
        raise ValueError(f"{weights}: cannot load the model's weights ({type(err).__name__}: "
                         f"{str(err).splitlines()[0] if str(err) else 'corrupt file'}); "
                         "restore the file or retrain the model") from None
    return model.to(device).eval(), inventory


def adapted_model(teacher_folder, target_texts):
    """Load a trained teacher and extend its inventory and output layer to the target's characters.

    Parameters
    ----------
    teacher_folder : str
        Experiment folder of the trained teacher.
    target_texts : iterable of str
        Target-language transcripts the inventory must cover.

    Returns
    -------
    model : speechkd.models.AcousticModel
        The teacher (normalizer and weights), output layer extended, in train mode.
    inventory : speechkd.text.TokenInventory
        The teacher's inventory with the new characters appended (old indices kept).
    added : list of str
        The characters added, in index order.
    """
    model, teacher_inventory = load_model(teacher_folder)
    inventory, added = teacher_inventory.extend(sorted({ch for text in target_texts for ch in text}))
    extend_output_layer(model, len(inventory))
    return model.train(), inventory, added


def write_adapted_card(teacher_folder, folder, name, inventory, added):
    """``model.json`` of an adapted teacher: the teacher's card with the extended inventory.

    Records ``adapted_from`` (the teacher's folder) and ``added_tokens``.
    """
    with open(os.path.join(teacher_folder, MODEL_CARD)) as fin:
        card = json.load(fin)
    card.update(name=name, n_tokens=len(inventory), tokens_fingerprint=inventory.fingerprint,
                adapted_from=os.path.abspath(teacher_folder), added_tokens=added)
    write_json(os.path.join(folder, MODEL_CARD), card)


def write_json(path, payload):
    """Write ``payload`` as indented, key-sorted JSON (stable across runs)."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path, "w") as fout:
        json.dump(payload, fout, indent=2, sort_keys=True)
        fout.write("\n")


DEFAULTS_KEY = "defaults"
FIRST_KEYS = ("seed", "__set_seed")
_TOP_LEVEL_KEY = re.compile(r"^([A-Za-z_]\w*):")


def yaml_blocks(text):
    """Split YAML text into top-level blocks: key -> its lines (comment lines just above it included).

    Returns
    -------
    dict
        Key -> block text, in file order; text before the first key (the
        header comment) is dropped.
    """
    blocks, pending, key = {}, [], None
    for line in text.splitlines(keepends=True):
        match = _TOP_LEVEL_KEY.match(line)
        if match:
            blocks[match.group(1)] = ("".join(pending) if key is not None else "") + line
            key = match.group(1)
            pending = []
        elif key is None or line.startswith("#") or not line.strip():
            pending.append(line)
        else:  # an indented continuation of the current key
            blocks[key] += "".join(pending) + line
            pending = []
    return blocks


def resolved_yaml_text(hparams_file):
    """The YAML text of ``hparams_file`` with its ``defaults:`` files merged in.

    A recipe YAML may start with ``defaults: [../common/training.yaml, ...]``
    (paths relative to the file). Their top-level keys come first, in order,
    a later file replacing an earlier one's key in place; the file's own keys
    replace theirs and add to them. So a YAML lists only what it changes, and
    a block several recipes share lives in one file. The result is plain
    hyperpyyaml (a ``!ref`` must point at a key defined above it, as always).
    ``seed`` and ``__set_seed`` move to the top, so seeding happens before any
    object is built.
    """
    with open(hparams_file, encoding="utf-8") as fin:
        own = yaml_blocks(fin.read())
    merged = {}
    if DEFAULTS_KEY in own:
        import yaml

        folder = os.path.dirname(os.path.abspath(hparams_file))
        for name in yaml.safe_load(own.pop(DEFAULTS_KEY))[DEFAULTS_KEY]:
            merged.update(yaml_blocks(resolved_yaml_text(os.path.join(folder, name))))
    merged.update(own)
    first = {key: merged.pop(key) for key in FIRST_KEYS if key in merged}
    return "".join(block if block.endswith("\n") else block + "\n" for block in {**first, **merged}.values())


def load_hparams(hparams_file, overrides=None):
    """Load a recipe YAML (its ``defaults:`` merged, see :func:`resolved_yaml_text`) with overrides.

    Returns
    -------
    hparams : dict
    resolved_file : str
        The merged YAML in a temporary file (removed when the process exits),
        for ``sb.create_experiment_directory(hyperparams_to_save=...)``.
    """
    import atexit
    import io
    import tempfile

    from hyperpyyaml import load_hyperpyyaml

    text = resolved_yaml_text(hparams_file)
    stream = io.StringIO(text)
    stream.name = hparams_file  # hyperpyyaml resolves !include: paths from the stream's file
    hparams = load_hyperpyyaml(stream, overrides)
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False, encoding="utf-8") as fout:
        fout.write(text)
    atexit.register(os.remove, fout.name)
    return hparams, fout.name
