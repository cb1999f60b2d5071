//! `celldiff graph`: Graph-DiffVAE (Bica et al., Sci. Rep. 2020) on a dataset. Builds the
//! Pearson-correlation graph of the cells, trains the variational graph autoencoder with 15 %
//! of the edges held out, reports the held-out ROC AUC / average precision, and writes an
//! annotated copy of the input (everything of it kept as stored, see
//! `celldiff::io::h5ad::write_annotated`) with `obsm['X_graph']` (node embedding Z*), `obsm['X_graph_mu']` (posterior mean μ),
//! `obsp['celldiff_links']` (predicted links, probabilities), `obsp['celldiff_graph_input']`
//! (the correlation graph, 0/1) and `uns['celldiff_graph']`, plus `<stem>_links.tsv`.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result};
use clap::Args;

use celldiff::Error;
use celldiff::backend::DeviceChoice;
use celldiff::diffvae::graph::{self, GraphSpec, LinkMode};

use super::{DataArgs, Written, write_atomic};
use crate::progress::Bars;

#[derive(Args, Debug)]
pub struct GraphArgs {
    #[command(flatten)]
    pub data: DataArgs,
    /// Output .h5ad: a copy of the input (everything kept as stored) with obsm['X_graph'],
    /// obsm['X_graph_mu'], obsp['celldiff_links'], obsp['celldiff_graph_input'] and
    /// uns['celldiff_graph'] added or replaced; `<stem>_links.tsv` is written beside it.
    #[arg(short = 'o', long)]
    pub out: PathBuf,
    /// Correlation neighbours per cell of the initial graph (each cell is linked to its k most
    /// Pearson-correlated cells, then symmetrised).
    #[arg(long, default_value_t = 1, allow_negative_numbers = true, value_parser = super::flags::count(1, 10_000))]
    pub k: usize,
    /// Training epochs (full-batch Adam steps).
    #[arg(long, default_value_t = 200, allow_negative_numbers = true, value_parser = super::flags::count(1, super::flags::MAX_EPOCHS))]
    pub epochs: usize,
    /// Adam learning rate (the paper's 1e-4).
    #[arg(long, default_value_t = 1e-4, allow_negative_numbers = true, value_parser = super::flags::positive())]
    pub lr: f64,
    /// Highly variable genes used as node features (0 = all genes).
    #[arg(long, default_value_t = 2000, allow_negative_numbers = true, value_parser = super::flags::count(0, usize::MAX))]
    pub n_top_genes: usize,
    /// Width of the hidden graph convolutions.
    #[arg(long, default_value_t = 512, allow_negative_numbers = true, value_parser = super::flags::count(1, super::flags::MAX_WIDTH))]
    pub hidden: usize,
    /// Latent dimension.
    #[arg(long, default_value_t = 50, allow_negative_numbers = true, value_parser = super::flags::count(1, super::flags::MAX_LATENT))]
    pub latent: usize,
    /// Predicted links: every pair with probability ≥ this (0 < p < 1; each cell selects at
    /// most its 100 most probable partners).
    #[arg(long, conflicts_with = "top_k_links", allow_negative_numbers = true, value_parser = super::flags::finite())]
    pub threshold: Option<f64>,
    /// Predicted links: the k most probable partners of each cell among all cells.
    #[arg(long, default_value_t = 5, allow_negative_numbers = true, value_parser = super::flags::count(1, 1_000_000))]
    pub top_k_links: usize,
    /// Up to this many cells the reconstruction loss is computed over all N² cell pairs
    /// (memory ~N² floats); above, over the edges plus an equal number of sampled non-edges
    /// per epoch (an unbiased estimate).
    #[arg(long, default_value_t = 5000, allow_negative_numbers = true, value_parser = super::flags::count(0, 100_000))]
    pub dense_max_cells: usize,
    /// Seed of the edge split, the initialisation, ε and the sampled non-edges.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Overwrite existing outputs.
    #[arg(long)]
    pub force: bool,
}

/// `<dir>/<stem>_links.tsv` beside `out`.
fn links_path(out: &Path) -> PathBuf {
    let stem = out
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "graph".into());
    out.with_file_name(format!("{stem}_links.tsv"))
}

fn param(msg: String) -> anyhow::Error {
    Error::Param(msg).into()
}

