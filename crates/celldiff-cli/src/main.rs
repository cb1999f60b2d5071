//! `celldiff`: train generative models on single-cell RNA-seq and use them.
//!
//! `main → run → ExitCode`: errors are printed with their chain; bad input (files, fields,
//! parameters) exits with code 2, internal failures with 1.

mod commands;
mod progress;

use std::process::ExitCode;

use clap::Parser;

use commands::Cli;

/// mimalloc instead of the system allocator: training allocates and frees multi-megabyte
/// tensor buffers every step, which glibc hands back to the kernel and faults in again.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match commands::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err}");
            for cause in err.chain().skip(1) {
                eprintln!("  caused by: {cause}");
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
