#!/usr/bin/env bash
# celldiff bench and the PyTorch reference, one after the other on the same (quiet) machine,
# same thread count; prints both JSON objects and the ratios (celldiff / PyTorch throughput,
# PyTorch / celldiff wall time: > 1 means celldiff is faster).
# Usage: bench/compare.sh [PYTHON] [THREADS]   (PYTHON needs torch; default python3, 2 threads)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${1:-python3}
T=${2:-2}
C=$(./target/release/celldiff --threads "$T" bench --json)
P=$("$PY" bench/torch_reference.py --json --threads "$T")
echo "celldiff: $C"
echo "pytorch:  $P"
python3 - "$C" "$P" <<'PYEOF'
import json, sys
c, p = json.loads(sys.argv[1]), json.loads(sys.argv[2])
for k in ["vae_train_cells_per_s", "denoiser_train_steps_per_s"]:
    print(f"{k}: celldiff {c[k]:.1f}, pytorch {p[k]:.1f}, ratio {c[k]/p[k]:.2f}")
for k in ["sample_ddpm1000_10k_s", "sample_ddim50_10k_s"]:
    print(f"{k}: celldiff {c[k]:.2f}, pytorch {p[k]:.2f}, ratio {p[k]/c[k]:.2f}")
PYEOF
