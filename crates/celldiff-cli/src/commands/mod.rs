//! Subcommands of the `celldiff` binary.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand};

use celldiff::RunFiles;
use celldiff::anndata::AnnData;
use celldiff::backend::{self, DeviceChoice};
use celldiff::counts::LibraryModelKind;
use celldiff::io::output::{self, OutputKind};
use celldiff::io::{self, ReadOptions};
use celldiff::metrics::{EvalMetrics, EvalOptions};
use celldiff::models::{Activation, HiddenNorm, Likelihood};
use celldiff::observation::Observation;
use celldiff::pipeline::SamplerKind;
use celldiff::pp::{HvgFlavor, PreprocessConfig};
use celldiff::run_dir::DataSource;
use celldiff::schedulers::BetaSchedule;
use celldiff::scvaeder::Run;
use celldiff::scvaeder::{self, CountsOutput, GenerateOptions, Prior, TrainSpec};
use celldiff::train::Objective;

use crate::progress::Bars;
use crate::protocols::{bench, demo, scld_bench};

mod args;
mod classify;
mod cluster;
mod data;
mod evaluate;
pub(crate) mod flags;
mod graph;
mod identify;
mod interpolate;
mod model;
mod perturb;
pub(crate) mod scld;
mod simulate;

pub use args::*;
pub use model::load_run;

/// The top-level `--help`: the subcommands grouped by what they are for (clap lists them in
/// one flat block). A unit test checks that every subcommand is listed here.
const HELP_TEMPLATE: &str = "\
{before-help}{name} {version}
{about-with-newline}
{usage-heading} {usage}

Data:
  preprocess             Run the preprocessing steps alone (scanpy pp)
  cluster                Cluster cells (scanpy pp + neighbors + Leiden/Louvain, optional UMAP)
  simulate               Seeded negative-binomial counts with cell-type programmes

scVAEDer (VAE + latent diffusion):
  train                  Train scVAEDer (or SCLD with --model scld) and write a run directory
  generate               Generate cells from a trained run (scVAEDer or SCLD)
  embed                  Add obsm['X_celldiff'] (the VAE posterior mean) to a dataset
  interpolate            Interpolate between two cell states in the diffusion prior
  velocity               Gene velocity along an interpolation
  perturb                Predict a perturbation response by latent arithmetic

SCLD (conditional latent diffusion; train --model scld, generate):
  scld-bench             SCLD results on one dataset: AUC/MMD, ω sweep, UMAP figure

DiffVAE:
  identify               Cell types, latent dimensions and high-weight genes
  classify               Cell-type classifier: classify train, classify predict
  shift                  Latent perturbation: shift cells towards a target type
  graph                  Graph-DiffVAE: cell graph, link AUC/AP, predicted links

Evaluation:
  evaluate               Compare generated to real cells (RF/kNN AUC, MMD, correlations)
  evaluate-perturbation  R² of predicted vs real stimulated cells

Benchmarks:
  demo                   Whole pipeline on the embedded pbmc68k_reduced demo data
  bench                  Throughput benchmark on a seeded synthetic matrix
  identify-bench         DiffVAE's clustering benchmark (ARI over models and latent sizes)

  help                   Print this message or the help of the given subcommand(s)

Options:
{options}
`celldiff <COMMAND> --help` describes a command's flags.
{after-help}";

