"""Ctrl-C during training stops it between minibatches: KeyboardInterrupt in Python, the
process stays usable, nothing is written."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import time


def test_ctrl_c_stops_training_cleanly(pbmc_path, tmp_path):
    script = textwrap.dedent(
        f"""
        import sys, anndata, celldiff
        adata = anndata.read_h5ad({str(pbmc_path)!r})
        celldiff.ScVAEDer.setup_anndata(adata)
        model = celldiff.ScVAEDer(adata, n_latent=8)
        print("training", flush=True)
        try:
            model.train(max_epochs=100000, seed=0, progress_bar=False)
        except KeyboardInterrupt:
            assert not model.is_trained
            print("interrupted", flush=True)
            sys.exit(0)
        sys.exit(3)
        """
    )
    p = subprocess.Popen(
        [sys.executable, "-c", script],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
        # A launcher without job control (`( cmd & )`, some CI shells) starts its background
        # jobs with SIGINT ignored, and Python installs no Ctrl-C handler where SIGINT is
        # ignored at startup: restore the default so that the child sees the SIGINT below.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    assert p.stdout.readline().strip() == "training"
    time.sleep(3.0)
    t0 = time.monotonic()
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=60)
    assert p.returncode == 0, err
    assert "interrupted" in out
    assert time.monotonic() - t0 < 30
    assert list(tmp_path.iterdir()) == []
