"""docs/tutorial.ipynb runs end to end on the installed package (executed with nbclient in a
copy, from docs/, as a reader would run it; the committed notebook keeps its figures)."""

from __future__ import annotations

import nbclient
import nbformat
from conftest import REPO


def test_tutorial_notebook_runs(tmp_path):
    path = REPO / "docs" / "tutorial.ipynb"
    nb = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(
        nb, timeout=900, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}
    )
    client.execute()
    errors = [
        o
        for c in nb.cells
        if c.cell_type == "code"
        for o in c.get("outputs", [])
        if o.get("output_type") == "error"
    ]
    assert not errors, errors
    images = [
        o
        for c in nb.cells
        if c.cell_type == "code"
        for o in c.get("outputs", [])
        if "image/png" in o.get("data", {})
    ]
    assert len(images) >= 4, "the UMAPs, the loss curve and the violins are drawn"
