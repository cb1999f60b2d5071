//! DiffVAE's latent perturbations (Bica, Andrés-Terré, Cvejic & Liò, *Sci. Rep.* 10, 9790,
//! 2020, "Cell state transitions", Fig. 5): move the cells of a source type (e.g. Weinreb's
//! undifferentiated progenitors) along the latent dimensions that encode a target type, decode
//! them, and ask a cell-type classifier ([`crate::diffvae::classify`]) whether they became the target.
//!
//! # Method
//! 1. Dimensions of the target: for each latent dimension k, D_k = cells with
//!    z_k ≥ μ_k + σ_k or z_k ≤ μ_k − σ_k (μ_k, σ_k over all cells); the n (default 5)
//!    dimensions with the largest share |D_k ∩ target| / |D_k|
//!    ([`crate::diffvae::identify::cluster_dimensions`], the same rule `celldiff identify` uses).
//! 2. Direction: s_k = sign(mean of z_k over the target cells − μ_k), the target's side.
//! 3. Shift: z′ = z + λ·s_k·σ_k on those dimensions for every source cell, λ ∈ {0.5, 1.0}
//!    (the paper's values); decode y = sigmoid(decoder(z′)) (min-max scaled log1p
//!    expression); classify y. A cell is *converted* if the classifier calls it the target.
//! 4. Minimal gene set of a converted cell: rank genes by |y − x| (x = the cell's own
//!    expression), and find the smallest m such that x with its top-m genes set to their
//!    decoded values is called the target (an exhaustive scan over m; m ≤ n_genes always
//!    works because m = n_genes gives y itself).
//!
//! # Controls (not in the paper; they say how much of a conversion the shift explains)
//! - λ = 0: the source cells decoded without a shift (reconstruction alone).
//! - Random dimensions: the same λ on n dimensions drawn at random (seeded) among those not
//!   selected, with random signs.

use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use serde::{Deserialize, Serialize};

use crate::Device;
use crate::anndata::DenseMatrix;
use crate::diffvae::classify::{Classifier, argmax_rows, predict_proba};
use crate::diffvae::identify::cluster_dimensions;
use crate::error::{Error, Result};
use crate::models::DiffVae;
use crate::train::{to_host, to_tensor};

/// Parameters of [`shift`].
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ShiftOptions {
    /// Source cell type (a category of the labels).
    pub source: String,
    /// Target cell types.
    pub targets: Vec<String>,
    /// Shift sizes λ in units of σ_k (the paper: 0.5 and 1.0).
    pub lambdas: Vec<f64>,
    /// Latent dimensions shifted per target (the paper: 5).
    pub n_dimensions: usize,
    /// Also run the two controls (λ = 0 and random dimensions).
    pub controls: bool,
    /// Genes reported per target and λ in the minimal-gene-set summary.
    pub n_report_genes: usize,
    /// Seed of the random-dimension control.
    pub seed: u64,
}

impl Default for ShiftOptions {
    fn default() -> Self {
        Self {
            source: String::new(),
            targets: Vec::new(),
            lambdas: vec![0.5, 1.0],
            n_dimensions: 5,
            controls: true,
            n_report_genes: 20,
            seed: 0,
        }
    }
}

/// A latent dimension shifted towards a target.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ShiftedDimension {
    /// Latent dimension k (0-based).
    pub dimension: usize,
    /// |D_k ∩ target| / |D_k|.
    pub share: f64,
    /// s_k, +1 or −1.
    pub sign: f64,
    /// σ_k over all cells (latent units).
    pub sigma: f64,
}

/// A gene in the minimal gene sets of the converted cells.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct MinimalGene {
    /// Gene name.
    pub gene: String,
    /// Converted cells whose minimal set contains the gene.
    pub n_cells: usize,
    /// Mean decoded − original value over those cells (min-max scaled units; > 0 = up).
    pub mean_change: f64,
}

