//! Gene "velocity" along an interpolation path (Sadria & Layton, Genome Biology 2025,
//! "master regulators"; Fig. 5e), `celldiff velocity`.
//!
//! For decoded expression x(λ_0), …, x(λ_{n−1}) (`[n_steps, n_genes]`, rows ordered by λ),
//! the velocity of gene g at step k is the first difference v_k = x_{k+1} − x_k, optionally
//! averaged over non-overlapping windows of w steps: v̄_j = (x_{(j+1)w} − x_{jw}) / w.
//!
//! Rankings, each for [`Direction`] `abs` (the paper: |v|), `up` (the published code: largest
//! positive v) or `down` (most negative v):
//! - per-gene mean score over all steps ([`Velocity::ranking`]);
//! - the top-k genes of each of the first s steps and their union (the paper: top 10 of each
//!   of the first 40 steps, 400 genes, handed to enrichment analysis);
//! - |x_m − x_0|, the expression change between step 0 and step m (Fig. 5e).

use serde::{Deserialize, Serialize};

use crate::anndata::DenseMatrix;
use crate::error::{Error, Result};

/// Which velocities rank first.
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// Largest |v| (the paper).
    Abs,
    /// Largest positive v (the published code).
    Up,
    /// Most negative v.
    Down,
}

impl Direction {
    /// The ranking score of a velocity (higher ranks first).
    pub fn score(self, v: f64) -> f64 {
        match self {
            Direction::Abs => v.abs(),
            Direction::Up => v,
            Direction::Down => -v,
        }
    }
}

/// Options of [`velocity`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VelocityOptions {
    /// Window w (1 = plain first differences).
    pub window: usize,
    /// Ranking direction.
    pub direction: Direction,
    /// Genes kept per step (paper: 10).
    pub top_k: usize,
    /// Steps whose top genes form the union (paper: 40).
    pub first_steps: usize,
    /// Step m of |x_m − x_0| (None = the last step).
    pub diff_step: Option<usize>,
}

impl Default for VelocityOptions {
    fn default() -> Self {
        Self {
            window: 1,
            direction: Direction::Abs,
            top_k: 10,
            first_steps: 40,
            diff_step: None,
        }
    }
}

/// What [`velocity`] returns (gene indices refer to the columns of the input).
#[derive(Debug, Clone)]
pub struct Velocity {
    /// Velocities `[n_windows, n_genes]` (expression units per λ step).
    pub velocity: DenseMatrix,
    /// Genes by decreasing mean score: `(gene, mean score, mean velocity)`.
    pub ranking: Vec<(usize, f64, f64)>,
    /// For each of the first `first_steps` windows, its top-k `(gene, velocity)`.
    pub top_per_step: Vec<Vec<(usize, f64)>>,
    /// Union of `top_per_step`, in order of first appearance.
    pub union: Vec<usize>,
    /// Genes by decreasing |x_m − x_0|: `(gene, x_m − x_0)`.
    pub diff: Vec<(usize, f64)>,
    /// The m used for `diff`.
    pub diff_step: usize,
}

impl Velocity {
    /// 1-based rank of `gene` in [`Velocity::ranking`].
    pub fn rank_of(&self, gene: usize) -> Option<usize> {
        self.ranking.iter().position(|r| r.0 == gene).map(|p| p + 1)
    }

    /// 1-based rank of `gene` in [`Velocity::diff`].
    pub fn diff_rank_of(&self, gene: usize) -> Option<usize> {
        self.diff.iter().position(|r| r.0 == gene).map(|p| p + 1)
    }
}

