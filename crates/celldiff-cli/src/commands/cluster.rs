//! `celldiff cluster`: scanpy's standard clustering workflow (normalize_total → log1p → HVG →
//! scale → PCA → neighbors → Leiden/Louvain, optionally UMAP) on a dataset, written back onto
//! the input as `obs[key]`, `obsm['X_pca']` (and `obsm['X_umap']`) and `uns[key]`.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use clap::Args;

use celldiff::cluster::{ClusterFlavor, ClusterOptions, CommunityOptions, cluster_pipeline};
use celldiff::data::Column;
use celldiff::io;
use celldiff::run::check_overwrite;
use celldiff::umap::UmapOptions;

use super::DataArgs;

#[derive(Args, Debug)]
pub struct ClusterArgs {
    #[command(flatten)]
    pub data: DataArgs,
    /// Output .h5ad: the input (all genes, as read) with obs[KEY], obsm['X_pca'],
    /// obsm['X_umap'] (with --umap) and uns[KEY].
    #[arg(short = 'o', long)]
    pub out: PathBuf,
    /// Modularity resolution (> 0; larger gives more clusters).
    #[arg(long, default_value_t = 1.0, allow_negative_numbers = true)]
    pub resolution: f64,
    /// Algorithm: leiden or louvain.
    #[arg(long, default_value = "leiden")]
    pub flavor: String,
    /// Leiden iterations (scanpy n_iterations; 0 = until the partition is stable).
    #[arg(long, default_value_t = 2)]
    pub n_iterations: usize,
    /// Neighbours per cell, the cell itself included (scanpy n_neighbors).
    #[arg(long, default_value_t = 15)]
    pub n_neighbors: usize,
    /// Principal components.
    #[arg(long, default_value_t = 50)]
    pub n_pcs: usize,
    /// Highly variable genes (seurat flavor) used for the PCA (0 = all genes).
    #[arg(long, default_value_t = 2000)]
    pub n_top_genes: usize,
    /// obs column for the labels (default: the flavor, `leiden` or `louvain`).
    #[arg(long)]
    pub key_added: Option<String>,
    /// Also compute a 2-D UMAP layout (obsm['X_umap'], initialised from the PCA).
    #[arg(long)]
    pub umap: bool,
    /// Seed of the clustering and the layout.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Overwrite an existing output.
    #[arg(long)]
    pub force: bool,
}

pub fn run(a: ClusterArgs, quiet: bool) -> Result<()> {
    check_overwrite(&a.out, a.force)?;
    let flavor: ClusterFlavor = a.flavor.parse().context("--flavor")?;
    if !(a.resolution.is_finite() && a.resolution > 0.0) {
        return Err(celldiff::Error::Param(format!(
            "--resolution must be a positive number, got {}",
            a.resolution
        ))
        .into());
    }
    let key = a
        .key_added
        .clone()
        .unwrap_or_else(|| flavor.name().to_string());
    if key.is_empty() || key.contains('/') {
        return Err(celldiff::Error::Param(format!(
            "--key-added `{key}` must be a non-empty name without `/`"
        ))
        .into());
    }
    let start = Instant::now();
    let mut adata = a.data.read()?;
    let mut opts = ClusterOptions {
        n_pcs: a.n_pcs,
        n_neighbors: a.n_neighbors,
        community: CommunityOptions {
            flavor,
            resolution: a.resolution,
            n_iterations: a.n_iterations,
            seed: a.seed,
        },
        umap: a.umap.then(|| UmapOptions {
            seed: a.seed,
            ..UmapOptions::default()
        }),
        ..ClusterOptions::default()
    };
    opts.preprocess.n_top_genes = (a.n_top_genes > 0).then_some(a.n_top_genes);
    let res = cluster_pipeline(&adata, &opts)
        .with_context(|| format!("clustering {}", a.data.data.display()))?;
    if !quiet {
        for m in &res.preprocess.messages {
            eprintln!("preprocess: {m}");
        }
    }
    let n_clusters = res.n_clusters();
    adata.set_obs(
        &key,
        Column::Categorical {
            codes: res.labels.iter().map(|&l| l as i32).collect(),
            categories: (0..n_clusters).map(|c| c.to_string()).collect(),
        },
    );
    adata.set_obsm("X_pca", res.pca.clone());
    if let Some(u) = &res.umap {
        adata.set_obsm("X_umap", u.clone());
    }
    let n_genes_used = res.preprocess.genes.len();
    adata.uns.insert(
        key.clone(),
        serde_json::json!({
            "params": {
                "flavor": flavor.name(),
                "resolution": a.resolution,
                "n_iterations": a.n_iterations,
                "n_neighbors": a.n_neighbors,
                "n_pcs": res.n_pcs,
                "n_top_genes": a.n_top_genes,
                "n_genes_used": n_genes_used,
                "random_state": a.seed,
                "seed": a.seed,
                "umap": a.umap,
            },
            "n_clusters": n_clusters,
            "cluster_sizes": res.sizes,
        }),
    );
    // write_h5ad writes a temporary file and renames it over the output (atomic).
    io::write_h5ad(&a.out, &adata)?;
    let secs = start.elapsed().as_secs_f64();
    println!(
        "{}",
        serde_json::json!({
            "n_cells": adata.n_obs(),
            "n_genes": adata.n_vars(),
            "n_genes_used": n_genes_used,
            "n_pcs": res.n_pcs,
            "flavor": flavor.name(),
            "key_added": key,
            "resolution": a.resolution,
            "n_clusters": n_clusters,
            "cluster_sizes": res.sizes,
            "umap": a.umap,
            "seconds": secs,
            "out": a.out.display().to_string(),
        })
    );
    if !quiet {
        eprintln!(
            "{} clusters ({}) of {} cells in {secs:.1}s; wrote obs['{key}'], obsm['X_pca']{} \
             to {}",
            n_clusters,
            flavor.name(),
            adata.n_obs(),
            if a.umap { ", obsm['X_umap']" } else { "" },
            a.out.display()
        );
    }
    Ok(())
}
