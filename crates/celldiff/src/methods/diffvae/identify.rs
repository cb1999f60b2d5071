//! Cell-type identification with DiffVAE (Bica, Andrés-Terré, Cvejic & Liò, *Sci. Rep.* 10,
//! 9790, 2020, "Identifying cell types" and Table 2): a latent model ([`crate::diffvae`]) →
//! a 2-D t-SNE of its latent means → k-means or DBSCAN on the latent or on the t-SNE → for
//! every cluster the latent dimensions that single it out and the decoder's high-weight genes
//! of those dimensions; and the paper's clustering benchmark ([`identify_bench`]).
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
use crate::diffvae::{LatentFit, LatentModelConfig, LatentModelKind, fit_latent};
use crate::error::{Error, Result};
use crate::pp::{self, FittedPreprocess};
use crate::tl::dbscan::{DEFAULT_EPS_QUANTILE, auto_dbscan_eps, dbscan};
use crate::tl::kmeans::kmeans;
use crate::tl::leiden::adjusted_rand_index;
use crate::tl::tsne::{TsneOptions, tsne};
use crate::train::Observer;

/// One latent dimension's association with a cluster.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct DimensionShare {
    /// Latent dimension k (0-based).
    pub dimension: usize,
    /// |D_k ∩ c| / |D_k| (0 when D_k is empty).
    pub share: f64,
    /// |D_k ∩ c|: the cluster's cells beyond one standard deviation on dimension k.
    pub n_in_cluster: usize,
    /// |D_k|: all cells beyond one standard deviation on dimension k (noise included).
    pub n_extreme: usize,
}

/// The top latent dimensions of one cluster.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct ClusterDimensions {
    /// Cluster label.
    pub cluster: usize,
    /// Cells in the cluster.
    pub size: usize,
    /// The dimensions with the largest share, best first (ties: the lower dimension).
    pub top: Vec<DimensionShare>,
}

/// For each cluster `0..n_clusters` of `labels` (one per row of `latent`; `None` = noise),
/// the `n_top` latent dimensions with the largest share |D_k ∩ c| / |D_k| (module docs).
/// A dimension with σ_k = 0 (e.g. a dead ReLU unit) has an empty D_k and share 0.
///
/// # Shapes
/// `latent`: `[n_cells, m]`; `labels`: `[n_cells]`.
///
/// # Errors
/// [`Error::InvalidInput`] if `labels` and `latent` differ in length or a label is
/// `≥ n_clusters`.
pub fn cluster_dimensions(
    latent: &DenseMatrix,
    labels: &[Option<usize>],
    n_clusters: usize,
    n_top: usize,
) -> Result<Vec<ClusterDimensions>> {
    let (n, m) = (latent.n_rows, latent.n_cols);
    if labels.len() != n {
        return Err(Error::InvalidInput(format!(
            "{} labels for {n} cells",
            labels.len()
        )));
    }
    if let Some(l) = labels.iter().flatten().find(|&&l| l >= n_clusters) {
        return Err(Error::InvalidInput(format!(
            "label {l} out of range for {n_clusters} clusters"
        )));
    }
    let mut sizes = vec![0usize; n_clusters];
    for l in labels.iter().flatten() {
        sizes[*l] += 1;
    }
    // counts[k][c] = |D_k ∩ c|, totals[k] = |D_k|.
    let mut counts = vec![vec![0usize; n_clusters]; m];
    let mut totals = vec![0usize; m];
    for k in 0..m {
        let col: Vec<f64> = (0..n).map(|i| latent.row(i)[k] as f64).collect();
        let mean = col.iter().sum::<f64>() / n.max(1) as f64;
        let sd = (col.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n.max(1) as f64).sqrt();
        if !(sd > 0.0 && sd.is_finite()) {
            continue;
        }
        for (i, &v) in col.iter().enumerate() {
            if v >= mean + sd || v <= mean - sd {
                totals[k] += 1;
                if let Some(c) = labels[i] {
                    counts[k][c] += 1;
                }
            }
        }
    }
    Ok((0..n_clusters)
        .map(|c| {
            let mut dims: Vec<DimensionShare> = (0..m)
                .map(|k| DimensionShare {
                    dimension: k,
                    share: if totals[k] == 0 {
                        0.0
                    } else {
                        counts[k][c] as f64 / totals[k] as f64
                    },
                    n_in_cluster: counts[k][c],
                    n_extreme: totals[k],
                })
                .collect();
            dims.sort_by(|a, b| {
                b.share
                    .total_cmp(&a.share)
                    .then(a.dimension.cmp(&b.dimension))
            });
            dims.truncate(n_top);
            ClusterDimensions {
                cluster: c,
                size: sizes[c],
                top: dims,
            }
        })
        .collect())
}

