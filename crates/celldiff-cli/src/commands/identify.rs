//! `celldiff identify` and `celldiff identify-bench`: DiffVAE cell-type identification (Bica
//! et al., *Sci. Rep.* 2020) and its clustering benchmark (the paper's Table 2). The science is
//! in [`celldiff::diffvae`] and [`celldiff::diffvae::identify`].
//!
//! `identify` writes an annotated copy of the input (everything of it kept as stored, see
//! `celldiff::io::h5ad::write_annotated`) with `obs['celldiff_cluster']`,
//! `obsm['X_celldiff']` (the latent means), `obsm['X_tsne']` and `uns['celldiff_identify']`,
//! plus `<stem>_dimensions.tsv` and `<stem>_genes.tsv` beside it, all or none.
//! `identify-bench` writes `DIR/results.json` and `DIR/table.md`.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use serde_json::json;

use celldiff::backend::DeviceChoice;
use celldiff::diffvae::LatentModelKind;
use celldiff::diffvae::identify::{self, ClusterSpace, Clustering, DbscanEps, IdentifyOptions};
use celldiff::io;
use celldiff::tl::dbscan::DEFAULT_EPS_QUANTILE;

use super::{DataArgs, TrainFlags, Written, device, sibling, write_atomic};
use crate::progress::Bars;
use crate::protocols::identify_bench::{BenchOptions, identify_bench};

/// The two DiffVAE subcommands (flattened into the top-level command list).
#[derive(Subcommand, Debug)]
pub enum IdentifyCommand {
    /// DiffVAE cell-type identification: latent model → t-SNE → k-means/DBSCAN → top latent
    /// dimensions and high-weight genes per cluster (obs['celldiff_cluster']).
    Identify(Box<IdentifyArgs>),
    /// DiffVAE's clustering benchmark (Table 2): ARI of DiffVAE, VAE, AE and PCA × latent
    /// sizes × {k-means, DBSCAN} × {latent, t-SNE} over several seeds.
    IdentifyBench(Box<IdentifyBenchArgs>),
}

#[derive(Args, Debug)]
pub struct IdentifyArgs {
    #[command(flatten)]
    pub data: DataArgs,
    /// Latent model: diffvae, vae (Gaussian VAE), ae (plain autoencoder) or pca.
    #[arg(long, default_value = "diffvae", ignore_case = true)]
    pub latent_model: LatentModelKind,
    /// Latent dimension m.
    #[arg(long, default_value_t = 50, allow_negative_numbers = true, value_parser = super::flags::count(1, super::flags::MAX_LATENT))]
    pub latent: usize,
    #[command(flatten)]
    pub train: TrainFlags,
    /// obs column with reference labels: the ARI is reported against it, and k-means takes its
    /// number of labels as k unless --n-clusters is given.
    #[arg(long)]
    pub labels_key: Option<String>,
    /// k-means with K clusters.
    #[arg(long, conflicts_with = "dbscan_eps", allow_negative_numbers = true, value_parser = super::flags::count(1, 1_000_000))]
    pub n_clusters: Option<usize>,
    /// DBSCAN instead of k-means, with radius E (in the units of the clustered space) or
    /// `auto` (a quantile, --eps-quantile, of the distances to the min_samples-th nearest
    /// cell).
    #[arg(long, value_name = "E|auto", allow_negative_numbers = true)]
    pub dbscan_eps: Option<String>,
    /// DBSCAN's minimum neighbourhood size, the cell itself included (default 5).
    #[arg(long, allow_negative_numbers = true, value_parser = super::flags::count(1, 1_000_000))]
    pub dbscan_min_samples: Option<usize>,
    /// With --dbscan-eps auto: the quantile of the distances to the min_samples-th nearest
    /// cell taken as ε (≈ the fraction of cells that become core points).
    #[arg(long, allow_negative_numbers = true, value_parser = super::flags::open_fraction())]
    pub eps_quantile: Option<f64>,
    /// Cluster the latent means (latent) or their 2-D t-SNE (tsne).
    #[arg(long, default_value = "latent")]
    pub on: ClusterSpace,
    /// Top latent dimensions reported per cluster.
    #[arg(long, default_value_t = 10, allow_negative_numbers = true, value_parser = super::flags::count(1, super::flags::MAX_LATENT))]
    pub top_dimensions: usize,
    /// High-weight genes reported per dimension.
    #[arg(long, default_value_t = 20, allow_negative_numbers = true, value_parser = super::flags::count(1, 1_000_000))]
    pub top_genes: usize,
    /// Seed of the model, the t-SNE and k-means.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Output .h5ad: a copy of the input with obs['celldiff_cluster'], obsm['X_celldiff'],
    /// obsm['X_tsne'] and uns['celldiff_identify'] added, the rest kept as stored (TSVs beside
    /// it: <stem>_dimensions.tsv, <stem>_genes.tsv).
    #[arg(short = 'o', long)]
    pub out: PathBuf,
    /// Overwrite existing outputs.
    #[arg(long)]
    pub force: bool,
}

