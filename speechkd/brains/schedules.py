"""Learning-rate schedules that anneal by epoch, checkpointable like SpeechBrain's NewBob."""

import speechbrain as sb
import torch


@sb.utils.checkpoints.register_checkpoint_hooks
class LinearDecay(sb.nnet.schedulers.LinearScheduler):
    """SpeechBrain's ``LinearScheduler`` (``initial_value`` at epoch 1, ``final_value`` at
    epoch ``epoch_count``), with checkpoint hooks so a recipe can list it as a recoverable.

    A budget-bound run wants its learning rate to reach a low value at its last epoch:
    NewBob anneals only when the dev loss stalls, which an under-trained student's
    rarely does, so it ends at the learning rate it started with.

    The schedule is stateless (the value is a function of the epoch; epoch 1 runs at
    the optimizer's ``lr``, which the YAML sets to ``initial_value``); the checkpoint
    stores the values so that a run resumed with another schedule, or from another
    scheduler's checkpoint, is refused with both schedules named.

    Example
    -------
    >>> schedule = LinearDecay(1.0, 0.0, 3)
    >>> schedule(1), schedule(2), schedule(3)
    ((1.0, 0.5), (0.5, 0.0), (0.0, 0.0))
    """

    @sb.utils.checkpoints.mark_as_saver
    def save(self, path):
        torch.save({"value_at_epoch": self.value_at_epoch}, path)

    @sb.utils.checkpoints.mark_as_loader
    def load(self, path, end_of_epoch=False):
        del end_of_epoch
        saved = torch.load(path).get("value_at_epoch")
        if saved is None:
            raise ValueError(f"checkpoint {path} was written by another learning-rate scheduler (not LinearDecay)")
        if len(saved) != len(self.value_at_epoch) or any(abs(a - b) > 1e-12 for a, b in zip(saved, self.value_at_epoch)):
            raise ValueError(f"checkpoint {path} was written with another learning-rate schedule "
                             f"({saved[0]:g} to {saved[-1]:g} over {len(saved)} epochs; this run: "
                             f"{self.value_at_epoch[0]:g} to {self.value_at_epoch[-1]:g} over "
                             f"{len(self.value_at_epoch)})")
