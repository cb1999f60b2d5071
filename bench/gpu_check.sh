#!/usr/bin/env bash
# The GPU check of issue 21, one prepared script for one run on the GPU machine (well under its
# 10-minute limit; about 6 minutes): the environment, `celldiff --device cuda bench` at sizes
# that keep the GPU busy, `bench/torch_reference.py --device cuda` on the same workloads,
# `celldiff --device cuda demo`, and one streamed training epoch (`train --stream`) on simulated
# cells with the GPU memory it used. Every step has its own timeout and the whole script a time
# budget; a failed step is recorded and the next one runs. Each step writes into OUTDIR:
#   <step>.json / <step>.txt   its stdout        <step>.stderr   its stderr
#   <step>.time                /usr/bin/time -v  <step>.gpu.csv  nvidia-smi samples every 0.5 s
#                                                                 (timestamp, MiB used, util %)
# and OUTDIR/summary.txt + OUTDIR/summary.json list every step (status, rc, wall_s, peak RSS,
# peak GPU memory) and the figures of the issue (celldiff / PyTorch CUDA ratios, the demo's
# wall time, the streamed epoch's wall time and GPU memory). Both are rewritten after every
# step, so a run cut short still leaves them.
#
# Usage: bench/gpu_check.sh [--quick] [OUTDIR]      (OUTDIR defaults to $OUT)
#   --quick   tiny sizes, to smoke-test the script on a CPU machine with a CPU build:
#             CELLDIFF_BIN=target/debug/celldiff CELLDIFF_DEVICE=cpu \
#               bash bench/gpu_check.sh --quick /tmp/gpucheck-smoke
#
# The binary: $CELLDIFF_BIN, else bench/gpu-bin/celldiff, else bench/gpu-bin/celldiff.xz
# (decompressed into /tmp), both made by bench/gpu_build.sh on a CPU machine; the folder
# bench/gpu-bin is git-ignored, so the run must carry it (run(..., carry=["bench/gpu-bin"])).
#
# Environment (all optional):
#   CELLDIFF_DEVICE     --device for celldiff (default cuda)
#   TORCH_DEVICE        --device for the PyTorch reference (default: CELLDIFF_DEVICE)
#   PYTHON              python with torch (default python3)
#   GPU_CHECK_BUDGET    seconds for all steps together (default 540; --quick 3600)
#   GPU_CHECK_VAE_BATCH (default 4096), GPU_CHECK_DENOISER_BATCH (default 256),
#   GPU_CHECK_VAE_CELLS (default 128 batches' worth), GPU_CHECK_DENOISER_STEPS (1000),
#   GPU_CHECK_SAMPLE_CELLS (100000),
#   GPU_CHECK_SIM_CELLS (default 1000000), GPU_CHECK_SIM_FALLBACK (default 200000)
#   GPU_CHECK_KEEP=1    keep the temporary folder (simulated .h5ad, decompressed binary)
#   GPU_CHECK_UNPINNED=1  with --quick, also run the last step (bench with CELLDIFF_NO_PINNED=1,
#                       which the full run does when time is left)
#
# Sizes: the VAE at batch 4096 (the issue's GPU-filling size; 128 timed minibatches), the
# denoiser at its training batch 256 (1000 timed steps), sampling 100k latents. The batches go
# to `celldiff bench --vae-batch/--denoiser-batch` and to torch_reference.py's flags of the same
# names; a binary whose `bench` lacks those flags (older builds: batches fixed at 128 / 256)
# runs at its fixed batches, torch_reference.py is given the same, and the summary says so.
set -u
ORIG_PWD=$(pwd)
cd "$(dirname "$0")/.." || exit 2
REPO=$(pwd)

QUICK=0
OUTDIR=""
for a in "$@"; do
  case "$a" in
    --quick) QUICK=1 ;;
    -h | --help) sed -n '2,/^set -u$/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    -*) echo "gpu_check.sh: unknown option $a" >&2; exit 2 ;;
    *) OUTDIR=$a ;;
  esac