#[derive(Args, Debug)]
pub struct IdentifyBenchArgs {
    #[command(flatten)]
    pub data: DataArgs,
    /// obs column with reference labels (k-means uses their number as k).
    #[arg(long)]
    pub labels_key: String,
    /// Seeds per configuration (the 50; docs/RESULTS.md used 5 on pbmc68k and
    /// Weinreb, 3 on Kang, for time).
    #[arg(long, default_value_t = 50, allow_negative_numbers = true, value_parser = super::flags::count(1, 100_000))]
    pub repeats: usize,
    /// Latent sizes, comma-separated.
    #[arg(long, default_value = "20,50,100", value_delimiter = ',', allow_negative_numbers = true, value_parser = super::flags::count(1, super::flags::MAX_LATENT))]
    pub latent_sizes: Vec<usize>,
    /// Models, comma-separated (diffvae, vae, ae, pca).
    #[arg(
        long,
        default_value = "diffvae,vae,ae,pca",
        value_delimiter = ',',
        ignore_case = true
    )]
    pub models: Vec<LatentModelKind>,
    #[command(flatten)]
    pub train: TrainFlags,
    /// DBSCAN's minimum neighbourhood size.
    #[arg(long, default_value_t = 5, allow_negative_numbers = true, value_parser = super::flags::count(1, 1_000_000))]
    pub dbscan_min_samples: usize,
    /// DBSCAN's ε: this quantile of the distances to the min_samples-th nearest cell, per
    /// space and run.
    #[arg(long, default_value_t = DEFAULT_EPS_QUANTILE, allow_negative_numbers = true, value_parser = super::flags::open_fraction())]
    pub eps_quantile: f64,
    /// First seed (repeat r uses seed + r).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Output directory (results.json, table.md).
    #[arg(short = 'o', long)]
    pub out: PathBuf,
    /// Overwrite existing outputs.
    #[arg(long)]
    pub force: bool,
}

pub fn run(c: IdentifyCommand, dev: DeviceChoice, quiet: bool) -> Result<()> {
    match c {
        IdentifyCommand::Identify(a) => run_identify(*a, dev, quiet),
        IdentifyCommand::IdentifyBench(a) => run_bench(*a, dev, quiet),
    }
}

