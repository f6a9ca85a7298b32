#!/usr/bin/env bash
# GPU smoke test: everything that has only run on CPU stand-ins here, on a real GPU machine.
#
#     scripts/install.sh && benchmarks/gpu_smoke.sh [WORK_DIR]      # default runs/gpu_smoke
#
# 1. a ~120M-parameter OLMo target built quickly on the embedded default (trained on the GPU, not
#    to full memorisation: this checks that things run, not how well);
# 2. every installed loss method, a few steps in bfloat16 mixed precision, on the GPU (the run
#    report must name a CUDA device and float32 master weights);
# 3. `unlearn evaluate` (the results must name a CUDA device), and --official on the target;
# 4. a two-entrant competition (entrants restricted to GPU 0, evaluation on the GPU);
# 5. with two GPUs or more: ZeRO-3 on two ranks, and a two-process evaluation equal to one process's.
# Prints one Markdown table; exits non-zero if any step failed.
#
#     GPU_SMOKE_DEVICE=cpu METHODS="gd npo" STEPS=2 benchmarks/gpu_smoke.sh WORK_DIR
# is its dry run on the CPU (a tiny target, 2 gloo ranks for 2 GPUs, bfloat16 autocast on the CPU):
# the same commands and checks with "cpu" for "cuda", which the tests run so that the script keeps
# working between the runs on a GPU. METHODS narrows the loss methods (default: every installed one).
set -uo pipefail
cd "$(dirname "$0")/.."
UNLEARN=${UNLEARN:-.venv/bin/unlearn}
PYTHON=${PYTHON:-.venv/bin/python}
WORK=${1:-runs/gpu_smoke}
STEPS=${STEPS:-5}
DEVICE=${GPU_SMOKE_DEVICE:-cuda}
mkdir -p "$WORK"
if [ "$DEVICE" = cpu ]; then
    GPUS=2  # the two-GPU steps as two gloo processes
    NET=(--set hidden_size=64 --set layers=2 --set heads=2 --set intermediate_size=128 --set max_epochs=20)
    MIN_PARAMS=1e4
    ENTRANT_DEVICES=cpu
    ZERO_DTYPE=float32  # DeepSpeed's bf16 mode needs a GPU
else
    GPUS=$("$PYTHON" -c "import torch; print(torch.cuda.device_count() if torch.cuda.is_available() else 0)")
    if [ "$GPUS" -lt 1 ]; then
        echo "no CUDA device: this script is for a machine with a GPU (GPU_SMOKE_DEVICE=cpu: its dry run)" >&2
        exit 2
    fi
    NET=(--set hidden_size=768 --set layers=12 --set heads=12 --set intermediate_size=3072 --set max_epochs=20)
    MIN_PARAMS=100e6
    ENTRANT_DEVICES=0
    ZERO_DTYPE=bfloat16
fi
ROWS=()
FAILED=0

step() {  # step NAME CHECK_PYTHON -- COMMAND...: run COMMAND, then CHECK (python code; exit 0 = pass)
    local name=$1 check=$2
    shift 3
    local started=$SECONDS log="$WORK/logs/${name//[^A-Za-z0-9_.-]/_}.log"
    mkdir -p "$WORK/logs"
    if "$@" >"$log" 2>&1 && { [ -z "$check" ] || "$PYTHON" -c "$check" >>"$log" 2>&1; }; then
        ROWS+=("| $name | ok | $((SECONDS - started)) |")
    else
        ROWS+=("| $name | FAILED (see $log) | $((SECONDS - started)) |")
        FAILED=1
    fi
}

json_check() {  # json_check FILE EXPRESSION: python code asserting EXPRESSION about the JSON in FILE as `r`
    echo "import json; r = json.load(open('$1')); assert $2, r"
}

step "data synth" "" -- "$UNLEARN" data synth --out "$WORK/data" --size tiny --seed 0
step "target build (${MIN_PARAMS}+ parameters, $DEVICE)" "$(json_check "$WORK/target/target_card.json" "r['parameters'] > $MIN_PARAMS")" -- \
    "$UNLEARN" target build --data "$WORK/data" --out "$WORK/target" --overwrite --device "$DEVICE" \
    "${NET[@]}" --set check_every=10 --set learning_rate=5e-4

