#!/usr/bin/env bash
# The GPU check of issues #15 / #17, in one device call: benchmarks/gpu_check.sh OUT_DIR
#
# Runs on one H200 within the device tool's 600 s limit (budget GPU_CHECK_BUDGET=540 s by
# default, every stage time-boxed with `timeout`, later stages skipped when the budget is spent)
# on the GPU image's own packages (Python 3.12, torch 2.11, triton 3.6, transformers, peft; no
# deepspeed, no liger-kernel, no datasets, no latex2sympy2_extended, no package registry):
#   1. installs this working tree (pip install --no-deps --no-build-isolation -e ., else a
#      PYTHONPATH with a reasoner_kernels link) and the wheels in .whl/ (top level: plain deps;
#      .whl/liger-0.7/ and .whl/liger-0.8/: one Liger-Kernel each, into separate --target dirs)
#   2. compile check of every kernel variant on the image's Triton (CPU, in the background)
#   3. GPU tests: pytest -m gpu (bf16 vs float64, fp16, partial tiles N=2000 V=32001, in-place and
#      fused-mode memory, 2^20+7 rows, N x V > 2^31, fused_linear_logprobs, frozen lm_head,
#      cuBLAS fp32-out dweight, trainer steps through the kernels equal the torch path)
#   4. benchmarks/kernels.py, budgeted: ours (in place, out of place, fused fwd+bwd both ways)
#      and eager at logits (16384, 151936), (8192, 32000) and fused (16384, 4096, 151936); then
#      Liger 0.7.x and Liger 0.8.x one after the other (each row names its version); merged into
#      one table with the copy-bandwidth / bf16-matmul floors and the fraction of floor
#   5. benchmarks/e2e_step.py: bf16 GRPO steps on a random Qwen2.5-0.5B-shaped model, logits
#      kernel vs fused linear (generation / update tokens per second, peak memory)
#   6. torch.compile of the eager loss on one shape; 7. the launch-table sweep; 8. the CPU test
#      files' kernel tests on the real GPU
# Writes at most 8 files to OUT_DIR (gpu_check.log, summary.md, kernels-*.json/.md,
# e2e_step.json/.md, kernels-sweep-*.json/.md) and copies the results to benchmarks/results/.
# The last lines of stdout are a summary table (the device tool returns the last 12,000 chars).
#
# Without CUDA (or with --cpu-rehearsal) every stage runs its CPU form instead (kernels.py
# --dry-run, e2e_step.py --cpu-rehearsal, the GPU tests collected and skipped), so a typo or a
# missing import shows up here rather than on the GPU. Rehearse in a venv that mimics the image:
#   python3 -m venv /tmp/venv-image && . /tmp/venv-image/bin/activate
#   pip install torch triton==3.6.0 transformers peft "numpy<2.4" sympy typer rich pyyaml \
#       safetensors matplotlib tensorboard pytest pytest-timeout pytest-xdist setuptools accelerate
#   bash benchmarks/gpu_check.sh /tmp/gpu_check_out --cpu-rehearsal
# (numpy < 2.4 only for the rehearsal: Triton 3.6's interpreter, which the --dry-run stages use,
# converts 1-element arrays with int(), an error from numpy 2.4 on; the GPU compiles instead.)
#
# The wheels (here, once; .whl/ is git-ignored through .git/info/exclude):
#   echo /.whl/ >> "$(git rev-parse --git-path info/exclude)"
#   for v in 0.7.0:liger-0.7 0.8.5:liger-0.8; do
#     python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
#       --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
#       --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
#       --platform manylinux1_x86_64 -d ".whl/${v#*:}" "liger-kernel==${v%%:*}"
#   done
# (liger-kernel needs only torch and triton; the GPU path needs no other missing package.)
# The device call: run(command="bash benchmarks/gpu_check.sh $OUT", carry=[".whl"], timeout_s=600)
set -u -o pipefail

