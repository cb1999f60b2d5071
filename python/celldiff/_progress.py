"""Training and sampling progress from the Rust extension, shown with tqdm (``tqdm.auto``: a
widget in notebooks, a text bar in terminals)."""

from __future__ import annotations

import json
import logging

logger = logging.getLogger("celldiff")


class Progress:
    """The ``progress(kind, json)`` callback of ``celldiff._core``: one bar per training stage
    (epochs, with the latest losses) and one for sampling steps; messages go to the
    ``celldiff`` logger. ``enabled=False`` shows nothing."""

    def __init__(self, enabled: bool = True):
        self.enabled = enabled
        self.bar = None
        self.sampling = None

    def _tqdm(self, **kw):
        from tqdm.auto import tqdm

        # At most one redraw per second: a notebook without ipywidgets keeps every redraw as
        # text in the cell's output.
        return tqdm(mininterval=1.0, **kw)

    def __call__(self, kind: str, payload: str) -> None:
        data = json.loads(payload)
        if kind == "message" or kind == "step":
            logger.info(data)
            return
        if not self.enabled:
            return
        if kind == "stage_start":
            self.close()
            self.bar = self._tqdm(total=data["epochs"], desc=f"{data['stage']} epochs", leave=True)
        elif kind == "epoch" and self.bar is not None:
            post = {"train_loss": f"{data['train_loss']:.4g}"}
            if data.get("val_loss") is not None:
                post["val_loss"] = f"{data['val_loss']:.4g}"
            self.bar.set_postfix(post, refresh=False)
            self.bar.update(1)
        elif kind == "stage_end" and self.bar is not None:
            self.bar.set_description(f"{data['stage']} ({data['reason']})")
            self.close()
        elif kind == "sampling":
            done, total = data
            if self.sampling is None:
                self.sampling = self._tqdm(total=total, desc="sampling steps", leave=False)
            self.sampling.total = total
            self.sampling.update(done - self.sampling.n)

    def close(self) -> None:
        """Closes any open bar (called at the end of a run, also after an error)."""
        for b in (self.bar, self.sampling):
            if b is not None:
                b.close()
        self.bar = None
        self.sampling = None


def with_progress(enabled: bool, fn, *args, **kwargs):
    """Calls ``fn(*args, progress=..., **kwargs)`` with a :class:`Progress` shown when
    ``enabled``, and closes its bars afterwards, also when ``fn`` raises (Ctrl-C included)."""
    progress = Progress(enabled)
    try:
        return fn(*args, progress=progress, **kwargs)
    finally:
        progress.close()
