//! Graph clustering of cells: Leiden (Traag, Waltman & van Eck 2019, *Sci. Rep.* 9:5233) and
//! Louvain (Blondel et al. 2008) modularity optimisation on the UMAP connectivities of
//! [`crate::tl::neighbors`], scanpy's `sc.tl.leiden(flavor="igraph", n_iterations=2)` /
//! `sc.tl.louvain`, plus the adjusted Rand index to compare partitions and the standard scanpy
//! pipeline from counts to labels ([`cluster_pipeline`]).
//!
//! # Method
//! The community detection is the crate `leiden-rs` 0.8 (local moving, refinement,
//! aggregation; modularity with a resolution `γ`, `Q = Σ_c [e_c/m − γ (K_c/2m)²]`, the
//! objective of igraph's `community_leiden(objective_function="modularity")`). Every stored
//! entry `(i, j, w)` of the (symmetric) adjacency becomes an undirected edge of weight `w`, as
//! scanpy's `get_igraph_from_adjacency(directed=False)` does (every edge twice, which scales
//! all weights by 2 and leaves modularity unchanged). One igraph Leiden iteration is one
//! `leiden-rs` run to convergence; `n_iterations = 2` (scanpy's default) runs a second one
//! from the first partition. Louvain is `leiden-rs` without the refinement phase, run once to
//! convergence (scanpy's `louvain` package optimises until no improvement). Local moving is
//! sequential (a seeded `StdRng` visiting order), so labels depend only on the graph, the
//! parameters and the seed.
//!
//! Labels are renumbered by cluster size, `0` the largest (ties by the smallest cell index),
//! as scanpy/leidenalg report them.

use std::collections::HashMap;

use leiden_rs::{GraphDataBuilder, Leiden, LeidenConfig, Partition, QualityType};
use serde::{Deserialize, Serialize};
use sprs::CsMat;

use crate::anndata::{AnnData, DenseMatrix};
use crate::error::{Error, Result};
use crate::pp::{self, FittedPreprocess, HvgFlavor, PreprocessConfig};
use crate::tl::neighbors::{self, Neighbors};
use crate::tl::pca::Pca;
use crate::tl::umap::{self, UmapOptions};

/// Upper bound on Leiden iterations when `n_iterations = 0` ("until the partition is stable").
const MAX_STABLE_ITERATIONS: usize = 50;

/// Community-detection algorithm.
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum ClusterFlavor {
    /// Leiden (Traag et al. 2019): local moving + refinement + aggregation (scanpy
    /// `tl.leiden(flavor="igraph")`).
    #[default]
    Leiden,
    /// Louvain (Blondel et al. 2008): local moving + aggregation (scanpy `tl.louvain`).
    Louvain,
}

impl ClusterFlavor {
    /// The scanpy name and default `obs` key: `"leiden"` or `"louvain"`.
    pub fn name(self) -> &'static str {
        match self {
            ClusterFlavor::Leiden => "leiden",
            ClusterFlavor::Louvain => "louvain",
        }
    }
}

/// Parameters of [`cluster_graph`].
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct CommunityOptions {
    /// Leiden or Louvain.
    pub flavor: ClusterFlavor,
    /// Resolution `γ > 0` of the modularity (scanpy `resolution`, default 1); larger values
    /// give more, smaller clusters.
    pub resolution: f64,
    /// Leiden iterations (scanpy/igraph `n_iterations`, default 2); `0` = iterate until the
    /// partition no longer changes (at most 50). Ignored by Louvain (one run to convergence).
    pub n_iterations: usize,
    /// Seed of the node visiting order (scanpy `random_state`).
    pub seed: u64,
}

impl Default for CommunityOptions {
    fn default() -> Self {
        Self {
            flavor: ClusterFlavor::Leiden,
            resolution: 1.0,
            n_iterations: 2,
            seed: 0,
        }
    }
}

