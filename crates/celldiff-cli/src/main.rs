//! `celldiff`: train generative models on single-cell RNA-seq and use them.
//!
//! `main → run → ExitCode`: errors are printed with their chain; bad input (files, fields,
//! parameters) exits with code 2, internal failures with 1.

mod commands;
mod plot;
mod progress;
mod protocols;
mod warnings;

use std::process::ExitCode;

use clap::Parser;

use commands::Cli;

/// mimalloc instead of the system allocator: training allocates and frees multi-megabyte
/// tensor buffers every step, which glibc hands back to the kernel and faults in again.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Keeps freed memory for reuse instead of returning it to the kernel after mimalloc's default
/// 10 ms: the next step's buffers then need no page faults and no kernel zeroing (+35–40 %
/// training throughput, docs/RESULTS.md). The resident set stays at the peak, which is what
/// bounds the memory of a run anyway. A user's `MIMALLOC_PURGE_DELAY` is left in charge.
fn keep_freed_memory() {
    // `mi_option_purge_delay` of mimalloc.h's `mi_option_e` (v2 and v3); libmimalloc-sys 0.1.49
    // does not export the constant.
    const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        // SAFETY: sets a process-wide mimalloc option; valid at any time.
        unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, -1) };
    }
}

/// A closed stdout or stderr (`celldiff evaluate ... | head -c1`) ends the program quietly with
/// exit code 0, as ripgrep does, instead of a panic message: `println!` panics on a broken pipe
/// (Rust ignores SIGPIPE), and the reader that went away wants no more output. Every file the
/// command had published stays complete (outputs are renamed into place whole); files it had
/// not published yet are not written.
fn quiet_broken_pipe() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let payload = info.payload();
        let msg = payload
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| payload.downcast_ref::<&str>().copied())
            .unwrap_or("");
        let printing = msg.starts_with("failed printing to stdout")
            || msg.starts_with("failed printing to stderr");
        if printing && msg.contains("Broken pipe") {
            std::process::exit(0);
        }
        default(info);
    }));
}

fn main() -> ExitCode {
    keep_freed_memory();
    warnings::init();
    quiet_broken_pipe();
    let cli = Cli::parse();
    match commands::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err}");
            for cause in err.chain().skip(1) {
                eprintln!("  caused by: {cause}");
            }
            for hint in commands::flags::hints(&format!("{err:#}")) {
                eprintln!("hint: {hint}");
            }
            let bad_input = err
                .chain()
                .find_map(|e| e.downcast_ref::<celldiff::Error>())
                .is_none_or(|e| e.is_bad_input());
            if bad_input {
                ExitCode::from(2)
            } else {
                ExitCode::from(1)
            }
        }
    }
}
