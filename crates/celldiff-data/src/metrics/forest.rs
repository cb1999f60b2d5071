//! A small binary random forest (CART, Gini impurity) with sklearn
//! `RandomForestClassifier(n_estimators, max_depth, max_features="sqrt", bootstrap=True)`
//! semantics and `predict_proba` output.
//!
//! Written here instead of taken from a crate (facts from `/work/shared/CRATES.md`):
//! `smartcore 0.7`'s `RandomForestClassifier` has no `predict_proba`, only hard votes, which
//! makes a ROC AUC of 1000 trees coarse and not comparable with sklearn's; `linfa-ensemble`
//! returns vote fractions, not mean leaf class fractions, and pins `sprs =0.11.2` and
//! `ndarray 0.16` into the lockfile. The forest needed here is ~200 lines.
//!
//! Per tree (seeded from the forest seed and the tree index, so results do not depend on
//! thread scheduling): a bootstrap sample of `n` draws with replacement, kept as integer
//! sample weights; at each node `floor(sqrt(n_features))` features are drawn without
//! replacement (constant features are skipped and do not count, as in sklearn), and the
//! threshold minimising the weighted Gini impurity of the children is chosen among the
//! midpoints between consecutive distinct values; `x <= threshold` goes left. A node is a
//! leaf at `max_depth`, when pure, when it holds a single distinct sample, or when all
//! features are constant in it. A leaf stores the weighted fraction of positives; the
//! forest's probability is the mean over trees (sklearn `predict_proba[:, 1]`).
//!
//! Trees are built in parallel with rayon; prediction is parallel over samples and sums the
//! trees in index order, so the output is bit-for-bit deterministic for a given seed.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rayon::prelude::*;

/// Hyper-parameters of [`RandomForest::fit`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct ForestParams {
    pub n_trees: usize,
    pub max_depth: usize,
    pub seed: u64,
}

#[derive(Debug, Clone, Copy)]
enum Node {
    Leaf {
        p: f64,
    },
    Split {
        feature: u32,
        threshold: f32,
        left: u32,
        right: u32,
    },
}

/// A fitted forest of binary classification trees.
#[derive(Debug, Clone)]
pub(crate) struct RandomForest {
    trees: Vec<Vec<Node>>,
    n_features: usize,
}

/// SplitMix64: decorrelates per-tree seeds derived from consecutive integers.
fn splitmix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

struct TreeBuilder<'a> {
    /// Column-major features: `xt[f * n + i]`.
    xt: &'a [f32],
    n: usize,
    d: usize,
    y: &'a [bool],
    w: Vec<u32>,
    max_depth: usize,
    max_features: usize,
    rng: StdRng,
    nodes: Vec<Node>,
    features: Vec<usize>,
    buf: Vec<(f32, u32, bool)>,
}

impl TreeBuilder<'_> {
    fn build(&mut self, samples: &mut [u32], depth: usize) -> u32 {
        let (mut wt, mut w1) = (0.0f64, 0.0f64);
        for &s in samples.iter() {
            let w = self.w[s as usize] as f64;
            wt += w;
            if self.y[s as usize] {
                w1 += w;
            }
        }
        let idx = self.nodes.len() as u32;
        self.nodes.push(Node::Leaf { p: w1 / wt });
        if depth >= self.max_depth || w1 == 0.0 || w1 == wt || samples.len() < 2 {
            return idx;
        }
        let Some((feature, threshold)) = self.best_split(samples, wt, w1) else {
            return idx;
        };
        // Partition in place: x <= threshold first.
        let col = &self.xt[feature * self.n..(feature + 1) * self.n];
        let mut split = 0;
        for i in 0..samples.len() {
            if col[samples[i] as usize] <= threshold {
                samples.swap(i, split);
                split += 1;
            }
        }
        let (l, r) = samples.split_at_mut(split);
        let left = self.build(l, depth + 1);
        let right = self.build(r, depth + 1);
        self.nodes[idx as usize] = Node::Split {
            feature: feature as u32,
            threshold,
            left,
            right,
        };
        idx
    }

    /// Best (feature, threshold) by weighted Gini, or `None` if every feature is constant.
    fn best_split(&mut self, samples: &[u32], wt: f64, w1: f64) -> Option<(usize, f32)> {
        // Maximising Σ_children (w₁² + w₀²) / w minimises the weighted Gini impurity.
        let mut best: Option<(f64, usize, f32)> = None;
        let mut visited = 0;
        let d = self.d;
        for pos in 0..d {
            if visited >= self.max_features {
                break;
            }
            // Lazy Fisher–Yates: draw features without replacement.
            let pick = self.rng.random_range(pos..d);
            self.features.swap(pos, pick);
            let f = self.features[pos];
            let col = &self.xt[f * self.n..(f + 1) * self.n];
            self.buf.clear();
            self.buf.extend(
                samples
                    .iter()
                    .map(|&s| (col[s as usize], self.w[s as usize], self.y[s as usize])),
            );
            self.buf.sort_unstable_by(|a, b| a.0.total_cmp(&b.0));
            if self.buf[0].0 == self.buf[self.buf.len() - 1].0 {
                continue; // constant in this node: skipped, not counted
            }
            visited += 1;
            let (mut lw, mut lw1) = (0.0f64, 0.0f64);
            for i in 0..self.buf.len() - 1 {
                let (v, w, yy) = self.buf[i];
                lw += w as f64;
                if yy {
                    lw1 += w as f64;
                }
                let next = self.buf[i + 1].0;
                if next <= v {
                    continue;
                }
                let (rw, rw1) = (wt - lw, w1 - lw1);
                let (lw0, rw0) = (lw - lw1, rw - rw1);
                let proxy = (lw1 * lw1 + lw0 * lw0) / lw + (rw1 * rw1 + rw0 * rw0) / rw;
                if best.is_none_or(|b| proxy > b.0) {
                    let mut thr = v + (next - v) / 2.0;
                    if thr >= next || !thr.is_finite() {
                        thr = v; // as sklearn: never let the threshold reach the next value
                    }
                    best = Some((proxy, f, thr));
                }
            }
        }
        best.map(|(_, f, t)| (f, t))
    }
}

