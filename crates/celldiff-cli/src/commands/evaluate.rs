//! `celldiff evaluate`: generated vs real cells in the model's expression space.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;

use celldiff::evaluation::{align, recorded_preprocess};
use celldiff::io::{self, ReadOptions};
use celldiff::metrics::{self, EvalMetrics};

use super::{eval_options, print_table, write_atomic};

#[derive(Args, Debug)]
pub struct EvaluateArgs {
    /// Real cells (.h5ad or 10x directory), e.g. raw counts: the generated file's recorded
    /// preprocessing is applied to them first.
    #[arg(long)]
    pub real: PathBuf,
    /// Generated cells (.h5ad written by `celldiff generate`). When it has
    /// layers['log1p_norm'] (counts in X, from a run trained with --likelihood nb/zinb), that
    /// layer is compared: it is the model's space, where the real cells are put.
    #[arg(long)]
    pub generated: PathBuf,
    /// Read the real cells from layers/<LAYER>.
    #[arg(long)]
    pub layer: Option<String>,
    /// Read the real cells from raw/X.
    #[arg(long)]
    pub use_raw: bool,
    /// Seed of the class balancing, split and random forest.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Subsample each set to at most this many cells.
    #[arg(long, allow_negative_numbers = true, value_parser = super::flags::count(2, usize::MAX))]
    pub max_cells: Option<usize>,
    /// Also score the decoder's ceiling: the real cells encoded with this scVAEDer run
    /// (posterior mean), decoded and sampled like generated cells (each cell's own library
    /// size with a count likelihood), reported as a `reconstruction` row (and key in the JSON
    /// output). Use held-out cells the run was not trained on.
    #[arg(long)]
    pub run: Option<PathBuf>,
    /// Write the metrics as one JSON object.
    #[arg(short = 'o', long)]
    pub out: Option<PathBuf>,
    /// Overwrite an existing output.
    #[arg(long)]
    pub force: bool,
}

pub fn run(a: EvaluateArgs, dev: celldiff::backend::DeviceChoice, quiet: bool) -> Result<()> {
    if let Some(o) = &a.out {
        let mut inputs = vec![a.real.as_path(), a.generated.as_path()];
        inputs.extend(a.run.as_deref());
        super::check_out(o, a.force, &inputs)?;
    }
    let g = io::read(&a.generated, &ReadOptions::default())?;
    let r = io::read(
        &a.real,
        &ReadOptions {
            layer: a.layer.clone(),
            use_raw: a.use_raw,
        },
    )?;
    let pp = recorded_preprocess(&g, &a.generated.display().to_string())?;
    if pp.is_none() && !quiet {
        eprintln!(
            "note: {} records no preprocessing; comparing the files' X as they are",
            a.generated.display()
        );
    }
    let (real, gen_x) = align(&r, &g, pp.as_ref())?;
    let mut opts = eval_options(a.seed);
    opts.max_cells = a.max_cells;
    let m: EvalMetrics = metrics::evaluate(&real, &gen_x, &opts)?;
    let mut rows = vec![("generated".to_string(), m.clone())];
    let mut doc = serde_json::to_value(&m)?;
    if let Some(run_dir) = &a.run {
        let device = super::device(dev)?;
        let run = <celldiff::scvaeder::Run as celldiff::RunFiles>::load(run_dir, &device)?;
        let x = run
            .preprocess
            .transform(&r)
            .context("cannot apply the run's preprocessing to the real cells")?
            .x
            .to_dense();
        let rec = celldiff::scvaeder::reconstruct(
            &run,
            &x,
            celldiff::observation::Observation::Counts,
            a.seed.wrapping_add(7),
            &device,
        )?;
        let rm = metrics::evaluate(&x, &rec, &opts)?;
        doc["reconstruction"] = serde_json::to_value(&rm)?;
        rows.push(("reconstruction".to_string(), rm));
    }
    // The file first: a reader that closes stdout early (`| head`) must not cost the output.
    if let Some(o) = &a.out {
        write_atomic(o, a.force, &serde_json::to_string_pretty(&doc)?)?;
    }
    print_table(&rows);
    Ok(())
}
