"""Experiment folders: token inventory, model construction, reloading a trained model.

An experiment folder (``results/<name>/<seed>/``) holds, besides SpeechBrain's
``hyperparams.yaml``, ``log.txt``, ``train_log.txt`` and ``save/CKPT+*``:

- ``tokens.txt``: the token inventory the model was trained with;
- ``model.json``: the model class and its constructor arguments, so any
  tool (transcribe, cache, export) can rebuild the model without the YAML;
  an adapted teacher's (:func:`adapted_model`) also records ``adapted_from``
  and ``added_tokens``.
"""

import contextlib
import functools
import glob
import importlib
import json
import logging
import os
import re
import shutil

import speechbrain as sb

from speechkd.checkpoints import Checkpointer
from speechkd.data.manifest import read_manifest
from speechkd.models.surgery import extend_output_layer, init_from
from speechkd.stages import folder_lock
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
        if not any(text.strip() for text in train):
            raise ValueError(f"{manifests[0]} has no transcripts to build the token inventory from "
                             "(evaluation text never defines it); give a labelled training manifest, "
                             "a prepared corpus with tokens.txt, or student_tokens: teachers")
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


HPARAMS_FILE = "hyperparams.yaml"
RESUMABLE_KEYS = ("number_of_epochs", "restart", "output_folder", "checkpointer", "train_logger")
"""Keys a rerun may change and still resume the run in its folder: train longer, start clean, a moved
folder, how checkpoints and logs are written. A key the saved run did not have (added to the YAML
since) is not compared either."""
RUN_PRODUCTS = ("save", MODEL_CARD, TOKENS_FILE, HPARAMS_FILE, "train_log.txt", "results.json", "wer_*.txt",
                "pseudo_labels")
"""What a training run writes into its folder, and :func:`clear_experiment` removes."""


_HELD_LOCKS = contextlib.ExitStack()
"""Experiment folders this process writes into; the operating system releases them when it ends."""


def open_experiment(folder, resolved_file, overrides, restart=False):
    """SpeechBrain's ``create_experiment_directory``, once the run is known to fit the folder.

    A rerun into a folder that holds a trained (or partly trained) model
    resumes it when its hyperparameters are the ones the folder was trained
    with (``number_of_epochs`` may grow). With other hyperparameters it is
    refused, each difference named, before any file of the old run is
    rewritten; with ``restart`` the old run's files (:data:`RUN_PRODUCTS`)
    are deleted and training starts clean.

    Parameters
    ----------
    folder : str
        The experiment folder (``output_folder``).
    resolved_file : str
        The merged YAML (see :func:`load_hparams`).
    overrides : str or dict
        The command line's overrides, as ``sb.parse_arguments`` returns them.
    restart : bool
        The YAML's ``restart`` (``--restart=True``).

    The main process holds the folder's lock (:func:`speechkd.stages.folder_lock`)
    until it exits, so a second run into the folder is refused, naming this one.

    Raises
    ------
    ValueError
        The folder holds a run with other hyperparameters and ``restart`` is False.
    speechkd.stages.FolderLocked
        Another run is writing into the folder.
    """
    if sb.utils.distributed.if_main_process():  # the other ranks wait in create_experiment_directory
        _HELD_LOCKS.enter_context(folder_lock(folder))
        refuse_other_hyperparameters(folder, resolved_file, overrides, restart)
    sb.create_experiment_directory(folder, hyperparams_to_save=resolved_file, overrides=overrides)


def refuse_other_hyperparameters(folder, resolved_file, overrides, restart):
    """The check of :func:`open_experiment` (main process): refuse, or with ``restart`` clear, another run."""
    from hyperpyyaml import resolve_references

    saved = os.path.join(folder, HPARAMS_FILE)
    if os.path.exists(saved) and holds_model(folder):
        with open(resolved_file, encoding="utf-8") as fin:
            source_text = fin.read()
        with open(saved, encoding="utf-8") as fin:
            saved_text = fin.read()
        differences = hparams_differences(saved_text, resolve_references(source_text, overrides).getvalue(),
                                          source_text)
        if differences and not restart:
            raise ValueError(
                f"{folder} holds a run trained with other hyperparameters: " + "; ".join(differences)
                + ". Rerun with its settings to resume it, add --restart=True to delete its checkpoints "
                "and model files and train from scratch, or choose another --output_folder"
            )
        if differences:
            clear_experiment(folder)


