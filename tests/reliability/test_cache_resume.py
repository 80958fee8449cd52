"""Item 5 of issue 11: a cache run killed after some dev shards gets each teacher's dev WER from every dev
utterance, and a complete cache whose dev WER was never written is repaired by a rerun."""

import json
import os
import sys
import textwrap
from pathlib import Path

from reliability_helpers import REPO, build_toy_cache, run

from speechkd.distill.cache import _atomic_sealed_json, read_sealed_json

# Caches in shards of 5 utterances and dies by SIGKILL right after committing the 2nd dev shard.
KILLED_AFTER_DEV_SHARDS = textwrap.dedent("""
    import os, signal, sys
    sys.path[:0] = sys.argv[3:]
    import speechkd.distill.teachers as teachers
    from reliability_helpers import build_toy_cache
    from speechkd.distill.cache import PosteriorCacheWriter

    class KilledWriter(PosteriorCacheWriter):
        def flush(self):
            super().flush()
            if sum(utt.startswith(tuple(DEV)) for utt in self.done_ids) >= 10:
                os.kill(os.getpid(), signal.SIGKILL)

    corpus, folder = sys.argv[1:3]
    DEV = [line.split(",")[0] for line in open(os.path.join(corpus, "dev.csv")).read().splitlines()[1:]]
    teachers.PosteriorCacheWriter = KilledWriter
    build_toy_cache(corpus, folder, shard_utts=5)
""")


def test_dev_wer_covers_every_dev_utterance_after_a_kill_and_a_missing_one_is_repaired(tiny_corpus, tmp_path):
    reference = build_toy_cache(tiny_corpus, str(tmp_path / "uninterrupted")).dev_wer
    folder = str(tmp_path / "killed")
    paths = [os.path.join(REPO, "tests", "reliability"), os.path.join(REPO, "tests", "plugins")]

    returncode, output = run([sys.executable, "-c", KILLED_AFTER_DEV_SHARDS, tiny_corpus, folder, *paths],
                             str(tmp_path / "killed.log"))
    assert returncode == -9, output
    with open(os.path.join(folder, "index.json")) as fin:
        assert not json.load(fin)["complete"]

    assert build_toy_cache(tiny_corpus, folder).dev_wer == reference
    assert len(set(reference.values())) == 2  # two teachers, two different WERs

    errors_path = Path(folder) / "teacher_errors.json"
    errors = {key: value for key, value in read_sealed_json(errors_path).items() if key != "sha256"}
    # what a kill after the last shard left before: a complete cache, sealed, without dev WERs
    _atomic_sealed_json(errors_path, {**errors, "dev_wer": None})
    assert build_toy_cache(tiny_corpus, folder).dev_wer == reference
