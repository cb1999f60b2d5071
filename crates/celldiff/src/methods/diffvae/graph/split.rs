//! Held-out edges for link prediction (the GAE protocol of Kipf & Welling 2016: 10 % test,
//! 5 % validation edges and as many sampled non-edges) and their scores (ROC AUC, AP).

use super::*;

/// The held-out edges of [`mask_test_edges`]: undirected pairs `(i, j)`, `i < j`.
#[derive(Debug, Clone, PartialEq)]
pub struct EdgeSplit {
    /// The graph the model is trained on (the remaining edges, all nodes).
    pub train: CellGraph,
    /// Held-out validation edges.
    pub val: Vec<(usize, usize)>,
    /// Sampled non-edges for validation (as many as `val`).
    pub val_neg: Vec<(usize, usize)>,
    /// Held-out test edges.
    pub test: Vec<(usize, usize)>,
    /// Sampled non-edges for testing (as many as `test`).
    pub test_neg: Vec<(usize, usize)>,
}

/// Hides `⌊test_fraction · E⌋` undirected edges for testing and `⌊val_fraction · E⌋` for
/// validation (seeded shuffle), with as many uniformly sampled non-edges each (pairs `i ≠ j`
/// that are not edges of `graph`, test and validation non-edges disjoint), as
/// `mask_test_edges` of Kipf & Welling's `gae` code (defaults 0.1 and 0.05).
///
/// # Errors
/// - [`Error::Param`]: a fraction outside [0, 1) or `test_fraction + val_fraction ≥ 1`.
/// - [`Error::InvalidInput`]: fewer edges than needed for at least one test edge and one
///   training edge, or too few non-edges to sample.
pub fn mask_test_edges(
    graph: &CellGraph,
    test_fraction: f64,
    val_fraction: f64,
    seed: u64,
) -> Result<EdgeSplit> {
    let ok = |f: f64| f.is_finite() && (0.0..1.0).contains(&f);
    if !ok(test_fraction) || !ok(val_fraction) || test_fraction + val_fraction >= 1.0 {
        return Err(Error::Param(format!(
            "graph: test/validation fractions {test_fraction}/{val_fraction} must be in [0, 1) \
             with a sum below 1"
        )));
    }
    let e = graph.n_edges();
    let n_test = (e as f64 * test_fraction).floor() as usize;
    let n_val = (e as f64 * val_fraction).floor() as usize;
    if n_test == 0 || n_test + n_val >= e {
        return Err(Error::InvalidInput(format!(
            "graph: the correlation graph has only {e} edges; holding out {:.0} % for testing \
             needs at least {} (use more cells or a larger k)",
            test_fraction * 100.0,
            (1.0 / test_fraction.max(1e-9)).ceil() as usize
        )));
    }
    let n = graph.n_nodes as u128;
    let non_edges = n * n.saturating_sub(1) / 2 - e as u128;
    if non_edges < (n_test + n_val) as u128 {
        return Err(Error::InvalidInput(format!(
            "graph: only {non_edges} non-edges, fewer than the {} needed as negatives",
            n_test + n_val
        )));
    }
    let mut rng = StdRng::seed_from_u64(seed);
    let mut edges = graph.edges.clone();
    edges.shuffle(&mut rng);
    let test = edges[..n_test].to_vec();
    let val = edges[n_test..n_test + n_val].to_vec();
    let train = CellGraph::new(graph.n_nodes, edges[n_test + n_val..].iter().copied())?;
    let mut taken: HashSet<(usize, usize)> = HashSet::new();
    let mut sample = |count: usize, rng: &mut StdRng| -> Result<Vec<(usize, usize)>> {
        let mut out = Vec::with_capacity(count);
        let budget = 1000 + 100 * count;
        for _ in 0..budget {
            if out.len() == count {
                break;
            }
            let a = rng.random_range(0..graph.n_nodes);
            let b = rng.random_range(0..graph.n_nodes);
            if a == b {
                continue;
            }
            let p = (a.min(b), a.max(b));
            if graph.has_edge(p.0, p.1) || !taken.insert(p) {
                continue;
            }
            out.push(p);
        }
        if out.len() < count {
            return Err(Error::InvalidInput(format!(
                "graph: could not sample {count} non-edges (the graph is too dense)"
            )));
        }
        Ok(out)
    };
    let test_neg = sample(n_test, &mut rng)?;
    let val_neg = sample(n_val, &mut rng)?;
    Ok(EdgeSplit {
        train,
        val,
        val_neg,
        test,
        test_neg,
    })
}

/// Average precision of `scores` for the binary `labels` (scikit-learn's
/// `average_precision_score`): `Σ_n (R_n − R_{n−1}) P_n` over the distinct score thresholds in
/// decreasing order (tied scores form one threshold). Unitless, in [0, 1]; NaN without
/// positives.
///
/// # Panics
/// If the lengths differ (a programming error).
pub fn average_precision(scores: &[f64], labels: &[bool]) -> f64 {
    assert_eq!(
        scores.len(),
        labels.len(),
        "average_precision: lengths differ"
    );
    let n_pos = labels.iter().filter(|&&l| l).count();
    if n_pos == 0 {
        return f64::NAN;
    }
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_unstable_by(|&a, &b| scores[b].total_cmp(&scores[a]));
    let (mut tp, mut fp, mut prev_recall, mut ap) = (0usize, 0usize, 0.0f64, 0.0f64);
    let mut k = 0;
    while k < order.len() {
        let s = scores[order[k]];
        while k < order.len() && scores[order[k]] == s {
            if labels[order[k]] {
                tp += 1;
            } else {
                fp += 1;
            }
            k += 1;
        }
        let recall = tp as f64 / n_pos as f64;
        ap += (recall - prev_recall) * tp as f64 / (tp + fp) as f64;
        prev_recall = recall;
    }
    ap
}

/// ROC AUC and average precision of held-out pairs.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LinkScores {
    /// ROC AUC of `σ(z*_i · z*_j)`, edges vs non-edges (0.5 = chance).
    pub auc: f64,
    /// Average precision (chance = the fraction of edges, 0.5 for balanced sets).
    pub ap: f64,
}

/// [`LinkScores`] of the edge probabilities `σ(z*_i · z*_j)` for positive pairs `pos` and
/// negative pairs `neg` (GAE's `get_roc_score`); `z_star` is `[N, d]`. NaN when either set is
/// empty.
pub fn link_scores(
    z_star: &DenseMatrix,
    pos: &[(usize, usize)],
    neg: &[(usize, usize)],
) -> LinkScores {
    let p = |&(i, j): &(usize, usize)| -> f64 {
        let dot: f64 = z_star
            .row(i)
            .iter()
            .zip(z_star.row(j))
            .map(|(&a, &b)| a as f64 * b as f64)
            .sum();
        sigmoid(dot)
    };
    let scores: Vec<f64> = pos.iter().chain(neg).map(p).collect();
    let labels: Vec<bool> = (0..pos.len() + neg.len()).map(|k| k < pos.len()).collect();
    if pos.is_empty() || neg.is_empty() {
        return LinkScores {
            auc: f64::NAN,
            ap: f64::NAN,
        };
    }
    LinkScores {
        auc: roc_auc(&scores, &labels),
        ap: average_precision(&scores, &labels),
    }
}

pub(super) fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}