/// The outcome of one shift (a target, a λ, and which dimensions).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ShiftOutcome {
    /// `"top"` (the target's dimensions), `"none"` (λ = 0 control) or `"random"`.
    pub dimensions: String,
    /// λ.
    pub lambda: f64,
    /// Source cells shifted.
    pub n_source: usize,
    /// Of them, called the target after decoding.
    pub n_converted: usize,
    /// `n_converted / n_source`.
    pub fraction_converted: f64,
    /// Classifier calls of the decoded cells, per type (category order, zeros kept).
    pub predicted: Vec<(String, usize)>,
    /// Minimal gene-set size of each converted cell (only for `"top"`).
    pub minimal_set_sizes: Vec<usize>,
    /// Median of `minimal_set_sizes` (`None` if no cell converted or not computed).
    pub median_minimal_set: Option<f64>,
    /// The genes most often in the minimal sets (only for `"top"`).
    pub genes: Vec<MinimalGene>,
}

/// All shifts towards one target.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TargetShift {
    /// Target cell type.
    pub target: String,
    /// Target cells in the data.
    pub n_target: usize,
    /// The dimensions shifted, best first.
    pub dimensions: Vec<ShiftedDimension>,
    /// One per λ (and per control).
    pub outcomes: Vec<ShiftOutcome>,
}

/// What [`shift`] returns (`results.json` of `celldiff shift`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ShiftResult {
    /// The options.
    pub options: ShiftOptions,
    /// Source cells.
    pub n_source: usize,
    /// Classifier calls of the source cells' own expression (category order).
    pub source_predicted: Vec<(String, usize)>,
    /// One per target.
    pub targets: Vec<TargetShift>,
}

fn counts_by_class(pred: &[usize], categories: &[String]) -> Vec<(String, usize)> {
    let mut n = vec![0usize; categories.len()];
    for &p in pred {
        n[p] += 1;
    }
    categories.iter().cloned().zip(n).collect()
}

fn decode(net: &DiffVae, z: &DenseMatrix, device: &Device) -> Result<DenseMatrix> {
    to_host(net.decode(to_tensor(z, device)))
}

/// The smallest m such that `x` with its top-m genes (by |y − x|) set to `y` is classified as
/// `target`, scanning m = 1, 2, … in chunks of 128 candidates per classifier call.
fn minimal_set(
    x: &[f32],
    y: &[f32],
    target: usize,
    clf: &Classifier,
    device: &Device,
) -> Result<(usize, Vec<usize>)> {
    let g = x.len();
    let mut order: Vec<usize> = (0..g).collect();
    order.sort_by(|&a, &b| {
        (y[b] - x[b])
            .abs()
            .total_cmp(&(y[a] - x[a]).abs())
            .then(a.cmp(&b))
    });
    let mut m0 = 1;
    while m0 <= g {
        let m1 = (m0 + 127).min(g);
        let mut rows = Vec::with_capacity((m1 - m0 + 1) * g);
        let mut cur = x.to_vec();
        for &j in &order[..m0 - 1] {
            cur[j] = y[j];
        }
        for m in m0..=m1 {
            let j = order[m - 1];
            cur[j] = y[j];
            rows.extend_from_slice(&cur);
        }
        let cand = DenseMatrix::from_vec(m1 - m0 + 1, g, rows)?;
        let pred = argmax_rows(&predict_proba(&clf.net, &cand, device)?);
        if let Some(p) = pred.iter().position(|&c| c == target) {
            let m = m0 + p;
            return Ok((m, order[..m].to_vec()));
        }
        m0 = m1 + 1;
    }
    // Unreachable when y itself is called the target; report all genes otherwise.
    Ok((g, order))
}

fn median(v: &[usize]) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    let mut s = v.to_vec();
    s.sort_unstable();
    let n = s.len();
    Some(if n % 2 == 1 {
        s[n / 2] as f64
    } else {
        (s[n / 2 - 1] + s[n / 2]) as f64 / 2.0
    })
}

