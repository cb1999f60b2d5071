//! `celldiff cluster`: scanpy's standard clustering workflow (normalize_total → log1p → HVG →
//! scale → PCA → neighbors → Leiden/Louvain, optionally UMAP) on a dataset, written back onto
//! an annotated copy of the input (`celldiff::io::h5ad::write_annotated`: everything of the
//! input is kept as stored) with `obs[key]`, `obsm['X_pca']` (and `obsm['X_umap']`),
//! scanpy's neighbourhood graph (`obsp['connectivities']`, `obsp['distances']`,
//! `uns['neighbors']`), `uns['pca']` and `uns[key]`.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use clap::Args;

use celldiff::tl::leiden::{
    ClusterFlavor, ClusterOptions, CommunityOptions, cluster_annotations, cluster_pipeline,
};
use celldiff::tl::umap::UmapOptions;

use super::DataArgs;

#[derive(Args, Debug)]
pub struct ClusterArgs {
    #[command(flatten)]
    pub data: DataArgs,
    /// Output .h5ad: a copy of the input with obs['KEY'], obsm['X_pca'], obsm['X_umap'] (with
    /// --umap), obsp['connectivities'], obsp['distances'], uns['neighbors'] (as
    /// sc.pp.neighbors), uns['pca'] and uns['KEY'] added or replaced; everything else (X and its
    /// dtype, var, layers, raw, other obs columns, obsm, obsp, uns) is kept as stored.
    #[arg(short = 'o', long)]
    pub out: PathBuf,
    /// Modularity resolution (> 0; larger gives more clusters).
    #[arg(long, default_value_t = 1.0, allow_negative_numbers = true, value_parser = super::flags::positive())]
    pub resolution: f64,
    /// Algorithm: leiden or louvain.
    #[arg(long, default_value = "leiden")]
    pub flavor: ClusterFlavor,
    /// Leiden iterations (scanpy n_iterations; 0 = until the partition is stable).
    #[arg(long, default_value_t = 2, allow_negative_numbers = true, value_parser = super::flags::count(0, 100_000))]
    pub n_iterations: usize,
    /// Neighbours per cell, the cell itself included (scanpy n_neighbors).
    #[arg(long, default_value_t = 15, allow_negative_numbers = true, value_parser = super::flags::count(1, 10_000))]
    pub n_neighbors: usize,
    /// Principal components.
    #[arg(long, default_value_t = 50, allow_negative_numbers = true, value_parser = super::flags::count(1, 10_000))]
    pub n_pcs: usize,
    /// Highly variable genes (seurat flavor) used for the PCA (0 = all genes).
    #[arg(long, default_value_t = 2000, allow_negative_numbers = true, value_parser = super::flags::count(0, usize::MAX))]
    pub n_top_genes: usize,
    /// obs column for the labels (default: the flavor, `leiden` or `louvain`).
    #[arg(long)]
    pub key_added: Option<String>,
    /// uns key of the neighbourhood graph, as scanpy's `pp.neighbors(key_added=...)`: the
    /// default writes uns['neighbors'], obsp['connectivities'] and obsp['distances']; NAME
    /// writes uns['NAME'], obsp['NAME_connectivities'] and obsp['NAME_distances'].
    #[arg(long)]
    pub neighbors_key: Option<String>,
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
    super::check_out(&a.out, a.force, &[&a.data.data])?;
    let flavor = a.flavor;
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
    if let Some(k) = &a.neighbors_key
        && (k.is_empty() || k.contains('/') || k == ".")
    {
        return Err(celldiff::Error::Param(format!(
            "--neighbors-key `{k}` must be a non-empty name without `/`"
        ))
        .into());
    }
    if key.is_empty() || key.contains('/') {
        return Err(celldiff::Error::Param(format!(
            "--key-added `{key}` must be a non-empty name without `/`"
        ))
        .into());
    }
    let start = Instant::now();
    let adata = a.data.read()?;
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
    let n_obs = adata.n_obs();
    let n_vars = adata.n_vars();
    drop(adata);
    // An annotated copy of the input (X, var, layers, raw, ... kept as stored, also with
    // --use-raw/--layer, which only choose what is read).
    let ann = cluster_annotations(&res, &opts, &key, a.neighbors_key.as_deref(), a.n_top_genes);
    let n_genes_used = res.preprocess.genes.len();
    // The keys the graph went to (for the message).
    let nb = celldiff::tl::neighbors::scanpy_neighbors_uns(
        a.neighbors_key.as_deref(),
        a.n_neighbors,
        "X_pca",
        res.n_pcs,
    );
    // A temporary file renamed into place, never over anything that appeared meanwhile.
    super::write_annotated_out(&a.out, a.force, &a.data.data, &ann)?;
    let secs = start.elapsed().as_secs_f64();
    println!(
        "{}",
        serde_json::json!({
            "n_cells": n_obs,
            "n_genes": n_vars,
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
            "{} clusters ({}) of {} cells in {secs:.1}s; wrote obs['{key}'], obsm['X_pca']{}, \
             obsp['{}'], obsp['{}'], uns['{}'] to {}",
            n_clusters,
            flavor.name(),
            n_obs,
            if a.umap { ", obsm['X_umap']" } else { "" },
            nb.connectivities_key,
            nb.distances_key,
            nb.key,
            a.out.display()
        );
    }
    Ok(())
}
