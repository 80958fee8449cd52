#!/bin/bash
# conformer-only lever study (the lead's full ensemble is not ready in time)
set -x
cd /work/w3d
export PYTHONPATH=/work/w3d OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
PY="nice /work/main/.venv/bin/python"
D=/tmp/kd/numbers-small-u
T=/work/main/results/quickstart/1234/teachers/conformer
while ! grep -q "epoch: 8," $T/log.txt; do sleep 5; done; sleep 3
while pgrep -f "output_folder=/tmp/kd/base-12" >/dev/null; do sleep 5; done
rm -rf /tmp/kd/teachers; mkdir -p /tmp/kd/teachers; cp -r $T /tmp/kd/teachers/conformer; rm -f /tmp/kd/teachers/conformer/stage.log
date
$PY recipes/distill/cache_teachers.py hparams/distill/cache.yaml --data_folder=$D --corpus_unlabelled_minutes=5 \
  --teachers="[/tmp/kd/teachers/conformer]" --cache_folder=/tmp/kd/cache-c --top_k=8 \
  --cache_splits="{train: $D/train.csv, dev: $D/dev.csv, unlabelled: $D/unlabelled.csv}" > /tmp/kd/cache-c.log 2>&1
date
KD="recipes/distill/train.py hparams/distill/student.yaml --data_folder=$D --corpus_unlabelled_minutes=5 --teachers=[/tmp/kd/teachers/conformer] --cache_folder=/tmp/kd/cache-c --strategy=average --alpha=0.5 --temperature=1.0 --teacher_delay=2 --name=student_kd"
$PY $KD --number_of_epochs=12 --output_folder=/tmp/kd/kd-12 > /tmp/kd/kd-12.log 2>&1
date
$PY $KD --number_of_epochs=6 --unlabelled_csv=$D/unlabelled.csv --output_folder=/tmp/kd/kdU-6 > /tmp/kd/kdU-6.log 2>&1
date
$PY $KD --number_of_epochs=12 --unlabelled_csv=$D/unlabelled.csv --output_folder=/tmp/kd/kdU-12 > /tmp/kd/kdU-12.log 2>&1
date
