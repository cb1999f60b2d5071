#!/usr/bin/env bash
# Builds the CUDA celldiff binary on a CPU machine for bench/gpu_check.sh (issue 21), into the
# git-ignored folder bench/gpu-bin/: `celldiff` (stripped), or `celldiff.xz` when the stripped
# binary would not leave room in the 64 MiB that travel to the GPU machine (the working tree +
# carried paths). Prints the size, the shared libraries it needs (ldd, readelf NEEDED) and the
# newest glibc symbol version it requires (the GPU machine's `ldd --version` must be at least
# that), then how to run the check.
#
# Usage: bench/gpu_build.sh
# Environment (all optional):
#   CARGO_TARGET_DIR      build folder (default target/cuda, so the CPU build in target/ stays)
#   CUDARC_CUDA_VERSION   CUDA version cudarc binds to (default 13000 = CUDA 13.0, the GPU
#                         machine's); the binary loads libcuda / libnvrtc at run time
#   CARGO_FLAGS           extra cargo flags (e.g. "--offline")
#   XZ_OVER_MIB           compress when the stripped binary is larger than this (default: 60,
#                         or less when the working tree leaves less room)
set -euo pipefail
cd "$(dirname "$0")/.."

export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-target/cuda}
export CUDARC_CUDA_VERSION=${CUDARC_CUDA_VERSION:-13000}
OUTDIR=bench/gpu-bin
MIB=$((1024 * 1024))

echo "== cargo build --release -p celldiff-cli --features cuda" \
  "(CARGO_TARGET_DIR=$CARGO_TARGET_DIR CUDARC_CUDA_VERSION=$CUDARC_CUDA_VERSION)"
# shellcheck disable=SC2086 # CARGO_FLAGS is a list of flags
cargo build --release -p celldiff-cli --features cuda ${CARGO_FLAGS:-}

src="$CARGO_TARGET_DIR/release/celldiff"
[ -x "$src" ] || { echo "error: $src was not built" >&2; exit 1; }
mkdir -p "$OUTDIR"
rm -f "$OUTDIR/celldiff" "$OUTDIR/celldiff.xz"
cp "$src" "$OUTDIR/celldiff"
strip "$OUTDIR/celldiff"
size=$(stat -c %s "$OUTDIR/celldiff")

# What else travels: tracked files + untracked files git does not ignore (the run tool's copy).
tree=$(git ls-files -z --cached --others --exclude-standard \
  | xargs -0 -r stat -c %s -- 2>/dev/null | awk '{ s += $1 } END { printf "%d", s }')
room=$((64 * MIB - tree - 4 * MIB)) # 4 MiB margin
limit=$(( ${XZ_OVER_MIB:-60} * MIB ))
[ "$room" -lt "$limit" ] && limit=$room

echo "== binary"
echo "stripped: $OUTDIR/celldiff, $size bytes ($((size / MIB)) MiB); working tree $((tree / MIB)) MiB"
echo "-- ldd"
ldd "$OUTDIR/celldiff" || true
echo "-- readelf -d NEEDED"
readelf -d "$OUTDIR/celldiff" | grep NEEDED || true
echo "-- newest glibc symbol version required"
objdump -T "$OUTDIR/celldiff" | grep -o 'GLIBC_[0-9.]*' | sort -uV | tail -1
echo "-- this machine: $(ldd --version | head -1)"
echo "-- libraries named in the binary (loaded at run time via dlopen):"
strings "$OUTDIR/celldiff" | grep -oE '^lib(cuda|nvrtc|cublas|cublasLt|curand|nvJitLink)[A-Za-z0-9_.-]*\.so[0-9.]*$' \
  | sort -u | head -20 || true

if [ "$size" -gt "$limit" ]; then
  echo "== $size bytes > $limit bytes: xz -T0 -6"
  xz -T0 -6 "$OUTDIR/celldiff" # leaves celldiff.xz, removes celldiff
  xsize=$(stat -c %s "$OUTDIR/celldiff.xz")
  echo "compressed: $OUTDIR/celldiff.xz, $xsize bytes ($((xsize / MIB)) MiB)"
  total=$((tree + xsize))
else
  total=$((tree + size))
fi
if [ "$total" -gt $((64 * MIB)) ]; then
  echo "warning: working tree + binary = $((total / MIB)) MiB, over the 64 MiB that travel" >&2
fi
echo
echo "== done: $(ls -1 "$OUTDIR")"
echo "Run on the GPU machine with carry [\"$OUTDIR\"] (the folder is git-ignored), e.g.:"
echo "  run(command='bash bench/gpu_check.sh', carry=['$OUTDIR'], timeout_s=600)"
echo "  (bench/gpu_check.sh writes into \$OUT; it finishes in about 6 minutes)"