/// A gene and its weight ω_{k,g} for one latent dimension.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct GeneWeight {
    /// Gene name.
    pub gene: String,
    /// ω_{k,g} (signed; genes are ranked by |ω|).
    pub weight: f32,
}

/// The high-weight genes of one latent dimension.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct DimensionGenes {
    /// Latent dimension k.
    pub dimension: usize,
    /// The genes with the largest |ω_k|, best first (ties: the earlier gene).
    pub genes: Vec<GeneWeight>,
}

/// A gene in the high-weight lists of several of a cluster's dimensions.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct SharedGene {
    /// Gene name.
    pub gene: String,
    /// In how many of the cluster's dimension lists it appears (≥ 2).
    pub n_dimensions: usize,
}

/// The high-weight genes of one cluster's top dimensions.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct ClusterGenes {
    /// Cluster label.
    pub cluster: usize,
    /// One list per top dimension, in the order of [`ClusterDimensions::top`].
    pub dimensions: Vec<DimensionGenes>,
    /// Genes in the lists of at least two of those dimensions, most frequent first (ties: the
    /// larger |ω| in any of the lists, then the name).
    pub shared: Vec<SharedGene>,
}

/// The `n` genes with the largest |ω_{k,g}| of row `dimension` of `omega` (`[m, n_genes]`).
///
/// # Errors
/// [`Error::InvalidInput`] if `dimension ≥ m` or `genes` does not have one name per column.
pub fn top_genes(
    omega: &DenseMatrix,
    genes: &[String],
    dimension: usize,
    n: usize,
) -> Result<Vec<GeneWeight>> {
    if genes.len() != omega.n_cols {
        return Err(Error::InvalidInput(format!(
            "{} gene names for a weight matrix with {} genes",
            genes.len(),
            omega.n_cols
        )));
    }
    if dimension >= omega.n_rows {
        return Err(Error::InvalidInput(format!(
            "latent dimension {dimension} out of range ({} dimensions)",
            omega.n_rows
        )));
    }
    let w = omega.row(dimension);
    let mut idx: Vec<usize> = (0..w.len()).collect();
    idx.sort_by(|&a, &b| w[b].abs().total_cmp(&w[a].abs()).then(a.cmp(&b)));
    Ok(idx
        .into_iter()
        .take(n)
        .map(|g| GeneWeight {
            gene: genes[g].clone(),
            weight: w[g],
        })
        .collect())
}

