//! Cell-type identification with DiffVAE (Bica, Andrés-Terré, Cvejic & Liò, *Sci. Rep.* 10,
//! 9790, 2020, "Identifying cell types" and Table 2): a latent model ([`crate::diffvae`]) →
//! a 2-D t-SNE of its latent means → k-means or DBSCAN on the latent or on the t-SNE → for
//! every cluster the latent dimensions that single it out and the decoder's high-weight genes
//! of those dimensions. The paper's clustering benchmark (Table 2) is a protocol of the CLI
//! (`celldiff identify-bench`), built from [`fit_latent`], [`tsne`] and [`run_clustering`].
//!
//! # Method
//! - **t-SNE** ([`tsne`]): Barnes–Hut t-SNE (van der Maaten 2014) of the crate `bhtsne`
//!   0.7.13, Euclidean, perplexity 30 (sklearn's default; lowered to ⌊(n − 1)/3⌋ for small n),
//!   θ = 0.5, 1000 epochs, learning rate `max(n / 12 / 4, 50)`. `bhtsne` has no seed
//!   parameter (its random initialisation draws from the thread RNG), so the initial layout
//!   is drawn here from a seeded N(0, 10⁻⁸ I) (the same distribution) and passed as its
//!   initial embedding. Its vantage-point tree also draws pivots from the thread RNG, which
//!   reorders tied neighbours between runs, so the 3·perplexity exact nearest neighbours
//!   (brute force, ties by index) are computed here and passed in; and it runs in a
//!   one-thread rayon pool because its P normalisation and per-epoch recentring are rayon
//!   float sums whose association order depends on work stealing. A seed then gives one
//!   layout, bit for bit (at the cost of the second core).
//! - **k-means** ([`kmeans`]): `smartcore` 0.7 (k-means++ initialisation, Lloyd iterations on
//!   a BBD tree, at most 300), best of `n_init` seeded runs by inertia (sklearn's
//!   `KMeans(n_init=10)` protocol). `linfa-clustering` was not used: it pins
//!   `sprs = "=0.11.2"` while the workspace resolves sprs 0.11.6.
//! - **DBSCAN** ([`dbscan`]): Ester, Kriegel, Sander & Xu (KDD 1996) with sklearn's semantics
//!   (a core point has ≥ `min_samples` points, itself included, within distance ≤ ε; border
//!   points join the first cluster, in order of the clusters' smallest core point, that
//!   reaches them; the rest is noise). Implemented here with exact brute-force neighbour
//!   scans (rayon): `smartcore`'s DBSCAN keeps its fit labels private and its `predict`
//!   relabels every point by a majority vote over its ε-neighbourhood (noise included), which
//!   differs from DBSCAN's labels for border and noise points. ε can be chosen
//!   automatically ([`auto_dbscan_eps`]): a quantile of the distances to the
//!   `min_samples`-th nearest point (the "k-distance" heuristic of Ester et al.).
//! - **Latent dimensions per cluster** ([`cluster_dimensions`]; paper Fig. 3, published
//!   `evaluation/latent_dim_metrics.py`): for each dimension k, D_k = the cells with
//!   z_k ≥ μ_k + σ_k or z_k ≤ μ_k − σ_k (μ_k, σ_k the mean and standard deviation, ddof 0, of
//!   dimension k over all cells); the share of cluster c in D_k is |D_k ∩ c| / |D_k|; each
//!   cluster's top dimensions are those with the largest share. The published code only
//!   uses the upper tail z_k > μ_k + σ_k.
//! - **High-weight genes** ([`cluster_genes`]; paper "High-weight genes"): ω = W(0)·W(1)·W(2)
//!   `[m, n_genes]`, the product of the decoder's weight matrices ([`LatentFit::gene_weights`],
//!   biases and ReLUs ignored; the decoder has no BatchNorm); for each selected dimension the
//!   genes with the largest |ω| (the published code sorts the signed weight, i.e. only genes
//!   the dimension switches on); per cluster the genes shared among its dimensions are those
//!   in the lists of at least two of them.
//!
//! Cluster labels are renumbered by size, `0` the largest (as [`crate::tl::leiden`]); DBSCAN
//! noise has no label (`None`).
//!
//! # Measured (pbmc68k_reduced raw counts, 700 cells × 765 genes, k-means k = 10 on the latent
//! means vs `bulk_labels`; dev build, 2 shared cores)
//! | latent model (100 epochs, m = 50) | ARI seed 0 | ARI seed 1 |
//! |---|---|---|
//! | DiffVAE, λ = 1 (default) | 0.583 | 0.477 |
//! | DiffVAE, λ = 10 | 0.614 | 0.594 |
//! | DiffVAE, λ = 100 | 0.590 | 0.495 |
//! | DiffVAE, λ = 1000 | 0.453 | 0.601 |
//! | Gaussian VAE (β = 1) | 0.508 | 0.482 |
//! | autoencoder | 0.585 | 0.558 |
//! | PCA | 0.502 | 0.507 |
//!
//! One DiffVAE fit (100 epochs) took 40–60 s, the t-SNE 1–3 s (one thread), k-means
//! (n_init 10) 0.4–1.5 s. DBSCAN's automatic ε: over quantiles 0.3–0.95 of the k-distances
//! (PCA-20, DiffVAE and AE after 20 epochs), 0.8 was best or near-best on the latent means
//! (ARI 0.49–0.52) and 0.9–0.95 on the t-SNE (0.35–0.44; 0.30–0.43 at 0.8); the median (0.5)
//! fragmented the t-SNE into 25–45 clusters. [`DEFAULT_EPS_QUANTILE`] is 0.8.

