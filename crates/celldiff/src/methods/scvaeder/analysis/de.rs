//! Differential expression: Wilcoxon rank-sum scores as scanpy
//! `sc.tl.rank_genes_groups(adata, groupby, method="wilcoxon", reference=...)` with its default
//! `tie_correct=False`: for each gene, the average ranks of the pooled group ∪ reference cells,
//! and the z-score
//!
//! z = (R_group − n_g (n_g + n_r + 1) / 2) / √(n_g n_r (n_g + n_r + 1) / 12),
//!
//! R_group the rank sum of the group's cells. Genes are ranked by z descending (scanpy's
//! `names` order: up-regulated in the group first). Used for the top-100 DEGs of scGen's
//! `reg_mean_plot` in `celldiff evaluate-perturbation`.

use rayon::prelude::*;

use crate::anndata::DenseMatrix;
use crate::metrics::average_ranks;

/// Wilcoxon z-scores of `group` (`[n_g, n_genes]`) against `reference` (`[n_r, n_genes]`),
/// one per gene (NaN when either set is empty).
///
/// # Panics
/// If the two matrices have different numbers of genes.
pub fn wilcoxon_scores(group: &DenseMatrix, reference: &DenseMatrix) -> Vec<f64> {
    assert_eq!(group.n_cols, reference.n_cols, "gene counts differ");
    let (ng, nr) = (group.n_rows, reference.n_rows);
    if ng == 0 || nr == 0 {
        return vec![f64::NAN; group.n_cols];
    }
    let n = (ng + nr) as f64;
    let mean = ng as f64 * (n + 1.0) / 2.0;
    let sd = (ng as f64 * nr as f64 * (n + 1.0) / 12.0).sqrt();
    (0..group.n_cols)
        .into_par_iter()
        .map(|j| {
            let mut v = Vec::with_capacity(ng + nr);
            v.extend((0..ng).map(|i| group.data[i * group.n_cols + j] as f64));
            v.extend((0..nr).map(|i| reference.data[i * reference.n_cols + j] as f64));
            let ranks = average_ranks(&v);
            let r: f64 = ranks[..ng].iter().sum();
            (r - mean) / sd
        })
        .collect()
}

/// Gene indices by decreasing Wilcoxon score of `group` vs `reference` (scanpy
/// `uns['rank_genes_groups']['names'][group]`); NaN scores last.
pub fn rank_genes(group: &DenseMatrix, reference: &DenseMatrix) -> Vec<(usize, f64)> {
    let s = wilcoxon_scores(group, reference);
    let mut idx: Vec<(usize, f64)> = s.into_iter().enumerate().collect();
    idx.sort_by(|a, b| {
        let (x, y) = (a.1, b.1);
        match (x.is_nan(), y.is_nan()) {
            (true, false) => std::cmp::Ordering::Greater,
            (false, true) => std::cmp::Ordering::Less,
            _ => y.total_cmp(&x).then(a.0.cmp(&b.0)),
        }
    });
    idx
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scores_by_hand() {
        // group [3, 4], reference [1, 2, 3]: pooled ranks 3.5, 5 | 1, 2, 3.5; R = 8.5,
        // mean = 2·6/2 = 6, sd = √(2·3·6/12) = √3 → z = 2.5/√3.
        let g = DenseMatrix::from_vec(2, 1, vec![3.0, 4.0]).unwrap();
        let r = DenseMatrix::from_vec(3, 1, vec![1.0, 2.0, 3.0]).unwrap();
        let z = wilcoxon_scores(&g, &r);
        assert!((z[0] - 2.5 / 3f64.sqrt()).abs() < 1e-12);
        // Swapping group and reference flips the sign of the U statistic's centre.
        let z2 = wilcoxon_scores(&r, &g);
        assert!((z2[0] + 2.5 / 3f64.sqrt()).abs() < 1e-12);
    }

    #[test]
    fn ranking_puts_up_regulated_first() {
        let g = DenseMatrix::from_vec(3, 2, vec![5.0, 0.0, 6.0, 0.0, 7.0, 1.0]).unwrap();
        let r = DenseMatrix::from_vec(3, 2, vec![0.0, 1.0, 1.0, 2.0, 0.0, 3.0]).unwrap();
        let order: Vec<usize> = rank_genes(&g, &r).iter().map(|x| x.0).collect();
        assert_eq!(order, vec![0, 1]);
    }

    /// scanpy 1.11.5 on the real Kang data:
    ///
    /// ```python
    /// a = sc.read_h5ad("valid_kang.h5ad"); c = a[a.obs.cell_type == "CD4T"].copy()
    /// sc.tl.rank_genes_groups(c, groupby="condition", method="wilcoxon", reference="control")
    /// [n[0] for n in c.uns["rank_genes_groups"]["names"]][:10]
    /// # ['ISG15', 'IFI6', 'ISG20', 'IFIT3', 'IFIT1', 'B2M', 'IFIT2', 'IRF7', 'RSAD2', 'MT2A']
    /// [float(s[0]) for s in c.uns["rank_genes_groups"]["scores"]][:10]
    /// # [20.742319, 19.934353, 18.966017, 18.910084, 17.809563, 15.414722, 14.340857,
    /// #  13.004369, 12.588588, 12.475848]
    /// ```
    #[test]
    fn kang_cd4t_matches_scanpy() {
        use crate::io::{ReadOptions, read};
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../../shared/data/kang_pbmc_ifnb_valid/valid_kang.h5ad"
        );
        let a = read(std::path::Path::new(path), &ReadOptions::default()).unwrap();
        let ct = a.obs_column("cell_type").unwrap().labels();
        let cond = a.obs_column("condition").unwrap().labels();
        let pick = |c: &str| -> Vec<usize> {
            (0..a.n_obs())
                .filter(|&i| ct[i] == "CD4T" && cond[i] == c)
                .collect()
        };
        let stim = a.x.rows_dense(&pick("stimulated"));
        let ctrl = a.x.rows_dense(&pick("control"));
        let ranked = rank_genes(&stim, &ctrl);
        let names: Vec<&str> = ranked[..10]
            .iter()
            .map(|r| a.var_names[r.0].as_str())
            .collect();
        assert_eq!(
            names,
            [
                "ISG15", "IFI6", "ISG20", "IFIT3", "IFIT1", "B2M", "IFIT2", "IRF7", "RSAD2", "MT2A"
            ]
        );
        let expected = [
            20.742319, 19.934353, 18.966017, 18.910084, 17.809563, 15.414722, 14.340857, 13.004369,
            12.588588, 12.475848,
        ];
        for (r, e) in ranked.iter().zip(expected) {
            assert!((r.1 - e).abs() < 1e-4, "{} vs {e}", r.1);
        }
    }
}
