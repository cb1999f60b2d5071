//! Rank statistics: ROC AUC (sklearn `roc_auc_score`), Pearson and Spearman correlation
//! (scipy `pearsonr`, `spearmanr`), and average ranks (scipy `rankdata(method="average")`).

/// 1-based ranks of `x` with ties given their average rank (scipy
/// `scipy.stats.rankdata(x, method="average")`). Values are ordered with `f64::total_cmp`.
pub fn average_ranks(x: &[f64]) -> Vec<f64> {
    let n = x.len();
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&a, &b| x[a].total_cmp(&x[b]).then(a.cmp(&b)));
    let mut ranks = vec![0.0; n];
    let mut i = 0;
    while i < n {
        let mut j = i + 1;
        while j < n && x[order[j]] == x[order[i]] {
            j += 1;
        }
        // Positions i..j (0-based) share ranks i+1..=j: average (i + 1 + j) / 2.
        let r = (i + 1 + j) as f64 / 2.0;
        for &o in &order[i..j] {
            ranks[o] = r;
        }
        i = j;
    }
    ranks
}

/// Area under the ROC curve of `scores` for the binary `labels` (`true` = positive class),
/// computed exactly as the Mann–Whitney U statistic with average ranks for tied scores:
/// `AUC = (R₊ − n₊(n₊+1)/2) / (n₊ n₋)`, where `R₊` is the rank sum of the positives.
///
/// Equals sklearn `sklearn.metrics.roc_auc_score(labels, scores)` (ties count one half).
/// 0.5 means the scores do not separate the classes; 1.0 means every positive scores above
/// every negative. In the evaluation protocol (scDiffusion/SCLD), positives are generated
/// cells and scores are a classifier's P(generated); lower (towards 0.5) is better.
///
/// Returns `NaN` if either class is empty (sklearn raises a `ValueError`). Scores should be
/// finite; NaN would be ordered above +∞.
///
/// # Panics
/// If `scores.len() != labels.len()`.
pub fn roc_auc(scores: &[f64], labels: &[bool]) -> f64 {
    assert_eq!(
        scores.len(),
        labels.len(),
        "roc_auc: {} scores, {} labels",
        scores.len(),
        labels.len()
    );
    let n_pos = labels.iter().filter(|&&l| l).count();
    let n_neg = labels.len() - n_pos;
    if n_pos == 0 || n_neg == 0 {
        return f64::NAN;
    }
    let ranks = average_ranks(scores);
    let r_pos: f64 = ranks
        .iter()
        .zip(labels)
        .filter(|(_, l)| **l)
        .map(|(r, _)| r)
        .sum();
    let (p, q) = (n_pos as f64, n_neg as f64);
    (r_pos - p * (p + 1.0) / 2.0) / (p * q)
}

/// Pearson correlation coefficient of `x` and `y` (scipy `scipy.stats.pearsonr(x, y)[0]`),
/// computed in `f64` from centred sums. Unitless, in `[-1, 1]`.
///
/// Returns `NaN` if fewer than 2 values or if either vector is constant (scipy also returns
/// NaN, with a warning).
///
/// # Panics
/// If `x.len() != y.len()`.
pub fn pearson(x: &[f64], y: &[f64]) -> f64 {
    assert_eq!(
        x.len(),
        y.len(),
        "pearson: lengths {} and {} differ",
        x.len(),
        y.len()
    );
    let n = x.len();
    if n < 2 {
        return f64::NAN;
    }
    let mx = x.iter().sum::<f64>() / n as f64;
    let my = y.iter().sum::<f64>() / n as f64;
    let (mut sxy, mut sxx, mut syy) = (0.0, 0.0, 0.0);
    for (&a, &b) in x.iter().zip(y) {
        let (da, db) = (a - mx, b - my);
        sxy += da * db;
        sxx += da * da;
        syy += db * db;
    }
    if sxx == 0.0 || syy == 0.0 {
        return f64::NAN;
    }
    (sxy / (sxx.sqrt() * syy.sqrt())).clamp(-1.0, 1.0)
}

/// Spearman rank correlation of `x` and `y`: the Pearson correlation of their average ranks
/// (ties share the mean rank), as scipy `scipy.stats.spearmanr(x, y)[0]`. Unitless, in
/// `[-1, 1]`; `NaN` under the same conditions as [`pearson`].
///
/// # Panics
/// If `x.len() != y.len()`.
pub fn spearman(x: &[f64], y: &[f64]) -> f64 {
    assert_eq!(
        x.len(),
        y.len(),
        "spearman: lengths {} and {} differ",
        x.len(),
        y.len()
    );
    pearson(&average_ranks(x), &average_ranks(y))
}

