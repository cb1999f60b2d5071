//! Interpreting the clusters of DiffVAE's latent space (paper Fig. 3 and "High-weight genes"):
//! the latent dimensions that single out each cluster and the decoder's high-weight genes of
//! those dimensions (method in the parent module's docs).

use super::*;

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