/// Gene velocities of `x` (`[n_steps, n_genes]`, rows in λ order: e.g. X of a
/// `celldiff interpolate` output sorted by `obs['lambda']`).
///
/// # Errors
/// [`Error::Param`] for a window of 0, `top_k = 0`, fewer than `window + 1` rows, or a
/// `diff_step` past the last row.
pub fn velocity(x: &DenseMatrix, opts: &VelocityOptions) -> Result<Velocity> {
    let (n, g) = (x.n_rows, x.n_cols);
    let w = opts.window;
    if w == 0 || opts.top_k == 0 {
        return Err(Error::Param("window and top_k must be at least 1".into()));
    }
    if n < w + 1 {
        return Err(Error::Param(format!(
            "velocity needs at least window + 1 = {} interpolation steps, got {n}",
            w + 1
        )));
    }
    let m = opts.diff_step.unwrap_or(n - 1);
    if m >= n || m == 0 {
        return Err(Error::Param(format!(
            "diff_step must be in 1..{n} (number of steps), got {m}"
        )));
    }
    let n_win = (n - 1) / w;
    let mut v = DenseMatrix::zeros(n_win, g);
    for j in 0..n_win {
        let (a, b) = (x.row(j * w), x.row((j + 1) * w));
        for (k, o) in v.row_mut(j).iter_mut().enumerate() {
            *o = (b[k] - a[k]) / w as f32;
        }
    }
    let dir = opts.direction;
    let mut mean_score = vec![0.0f64; g];
    let mut mean_v = vec![0.0f64; g];
    for j in 0..n_win {
        for (k, &val) in v.row(j).iter().enumerate() {
            mean_score[k] += dir.score(val as f64);
            mean_v[k] += val as f64;
        }
    }
    let mut ranking: Vec<(usize, f64, f64)> = (0..g)
        .map(|k| (k, mean_score[k] / n_win as f64, mean_v[k] / n_win as f64))
        .collect();
    ranking.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));

    let mut top_per_step = Vec::new();
    let mut union = Vec::new();
    let mut seen = vec![false; g];
    for j in 0..opts.first_steps.min(n_win) {
        let row = v.row(j);
        let mut idx: Vec<usize> = (0..g).collect();
        idx.sort_by(|&a, &b| {
            dir.score(row[b] as f64)
                .total_cmp(&dir.score(row[a] as f64))
                .then(a.cmp(&b))
        });
        let top: Vec<(usize, f64)> = idx
            .into_iter()
            .take(opts.top_k)
            .map(|k| (k, row[k] as f64))
            .collect();
        for &(k, _) in &top {
            if !seen[k] {
                seen[k] = true;
                union.push(k);
            }
        }
        top_per_step.push(top);
    }
    let (x0, xm) = (x.row(0), x.row(m));
    let mut diff: Vec<(usize, f64)> = (0..g).map(|k| (k, (xm[k] - x0[k]) as f64)).collect();
    diff.sort_by(|a, b| b.1.abs().total_cmp(&a.1.abs()).then(a.0.cmp(&b.0)));
    Ok(Velocity {
        velocity: v,
        ranking,
        top_per_step,
        union,
        diff,
        diff_step: m,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Three genes over 5 steps: g0 rises fast, g1 falls slowly, g2 is flat.
    fn path() -> DenseMatrix {
        let mut d = Vec::new();
        for i in 0..5 {
            let t = i as f32;
            d.extend([2.0 * t, 10.0 - 0.5 * t, 3.0]);
        }
        DenseMatrix::from_vec(5, 3, d).unwrap()
    }

    #[test]
    fn first_differences_and_rankings() {
        let v = velocity(&path(), &VelocityOptions::default()).unwrap();
        assert_eq!((v.velocity.n_rows, v.velocity.n_cols), (4, 3));
        assert_eq!(v.velocity.row(0), &[2.0, -0.5, 0.0]);
        let order: Vec<usize> = v.ranking.iter().map(|r| r.0).collect();
        assert_eq!(order, vec![0, 1, 2]);
        assert_eq!(v.diff[0], (0, 8.0));
        assert_eq!(v.diff[1], (1, -2.0));
        let down = velocity(
            &path(),
            &VelocityOptions {
                direction: Direction::Down,
                top_k: 1,
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(down.ranking[0].0, 1);
        assert_eq!(down.union, vec![1]);
        assert_eq!(down.rank_of(0), Some(3));
    }

    #[test]
    fn windows_average_the_differences() {
        let v = velocity(
            &path(),
            &VelocityOptions {
                window: 2,
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!((v.velocity.n_rows, v.velocity.n_cols), (2, 3));
        assert_eq!(v.velocity.row(1), &[2.0, -0.5, 0.0]);
    }

    #[test]
    fn bad_options_are_errors() {
        let bad = VelocityOptions {
            window: 0,
            ..Default::default()
        };
        assert!(velocity(&path(), &bad).is_err());
        let bad = VelocityOptions {
            diff_step: Some(5),
            ..Default::default()
        };
        assert!(velocity(&path(), &bad).is_err());
        assert!(velocity(&path().select_rows(&[0]), &VelocityOptions::default()).is_err());
    }
}