/// celldiff: generative models of single-cell RNA-seq (scVAEDer, SCLD, DiffVAE).
///
/// Reads .h5ad (anndata ≥ 0.7) or 10x matrix.mtx folders, writes .h5ad files scanpy opens.
#[derive(Parser, Debug)]
#[command(
    name = "celldiff",
    version,
    about = "celldiff: generative models of single-cell RNA-seq (scVAEDer, SCLD, DiffVAE)",
    long_about = None,
    help_template = HELP_TEMPLATE
)]
pub struct Cli {
    /// Hide progress bars and informational messages.
    #[arg(long, short, global = true)]
    pub quiet: bool,
    /// CPU threads for every stage (default: all available cores).
    #[arg(long, global = true, allow_negative_numbers = true, value_parser = flags::count(1, flags::MAX_THREADS))]
    pub threads: Option<usize>,
    /// Device: auto (CUDA if built with --features cuda, else CPU), cpu or cuda.
    #[arg(long, global = true, default_value = "auto")]
    pub device: DeviceChoice,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Train scVAEDer (VAE + latent DDPM) and write a run directory.
    Train(Box<TrainArgs>),
    /// Generate cells from a trained run.
    Generate(GenerateArgs),
    /// Add obsm['X_celldiff'] (the VAE posterior mean) to a dataset.
    Embed(EmbedArgs),
    /// Run the preprocessing steps alone (scanpy pp).
    Preprocess(PreprocessArgs),
    /// Compare generated cells to real cells (RF/kNN AUC, MMD, correlations).
    Evaluate(evaluate::EvaluateArgs),
    /// Whole pipeline on the embedded pbmc68k_reduced demo data, with a comparison table.
    Demo(Box<demo::DemoArgs>),
    /// Throughput benchmark on a seeded synthetic matrix.
    Bench(bench::BenchArgs),
    /// Interpolate between two cell states in the diffusion prior (scVAEDer).
    Interpolate(Box<interpolate::InterpolateArgs>),
    /// Gene velocity along an interpolation: rank genes by their change per λ step.
    Velocity(interpolate::VelocityArgs),
    /// Predict a perturbation response by latent arithmetic (scGen / scVAEDer).
    Perturb(Box<perturb::PerturbArgs>),
    /// R² of predicted vs real stimulated cells (scGen reg_mean_plot / reg_var_plot).
    EvaluatePerturbation(perturb::EvaluatePerturbationArgs),
    /// SCLD results on one dataset: holistic and per-cluster AUC/MMD, ω sweep, UMAP figure.
    ScldBench(Box<scld_bench::ScldBenchArgs>),
    /// Cluster cells (scanpy pp + neighbors + Leiden/Louvain, optional UMAP): obs['leiden'].
    Cluster(cluster::ClusterArgs),
    /// Graph-DiffVAE: correlation graph of the cells, graph VAE, held-out link AUC/AP, predicted links.
    Graph(Box<graph::GraphArgs>),
    /// DiffVAE: `identify` (cell types, latent dimensions, high-weight genes) and `identify-bench`.
    #[command(flatten)]
    Identify(identify::IdentifyCommand),
    /// DiffVAE's cell-type classifier (MLP 256-512-256): `classify train` and `classify predict`.
    #[command(subcommand)]
    Classify(classify::ClassifyCommand),
    /// DiffVAE latent perturbation: shift a source type's cells along a target type's latent
    /// dimensions, decode, classify; count conversions and minimal gene sets.
    Shift(Box<classify::ShiftArgs>),
    /// Seeded negative-binomial counts with cell-type programmes, written in chunks (scale
    /// tests; `--cells 1000000` never holds the matrix in memory).
    Simulate(simulate::SimulateArgs),
}

/// Whether each cell matches every `KEY=VALUE` of `expr` (`flag` names the option in errors).
pub fn matches_all(adata: &AnnData, expr: &str, flag: &str) -> Result<Vec<bool>> {
    let mut conds = Vec::new();
    for part in expr.split(',').filter(|p| !p.trim().is_empty()) {
        let (k, v) = part
            .split_once('=')
            .with_context(|| format!("{flag}: `{part}` is not KEY=VALUE"))?;
        let labels = adata
            .obs_column(k.trim())
            .with_context(|| format!("{flag} `{expr}`"))?
            .labels();
        conds.push((labels, v.trim().to_string()));
    }
    if conds.is_empty() {
        bail!("{flag}: empty expression (expected KEY=VALUE[,KEY=VALUE...])");
    }
    Ok((0..adata.n_obs())
        .map(|i| conds.iter().all(|(l, v)| &l[i] == v))
        .collect())
}

/// Keeps the cells that match every `KEY=VALUE` of `expr`.
pub fn select_where(adata: AnnData, expr: &str, flag: &str) -> Result<AnnData> {
    let m = matches_all(&adata, expr, flag)?;
    let keep: Vec<usize> = (0..adata.n_obs()).filter(|&i| m[i]).collect();
    if keep.is_empty() {
        bail!("{flag} `{expr}` matches no cell");
    }
    Ok(adata.select_obs(&keep))
}