/// The options of `identify`, all checked before any data are read.
fn options(a: &IdentifyArgs) -> Result<IdentifyOptions> {
    let kind = a.latent_model;
    let latent = a.train.latent(kind, a.latent, a.seed)?;
    let space = a.on;
    if (a.dbscan_min_samples.is_some() || a.eps_quantile.is_some()) && a.dbscan_eps.is_none() {
        bail!(
            "--dbscan-min-samples / --eps-quantile need --dbscan-eps (DBSCAN); k-means is the \
             default"
        );
    }
    let clustering = match &a.dbscan_eps {
        Some(e) => {
            let mut eps: DbscanEps = e.parse().context("--dbscan-eps")?;
            if let Some(q) = a.eps_quantile {
                if !matches!(eps, DbscanEps::Auto { .. }) {
                    bail!("--eps-quantile only applies to --dbscan-eps auto");
                }
                if !(0.0..=1.0).contains(&q) {
                    bail!("--eps-quantile must be in [0, 1], got {q}");
                }
                eps = DbscanEps::Auto { quantile: q };
            }
            let min_samples = a.dbscan_min_samples.unwrap_or(5);
            if min_samples == 0 {
                return Err(celldiff::Error::Param(
                    "--dbscan-min-samples must be at least 1".into(),
                )
                .into());
            }
            Clustering::Dbscan { eps, min_samples }
        }
        None => {
            if a.n_clusters == Some(0) {
                return Err(celldiff::Error::Param(
                    "--n-clusters must be at least 1 (k-means needs k ≥ 1)".into(),
                )
                .into());
            }
            if a.n_clusters.is_none() && a.labels_key.is_none() {
                bail!(
                    "k-means needs a number of clusters: give --n-clusters K, or --labels-key \
                     KEY to use its number of labels, or --dbscan-eps E|auto for DBSCAN"
                );
            }
            Clustering::KMeans {
                k: a.n_clusters,
                n_init: a.train.kmeans_n_init,
            }
        }
    };
    if a.train.kmeans_n_init == 0 {
        bail!("--kmeans-n-init must be at least 1");
    }
    Ok(IdentifyOptions {
        latent,
        n_top_genes: a.train.n_top_genes(),
        clustering,
        space,
        tsne: a.train.tsne(a.seed)?,
        n_top_dimensions: a.top_dimensions,
        n_top_weight_genes: a.top_genes,
        labels_key: a.labels_key.clone(),
    })
}

fn run_identify(a: IdentifyArgs, dev: DeviceChoice, quiet: bool) -> Result<()> {
    let dims_tsv = sibling(&a.out, "_dimensions.tsv");
    let genes_tsv = sibling(&a.out, "_genes.tsv");
    for p in [&a.out, &dims_tsv, &genes_tsv] {
        super::check_out(p, a.force, &[&a.data.data])?;
    }
    let opts = options(&a)?;
    let device = device(dev)?;
    let mut bars = Bars::new(quiet);
    let start = Instant::now();
    let adata = a.data.read()?;
    if let Some(k) = &a.labels_key {
        adata.obs_column(k).context("--labels-key")?;
    }
    bars.println(format!(
        "read {} cells × {} genes from {}",
        adata.n_obs(),
        adata.n_vars(),
        a.data.data.display()
    ));
    let res = identify::identify(&adata, &opts, &device, &mut bars)
        .with_context(|| format!("identifying cell types in {}", a.data.data.display()))?;
    for m in &res.preprocess.messages {
        bars.println(format!("preprocess: {m}"));
    }
    let n_obs = adata.n_obs();
    drop(adata);
    // An annotated copy of the input: only these four elements are added or replaced.
    let mut ann = io::h5ad::Annotations::default();
    ann.set_obs("celldiff_cluster", res.obs_column());
    ann.set_obsm("X_celldiff", res.fit.latent.clone());
    ann.set_obsm("X_tsne", res.tsne.clone());
    let mut uns = res.uns(&opts);
    if let Some(o) = uns.as_object_mut() {
        o.insert(
            "dimensions_tsv".into(),
            dims_tsv.display().to_string().into(),
        );
        o.insert("genes_tsv".into(), genes_tsv.display().to_string().into());
    }
    ann.uns.insert("celldiff_identify".into(), uns);
    let mut written = Written::default();
    write_atomic(&dims_tsv, a.force, &res.dimensions_tsv())?;
    written.push(&dims_tsv);
    write_atomic(&genes_tsv, a.force, &res.genes_tsv())?;
    written.push(&genes_tsv);
    // A temporary file renamed into place, never over anything that appeared meanwhile.
    super::write_annotated_out(&a.out, a.force, &a.data.data, &ann)?;
    written.keep();
    let secs = start.elapsed().as_secs_f64();
    println!(
        "{}",
        json!({
            "n_cells": n_obs,
            "n_genes_used": res.genes.len(),
            "latent_model": opts.latent.kind.name(),
            "n_latent": res.fit.latent.n_cols,
            "clustering": opts.clustering.name(),
            "on": opts.space.name(),
            "n_clusters": res.n_clusters(),
            "cluster_sizes": res.sizes,
            "n_noise": res.n_noise,
            "k": res.k,
            "eps": res.eps,
            "ari": res.ari,
            "labels_key": opts.labels_key,
            "seconds": secs,
            "timings": res.timings,
            "out": a.out.display().to_string(),
        })
    );
    bars.println(format!(
        "{} clusters ({} on {}{}) of {} cells in {secs:.1}s{}; wrote {}, {}, {}",
        res.n_clusters(),
        opts.clustering.name(),
        opts.space.name(),
        if res.n_noise > 0 {
            format!(", {} noise", res.n_noise)
        } else {
            String::new()
        },
        n_obs,
        res.ari
            .map(|v| format!(
                ", ARI vs obs['{}'] = {v:.3}",
                a.labels_key.as_deref().unwrap_or("")
            ))
            .unwrap_or_default(),
        a.out.display(),
        dims_tsv.display(),
        genes_tsv.display()
    ));
    Ok(())
}