use std::collections::{HashMap, HashSet};
use std::time::Instant;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::anndata::{AnnData, Column, DenseMatrix};
use crate::diffvae::{LatentFit, LatentModelConfig, fit_latent};
use crate::error::{Error, Result};
use crate::pp::{self, FittedPreprocess};
use crate::tl::dbscan::{DEFAULT_EPS_QUANTILE, auto_dbscan_eps, dbscan};
use crate::tl::kmeans::kmeans;
use crate::tl::leiden::adjusted_rand_index;
use crate::tl::tsne::{TsneOptions, tsne};
use crate::train::Observer;

mod interpret;

pub use interpret::*;

/// How DBSCAN's ε is chosen.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq)]
#[serde(rename_all = "snake_case")]
pub enum DbscanEps {
    /// A fixed radius (in the units of the clustered space).
    Fixed(f64),
    /// [`auto_dbscan_eps`] with this quantile of the k-distances.
    Auto {
        /// Quantile in [0, 1].
        quantile: f64,
    },
}

impl std::str::FromStr for DbscanEps {
    type Err = Error;

    /// Parses a positive number or `auto` ([`DEFAULT_EPS_QUANTILE`]).
    ///
    /// # Errors
    /// [`Error::Param`] for anything else.
    fn from_str(s: &str) -> Result<Self> {
        if s.eq_ignore_ascii_case("auto") {
            return Ok(DbscanEps::Auto {
                quantile: DEFAULT_EPS_QUANTILE,
            });
        }
        match s.parse::<f64>() {
            Ok(e) if e.is_finite() && e > 0.0 => Ok(DbscanEps::Fixed(e)),
            _ => Err(Error::Param(format!(
                "DBSCAN eps must be a positive number or `auto`, got `{s}`"
            ))),
        }
    }
}

/// The clustering algorithm of [`identify`].
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "snake_case")]
pub enum Clustering {
    /// k-means ([`kmeans`]).
    KMeans {
        /// Number of clusters; `None` = the number of distinct labels of
        /// [`IdentifyOptions::labels_key`] (the paper's protocol).
        k: Option<usize>,
        /// Seeded restarts (10).
        n_init: usize,
    },
    /// DBSCAN ([`dbscan`]).
    Dbscan {
        /// ε.
        eps: DbscanEps,
        /// Minimum neighbourhood size, the point itself included (sklearn default 5).
        min_samples: usize,
    },
}