impl GraphArgs {
    /// The library spec these flags describe, with every flag checked.
    fn spec(&self) -> Result<GraphSpec> {
        if self.k == 0 {
            return Err(param(
                "--k must be at least 1 (correlation neighbours per cell)".into(),
            ));
        }
        if self.epochs == 0 {
            return Err(param("--epochs must be at least 1".into()));
        }
        if !(self.lr.is_finite() && self.lr > 0.0) {
            return Err(param(format!(
                "--lr must be a positive number, got {}",
                self.lr
            )));
        }
        if self.hidden == 0 || self.latent == 0 {
            return Err(param("--hidden and --latent must be at least 1".into()));
        }
        let links = match self.threshold {
            Some(p) if !(p > 0.0 && p < 1.0) => {
                return Err(param(format!(
                    "--threshold must be a probability strictly between 0 and 1, got {p}"
                )));
            }
            Some(p) => LinkMode::Threshold(p),
            None if self.top_k_links == 0 => {
                return Err(param("--top-k-links must be at least 1".into()));
            }
            None => LinkMode::TopK(self.top_k_links),
        };
        let mut spec = GraphSpec {
            n_top_genes: (self.n_top_genes > 0).then_some(self.n_top_genes),
            k: self.k,
            hidden: self.hidden,
            n_latent: self.latent,
            links,
            ..GraphSpec::default()
        }
        .with_seed(self.seed);
        spec.train.epochs = self.epochs;
        spec.train.learning_rate = self.lr;
        spec.train.dense_max_nodes = self.dense_max_cells;
        Ok(spec)
    }
}

/// Runs `celldiff graph`: checks the flags and outputs, fits Graph-DiffVAE
/// ([`graph::fit`]), writes the TSV and then the .h5ad (both atomic; the TSV is removed again if
/// the .h5ad fails) and prints a one-line JSON summary on stdout.
pub fn run(a: GraphArgs, dev: DeviceChoice, quiet: bool) -> Result<()> {
    let tsv = links_path(&a.out);
    super::check_out(&a.out, a.force, &[&a.data.data])?;
    super::check_out(&tsv, a.force, &[&a.data.data])?;
    let spec = a.spec()?;
    let device = super::device(dev)?;
    let mut bars = Bars::new(quiet);
    let start = Instant::now();
    let adata = a.data.read()?;
    let n = adata.n_obs();
    if let LinkMode::TopK(k) = spec.links
        && k >= n
    {
        return Err(param(format!(
            "--top-k-links {k} needs more than {k} cells; the data have {n}"
        )));
    }
    if spec.k >= n {
        return Err(param(format!(
            "--k {} needs more than {} cells; the data have {n}",
            spec.k, spec.k
        )));
    }
    bars.println(format!(
        "read {} cells × {} genes from {}",
        n,
        adata.n_vars(),
        a.data.data.display()
    ));
    let fit = graph::fit(&adata, &spec, &device, &mut bars)
        .with_context(|| format!("Graph-DiffVAE on {}", a.data.data.display()))?;
    for m in &fit.preprocess.messages {
        bars.println(format!("preprocess: {m}"));
    }
    if fit.n_constant_cells > 0 {
        bars.println(format!(
            "warning: {} cells have constant features (correlation undefined); they are linked \
             to the lowest-index cells",
            fit.n_constant_cells
        ));
    }
    if fit.links.n_capped > 0 {
        bars.println(format!(
            "warning: {} cells had more than {} partners above --threshold; only the most \
             probable were kept",
            fit.links.n_capped,
            graph::MAX_LINKS_PER_CELL
        ));
    }
    let records = &fit.trained.records;
    let mut summary = fit.summary(&spec, a.n_top_genes);
    summary["seconds"] = start.elapsed().as_secs_f64().into();
    // An annotated copy of the input (its own obsp, e.g. scanpy's connectivities, and
    // everything else kept as stored).
    let ann = fit.annotations(summary.clone());
    let text = fit.links_tsv(&adata.obs_names);
    // All or none: the TSV is removed again if the .h5ad cannot be written; each file is
    // written to a temporary name and renamed into place.
    let mut written = Written::default();
    write_atomic(&tsv, a.force, &text)?;
    written.push(&tsv);
    super::write_annotated_out(&a.out, a.force, &a.data.data, &ann)
        .with_context(|| format!("writing {}", a.out.display()))?;
    written.keep();
    let secs = start.elapsed().as_secs_f64();
    let mut line = serde_json::json!({
        "n_cells": n,
        "n_edges": fit.graph.n_edges(),
        "n_test_edges": fit.split.test.len(),
        "n_links": fit.links.matrix.nnz() / 2,
        "final_loss": records.last().map(|r| r.loss),
        "seconds": secs,
        "out": a.out.display().to_string(),
        "links": tsv.display().to_string(),
    });
    for key in [
        "test_auc",
        "test_ap",
        "test_auc_correlation",
        "test_ap_correlation",
        "val_auc",
        "val_ap",
    ] {
        if let Some(v) = summary.get(key) {
            line[key] = v.clone();
        }
    }
    println!("{line}");
    bars.println(format!(
        "Graph-DiffVAE: {} cells, {} edges ({} held out for testing): test AUC {:.3}, AP {:.3}; \
         {} predicted links; {secs:.1}s; wrote {} and {}",
        n,
        fit.graph.n_edges(),
        fit.split.test.len(),
        fit.test.auc,
        fit.test.ap,
        fit.links.matrix.nnz() / 2,
        a.out.display(),
        tsv.display()
    ));
    Ok(())
}
