"""Checkpoints that survive a kill, and the random state that makes a resumed run repeat the uninterrupted one.

SpeechBrain's :class:`~speechbrain.utils.checkpoints.Checkpointer` writes a
checkpoint's ``CKPT.yaml`` first and its ``*.ckpt`` files after it, and lists
every ``CKPT+*`` folder that has a ``CKPT.yaml``; a run killed while saving
leaves a checkpoint that every later rerun, ``transcribe`` and ``export``
tries to load (a 0-byte ``CKPT.yaml`` is a TypeError). :class:`Checkpointer`
writes ``CKPT.yaml`` last, by an atomic rename once every file is on disk,
and skips (with a warning naming the folder) checkpoints left incomplete by
older runs: empty or unreadable ``CKPT.yaml``, a missing, empty or truncated
``.ckpt`` file.

SpeechBrain's sampler reshuffles from a fixed seed and the epoch number, but
SpecAugment and dropout draw from torch's global generator, whose state a
resumed run does not have. :class:`RandomState` is a recoverable holding the
torch (CPU and CUDA), NumPy and Python generators' states.
"""

import logging
import pickle
import random
import shutil
import zipfile

import numpy as np
import speechbrain as sb
import torch
import yaml
from speechbrain.utils.checkpoints import (
    METAFNAME,
    PARAMFILE_EXT,
    mark_as_loader,
    mark_as_saver,
    register_checkpoint_hooks,
)

logger = logging.getLogger(__name__)

PENDING_META = METAFNAME + ".pending"
"""Name of a checkpoint's meta file until every other file of it is written."""


@register_checkpoint_hooks
class RandomState:
    """The global random generators (torch CPU and CUDA, NumPy, Python) as a checkpoint recoverable.

    Saved at each checkpoint and restored when a run resumes, so augmentation
    and dropout draw the same numbers as in the run that was not interrupted.
    Under DDP the main process's state is saved and every process gets it back.
    """

    @mark_as_saver
    def save(self, path):
        state = {
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "numpy": np.random.get_state(),
            "python": random.getstate(),
        }
        with open(path, "wb") as fout:
            pickle.dump(state, fout)

    @mark_as_loader
    def load(self, path, end_of_epoch=True):
        del end_of_epoch  # the generators are saved where the checkpoint is taken, mid-epoch or not
        with open(path, "rb") as fin:
            state = pickle.load(fin)
        torch.set_rng_state(state["torch"])
        if state["cuda"] and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(state["cuda"])
        np.random.set_state(state["numpy"])
        random.setstate(state["python"])


class Checkpointer(sb.utils.checkpoints.Checkpointer):
    """SpeechBrain's Checkpointer, with checkpoints that appear whole or not at all.

    Parameters
    ----------
    checkpoints_dir, recoverables, custom_load_hooks, custom_save_hooks, allow_partial_load
        As for :class:`speechbrain.utils.checkpoints.Checkpointer`.
    random_state : bool
        Also checkpoint the global random generators (a :class:`RandomState`
        named ``random_state``, optional on load so checkpoints written before
        it existed still load).
    """

    def __init__(self, checkpoints_dir, recoverables=None, custom_load_hooks=None, custom_save_hooks=None,
                 allow_partial_load=False, random_state=False):
        super().__init__(checkpoints_dir, recoverables, custom_load_hooks, custom_save_hooks, allow_partial_load)
        if random_state:
            self.add_recoverable("random_state", RandomState(), optional_load=True)
        self._warned = set()

    def save_checkpoint(self, meta=None, end_of_epoch=True, name=None, verbosity=logging.INFO):
        """SpeechBrain's ``save_checkpoint``, then ``CKPT.yaml`` moved into place: the checkpoint is complete."""
        self._remove_unfinished()
        checkpoint = super().save_checkpoint(meta or {}, end_of_epoch, name, verbosity)
        if checkpoint is not None:  # the main process, which wrote the meta file
            (checkpoint.path / PENDING_META).replace(checkpoint.path / METAFNAME)
        # Every rank lists the checkpoints next (save_and_keep_only); one that still saw the
        # pending meta file would pick other checkpoints to delete than the main process, and
        # the ranks' collectives in SpeechBrain's deletion would no longer pair up (a hang).
        sb.utils.distributed.ddp_barrier()
        return checkpoint

    def _save_checkpoint_metafile(self, fpath, meta_to_include=None, end_of_epoch=True):
        return super()._save_checkpoint_metafile(fpath.parent / PENDING_META, meta_to_include or {}, end_of_epoch)

    def _remove_unfinished(self):
        """Delete folders of saves that a kill interrupted (meta file still pending)."""
        if not sb.utils.distributed.if_main_process():
            return
        for pending in self.checkpoints_dir.glob(f"*/{PENDING_META}"):
            if not (pending.parent / METAFNAME).exists():
                logger.warning("removing %s: its save was interrupted", pending.parent)
                shutil.rmtree(pending.parent, ignore_errors=True)

    def list_checkpoints(self):
        """Complete checkpoints only; an incomplete one is skipped with a warning naming it and why."""
        complete = []
        for ckpt_dir in self._list_checkpoint_dirs():
            problem = self.incomplete_reason(ckpt_dir)
            if problem is None:
                complete.extend(self._construct_checkpoint_objects([ckpt_dir]))
            elif ckpt_dir not in self._warned:
                self._warned.add(ckpt_dir)
                logger.warning("ignoring incomplete checkpoint %s: %s (a run was killed while saving it; "
                               "delete the folder to silence this)", ckpt_dir, problem)
        return complete

    def incomplete_checkpoints(self):
        """``[(folder, why)]`` of the checkpoints :meth:`list_checkpoints` skips."""
        found = ((ckpt_dir, self.incomplete_reason(ckpt_dir)) for ckpt_dir in self._list_checkpoint_dirs())
        return [(ckpt_dir, problem) for ckpt_dir, problem in found if problem is not None]

    def incomplete_reason(self, ckpt_dir):
        """Why the checkpoint in ``ckpt_dir`` cannot be loaded, or None when it is complete.

        Parameters
        ----------
        ckpt_dir : pathlib.Path
            A ``CKPT+*`` folder holding a ``CKPT.yaml``.

        Returns
        -------
        str or None
        """
        try:
            with open(ckpt_dir / METAFNAME, encoding="utf-8") as fin:
                meta = yaml.safe_load(fin)
        except yaml.YAMLError as err:
            return f"{METAFNAME} is not YAML ({err.__class__.__name__})"
        if not isinstance(meta, dict) or "end-of-epoch" not in meta:
            return f"{METAFNAME} is empty or incomplete"
        for name in self.recoverables:
            path = ckpt_dir / f"{name}{PARAMFILE_EXT}"
            if not path.exists():
                if not self.optional_recoverables.get(name, False):
                    return f"{path.name} is missing"
                continue
            if path.stat().st_size == 0:
                return f"{path.name} is empty"
            with open(path, "rb") as fin:
                zipped = fin.read(4) == b"PK\x03\x04"  # torch.save writes a zip archive
            if zipped and not zipfile.is_zipfile(path):
                return f"{path.name} is truncated"
        return None
