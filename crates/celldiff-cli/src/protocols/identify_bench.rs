//! DiffVAE's clustering benchmark (Bica et al., Sci. Rep. 2020, Table 2), the protocol behind
//! `celldiff identify-bench`: for every latent model, latent size and seed, fit the model
//! ([`fit_latent`]), t-SNE its latent means ([`tsne`]) and score k-means and DBSCAN on the
//! latent means and on the t-SNE by ARI against reference labels. Built from the library's
//! DiffVAE pieces; it lives in the CLI because it is a protocol, not a method.

use std::time::Instant;

use serde::{Deserialize, Serialize};

use celldiff::anndata::AnnData;
use celldiff::diffvae::identify::{
    ClusterSpace, Clustering, DbscanEps, ari_against, reference_labels, run_clustering,
    validate_clustering,
};
use celldiff::diffvae::{LatentModelConfig, LatentModelKind, fit_latent};
use celldiff::error::{Error, Result};
use celldiff::pp;
use celldiff::tl::dbscan::DEFAULT_EPS_QUANTILE;
use celldiff::tl::tsne::{TsneOptions, tsne};
use celldiff::train::Observer;

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
    /// DBSCAN's ε: the quantile of the k-distances ([`celldiff::tl::dbscan::auto_dbscan_eps`]), chosen per space and
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
/// everything [`celldiff::diffvae::identify::identify`] can return.
pub fn identify_bench(
    adata: &AnnData,
    opts: &BenchOptions,
    device: &celldiff::Device,
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
        &celldiff::diffvae::preprocess_config_for(adata, opts.n_top_genes),
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
