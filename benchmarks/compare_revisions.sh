#!/usr/bin/env bash
# Do two revisions of speechkd train the same weights? Runs the CTC student, the TDNN teacher and
# the distillation recipe for a few epochs in each checkout, on one corpus, and prints the largest
# |old - new| over the final checkpoints' tensors (0.0 = bit-identical).
#
#   git worktree add /tmp/old 9f216b8
#   bash benchmarks/compare_revisions.sh /tmp/old . data/numbers-small results/quickstart/1234 [epochs]
#
# The quickstart run (its teachers and cache) feeds the distillation step; both checkouts use the
# Python environment of this one (.venv).
set -euo pipefail
OLD=$(realpath "$1"); NEW=$(realpath "$2"); DATA=$(realpath "$3"); RUN=$(realpath "$4"); EPOCHS=${5:-2}
PY="$PWD/.venv/bin/python"  # not realpath: that would leave the venv for its base interpreter
OUT=$(mktemp -d)
TEACHERS="--teachers=[$RUN/teachers/conformer,$RUN/teachers/crdnn,$RUN/teachers/tdnn]"

run() {  # checkout tag recipe yaml extra...
  local tree=$1 tag=$2 script=$3 yaml=$4; shift 4
  (cd "$tree" && PYTHONPATH="$tree" OMP_NUM_THREADS=1 "$PY" "recipes/$script" "hparams/$yaml" \
     --data_folder="$DATA" --output_folder="$OUT/$tag" --number_of_epochs="$EPOCHS" --device=cpu "$@" \
     > "$OUT/$tag.log" 2>&1)
}

for arch in student tdnn; do
  run "$OLD" "old_$arch" ctc/train.py "ctc/$arch.yaml" --name="$arch" &
  run "$NEW" "new_$arch" ctc/train.py "ctc/$arch.yaml" --name="$arch"
  wait
done
run "$OLD" old_kd distill/train.py distill/student.yaml "$TEACHERS" --cache_folder="$RUN/cache" &
run "$NEW" new_kd distill/train.py distill/student.yaml "$TEACHERS" --cache_folder="$RUN/cache"
wait

echo "command: bash benchmarks/compare_revisions.sh $* · $(date -I) · $(uname -m), torch $("$PY" -c 'import torch; print(torch.__version__)')"
"$PY" - "$OUT" <<'PY'
import glob, sys, torch
out = sys.argv[1]
for name in ("student", "tdnn", "kd"):
    old, new = (torch.load(sorted(glob.glob(f"{out}/{side}_{name}/save/CKPT*/model.ckpt"))[-1])
                for side in ("old", "new"))
    print(f"{name}: max |old - new| = {max((old[k].float() - new[k].float()).abs().max().item() for k in old)}")
PY