/// Keeps the cells that do not match every `KEY=VALUE` of `expr`.
pub fn apply_exclude(adata: AnnData, expr: &str) -> Result<AnnData> {
    let m = matches_all(&adata, expr, "--exclude")?;
    let keep: Vec<usize> = (0..adata.n_obs()).filter(|&i| !m[i]).collect();
    if keep.is_empty() {
        bail!("--exclude `{expr}` removes every cell");
    }
    Ok(adata.select_obs(&keep))
}

pub fn device(choice: DeviceChoice) -> Result<celldiff::Device> {
    Ok(backend::device(choice)?)
}

pub fn run(cli: Cli) -> Result<()> {
    let threads = backend::set_threads(cli.threads)?;
    // Every command runs on a worker of the rayon pool (see `backend::in_pool`).
    backend::in_pool(move || run_command(cli, threads))
}

fn run_command(cli: Cli, threads: usize) -> Result<()> {
    let quiet = cli.quiet;
    match cli.command {
        Command::Train(a) => model::train(*a, cli.device, quiet, threads),
        Command::Generate(a) => model::generate(a, cli.device, quiet),
        Command::Embed(a) => model::embed(a, cli.device, quiet),
        Command::Preprocess(a) => data::preprocess(a, quiet),
        Command::Evaluate(a) => evaluate::run(a, cli.device, quiet),
        Command::Demo(a) => demo::run(*a, cli.device, quiet, threads),
        Command::Bench(a) => bench::run(a, cli.device, quiet, threads),
        Command::Interpolate(a) => interpolate::run_interpolate(*a, cli.device, quiet),
        Command::Velocity(a) => interpolate::run_velocity(a, quiet),
        Command::Perturb(a) => perturb::run_perturb(*a, cli.device, quiet),
        Command::EvaluatePerturbation(a) => perturb::run_evaluate(a, quiet),
        Command::ScldBench(a) => scld_bench::run(*a, cli.device, quiet),
        Command::Cluster(a) => cluster::run(a, quiet),
        Command::Graph(a) => graph::run(*a, cli.device, quiet),
        Command::Identify(c) => identify::run(c, cli.device, quiet),
        Command::Classify(c) => classify::run(c, cli.device, quiet),
        Command::Shift(a) => classify::run_shift(*a, cli.device, quiet),
        Command::Simulate(a) => simulate::run(a, quiet),
    }
}

/// Prints a metrics table (one row per method).
pub fn print_table(rows: &[(String, EvalMetrics)]) {
    println!(
        "{:<18} {:>7} {:>7} {:>9} {:>9} {:>9} {:>9} {:>8} {:>7} {:>7} {:>7}",
        "method",
        "rf_auc",
        "knn_auc",
        "mmd",
        "mean_r",
        "mean_rho",
        "var_r",
        "corr_mad",
        "zf_r",
        "n_real",
        "n_gen"
    );
    for (name, m) in rows {
        println!(
            "{:<18} {:>7.3} {:>7.3} {:>9.4} {:>9.4} {:>9.4} {:>9.4} {:>8.4} {:>7.3} {:>7} {:>7}",
            name,
            m.rf_auc,
            m.knn_auc,
            m.mmd,
            m.mean_pearson,
            m.mean_spearman,
            m.var_pearson,
            m.corr_mad,
            m.zero_fraction_pearson,
            m.n_real,
            m.n_generated
        );
    }
}

/// Default evaluation options with a seed.
pub fn eval_options(seed: u64) -> EvalOptions {
    EvalOptions {
        seed,
        ..EvalOptions::default()
    }
}

/// The files a command with several outputs has written so far. Unless [`Written::keep`] is
/// called at the end, they are removed again when this is dropped, so a command that fails
/// half-way (e.g. its second PNG) leaves none of its outputs behind.
#[derive(Default)]
pub struct Written(Vec<PathBuf>);

impl Written {
    /// Records `path` as written.
    pub fn push(&mut self, path: &Path) {
        self.0.push(path.to_path_buf());
    }

