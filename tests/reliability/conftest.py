"""A student trained uninterrupted on the tiny corpus: the reference the fault tests compare against."""

import pytest
from reliability_helpers import STUDENT_SIZES, recipe_command, run

EPOCHS = 3


def student_overrides(corpus, folder, **changes):
    """The tiny student recipe's overrides (3 epochs, SpecAugment and dropout on)."""
    return {"data_folder": corpus, "corpus_size": "tiny", "output_folder": folder, "number_of_epochs": EPOCHS,
            "batch_size": 8, **STUDENT_SIZES, **changes}


@pytest.fixture(scope="session")
def trained_student(tiny_corpus, tmp_path_factory):
    """Folder of the uninterrupted run."""
    folder = str(tmp_path_factory.mktemp("reliability") / "uninterrupted")
    returncode, output = run(recipe_command("ctc/train.py", "ctc/student.yaml", student_overrides(tiny_corpus, folder)),
                             folder + ".log")
    assert returncode == 0, output[-3000:]
    return folder
