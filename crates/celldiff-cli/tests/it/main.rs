//! Integration tests of the `celldiff` binary: every subcommand end to end on the embedded demo
//! data and the shared datasets, and every bad-input case of the first issue (named error,
//! exit code 2, no output file left behind).

mod analysis;
mod bad_input;
mod classify;
mod cli;
mod cluster;
mod common;
mod counts;
mod golden;
mod graph;
mod h5ad_read;
mod identify;
mod python_package;
mod runs;
mod safety;
mod scanpy_compat;
mod scld;
mod stream;
mod validation;
