//! Library warnings on stderr: the `celldiff` library reports what it tolerates (a run
//! written before checksums, a skipped `obs` column, ...) with `tracing::warn!`; the binary
//! prints each such event as one line `warning: MESSAGE` (errors as `error: MESSAGE`), also
//! under `--quiet`, which only silences progress.

use std::fmt;

use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// `warning: MESSAGE` / `error: MESSAGE`, nothing else (no time, level column or target).
struct Plain;

impl<S, N> FormatEvent<S, N> for Plain
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut w: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let level = if *event.metadata().level() == Level::ERROR {
            "error"
        } else {
            "warning"
        };
        write!(w, "{level}: ")?;
        ctx.field_format().format_fields(w.by_ref(), event)?;
        writeln!(w)
    }
}

/// Installs the stderr printer for warnings and errors (once, at start-up).
pub fn init() {
    let _ = tracing_subscriber::fmt()
        .with_max_level(Level::WARN)
        .with_writer(std::io::stderr)
        .event_format(Plain)
        .try_init();
}