/// For each cluster of `dims`, the top `n_genes` genes by |ω| of each of its top dimensions
/// and the genes shared by at least two of those lists (module docs).
///
/// # Shapes
/// `omega`: `[m, n_genes]`; `genes`: `[n_genes]`.
///
/// # Errors
/// As [`top_genes`].
pub fn cluster_genes(
    omega: &DenseMatrix,
    genes: &[String],
    dims: &[ClusterDimensions],
    n_genes: usize,
) -> Result<Vec<ClusterGenes>> {
    dims.iter()
        .map(|cd| {
            let dimensions = cd
                .top
                .iter()
                .map(|d| {
                    Ok(DimensionGenes {
                        dimension: d.dimension,
                        genes: top_genes(omega, genes, d.dimension, n_genes)?,
                    })
                })
                .collect::<Result<Vec<_>>>()?;
            let mut count: HashMap<String, (usize, f32)> = HashMap::new();
            for d in &dimensions {
                for g in &d.genes {
                    let e = count.entry(g.gene.clone()).or_insert((0, 0.0));
                    e.0 += 1;
                    e.1 = e.1.max(g.weight.abs());
                }
            }
            let mut shared: Vec<(String, usize, f32)> = count
                .into_iter()
                .filter(|(_, (c, _))| *c >= 2)
                .map(|(g, (c, w))| (g, c, w))
                .collect();
            shared.sort_by(|a, b| b.1.cmp(&a.1).then(b.2.total_cmp(&a.2)).then(a.0.cmp(&b.0)));
            Ok(ClusterGenes {
                cluster: cd.cluster,
                dimensions,
                shared: shared
                    .into_iter()
                    .map(|(g, c, _)| SharedGene {
                        gene: g,
                        n_dimensions: c,
                    })
                    .collect(),
            })
        })
        .collect()
}

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

impl std::str::FromStr for ClusterSpace {
    type Err = Error;

    /// Parses `latent` or `tsne`.
    ///
    /// # Errors
    /// [`Error::Param`] for anything else.
    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "latent" => Ok(ClusterSpace::Latent),
            "tsne" | "t-sne" => Ok(ClusterSpace::Tsne),
            _ => Err(Error::Param(format!(
                "unknown clustering space `{s}` (expected latent or tsne)"
            ))),
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
type Clustered = (Vec<Option<usize>>, Option<usize>, Option<f64>);

/// Clusters `points` with `clustering` (k = `k_default` when unset); returns the labels, the
/// k or ε used.
fn run_clustering(
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

fn validate_clustering(c: &Clustering, n_cells: usize) -> Result<()> {
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

/// Parameters of [`identify_bench`] (DiffVAE's Table 2).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct BenchOptions {
    /// `obs` column with the reference labels (k-means uses their number as k).
    pub labels_key: String,
    /// Seeds per configuration (`seed, seed + 1, …`): model weights, t-SNE, k-means.
    pub repeats: usize,
    /// Latent sizes m (paper: 20, 50, 100).
    pub latent_sizes: Vec<usize>,
    /// Models (paper: all four).
    pub models: Vec<LatentModelKind>,
    /// Everything else about the models (its `kind`, `n_latent` and `seed` are overridden).
    pub latent: LatentModelConfig,
    /// Highly variable genes; `None` = all.
    pub n_top_genes: Option<usize>,
    /// DBSCAN's min_samples (5).
    pub min_samples: usize,
    /// DBSCAN's ε: the quantile of the k-distances ([`auto_dbscan_eps`]), chosen per space and
    /// run because the latent spaces of the models have different scales.
    pub eps_quantile: f64,
    /// k-means restarts.
    pub n_init: usize,
    /// The t-SNE (its seed is overridden per repeat).
    pub tsne: TsneOptions,
    /// First seed.
    pub seed: u64,
}

impl Default for BenchOptions {
    fn default() -> Self {
        Self {
            labels_key: String::new(),
            repeats: 50,
            latent_sizes: vec![20, 50, 100],
            models: LatentModelKind::ALL.to_vec(),
            latent: LatentModelConfig::default(),
            n_top_genes: Some(2000),
            min_samples: 5,
            eps_quantile: DEFAULT_EPS_QUANTILE,
            n_init: 10,
            tsne: TsneOptions::default(),
            seed: 0,
        }
    }
}

/// One cell of the benchmark table: a model, a latent size, a clustering and a space.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct BenchCell {
    /// Latent model.
    pub model: LatentModelKind,
    /// Latent size m (as requested; PCA may have used fewer components).
    pub n_latent: usize,
    /// `"kmeans"` or `"dbscan"`.
    pub clustering: String,
    /// `"latent"` or `"tsne"`.
    pub space: String,
    /// ARI of each repeat.
    pub ari: Vec<f64>,
    /// Mean ARI.
    pub mean: f64,
    /// Sample standard deviation (ddof 1) of the ARIs; `None` for one repeat.
    pub sd: Option<f64>,
    /// Clusters found in each repeat (noise excluded).
    pub n_clusters: Vec<usize>,
    /// DBSCAN: ε used in each repeat.
    pub eps: Vec<f64>,
}

/// What [`identify_bench`] returns (serialised as `results.json`).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct BenchResult {
    /// The options.
    pub options: BenchOptions,
    /// Cells and genes the models saw.
    pub n_cells: usize,
    /// Genes after preprocessing.
    pub n_genes: usize,
    /// Distinct reference labels (k of k-means).
    pub n_labels: usize,
    /// One entry per model × m × clustering × space.
    pub cells: Vec<BenchCell>,
    /// Seconds spent per model (training + t-SNE + clustering, all m and repeats).
    pub seconds_per_model: Vec<(LatentModelKind, f64)>,
    /// Total seconds.
    pub seconds: f64,
}