OUT=${1:?usage: benchmarks/gpu_check.sh OUT_DIR [--cpu-rehearsal]}
REHEARSAL=0
[[ "${2:-}" == "--cpu-rehearsal" ]] && REHEARSAL=1
BUDGET=${GPU_CHECK_BUDGET:-540}
RESERVE=25  # seconds kept for merging the results and the summary
START=$(date +%s)
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT" || exit 2
mkdir -p "$OUT"
SCR=$(mktemp -d /tmp/gpu_check.XXXXXX)
LOG="$OUT/gpu_check.log"
STAGES="$SCR/stages.tsv"
: >"$LOG"
: >"$STAGES"
export PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 TRITON_DEFAULT_FP_FUSION=1
unset TRITON_INTERPRET
PY=${PYTHON:-python3}

say() { echo "[$(($(date +%s) - START))s] $*" | tee -a "$LOG"; }

# stage NAME MAX_SECONDS CMD...: run CMD with its output in the log, time-boxed by the smaller of
# MAX_SECONDS and what is left of the budget; record its status.
stage() {
  local name=$1 max=$2
  shift 2
  local now left limit t0 rc status
  now=$(date +%s)
  left=$((START + BUDGET - RESERVE - now))
  limit=$((max < left ? max : left))
  if ((limit < 15)); then
    say "skip $name (budget: ${left}s left)"
    printf '%s\tskipped (budget)\t0\n' "$name" >>"$STAGES"
    return 0
  fi
  say "start $name (limit ${limit}s)"
  echo "\$ $*" >>"$LOG"
  t0=$(date +%s)
  timeout --kill-after=5 "$limit" "$@" >>"$LOG" 2>&1
  rc=$?
  case $rc in
    0) status=ok ;;
    124 | 137) status="TIMEOUT after ${limit}s" ;;
    *) status="FAILED (exit $rc)" ;;
  esac
  say "end $name: $status"
  printf '%s\t%s\t%s\n' "$name" "$status" "$(($(date +%s) - t0))" >>"$STAGES"
  return 0
}

# ---------------------------------------------------------------------------------------------
say "gpu_check in $ROOT -> $OUT (budget ${BUDGET}s)"
if [[ $REHEARSAL == 0 ]] && ! $PY -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>>"$LOG"; then
  say "no CUDA device: running the CPU rehearsal instead"
  REHEARSAL=1
fi
{ nvidia-smi -L 2>/dev/null || echo "(no nvidia-smi)"; $PY --version; } >>"$LOG" 2>&1

# 1. install: the working tree, then the wheels
if $PY -m pip install -q --no-deps --no-build-isolation -e . >>"$LOG" 2>&1 &&
  $PY -c "import reasoner, reasoner_kernels" >>"$LOG" 2>&1; then
  say "installed the working tree (editable)"
else
  mkdir -p "$SCR/path"
  ln -sfn "$ROOT/kernels" "$SCR/path/reasoner_kernels"
  export PYTHONPATH="$ROOT:$SCR/path${PYTHONPATH:+:$PYTHONPATH}"
  say "editable install failed: using PYTHONPATH=$PYTHONPATH"
