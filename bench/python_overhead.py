#!/usr/bin/env python3
"""Python overhead against the CLI on the same training (issue 20): `celldiff train` (release
binary) vs `celldiff.ScVAEDer(...).train()` + `save()` (release wheel) on pbmc68k_reduced raw
counts with the default settings, for several seeds, alternating which runs first. Both write a
run directory; their weights are checked equal (tensor bytes), so the two time the same work.

Build first (docs/RESULTS.md has the exact commands):
    cargo build --release -p celldiff-cli
    python3 -m venv bench/.venv-py && bench/.venv-py/bin/pip install ./python
Run:
    bench/.venv-py/bin/python bench/python_overhead.py [SEEDS]   (default 3)
Prints one JSON line per seed and a summary line (mean ± sd of the time ratio Python / CLI).

Timed: the CLI process's wall time (start, read the .h5ad, train, write the run) against, in a
fresh Python process, the wall time of `model.train()` + `model.save()` ("train") and of the
whole script after `import` ("total": read_h5ad with anndata, setup, train, save).
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data" / "pbmc68k_reduced" / "pbmc68k_reduced_counts.h5ad"
CLI = REPO / "target" / "release" / "celldiff"

PY = """
import json, sys, time
t0 = time.perf_counter()
import anndata, celldiff
t1 = time.perf_counter()
adata = anndata.read_h5ad(sys.argv[1])
celldiff.ScVAEDer.setup_anndata(adata)
model = celldiff.ScVAEDer(adata)
t2 = time.perf_counter()
model.train(seed=int(sys.argv[3]), progress_bar=False)
model.save(sys.argv[2])
t3 = time.perf_counter()
print(json.dumps({"import": t1 - t0, "train": t3 - t2, "total": t3 - t1}))
"""


def tensors(path: Path) -> bytes:
    b = path.read_bytes()
    n = int.from_bytes(b[6:10], "little")
    return b[10 + n :]


def one(seed: int, tmp: Path, python_first: bool) -> dict:
    out = {}
    def cli():
        t = time.perf_counter()
        subprocess.run([str(CLI), "--quiet", "train", "--data", str(DATA), "--seed", str(seed),
                        "--out", str(tmp / f"cli{seed}")], check=True)
        out["cli"] = time.perf_counter() - t
    def py():
        r = subprocess.run([sys.executable, "-c", PY, str(DATA), str(tmp / f"py{seed}"), str(seed)],
                           check=True, capture_output=True, text=True)
        out["py"] = json.loads(r.stdout.strip().splitlines()[-1])
    for f in ((py, cli) if python_first else (cli, py)):
        f()
    same = all(tensors(tmp / f"cli{seed}" / w) == tensors(tmp / f"py{seed}" / w)
               for w in ("vae.bpk", "denoiser.bpk", "denoiser_ema.bpk"))
    return {
        "seed": seed,
        "cli_s": round(out["cli"], 3),
        "py_train_s": round(out["py"]["train"], 3),
        "py_total_s": round(out["py"]["total"], 3),
        "py_import_s": round(out["py"]["import"], 3),
        "ratio_train": round(out["py"]["train"] / out["cli"], 4),
        "ratio_total": round(out["py"]["total"] / out["cli"], 4),
        "same_weights": same,
        "python_first": python_first,
    }


def main() -> None:
    seeds = int(sys.argv[1]) if len(sys.argv) > 1 else 3
    if not CLI.exists():
        sys.exit(f"{CLI} missing: cargo build --release -p celldiff-cli")
    rows = []
    with tempfile.TemporaryDirectory() as d:
        for s in range(seeds):
            row = one(s, Path(d), python_first=s % 2 == 1)
            rows.append(row)
            print(json.dumps(row), flush=True)
    def ms(k):
        v = [r[k] for r in rows]
        return statistics.mean(v), (statistics.stdev(v) if len(v) > 1 else 0.0)
    summary = {k: "%.4f ± %.4f" % ms(k) for k in ("cli_s", "py_train_s", "py_total_s", "ratio_train", "ratio_total")}
    summary["same_weights"] = all(r["same_weights"] for r in rows)
    print(json.dumps({"summary": summary}))


if __name__ == "__main__":
    main()