METHODS=${METHODS:-$("$PYTHON" -c "from unlearn import get_host; print(' '.join(sorted(n for n, m in get_host().methods.items() if m.kind == 'loss')))")}
for method in $METHODS; do
    step "run $method (bf16, $DEVICE)" \
        "$(json_check "$WORK/runs/$method/unlearn_run.json" "r['device'].startswith('$DEVICE') and r['optimiser_dtype'] == ['torch.float32'] and r['compute_dtype'] == 'bfloat16'")" -- \
        "$UNLEARN" run --model "$WORK/target" --data "$WORK/data" --method "$method" -o "$WORK/runs/$method" \
        --overwrite --device "$DEVICE" --max-steps "$STEPS" --batch-size 4 --set trainer.dtype=bfloat16 --set trainer.progress=false
done
step "run npo+kl+lora (bf16, $DEVICE)" "$(json_check "$WORK/runs/npo_lora/unlearn_run.json" "r['device'].startswith('$DEVICE')")" -- \
    "$UNLEARN" run --model "$WORK/target" --data "$WORK/data" --method npo --with lora -o "$WORK/runs/npo_lora" \
    --overwrite --device "$DEVICE" --max-steps "$STEPS" --set config.npo.retain_kl_weight=1 --set trainer.dtype=bfloat16

step "evaluate ($DEVICE)" "$(json_check "$WORK/eval/evaluation_results.json" "r['device'].startswith('$DEVICE')")" -- \
    "$UNLEARN" evaluate "$WORK/runs/gd" --data "$WORK/data" --out "$WORK/eval" --device "$DEVICE" --max-new-tokens 64
# on the target: a model a few steps of GD leave emitting stray bytes (a carriage return) has no official score
step "evaluate --official ($DEVICE)" "$(json_check "$WORK/eval_official/evaluation_results.json" "r['device'].startswith('$DEVICE') and r['dtype'] == 'bfloat16'")" -- \
    "$UNLEARN" evaluate "$WORK/target" --data "$WORK/data" --out "$WORK/eval_official" --device "$DEVICE" --official

cat >"$WORK/competition.toml" <<EOF
name = "gpu-smoke"
model = "target"
forget = "data/forget_train.jsonl"
retain = "data/retain_train.jsonl"
mia = "data"
utility = "data/utility.jsonl"
output_dir = "competition"
time_limit_s = 1800
eval_device = "$DEVICE"
entrant_devices = "$ENTRANT_DEVICES"
trainer = { max_steps = $STEPS, batch_size = 4, dtype = "bfloat16" }
entrants = ["gd", "npo"]
EOF
rm -rf "$WORK/competition"
step "compete, 2 entrants (entrant devices: $ENTRANT_DEVICES)" "$(json_check "$WORK/competition/leaderboard.json" "len(r['entrants']) == 2 and all(e['status'] == 'ok' for e in r['entrants'])")" -- \
    "$UNLEARN" compete --config "$WORK/competition.toml"

if [ "$GPUS" -ge 2 ]; then
    # two ranks side by side: each its half of the cores (torchrun keeps an OMP_NUM_THREADS already set)
    THREADS=$(( $(nproc) / 2 > 0 ? $(nproc) / 2 : 1 ))
    TORCHRUN=(env OMP_NUM_THREADS="$THREADS" "$PYTHON" -m torch.distributed.run --standalone --nproc_per_node 2)
    step "ZeRO-3, 2 ranks, npo+kl ($ZERO_DTYPE)" "$(json_check "$WORK/runs/zero3/unlearn_run.json" "r['world_size'] == 2")" -- \
        "${TORCHRUN[@]}" -m unlearn run --model "$WORK/target" --data "$WORK/data" --method npo -o "$WORK/runs/zero3" \
        --overwrite --deepspeed zero3 --max-steps "$STEPS" --set config.npo.retain_kl_weight=1 --set trainer.dtype="$ZERO_DTYPE"
    step "evaluate, 2 processes = 1" \
        "import pathlib; a, b = (pathlib.Path('$WORK/' + d + '/generations/forget.jsonl').read_bytes() for d in ('eval', 'eval2')); assert a == b" -- \
        "${TORCHRUN[@]}" -m unlearn evaluate "$WORK/runs/gd" --data "$WORK/data" --out "$WORK/eval2" --device "$DEVICE" --max-new-tokens 64
else
    ROWS+=("| ZeRO-3 and 2-process evaluation | skipped: 1 GPU | 0 |")
fi

if [ "$DEVICE" = cpu ]; then
    MACHINE="CPU dry run"
else
    MACHINE=$("$PYTHON" -c "import torch; print(f'{torch.cuda.get_device_name(0)} x {torch.cuda.device_count()}')")
fi
printf '\n%s, torch %s\n\n' "$MACHINE" "$("$PYTHON" -c 'import torch; print(torch.__version__)')"
echo "| step | result | seconds |"
echo "| --- | --- | --- |"
printf '%s\n' "${ROWS[@]}"
exit $FAILED