    /// Keeps everything written (the command succeeded).
    pub fn keep(mut self) {
        self.0.clear();
    }
}

impl Drop for Written {
    fn drop(&mut self) {
        for p in &self.0 {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// Writes `text` to the output file `path` safely ([`output::write_file`]): a temporary sibling
/// (removed on every error path), published without replacing anything unless `force`, and then
/// only a regular file.
pub fn write_atomic(path: &Path, force: bool, text: &str) -> Result<()> {
    output::write_file(path, force, |tmp| {
        std::fs::write(tmp, text).map_err(|e| celldiff::Error::io(tmp, e))
    })
    .with_context(|| format!("writing {}", path.display()))
}

/// Writes `adata` to the output `.h5ad` `path` safely ([`output::write_file`]).
pub fn write_h5ad_out(path: &Path, force: bool, adata: &AnnData) -> Result<()> {
    Ok(output::write_file(path, force, |tmp| {
        io::write_h5ad(tmp, adata)
    })?)
}

/// Writes `out` safely ([`output::write_file`]) as an annotated copy of the input `data`
/// ([`io::h5ad::write_annotated`]: everything of the input kept, `ann` added or replaced).
pub fn write_annotated_out(
    out: &Path,
    force: bool,
    data: &Path,
    ann: &io::h5ad::Annotations,
) -> Result<()> {
    Ok(output::write_file(out, force, |tmp| {
        io::h5ad::write_annotated(data, tmp, ann)
    })?)
}

/// [`output::write_file`] for a writer that returns an `anyhow` error (kept as it is: its
/// context and exit code): `write` creates the file at the temporary path it is given.
pub fn write_out(path: &Path, force: bool, write: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    let mut failed: Option<anyhow::Error> = None;
    let published = output::write_file(path, force, |tmp| {
        write(tmp).map_err(|e| {
            let msg = format!("{e:#}");
            failed = Some(e);
            celldiff::Error::Internal(msg)
        })
    });
    match failed {
        Some(e) => Err(e),
        None => Ok(published?),
    }
}

/// Checks the output file `out` before any work ([`output::check_output`]): refused if it is
/// one of `inputs` or holds one, a directory, link, FIFO or device; exists without `force`.
pub fn check_out(out: &Path, force: bool, inputs: &[&Path]) -> Result<()> {
    Ok(output::check_output(out, force, OutputKind::File, inputs)?)
}

/// Checks the output run directory `out` before any work ([`output::check_output`] with
/// [`OutputKind::RunDir`]).
pub fn check_run_out(out: &Path, force: bool, inputs: &[&Path]) -> Result<()> {
    Ok(output::check_output(
        out,
        force,
        OutputKind::RunDir,
        inputs,
    )?)
}

/// An error of a final write after the command-start check passed: "already exists" then
/// means the output appeared while the command worked.
pub fn appeared_meanwhile(e: celldiff::Error) -> celldiff::Error {
    match e {
        celldiff::Error::AlreadyExists { path } => celldiff::Error::Refused {
            path,
            reason: "appeared meanwhile (another process wrote it while this one worked); \
                     nothing was replaced and this command's output was discarded"
                .into(),
        },
        e => e,
    }
}

/// `<dir>/<stem><suffix>` for an output path `<dir>/<stem>.h5ad`.
pub fn sibling(out: &Path, suffix: &str) -> PathBuf {
    let stem = out
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "out".into());
    out.with_file_name(format!("{stem}{suffix}"))
}

#[cfg(test)]
mod cli_tests {
    use clap::CommandFactory;

    /// clap's own consistency checks (unique argument ids, valid defaults) for every
    /// subcommand; without this a clash only shows when that subcommand is run.
    #[test]
    fn every_subcommand_passes_clap_debug_asserts() {
        super::Cli::command().debug_assert();
    }

    /// The grouped top-level help lists every subcommand clap knows.
    #[test]
    fn grouped_help_lists_every_subcommand() {
        for sub in super::Cli::command().get_subcommands() {
            let line = format!("\n  {} ", sub.get_name());
            assert!(
                super::HELP_TEMPLATE.contains(&line),
                "`{}` is missing from HELP_TEMPLATE",
                sub.get_name()
            );
        }
    }
}