/// Runs DiffVAE's latent perturbation experiment (module docs).
///
/// # Arguments
/// - `x`: `[n_cells, n_genes]`, the expression DiffVAE and the classifier were trained on
///   (min-max scaled log1p, the classifier's genes in order);
/// - `latent`: `[n_cells, m]`, the DiffVAE posterior means μ of `x`;
/// - `labels`: `[n_cells]`, ids into `clf.config.categories` (`None` = unlabelled);
/// - `net`: the trained DiffVAE (evaluation mode), `clf`: the trained classifier.
///
/// # Errors
/// [`Error::InvalidInput`] if shapes disagree, the source or a target is not a category or
/// has no cells, the source is among the targets, or fewer dimensions exist than requested;
/// [`Error::Param`] for no target, no λ or a non-finite λ.
pub fn shift(
    x: &DenseMatrix,
    latent: &DenseMatrix,
    labels: &[Option<usize>],
    net: &DiffVae,
    clf: &Classifier,
    opts: &ShiftOptions,
    device: &Device,
) -> Result<ShiftResult> {
    let cats = &clf.config.categories;
    let (n, m) = (latent.n_rows, latent.n_cols);
    if x.n_rows != n || labels.len() != n || x.n_cols != clf.genes.len() {
        return Err(Error::InvalidInput(format!(
            "shift: X is {}×{}, the latent {n}×{m}, {} labels, the classifier has {} genes",
            x.n_rows,
            x.n_cols,
            labels.len(),
            clf.genes.len()
        )));
    }
    if opts.targets.is_empty() || opts.lambdas.is_empty() {
        return Err(Error::Param(
            "shift: need at least one target type and one λ".into(),
        ));
    }
    if let Some(l) = opts.lambdas.iter().find(|l| !l.is_finite()) {
        return Err(Error::Param(format!("shift: λ must be finite, got {l}")));
    }
    if opts.n_dimensions == 0 || opts.n_dimensions > m {
        return Err(Error::InvalidInput(format!(
            "shift: {} dimensions requested, the latent has {m}",
            opts.n_dimensions
        )));
    }
    let class_of = |name: &str| -> Result<usize> {
        let c = cats.iter().position(|c| c == name).ok_or_else(|| {
            Error::InvalidInput(format!(
                "cell type '{name}' is not among the labels ({})",
                cats.join(", ")
            ))
        })?;
        if !labels.contains(&Some(c)) {
            return Err(Error::InvalidInput(format!(
                "cell type '{name}' has no cells in the data"
            )));
        }
        Ok(c)
    };
    let src = class_of(&opts.source)?;
    let src_rows: Vec<usize> = (0..n).filter(|&i| labels[i] == Some(src)).collect();
    let z_src = latent.select_rows(&src_rows);
    let x_src = x.select_rows(&src_rows);
    let source_predicted = counts_by_class(&clf.predict_scaled(&x_src, device)?.class, cats);
    // μ_k and σ_k (population sd) over all cells, as in cluster_dimensions.
    let (mu, sd): (Vec<f64>, Vec<f64>) = (0..m)
        .map(|k| {
            let col = (0..n).map(|i| latent.row(i)[k] as f64);
            let mean = col.clone().sum::<f64>() / n as f64;
            let var = col.map(|v| (v - mean).powi(2)).sum::<f64>() / n as f64;
            (mean, var.sqrt())
        })
        .unzip();
    let dims_all = cluster_dimensions(latent, labels, cats.len(), m)?;
    let mut rng = StdRng::seed_from_u64(opts.seed);
    let mut targets = Vec::new();
    for t_name in &opts.targets {
        let tgt = class_of(t_name)?;
        if tgt == src {
            return Err(Error::InvalidInput(format!(
                "shift: the target '{t_name}' is the source type"
            )));
        }
        let t_rows: Vec<usize> = (0..n).filter(|&i| labels[i] == Some(tgt)).collect();
        let dimensions: Vec<ShiftedDimension> = dims_all[tgt]
            .top
            .iter()
            .take(opts.n_dimensions)
            .map(|d| {
                let k = d.dimension;
                let t_mean = t_rows.iter().map(|&i| latent.row(i)[k] as f64).sum::<f64>()
                    / t_rows.len() as f64;
                ShiftedDimension {
                    dimension: k,
                    share: d.share,
                    sign: if t_mean >= mu[k] { 1.0 } else { -1.0 },
                    sigma: sd[k],
                }
            })
            .collect();
        let mut plans: Vec<(String, f64, Vec<ShiftedDimension>)> = opts
            .lambdas
            .iter()
            .map(|&l| ("top".to_string(), l, dimensions.clone()))
            .collect();
        if opts.controls {
            plans.push(("none".into(), 0.0, Vec::new()));
            let chosen: Vec<usize> = dimensions.iter().map(|d| d.dimension).collect();
            let mut others: Vec<usize> = (0..m).filter(|k| !chosen.contains(k)).collect();
            others.shuffle(&mut rng);
            let random: Vec<ShiftedDimension> = others
                .iter()
                .take(opts.n_dimensions)
                .map(|&k| ShiftedDimension {
                    dimension: k,
                    share: 0.0,
                    sign: if rand::Rng::random_bool(&mut rng, 0.5) {
                        1.0
                    } else {
                        -1.0
                    },
                    sigma: sd[k],
                })
                .collect();
            for &l in &opts.lambdas {
                plans.push(("random".into(), l, random.clone()));
            }
        }
        let mut outcomes = Vec::new();
        for (kind, lambda, dims) in plans {
            let mut z = z_src.clone();
            for i in 0..z.n_rows {
                let row = z.row_mut(i);
                for d in &dims {
                    row[d.dimension] += (lambda * d.sign * d.sigma) as f32;
                }
            }
            let y = decode(net, &z, device)?;
            let pred = clf.predict_scaled(&y, device)?.class;
            let converted: Vec<usize> = (0..pred.len()).filter(|&i| pred[i] == tgt).collect();
            let mut sizes = Vec::new();
            let mut genes = Vec::new();
            if kind == "top" {
                let mut count = vec![0usize; x.n_cols];
                let mut change = vec![0f64; x.n_cols];
                for &i in &converted {
                    let (size, set) = minimal_set(x_src.row(i), y.row(i), tgt, clf, device)?;
                    sizes.push(size);
                    for j in set {
                        count[j] += 1;
                        change[j] += (y.row(i)[j] - x_src.row(i)[j]) as f64;
                    }
                }
                let mut idx: Vec<usize> = (0..x.n_cols).filter(|&j| count[j] > 0).collect();
                idx.sort_by(|&a, &b| count[b].cmp(&count[a]).then(a.cmp(&b)));
                genes = idx
                    .into_iter()
                    .take(opts.n_report_genes)
                    .map(|j| MinimalGene {
                        gene: clf.genes[j].clone(),
                        n_cells: count[j],
                        mean_change: change[j] / count[j] as f64,
                    })
                    .collect();
            }
            outcomes.push(ShiftOutcome {
                dimensions: kind,
                lambda,
                n_source: src_rows.len(),
                n_converted: converted.len(),
                fraction_converted: converted.len() as f64 / src_rows.len() as f64,
                predicted: counts_by_class(&pred, cats),
                median_minimal_set: median(&sizes),
                minimal_set_sizes: sizes,
                genes,
            });
        }
        targets.push(TargetShift {
            target: t_name.clone(),
            n_target: t_rows.len(),
            dimensions,
            outcomes,
        });
    }
    Ok(ShiftResult {
        options: opts.clone(),
        n_source: src_rows.len(),
        source_predicted,
        targets,
    })
}