impl Clustering {
    /// `"kmeans"` or `"dbscan"`.
    pub fn name(&self) -> &'static str {
        match self {
            Clustering::KMeans { .. } => "kmeans",
            Clustering::Dbscan { .. } => "dbscan",
        }
    }
}

/// The space the cells are clustered in.
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[serde(rename_all = "snake_case")]
pub enum ClusterSpace {
    /// The latent means `[n_cells, m]`.
    Latent,
    /// Their 2-D t-SNE `[n_cells, 2]`.
    Tsne,
}

impl ClusterSpace {
    /// `"latent"` or `"tsne"`.
    pub fn name(self) -> &'static str {
        match self {
            ClusterSpace::Latent => "latent",
            ClusterSpace::Tsne => "tsne",
        }
    }
}

/// Parameters of [`identify`].
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct IdentifyOptions {
    /// The latent model and its training.
    pub latent: LatentModelConfig,
    /// Highly variable genes (seurat) the model sees; `None` = all genes.
    pub n_top_genes: Option<usize>,
    /// k-means or DBSCAN.
    pub clustering: Clustering,
    /// Cluster the latent means or their t-SNE.
    pub space: ClusterSpace,
    /// The t-SNE (always computed: `obsm['X_tsne']`).
    pub tsne: TsneOptions,
    /// Top latent dimensions reported per cluster (10).
    pub n_top_dimensions: usize,
    /// High-weight genes reported per dimension (20).
    pub n_top_weight_genes: usize,
    /// `obs` column with reference labels: the ARI is computed against it, and it gives k-means
    /// its k when [`Clustering::KMeans::k`] is `None`.
    pub labels_key: Option<String>,
}

impl Default for IdentifyOptions {
    fn default() -> Self {
        Self {
            latent: LatentModelConfig::default(),
            n_top_genes: Some(2000),
            clustering: Clustering::KMeans {
                k: None,
                n_init: 10,
            },
            space: ClusterSpace::Latent,
            tsne: TsneOptions::default(),
            n_top_dimensions: 10,
            n_top_weight_genes: 20,
            labels_key: None,
        }
    }
}

/// Wall-clock seconds of the stages of [`identify`].
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct Timings {
    /// Preprocessing.
    pub preprocess: f64,
    /// Fitting the latent model.
    pub latent: f64,
    /// t-SNE.
    pub tsne: f64,
    /// Clustering (incl. the automatic ε).
    pub clustering: f64,
}

/// What [`identify`] returns.
#[derive(Debug, Clone)]
pub struct Identification {
    /// One label per cell (`0` the largest cluster; `None` = DBSCAN noise).
    pub labels: Vec<Option<usize>>,
    /// Cells per cluster, indexed by label.
    pub sizes: Vec<usize>,
    /// Cells labelled noise.
    pub n_noise: usize,
    /// The k of k-means actually used.
    pub k: Option<usize>,
    /// The ε of DBSCAN actually used.
    pub eps: Option<f64>,
    /// The latent model's output (latent means `[n_cells, m]`, decoder weights, losses).
    pub fit: LatentFit,
    /// The 2-D t-SNE of the latent means `[n_cells, 2]`.
    pub tsne: DenseMatrix,
    /// ω `[m, n_genes]` ([`LatentFit::gene_weights`]).
    pub omega: DenseMatrix,
    /// The model's genes (columns of ω), in order.
    pub genes: Vec<String>,
    /// Top latent dimensions per cluster.
    pub dimensions: Vec<ClusterDimensions>,
    /// High-weight genes per cluster.
    pub weight_genes: Vec<ClusterGenes>,
    /// ARI against `labels_key` (cells with a missing reference label left out; noise counts
    /// as one more cluster, as sklearn's `adjusted_rand_score` on DBSCAN's `-1`).
    pub ari: Option<f64>,
    /// Cells with a reference label (the ARI's sample).
    pub n_labelled: usize,
    /// The fitted preprocessing.
    pub preprocess: FittedPreprocess,
    /// Stage timings.
    pub timings: Timings,
}

impl Identification {
    /// Number of clusters (noise excluded).
    pub fn n_clusters(&self) -> usize {
        self.sizes.len()
    }

