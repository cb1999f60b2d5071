#!/usr/bin/env python3
"""Reliability corpus for the `celldiff` binary (issue 17): adversarial inputs, flags and output
paths, each run in its own scratch folder and classified.

Usage (from the repository root; the docs/RESULTS.md "Reliability" table comes from it):

    cargo build --release -p celldiff-cli
    .venv-ci/bin/python bench/reliability.py --celldiff target/release/celldiff -o /tmp/rel

Needs Python with h5py and numpy (the CI venv `.venv-ci` has both) to build the malformed
`.h5ad` files. Writes `OUT/results.jsonl` (one case a line) and `OUT/summary.md`, and prints the
summary. Every case is classified:

- `refused`: exit code 2, an `error:` line, no panic;
- `accepted`: exit code 0;
- `internal`: exit code 1 (an internal error: counted, never expected for bad input);
- `panic`: "panicked" in stderr, exit code 101, or killed by a signal (abort);
- `timeout`: still running after `--timeout` seconds (killed).

Independently of the class, `leftover` marks a case that left a celldiff temporary
(`*.tmp*`) in its folder and `data_lost` one after which a file that existed before the command
(the inputs, the user's files) is missing or changed. The corpus is deterministic (fixed seeds,
fixed byte positions).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "data" / "demo" / "pbmc68k_reduced_counts.h5ad"

TINY = [
    "--epochs-vae", "4", "--epochs-diffusion", "4", "--hidden", "32,16", "--latent", "4",
    "--denoiser-width", "32", "--denoiser-depth", "1", "--time-dim", "8", "--timesteps", "50",
]
# The cases skip the count-observation fit (tens of seconds); the shared base run keeps it, so
# that the edited-run cases can corrupt its observation.json.
TINY_CASE = TINY + ["--no-observation"]


def sha(p: Path) -> str:
    h = hashlib.sha256()
    with open(p, "rb") as f:
        for b in iter(lambda: f.read(1 << 20), b""):
            h.update(b)
    return h.hexdigest()


def snapshot(d: Path) -> dict[str, str]:
    """Regular files under `d` (not following links) → SHA-256; other nodes → their kind."""
    out = {}
    for p in d.rglob("*"):
        try:
            st = p.lstat()
        except FileNotFoundError:
            continue
        rel = str(p.relative_to(d))
        if stat.S_ISREG(st.st_mode):
            out[rel] = sha(p)
        elif stat.S_ISLNK(st.st_mode):
            out[rel] = "link:" + os.readlink(p)
        elif stat.S_ISFIFO(st.st_mode):
            out[rel] = "fifo"
    return out


class Corpus:
    def __init__(self, binary: Path, work: Path, timeout: float):
        self.bin = binary.resolve()
        self.work = work
        self.timeout = timeout
        self.results: list[dict] = []
        self.n = 0
        self.fixtures = work / "fixtures"
        self.fixtures.mkdir(parents=True, exist_ok=True)

    # -- running one case ---------------------------------------------------------------------
    def case(self, family: str, name: str, args: list[str], files: dict[str, Path] | None = None,
             setup=None, stdout_pipe_close: bool = False, may_replace: tuple[str, ...] = ()) -> dict:
        """Runs `celldiff ARGS` in a fresh folder holding `files` (name → source to copy) and
        whatever `setup(folder)` makes; `{d}` in an argument is replaced by the folder.
        `may_replace`: files (relative to the folder) the command was asked to replace with
        `--force` (a regular file that is not one of its inputs): a change there is not a loss."""
        self.n += 1
        d = self.work / "cases" / f"{self.n:04d}"
        d.mkdir(parents=True)
        for dst, src in (files or {}).items():
            target = d / dst
            target.parent.mkdir(parents=True, exist_ok=True)
            if src.is_dir():
                shutil.copytree(src, target)
            else:
                shutil.copy(src, target)
        if setup:
            setup(d)
        before = snapshot(d)
        argv = [str(self.bin), "--quiet", "--threads", "2"] + [a.replace("{d}", str(d)) for a in args]
        t0 = time.time()
        try:
            if stdout_pipe_close:
                p = subprocess.Popen(argv, cwd=d, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
                p.stdout.read(1)
                p.stdout.close()
                err = p.stderr.read().decode(errors="replace")
                rc = p.wait(timeout=self.timeout)
            else:
                p = subprocess.run(argv, cwd=d, capture_output=True, timeout=self.timeout)
                rc, err = p.returncode, p.stderr.decode(errors="replace")
            timed_out = False
        except subprocess.TimeoutExpired:
            rc, err, timed_out = None, "", True
            subprocess.run(["pkill", "-f", str(d)], check=False)
        secs = time.time() - t0
        after = snapshot(d)
        lost = sorted(k for k, v in before.items() if after.get(k) != v and k not in may_replace)
        leftovers = sorted(k for k in after if re.search(r"\.tmp", k) and k not in before)
        if timed_out:
            cls = "timeout"
        elif "panicked" in err or rc == 101 or (rc is not None and rc < 0) or rc == 134:
            cls = "panic"
        elif rc == 0:
            cls = "accepted"
        elif rc == 2 and "error:" in err:
            cls = "refused"
        elif rc == 1:
            cls = "internal"
        else:
            cls = f"exit{rc}"
        r = {
            "id": self.n, "family": family, "name": name, "args": args, "class": cls,
            "exit": rc, "seconds": round(secs, 2), "data_lost": lost, "leftover": leftovers,
            "stderr": err.strip().splitlines()[-3:] if err else [],
        }
        self.results.append(r)
        mark = "!!" if (cls in ("panic", "internal", "timeout") or lost or leftovers) else "  "
        print(f"{mark} {self.n:4d} {family:<10} {cls:<9} {name}", flush=True)
        if cls == "accepted" or not lost:
            shutil.rmtree(d, ignore_errors=True)
        return r

    # -- fixtures -----------------------------------------------------------------------------
    def h5(self, name: str, edit) -> Path:
        """A copy of the demo file edited in place by `edit(h5py.File)`."""
        p = self.fixtures / name
        shutil.copy(DEMO, p)
        with h5py.File(p, "r+") as f:
            edit(f)
        return p

    def raw(self, name: str, data: bytes) -> Path:
        p = self.fixtures / name
        p.write_bytes(data)
        return p


def build_inputs(c: Corpus) -> dict[str, Path]:
    """Malformed and edge-case inputs: name → path."""
    demo = DEMO.read_bytes()
    ins: dict[str, Path] = {}

    def put(n, p):
        ins[n] = p

    put("empty_file", c.raw("empty.h5ad", b""))
    put("text_file", c.raw("text.h5ad", b"gene,cell\nA,1\n"))
    put("gzip_file", c.raw("gz.h5ad", b"\x1f\x8b\x08\x00" + bytes(100)))
    for frac in (0.01, 0.1, 0.5, 0.9, 0.99):
        put(f"truncated_{frac}", c.raw(f"trunc{frac}.h5ad", demo[: int(len(demo) * frac)]))
    rng = np.random.default_rng(0)
    for k in range(12):
        b = bytearray(demo)
        for pos in rng.integers(0, len(b), size=8):
            b[pos] ^= 0xFF
        put(f"bitflip_{k}", c.raw(f"flip{k}.h5ad", bytes(b)))
    # 512-byte zeroed blocks at fixed offsets (metadata damage)
    for off in (0, 96, 512, 2048, 4096):
        b = bytearray(demo)
        b[off : off + 512] = bytes(512)
        put(f"zeroed_{off}", c.raw(f"zero{off}.h5ad", bytes(b)))

    def no_x(f):
        del f["X"]

    def nan_x(f):
        v = f["X/data"][:].astype(np.float32)
        v[::50] = np.nan
        del f["X/data"]
        f["X"].create_dataset("data", data=v)

    def neg_x(f):
        d = f["X/data"]
        v = d[:]
        v[::50] = -3
        d[...] = v

    def huge_shape(f):
        f["X"].attrs["shape"] = np.array([700, 2**40])
        del f["var"]

    def bad_indptr(f):
        d = f["X/indptr"]
        v = d[:]
        v[5] = v[-1] + 1000
        d[...] = v

    def bad_indices(f):
        d = f["X/indices"]
        v = d[:]
        v[3] = 10**6
        d[...] = v

    def short_obs(f):
        idx = f["obs/index"][:]
        del f["obs/index"]
        f["obs"].create_dataset("index", data=idx[:10])

    def dup_var(f):
        idx = f["var/index"][:]
        idx[1] = idx[0]
        f["var/index"][...] = idx

    def empty_var_name(f):
        idx = f["var/index"][:]
        idx[2] = b""
        idx[3] = b"a\nb"
        f["var/index"][...] = idx

    def dup_cat(f):
        g = f["obs/bulk_labels"]
        cats = g["categories"][:]
        cats[1] = cats[0]
        g["categories"][...] = cats

    def bad_codes(f):
        g = f["obs/bulk_labels"]
        v = g["codes"][:]
        v[0] = 120
        g["codes"][...] = v

    def float_shape(f):
        f["X"].attrs["shape"] = np.array([700.0, 765.0])

    def softlink_x(f):
        f.copy("X", "layers/counts")
        del f["X"]
        f["X"] = h5py.SoftLink("/layers/counts")

    for name, fn in [
        ("no_X", no_x), ("nan_in_X", nan_x), ("negative_counts", neg_x),
        ("shape_2^40_no_var", huge_shape), ("indptr_out_of_range", bad_indptr),
        ("index_out_of_range", bad_indices), ("obs_too_short", short_obs),
        ("duplicate_var_names", dup_var), ("empty_and_newline_gene_names", empty_var_name),
        ("duplicate_categories", dup_cat), ("category_code_out_of_range", bad_codes),
        ("float_shape_attr", float_shape), ("X_soft_link", softlink_x),
    ]:
        put(name, c.h5(f"{name}.h5ad", fn))

    # user block of 512 bytes (valid HDF5, anndata reads it)
    import anndata as ad
    a = ad.read_h5ad(DEMO)
    ub = c.fixtures / "userblock.h5ad"
    with h5py.File(ub, "w", userblock_size=512):
        pass
    a.write_h5ad(c.fixtures / "plain.h5ad")
    with h5py.File(c.fixtures / "plain.h5ad", "r") as src, h5py.File(ub, "w", userblock_size=512) as dst:
        for k in src:
            src.copy(k, dst)
        for k, v in src.attrs.items():
            dst.attrs[k] = v
    put("userblock_512", ub)

    # 10x folders
    def tenx(name, mtx: bytes, genes: str, barcodes: str) -> Path:
        d = c.fixtures / name
        d.mkdir()
        (d / "matrix.mtx").write_bytes(mtx)
        (d / "genes.tsv").write_text(genes)
        (d / "barcodes.tsv").write_text(barcodes)
        return d

    genes = "".join(f"G{i}\tG{i}\n" for i in range(5))
    bcs = "".join(f"C{i}\n" for i in range(4))
    hdr = b"%%MatrixMarket matrix coordinate integer general\n"
    put("10x_huge_size_line", tenx("tenx_huge", hdr + b"765 4000000000 0\n", genes, bcs))
    put("10x_nnz_lies", tenx("tenx_nnz", hdr + b"5 4 1000000\n1 1 3\n", genes, bcs))
    put("10x_index_oob", tenx("tenx_oob", hdr + b"5 4 1\n9 9 3\n", genes, bcs))
    put("10x_not_mm", tenx("tenx_text", b"hello\n", genes, bcs))
    put("10x_gene_count_mismatch", tenx("tenx_mis", hdr + b"6 4 1\n1 1 3\n", genes, bcs))
    put("10x_negative", tenx("tenx_neg", hdr + b"5 4 1\n1 1 -3\n", genes, bcs))
    put("10x_float_nan", tenx("tenx_nan", b"%%MatrixMarket matrix coordinate real general\n5 4 1\n1 1 nan\n", genes, bcs))
    put("empty_dir", (c.fixtures / "emptydir").resolve())
    (c.fixtures / "emptydir").mkdir(exist_ok=True)
    return ins


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--celldiff", default=str(ROOT / "target" / "release" / "celldiff"))
    ap.add_argument("-o", "--out", default="/tmp/celldiff-reliability")
    ap.add_argument("--timeout", type=float, default=120.0)
    a = ap.parse_args()
    work = Path(a.out)
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    c = Corpus(Path(a.celldiff), work, a.timeout)

    # A tiny run and a generated file, shared read-only by the cases that need them.
    base = work / "base"
    base.mkdir()
    subprocess.run([str(c.bin), "--quiet", "train", "--data", str(DEMO), "--labels-key", "bulk_labels",
                    "--seed", "0", "--out", str(base / "run")] + TINY, check=True)
    subprocess.run([str(c.bin), "--quiet", "generate", "--run", str(base / "run"), "-n", "50",
                    "--seed", "0", "-o", str(base / "gen.h5ad")], check=True)
    run, gen = base / "run", base / "gen.h5ad"

    # 1. Malformed inputs × the commands that read data.
    ins = build_inputs(c)
    readers = {
        "preprocess": lambda p: ["preprocess", "--data", p, "-o", "{d}/out.h5ad"],
        "train": lambda p: ["train", "--data", p, "--out", "{d}/run"] + TINY_CASE,
        "embed": lambda p: ["embed", "--run", str(run), "--data", p, "-o", "{d}/out.h5ad"],
        "cluster": lambda p: ["cluster", "--data", p, "-o", "{d}/out.h5ad"],
        "evaluate": lambda p: ["evaluate", "--real", p, "--generated", str(gen), "-o", "{d}/m.json"],
    }
    for iname, path in ins.items():
        for cmd, mk in readers.items():
            c.case("input", f"{cmd} {iname}", mk(str(path)))

    # 2. Numeric flags: every option of these commands that takes a number, with bad values.
    bases = {
        "train": ["train", "--data", str(DEMO), "--out", "{d}/run"] + TINY_CASE,
        "generate": ["generate", "--run", str(run), "-n", "20", "-o", "{d}/g.h5ad"],
        "preprocess": ["preprocess", "--data", str(DEMO), "-o", "{d}/p.h5ad"],
        "cluster": ["cluster", "--data", str(DEMO), "-o", "{d}/c.h5ad"],
        "interpolate": ["interpolate", "--run", str(run), "--data", str(DEMO), "--key", "bulk_labels",
                        "--from", "CD14+ Monocyte", "--to", "CD19+ B", "--n-steps", "5", "-o", "{d}/i.h5ad"],
        "simulate": ["simulate", "--cells", "50", "--genes", "20", "--types", "2", "-o", "{d}/s.h5ad"],
    }
    bad_values = ["0", "-1", "nan", "inf", "1e300", "18446744073709551615", "abc", "1.5"]
    for cmd, argv in bases.items():
        help_text = subprocess.run([str(c.bin), cmd, "--help"], capture_output=True, text=True).stdout
        flags = sorted(set(re.findall(r"\n\s+(?:-\w, )?(--[a-z0-9-]+) <([A-Z_]+)>", help_text)))
        for flag, meta in flags:
            if flag in ("--data", "--out", "--run", "--layer", "--key", "--from", "--to", "--labels-key",
                        "--exclude", "--where", "--genes", "--condition", "--condition-key", "--device"):
                continue
            for v in bad_values:
                args = list(argv)
                if flag in args:  # replace the base value
                    i = args.index(flag)
                    args[i + 1] = v
                else:
                    args += [flag, v]
                c.case("flag", f"{cmd} {flag} {v}", args)

    # 3. Output paths: never lose or replace what celldiff did not write.
    def user_folder(d: Path):
        (d / "input.h5ad").write_bytes(DEMO.read_bytes())
        (d / "notes.txt").write_text("my notes\n")
        (d / "mine").mkdir()
        (d / "mine" / "analysis.ipynb").write_text("{}\n")

    def fifo(d: Path):
        user_folder(d)
        os.mkfifo(d / "pipe")

    def link(d: Path):
        user_folder(d)
        os.symlink(d / "notes.txt", d / "link.h5ad")

    outputs = {
        ".": ".", "..": "..", "input_folder": "{d}", "input_file": "{d}/input.h5ad",
        "user_dir": "{d}/mine", "user_file": "{d}/notes.txt", "fifo": "{d}/pipe",
        "symlink": "{d}/link.h5ad", "dev_null": "/dev/null",
    }
    for oname, o in outputs.items():
        for force in ([], ["--force"]):
            tag = f"{oname}{' --force' if force else ''}"
            setup = fifo if oname == "fifo" else link if oname == "symlink" else user_folder
            c.case("output", f"train --out {tag}",
                   ["train", "--data", "{d}/input.h5ad", "--out", o] + force + TINY_CASE, setup=setup)
            # With --force a regular file that is not the command's input may be replaced.
            ok_pp = ("notes.txt",) if force and oname == "user_file" else ()
            ok_gen = {"user_file": ("notes.txt",), "input_file": ("input.h5ad",)}.get(oname, ()) if force else ()
            c.case("output", f"preprocess -o {tag}",
                   ["preprocess", "--data", "{d}/input.h5ad", "-o", o] + force, setup=setup,
                   may_replace=ok_pp)
            c.case("output", f"generate -o {tag}",
                   ["generate", "--run", str(run), "-n", "10", "-o", o] + force, setup=setup,
                   may_replace=ok_gen)
    c.case("output", "evaluate | head -c1",
           ["evaluate", "--real", str(DEMO), "--generated", str(gen)], stdout_pipe_close=True)

    # 4. Edited or corrupt run directories.
    def run_edit(name, fn):
        def setup(d: Path):
            shutil.copytree(run, d / "run")
            fn(d / "run")
        c.case("run", f"generate on run with {name}",
               ["generate", "--run", "{d}/run", "-n", "10", "-o", "{d}/g.h5ad"], setup=setup)

    def json_edit(fname, mutate):
        def fn(r: Path):
            p = r / fname
            v = json.loads(p.read_text())
            mutate(v)
            p.write_text(json.dumps(v))
        return fn

    def flip(fname, k):
        def fn(r: Path):
            b = bytearray((r / fname).read_bytes())
            pos = len(b) // 2 + 97 * k
            b[pos] ^= 0x40
            (r / fname).write_bytes(bytes(b))
        return fn

    def trunc(fname):
        def fn(r: Path):
            b = (r / fname).read_bytes()
            (r / fname).write_bytes(b[: len(b) // 2])
        return fn

    def remove(fname):
        return lambda r: (r / fname).unlink()

    run_edit("latent std 0", json_edit("latent.json", lambda v: v.__setitem__("std", [0.0] * len(v["std"]))))
    run_edit("latent std negative", json_edit("latent.json", lambda v: v.__setitem__("std", [-1.0] * len(v["std"]))))
    run_edit("latent std shortened", json_edit("latent.json", lambda v: v.__setitem__("std", v["std"][:1])))
    run_edit("observation size_factors []", json_edit("observation.json", lambda v: v.__setitem__("size_factors", [])))
    run_edit("observation negative dispersion", json_edit("observation.json", lambda v: v.__setitem__("dispersion", -1.0)))
    run_edit("schedule T changed", json_edit("config.json", lambda v: v["schedule"].__setitem__("num_train_timesteps", 7)))
    run_edit("celldiff_version 99.0.0", json_edit("config.json", lambda v: v.__setitem__("celldiff_version", "99.0.0")))
    run_edit("config not JSON", lambda r: (r / "config.json").write_text("{oops"))
    for f in ("vae.bpk", "denoiser_ema.bpk", "denoiser.bpk"):
        for k in range(3):
            run_edit(f"bit flip {k} in {f}", flip(f, k))
        run_edit(f"truncated {f}", trunc(f))
        run_edit(f"missing {f}", remove(f))
    for f in ("config.json", "latent.json", "preprocess.json"):
        run_edit(f"missing {f}", remove(f))

    # Summary
    with open(work / "results.jsonl", "w") as fh:
        for r in c.results:
            fh.write(json.dumps(r) + "\n")
    classes: dict[str, int] = {}
    for r in c.results:
        classes[r["class"]] = classes.get(r["class"], 0) + 1
    lost = sum(1 for r in c.results if r["data_lost"])
    left = sum(1 for r in c.results if r["leftover"])
    lines = [
        "| inputs tried | refused cleanly (exit 2) | accepted (exit 0) | internal error (exit 1) | panics/aborts | timeouts | leftovers | data lost |",
        "|---|---|---|---|---|---|---|---|",
        f"| {len(c.results)} | {classes.get('refused', 0)} | {classes.get('accepted', 0)} | "
        f"{classes.get('internal', 0)} | {classes.get('panic', 0)} | {classes.get('timeout', 0)} | {left} | {lost} |",
        "",
        "By family: " + ", ".join(
            f"{fam} {sum(1 for r in c.results if r['family'] == fam)}"
            for fam in dict.fromkeys(r["family"] for r in c.results)),
    ]
    bad = [r for r in c.results if r["class"] in ("panic", "internal", "timeout") or r["class"].startswith("exit")
           or r["data_lost"] or r["leftover"]]
    if bad:
        lines += ["", "Cases to look at:"] + [
            f"- {r['id']} {r['family']} `{r['name']}`: {r['class']}, lost {r['data_lost']}, leftover {r['leftover']}; {' / '.join(r['stderr'])}"
            for r in bad]
    (work / "summary.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