/// DiffVAE's clustering benchmark (Table 2): for every model of `opts.models`, latent size of
/// `opts.latent_sizes` and repeat, fit the model on the preprocessed `adata`, t-SNE its latent
/// means, and score k-means (k = number of reference labels) and DBSCAN (automatic ε) on the
/// latent means and on the t-SNE by ARI against `opts.labels_key`. `progress` receives one line
/// per finished fit.
///
/// # Errors
/// [`Error::Param`] for an empty model/size list, 0 repeats or invalid model options;
/// everything [`identify`] can return.
pub fn identify_bench(
    adata: &AnnData,
    opts: &BenchOptions,
    device: &crate::Device,
    observer: &mut dyn Observer,
    progress: &mut dyn FnMut(&str),
) -> Result<BenchResult> {
    if opts.repeats == 0 || opts.latent_sizes.is_empty() || opts.models.is_empty() {
        return Err(Error::Param(
            "identify-bench: need at least one repeat, one latent size and one model".into(),
        ));
    }
    if let Some(&m) = opts.latent_sizes.iter().find(|&&m| m == 0) {
        return Err(Error::Param(format!(
            "identify-bench: latent size {m} must be ≥ 1"
        )));
    }
    opts.latent.validate()?;
    opts.tsne.validate()?;
    validate_clustering(
        &Clustering::Dbscan {
            eps: DbscanEps::Auto {
                quantile: opts.eps_quantile,
            },
            min_samples: opts.min_samples,
        },
        adata.n_obs(),
    )?;
    let (truth, names) = reference_labels(adata, &opts.labels_key)?;
    let k = names.len();
    validate_clustering(
        &Clustering::KMeans {
            k: Some(k),
            n_init: opts.n_init,
        },
        adata.n_obs(),
    )?;
    let start = Instant::now();
    let (pp, _) = pp::fit_transform(
        adata,
        &crate::diffvae::preprocess_config_for(adata, opts.n_top_genes),
    )?;
    let x = pp.x.to_dense();
    drop(pp);
    let mut cells: Vec<BenchCell> = Vec::new();
    let mut per_model = Vec::new();
    for &model in &opts.models {
        let t_model = Instant::now();
        for &m in &opts.latent_sizes {
            let base = cells.len();
            for (clustering, space) in [
                ("kmeans", ClusterSpace::Latent),
                ("kmeans", ClusterSpace::Tsne),
                ("dbscan", ClusterSpace::Latent),
                ("dbscan", ClusterSpace::Tsne),
            ] {
                cells.push(BenchCell {
                    model,
                    n_latent: m,
                    clustering: clustering.into(),
                    space: space.name().into(),
                    ari: Vec::new(),
                    mean: f64::NAN,
                    sd: None,
                    n_clusters: Vec::new(),
                    eps: Vec::new(),
                });
            }
            for r in 0..opts.repeats as u64 {
                let seed = opts.seed.wrapping_add(r);
                let cfg = LatentModelConfig {
                    kind: model,
                    n_latent: m,
                    seed,
                    ..opts.latent.clone()
                };
                let t = Instant::now();
                let fit = fit_latent(&x, &cfg, device, observer)?;
                let layout = tsne(
                    &fit.latent,
                    &TsneOptions {
                        seed,
                        ..opts.tsne.clone()
                    },
                )?;
                let mut line = format!("{model} m={m} seed={seed}:");
                for (j, cell) in cells[base..].iter_mut().enumerate() {
                    let points = if j % 2 == 0 { &fit.latent } else { &layout };
                    let clustering = if j < 2 {
                        Clustering::KMeans {
                            k: Some(k),
                            n_init: opts.n_init,
                        }
                    } else {
                        Clustering::Dbscan {
                            eps: DbscanEps::Auto {
                                quantile: opts.eps_quantile,
                            },
                            min_samples: opts.min_samples,
                        }
                    };
                    let (labels, _, eps) = run_clustering(points, &clustering, None, seed)?;
                    let (ari, _) = ari_against(&labels, &truth)?;
                    cell.ari.push(ari);
                    cell.n_clusters
                        .push(labels.iter().flatten().max().map_or(0, |m| m + 1));
                    if let Some(e) = eps {
                        cell.eps.push(e);
                    }
                    line.push_str(&format!(" {}/{} {ari:.3}", cell.clustering, cell.space));
                }
                line.push_str(&format!(" ({:.1}s)", t.elapsed().as_secs_f64()));
                progress(&line);
            }
            for cell in &mut cells[base..] {
                let n = cell.ari.len() as f64;
                cell.mean = cell.ari.iter().sum::<f64>() / n;
                cell.sd = (cell.ari.len() >= 2).then(|| {
                    (cell
                        .ari
                        .iter()
                        .map(|a| (a - cell.mean).powi(2))
                        .sum::<f64>()
                        / (n - 1.0))
                        .sqrt()
                });
            }
        }
        per_model.push((model, t_model.elapsed().as_secs_f64()));
    }
    Ok(BenchResult {
        options: opts.clone(),
        n_cells: x.n_rows,
        n_genes: x.n_cols,
        n_labels: k,
        cells,
        seconds_per_model: per_model,
        seconds: start.elapsed().as_secs_f64(),
    })
}