/// Clusters the nodes of a weighted undirected graph by modularity optimisation with Leiden
/// or Louvain (`opts.flavor`): scanpy `tl.leiden(adjacency=graph, resolution, n_iterations,
/// random_state, flavor="igraph")` / `tl.louvain`.
///
/// `graph` is a square `[n_cells, n_cells]` adjacency (e.g.
/// [`Neighbors::connectivities`](crate::tl::neighbors::Neighbors)), normally symmetric; each
/// stored entry `(i, j, w)` adds `w` to the undirected edge `{i, j}` (diagonal entries are
/// self-loops). Returns one label per node, `0` for the largest cluster, `1` for the next, ...
/// (ties by the smallest node index); isolated nodes form singleton clusters.
///
/// # Errors
/// - [`Error::Param`]: resolution not finite or `≤ 0`.
/// - [`Error::InvalidInput`]: `graph` is not square, or holds a negative or non-finite
///   weight (naming the entry).
/// - [`Error::Internal`]: `leiden-rs` rejected the graph or failed.
pub fn cluster_graph(graph: &CsMat<f32>, opts: &CommunityOptions) -> Result<Vec<usize>> {
    if !(opts.resolution.is_finite() && opts.resolution > 0.0) {
        return Err(Error::Param(format!(
            "{}: resolution must be a positive number, got {}",
            opts.flavor.name(),
            opts.resolution
        )));
    }
    let n = graph.rows();
    if graph.cols() != n {
        return Err(Error::InvalidInput(format!(
            "{}: the adjacency must be square, got [{n}, {}]",
            opts.flavor.name(),
            graph.cols()
        )));
    }
    if n == 0 {
        return Ok(Vec::new());
    }
    let mut b = GraphDataBuilder::new(n);
    let csr;
    let g = if graph.is_csr() {
        graph
    } else {
        csr = graph.to_csr();
        &csr
    };
    for (i, row) in g.outer_iterator().enumerate() {
        for (j, &w) in row.iter() {
            if !(w.is_finite() && w >= 0.0) {
                return Err(Error::InvalidInput(format!(
                    "{}: adjacency weight {w} at ({i}, {j}) is not a finite non-negative number",
                    opts.flavor.name()
                )));
            }
            if w > 0.0 {
                b.add_edge(i.min(j), i.max(j), w as f64)
                    .map_err(|e| Error::Internal(format!("leiden-rs graph: {e}")))?;
            }
        }
    }
    let data = b
        .build()
        .map_err(|e| Error::Internal(format!("leiden-rs graph: {e}")))?;
    let config = |seed: u64| LeidenConfig {
        resolution: opts.resolution,
        seed: Some(seed),
        quality: QualityType::Modularity,
        skip_refinement: opts.flavor == ClusterFlavor::Louvain,
        // Sequential local moving: the igraph algorithm, independent of the thread count.
        parallel_local_moving_threshold: Some(usize::MAX),
        ..LeidenConfig::default()
    };
    let run_err = |e: leiden_rs::LeidenError| Error::Internal(format!("leiden-rs: {e}"));
    let first = Leiden::new(config(opts.seed)).run(&data).map_err(run_err)?;
    let mut membership: Vec<usize> = first.partition.as_slice().to_vec();
    if opts.flavor == ClusterFlavor::Leiden {
        let extra = match opts.n_iterations {
            0 => MAX_STABLE_ITERATIONS - 1,
            k => k - 1,
        };
        for it in 1..=extra {
            let seed = opts.seed.wrapping_add(it as u64);
            let out = Leiden::new(config(seed))
                .run_with_initial_partition(&data, Partition::from_membership(membership.clone()))
                .map_err(run_err)?;
            let next = out.partition.as_slice().to_vec();
            let stable = adjusted_rand_index(&next, &membership)? == 1.0;
            membership = next;
            if opts.n_iterations == 0 && stable {
                break;
            }
        }
    }
    Ok(relabel_by_size(&membership))
}

/// Renumbers arbitrary cluster ids so that `0` is the largest cluster, `1` the next, ...
/// (ties by the smallest member index). Output has the length of `labels`.
pub fn relabel_by_size(labels: &[usize]) -> Vec<usize> {
    // (size, first member) per original id.
    let mut stats: HashMap<usize, (usize, usize)> = HashMap::new();
    for (i, &l) in labels.iter().enumerate() {
        stats.entry(l).or_insert((0, i)).0 += 1;
    }
    let mut order: Vec<(usize, (usize, usize))> = stats.into_iter().collect();
    order.sort_by(|a, b| b.1.0.cmp(&a.1.0).then(a.1.1.cmp(&b.1.1)));
    let new_id: HashMap<usize, usize> = order
        .iter()
        .enumerate()
        .map(|(new, &(old, _))| (old, new))
        .collect();
    labels.iter().map(|l| new_id[l]).collect()
}

