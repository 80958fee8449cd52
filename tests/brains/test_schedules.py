"""Epoch-indexed learning-rate schedules: the values, the Brain's dispatch, and resuming."""

import pytest

from speechkd.brains.distill import EPOCH_SCHEDULERS
from speechkd.brains.schedules import LinearDecay


def test_linear_decay_reaches_its_final_value_at_the_last_epoch():
    schedule = LinearDecay(0.003, 0.00015, 25)
    assert schedule(1) == pytest.approx((0.003, 0.003 - 0.00285 / 24))  # (this epoch's lr, the next one's)
    assert schedule(24) == pytest.approx((0.00015 + 0.00285 / 24, 0.00015))
    assert schedule(25) == pytest.approx((0.00015, 0.00015))
    assert isinstance(schedule, EPOCH_SCHEDULERS)  # the Brain calls it with the epoch, not the dev loss


def test_a_checkpointed_schedule_refuses_another_on_resume(tmp_path):
    path = tmp_path / "scheduler.ckpt"
    LinearDecay(0.003, 0.00015, 25).save(path)
    LinearDecay(0.003, 0.00015, 25).load(path)  # the same schedule resumes
    with pytest.raises(ValueError, match=r"another learning-rate schedule \(0.003 to 0.00015 over 25 epochs; "
                                         r"this run: 0.003 to 0.00015 over 30\)"):
        LinearDecay(0.003, 0.00015, 30).load(path)


def test_a_newbob_checkpoint_is_refused_by_a_linear_schedule(tmp_path):
    import speechbrain as sb

    path = tmp_path / "scheduler.ckpt"
    sb.nnet.schedulers.NewBobScheduler(initial_value=0.003).save(path)
    with pytest.raises(ValueError, match="written by another learning-rate scheduler"):
        LinearDecay(0.003, 0.00015, 25).load(path)