done
OUTDIR=${OUTDIR:-${OUT:-}}
if [ -z "$OUTDIR" ]; then
  echo "gpu_check.sh: give an output folder (or set \$OUT)" >&2
  exit 2
fi
case "$OUTDIR" in /*) ;; *) OUTDIR="$ORIG_PWD/$OUTDIR" ;; esac
mkdir -p "$OUTDIR" || exit 2
OUTDIR=$(cd "$OUTDIR" && pwd)

DEVICE=${CELLDIFF_DEVICE:-cuda}
TORCH_DEVICE=${TORCH_DEVICE:-$DEVICE}
PY=${PYTHON:-python3}
if [ "$QUICK" = 1 ]; then
  BUDGET=${GPU_CHECK_BUDGET:-3600}
  VAE_BATCH=${GPU_CHECK_VAE_BATCH:-256}
  DEN_BATCH=${GPU_CHECK_DENOISER_BATCH:-64}
  VAE_CELLS=${GPU_CHECK_VAE_CELLS:-512}
  DEN_STEPS=${GPU_CHECK_DENOISER_STEPS:-5}
  SAMPLE_CELLS=${GPU_CHECK_SAMPLE_CELLS:-16}
  SIM_CELLS=${GPU_CHECK_SIM_CELLS:-4000}
  SIM_FALLBACK=${GPU_CHECK_SIM_FALLBACK:-2000}
  DEMO_FLAGS=(--epochs-vae 1 --epochs-diffusion 1)
  T_ENV=120 T_BENCH=1200 T_TORCH=600 T_DEMO=1800 T_SIM_SMALL=300 T_SIM=300 T_STREAM=900
else
  BUDGET=${GPU_CHECK_BUDGET:-540}
  # VAE: 128 timed minibatches of 4096 (+ 128 warm-up; 1024 of 128 without --vae-batch);
  # denoiser: 1000 timed steps of 256; sampling: 100k latents, DDPM-1000 and DDIM-50
  # (~128 GFLOP a DDPM step).
  VAE_BATCH=${GPU_CHECK_VAE_BATCH:-4096}
  DEN_BATCH=${GPU_CHECK_DENOISER_BATCH:-256}
  VAE_CELLS=${GPU_CHECK_VAE_CELLS:-}
  DEN_STEPS=${GPU_CHECK_DENOISER_STEPS:-1000}
  SAMPLE_CELLS=${GPU_CHECK_SAMPLE_CELLS:-100000}
  SIM_CELLS=${GPU_CHECK_SIM_CELLS:-1000000}
  SIM_FALLBACK=${GPU_CHECK_SIM_FALLBACK:-200000}
  DEMO_FLAGS=()
  T_ENV=60 T_BENCH=210 T_TORCH=150 T_DEMO=180 T_SIM_SMALL=60 T_SIM=120 T_STREAM=240
fi
RESERVE=10 # seconds of the budget kept for the summary
MIN_STEP=15 # a step with less time than this left is skipped

T0=$(date +%s%N)
elapsed_ms() { echo $((($(date +%s%N) - T0) / 1000000)); }
fmt_ms() { printf '%d.%03d' $(($1 / 1000)) $(($1 % 1000)); }
log() { printf '[%6s s] %s\n' "$(fmt_ms "$(elapsed_ms)")" "$*"; }

WORK=$(mktemp -d /tmp/gpucheck.XXXXXX) || exit 2
MONPID=""
STEP_PID=""
cleanup() {
  # A step still running (the script was interrupted): TERM to its `timeout`, which passes it on.
  if [ -n "$STEP_PID" ]; then kill -TERM "$STEP_PID" 2>/dev/null; wait "$STEP_PID" 2>/dev/null; fi
  if [ -n "$MONPID" ]; then kill "$MONPID" 2>/dev/null; wait "$MONPID" 2>/dev/null; fi
  if [ "${GPU_CHECK_KEEP:-0}" = 1 ]; then echo "kept $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
trap 'echo "gpu_check.sh: interrupted" >&2; exit 130' INT TERM

# ---------------------------------------------------------------- the binary
if [ -n "${CELLDIFF_BIN:-}" ]; then
  case "$CELLDIFF_BIN" in /*) BIN=$CELLDIFF_BIN ;; *) BIN="$ORIG_PWD/$CELLDIFF_BIN" ;; esac
  BIN_FROM="CELLDIFF_BIN"
elif [ -f bench/gpu-bin/celldiff ]; then
  BIN="$REPO/bench/gpu-bin/celldiff"
  BIN_FROM="bench/gpu-bin/celldiff"
  if [ ! -x "$BIN" ]; then # the copy may have lost the executable bit
    cp "$BIN" "$WORK/celldiff" && chmod +x "$WORK/celldiff" && BIN="$WORK/celldiff"
  fi
elif [ -f bench/gpu-bin/celldiff.xz ]; then
  BIN_FROM="bench/gpu-bin/celldiff.xz"
  BIN="$WORK/celldiff"
  if ! { xz -dc bench/gpu-bin/celldiff.xz >"$BIN" && chmod +x "$BIN"; }; then
    echo "gpu_check.sh: cannot decompress bench/gpu-bin/celldiff.xz" >&2
    exit 2
  fi
else
  echo "gpu_check.sh: no binary: set CELLDIFF_BIN, or run bench/gpu_build.sh on a CPU machine" \
    "and carry bench/gpu-bin" >&2
  exit 2
fi
if [ ! -x "$BIN" ]; then
  echo "gpu_check.sh: $BIN is not an executable file" >&2
  exit 2
fi

# ---------------------------------------------------------------- CUDA environment
# The CUDA build of celldiff loads libcuda and libnvrtc at run time (cudarc) and compiles its
# kernels with NVRTC, which needs the CUDA headers (CUDA_PATH).
if [ -z "${CUDA_PATH:-}" ]; then
  for d in /usr/local/cuda /usr/local/cuda-13.0 /usr/local/cuda-13 /opt/cuda; do
    if [ -d "$d/include" ]; then export CUDA_PATH=$d; break; fi
  done
fi
export CUDA_PATH=${CUDA_PATH:-/usr/local/cuda}
export CUDA_HOME=${CUDA_HOME:-$CUDA_PATH}
[ -d "$CUDA_PATH/bin" ] && export PATH="$CUDA_PATH/bin:$PATH"
mapfile -t PIP_NVIDIA_LIBS < <("$PY" - 2>/dev/null <<'PYEOF'
import glob, importlib.util, os, site
roots = []
try:
    spec = importlib.util.find_spec("nvidia")
    if spec and spec.submodule_search_locations:
        roots += list(spec.submodule_search_locations)
except Exception:
    pass
try:
    sps = site.getsitepackages() + [site.getusersitepackages()]
except Exception:
    sps = []
roots += [os.path.join(p, "nvidia") for p in sps]
seen = []
for r in roots:
    for d in sorted(glob.glob(os.path.join(r, "*", "lib"))):
        d = os.path.realpath(d)
        if os.path.isdir(d) and d not in seen:
            seen.append(d)
print("\n".join(seen))
PYEOF
)
LIBDIRS=()
for d in "$CUDA_PATH/lib64" "$CUDA_PATH/targets/x86_64-linux/lib" "${PIP_NVIDIA_LIBS[@]}"; do
  [ -d "$d" ] && LIBDIRS+=("$d")
done
[ -n "${LD_LIBRARY_PATH+set}" ] && ORIG_LD_LIBRARY_PATH=$LD_LIBRARY_PATH
if [ "${#LIBDIRS[@]}" -gt 0 ]; then
  LD_LIBRARY_PATH="$(IFS=:; echo "${LIBDIRS[*]}")${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  export LD_LIBRARY_PATH
fi
export RUST_BACKTRACE=${RUST_BACKTRACE:-1}
# PyTorch runs with the caller's library path: its wheels bring their own CUDA libraries, which
# the toolkit's (first in LD_LIBRARY_PATH above) could shadow.
if [ -n "${ORIG_LD_LIBRARY_PATH+set}" ]; then
  TORCH_ENV=(env LD_LIBRARY_PATH="$ORIG_LD_LIBRARY_PATH")
else
  TORCH_ENV=(env -u LD_LIBRARY_PATH)
fi
log "binary: $BIN ($BIN_FROM); device $DEVICE; torch device $TORCH_DEVICE; budget ${BUDGET}s"
log "CUDA_PATH=$CUDA_PATH"
log "LD_LIBRARY_PATH=${LD_LIBRARY_PATH:-}"
log "output: $OUTDIR"

HAVE_TIME=0
[ -x /usr/bin/time ] && /usr/bin/time -v true >/dev/null 2>&1 && HAVE_TIME=1
HAVE_SMI=0
command -v nvidia-smi >/dev/null 2>&1 && HAVE_SMI=1

# ---------------------------------------------------------------- steps
STEPS_TSV="$OUTDIR/steps.tsv" # step, status, rc, wall_s, timeout_s, rss_mib, gpu_mib, stdout
printf 'step\tstatus\trc\twall_s\ttimeout_s\tpeak_rss_mib\tpeak_gpu_mem_mib\toutput\n' >"$STEPS_TSV"
LAST_RC=0
LAST_MS=0

mon_start() { # $1 = step: nvidia-smi samples every 500 ms into OUTDIR/<step>.gpu.csv
  MONPID=""
  [ "$HAVE_SMI" = 1 ] || return 0
  nvidia-smi --query-gpu=timestamp,memory.used,utilization.gpu --format=csv,noheader,nounits \
    -lms 500 >"$OUTDIR/$1.gpu.csv" 2>/dev/null &
  MONPID=$!
}
mon_stop() {
  if [ -n "$MONPID" ]; then kill "$MONPID" 2>/dev/null; wait "$MONPID" 2>/dev/null; fi
  MONPID=""
}
gpu_peak() { # $1 = step: the largest memory.used sample (MiB), or empty
  [ -s "$OUTDIR/$1.gpu.csv" ] || return 0
  awk -F', *' '$2 ~ /^[0-9]+$/ && $2 + 0 > m { m = $2 + 0 } END { if (m != "") print m }' \
    "$OUTDIR/$1.gpu.csv"
}

record() { # step status rc wall_ms timeout_s rss_mib gpu_mib output
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$(fmt_ms "$4")" "$5" "$6" "$7" "$8" \
    >>"$STEPS_TSV"
  write_summary
}

skip() { # step reason
  log "step $1: skipped ($2)"
  record "$1" "skipped: $2" "" 0 "" "" "" ""
  LAST_RC=125
  LAST_MS=0
}

# run_step STEP TIMEOUT_S STDOUT_FILE GPU(0|1) -- COMMAND...
run_step() {
  local step=$1 want=$2 outfile=$3 gpu=$4
  shift 5
  local left=$(((BUDGET * 1000 - $(elapsed_ms)) / 1000 - RESERVE))
  local t=$want
  [ "$left" -lt "$t" ] && t=$left
  if [ "$t" -lt "$MIN_STEP" ]; then
    skip "$step" "$((left + RESERVE))s of the ${BUDGET}s budget left"
    return
  fi
  log "step $step (timeout ${t}s): $*"
  [ "$gpu" = 1 ] && mon_start "$step"
  local start rc cmd=("$@")
  # `timeout` outermost: on expiry it kills the whole step (then .time has no figures).
  [ "$HAVE_TIME" = 1 ] && cmd=(/usr/bin/time -v -o "$OUTDIR/$step.time" "$@")
  start=$(date +%s%N)
  # In the background with `wait`, so that an INT/TERM to the script is handled at once.
  timeout -k 10 "$t" "${cmd[@]}" >"$OUTDIR/$outfile" 2>"$OUTDIR/$step.stderr" </dev/null &
  STEP_PID=$!
  wait "$STEP_PID"
  rc=$?
  STEP_PID=""
  LAST_MS=$((($(date +%s%N) - start) / 1000000))
  LAST_RC=$rc
  [ "$gpu" = 1 ] && mon_stop
  local rss="" gpum status=ok
  if [ -f "$OUTDIR/$step.time" ]; then
    rss=$(awk -F': ' '/Maximum resident set size/ { printf "%d", $2 / 1024 }' "$OUTDIR/$step.time")
  fi
  gpum=$(gpu_peak "$step")
  case $rc in
    0) status=ok ;;
    124 | 137) status="timeout (${t}s)" ;;
    *) status=failed ;;
  esac
  echo "$rc" >"$OUTDIR/$step.rc"
  log "step $step: $status, rc $rc, $(fmt_ms "$LAST_MS") s${rss:+, peak RSS ${rss} MiB}${gpum:+, peak GPU memory ${gpum} MiB}"
  if [ "$rc" != 0 ]; then
    tail -n 15 "$OUTDIR/$step.stderr" | sed 's/^/    | /'
  fi
  record "$step" "$status" "$rc" "$LAST_MS" "$t" "$rss" "$gpum" "$outfile"
}

write_summary() {
  {
    echo "gpu_check.sh summary ($(date -u +%FT%TZ)); binary $BIN_FROM; device $DEVICE;" \
      "quick=$QUICK; elapsed $(fmt_ms "$(elapsed_ms)") s of a ${BUDGET} s budget"
    [ -s "$OUTDIR/bench_batches.txt" ] && cat "$OUTDIR/bench_batches.txt"
    echo
    awk -F'\t' '{ printf "%-18s %-22s %4s %9s %9s %12s %16s  %s\n", $1, $2, $3, $4, $5, $6, $7, $8 }' \
      "$STEPS_TSV"
    local s
    awk -F'\t' 'NR > 1 && $3 != "" && $3 != 0 { print $1 }' "$STEPS_TSV" | while IFS= read -r s; do
      echo
      echo "--- $s: rc $(cat "$OUTDIR/$s.rc" 2>/dev/null), last lines of $s.stderr"
      tail -n 20 "$OUTDIR/$s.stderr" 2>/dev/null
    done
    if [ -s "$OUTDIR/figures.txt" ]; then
      echo
      cat "$OUTDIR/figures.txt"
    fi
  } >"$OUTDIR/summary.txt"
  # summary.json: the steps (and the figures, once computed); plain bash when python fails.
  if ! "$PY" - "$STEPS_TSV" "$OUTDIR/figures.json" "$OUTDIR/summary.json" 2>/dev/null <<'PYEOF'
import csv, json, os, sys
tsv, fig, out = sys.argv[1:4]
def num(v):
    try:
        return float(v) if "." in v else int(v)
    except ValueError:
        return v if v != "" else None
steps = [{k: num(v) for k, v in row.items()} for row in csv.DictReader(open(tsv), delimiter="\t")]
doc = {"steps": steps}
if os.path.exists(fig):
    doc["figures"] = json.load(open(fig))
json.dump(doc, open(out + ".tmp", "w"), indent=1)
os.replace(out + ".tmp", out)
PYEOF
  then
    awk -F'\t' 'BEGIN { printf "{\"steps\": [" }
      NR > 1 { printf "%s{\"step\": \"%s\", \"status\": \"%s\", \"rc\": %s, \"wall_s\": %s}",
               (NR > 2 ? ", " : ""), $1, $2, ($3 == "" ? "null" : $3), $4 }
      END { print "]}" }' "$STEPS_TSV" >"$OUTDIR/summary.json"
  fi
}

# 1. The environment.
env_report() {
  echo "== date: $(date -u +%FT%TZ); host $(hostname); $(uname -srm)"
  echo "== glibc: $(ldd --version 2>&1 | head -1)"
  echo "== CPU: $(nproc) cores; $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2-)"
  echo "== memory:"; free -m 2>&1 | head -3
  echo "== /tmp:"; df -h /tmp 2>&1 | tail -1
  echo "== nvidia-smi:"; nvidia-smi 2>&1 || echo "(no nvidia-smi)"
  nvidia-smi --query-gpu=name,driver_version,memory.total,memory.used,compute_cap,clocks.max.sm,power.limit \
    --format=csv 2>&1 || true
  echo "== nvcc:"; nvcc --version 2>&1 || "$CUDA_PATH/bin/nvcc" --version 2>&1 || echo "(no nvcc)"
  echo "== CUDA_PATH=$CUDA_PATH"
  ls -d "$CUDA_PATH"/include/cuda.h "$CUDA_PATH"/include/nvrtc.h 2>&1
  echo "== LD_LIBRARY_PATH=${LD_LIBRARY_PATH:-}"
  echo "== libcuda / libnvrtc found by the loader and in LD_LIBRARY_PATH:"
  ldconfig -p 2>/dev/null | grep -E 'libcuda\.so|libnvrtc' || echo "(none in ldconfig)"
  for d in "${LIBDIRS[@]}"; do
    for f in "$d"/libcuda* "$d"/libnvrtc*; do [ -e "$f" ] && echo "$f"; done
  done
  echo "== python: $("$PY" --version 2>&1)"
  "${TORCH_ENV[@]}" "$PY" -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda, "available",
torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else "")' 2>&1
  echo "== binary: $BIN ($BIN_FROM), $(stat -c %s "$BIN") bytes"
  echo "-- ldd:"; ldd "$BIN" 2>&1
  echo "-- newest glibc symbol version required:"
  (objdump -T "$BIN" 2>/dev/null | grep -o 'GLIBC_[0-9.]*' | sort -uV | tail -1) || true
  echo "-- version:"; "$BIN" --version
}
{ declare -p LIBDIRS BIN BIN_FROM PY TORCH_ENV; declare -f env_report; echo env_report; } >"$WORK/env_report.sh"
run_step env "$T_ENV" env.txt 0 -- bash "$WORK/env_report.sh"
TORCH_OK=0
"${TORCH_ENV[@]}" "$PY" -c 'import torch' >/dev/null 2>&1 && TORCH_OK=1
if [ "$HAVE_SMI" = 1 ]; then
  nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits 2>/dev/null | head -1 \
    >"$OUTDIR/gpu_idle_mib.txt"
fi

# The batch flags of `celldiff bench`, when this binary has them.
if "$BIN" bench --help 2>/dev/null | grep -q -- '--vae-batch'; then
  BATCH_FLAGS=(--vae-batch "$VAE_BATCH" --denoiser-batch "$DEN_BATCH")
  BATCH_NOTE="bench batches: VAE $VAE_BATCH, denoiser $DEN_BATCH"
else
  VAE_BATCH=128
  DEN_BATCH=256
  BATCH_FLAGS=()
  BATCH_NOTE="bench batches: VAE 128, denoiser 256 (this binary's bench has no --vae-batch)"
fi
echo "$BATCH_NOTE" >"$OUTDIR/bench_batches.txt"
log "$BATCH_NOTE"
VAE_CELLS=${VAE_CELLS:-$((VAE_BATCH >= 1024 ? 128 * VAE_BATCH : 131072))}
BENCH_SIZES=(--vae-cells "$VAE_CELLS" --denoiser-steps "$DEN_STEPS" --sample-cells "$SAMPLE_CELLS"
  "${BATCH_FLAGS[@]}")

# 2. celldiff bench on the device.
run_step bench "$T_BENCH" bench.json 1 -- \
  "$BIN" --device "$DEVICE" bench --json "${BENCH_SIZES[@]}" --seed 0

# 3. The PyTorch reference on the same workloads (host-side data, as celldiff bench).
if [ "$TORCH_OK" = 1 ]; then
  run_step torch "$T_TORCH" torch.json 1 -- \
    "${TORCH_ENV[@]}" "$PY" bench/torch_reference.py --json --device "$TORCH_DEVICE" "${BENCH_SIZES[@]}"
else
  skip torch "no torch in $PY"
fi

# 4. The demo (embedded pbmc68k_reduced, default settings; --quick: one epoch each).
run_step demo "$T_DEMO" demo.txt 1 -- \
  "$BIN" --device "$DEVICE" demo --out "$OUTDIR/demo" --force "${DEMO_FLAGS[@]}"

# 5. Simulated cells: SIM_FALLBACK first; SIM_CELLS when that rate makes them in under 2 minutes.
SIM_FILE=""
run_step "simulate_$SIM_FALLBACK" "$T_SIM_SMALL" "simulate_$SIM_FALLBACK.json" 0 -- \
  "$BIN" -q simulate --cells "$SIM_FALLBACK" --genes 2000 --types 10 --seed 0 \
  -o "$WORK/sim_$SIM_FALLBACK.h5ad" --force
if [ "$LAST_RC" = 0 ]; then
  SIM_FILE="$WORK/sim_$SIM_FALLBACK.h5ad"
  est_ms=$((LAST_MS * SIM_CELLS / SIM_FALLBACK))
  if [ "$SIM_CELLS" -le "$SIM_FALLBACK" ]; then
    :
  elif [ "$est_ms" -le 110000 ]; then
    log "simulate: $SIM_CELLS cells estimated at $(fmt_ms "$est_ms") s"
    run_step "simulate_$SIM_CELLS" "$T_SIM" "simulate_$SIM_CELLS.json" 0 -- \
      "$BIN" -q simulate --cells "$SIM_CELLS" --genes 2000 --types 10 --seed 0 \
      -o "$WORK/sim_$SIM_CELLS.h5ad" --force
    if [ "$LAST_RC" = 0 ]; then
      rm -f "$SIM_FILE"
      SIM_FILE="$WORK/sim_$SIM_CELLS.h5ad"
    fi
  else
    skip "simulate_$SIM_CELLS" "estimated $(fmt_ms "$est_ms") s > 110 s at the $SIM_FALLBACK-cell rate"
  fi
fi

# 6. One streamed epoch (VAE and diffusion), as bench/scale.sh and docs/RESULTS.md.
if [ -n "$SIM_FILE" ]; then
  echo "$SIM_FILE" >"$OUTDIR/stream_input.txt"
  run_step stream "$T_STREAM" stream.txt 1 -- \
    "$BIN" --device "$DEVICE" train --data "$SIM_FILE" --stream --epochs-vae 1 \
    --epochs-diffusion 1 --no-observation --seed 0 --out "$OUTDIR/stream-run" --force
  rm -f "$SIM_FILE"
else
  skip stream "no simulated input"
fi

# 7. The PyTorch reference with its data drawn on the GPU (idiomatic PyTorch), if time is left.
if [ "$TORCH_OK" = 1 ] && [ "$QUICK" = 0 ]; then
  run_step torch_device "$T_TORCH" torch_device.json 1 -- \
    "${TORCH_ENV[@]}" "$PY" bench/torch_reference.py --json --device "$TORCH_DEVICE" --data device "${BENCH_SIZES[@]}"
fi

# 8. celldiff bench again without the pinned staging of minibatches (CELLDIFF_NO_PINNED=1),
# to see what pinned host memory gains, if time is left.
if [ "$QUICK" = 0 ] || [ "${GPU_CHECK_UNPINNED:-0}" = 1 ]; then
  run_step bench_unpinned "$T_BENCH" bench_unpinned.json 1 -- \
    env CELLDIFF_NO_PINNED=1 "$BIN" --device "$DEVICE" bench --json "${BENCH_SIZES[@]}" --seed 0
fi

# ---------------------------------------------------------------- figures
"$PY" - "$OUTDIR" "$SIM_FILE" >"$OUTDIR/figures.txt" 2>"$OUTDIR/figures.stderr" <<'PYEOF'
import csv, json, os, sys
out, sim = sys.argv[1], sys.argv[2]
def load(name):
    try:
        with open(os.path.join(out, name)) as f:
            text = f.read().strip()
    except OSError:
        return None
    for t in (text, text.splitlines()[-1] if text else ""):  # the whole file, or its last line
        try:
            return json.loads(t)
        except ValueError:
            pass
    return None
steps = {r["step"]: r for r in csv.DictReader(open(os.path.join(out, "steps.tsv")), delimiter="\t")}
def f(v):
    try:
        return float(v)
    except (TypeError, ValueError):
        return None
try:
    idle = float(open(os.path.join(out, "gpu_idle_mib.txt")).read().strip())
except Exception:
    idle = None
fig, lines = {}, []
c, p, pd = load("bench.json"), load("torch.json"), load("torch_device.json")
keys_tp = ["vae_train_cells_per_s", "denoiser_train_steps_per_s"]
keys_s = ["sample_ddpm1000_10k_s", "sample_ddim50_10k_s"]
if c:
    fig["celldiff_bench"] = c
    try:
        fig["bench_batches"] = open(os.path.join(out, "bench_batches.txt")).read().strip()
    except OSError:
        pass
    lines.append(f"celldiff bench (--device from the summary header; {fig.get('bench_batches', '')}):")
    for ref_name, ref in [("pytorch", p), ("pytorch_data_on_device", pd)]:
        if ref:
            fig[ref_name] = ref
    for k in keys_tp + keys_s:
        row = f"  {k:<28} celldiff {c[k]:>12.3f}"
        for ref_name, ref in [("pytorch", p), ("pytorch_data_on_device", pd)]:
            if ref and ref.get(k):
                # > 1 means celldiff is faster (compare.sh's convention).
                r = c[k] / ref[k] if k in keys_tp else (ref[k] / c[k] if c[k] else None)
                fig.setdefault("ratios_" + ref_name, {})[k] = r
                row += f" | {ref_name} {ref[k]:>10.3f} ratio {r:.3f}" if r else ""
        lines.append(row)
    lines.append("  ratios > 1: celldiff faster (throughput celldiff/PyTorch, time PyTorch/celldiff)")
    u = load("bench_unpinned.json")
    if u:
        fig["celldiff_bench_unpinned"] = u
        for k in keys_tp:
            if u.get(k):
                fig.setdefault("pinned_over_unpinned", {})[k] = c[k] / u[k]
                lines.append(f"  pinned staging: {k} {c[k]:.3f} vs unpinned {u[k]:.3f} "
                             f"(ratio {c[k] / u[k]:.3f})")
d = steps.get("demo")
if d:
    m = load("demo/metrics.json")
    fig["demo"] = {"status": d["status"], "wall_s": f(d["wall_s"]),
                   "peak_gpu_mem_mib": f(d["peak_gpu_mem_mib"]),
                   "seconds": m.get("seconds") if m else None}
    lines.append(f"demo: {d['status']}, wall {d['wall_s']} s, peak GPU memory "
                 f"{d['peak_gpu_mem_mib'] or '-'} MiB")
s = steps.get("stream")
if s:
    cfg = load("stream-run/config.json")
    peak = f(s["peak_gpu_mem_mib"])
    base = os.path.basename(sim)  # sim_<cells>.h5ad
    n = int(base[4:-5]) if base.startswith("sim_") and base.endswith(".h5ad") else None
    fig["stream"] = {"status": s["status"], "cells": n, "wall_s": f(s["wall_s"]),
                     "peak_gpu_mem_mib": peak, "gpu_idle_mib": idle,
                     "peak_gpu_mem_above_idle_mib": peak - idle if peak is not None and idle is not None else None,
                     "peak_rss_mib": f(s["peak_rss_mib"]),
                     "seconds": cfg.get("seconds") if cfg else None}
    lines.append(f"stream: {s['status']}, {n} cells, wall {s['wall_s']} s, peak GPU memory "
                 f"{peak if peak is not None else '-'} MiB (idle {idle if idle is not None else '-'}), "
                 f"peak RSS {s['peak_rss_mib'] or '-'} MiB")
    if cfg and cfg.get("seconds"):
        lines.append("  stages (s): " + ", ".join(f"{k} {v:.1f}" for k, v in cfg["seconds"].items()
                                                 if isinstance(v, (int, float))))
json.dump(fig, open(os.path.join(out, "figures.json"), "w"), indent=1)
print("\n".join(lines))
PYEOF
write_summary
echo
cat "$OUTDIR/summary.txt"
