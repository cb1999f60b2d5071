"""Shared fixtures: the real datasets in ../shared/data (beside the repository) and the
``celldiff`` command-line binary (``CELLDIFF_BIN``, set by the Rust test that runs this suite;
else target/{debug,release}/celldiff)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import anndata
import pytest

REPO = Path(__file__).resolve().parents[2]
SHARED = REPO.parent / "shared" / "data"
PBMC = SHARED / "pbmc68k_reduced" / "pbmc68k_reduced_counts.h5ad"

#: A tiny but real configuration: trains in seconds on 2 cores.
TINY = dict(n_latent=8, n_hidden=[64], denoiser_width=64, denoiser_depth=1, n_timesteps=100)
TINY_TRAIN = dict(max_epochs=4, max_epochs_diffusion=4, seed=0, progress_bar=False)
#: The same configuration as `celldiff train` flags.
TINY_FLAGS = [
    "--latent",
    "8",
    "--hidden",
    "64",
    "--denoiser-width",
    "64",
    "--denoiser-depth",
    "1",
    "--timesteps",
    "100",
    "--epochs-vae",
    "4",
    "--epochs-diffusion",
    "4",
    "--seed",
    "0",
]


@pytest.fixture(scope="session")
def pbmc_path() -> Path:
    if not PBMC.exists():
        pytest.fail(f"{PBMC} is missing: the tests read the shared datasets beside the repository")
    return PBMC


@pytest.fixture()
def pbmc(pbmc_path) -> anndata.AnnData:
    return anndata.read_h5ad(pbmc_path)


@pytest.fixture(scope="session")
def cli() -> str:
    env = os.environ.get("CELLDIFF_BIN")
    if env:
        return env
    for profile in ("debug", "release"):
        p = REPO / "target" / profile / "celldiff"
        if p.exists():
            return str(p)
    found = shutil.which("celldiff")
    if found:
        return found
    pytest.fail("no celldiff binary: set CELLDIFF_BIN or run `cargo build -p celldiff-cli`")


def bpk_tensors(path: Path) -> bytes:
    """The tensor bytes of a Burn ``.bpk`` weights file: everything after its header (magic,
    version, metadata length and the metadata, which holds per-process random parameter ids)."""
    b = Path(path).read_bytes()
    assert b[:4] == b"NRUB", f"{path} is not a burnpack file"
    n = int.from_bytes(b[6:10], "little")
    return b[10 + n :]


def run_cli(cli: str, *args: str) -> subprocess.CompletedProcess:
    """Runs the CLI quietly and fails the test with its stderr when it fails."""
    p = subprocess.run([cli, "--quiet", *map(str, args)], capture_output=True, text=True)
    if p.returncode != 0:
        pytest.fail(f"celldiff {' '.join(map(str, args))} failed ({p.returncode}):\n{p.stderr}")
    return p