/// Number of members of each cluster `0..=max(labels)` (length `max + 1`; empty for no
/// labels). With labels from [`cluster_graph`], sorted in decreasing order.
pub fn cluster_sizes(labels: &[usize]) -> Vec<usize> {
    let k = labels.iter().max().map_or(0, |m| m + 1);
    let mut sizes = vec![0usize; k];
    for &l in labels {
        sizes[l] += 1;
    }
    sizes
}

/// Adjusted Rand index of two partitions of the same items (Hubert & Arabie 1985), exactly
/// sklearn's `adjusted_rand_score(a, b)`: from the pair confusion matrix,
/// `2 (tp·tn − fn·fp) / ((tp + fn)(fn + tn) + (tp + fp)(fp + tn))`, and 1 when the partitions
/// agree on every pair (including 0 or 1 items). Symmetric; 1 for identical partitions up to
/// renaming, ≈ 0 for independent ones, can be negative. Label values are arbitrary ids.
///
/// # Errors
/// [`Error::InvalidInput`] if `a` and `b` differ in length.
pub fn adjusted_rand_index(a: &[usize], b: &[usize]) -> Result<f64> {
    if a.len() != b.len() {
        return Err(Error::InvalidInput(format!(
            "adjusted_rand_index: {} labels vs {} labels",
            a.len(),
            b.len()
        )));
    }
    let n = a.len() as i128;
    let mut cont: HashMap<(usize, usize), i128> = HashMap::new();
    let mut na: HashMap<usize, i128> = HashMap::new();
    let mut nb: HashMap<usize, i128> = HashMap::new();
    for (&x, &y) in a.iter().zip(b) {
        *cont.entry((x, y)).or_insert(0) += 1;
        *na.entry(x).or_insert(0) += 1;
        *nb.entry(y).or_insert(0) += 1;
    }
    let sum_squares: i128 = cont.values().map(|v| v * v).sum();
    let sum_a: i128 = na.values().map(|v| v * v).sum();
    let sum_b: i128 = nb.values().map(|v| v * v).sum();
    // sklearn pair_confusion_matrix (ordered pairs).
    let tp = sum_squares - n;
    let fp = sum_b - sum_squares; // contingency · n_k
    let fn_ = sum_a - sum_squares; // contingencyᵀ · n_c
    let tn = n * n - fp - fn_ - sum_squares;
    if fn_ == 0 && fp == 0 {
        return Ok(1.0);
    }
    let (tp, tn, fp, fn_) = (tp as f64, tn as f64, fp as f64, fn_ as f64);
    Ok(2.0 * (tp * tn - fn_ * fp) / ((tp + fn_) * (fn_ + tn) + (tp + fp) * (fp + tn)))
}

/// Parameters of [`cluster_pipeline`]. The default is scanpy's standard clustering workflow:
/// `normalize_total(1e4)` + `log1p` (count input), `highly_variable_genes(flavor="seurat",
/// n_top_genes=2000)` with subsetting, `scale(max_value=10)`, `pca(n_comps=50)`,
/// `neighbors(n_neighbors=15)`, `leiden(resolution=1, n_iterations=2)`, no UMAP.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct ClusterOptions {
    /// Preprocessing from the input to the PCA input (see [`PreprocessConfig`]).
    pub preprocess: PreprocessConfig,
    /// Principal components (scanpy `n_comps` / `n_pcs`); clamped by [`Pca::fit`] to
    /// `min(n_cells, n_genes) − 1`.
    pub n_pcs: usize,
    /// Neighbours per cell including itself (scanpy `n_neighbors`), `2 ≤ n_neighbors ≤
    /// n_cells`.
    pub n_neighbors: usize,
    /// Leiden / Louvain parameters.
    pub community: CommunityOptions,
    /// Also compute a 2-D UMAP layout ([`umap::umap_layout`], initialised from the PCA).
    pub umap: Option<UmapOptions>,
}