/// Two-sample Kolmogorov–Smirnov statistic `sup_x |F_a(x) − F_b(x)|` of the empirical
/// distributions of `a` and `b` (scipy `ks_2samp(a, b).statistic`); NaN if either is empty.
pub fn ks_statistic(a: &[f64], b: &[f64]) -> f64 {
    if a.is_empty() || b.is_empty() {
        return f64::NAN;
    }
    let mut a = a.to_vec();
    let mut b = b.to_vec();
    a.sort_by(|x, y| x.total_cmp(y));
    b.sort_by(|x, y| x.total_cmp(y));
    let (na, nb) = (a.len() as f64, b.len() as f64);
    let (mut i, mut j, mut d) = (0usize, 0usize, 0f64);
    while i < a.len() && j < b.len() {
        let x = a[i].min(b[j]);
        while i < a.len() && a[i] <= x {
            i += 1;
        }
        while j < b.len() && b[j] <= x {
            j += 1;
        }
        d = d.max((i as f64 / na - j as f64 / nb).abs());
    }
    d
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Expected values from sklearn 1.9.1 / scipy 1.17.1:
    /// ```python
    /// from sklearn.metrics import roc_auc_score
    /// roc_auc_score([0,0,1,1], [0.1,0.4,0.35,0.8])                           # 0.75
    /// roc_auc_score([0,1,0,1,1,0,1], [0.5,0.5,0.2,0.9,0.5,0.9,0.1])          # 0.4583333333333333
    /// roc_auc_score([1,1,0,0,0], [1,1,1,1,1])                                # 0.5
    /// roc_auc_score([0,0,0,1,1,1,1,0], [0.2,0.2,0.6,0.6,0.6,0.8,0.1,0.3])    # 0.6875
    /// ```
    #[test]
    fn roc_auc_matches_sklearn_with_ties() {
        let b = |v: &[u8]| v.iter().map(|&x| x == 1).collect::<Vec<_>>();
        let close = |a: f64, e: f64| assert!((a - e).abs() < 1e-12, "{a} vs sklearn {e}");
        close(roc_auc(&[0.1, 0.4, 0.35, 0.8], &b(&[0, 0, 1, 1])), 0.75);
        close(
            roc_auc(
                &[0.5, 0.5, 0.2, 0.9, 0.5, 0.9, 0.1],
                &b(&[0, 1, 0, 1, 1, 0, 1]),
            ),
            0.4583333333333333,
        );
        close(roc_auc(&[1.0; 5], &b(&[1, 1, 0, 0, 0])), 0.5);
        close(
            roc_auc(
                &[0.2, 0.2, 0.6, 0.6, 0.6, 0.8, 0.1, 0.3],
                &b(&[0, 0, 0, 1, 1, 1, 1, 0]),
            ),
            0.6875,
        );
        // Perfect separation both ways, and a missing class.
        close(roc_auc(&[0.0, 1.0], &b(&[0, 1])), 1.0);
        close(roc_auc(&[0.0, 1.0], &b(&[1, 0])), 0.0);
        assert!(roc_auc(&[0.0, 1.0], &b(&[1, 1])).is_nan());
    }

    /// ```python
    /// from scipy.stats import pearsonr, spearmanr
    /// x=[1,2,3,4,5,6]; y=[2,1,4,3,7,5]
    /// pearsonr(x,y)[0]   # 0.7917946548886294
    /// spearmanr(x,y)[0]  # 0.8285714285714287
    /// a=[1,2,2,3,3,3,10]; b=[0.5,0.7,0.7,0.2,0.9,0.9,0.1]
    /// pearsonr(a,b)[0]   # -0.5943876137076252
    /// spearmanr(a,b)[0]  # -0.17149858514250885   (ties: average ranks)
    /// ```
    #[test]
    fn correlations_match_scipy() {
        let close = |a: f64, e: f64| assert!((a - e).abs() < 1e-12, "{a} vs scipy {e}");
        let x = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
        let y = [2.0, 1.0, 4.0, 3.0, 7.0, 5.0];
        close(pearson(&x, &y), 0.7917946548886294);
        close(spearman(&x, &y), 0.8285714285714287);
        let a = [1.0, 2.0, 2.0, 3.0, 3.0, 3.0, 10.0];
        let b = [0.5, 0.7, 0.7, 0.2, 0.9, 0.9, 0.1];
        close(pearson(&a, &b), -0.5943876137076252);
        close(spearman(&a, &b), -0.17149858514250885);
        assert_eq!(average_ranks(&a), vec![1.0, 2.5, 2.5, 5.0, 5.0, 5.0, 7.0]);
        assert!(pearson(&[1.0, 1.0, 1.0], &[1.0, 2.0, 3.0]).is_nan());
    }
}