    /// The `obs['celldiff_cluster']` column: categories `"0"…"K−1"`, plus `"noise"` last when
    /// DBSCAN left noise.
    pub fn obs_column(&self) -> Column {
        let k = self.n_clusters();
        let mut categories: Vec<String> = (0..k).map(|c| c.to_string()).collect();
        if self.n_noise > 0 {
            categories.push("noise".into());
        }
        Column::Categorical {
            codes: self.labels.iter().map(|l| l.unwrap_or(k) as i32).collect(),
            categories,
        }
    }

    /// `<stem>_dimensions.tsv`: header `cluster rank dimension share n_cluster_extreme
    /// n_extreme` (tab-separated), one row per cluster and top dimension (rank 1 = best).
    pub fn dimensions_tsv(&self) -> String {
        let mut s = String::from("cluster\trank\tdimension\tshare\tn_cluster_extreme\tn_extreme\n");
        for cd in &self.dimensions {
            for (r, d) in cd.top.iter().enumerate() {
                s.push_str(&format!(
                    "{}\t{}\t{}\t{:.6}\t{}\t{}\n",
                    cd.cluster,
                    r + 1,
                    d.dimension,
                    d.share,
                    d.n_in_cluster,
                    d.n_extreme
                ));
            }
        }
        s
    }

    /// `<stem>_genes.tsv`: header `cluster dimension gene weight shared`, one row per cluster,
    /// top dimension and high-weight gene (in rank order); `shared` is `true` when the gene is
    /// in the lists of at least two of the cluster's dimensions.
    pub fn genes_tsv(&self) -> String {
        let mut s = String::from("cluster\tdimension\tgene\tweight\tshared\n");
        for cg in &self.weight_genes {
            let shared: HashSet<&str> = cg.shared.iter().map(|g| g.gene.as_str()).collect();
            for d in &cg.dimensions {
                for g in &d.genes {
                    s.push_str(&format!(
                        "{}\t{}\t{}\t{:.6e}\t{}\n",
                        cg.cluster,
                        d.dimension,
                        g.gene.replace(['\t', '\n', '\r'], " "),
                        g.weight,
                        shared.contains(g.gene.as_str())
                    ));
                }
            }
        }
        s
    }