impl BenchResult {
    /// The table as Markdown: one row per model and m, columns k-means/DBSCAN × latent/t-SNE,
    /// each `mean ± sd` of the ARI (the paper's Table 2 layout).
    pub fn markdown(&self) -> String {
        let mut s = format!(
            "ARI against obs['{}'] ({} labels; {} cells × {} genes), mean ± sd over {} seed(s); \
             k-means k = {}, DBSCAN min_samples = {} with ε the {:.2} quantile of the \
             k-distances.\n\n\
             | model | m | k-means latent | k-means t-SNE | DBSCAN latent | DBSCAN t-SNE |\n\
             |---|---|---|---|---|---|\n",
            self.options.labels_key,
            self.n_labels,
            self.n_cells,
            self.n_genes,
            self.options.repeats,
            self.n_labels,
            self.options.min_samples,
            self.options.eps_quantile,
        );
        let find = |model: LatentModelKind, m: usize, c: &str, sp: &str| {
            self.cells
                .iter()
                .find(|x| x.model == model && x.n_latent == m && x.clustering == c && x.space == sp)
                .map_or("–".to_string(), |x| match x.sd {
                    Some(sd) => format!("{:.3} ± {:.3}", x.mean, sd),
                    None => format!("{:.3}", x.mean),
                })
        };
        for &model in &self.options.models {
            for &m in &self.options.latent_sizes {
                s.push_str(&format!(
                    "| {model} | {m} | {} | {} | {} | {} |\n",
                    find(model, m, "kmeans", "latent"),
                    find(model, m, "kmeans", "tsne"),
                    find(model, m, "dbscan", "latent"),
                    find(model, m, "dbscan", "tsne"),
                ));
            }
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::{ReadOptions, read};
    use crate::train::Silent;

    fn matrix(rows: &[&[f32]]) -> DenseMatrix {
        let d = rows[0].len();
        DenseMatrix::from_vec(
            rows.len(),
            d,
            rows.iter().flat_map(|r| r.to_vec()).collect(),
        )
        .unwrap()
    }

    #[test]
    fn cluster_dimensions_counts_cells_beyond_one_sd() {
        // Dimension 0: cells 0 and 1 (cluster 0) are extreme; dimension 1: cells 2 (cluster 1)
        // and 5 (noise); dimension 2 is constant (σ = 0: no extreme cells).
        let z = matrix(&[
            &[5.0, 0.0, 1.0],
            &[-5.0, 0.0, 1.0],
            &[0.0, 5.0, 1.0],
            &[0.0, 0.0, 1.0],
            &[0.0, 0.0, 1.0],
            &[0.0, -5.0, 1.0],
        ]);
        let labels = [Some(0), Some(0), Some(1), Some(1), Some(0), None];
        let d = cluster_dimensions(&z, &labels, 2, 2).unwrap();
        assert_eq!(d.len(), 2);
        assert_eq!((d[0].cluster, d[0].size), (0, 3));
        assert_eq!(
            d[0].top[0],
            DimensionShare {
                dimension: 0,
                share: 1.0,
                n_in_cluster: 2,
                n_extreme: 2
            }
        );
        // Ties (share 0 on dimensions 1 and 2) go to the lower dimension.
        assert_eq!(d[0].top[1].dimension, 1);
        assert_eq!(d[1].top[0].dimension, 1);
        assert_eq!(d[1].top[0].share, 0.5);
        assert_eq!(d[1].top[0].n_extreme, 2);
        assert!(matches!(
            cluster_dimensions(&z, &labels[..3], 2, 2),
            Err(Error::InvalidInput(_))
        ));
        assert!(matches!(
            cluster_dimensions(&z, &labels, 1, 2),
            Err(Error::InvalidInput(_))
        ));
    }

    #[test]
    fn high_weight_genes_rank_by_absolute_weight_and_find_shared_genes() {
        let omega = matrix(&[&[0.1, -3.0, 2.0, 0.0], &[2.5, 0.2, -2.0, 0.1]]);
        let genes: Vec<String> = ["A", "B", "C", "D"].iter().map(|s| s.to_string()).collect();
        let t = top_genes(&omega, &genes, 0, 2).unwrap();
        assert_eq!(
            t,
            vec![
                GeneWeight {
                    gene: "B".into(),
                    weight: -3.0
                },
                GeneWeight {
                    gene: "C".into(),
                    weight: 2.0
                }
            ]
        );
        let dims = vec![ClusterDimensions {
            cluster: 0,
            size: 3,
            top: [0, 1]
                .iter()
                .map(|&k| DimensionShare {
                    dimension: k,
                    share: 0.5,
                    n_in_cluster: 1,
                    n_extreme: 2,
                })
                .collect(),
        }];
        let g = cluster_genes(&omega, &genes, &dims, 2).unwrap();
        assert_eq!(g[0].dimensions[1].genes[0].gene, "A");
        assert_eq!(
            g[0].shared,
            vec![SharedGene {
                gene: "C".into(),
                n_dimensions: 2
            }]
        );
        assert!(matches!(
            top_genes(&omega, &genes, 2, 1),
            Err(Error::InvalidInput(_))
        ));
        assert!(matches!(
            top_genes(&omega, &genes[..3], 0, 1),
            Err(Error::InvalidInput(_))
        ));
    }

    #[test]
    fn ari_scores_noise_as_a_cluster_and_skips_missing_references() {
        let pred = [Some(0), Some(0), Some(1), Some(1), None, None];
        let truth = [Some(0), Some(0), Some(1), Some(1), Some(2), Some(2)];
        assert_eq!(ari_against(&pred, &truth).unwrap(), (1.0, 6));
        let truth = [Some(0), Some(0), Some(1), Some(1), None, None];
        assert_eq!(ari_against(&pred, &truth).unwrap(), (1.0, 4));
        assert!(matches!(
            ari_against(&pred, &truth[..2]),
            Err(Error::InvalidInput(_))
        ));
        assert_eq!(
            "auto".parse::<DbscanEps>().unwrap(),
            DbscanEps::Auto {
                quantile: DEFAULT_EPS_QUANTILE
            }
        );
        assert_eq!("0.5".parse::<DbscanEps>().unwrap(), DbscanEps::Fixed(0.5));
        assert!("-1".parse::<DbscanEps>().is_err());
        assert!("tsne".parse::<ClusterSpace>().is_ok());
        assert!("umap".parse::<ClusterSpace>().is_err());
    }

    #[test]
    fn identify_with_pca_on_pbmc68k_and_bad_options() {
        let p = std::path::Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../../shared/data/pbmc68k_reduced/pbmc68k_reduced_counts.h5ad"
        ));
        assert!(p.exists(), "shared dataset missing: {}", p.display());
        let adata = read(p, &ReadOptions::default()).unwrap();
        let device = crate::Device::default();
        let opts = IdentifyOptions {
            latent: LatentModelConfig {
                kind: LatentModelKind::Pca,
                n_latent: 20,
                ..LatentModelConfig::default()
            },
            tsne: TsneOptions {
                epochs: 300,
                ..TsneOptions::default()
            },
            labels_key: Some("bulk_labels".into()),
            ..IdentifyOptions::default()
        };
        let r = identify(&adata, &opts, &device, &mut Silent).unwrap();
        assert_eq!(r.n_clusters(), 10, "k = number of bulk_labels");
        assert_eq!(r.k, Some(10));
        assert_eq!(r.sizes.iter().sum::<usize>(), 700);
        assert!(r.sizes.windows(2).all(|w| w[0] >= w[1]));
        assert_eq!((r.tsne.n_rows, r.tsne.n_cols), (700, 2));
        assert_eq!((r.omega.n_rows, r.omega.n_cols), (20, 765));
        assert_eq!(r.dimensions.len(), 10);
        assert!(r.dimensions.iter().all(|d| d.top.len() == 10));
        assert!(
            r.weight_genes
                .iter()
                .all(|g| g.dimensions.iter().all(|d| d.genes.len() == 20))
        );
        let ari = r.ari.unwrap();
        eprintln!("PCA-20 k-means ARI vs bulk_labels: {ari:.3}");
        assert!(ari > 0.3, "{ari}");
        let uns = r.uns(&opts);
        assert_eq!(uns["n_clusters"], 10);
        assert_eq!(uns["params"]["latent_model"], "pca");
        assert_eq!(
            uns["clusters"]["0"]["dimensions"].as_array().unwrap().len(),
            10
        );
        let tsv = r.genes_tsv();
        assert_eq!(tsv.lines().count(), 1 + 10 * 10 * 20);
        assert_eq!(r.dimensions_tsv().lines().count(), 1 + 10 * 10);
        // Bad options fail before any training.
        let bad = |o: IdentifyOptions| identify(&adata, &o, &device, &mut Silent).unwrap_err();
        let e = bad(IdentifyOptions {
            clustering: Clustering::KMeans {
                k: Some(701),
                n_init: 1,
            },
            ..opts.clone()
        });
        assert!(matches!(e, Error::Param(_)), "{e}");
        let e = bad(IdentifyOptions {
            labels_key: None,
            ..opts.clone()
        });
        assert!(matches!(e, Error::Param(_)), "{e}");
        let e = bad(IdentifyOptions {
            labels_key: Some("no_such_column".into()),
            ..opts.clone()
        });
        assert!(e.to_string().contains("no_such_column"), "{e}");
    }
}
