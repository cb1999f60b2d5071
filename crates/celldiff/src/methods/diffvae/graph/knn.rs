//! The cell graph of Graph-DiffVAE: Pearson-correlation kNN graph of the cells (blocked GEMMs)
//! and its symmetrically normalised adjacency Â = D^{-1/2}(A + I)D^{-1/2} (Kipf & Welling 2017,
//! Eq. 2).

use super::*;

/// An undirected graph on `n_nodes` cells without self-loops.
#[derive(Debug, Clone, PartialEq)]
pub struct CellGraph {
    /// Number of nodes (cells) `N`.
    pub n_nodes: usize,
    /// The undirected edges `(i, j)` with `i < j`, sorted and unique.
    pub edges: Vec<(usize, usize)>,
}

impl CellGraph {
    /// The graph with the given undirected edges (any orientation; duplicates and
    /// self-loops are dropped).
    ///
    /// # Errors
    /// [`Error::InvalidInput`] if an endpoint is `≥ n_nodes`.
    pub fn new(n_nodes: usize, edges: impl IntoIterator<Item = (usize, usize)>) -> Result<Self> {
        let mut e: Vec<(usize, usize)> = Vec::new();
        for (a, b) in edges {
            if a >= n_nodes || b >= n_nodes {
                return Err(Error::InvalidInput(format!(
                    "graph: edge ({a}, {b}) is out of range for {n_nodes} nodes"
                )));
            }
            if a != b {
                e.push((a.min(b), a.max(b)));
            }
        }
        e.sort_unstable();
        e.dedup();
        Ok(Self { n_nodes, edges: e })
    }

    /// Number of undirected edges.
    pub fn n_edges(&self) -> usize {
        self.edges.len()
    }

    /// Whether `i` and `j` are linked (either order).
    pub fn has_edge(&self, i: usize, j: usize) -> bool {
        self.edges.binary_search(&(i.min(j), i.max(j))).is_ok()
    }

    /// The symmetric 0/1 adjacency `A` (no self-loops) as CSR `[N, N]`, sorted indices.
    pub fn adjacency(&self) -> CsMat<f32> {
        let mut rows: Vec<Vec<usize>> = vec![Vec::new(); self.n_nodes];
        for &(a, b) in &self.edges {
            rows[a].push(b);
            rows[b].push(a);
        }
        let mut indptr = vec![0];
        let mut indices = Vec::with_capacity(2 * self.edges.len());
        for r in &mut rows {
            r.sort_unstable();
            indices.extend_from_slice(r);
            indptr.push(indices.len());
        }
        let data = vec![1.0; indices.len()];
        CsMat::new((self.n_nodes, self.n_nodes), indptr, indices, data)
    }
}

/// The symmetrically normalised adjacency with self-loops `Â = D^−½ (A + I) D^−½` of a
/// [`CellGraph`] as an edge list, `Â[dst[e], src[e]] = weight[e]` (Kipf & Welling 2017, Eq. 2;
/// `d_i = 1 + deg(i)`, `Â_ij = 1 / √(d_i d_j)` for an edge or `i = j`, else 0).
#[derive(Debug, Clone, PartialEq)]
pub struct NormalizedAdjacency {
    /// Number of nodes `N`.
    pub n_nodes: usize,
    /// Column (source node) of each stored entry, in CSR order (by `dst`, then `src`).
    pub src: Vec<usize>,
    /// Row (destination node) of each stored entry.
    pub dst: Vec<usize>,
    /// The entries (unitless, in (0, 1]).
    pub weight: Vec<f32>,
}

impl NormalizedAdjacency {
    /// `Â` as CSR `[N, N]` with sorted indices.
    pub fn to_csr(&self) -> CsMat<f32> {
        let mut indptr = vec![0usize; self.n_nodes + 1];
        for &d in &self.dst {
            indptr[d + 1] += 1;
        }
        for i in 0..self.n_nodes {
            indptr[i + 1] += indptr[i];
        }
        CsMat::new(
            (self.n_nodes, self.n_nodes),
            indptr,
            self.src.clone(),
            self.weight.clone(),
        )
    }

    /// The propagation operator `H ↦ Â H` of [`GraphVae`] on `device`.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] for an inconsistent edge list (see [`Propagation::new`]).
    pub fn propagation(&self, device: &Device) -> Result<Propagation> {
        Propagation::new(self.n_nodes, &self.src, &self.dst, &self.weight, device)
    }
}

/// `Â = D^−½ (A + I) D^−½` of `graph` (see [`NormalizedAdjacency`]).
pub fn normalized_adjacency(graph: &CellGraph) -> NormalizedAdjacency {
    let n = graph.n_nodes;
    let mut rows: Vec<Vec<usize>> = (0..n).map(|i| vec![i]).collect();
    for &(a, b) in &graph.edges {
        rows[a].push(b);
        rows[b].push(a);
    }
    let inv_sqrt: Vec<f64> = rows.iter().map(|r| 1.0 / (r.len() as f64).sqrt()).collect();
    let nnz = n + 2 * graph.edges.len();
    let (mut src, mut dst, mut weight) = (
        Vec::with_capacity(nnz),
        Vec::with_capacity(nnz),
        Vec::with_capacity(nnz),
    );
    for (i, r) in rows.iter_mut().enumerate() {
        r.sort_unstable();
        for &j in r.iter() {
            dst.push(i);
            src.push(j);
            weight.push((inv_sqrt[i] * inv_sqrt[j]) as f32);
        }
    }
    NormalizedAdjacency {
        n_nodes: n,
        src,
        dst,
        weight,
    }
}