    /// `uns['celldiff_identify']`: `params` (every option), `n_clusters`, `cluster_sizes`,
    /// `n_noise`, `ari` and `n_labelled` (with a labels key), `final_loss`, `seconds`, and
    /// `clusters/<c>/{size, dimensions, shares, high_weight_genes/<k>, high_weight_weights/<k>,
    /// shared_genes}`.
    pub fn uns(&self, opts: &IdentifyOptions) -> Value {
        let mut clusters = serde_json::Map::new();
        for (cd, cg) in self.dimensions.iter().zip(&self.weight_genes) {
            let mut hw = serde_json::Map::new();
            let mut hww = serde_json::Map::new();
            for d in &cg.dimensions {
                hw.insert(
                    d.dimension.to_string(),
                    d.genes
                        .iter()
                        .map(|g| g.gene.clone())
                        .collect::<Vec<_>>()
                        .into(),
                );
                hww.insert(
                    d.dimension.to_string(),
                    d.genes
                        .iter()
                        .map(|g| g.weight as f64)
                        .collect::<Vec<_>>()
                        .into(),
                );
            }
            clusters.insert(
                cd.cluster.to_string(),
                json!({
                    "size": cd.size,
                    "dimensions": cd.top.iter().map(|d| d.dimension).collect::<Vec<_>>(),
                    "shares": cd.top.iter().map(|d| d.share).collect::<Vec<_>>(),
                    "high_weight_genes": hw,
                    "high_weight_weights": hww,
                    "shared_genes": cg.shared.iter().map(|g| g.gene.clone()).collect::<Vec<_>>(),
                }),
            );
        }
        let l = &opts.latent;
        let (min_samples, eps_quantile, n_init) = match &opts.clustering {
            Clustering::Dbscan { eps, min_samples } => (
                Some(*min_samples),
                match eps {
                    DbscanEps::Auto { quantile } => Some(*quantile),
                    DbscanEps::Fixed(_) => None,
                },
                None,
            ),
            Clustering::KMeans { n_init, .. } => (None, None, Some(*n_init)),
        };
        let last = self.fit.records.last();
        let mut out = json!({
            "params": {
                "latent_model": l.kind.name(),
                "n_latent": self.fit.latent.n_cols,
                "h1": l.h1,
                "h2": l.h2,
                "relu_heads": l.relu_heads,
                "mmd_weight": l.mmd_weight,
                "kl_weight": l.kl_weight,
                "epochs": l.epochs,
                "batch_size": l.batch_size,
                "learning_rate": l.learning_rate,
                "seed": l.seed,
                "n_top_genes": opts.n_top_genes.unwrap_or(0),
                "n_genes_used": self.genes.len(),
                "clustering": opts.clustering.name(),
                "on": opts.space.name(),
                "tsne_perplexity": opts.tsne.perplexity,
                "tsne_theta": opts.tsne.theta,
                "tsne_epochs": opts.tsne.epochs,
                "n_top_dimensions": opts.n_top_dimensions,
                "n_top_weight_genes": opts.n_top_weight_genes,
            },
            "n_clusters": self.n_clusters(),
            "cluster_sizes": self.sizes,
            "n_noise": self.n_noise,
            "seconds": serde_json::to_value(&self.timings).unwrap_or(Value::Null),
            "clusters": clusters,
        });
        let params = out["params"].as_object_mut();
        if let Some(p) = params {
            if let Some(k) = self.k {
                p.insert("n_clusters".into(), k.into());
            }
            if let Some(n) = n_init {
                p.insert("kmeans_n_init".into(), n.into());
            }
            if let Some(e) = self.eps {
                p.insert("dbscan_eps".into(), e.into());
            }
            if let Some(q) = eps_quantile {
                p.insert("dbscan_eps_quantile".into(), q.into());
            }
            if let Some(m) = min_samples {
                p.insert("dbscan_min_samples".into(), m.into());
            }
            if let Some(key) = &opts.labels_key {
                p.insert("labels_key".into(), key.clone().into());
            }
        }
        if let Some(o) = out.as_object_mut() {
            if let Some(a) = self.ari {
                o.insert("ari".into(), a.into());
                o.insert("n_labelled".into(), self.n_labelled.into());
            }
            if let Some(r) = last {
                let mut fl = serde_json::Map::new();
                fl.insert("loss".into(), r.train_loss.into());
                if let Some(v) = r.recon {
                    fl.insert("reconstruction".into(), v.into());
                }
                if let Some(v) = r.kl.or(r.mmd) {
                    fl.insert("regulariser".into(), v.into());
                }
                o.insert("final_loss".into(), Value::Object(fl));
            }
        }
        out
    }
}

/// Reference labels from `obs[key]`: one id per cell in order of the sorted distinct labels,
/// `None` for a missing categorical value; and the distinct labels.
///
/// # Errors
/// [`Error::InvalidInput`] if `obs` has no column `key` (listing the available ones) or it
/// has no non-missing value.
pub fn reference_labels(adata: &AnnData, key: &str) -> Result<(Vec<Option<usize>>, Vec<String>)> {
    let col = adata.obs_column(key)?;
    let missing: Vec<bool> = match col {
        Column::Categorical { codes, .. } => codes.iter().map(|&c| c < 0).collect(),
        _ => vec![false; col.len()],
    };
    let labels = col.labels();
    let mut names: Vec<String> = labels
        .iter()
        .zip(&missing)
        .filter(|(_, m)| !**m)
        .map(|(l, _)| l.clone())
        .collect();
    names.sort();
    names.dedup();
    if names.is_empty() {
        return Err(Error::InvalidInput(format!(
            "obs['{key}'] has no non-missing label"
        )));
    }
    let ids = labels
        .iter()
        .zip(&missing)
        .map(|(l, &m)| if m { None } else { names.binary_search(l).ok() })
        .collect();
    Ok((ids, names))
}