impl Default for ClusterOptions {
    fn default() -> Self {
        Self {
            preprocess: PreprocessConfig {
                min_genes: None,
                min_cells: None,
                target_sum: Some(1e4),
                log1p: None,
                n_top_genes: Some(2000),
                flavor: HvgFlavor::Seurat,
                subset: true,
                scale: true,
                max_value: Some(10.0),
                minmax: false,
            },
            n_pcs: 50,
            n_neighbors: 15,
            community: CommunityOptions::default(),
            umap: None,
        }
    }
}

/// Result of [`cluster_pipeline`].
#[derive(Debug, Clone)]
pub struct ClusterResult {
    /// One cluster label per input cell (`0` the largest cluster), length `n_cells`.
    pub labels: Vec<usize>,
    /// Cells per cluster, indexed by label (decreasing).
    pub sizes: Vec<usize>,
    /// PCA scores `[n_cells, n_pcs]` of the preprocessed data (scanpy `obsm["X_pca"]`).
    pub pca: DenseMatrix,
    /// Explained variance ratio of each component, length `n_pcs`.
    pub explained_variance_ratio: Vec<f64>,
    /// The kNN and UMAP connectivities on `pca`.
    pub neighbors: Neighbors,
    /// The 2-D UMAP layout `[n_cells, 2]` (scanpy `obsm["X_umap"]`) if requested.
    pub umap: Option<DenseMatrix>,
    /// The fitted preprocessing (steps, genes, messages).
    pub preprocess: FittedPreprocess,
    /// The number of components actually used (after clamping).
    pub n_pcs: usize,
}

impl ClusterResult {
    /// Number of clusters.
    pub fn n_clusters(&self) -> usize {
        self.sizes.len()
    }
}

/// scanpy's standard clustering workflow on `adata` (`[n_cells, n_genes]`, raw counts or
/// log1p-normalised; see [`pp::fit_transform`] for the input-kind detection):
/// `opts.preprocess` (default `normalize_total(1e4)` → `log1p` → `highly_variable_genes(
/// flavor="seurat", n_top_genes=2000)` → subset → `scale(max_value=10)`), `pp.pca(n_comps=
/// n_pcs)`, `pp.neighbors(n_neighbors)` ([`neighbors::neighbors`]), `tl.leiden` /
/// `tl.louvain` ([`cluster_graph`]) and optionally `tl.umap` ([`umap::umap_layout`]).
///
/// # Errors
/// - [`Error::Param`]: bad parameters (resolution `≤ 0`, `n_pcs = 0`, `n_neighbors < 2` or
///   `> n_cells`, preprocessing settings, UMAP settings).
/// - [`Error::InvalidInput`]: data the preprocessing refuses (negative or non-finite values,
///   `seurat` HVGs on data that are neither counts nor log1p data), fewer than 2 cells/genes.
/// - [`Error::Internal`]: a numerical failure (eigendecomposition, `leiden-rs`).
pub fn cluster_pipeline(adata: &AnnData, opts: &ClusterOptions) -> Result<ClusterResult> {
    if !(opts.community.resolution.is_finite() && opts.community.resolution > 0.0) {
        return Err(Error::Param(format!(
            "{}: resolution must be a positive number, got {}",
            opts.community.flavor.name(),
            opts.community.resolution
        )));
    }
    if opts.n_pcs == 0 {
        return Err(Error::Param("n_pcs must be at least 1".into()));
    }
    if opts.n_neighbors < 2 {
        return Err(Error::Param(format!(
            "n_neighbors must be at least 2 (the cell itself counts), got {}",
            opts.n_neighbors
        )));
    }
    if opts.n_neighbors > adata.n_obs() {
        return Err(Error::Param(format!(
            "n_neighbors = {} exceeds the number of cells ({})",
            opts.n_neighbors,
            adata.n_obs()
        )));
    }
    if let Some(u) = &opts.umap {
        u.validate()?;
    }
    let (pp, fitted) = pp::fit_transform(adata, &opts.preprocess)?;
    let x = pp.x.to_dense();
    drop(pp);
    let pca = Pca::fit(&x, opts.n_pcs)?;
    let scores = pca.transform(&x);
    drop(x);
    let nb = neighbors::neighbors(&scores, opts.n_neighbors)?;
    let labels = cluster_graph(&nb.connectivities, &opts.community)?;
    let layout = match &opts.umap {
        Some(u) => Some(umap::umap_layout(&nb.connectivities, &scores, u)?),
        None => None,
    };
    Ok(ClusterResult {
        sizes: cluster_sizes(&labels),
        labels,
        n_pcs: scores.n_cols,
        pca: scores,
        explained_variance_ratio: pca.explained_variance_ratio,
        neighbors: nb,
        umap: layout,
        preprocess: fitted,
    })
}