/// For every row `i` of `a` (`[n, d]`), the up to `k` other rows `j ≠ i` with the largest
/// inner product `a_i · a_j` (at least `min_score` if given), by decreasing score, ties by the
/// smaller index. Blocked GEMM (`BLOCK` rows against all rows), rayon-parallel over blocks.
pub(super) fn blocked_top_k(
    a: &DenseMatrix,
    k: usize,
    min_score: Option<f32>,
) -> Vec<Vec<(usize, f32)>> {
    let (n, d) = (a.n_rows, a.n_cols);
    let m = Mat::<f32>::from_fn(n, d, |i, j| a.data[i * d + j]);
    let blocks: Vec<(usize, usize)> = (0..n)
        .step_by(BLOCK)
        .map(|r0| (r0, (r0 + BLOCK).min(n)))
        .collect();
    let per_block: Vec<Vec<Vec<(usize, f32)>>> = blocks
        .par_iter()
        .map(|&(c0, c1)| {
            let mut g = Mat::<f32>::zeros(n, c1 - c0);
            faer::linalg::matmul::matmul(
                g.as_mut(),
                Accum::Replace,
                m.as_ref(),
                m.as_ref().subrows(c0, c1 - c0).transpose(),
                1.0,
                Par::Seq,
            );
            let mut out = Vec::with_capacity(c1 - c0);
            let mut cand: Vec<usize> = Vec::with_capacity(n);
            for c in 0..c1 - c0 {
                let i = c0 + c;
                let col = g.col_as_slice(c);
                let cmp = |x: &usize, y: &usize| col[*y].total_cmp(&col[*x]).then(x.cmp(y));
                cand.clear();
                cand.extend((0..n).filter(|&j| j != i && min_score.is_none_or(|t| col[j] >= t)));
                if k < cand.len() {
                    if k > 0 {
                        cand.select_nth_unstable_by(k - 1, cmp);
                    }
                    cand.truncate(k);
                }
                cand.sort_unstable_by(cmp);
                out.push(cand.iter().map(|&j| (j, col[j])).collect());
            }
            out
        })
        .collect();
    per_block.into_iter().flatten().collect()
}

/// The rows of `x` (`[n, d]`) centred and scaled to unit Euclidean norm (in `f64`), so that
/// `u_i · u_j` is the Pearson correlation of rows `i` and `j`; a constant row becomes zeros.
/// Returns the rows and the number of constant rows.
pub(super) fn centred_unit_rows(x: &DenseMatrix) -> (DenseMatrix, usize) {
    let (n, d) = (x.n_rows, x.n_cols);
    let mut u = DenseMatrix::zeros(n, d);
    let mut n_constant = 0;
    for i in 0..n {
        let row = x.row(i);
        let mean = row.iter().map(|&v| v as f64).sum::<f64>() / d as f64;
        let norm = row
            .iter()
            .map(|&v| (v as f64 - mean).powi(2))
            .sum::<f64>()
            .sqrt();
        if norm > 1e-12 {
            for (o, &v) in u.row_mut(i).iter_mut().zip(row) {
                *o = ((v as f64 - mean) / norm) as f32;
            }
        } else {
            n_constant += 1;
        }
    }
    (u, n_constant)
}

/// The Pearson-correlation `k`-nearest-neighbour graph of the rows of `x` (`[n_cells,
/// n_features]`): every cell is linked to the `k` other cells with the highest Pearson
/// correlation of their feature rows (ties by the smaller index), then symmetrised (an edge
/// when either cell chose the other). Self-loops are not stored (they are added by
/// [`normalized_adjacency`]).
///
/// Rows are centred and scaled to unit norm in `f64` (a constant row has correlation 0 with
/// every cell; it is linked by the tie rule and reported in the log), and correlations are the
/// inner products of blocks of 256 rows with all rows (`faer` GEMM in `f32`), so memory is
/// `O(256 · n_cells)` beyond the features.
///
/// Returns the graph and the number of constant rows.
///
/// # Errors
/// - [`Error::Param`]: `k = 0` or `k ≥ n_cells`.
/// - [`Error::InvalidInput`]: `x` has no columns or holds NaN/±Inf (naming the cell).
pub fn pearson_knn_graph(x: &DenseMatrix, k: usize) -> Result<(CellGraph, usize)> {
    let (n, d) = (x.n_rows, x.n_cols);
    if k == 0 {
        return Err(Error::Param(
            "graph: k (correlation neighbours per cell) must be at least 1".into(),
        ));
    }
    if k >= n {
        return Err(Error::Param(format!(
            "graph: k = {k} needs more than {k} cells, got {n}"
        )));
    }
    if d == 0 || x.data.len() != n * d {
        return Err(Error::InvalidInput(format!(
            "graph: the feature matrix [{n}, {d}] has no columns or {} values",
            x.data.len()
        )));
    }
    if let Some(p) = x.data.iter().position(|v| !v.is_finite()) {
        return Err(Error::InvalidInput(format!(
            "graph: the features hold {} at cell {}, feature {}",
            x.data[p],
            p / d,
            p % d
        )));
    }
    let (u, n_constant) = centred_unit_rows(x);
    let top = blocked_top_k(&u, k, None);
    let edges = top
        .iter()
        .enumerate()
        .flat_map(|(i, t)| t.iter().map(move |&(j, _)| (i, j)));
    Ok((CellGraph::new(n, edges)?, n_constant))
}