/// ARI of predicted labels (`None` = noise, scored as one more cluster) against reference
/// labels (`None` = missing, those cells left out); returns `(ari, cells compared)`.
///
/// # Errors
/// [`Error::InvalidInput`] if the lengths differ.
pub fn ari_against(pred: &[Option<usize>], truth: &[Option<usize>]) -> Result<(f64, usize)> {
    if pred.len() != truth.len() {
        return Err(Error::InvalidInput(format!(
            "{} predicted labels vs {} reference labels",
            pred.len(),
            truth.len()
        )));
    }
    let noise = pred.iter().flatten().max().map_or(0, |m| m + 1);
    let (a, b): (Vec<usize>, Vec<usize>) = pred
        .iter()
        .zip(truth)
        .filter_map(|(p, t)| t.map(|t| (p.unwrap_or(noise), t)))
        .unzip();
    Ok((adjusted_rand_index(&a, &b)?, a.len()))
}

/// Labels (`None` = noise) with the k of k-means or the ε of DBSCAN that produced them.
pub type Clustered = (Vec<Option<usize>>, Option<usize>, Option<f64>);

/// Clusters `points` (`[n_cells, d]`, latent means or a t-SNE layout) with `clustering`
/// (k = `k_default` when unset; [`kmeans`] or [`dbscan`], seeded by `seed`); returns the
/// labels, the k or ε used.
///
/// # Errors
/// [`Error::Param`] for k-means without k; whatever [`kmeans`], [`dbscan`] or
/// [`auto_dbscan_eps`] return.
pub fn run_clustering(
    points: &DenseMatrix,
    clustering: &Clustering,
    k_default: Option<usize>,
    seed: u64,
) -> Result<Clustered> {
    match clustering {
        Clustering::KMeans { k, n_init } => {
            let k = k.or(k_default).ok_or_else(|| {
                Error::Param(
                    "k-means needs a number of clusters (or a labels key to take it from)".into(),
                )
            })?;
            let l = kmeans(points, k, *n_init, seed)?;
            Ok((l.into_iter().map(Some).collect(), Some(k), None))
        }
        Clustering::Dbscan { eps, min_samples } => {
            let e = match eps {
                DbscanEps::Fixed(e) => *e,
                DbscanEps::Auto { quantile } => auto_dbscan_eps(points, *min_samples, *quantile)?,
            };
            Ok((dbscan(points, e, *min_samples)?, None, Some(e)))
        }
    }
}

/// Checks `c` against `n_cells` before any work: k in 1..=n_cells, `n_init` ≥ 1, ε finite and
/// positive or a quantile in [0, 1], `min_samples` ≥ 1.
///
/// # Errors
/// [`Error::Param`] naming the bad value.
pub fn validate_clustering(c: &Clustering, n_cells: usize) -> Result<()> {
    match c {
        Clustering::KMeans { k, n_init } => {
            if *k == Some(0) {
                return Err(Error::Param(
                    "k-means: the number of clusters must be at least 1".into(),
                ));
            }
            if let Some(k) = k
                && *k > n_cells
            {
                return Err(Error::Param(format!(
                    "k-means: {k} clusters requested for {n_cells} cells"
                )));
            }
            if *n_init == 0 {
                return Err(Error::Param("k-means: n_init must be at least 1".into()));
            }
        }
        Clustering::Dbscan { eps, min_samples } => {
            if *min_samples == 0 {
                return Err(Error::Param(
                    "DBSCAN: min_samples must be at least 1".into(),
                ));
            }
            match eps {
                DbscanEps::Fixed(e) if !(e.is_finite() && *e > 0.0) => {
                    return Err(Error::Param(format!(
                        "DBSCAN: eps must be a positive number, got {e}"
                    )));
                }
                DbscanEps::Auto { quantile } if !(0.0..=1.0).contains(quantile) => {
                    return Err(Error::Param(format!(
                        "DBSCAN ε quantile must be in [0, 1], got {quantile}"
                    )));
                }
                _ => {}
            }
        }
    }
    Ok(())
}

