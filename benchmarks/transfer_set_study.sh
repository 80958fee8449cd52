#!/bin/bash
# The transfer-set lever (issue 12) on one teacher: a student trained alone, and distilled
# without and with 5 unlabelled minutes per language (35 min, as much as the labelled train set),
# at equal steps (12 epochs vs 6 over twice the audio) and at equal epochs (12).
#   nice bash benchmarks/transfer_set_study.sh TEACHER_FOLDER [OUT]
# TEACHER_FOLDER: a trained speechkd CTC teacher (e.g. results/quickstart/1234/teachers/conformer)
# whose wer_test.txt is its test score. Run from the repository root; one process at a time.
set -euo pipefail
TEACHER=$(realpath "$1"); OUT=${2:-/tmp/transfer-set-study}
export PYTHONPATH=$PWD OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
PY="nice python"
D=$OUT/numbers-small-u
mkdir -p "$OUT"
$PY -c "from speechkd.data.corpus import build_corpus; build_corpus('numbers', 'small', '$D', unlabelled_minutes=5, progress=False)"
COMMON="--data_folder=$D --corpus_unlabelled_minutes=5"
$PY recipes/ctc/train.py hparams/ctc/student.yaml $COMMON --name=baseline --number_of_epochs=12 --output_folder=$OUT/base-12
$PY recipes/distill/cache_teachers.py hparams/distill/cache.yaml $COMMON --teachers="[$TEACHER]" --cache_folder=$OUT/cache --top_k=8 \
  --cache_splits="{train: $D/train.csv, dev: $D/dev.csv, unlabelled: $D/unlabelled.csv}"
KD="recipes/distill/train.py hparams/distill/student.yaml $COMMON --teachers=[$TEACHER] --cache_folder=$OUT/cache
    --strategy=average --alpha=0.5 --temperature=1.0 --teacher_delay=2 --name=student_kd"
$PY $KD --number_of_epochs=12 --output_folder=$OUT/kd-12
$PY $KD --number_of_epochs=6 --unlabelled_csv=$D/unlabelled.csv --output_folder=$OUT/kdU-6
$PY $KD --number_of_epochs=12 --unlabelled_csv=$D/unlabelled.csv --output_folder=$OUT/kdU-12
python benchmarks/compare_students.py --baseline $OUT/base-12 --ensemble $TEACHER $OUT/kd-12 $OUT/kdU-6 $OUT/kdU-12