fn run_bench(a: IdentifyBenchArgs, dev: DeviceChoice, quiet: bool) -> Result<()> {
    let outputs = ["results.json", "table.md"].map(|f| a.out.join(f));
    for p in &outputs {
        super::check_out(p, a.force, &[&a.data.data])?;
    }
    let models = a.models.clone();
    if a.repeats == 0 {
        bail!("--repeats must be at least 1");
    }
    if a.latent_sizes.is_empty() || a.latent_sizes.contains(&0) {
        bail!("--latent-sizes must be positive, got {:?}", a.latent_sizes);
    }
    if !(0.0..=1.0).contains(&a.eps_quantile) {
        bail!("--eps-quantile must be in [0, 1], got {}", a.eps_quantile);
    }
    let opts = BenchOptions {
        labels_key: a.labels_key.clone(),
        repeats: a.repeats,
        latent_sizes: a.latent_sizes.clone(),
        models,
        latent: a
            .train
            .latent(LatentModelKind::DiffVae, a.latent_sizes[0], a.seed)?,
        n_top_genes: a.train.n_top_genes(),
        min_samples: a.dbscan_min_samples,
        eps_quantile: a.eps_quantile,
        n_init: a.train.kmeans_n_init,
        tsne: a.train.tsne(a.seed)?,
        seed: a.seed,
    };
    let device = device(dev)?;
    let mut bars = Bars::new(quiet);
    let adata = a.data.read()?;
    adata.obs_column(&a.labels_key).context("--labels-key")?;
    let mut lines = Vec::new();
    let res = {
        let mut progress = |l: &str| {
            if !quiet {
                eprintln!("{l}");
            }
            lines.push(l.to_string());
        };
        identify_bench(&adata, &opts, &device, &mut bars, &mut progress)
            .with_context(|| format!("identify-bench on {}", a.data.data.display()))?
    };
    let md = res.markdown();
    let mut doc = serde_json::to_value(&res)?;
    if let Some(o) = doc.as_object_mut() {
        o.insert("data".into(), a.data.data.display().to_string().into());
        o.insert("log".into(), lines.into());
    }
    if let Some(p) = outputs[0].parent() {
        std::fs::create_dir_all(p).with_context(|| format!("creating {}", p.display()))?;
    }
    let mut written = Written::default();
    write_atomic(&outputs[1], a.force, &md)?;
    written.push(&outputs[1]);
    write_atomic(&outputs[0], a.force, &serde_json::to_string_pretty(&doc)?)?;
    written.keep();
    print!("{md}");
    bars.println(format!(
        "wrote {} and {} in {:.1}s",
        outputs[0].display(),
        outputs[1].display(),
        res.seconds
    ));
    Ok(())
}