/// DiffVAE cell-type identification on `adata` (`[n_cells, n_genes]`, raw counts or
/// log1p-normalised): [`preprocess_config`](crate::diffvae::preprocess_config) (HVGs, min-max) → [`fit_latent`] → [`tsne`] of
/// the latent means → `opts.clustering` on `opts.space` → [`cluster_dimensions`] on the latent
/// means → ω and [`cluster_genes`] → the ARI against `opts.labels_key`. Everything is seeded
/// from `opts.latent.seed` (the t-SNE from `opts.tsne.seed`, k-means from the latent seed).
///
/// All parameters are checked before the model is trained.
///
/// # Errors
/// - [`Error::Param`]: invalid options (latent size 0, k = 0 or k > n_cells, k-means without
///   k and without a labels key, bad ε/min_samples, t-SNE settings, …).
/// - [`Error::InvalidInput`]: an unknown or empty labels key, data the preprocessing refuses,
///   fewer than 4 cells (t-SNE), too few distinct points for k.
///   A non-finite training loss (lower the learning rate).
/// - [`Error::Internal`]: a numerical failure (backend, smartcore).
pub fn identify(
    adata: &AnnData,
    opts: &IdentifyOptions,
    device: &crate::Device,
    observer: &mut dyn Observer,
) -> Result<Identification> {
    opts.latent.validate()?;
    opts.tsne.validate()?;
    validate_clustering(&opts.clustering, adata.n_obs())?;
    if adata.n_obs() < 4 {
        return Err(Error::InvalidInput(format!(
            "identify needs at least 4 cells, got {}",
            adata.n_obs()
        )));
    }
    let reference = match &opts.labels_key {
        Some(k) => Some(reference_labels(adata, k)?),
        None => None,
    };
    let k_default = reference.as_ref().map(|(_, names)| names.len());
    if let (Clustering::KMeans { k: None, .. }, None) = (&opts.clustering, k_default) {
        return Err(Error::Param(
            "k-means needs a number of clusters: give one, or a labels key to take it from".into(),
        ));
    }
    if let Some(k) = k_default
        && matches!(opts.clustering, Clustering::KMeans { k: None, .. })
        && k > adata.n_obs()
    {
        return Err(Error::Param(format!(
            "k-means: {k} labels but only {} cells",
            adata.n_obs()
        )));
    }
    let mut timings = Timings::default();
    let t = Instant::now();
    let (pp, fitted) = pp::fit_transform(
        adata,
        &crate::diffvae::preprocess_config_for(adata, opts.n_top_genes),
    )?;
    let x = pp.x.to_dense();
    let genes = pp.var_names.clone();
    drop(pp);
    timings.preprocess = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let fit = fit_latent(&x, &opts.latent, device, observer)?;
    drop(x);
    timings.latent = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let layout = tsne(&fit.latent, &opts.tsne)?;
    timings.tsne = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let points = match opts.space {
        ClusterSpace::Latent => &fit.latent,
        ClusterSpace::Tsne => &layout,
    };
    let (labels, k, eps) = run_clustering(points, &opts.clustering, k_default, opts.latent.seed)?;
    timings.clustering = t.elapsed().as_secs_f64();
    let n_clusters = labels.iter().flatten().max().map_or(0, |m| m + 1);
    let mut sizes = vec![0usize; n_clusters];
    for l in labels.iter().flatten() {
        sizes[*l] += 1;
    }
    let n_noise = labels.iter().filter(|l| l.is_none()).count();
    let dimensions = cluster_dimensions(&fit.latent, &labels, n_clusters, opts.n_top_dimensions)?;
    let omega = fit.gene_weights()?;
    let weight_genes = cluster_genes(&omega, &genes, &dimensions, opts.n_top_weight_genes)?;
    let (ari, n_labelled) = match &reference {
        Some((truth, _)) => {
            let (a, n) = ari_against(&labels, truth)?;
            (Some(a), n)
        }
        None => (None, 0),
    };
    Ok(Identification {
        labels,
        sizes,
        n_noise,
        k,
        eps,
        fit,
        tsne: layout,
        omega,
        genes,
        dimensions,
        weight_genes,
        ari,
        n_labelled,
        preprocess: fitted,
        timings,
    })
}

#[cfg(test)]
mod tests;