/// What `celldiff cluster` (and Python's `celldiff.tl.cluster`) writes for a
/// [`cluster_pipeline`] result, as scanpy stores the same steps: `obs[key]` (categorical
/// `"0"`, `"1"`, …), `obsm['X_pca']`, `obsm['X_umap']` (when computed), the neighbourhood graph
/// in `obsp` and `uns[neighbors_key or 'neighbors']` exactly as
/// `sc.pp.neighbors(adata, n_neighbors, use_rep="X_pca", key_added=...)` stores it,
/// `uns['pca']['variance_ratio']`, and `uns[key]` with the parameters, the number of clusters
/// and their sizes.
///
/// `n_top_genes` and `n_iterations` are recorded as given (0 = all genes, until stable).
pub fn cluster_annotations(
    res: &ClusterResult,
    opts: &ClusterOptions,
    key: &str,
    neighbors_key: Option<&str>,
    n_top_genes: usize,
) -> crate::io::h5ad::Annotations {
    let mut ann = crate::io::h5ad::Annotations::default();
    let n_clusters = res.n_clusters();
    ann.set_obs(
        key,
        crate::anndata::Column::Categorical {
            codes: res.labels.iter().map(|&l| l as i32).collect(),
            categories: (0..n_clusters).map(|c| c.to_string()).collect(),
        },
    );
    ann.set_obsm("X_pca", res.pca.clone());
    if let Some(u) = &res.umap {
        ann.set_obsm("X_umap", u.clone());
    }
    let nb = neighbors::scanpy_neighbors_uns(neighbors_key, opts.n_neighbors, "X_pca", res.n_pcs);
    ann.set_obsp(&nb.connectivities_key, res.neighbors.connectivities.clone());
    ann.set_obsp(&nb.distances_key, res.neighbors.knn.distance_matrix());
    ann.uns.insert(nb.key.clone(), nb.uns.clone());
    ann.uns.insert(
        "pca".into(),
        serde_json::json!({ "variance_ratio": res.explained_variance_ratio }),
    );
    let c = &opts.community;
    ann.uns.insert(
        key.to_string(),
        serde_json::json!({
            "params": {
                "flavor": c.flavor.name(),
                "resolution": c.resolution,
                "n_iterations": c.n_iterations,
                "n_neighbors": opts.n_neighbors,
                "n_pcs": res.n_pcs,
                "n_top_genes": n_top_genes,
                "n_genes_used": res.preprocess.genes.len(),
                "neighbors_key": nb.key,
                "random_state": c.seed,
                "seed": c.seed,
                "umap": res.umap.is_some(),
            },
            "n_clusters": n_clusters,
            "cluster_sizes": res.sizes,
        }),
    );
    ann
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::{ReadOptions, read};

    const SHARED: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared");

    fn shared(rel: &str) -> std::path::PathBuf {
        let p = std::path::Path::new(SHARED).join(rel);
        assert!(
            p.exists(),
            "shared file missing: {} (expected the `shared/` folder beside the repository)",
            p.display()
        );
        p
    }

    /// A 1-D little-endian `<i8` `.npy` array (numpy v1–v3 header).
    fn read_npy_i64(p: &std::path::Path) -> Vec<i64> {
        let bytes = std::fs::read(p).unwrap();
        assert_eq!(&bytes[..6], b"\x93NUMPY");
        let (hlen, start) = match bytes[6] {
            1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
            _ => (
                u32::from_le_bytes(bytes[8..12].try_into().unwrap()) as usize,
                12,
            ),
        };
        let header = std::str::from_utf8(&bytes[start..start + hlen]).unwrap();
        assert!(header.contains("'descr': '<i8'"), "{header}");
        assert!(header.contains("'fortran_order': False"), "{header}");
        bytes[start + hlen..]
            .chunks_exact(8)
            .map(|c| i64::from_le_bytes(c.try_into().unwrap()))
            .collect()
    }

    #[test]
    fn ari_matches_sklearn_fixture() {
        let text = std::fs::read_to_string(shared("fixtures/metrics/metrics_cases.json")).unwrap();
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        let cases = v["ari"].as_array().unwrap();
        assert!(!cases.is_empty());
        let labels = |c: &serde_json::Value, k: &str| -> Vec<usize> {
            c[k].as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_u64().unwrap() as usize)
                .collect()
        };
        for c in cases {
            let (t, p) = (labels(c, "labels_true"), labels(c, "labels_pred"));
            let want = c["ari"].as_f64().unwrap();
            let got = adjusted_rand_index(&t, &p).unwrap();
            assert!((got - want).abs() < 1e-12, "{got} vs sklearn {want}");
            assert!((adjusted_rand_index(&p, &t).unwrap() - want).abs() < 1e-12);
        }
    }

    #[test]
    fn ari_edge_cases() {
        assert_eq!(adjusted_rand_index(&[], &[]).unwrap(), 1.0);
        assert_eq!(adjusted_rand_index(&[3], &[1]).unwrap(), 1.0);
        assert_eq!(
            adjusted_rand_index(&[0, 0, 1, 1], &[5, 5, 2, 2]).unwrap(),
            1.0
        );
        // sklearn: adjusted_rand_score([0, 0, 1, 1], [0, 1, 0, 1]) = -0.5
        assert!((adjusted_rand_index(&[0, 0, 1, 1], &[0, 1, 0, 1]).unwrap() + 0.5).abs() < 1e-12);
        assert!(matches!(
            adjusted_rand_index(&[0, 1], &[0]),
            Err(Error::InvalidInput(_))
        ));
    }

    #[test]
    fn relabel_orders_by_size_then_first_member() {
        assert_eq!(
            relabel_by_size(&[7, 3, 3, 9, 9, 9, 7]),
            vec![1, 2, 2, 0, 0, 0, 1]
        );
        assert_eq!(cluster_sizes(&[1, 2, 2, 0, 0, 0, 1]), vec![3, 2, 2]);
        assert!(cluster_sizes(&[]).is_empty());
    }

    /// Two dense blocks joined by one weak edge, plus an isolated node.
    fn two_blocks() -> CsMat<f32> {
        let n = 11;
        let mut tri = sprs::TriMat::new((n, n));
        for block in [0..5usize, 5..10] {
            for i in block.clone() {
                for j in block.clone() {
                    if i != j {
                        tri.add_triplet(i, j, 1.0f32);
                    }
                }
            }
        }
        tri.add_triplet(4, 5, 0.1);
        tri.add_triplet(5, 4, 0.1);
        tri.to_csr()
    }

    #[test]
    fn leiden_and_louvain_split_two_blocks() {
        let g = two_blocks();
        for flavor in [ClusterFlavor::Leiden, ClusterFlavor::Louvain] {
            let opts = CommunityOptions {
                flavor,
                ..CommunityOptions::default()
            };
            let l = cluster_graph(&g, &opts).unwrap();
            assert_eq!(l[..5], [0; 5], "{flavor:?}: {l:?}");
            assert_eq!(l[5..10], [1; 5], "{flavor:?}: {l:?}");
            assert_eq!(l[10], 2, "the isolated node is its own cluster");
            // Higher resolution → at least as many clusters.
            let hi = cluster_graph(
                &g,
                &CommunityOptions {
                    flavor,
                    resolution: 5.0,
                    ..CommunityOptions::default()
                },
            )
            .unwrap();
            assert!(cluster_sizes(&hi).len() >= 3);
        }
    }

    #[test]
    fn cluster_graph_rejects_bad_input() {
        let g = two_blocks();
        for r in [0.0, -1.0, f64::NAN] {
            let opts = CommunityOptions {
                resolution: r,
                ..CommunityOptions::default()
            };
            assert!(matches!(cluster_graph(&g, &opts), Err(Error::Param(_))));
        }
        let rect: CsMat<f32> = CsMat::new((2, 3), vec![0, 1, 1], vec![1], vec![1.0]);
        assert!(matches!(
            cluster_graph(&rect, &CommunityOptions::default()),
            Err(Error::InvalidInput(_))
        ));
        let neg: CsMat<f32> = CsMat::new((2, 2), vec![0, 1, 2], vec![1, 0], vec![-1.0, -1.0]);
        assert!(matches!(
            cluster_graph(&neg, &CommunityOptions::default()),
            Err(Error::InvalidInput(_))
        ));
    }

    /// The fixture's scanpy 1.11.5 pipeline on the 10x mouse-brain subset (HVG seurat 200,
    /// scale max 10, PCA 50, 15 neighbours, Leiden resolution 1, igraph, 2 iterations),
    /// compared by ARI with scanpy's labels.
    #[test]
    fn leiden_matches_scanpy_on_brain10k() {
        let adata = read(
            &shared("data/mouse_brain_1m_10k_subset/brain_1m_10k_cells_1000_genes.h5ad"),
            &ReadOptions::default(),
        )
        .unwrap();
        let reference: Vec<usize> = read_npy_i64(&shared(
            "fixtures/scanpy_pp_brain10k/leiden_res1_labels.npy",
        ))
        .into_iter()
        .map(|v| v as usize)
        .collect();
        assert_eq!(reference.len(), adata.n_obs());
        let mut opts = ClusterOptions::default();
        opts.preprocess.n_top_genes = Some(200);
        let t0 = std::time::Instant::now();
        let res = cluster_pipeline(&adata, &opts).unwrap();
        let secs = t0.elapsed().as_secs_f64();
        let ari = adjusted_rand_index(&res.labels, &reference).unwrap();
        let n_ref = cluster_sizes(&relabel_by_size(&reference)).len();
        eprintln!(
            "brain10k Leiden: ARI vs scanpy = {ari:.4}; {} clusters (scanpy {n_ref}); \
             sizes {:?}; pipeline {secs:.1}s",
            res.n_clusters(),
            res.sizes
        );
        assert_eq!(res.pca.n_rows, adata.n_obs());
        assert_eq!(res.pca.n_cols, 50);
        assert!(ari >= 0.7, "ARI vs scanpy {ari}");
        // Same seed → same labels.
        let again = cluster_graph(&res.neighbors.connectivities, &opts.community).unwrap();
        assert_eq!(again, res.labels);
        // Louvain on the same graph agrees broadly with Leiden.
        let louv = cluster_graph(
            &res.neighbors.connectivities,
            &CommunityOptions {
                flavor: ClusterFlavor::Louvain,
                ..opts.community.clone()
            },
        )
        .unwrap();
        let ari_louv = adjusted_rand_index(&louv, &reference).unwrap();
        eprintln!(
            "brain10k Louvain: ARI vs scanpy Leiden = {ari_louv:.4}, {} clusters",
            cluster_sizes(&louv).len()
        );
        assert!(ari_louv > 0.5, "{ari_louv}");
    }

    #[test]
    fn pipeline_rejects_bad_parameters() {
        let adata = read(
            &shared("data/pbmc68k_reduced/pbmc68k_reduced_counts.h5ad"),
            &ReadOptions::default(),
        )
        .unwrap();
        let mut o = ClusterOptions::default();
        o.community.resolution = 0.0;
        assert!(matches!(cluster_pipeline(&adata, &o), Err(Error::Param(_))));
        let o = ClusterOptions {
            n_neighbors: 1,
            ..ClusterOptions::default()
        };
        assert!(matches!(cluster_pipeline(&adata, &o), Err(Error::Param(_))));
        let o = ClusterOptions {
            n_neighbors: 701,
            ..ClusterOptions::default()
        };
        assert!(matches!(cluster_pipeline(&adata, &o), Err(Error::Param(_))));
        let o = ClusterOptions {
            n_pcs: 0,
            ..ClusterOptions::default()
        };
        assert!(matches!(cluster_pipeline(&adata, &o), Err(Error::Param(_))));
    }
}