impl RandomForest {
    /// Fits a forest on `x` (row-major `[n, d]`) and binary labels `y` (`true` = positive).
    pub(crate) fn fit(x: &[f32], n: usize, d: usize, y: &[bool], params: ForestParams) -> Self {
        assert_eq!(x.len(), n * d);
        assert_eq!(y.len(), n);
        let mut xt = vec![0.0f32; n * d];
        for i in 0..n {
            for f in 0..d {
                xt[f * n + i] = x[i * d + f];
            }
        }
        let max_features = ((d as f64).sqrt().floor() as usize).clamp(1, d.max(1));
        let trees = (0..params.n_trees)
            .into_par_iter()
            .map(|t| {
                let seed = splitmix64(params.seed ^ splitmix64(t as u64));
                let mut rng = StdRng::seed_from_u64(seed);
                let mut w = vec![0u32; n];
                for _ in 0..n {
                    w[rng.random_range(0..n)] += 1;
                }
                let mut samples: Vec<u32> = (0..n as u32).filter(|&i| w[i as usize] > 0).collect();
                let mut b = TreeBuilder {
                    xt: &xt,
                    n,
                    d,
                    y,
                    w,
                    max_depth: params.max_depth,
                    max_features,
                    rng,
                    nodes: Vec::new(),
                    features: (0..d).collect(),
                    buf: Vec::with_capacity(samples.len()),
                };
                b.build(&mut samples, 0);
                b.nodes
            })
            .collect();
        Self {
            trees,
            n_features: d,
        }
    }

    /// P(positive) for each row of `x` (row-major `[m, d]`): the mean over trees of the leaf's
    /// positive fraction (sklearn `predict_proba(x)[:, 1]`).
    pub(crate) fn predict_proba(&self, x: &[f32]) -> Vec<f64> {
        let d = self.n_features;
        assert_eq!(x.len() % d.max(1), 0);
        let m = x.len() / d.max(1);
        (0..m)
            .into_par_iter()
            .map(|i| {
                let row = &x[i * d..(i + 1) * d];
                let mut sum = 0.0;
                for tree in &self.trees {
                    let mut node = 0usize;
                    loop {
                        match tree[node] {
                            Node::Leaf { p } => {
                                sum += p;
                                break;
                            }
                            Node::Split {
                                feature,
                                threshold,
                                left,
                                right,
                            } => {
                                node = if row[feature as usize] <= threshold {
                                    left as usize
                                } else {
                                    right as usize
                                };
                            }
                        }
                    }
                }
                sum / self.trees.len() as f64
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn separable_and_random_labels() {
        // Feature 0 separates the classes; features 1-3 are noise.
        let mut rng = StdRng::seed_from_u64(1);
        let n = 200;
        let d = 4;
        let mut x = Vec::with_capacity(n * d);
        let mut y = Vec::with_capacity(n);
        for i in 0..n {
            let pos = i % 2 == 0;
            y.push(pos);
            x.push(if pos { 1.0 } else { -1.0 } + rng.random_range(-0.5..0.5f32));
            for _ in 1..d {
                x.push(rng.random_range(-1.0..1.0f32));
            }
        }
        let params = ForestParams {
            n_trees: 50,
            max_depth: 3,
            seed: 3,
        };
        let rf = RandomForest::fit(&x, n, d, &y, params);
        let p = rf.predict_proba(&x);
        let auc = super::super::roc_auc(&p, &y);
        assert!(auc > 0.99, "separable AUC {auc}");
        // A single depth-1 stump on the separating feature only: probabilities 0/1.
        let x1: Vec<f32> = (0..n).map(|i| x[i * d]).collect();
        let stump = RandomForest::fit(
            &x1,
            n,
            1,
            &y,
            ForestParams {
                n_trees: 1,
                max_depth: 1,
                seed: 0,
            },
        );
        let p1 = stump.predict_proba(&x1);
        for (pi, yi) in p1.iter().zip(&y) {
            assert_eq!(*pi, if *yi { 1.0 } else { 0.0 });
        }
        // Determinism.
        assert_eq!(RandomForest::fit(&x, n, d, &y, params).predict_proba(&x), p);
    }
}
