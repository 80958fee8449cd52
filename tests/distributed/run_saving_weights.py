"""Run a recipe (``argv[1:]``) as ``__main__``; each rank saves its student's weights when training ends.

The weights are taken before ``evaluate`` recovers the best checkpoint (the
same file on every rank), so they show what each rank itself trained:
``$WEIGHTS_DIR/weights_rank<RANK>.pt``.
"""

import os
import runpy
import sys

import torch

from speechkd.brains.distill import DistillBrain

evaluate = DistillBrain.evaluate


def save_then_evaluate(brain, *args, **kwargs):
    path = os.path.join(os.environ["WEIGHTS_DIR"], f"weights_rank{os.environ.get('RANK', '0')}.pt")
    if not os.path.exists(path):
        torch.save(brain.student.state_dict(), path)
    return evaluate(brain, *args, **kwargs)


if __name__ == "__main__":
    DistillBrain.evaluate = save_then_evaluate
    sys.argv = sys.argv[1:]
    runpy.run_path(sys.argv[0], run_name="__main__")
