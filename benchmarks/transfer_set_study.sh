#!/bin/bash
# The transfer-set lever (issue 12) on a main-job run's teachers: per seed, the student trained
# alone (EPOCHS, and as many steps as the transfer-set student takes: `baseM`) and distilled
# without and with UNLABELLED minutes per language of new voices (EPOCHS each), with the main
# job's student and KD settings of its 30-minute version (the distilled student from random
# weights, one process; the 15-minute main job continues the baseline on two: RESULTS.md, "Issue
# 12: the main job in 15 minutes"); then each system's test WER pooled over the seeds. It builds
# its transfer set with the current corpus builder: 72 speakers per language at size small since
# 2026-11-30 night (24 in the RESULTS sections before it).
#   bash benchmarks/transfer_set_study.sh RUN_FOLDER [OUT]
#   SEEDS="1234 2024" EPOCHS=25 UNLABELLED=15 JOBS=2 DEVICE=cpu  (environment; the defaults shown)
# RUN_FOLDER: a `speechkd run hparams/pipelines/quickstart.yaml` output (results/quickstart/1234):
# its teachers/* are cached on the corpus with the transfer set, its evaluate/ has the ensemble's
# test decoding. JOBS recipe runs at a time, one thread each; DEVICE=cuda:0 puts them all on one
# GPU (RESULTS.md, "Issue 12: a transfer set of new voices", ran 16 there). Run from the
# repository root with the project's python first on PATH. The 2026-11-29 one-teacher version:
# `git show 3c2a3eb:benchmarks/transfer_set_study.sh`.
set -euo pipefail
RUN=$(realpath "$1"); OUT=${2:-/tmp/transfer-set-study}
SEEDS=${SEEDS:-"1234 2024"}; EPOCHS=${EPOCHS:-25}; UNLABELLED=${UNLABELLED:-15}
JOBS=${JOBS:-2}; DEVICE=${DEVICE:-cpu}
export PYTHONPATH=$PWD OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
D=$OUT/numbers-small-u$UNLABELLED
mkdir -p "$OUT/logs"
MINUTES=$(for lang in en de es it fr ru uk; do printf -- '--unlabelled-minutes %s=%s ' $lang "$UNLABELLED"; done)
python -m speechkd.data.corpus build --task numbers --size small --out "$D" --engines espeak --quiet $MINUTES
# the run's teachers, as its cache names them
TEACHERS=$(python -c 'import json, sys; run = sys.argv[1]
names = [teacher["name"] for teacher in json.load(open(run + "/cache/meta.json"))["teachers"]]
print("[" + ",".join(run + "/teachers/" + name for name in names) + "]")' "$RUN")
DATA=(--data_folder="$D" "--corpus_engines=[espeak]" --corpus_unlabelled_minutes="$UNLABELLED" --device="$DEVICE")
COMMON=("${DATA[@]}" "--dynamic_batching={max_batch_length: 16, num_buckets: 20}" --conv_channels=96 --gru_hidden=128)
python recipes/distill/cache_teachers.py hparams/distill/cache.yaml \
    "${DATA[@]}" --teachers="$TEACHERS" --cache_folder="$OUT/cache" --top_k=8 \
    --cache_splits="{train: $D/train.csv, dev: $D/dev.csv, unlabelled: $D/unlabelled.csv}" > "$OUT/logs/cache.log" 2>&1
KD=(recipes/distill/train.py hparams/distill/student.yaml --name=student_kd --teachers="$TEACHERS"
    --cache_folder="$OUT/cache" --top_k=8 --strategy=weighted --alpha=0.2 --temperature=1.0 --teacher_delay=0)
mkdir -p "$OUT/jobs"; rm -f "$OUT"/jobs/*.sh
job() { local name=$1; shift; printf '%q ' "$@" > "$OUT/jobs/$name.sh"; }  # one script per recipe run
for seed in $SEEDS; do
    job base_$seed python recipes/ctc/train.py hparams/ctc/student.yaml --name=baseline "${COMMON[@]}" \
        --number_of_epochs=$EPOCHS --seed=$seed --output_folder="$OUT/base_$seed"
    # size small: 5 labelled minutes per language, so (5 + UNLABELLED) / 5 times the steps
    job baseM_$seed python recipes/ctc/train.py hparams/ctc/student.yaml --name=baseline "${COMMON[@]}" \
        --number_of_epochs=$((EPOCHS * (5 + UNLABELLED) / 5)) --seed=$seed --output_folder="$OUT/baseM_$seed"
    job kd_$seed python "${KD[@]}" "${COMMON[@]}" --number_of_epochs=$EPOCHS --seed=$seed --output_folder="$OUT/kd_$seed"
    job kdU_$seed python "${KD[@]}" "${COMMON[@]}" --number_of_epochs=$EPOCHS --seed=$seed \
        --unlabelled_csv="$D/unlabelled.csv" --output_folder="$OUT/kdU_$seed"
done
printf '%s\0' "$OUT"/jobs/*.sh | xargs -0 -n 1 -P "$JOBS" bash -c 'bash "$1" > "$1.log" 2>&1 || { echo "failed: $1.log"; exit 1; }' _
python - "$OUT" "$RUN" $SEEDS <<'EOF'
import sys
from speechkd.metrics import read_utterance_errors
from speechkd.report import confidence_intervals
out, run, seeds = sys.argv[1], sys.argv[2], sys.argv[3:]
files = {kind: [f"{out}/{kind}_{seed}/wer_test.txt" for seed in seeds] for kind in ("base", "baseM", "kd", "kdU")}
files["ensemble"] = f"{run}/evaluate/wer_test_ensemble_weighted.txt"
for student, baseline in (("kd", "base"), ("kdU", "base"), ("kdU", "kd"), ("kdU", "baseM")):
    ci = confidence_intervals(files, baseline, student, "ensemble")
    gain, gap = ci["gain"], ci["gap_closed"]
    if ci["n_utts"] != len(read_utterance_errors(files["ensemble"])):
        print(f"note: only {ci['n_utts']} test utterances are scored by every system")
    print(f"{student} ({ci['rates'][student]:.1f} %) against {baseline} ({ci['rates'][baseline]:.1f} %) over seeds {' '.join(seeds)}: "
          f"gain {gain['value']:.1f} [{gain['low']:.1f}, {gain['high']:.1f}] WER points"
          + (f", gap closed {gap['value']:.0f} [{gap['low']:.0f}, {gap['high']:.0f}] %" if gap else ""))
EOF
