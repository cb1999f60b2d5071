#!/usr/bin/env python3
"""Writes OUT/realism.md for bench/realism.sh: one markdown table per dataset, one row per
method (every row of celldiff demo's OUT/DATASET/seedS/metrics.json, plus scvi-prior and
scvi-reconstruction from OUT/DATASET/seedS/scvi/eval_scvi_{prior,reconstruction}.json), one
column per numeric metric as mean ± sd over the seeds found (sd with ddof=1; a single value
prints the mean alone; "(n=k)" marks a value that only k of the seeds reported). A metric missing for a method (in every seed) prints as "–"; sizes
(keys starting with n_) are left out. Only the standard library is used.

Usage: python3 bench/realism_table.py --out OUT [--datasets "pbmc68k kang brain"]
                                      [--seeds "0 1 2"] [--command "..."]
"""
import argparse
import datetime
import glob
import json
import math
import os
import re
import statistics
import subprocess
import sys

SCVI_SETS = (("scvi-prior", "eval_scvi_prior.json"),
             ("scvi-reconstruction", "eval_scvi_reconstruction.json"))


def die(msg):
    print(f"realism_table: error: {msg}", file=sys.stderr)
    sys.exit(2)


def load(path):
    try:
        with open(path) as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        die(f"{path}: not valid JSON: {e}")


def is_num(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def cpu_model():
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown CPU"


def fmt(xs, n_seeds):
    """mean ± sd (4 decimals); "(n=k)" when only k of the seeds reported it."""
    if not xs:
        return "–"
    m = statistics.fmean(xs)
    out = f"{m:.4f}" if len(xs) == 1 else f"{m:.4f} ± {statistics.stdev(xs):.4f}"
    return out + (f" (n={len(xs)})" if len(xs) != n_seeds else "")


# Column order: the headline metrics first (JSON objects list their keys alphabetically).
PREFERRED = ["rf_auc", "knn_auc", "mmd", "mean_pearson", "var_pearson", "corr_mad",
             "zero_fraction_pearson", "ks_log_library", "mean_spearman", "var_spearman"]


def collect(ds_dir, seeds):
    """{method: {metric: [values over seeds]}}, method order, metric order, seeds used."""
    if seeds is None:
        found = []
        for d in glob.glob(os.path.join(ds_dir, "seed*")):
            m = re.fullmatch(r"seed(\d+)", os.path.basename(d))
            if m:
                found.append(int(m.group(1)))
        seeds = sorted(found)
    vals, methods, metrics, used = {}, [], [], []
    for s in seeds:
        d = os.path.join(ds_dir, f"seed{s}")
        rows = []
        mp = os.path.join(d, "metrics.json")
        if os.path.isfile(mp):
            doc = load(mp)
            if not isinstance(doc, dict) or not isinstance(doc.get("rows"), list):
                die(f"{mp}: field 'rows' is missing or not a list")
            for i, r in enumerate(doc["rows"]):
                if not isinstance(r, dict) or "method" not in r:
                    die(f"{mp}: rows[{i}] has no field 'method'")
                rows.append((str(r["method"]), r))
        else:
            print(f"realism_table: warning: {mp} not found", file=sys.stderr)
        for name, fn in SCVI_SETS:
            p = os.path.join(d, "scvi", fn)
            if os.path.isfile(p):
                r = load(p)
                if isinstance(r, dict) and isinstance(r.get("rows"), list) and r["rows"]:
                    r = r["rows"][0]
                if not isinstance(r, dict):
                    die(f"{p}: expected a JSON object of metrics")
                rows.append((name, r))
            else:
                print(f"realism_table: warning: {p} not found", file=sys.stderr)
        if rows:
            used.append(s)
        for name, r in rows:
            if name not in vals:
                vals[name] = {}
                methods.append(name)
            for k, v in r.items():
                if k == "method" or k.startswith("n_") or not is_num(v):
                    continue
                if k not in metrics:
                    metrics.append(k)
                vals[name].setdefault(k, []).append(float(v))
    return vals, methods, metrics, used


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, help="bench/realism.sh output folder")
    p.add_argument("--datasets", default="pbmc68k kang brain")
    p.add_argument("--seeds", help="seeds to include (default: every OUT/DATASET/seed* folder)")
    p.add_argument("--command", default=" ".join(sys.argv), help="command line to record")
    a = p.parse_args()
    seeds = [int(s) for s in a.seeds.split()] if a.seeds else None

    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines = ["# Realism: celldiff vs scVI on held-out cells", "",
             f"Command: `{a.command}`  ",
             f"Date: {now}; CPU: {cpu_model()}", "",
             "Mean ± sd over seeds (sd with ddof = 1). Lower AUC / MMD is better; "
             "higher correlations are better. scvi-prior: z ~ N(0, I), library of a random "
             "training cell; scvi-reconstruction: held-out cells encoded and decoded "
             "(scVI, Lopez et al., Nat Methods 2018). \"–\": not reported for that method.", ""]
    any_rows = False
    for ds in a.datasets.split():
        vals, methods, metrics, used = collect(os.path.join(a.out, ds), seeds)
        metrics.sort(key=lambda k: (PREFERRED.index(k) if k in PREFERRED else len(PREFERRED), k))
        lines.append(f"## {ds}")
        lines.append("")
        if not methods:
            lines += ["(no results)", ""]
            continue
        any_rows = True
        lines.append(f"Seeds: {' '.join(str(s) for s in used)} (n = {len(used)})")
        lines.append("")
        lines.append("| method | " + " | ".join(metrics) + " |")
        lines.append("|---|" + "---|" * len(metrics))
        for m in methods:
            lines.append(f"| {m} | " + " | ".join(fmt(vals[m].get(k, []), len(used)) for k in metrics) + " |")
        lines.append("")
    path = os.path.join(a.out, "realism.md")
    os.makedirs(a.out, exist_ok=True)
    with open(path, "w") as f:
        f.write("\n".join(lines))
    if not any_rows:
        print(f"realism_table: warning: no results found under {a.out}", file=sys.stderr)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
