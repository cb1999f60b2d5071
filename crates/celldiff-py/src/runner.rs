//! Runs celldiff work off the GIL, with progress events for Python and Ctrl-C.
//!
//! The work runs on a scoped thread that enters celldiff's rayon pool
//! ([`celldiff::backend::in_pool`], as the CLI runs every command). The calling thread (the one
//! holding the GIL, the interpreter's main thread in a notebook) wakes every 20 ms: it hands
//! queued progress events to the Python callback and calls `PyErr_CheckSignals`; a pending
//! `KeyboardInterrupt` (or an exception raised by the callback) sets the cancel flag, which
//! [`train::fit`](celldiff::train::fit) reads after every minibatch through
//! [`Observer::cancelled`]. The run then returns [`celldiff::Error::Interrupted`] before any
//! file is written, and the original exception is raised.

use std::panic::AssertUnwindSafe;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use celldiff::train::{EpochRecord, Observer};
use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;

use crate::to_py_err;

/// What the work tells Python while it runs; delivered as `callback(kind, json_text)`.
#[derive(Default)]
pub(crate) struct Channel {
    /// `(kind, JSON payload)` in the order they happened: `stage_start` `{"stage", "epochs"}`,
    /// `epoch` (an [`EpochRecord`]), `stage_end` `{"stage", "reason"}`, `message` (a string),
    /// `step` (a string).
    events: Mutex<Vec<(&'static str, String)>>,
    /// The latest sampling step `(done, total)`, delivered as `sampling` `[done, total]`.
    sampling: Mutex<Option<(usize, usize)>>,
    /// Set by the calling thread to stop training between minibatches.
    cancel: AtomicBool,
}

impl Channel {
    fn push(&self, kind: &'static str, payload: serde_json::Value) {
        if let Ok(mut q) = self.events.lock() {
            q.push((kind, payload.to_string()));
        }
    }

    /// The sampling loop's progress callback (`on_step` of the library's samplers).
    pub(crate) fn on_step(&self, done: usize, total: usize) {
        if let Ok(mut s) = self.sampling.lock() {
            *s = Some((done, total));
        }
    }

    /// An [`Observer`] that queues the training events here and reads the cancel flag.
    pub(crate) fn observer(&self) -> ChannelObserver<'_> {
        ChannelObserver(self)
    }

    fn drain(&self) -> Vec<(&'static str, String)> {
        let mut out = self
            .events
            .lock()
            .map(|mut q| std::mem::take(&mut *q))
            .unwrap_or_default();
        if let Some((i, n)) = self.sampling.lock().ok().and_then(|mut s| s.take()) {
            out.push(("sampling", format!("[{i},{n}]")));
        }
        out
    }
}

/// [`Observer`] of a [`Channel`].
pub(crate) struct ChannelObserver<'a>(&'a Channel);

impl Observer for ChannelObserver<'_> {
    fn stage_start(&mut self, stage: &str, epochs: usize) {
        self.0.push(
            "stage_start",
            serde_json::json!({"stage": stage, "epochs": epochs}),
        );
    }
    fn epoch_end(&mut self, record: &EpochRecord) {
        self.0.push(
            "epoch",
            serde_json::to_value(record).unwrap_or(serde_json::Value::Null),
        );
    }
    fn stage_end(&mut self, stage: &str, reason: &str) {
        self.0.push(
            "stage_end",
            serde_json::json!({"stage": stage, "reason": reason}),
        );
    }
    fn message(&mut self, msg: &str) {
        self.0
            .push("message", serde_json::Value::String(msg.into()));
    }
    fn step_start(&mut self, what: &str) {
        self.0.push("step", serde_json::Value::String(what.into()));
    }
    fn cancelled(&mut self) -> bool {
        self.0.cancel.load(Ordering::Relaxed)
    }
}

/// Runs `work` with the GIL released (see the module doc) and returns its result.
///
/// # Errors
/// The work's error as a Python exception ([`to_py_err`]); `KeyboardInterrupt` (or the
/// callback's exception) when the user interrupted; `RuntimeError` for a panic.
pub(crate) fn run<T: Send>(
    py: Python<'_>,
    progress: Option<&Bound<'_, PyAny>>,
    work: impl FnOnce(&Channel) -> celldiff::Result<T> + Send,
) -> PyResult<T> {
    celldiff::backend::set_threads(None).map_err(to_py_err)?;
    let chan = Channel::default();
    let mut stop: Option<PyErr> = None;
    let joined = std::thread::scope(|s| {
        let chan = &chan;
        let handle = s.spawn(move || {
            std::panic::catch_unwind(AssertUnwindSafe(|| {
                celldiff::backend::in_pool(|| work(chan))
            }))
        });
        loop {
            let finished = handle.is_finished();
            for (kind, payload) in chan.drain() {
                if let (Some(cb), None) = (progress, &stop)
                    && let Err(e) = cb.call1((kind, payload))
                {
                    chan.cancel.store(true, Ordering::Relaxed);
                    stop = Some(e);
                }
            }
            if finished {
                break;
            }
            if stop.is_none()
                && let Err(e) = py.check_signals()
            {
                chan.cancel.store(true, Ordering::Relaxed);
                stop = Some(e);
            }
            py.detach(|| std::thread::sleep(Duration::from_millis(20)));
        }
        handle.join()
    });
    if let Some(e) = stop {
        return Err(e);
    }
    match joined {
        Ok(Ok(result)) => result.map_err(to_py_err),
        Ok(Err(panic)) | Err(panic) => {
            let msg = panic
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| panic.downcast_ref::<&str>().copied())
                .unwrap_or("unknown panic");
            Err(PyRuntimeError::new_err(format!(
                "celldiff failed inside its numerical code (a bug; please report it): {msg}"
            )))
        }
    }
}