fi
shopt -s nullglob
plain=(.whl/*.whl)
if ((${#plain[@]})); then
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target "$SCR/site" "${plain[@]}" >>"$LOG" 2>&1 && export PYTHONPATH="$SCR/site${PYTHONPATH:+:$PYTHONPATH}"
fi
declare -A LIGER
for tag in 0.7 0.8; do
  whl=(.whl/liger-$tag/*.whl)
  if ((${#whl[@]} == 1)) && $PY -m pip install -q --no-index --no-deps --no-compile \
    --no-cache-dir --target "$SCR/liger-$tag" "${whl[0]}" >>"$LOG" 2>&1; then
    LIGER[$tag]="$SCR/liger-$tag"
    say "liger-kernel $(basename "${whl[0]}") -> $SCR/liger-$tag"
  else
    say "no liger-kernel $tag wheel in .whl/liger-$tag/ (its rows will be missing)"
  fi
done
$PY - >>"$LOG" 2>&1 <<'EOF'
import importlib.metadata as md, sys
for name in ("torch", "triton", "transformers", "peft", "reasoner-grpo"):
    try:
        print(name, md.version(name))
    except md.PackageNotFoundError:
        print(name, "not installed")
import torch
print("cuda", torch.version.cuda, "device", torch.cuda.get_device_name() if torch.cuda.is_available() else None)
EOF

# 2. compile check on this Triton, on the CPU, beside the GPU stages
(
  for dt in bf16 fp16 fp32; do
    timeout 150 $PY -m reasoner_kernels.compile_check --arch 90 --dtype "$dt" || echo "compile_check $dt: exit $?"
  done
) >"$SCR/compile.log" 2>&1 &
COMPILE_PID=$!

# 3.-8.
if [[ $REHEARSAL == 1 ]]; then
  GPU_SHAPES=()
  FUSED_ONE=()
  BENCH=(--dry-run --warmup 1 --iters 1)
  E2E=(--cpu-rehearsal)
  XDIST=()
  $PY -c "import xdist" 2>/dev/null && XDIST=(-n 2)
else
  GPU_SHAPES=(--logits-shapes 16384x151936,8192x32000 --fused-shapes 16384x4096x151936)
  FUSED_ONE=(--logits-shapes 8192x32000 --fused-shapes none)
  BENCH=(--warmup 2 --iters 5)
  E2E=(--timeout 110)
  XDIST=()
  $PY -c "import xdist" 2>/dev/null && XDIST=(-n 8)
fi
PYT=(-q -p no:cacheprovider -rfEs -o addopts= --timeout 300)

stage "gpu tests" 190 $PY -m pytest "${PYT[@]}" "${XDIST[@]}" -m gpu \
  tests/test_kernels_gpu.py tests/trainers/test_grpo_trainer.py
stage "bench: ours + eager" 130 $PY benchmarks/kernels.py "${BENCH[@]}" "${GPU_SHAPES[@]}" \
  --methods ours,ours_out_of_place,ours_fused,ours_fused_out_of_place,eager \
  --name bench__ours --out-dir "$SCR/bench"
for tag in 0.7 0.8; do
  if [[ -n "${LIGER[$tag]:-}" ]]; then
    stage "bench: liger $tag" 90 env PYTHONPATH="${LIGER[$tag]}${PYTHONPATH:+:$PYTHONPATH}" \
      $PY benchmarks/kernels.py "${BENCH[@]}" "${GPU_SHAPES[@]}" --methods liger \
      --name "bench__liger-$tag" --out-dir "$SCR/bench"
  fi
done
stage "e2e step" 200 $PY benchmarks/e2e_step.py "${E2E[@]}" --out-dir "$SCR/e2e"
if [[ $REHEARSAL == 0 ]]; then
  stage "bench: torch.compile (one shape)" 75 $PY benchmarks/kernels.py "${BENCH[@]}" \
    "${FUSED_ONE[@]}" --methods compile --name bench__compile --out-dir "$SCR/bench"
fi
stage "launch sweep" 70 $PY benchmarks/kernels.py "${BENCH[@]}" --sweep --sweep-seconds 50 \
  --out-dir "$SCR/sweep"
if [[ $REHEARSAL == 0 ]]; then
  stage "kernel tests on the GPU (the CPU suite's files)" 150 $PY -m pytest "${PYT[@]}" \
    "${XDIST[@]}" tests/test_kernels_logits.py tests/test_kernels_fused_linear.py
fi

# ---------------------------------------------------------------------------------------------
# Results: the compile check, one merged kernel table, e2e, the sweep; then the summary.
if kill -0 "$COMPILE_PID" 2>/dev/null; then
  say "waiting for the compile check"
  timeout 20 tail --pid="$COMPILE_PID" -f /dev/null || kill "$COMPILE_PID" 2>/dev/null
fi
{ echo "=== compile check"; cat "$SCR/compile.log"; } >>"$LOG"
n_ok=$(grep -c " ok " "$SCR/compile.log" || true)
n_fail=$(grep -c -E "FAIL|exit " "$SCR/compile.log" || true)
printf 'compile check (triton %s)\t%s\t-\n' "$($PY -c 'import triton; print(triton.__version__)' 2>/dev/null)" \
  "$n_ok ok, $n_fail failed" >>"$STAGES"

bench=("$SCR"/bench/bench__*.json)
if ((${#bench[@]})); then
  name=$($PY -c "import json,re,sys; d=json.load(open(sys.argv[1]))['device']; print('kernels-' + re.sub(r'[^a-z0-9]+','-',d.lower()).strip('-'))" "${bench[0]}")
  timeout 60 $PY benchmarks/kernels.py --merge "${bench[@]}" --name "$name" --out-dir "$OUT" >>"$LOG" 2>&1 ||
    say "merging the kernel results failed"
fi
for f in "$SCR"/e2e/e2e_step.json "$SCR"/e2e/e2e_step.md "$SCR"/sweep/*.json "$SCR"/sweep/*.md; do
  [[ -f $f ]] && cp "$f" "$OUT/"
done
if [[ $REHEARSAL == 0 ]]; then  # the GPU figures also land in the working tree's results
  mkdir -p benchmarks/results
  for f in "$OUT"/kernels-*.json "$OUT"/kernels-*.md "$OUT"/e2e_step.*; do
    [[ -f $f ]] && cp "$f" benchmarks/results/
  done
fi

summary="$OUT/summary.md"
{
  echo "# gpu_check summary ($([[ $REHEARSAL == 1 ]] && echo "CPU rehearsal" || echo GPU), $(($(date +%s) - START)) s of ${BUDGET} s, commit $(git rev-parse --short HEAD 2>/dev/null))"
  echo
  echo "| stage | status | seconds |"
  echo "|---|---|---:|"
  awk -F'\t' '{printf "| %s | %s | %s |\n", $1, $2, $3}' "$STAGES"
  echo
  echo "## tests"
  grep -E "^(FAILED|ERROR) |[0-9]+ (passed|failed|skipped|error)" "$LOG" | tail -40
  echo
  echo "## kernels (ms; fraction of the floor; peak MiB beyond the inputs)"
  for f in "$OUT"/kernels-*.json; do
    [[ $f == *sweep* ]] && continue
    $PY - "$f" <<'EOF'
import json, sys
d = json.load(open(sys.argv[1]))
print(f"copy {d.get('copy_bandwidth_gbps') or 0:.0f} GB/s, bf16 mm {d.get('matmul_tflops') or 0:.0f} TFLOP/s; liger: {d.get('liger_versions')}")
print("| shape | method | status | ms | floor ms | of floor | peak MiB |")
print("|---|---|---|---:|---:|---:|---:|")
f = lambda v, p: "" if v is None else f"{v:.{p}f}"
for r in d["rows"]:
    print(f"| {r['shape']} | {r['method']} | {r['status'][:40]} | {f(r['ms'], 2)} | {f(r['floor_ms'], 2)} | {f(r['fraction_of_floor'], 2)} | {f(r['peak_mb'], 0)} |")
for line in d.get("speedups") or []:
    print("-", line)
EOF
  done
  echo
  echo "## end-to-end GRPO step (Qwen2.5-0.5B shape, random weights)"
  [[ -f "$OUT/e2e_step.md" ]] && grep "^|" "$OUT/e2e_step.md"
  echo
  echo "## launch sweep (best per kernel / mode)"
  grep -h -A3 "^# best per kernel" "$LOG" | tail -3
  echo
  echo "## compile check failures"
  grep -E "FAIL|exit " "$SCR/compile.log" | cut -c1-300 | head -10
} >"$summary" 2>&1
cat "$summary"
ls -la "$OUT" >>"$LOG"
rm -rf "$SCR"
exit 0
