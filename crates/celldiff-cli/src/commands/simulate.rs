//! `celldiff simulate`: a seeded negative-binomial count matrix with cell-type programmes,
//! written to `.h5ad` in chunks of cells ([`celldiff::simulate`]) for scale tests. Never
//! commit its output.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use serde_json::json;

use celldiff::simulate::{self, SimulateOptions};

use crate::progress::Bars;

#[derive(Args, Debug)]
pub struct SimulateArgs {
    /// Cells.
    #[arg(long, default_value_t = 10_000, allow_negative_numbers = true, value_parser = super::flags::count(1, super::flags::MAX_CELLS))]
    pub cells: usize,
    /// Genes.
    #[arg(long, default_value_t = 2000, allow_negative_numbers = true, value_parser = super::flags::count(1, super::flags::MAX_GENES))]
    pub genes: usize,
    /// Cell types (obs['cell_type'] = type_0, type_1, …).
    #[arg(long, default_value_t = 10, allow_negative_numbers = true, value_parser = super::flags::count(1, 100_000))]
    pub types: usize,
    /// Expected UMIs per cell (> 0, at most 10⁹: counts are stored as float32).
    #[arg(long, default_value_t = 1000.0, allow_negative_numbers = true, value_parser = super::flags::real(0.0, false, 1e9, true))]
    pub mean_library: f64,
    /// Negative-binomial dispersion θ (variance μ + μ²/θ; > 0, at most 10⁹ ≈ Poisson).
    #[arg(long, default_value_t = 2.0, allow_negative_numbers = true, value_parser = super::flags::real(0.0, false, 1e9, true))]
    pub theta: f64,
    /// Cells generated and written per chunk (bounds memory).
    #[arg(long, default_value_t = 10_000, allow_negative_numbers = true, value_parser = super::flags::count(1, 10_000_000))]
    pub chunk_cells: usize,
    /// Seed (the same seed gives the same file, whatever the chunk size or thread count).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Output .h5ad.
    #[arg(short = 'o', long)]
    pub out: PathBuf,
    /// Overwrite an existing output.
    #[arg(long)]
    pub force: bool,
}

/// `celldiff simulate`: writes the seeded counts to `--out` (refused if it exists, without
/// `--force`) and prints a JSON summary (cells, genes, nnz, density, seconds).
pub fn run(a: SimulateArgs, quiet: bool) -> Result<()> {
    let opts = SimulateOptions {
        n_cells: a.cells,
        n_genes: a.genes,
        n_types: a.types,
        seed: a.seed,
        mean_library: a.mean_library,
        theta: a.theta,
        chunk_cells: a.chunk_cells,
        ..SimulateOptions::default()
    };
    let bars = Bars::new(quiet);
    let n = a.cells;
    let s = simulate::simulate_h5ad(&a.out, &opts, a.force, &mut |done| {
        bars.println(format!("simulate: {done}/{n} cells written"));
    })?;
    println!(
        "{}",
        json!({
            "n_cells": s.n_cells,
            "n_genes": s.n_genes,
            "nnz": s.nnz,
            "density": s.density,
            "mean_library": s.mean_library,
            "seconds": s.seconds,
            "out": a.out.display().to_string(),
        })
    );
    Ok(())
}
