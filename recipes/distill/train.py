#!/usr/bin/env python3
"""Distil a teacher ensemble into a student by frame-level posterior matching.

    L = alpha * CTC + (1 - alpha) * tau^2 * mean_t KL(teachers^tau || student^tau)

The objective's terms, the teacher target (fusion strategy, inventory
mapping, delay) and the student are declared in the YAML. Teachers come from
the posterior cache (recipes/distill/cache_teachers.py) or, with
``--online=True``, run inside the training step. ``--alpha=0`` needs no
transcripts; ``--unlabelled_csv`` adds audio that only the teachers label;
``--unlabelled_transcripts=lexicon`` (or ``greedy``) also gives that audio the
teachers' own transcripts as labels (sequence-level KD; ``lexicon``: where the
greedy path agrees);
``--init_from=<model folder>`` starts the student from a trained model of its
own architecture, size and tokens (the main job's: the baseline).

    python recipes/distill/train.py hparams/distill/student.yaml
    python recipes/distill/train.py hparams/distill/student.yaml --strategy=best --temperature=2
"""

import logging
import os
import sys

import speechbrain as sb

from speechkd.brains.distill import DistillBrain
from speechkd.data.manifest import read_manifest
from speechkd.data.pipelines import make_dataset, test_sets
from speechkd.data.subsets import concat_manifests
from speechkd.distill.teachers import TeacherEnsemble, cache_features, open_cache_for
from speechkd.distill.transcripts import (
    PSEUDO_LABELLED_CSV,
    STILL_UNLABELLED_CSV,
    pseudo_label_from_teachers,
)
from speechkd.experiment import (
    build_model,
    init_from_folder,
    load_hparams,
    open_experiment,
    run_device,
    student_inventory,
)

logger = logging.getLogger(__name__)

if __name__ == "__main__":
    hparams_file, run_opts, overrides = sb.parse_arguments(sys.argv[1:])
    hparams, resolved_file = load_hparams(hparams_file, overrides)
    sb.utils.distributed.ddp_init_group(run_opts)
    open_experiment(hparams["output_folder"], resolved_file, overrides, restart=hparams["restart"])
    sb.utils.distributed.run_on_main(hparams["prepare"])

    # Teachers: run online, or their posterior cache (refused unless made from exactly these teachers)
    ensemble = TeacherEnsemble(hparams["teachers"], device=run_device(run_opts), k=hparams["top_k"])
    teachers = ensemble if hparams["online"] else open_cache_for(
        ensemble, hparams["cache_folder"], hparams["top_k"],
        cache_features(hparams["data_folder"], hparams["teacher_domain"]), os.path.abspath(hparams["valid_csv"]),
    )

    # The student, with the teachers' tokens or its own
    inventory = student_inventory(hparams["student_tokens"], ensemble,
                                  [hparams["train_csv"], hparams["valid_csv"], *hparams["test_csvs"]],
                                  os.path.join(hparams["output_folder"], "tokens.txt"))
    model = build_model(hparams["model"], inventory, hparams["output_folder"], hparams["name"])
    if hparams.get("init_from") and hparams["checkpointer"].find_checkpoint() is None:  # a resumed run has its own
        init_from_folder(model, inventory, hparams["init_from"])
    hparams["checkpointer"].add_recoverable("model", model)

    # Training rows: the labelled manifest, plus unlabelled audio only the teachers' targets reach,
    # or also their transcripts (pseudo-labels: the fused teachers decoded at each start, on rank 0)
    train_csv, labelled_ids = hparams["train_csv"], None
    unlabelled_csv, transcripts = hparams.get("unlabelled_csv"), hparams.get("unlabelled_transcripts")
    if transcripts and not (unlabelled_csv and hparams["objective"].needs_transcripts):
        logger.warning("unlabelled_transcripts: %s ignored: %s", transcripts, "no term reads transcripts (alpha 0)"
                       if unlabelled_csv else "there is no unlabelled_csv (transfer set) to label")
        transcripts = None
    if unlabelled_csv:  # optional: a YAML without it trains on train_csv alone
        labelled_parts = [train_csv]
        if transcripts:
            pseudo_label_folder = os.path.join(hparams["output_folder"], "pseudo_labels")
            sb.utils.distributed.run_on_main(pseudo_label_from_teachers, args=[
                teachers, inventory, unlabelled_csv, hparams["data_folder"], pseudo_label_folder],
                kwargs={"decoding": transcripts, "lexicon_csv": train_csv, "strategy": hparams["strategy"],
                        "strategy_options": hparams["strategy_options"],
                        "max_disagreement": hparams["max_disagreement"], "beam": hparams["pseudo_label_beam"],
                        "compounds": hparams["pseudo_label_compounds"]})
            labelled_parts.append(os.path.join(pseudo_label_folder, PSEUDO_LABELLED_CSV))
            unlabelled_csv = os.path.join(pseudo_label_folder, STILL_UNLABELLED_CSV)
        labelled_ids = [row["ID"] for part in labelled_parts for row in read_manifest(part)]
        if not hparams["objective"].reads_unlabelled:  # e.g. CTC alone (alpha 1): rows without a transcript idle
            logger.info("%d unlabelled rows without a transcript left out of training: no term reads them",
                        len(read_manifest(unlabelled_csv, allow_empty_wrd=True)))
            unlabelled_csv = None
        train_csv = concat_manifests([part for part in [*labelled_parts, unlabelled_csv] if part],
                                     os.path.join(hparams["output_folder"], "train_and_unlabelled.csv"))
    train_set = make_dataset(train_csv, hparams["data_folder"], inventory, labelled_ids=labelled_ids,
                             need_text=hparams["objective"].needs_transcripts, sort=hparams["sorting"])
    valid_set = make_dataset(hparams["valid_csv"], hparams["data_folder"], inventory)

    brain = DistillBrain(
        modules={"model": model},
        opt_class=hparams["opt_class"],
        hparams=hparams,
        run_opts=run_opts,
        checkpointer=hparams["checkpointer"],
        inventory=inventory,
        teachers=teachers,
    )
    brain.fit(hparams["epoch_counter"], train_set, valid_set)
    for name, test_set in test_sets(hparams["test_csvs"], hparams["data_folder"], inventory):
        brain.evaluate(test_set, name=name)
