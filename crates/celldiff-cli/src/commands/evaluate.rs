//! `celldiff evaluate`: generated vs real cells in the model's expression space.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::Args;

use celldiff::anndata::{AnnData, DenseMatrix};
use celldiff::io::{self, ReadOptions};
use celldiff::metrics::{self, EvalMetrics};
use celldiff::pp::FittedPreprocess;

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

/// The preprocessing recorded in `uns['celldiff']['preprocess']` of a generated file (a
/// dict; a JSON string in files of older versions), if any.
pub fn recorded_preprocess(
    g: &AnnData,
    path: &std::path::Path,
) -> Result<Option<FittedPreprocess>> {
    let Some(meta) = g.uns.get("celldiff") else {
        return Ok(None);
    };
    let Some(pp) = meta.get("preprocess") else {
        return Ok(None);
    };
    let parsed: FittedPreprocess = match pp {
        serde_json::Value::String(s) => serde_json::from_str(s),
        v => serde_json::from_value(v.clone()),
    }
    .with_context(|| {
        format!(
            "{}: uns['celldiff']['preprocess'] is not a celldiff preprocessing record",
            path.display()
        )
    })?;
    Ok(Some(parsed))
}

/// Brings `real` into the generated cells' space (recorded preprocessing, then the generated
/// file's gene order) and returns both as dense matrices.
pub fn align(
    real: &AnnData,
    generated: &AnnData,
    pp: Option<&FittedPreprocess>,
) -> Result<(DenseMatrix, DenseMatrix)> {
    let real = match pp {
        Some(pp) => pp.transform(real).context(
            "cannot apply the generated cells' preprocessing to the real cells (are they the same kind of data, e.g. raw counts?)",
        )?,
        None => real.clone(),
    };
    let pos: std::collections::HashMap<&str, usize> = real
        .var_names
        .iter()
        .enumerate()
        .map(|(i, g)| (g.as_str(), i))
        .collect();
    let mut idx = Vec::with_capacity(generated.n_vars());
    let mut missing = Vec::new();
    for g in &generated.var_names {
        match pos.get(g.as_str()) {
            Some(&i) => idx.push(i),
            None => missing.push(g.clone()),
        }
    }
    if !missing.is_empty() {
        bail!(
            "{} of the generated cells' {} genes are missing from the real cells (first: {:?})",
            missing.len(),
            generated.n_vars(),
            &missing[..missing.len().min(10)]
        );
    }
    let r = real.select_vars(&idx).x.to_dense();
    // Count output keeps the model's space in layers['log1p_norm'] (X holds the counts).
    Ok((r, celldiff::scvaeder::model_space(generated)))
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
    let pp = recorded_preprocess(&g, &a.generated)?;
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
