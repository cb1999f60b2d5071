//! SCLD's conditions (Wang et al., arXiv 2312.14220, Sec. 3.2 "pre-guidance"): the cluster-mean
//! latent of every label and the holistic mean, and the labels of cells.

use super::*;

/// The condition vectors of a run (`conditions.json`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Conditions {
    /// Where the clusters came from: an `obs` key (`bulk_labels`) or `leiden`.
    pub key: String,
    /// Cluster names (K of them), in condition order.
    pub names: Vec<String>,
    /// Training cells per cluster, `[K]` (the proportions of `--condition-mix`).
    pub counts: Vec<usize>,
    /// Condition vectors `[K + 1][n_genes]`: cluster means, then the holistic mean (model's
    /// expression space).
    pub vectors: Vec<Vec<f32>>,
}

impl Conditions {
    /// Cluster means and the global mean of `x` (`[n_cells, n_genes]`) for `cluster`
    /// (`[n_cells]`, values `0..names.len()`) — SCLD Eq. 8–9.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] if a cluster has no cell or the lengths disagree.
    pub fn fit(key: &str, names: Vec<String>, cluster: &[usize], x: &Matrix) -> Result<Self> {
        let (n, g) = x.shape();
        let k = names.len();
        if cluster.len() != n || cluster.iter().any(|&c| c >= k) {
            return Err(Error::InvalidInput(format!(
                "conditions: {} labels for {n} cells, or a label outside 0..{k}",
                cluster.len()
            )));
        }
        let mut sums = vec![vec![0f64; g]; k + 1];
        let mut counts = vec![0usize; k];
        x.for_each_nonzero(|i, j, v| {
            sums[cluster[i]][j] += v as f64;
            sums[k][j] += v as f64;
        });
        for &c in cluster {
            counts[c] += 1;
        }
        if let Some(empty) = counts.iter().position(|&c| c == 0) {
            return Err(Error::InvalidInput(format!(
                "condition `{}` of obs['{key}'] has no training cell",
                names[empty]
            )));
        }
        let vectors = sums
            .iter()
            .enumerate()
            .map(|(c, s)| {
                let m = if c == k { n } else { counts[c] } as f64;
                s.iter().map(|v| (v / m) as f32).collect()
            })
            .collect();
        Ok(Self {
            key: key.to_string(),
            names,
            counts,
            vectors,
        })
    }

    /// Number of clusters K (the holistic condition has index K).
    pub fn n_clusters(&self) -> usize {
        self.names.len()
    }

    /// The `[K + 1, n_genes]` table of condition vectors.
    pub fn table(&self) -> DenseMatrix {
        let g = self.vectors.first().map_or(0, Vec::len);
        DenseMatrix {
            n_rows: self.vectors.len(),
            n_cols: g,
            data: self.vectors.iter().flatten().copied().collect(),
        }
    }

    /// Index of the cluster called `name`.
    ///
    /// # Errors
    /// [`Error::Param`] listing the known conditions.
    pub fn index_of(&self, name: &str) -> Result<usize> {
        self.names.iter().position(|n| n == name).ok_or_else(|| {
            Error::Param(format!(
                "unknown condition `{name}`; the run's conditions (obs['{}']) are: {}",
                self.key,
                self.names.join(", ")
            ))
        })
    }

    /// `n` condition indices in the training proportions (largest-remainder rounding),
    /// grouped by cluster.
    pub fn mix(&self, n: usize) -> Vec<usize> {
        let total: usize = self.counts.iter().sum();
        let exact: Vec<f64> = self
            .counts
            .iter()
            .map(|&c| n as f64 * c as f64 / total.max(1) as f64)
            .collect();
        let mut take: Vec<usize> = exact.iter().map(|e| e.floor() as usize).collect();
        let mut order: Vec<usize> = (0..take.len()).collect();
        order.sort_by(|&a, &b| {
            (exact[b] - exact[b].floor())
                .total_cmp(&(exact[a] - exact[a].floor()))
                .then(a.cmp(&b))
        });
        let missing = n - take.iter().sum::<usize>();
        for &c in order.iter().take(missing) {
            take[c] += 1;
        }
        take.iter()
            .enumerate()
            .flat_map(|(c, &m)| std::iter::repeat_n(c, m))
            .collect()
    }
}

/// Cluster labels of every cell of `adata` from `labels` (one per cell): returns the sorted
/// category names (a categorical column keeps its category order) and each cell's index.
///
/// # Errors
/// [`Error::InvalidInput`] when a cell has no label or there is only one cluster.
pub fn encode_labels(
    labels: &[String],
    categories: Option<&[String]>,
) -> Result<(Vec<String>, Vec<usize>)> {
    let mut names: Vec<String> = match categories {
        Some(c) => c.to_vec(),
        None => {
            let mut l = labels.to_vec();
            l.sort();
            l.dedup();
            l
        }
    };
    // Keep only categories that occur.
    names.retain(|n| labels.iter().any(|l| l == n));
    let idx = labels
        .iter()
        .enumerate()
        .map(|(i, l)| {
            names.iter().position(|n| n == l).ok_or_else(|| {
                Error::InvalidInput(format!("cell {i} has no condition label (`{l}`)"))
            })
        })
        .collect::<Result<Vec<_>>>()?;
    if names.len() < 2 {
        return Err(Error::InvalidInput(format!(
            "conditions need at least 2 clusters, found {}",
            names.len()
        )));
    }
    Ok((names, idx))
}

impl Conditions {
    /// Checks conditions loaded from `path` (`conditions.json`) for a model of `n_genes`
    /// genes: one count per name, one vector per name plus the global mean, each of `n_genes`
    /// finite values.
    ///
    /// # Errors
    /// [`Error::Format`] naming `path` and the field.
    pub fn check(&self, path: &Path, n_genes: usize) -> Result<()> {
        let n = self.names.len();
        if self.vectors.len() != n + 1
            || self.counts.len() != n
            || self.vectors.iter().any(|v| v.len() != n_genes)
        {
            return Err(Error::format(
                path,
                "vectors",
                format!("expected {n} + 1 vectors of {n_genes} genes and one count per condition"),
            ));
        }
        for (k, v) in self.vectors.iter().enumerate() {
            check_all_finite(path, &format!("vectors[{k}]"), v)?;
        }
        Ok(())
    }
}

/// SCLD's conditions from Leiden clusters of the cells (`--leiden-resolution`): the scanpy
/// workflow of [`crate::tl::leiden::cluster_pipeline`] (HVG 2000, scale, PCA 50, 15
/// neighbours, Leiden at `resolution` with `seed`) on `adata`, stored as the categorical
/// `obs['leiden']` (categories `"0"`, `"1"`, …). Returns the number of clusters.
///
/// # Errors
/// Whatever the clustering pipeline returns (too few cells or genes, bad values).
pub fn add_leiden_conditions(adata: &mut AnnData, resolution: f64, seed: u64) -> Result<usize> {
    let mut opts = crate::tl::leiden::ClusterOptions::default();
    opts.community.resolution = resolution;
    opts.community.seed = seed;
    let res = crate::tl::leiden::cluster_pipeline(adata, &opts)?;
    let categories: Vec<String> = (0..res.n_clusters()).map(|c| c.to_string()).collect();
    adata.set_obs(
        "leiden",
        Column::Categorical {
            codes: res.labels.iter().map(|&l| l as i32).collect(),
            categories,
        },
    );
    Ok(res.n_clusters())
}
