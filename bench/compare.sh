#!/usr/bin/env bash
# celldiff bench and the PyTorch reference, one after the other on the same (quiet) machine,
# same thread count; prints both JSON objects and the ratios (celldiff / PyTorch throughput,
# PyTorch / celldiff wall time: > 1 means celldiff is faster).
# Usage: bench/compare.sh [PYTHON] [THREADS] [SAMPLE_CELLS]
#   (PYTHON needs torch; default python3, 2 threads, 10000 sampled latents)
#   CELLDIFF=path/to/celldiff picks another celldiff binary (e.g. an older build, for a
#   before/after table); default ./target/release/celldiff.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${1:-python3}
T=${2:-2}
N=${3:-10000}
BIN=${CELLDIFF:-./target/release/celldiff}
C=$("$BIN" --threads "$T" bench --json --sample-cells "$N")
P=$("$PY" bench/torch_reference.py --json --threads "$T" --sample-cells "$N")
echo "celldiff: $C"
echo "pytorch:  $P"
python3 - "$C" "$P" <<'PYEOF'
import json, sys
c, p = json.loads(sys.argv[1]), json.loads(sys.argv[2])
for k in ["vae_train_cells_per_s", "denoiser_train_steps_per_s"]:
    print(f"{k}: celldiff {c[k]:.1f}, pytorch {p[k]:.1f}, ratio {c[k]/p[k]:.2f}")
for k in ["sample_ddpm1000_10k_s", "sample_ddim50_10k_s"]:
    print(f"{k}: celldiff {c[k]:.2f}, pytorch {p[k]:.2f}, ratio {p[k]/c[k]:.2f}")
for k in ["vae_train_gflops", "denoiser_train_gflops", "sample_ddpm1000_gflops", "sample_ddim50_gflops"]:
    print(f"{k}: celldiff {c.get(k, 0):.1f}, pytorch {p.get(k, 0):.1f}")
PYEOF
