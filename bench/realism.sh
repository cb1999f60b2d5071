#!/usr/bin/env bash
# Realism benchmark: celldiff (scVAEDer, `celldiff demo`) next to scVI (Lopez et al., Nat Methods
# 2018) on the same held-out splits. For each dataset and seed:
#   1. celldiff demo --data FILE --seed S -o OUT/DATASET/seedS --force
#      (writes metrics.json, split.json, run/genes.json, generated_ddpm.h5ad);
#   2. bench/scvi_reference.py on exactly that split's training cells, generating as many cells
#      as were held out (prior samples and reconstructions), scored by `celldiff evaluate`
#      (OUT/DATASET/seedS/scvi/eval_scvi_{prior,reconstruction}.json);
# then bench/realism_table.py writes OUT/realism.md (mean ± sd over seeds per method and metric).
# scVI runs in bench/.venv-scvi, created here on first use (pip install scvi-tools anndata).
#
# Usage: bench/realism.sh [--seeds "0 1 2"] [--datasets "pbmc68k kang brain"]
#                         [--out bench/out/realism] [--celldiff target/release/celldiff]
#                         [--threads 2] [--max-epochs N] [--dry-run] [--reuse-scvi]
#                         [--demo-args "FLAGS"] [--no-scvi]
# --reuse-scvi keeps an earlier scVI result of the same dataset and seed (the split depends
# only on the seed); --no-scvi runs celldiff only; --demo-args passes flags to `celldiff demo` (e.g. "--likelihood gaussian"
# for the previous defaults).
# Default seeds: 0 1 2 3 4 for pbmc68k, 0 1 2 for the others (--seeds applies to every dataset).
# --dry-run prints the commands without running anything.
set -euo pipefail
cd "$(dirname "$0")/.."

SEEDS=""
DATASETS="pbmc68k kang brain"
OUT=bench/out/realism
CELLDIFF=target/release/celldiff
THREADS=2
MAX_EPOCHS=""
DRY=0
REUSE_SCVI=0
NO_SCVI=0
DEMO_ARGS=""
ARGV=("$0" "$@")
while [ $# -gt 0 ]; do
  case "$1" in
    --seeds) SEEDS=$2; shift 2 ;;
    --datasets) DATASETS=$2; shift 2 ;;
    --out) OUT=$2; shift 2 ;;
    --celldiff) CELLDIFF=$2; shift 2 ;;
    --threads) THREADS=$2; shift 2 ;;
    --max-epochs) MAX_EPOCHS=$2; shift 2 ;;
    --dry-run) DRY=1; shift ;;
    --reuse-scvi) REUSE_SCVI=1; shift ;;
    --no-scvi) NO_SCVI=1; shift ;;
    --demo-args) DEMO_ARGS=$2; shift 2 ;;
    -h|--help) sed -n "2,20p" "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "realism.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done

data_file() {
  case "$1" in
    pbmc68k) echo ../shared/data/pbmc68k_reduced/pbmc68k_reduced_counts.h5ad ;;
    kang) echo ../shared/data/kang_pbmc_ifnb_valid/valid_kang.h5ad ;;
    brain) echo ../shared/data/mouse_brain_1m_10k_subset/brain_1m_10k_cells_1000_genes.h5ad ;;
    *) echo "realism.sh: unknown dataset '$1' (pbmc68k, kang, brain)" >&2; return 2 ;;
  esac
}
default_seeds() {
  case "$1" in
    pbmc68k) echo "0 1 2 3 4" ;;
    *) echo "0 1 2" ;;
  esac
}

VENV=bench/.venv-scvi
PY=$VENV/bin/python

# Shell-quotes its arguments for display: 'a b' rather than a\ b.
quote() {
  local out="" a
  for a in "$@"; do
    if [[ "$a" =~ ^[A-Za-z0-9_./:=+,@%-]+$ ]]; then out+=" $a"; else out+=" '${a//\'/\'\\\'\'}'"; fi
  done
  printf '%s' "${out# }"
}
# Prints a command, then runs it unless --dry-run.
run() {
  printf '+ %s\n' "$(quote "$@")"
  [ "$DRY" = 1 ] || "$@"
}

# Validate everything before the long runs start.
for ds in $DATASETS; do
  f=$(data_file "$ds") || exit 2
  if [ "$DRY" = 0 ] && [ ! -f "$f" ]; then echo "realism.sh: $ds: $f not found" >&2; exit 2; fi
done
if [ "$DRY" = 0 ] && [ ! -x "$CELLDIFF" ]; then
  echo "realism.sh: $CELLDIFF not found (cargo build --release, or --celldiff BIN)" >&2
  exit 2
fi

# scVI's venv only when scVI runs (--no-scvi needs nothing beyond python3's standard library).
if [ "$NO_SCVI" = 0 ] && { [ ! -x "$PY" ] || ! "$PY" -c 'import scvi, anndata' >/dev/null 2>&1; }; then
  run python3 -m venv "$VENV"
  run "$VENV/bin/pip" install scvi-tools anndata
fi

EPOCH_ARGS=()
[ -n "$MAX_EPOCHS" ] && EPOCH_ARGS=(--max-epochs "$MAX_EPOCHS")

for ds in $DATASETS; do
  f=$(data_file "$ds")
  seeds=${SEEDS:-$(default_seeds "$ds")}
  for s in $seeds; do
    d=$OUT/$ds/seed$s
    run mkdir -p "$d"
    # shellcheck disable=SC2086
    run "$CELLDIFF" --threads "$THREADS" demo --data "$f" --seed "$s" -o "$d" --force $DEMO_ARGS
    if [ "$NO_SCVI" = 1 ]; then
      :
    elif [ "$REUSE_SCVI" = 1 ] && [ -f "$d/scvi/eval_scvi_prior.json" ] \
        && [ -f "$d/scvi/eval_scvi_reconstruction.json" ]; then
      # The split depends only on the seed, so an earlier scVI run on it still applies.
      echo "reusing $d/scvi"
    else
      run "$PY" bench/scvi_reference.py --data "$f" --demo-dir "$d" --out "$d/scvi" \
        --threads "$THREADS" --seed "$s" --celldiff "$CELLDIFF" "${EPOCH_ARGS[@]}"
    fi
  done
done

CMD=$(quote "${ARGV[@]}")
run python3 bench/realism_table.py --out "$OUT" --datasets "$DATASETS" \
  ${SEEDS:+--seeds "$SEEDS"} --command "$CMD"
[ "$DRY" = 1 ] || echo "wrote $OUT/realism.md"