impl ShiftResult {
    /// The conversions as a Markdown table (one row per target, dimensions and λ), followed by
    /// the most frequent minimal-set genes per target and λ.
    pub fn markdown(&self) -> String {
        let mut s = format!(
            "Source '{}' ({} cells); classifier calls on their own expression: {}.\n\n\
             | target | dimensions | λ | converted | fraction | median minimal gene set |\n\
             |---|---|---|---|---|---|\n",
            self.options.source,
            self.n_source,
            self.source_predicted
                .iter()
                .filter(|(_, c)| *c > 0)
                .map(|(l, c)| format!("{l} {c}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
        for t in &self.targets {
            let dims = t
                .dimensions
                .iter()
                .map(|d| format!("{}{}", if d.sign > 0.0 { "+" } else { "−" }, d.dimension))
                .collect::<Vec<_>>()
                .join(" ");
            for o in &t.outcomes {
                let label = match o.dimensions.as_str() {
                    "top" => format!("top {} ({dims})", t.dimensions.len()),
                    "none" => "none (λ = 0 control)".into(),
                    _ => format!("random {} (control)", t.dimensions.len()),
                };
                s.push_str(&format!(
                    "| {} | {label} | {} | {}/{} | {:.3} | {} |\n",
                    t.target,
                    o.lambda,
                    o.n_converted,
                    o.n_source,
                    o.fraction_converted,
                    o.median_minimal_set.map_or("–".into(), |v| format!("{v}"))
                ));
            }
        }
        for t in &self.targets {
            for o in t.outcomes.iter().filter(|o| !o.genes.is_empty()) {
                s.push_str(&format!(
                    "\n{} → {} (λ = {}), genes most often in the minimal sets (cells, mean \
                     change): {}\n",
                    self.options.source,
                    t.target,
                    o.lambda,
                    o.genes
                        .iter()
                        .take(10)
                        .map(|g| format!("{} ({}, {:+.2})", g.gene, g.n_cells, g.mean_change))
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
            }
        }
        s
    }

    /// The minimal-set genes as TSV: `target lambda gene n_cells mean_change`.
    pub fn genes_tsv(&self) -> String {
        let mut s = String::from("target\tlambda\tgene\tn_cells\tmean_change\n");
        for t in &self.targets {
            for o in &t.outcomes {
                for g in &o.genes {
                    s.push_str(&format!(
                        "{}\t{}\t{}\t{}\t{:.6}\n",
                        t.target, o.lambda, g.gene, g.n_cells, g.mean_change
                    ));
                }
            }
        }
        s
    }
}

/// DiffVAE's latent shift end to end, as `celldiff shift` runs it on `adata` with
/// `obs[labels_key]`: the classifier's space (`clf`'s preprocessing; `x` when the caller
/// already has the cells in it), a DiffVAE trained there (`latent`), its latent means, then
/// [`shift`]. Cells whose type the classifier does not know enter only the latent statistics.
/// Returns the result and the number of such cells.
///
/// # Errors
/// [`Error::InvalidInput`] for a missing labels column or cells that do not fit the
/// classifier's preprocessing; what [`shift`] and training return.
#[allow(clippy::too_many_arguments)] // the CLI's and Python's inputs, one each
pub fn shift_cells(
    adata: &crate::AnnData,
    labels_key: &str,
    clf: &Classifier,
    x: Option<DenseMatrix>,
    latent: &crate::diffvae::LatentModelConfig,
    opts: &ShiftOptions,
    device: &Device,
    observer: &mut dyn crate::train::Observer,
) -> Result<(ShiftResult, usize)> {
    let x = match x {
        Some(x) => x,
        None => clf.preprocess.transform(adata)?.x.to_dense(),
    };
    let cats = &clf.config.categories;
    let labels: Vec<Option<usize>> = adata
        .obs_column(labels_key)?
        .labels()
        .iter()
        .map(|l| cats.iter().position(|c| c == l))
        .collect();
    let unknown = labels.iter().filter(|i| i.is_none()).count();
    let (net, _) = crate::diffvae::train_network(&x, latent, device, observer)?;
    let z = crate::diffvae::encode_mean(&net, &x, device)?;
    Ok((shift(&x, &z, &labels, &net, clf, opts, device)?, unknown))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diffvae::classify::ClassifierTrainConfig;
    use crate::diffvae::identify::reference_labels;
    use crate::diffvae::{LatentModelConfig, LatentModelKind, encode_mean, train_network};
    use crate::io::{ReadOptions, read};
    use crate::train::Silent;
    use std::path::Path;

    const WEINREB: &str = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../../shared/data/weinreb_larry_hematopoiesis_subset/test_adata_preprocessed.h5ad"
    );

    #[test]
    fn median_of_sizes() {
        let _rng = crate::test_rng_lock();
        assert_eq!(median(&[]), None);
        assert_eq!(median(&[3, 1, 2]), Some(2.0));
        assert_eq!(median(&[4, 1, 2, 3]), Some(2.5));
    }

    /// Weinreb undiff → Monocyte (small network, λ = 2): shifting along Monocyte's dimensions
    /// converts more progenitors than decoding them unshifted or shifting random dimensions;
    /// every converted cell gets a minimal gene set of 1 ..= n_genes genes; an unknown target
    /// is a named error.
    #[test]
    fn weinreb_undiff_to_monocyte_beats_controls() {
        let _rng = crate::test_rng_lock();
        let adata = read(Path::new(WEINREB), &ReadOptions::default()).unwrap();
        let (labels, cats) = reference_labels(&adata, "state_info").unwrap();
        let (pp, fitted) = crate::pp::fit_transform(
            &adata,
            &crate::diffvae::preprocess_config_for(&adata, Some(1000)),
        )
        .unwrap();
        let x = pp.x.to_dense();
        let dev = Device::default();
        let clf = Classifier::fit(
            &x,
            &labels,
            &cats,
            fitted,
            ("w", "state_info"),
            &ClassifierTrainConfig {
                epochs: 20,
                ..Default::default()
            },
            &dev,
        )
        .unwrap();
        let cfg = LatentModelConfig {
            kind: LatentModelKind::DiffVae,
            n_latent: 20,
            epochs: 30,
            seed: 1,
            ..Default::default()
        };
        let (net, _) = train_network(&x, &cfg, &dev, &mut Silent).unwrap();
        let z = encode_mean(&net, &x, &dev).unwrap();
        let opts = ShiftOptions {
            source: "undiff".into(),
            targets: vec!["Monocyte".into()],
            lambdas: vec![1.0, 2.0],
            ..Default::default()
        };
        let res = shift(&x, &z, &labels, &net, &clf, &opts, &dev).unwrap();
        let t = &res.targets[0];
        assert_eq!(t.dimensions.len(), 5);
        let get = |kind: &str, l: f64| {
            t.outcomes
                .iter()
                .find(|o| o.dimensions == kind && o.lambda == l)
                .unwrap()
        };
        let (top, none, random) = (get("top", 2.0), get("none", 0.0), get("random", 2.0));
        assert!(
            top.n_converted > none.n_converted + 20 && top.n_converted > random.n_converted,
            "top {} vs λ=0 {} vs random {}",
            top.n_converted,
            none.n_converted,
            random.n_converted
        );
        assert_eq!(top.minimal_set_sizes.len(), top.n_converted);
        assert!(
            top.minimal_set_sizes
                .iter()
                .all(|&s| s >= 1 && s <= x.n_cols)
        );
        assert!(!top.genes.is_empty());
        let md = res.markdown();
        assert!(md.contains("| Monocyte | top 5"), "{md}");
        // Errors name the bad type.
        let bad = ShiftOptions {
            targets: vec!["Neuron".into()],
            ..opts.clone()
        };
        let err = shift(&x, &z, &labels, &net, &clf, &bad, &dev).unwrap_err();
        assert!(err.to_string().contains("'Neuron'"), "{err}");
    }
}