def holds_model(folder):
    """Whether an experiment folder has a model card or a checkpoint folder."""
    save = os.path.join(folder, "save")
    return os.path.exists(os.path.join(folder, MODEL_CARD)) or (os.path.isdir(save) and bool(os.listdir(save)))


def hparams_differences(saved_text, new_text, source_text):
    """``key: old -> new`` for each top-level key the user changed (keys in :data:`RESUMABLE_KEYS` aside).

    Parameters
    ----------
    saved_text, new_text : str
        hyperpyyaml with references resolved (as SpeechBrain saves
        ``hyperparams.yaml``); tags (``!new:``, ``!name:``...) are compared as
        written, comments ignored.
    source_text : str
        The YAML before resolution: a key whose value changed only because a
        key it refers to (``!ref <key>``) changed is not named again.
    """
    old, new = yaml_values(saved_text), yaml_values(new_text)
    changed = {key for key in old if old[key] != new.get(key, "(absent)")}
    refers_to = {key: set(re.findall(r"<(\w+)", block)) for key, block in yaml_blocks(source_text).items()}
    return [
        f"{key}: {old[key]} -> {new.get(key, '(absent)')}"
        for key in old
        if key in changed and key not in RESUMABLE_KEYS and not refers_to.get(key, set()) & changed
    ]


def yaml_values(text):
    """Top-level mapping of hyperpyyaml text, tagged nodes kept as ``"!tag value"`` (nothing is built)."""
    import yaml

    class TaggedLoader(yaml.SafeLoader):
        pass

    def tagged(loader, suffix, node):
        if isinstance(node, yaml.MappingNode):
            value = loader.construct_mapping(node, deep=True)
        elif isinstance(node, yaml.SequenceNode):
            value = loader.construct_sequence(node, deep=True)
        else:
            value = loader.construct_scalar(node)
        return f"!{suffix} {value}".rstrip()

    TaggedLoader.add_multi_constructor("!", tagged)
    return yaml.load(text, Loader=TaggedLoader) or {}


def clear_experiment(folder):
    """Delete a training run's files (:data:`RUN_PRODUCTS`) from its folder; ``log.txt`` is kept.

    A folder (``save``) is emptied, not removed: the YAML's checkpointer already made it.
    """
    for pattern in RUN_PRODUCTS:
        for path in glob.glob(os.path.join(folder, pattern)):
            logger.warning("restart: deleting %s", path)
            if os.path.isdir(path):
                for child in (os.path.join(path, name) for name in os.listdir(path)):
                    if os.path.isdir(child):
                        shutil.rmtree(child)
                    else:
                        os.remove(child)
            else:
                os.remove(path)


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
    checkpointer = Checkpointer(os.path.join(folder, "save"), recoverables={"model": model})
    checkpoint = checkpointer.find_checkpoint(min_key=min_key)
    if checkpoint is None:
        skipped = "".join(f"; {ckpt_dir}/{problem}"  # e.g. ".../CKPT+.../model.ckpt is missing"
                          for ckpt_dir, problem in checkpointer.incomplete_checkpoints())
        raise FileNotFoundError(f"{folder}/save holds no complete checkpoint with '{min_key}'{skipped}")
    weights = os.path.join(checkpoint.path, "model.ckpt")  # present: the Checkpointer skips checkpoints without it
    try:
        checkpointer.load_checkpoint(checkpoint)
    except Exception as err:  # noqa: BLE001 - torch.load raises many types for a damaged file
        raise ValueError(f"{weights}: cannot load the model's weights ({type(err).__name__}: "
                         f"{str(err).splitlines()[0] if str(err) else 'corrupt file'}); "
                         "restore the file or retrain the model") from None
    return model.to(device).eval(), inventory


def init_from_folder(model, inventory, folder, setting="init_from"):
    """Start ``model`` from the weights of the trained model in ``folder`` (best checkpoint).

    Parameters
    ----------
    model : speechkd.models.AcousticModel
        Freshly built, of the source's architecture and size.
    inventory : speechkd.text.TokenInventory
        ``model``'s tokens; the source must speak the same.
    folder : str
        Experiment folder of the source model.
    setting : str
        The YAML key that asked for it, named in the errors.

    Raises
    ------
    ValueError
        When the source speaks other tokens, or differs in architecture or size.
    """
    source, source_inventory = load_model(folder)
    if source_inventory.fingerprint != inventory.fingerprint:
        raise ValueError(f"{setting}: {folder} speaks other tokens than this student "
                         f"({len(source_inventory)} against {len(inventory)}); start from a model "
                         "trained on this student's inventory (student_tokens)")
    return init_from(model, source, setting=setting, off="null")


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
