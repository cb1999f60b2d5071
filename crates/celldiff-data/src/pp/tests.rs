//! Unit tests on tiny inline matrices.

use sprs::CsMat;

use super::*;
use crate::anndata::{AnnData, Column, DenseMatrix, Matrix};
use crate::error::Error;

fn dense(n_rows: usize, n_cols: usize, v: &[f32]) -> DenseMatrix {
    DenseMatrix::from_vec(n_rows, n_cols, v.to_vec()).unwrap()
}

fn csr(n_rows: usize, n_cols: usize, v: &[f32]) -> CsMat<f32> {
    let mut indptr = vec![0];
    let mut indices = Vec::new();
    let mut data = Vec::new();
    for i in 0..n_rows {
        for j in 0..n_cols {
            let x = v[i * n_cols + j];
            if x != 0.0 {
                indices.push(j);
                data.push(x);
            }
        }
        indptr.push(indices.len());
    }
    CsMat::new((n_rows, n_cols), indptr, indices, data)
}

fn names(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}{i}")).collect()
}

fn assert_close(a: &[f32], b: &[f32], tol: f32) {
    assert_eq!(a.len(), b.len());
    for (k, (x, y)) in a.iter().zip(b).enumerate() {
        assert!((x - y).abs() <= tol, "element {k}: {x} vs {y}");
    }
}

/// A deterministic `[n_cells, n_genes]` count matrix with gene-specific rates (LCG noise).
fn synthetic_counts(n_cells: usize, n_genes: usize) -> AnnData {
    let mut state: u64 = 12345;
    let mut next = || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((state >> 33) as f64) / ((1u64 << 31) as f64)
    };
    let mut v = vec![0.0f32; n_cells * n_genes];
    for i in 0..n_cells {
        let depth = 0.5 + next();
        for j in 0..n_genes {
            let rate =
                depth * (0.05 + (j % 7) as f64 * 0.6) * if j % 5 == 0 { 3.0 * next() } else { 1.0 };
            // Sum of Bernoulli draws ~ Poisson-ish counts.
            let mut c = 0.0f32;
            for _ in 0..8 {
                if next() < rate / 8.0 {
                    c += 1.0;
                }
            }
            v[i * n_genes + j] = c;
        }
    }
    let mut ad = AnnData::new(Matrix::Csr(csr(n_cells, n_genes, &v)), names("g", n_genes));
    ad.obs_names = names("c", n_cells);
    ad
}

#[test]
fn normalize_total_fixed_and_median_target() {
    let v = [1.0, 0.0, 3.0, 0.0, 0.0, 0.0, 2.0, 2.0, 4.0];
    for mut m in [Matrix::Dense(dense(3, 3, &v)), Matrix::Csr(csr(3, 3, &v))] {
        let (sizes, t) = normalize_total(&mut m, Some(10.0)).unwrap();
        assert_eq!(sizes, vec![4.0, 0.0, 8.0]);
        assert_eq!(t, 10.0);
        assert!(matches!(m, Matrix::Dense(_) | Matrix::Csr(_)));
        assert_close(
            &m.to_dense().data,
            &[2.5, 0.0, 7.5, 0.0, 0.0, 0.0, 2.5, 2.5, 5.0],
            1e-6,
        );
    }
    // target_sum = None: median of the non-zero library sizes (4 and 8 -> 6); zero row stays 0.
    let mut m = Matrix::Csr(csr(3, 3, &v));
    let (_, t) = normalize_total(&mut m, None).unwrap();
    assert_eq!(t, 6.0);
    assert_close(
        &m.to_dense().data,
        &[1.5, 0.0, 4.5, 0.0, 0.0, 0.0, 1.5, 1.5, 3.0],
        1e-6,
    );
    assert!(matches!(m, Matrix::Csr(_)), "CSR must stay CSR");
    // All-zero matrix and median target: clear error.
    let mut z = Matrix::Dense(DenseMatrix::zeros(2, 2));
    assert!(matches!(
        normalize_total(&mut z, None),
        Err(Error::InvalidInput(_))
    ));
    assert!(matches!(
        normalize_total(&mut z, Some(-1.0)),
        Err(Error::InvalidInput(_))
    ));
}

#[test]
fn log1p_is_natural_log_and_keeps_sparsity() {
    let v = [0.0, 1.0, 9.0, 0.0];
    let mut m = Matrix::Csr(csr(2, 2, &v));
    log1p(&mut m);
    let Matrix::Csr(c) = &m else {
        panic!("CSR must stay CSR")
    };
    assert_eq!(c.nnz(), 2);
    assert_close(&m.to_dense().data, &[0.0, 2f32.ln(), 10f32.ln(), 0.0], 1e-6);
    let mut d = Matrix::Dense(dense(2, 2, &v));
    log1p(&mut d);
    assert_close(&d.to_dense().data, &[0.0, 2f32.ln(), 10f32.ln(), 0.0], 1e-6);
}

#[test]
fn scale_ddof1_constant_genes_and_clipping() {
    // Gene 0: [1, 2, 3, 10]; gene 1 constant.
    let mut x = dense(4, 2, &[1.0, 5.0, 2.0, 5.0, 3.0, 5.0, 10.0, 5.0]);
    let orig = x.clone();
    let stats = scale(&mut x, true, None);
    let mean = 4.0f64;
    let sd = ((9.0 + 4.0 + 1.0 + 36.0) / 3.0f64).sqrt();
    assert!((stats.mean[0] - mean).abs() < 1e-12);
    assert!((stats.std[0] - sd).abs() < 1e-12);
    assert_eq!(stats.std[1], 1.0, "constant gene gets std 1");
    let expect: Vec<f32> = [1.0, 2.0, 3.0, 10.0]
        .iter()
        .map(|v| ((v - mean) / sd) as f32)
        .collect();
    for (i, e) in expect.iter().enumerate() {
        assert!((x.row(i)[0] - e).abs() < 1e-6);
        assert_eq!(x.row(i)[1], 0.0);
    }
    // max_value clips both sides when zero-centred (scanpy 1.11).
    let mut y = orig.clone();
    scale(&mut y, true, Some(0.5));
    let col: Vec<f32> = (0..4).map(|i| y.row(i)[0]).collect();
    assert_eq!(col, vec![-0.5, expect[1], expect[2], 0.5]);
    // Without centring only the upper side is clipped.
    let mut z = dense(3, 1, &[-4.0, 0.0, 4.0]);
    let s = scale(&mut z, false, Some(0.5));
    assert_eq!(s.std[0], 4.0);
    assert_eq!(z.data, vec![-1.0, 0.0, 0.5]);
    // scale_with re-applies the fitted statistics.
    let mut w = orig.clone();
    scale_with(&mut w, &stats, true, None);
    assert_eq!(w, x);
}

#[test]
fn minmax_per_gene_and_constant_genes() {
    let mut x = dense(3, 2, &[1.0, 5.0, 3.0, 5.0, 2.0, 5.0]);
    let s = minmax_scale(&mut x);
    assert_eq!(s.min, vec![1.0, 5.0]);
    assert_eq!(s.max, vec![3.0, 5.0]);
    assert_eq!(x.data, vec![0.0, 0.0, 1.0, 0.0, 0.5, 0.0]);
    let mut y = dense(1, 2, &[5.0, 7.0]);
    minmax_with(&mut y, &s);
    assert_eq!(y.data, vec![2.0, 0.0], "new cells are not clipped");
}

#[test]
fn detect_kind_counts_log_scaled_other() {
    let counts = [0.0, 3.0, 1.0, 7.0, 0.0, 2.0];
    assert_eq!(
        detect_kind(&Matrix::Csr(csr(2, 3, &counts))),
        DataKind::Counts
    );
    assert_eq!(
        detect_kind(&Matrix::Dense(dense(2, 3, &counts))),
        DataKind::Counts
    );

    let mut m = Matrix::Csr(csr(2, 3, &counts));
    normalize_total(&mut m, Some(1e4)).unwrap();
    // Normalised but not log-transformed: constant totals, not counts.
    let r = inspect_kind(&m);
    assert_eq!(r.kind, DataKind::Other, "{}", r.message);
    log1p(&mut m);
    let r = inspect_kind(&m);
    assert_eq!(r.kind, DataKind::LogNormalized, "{}", r.message);
    assert!(r.message.contains("normalize_total"), "{}", r.message);

    let mut d = m.to_dense();
    scale(&mut d, true, None);
    let r = inspect_kind(&Matrix::Dense(d));
    assert_eq!(r.kind, DataKind::Scaled, "{}", r.message);

    let big = [0.5, 1000.25, 3.0, 20.5];
    assert_eq!(
        detect_kind(&Matrix::Dense(dense(2, 2, &big))),
        DataKind::Other
    );
    let nan = [0.0, f32::NAN, 1.0, 2.0];
    let r = inspect_kind(&Matrix::Dense(dense(2, 2, &nan)));
    assert_eq!(r.kind, DataKind::Other);
    assert_eq!(r.first_non_finite.map(|(i, j, _)| (i, j)), Some((0, 1)));
}

#[test]
fn check_counts_names_the_first_negative() {
    let v = [0.0, 1.0, 2.0, 3.0, 4.0, -1.0];
    let err = check_counts(&Matrix::Csr(csr(2, 3, &v))).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, Error::InvalidInput(_)));
    assert!(
        msg.contains("cell 1") && msg.contains("gene 2") && msg.contains("-1"),
        "{msg}"
    );
    assert!(check_counts(&Matrix::Dense(dense(1, 2, &[0.0, 2.5]))).is_ok());
}

#[test]
fn filter_cells_and_genes() {
    // Cell 0: 2 genes / 4 counts; cell 1: 1 gene / 1 count; cell 2: 3 genes / 6 counts.
    let v = [1.0, 3.0, 0.0, 0.0, 0.0, 1.0, 2.0, 2.0, 2.0];
    let ad = AnnData::new(Matrix::Csr(csr(3, 3, &v)), names("g", 3));
    let (f, mask) = filter_cells(&ad, None, Some(2)).unwrap();
    assert_eq!(mask, vec![true, false, true]);
    assert_eq!(f.obs_names, vec!["0", "2"]);
    assert_eq!(
        f.obs_column("n_genes").unwrap(),
        &Column::Numeric(vec![2.0, 3.0])
    );
    let (_, mask) = filter_cells(&ad, Some(5.0), None).unwrap();
    assert_eq!(mask, vec![false, false, true]);
    let err = filter_cells(&ad, None, Some(10)).unwrap_err().to_string();
    assert!(
        err.contains("min_genes=10") && err.contains("all 3 cells"),
        "{err}"
    );
    assert!(matches!(
        filter_cells(&ad, None, None),
        Err(Error::Param(_))
    ));

    let (g, mask) = filter_genes(&ad, None, Some(2)).unwrap();
    assert_eq!(mask, vec![true, true, true]);
    assert_eq!(g.n_vars(), 3);
    let (g, mask) = filter_genes(&ad, Some(4.0), None).unwrap();
    assert_eq!(mask, vec![false, true, false]);
    assert_eq!(g.var_names, vec!["g1"]);
    let err = filter_genes(&ad, None, Some(4)).unwrap_err().to_string();
    assert!(
        err.contains("min_cells=4") && err.contains("all 3 genes"),
        "{err}"
    );
}

#[test]
fn hvg_seurat_top_n_and_columns() {
    let mut ad = synthetic_counts(60, 30);
    normalize_total(&mut ad.x, Some(1e4)).unwrap();
    log1p(&mut ad.x);
    let p = HvgParams {
        n_top_genes: Some(8),
        ..HvgParams::default()
    };
    let res = highly_variable_genes(&mut ad, &p, false).unwrap();
    let n_sel = res.highly_variable.iter().filter(|&&b| b).count();
    assert!(n_sel >= 8, "at least n_top_genes (ties kept)");
    let dn = res.dispersions_norm.as_ref().unwrap();
    let cutoff = res
        .selected()
        .iter()
        .map(|&j| dn[j])
        .fold(f64::INFINITY, f64::min);
    for (&hv, &d) in res.highly_variable.iter().zip(dn) {
        assert_eq!(hv, !d.is_nan() && d >= cutoff);
    }
    for key in [
        "highly_variable",
        "means",
        "dispersions",
        "dispersions_norm",
    ] {
        assert!(ad.var.iter().any(|(k, _)| k == key), "var['{key}'] missing");
    }
    assert_eq!(ad.uns["hvg"]["flavor"], "seurat");
    // Cutoff mode (n_top_genes = None) applies scanpy's default thresholds.
    let res2 = highly_variable_genes_matrix(&ad.x, &HvgParams::default(), None).unwrap();
    for ((&hv, &m), &d) in res2.highly_variable.iter().zip(&res2.means).zip(dn) {
        let d = if d.is_nan() { 0.0 } else { d };
        assert_eq!(hv, m > 0.0125 && m < 3.0 && d > 0.5);
    }
    let sub = highly_variable_genes(&mut ad, &p, true).unwrap();
    assert_eq!(ad.n_vars(), sub.selected().len());
}

#[test]
fn hvg_seurat_v3_selects_exactly_n_top() {
    let ad = synthetic_counts(80, 40);
    let p = HvgParams {
        flavor: HvgFlavor::SeuratV3,
        n_top_genes: Some(10),
        ..HvgParams::default()
    };
    let res = highly_variable_genes_matrix(&ad.x, &p, None).unwrap();
    assert_eq!(res.selected().len(), 10);
    let vn = res.variances_norm.as_ref().unwrap();
    let rank = res.highly_variable_rank.as_ref().unwrap();
    let min_sel = res
        .selected()
        .iter()
        .map(|&j| vn[j])
        .fold(f64::INFINITY, f64::min);
    for j in 0..40 {
        if !res.highly_variable[j] {
            assert!(vn[j] <= min_sel);
            assert!(rank[j].is_nan());
        } else {
            assert!(rank[j] < 10.0);
        }
    }
    // Negative values are refused.
    let neg = Matrix::Dense(dense(3, 2, &[1.0, -1.0, 0.0, 2.0, 3.0, 1.0]));
    assert!(matches!(
        highly_variable_genes_matrix(&neg, &p, None),
        Err(Error::InvalidInput(_))
    ));
}

fn small_config() -> PreprocessConfig {
    PreprocessConfig {
        n_top_genes: Some(10),
        scale: true,
        max_value: Some(10.0),
        ..Default::default()
    }
}

#[test]
fn pipeline_fit_transform_roundtrip_and_serde() {
    let ad = synthetic_counts(50, 30);
    let (out, fitted) = fit_transform(&ad, &small_config()).unwrap();
    assert_eq!(fitted.input_kind, DataKind::Counts);
    assert_eq!(out.var_names, fitted.genes);
    assert!(fitted.genes.len() >= 10);
    assert_eq!(fitted.input_genes.len(), 30);
    assert_eq!(fitted.target_sum, Some(1e4));
    assert!(
        fitted
            .messages
            .iter()
            .any(|m| m.contains("normalize_total(1e4) + log1p"))
    );
    assert!(matches!(out.x, Matrix::Dense(_)));
    // Serialises and deserialises to the same pipeline (serde_json's default float parser may
    // differ from the shortest round-trip representation in the last bit).
    let json = serde_json::to_string(&fitted).unwrap();
    let back: FittedPreprocess = serde_json::from_str(&json).unwrap();
    assert_eq!(back.steps, fitted.steps);
    assert_eq!(back.genes, fitted.genes);
    assert_eq!(back.input_genes, fitted.input_genes);
    let (s0, s1) = (fitted.scale.as_ref().unwrap(), back.scale.as_ref().unwrap());
    for (a, b) in s0
        .mean
        .iter()
        .chain(&s0.std)
        .zip(s1.mean.iter().chain(&s1.std))
    {
        assert!((a - b).abs() <= 1e-15 * a.abs().max(1.0), "{a} vs {b}");
    }
    // Re-applying to the training cells reproduces the fit output exactly.
    let again = fitted.transform(&ad).unwrap();
    assert_eq!(again.x.to_dense(), out.x.to_dense());
    let reloaded = back.transform(&ad).unwrap().x.to_dense();
    assert_close(&reloaded.data, &out.x.to_dense().data, 1e-6);
    assert_eq!(again.var_names, out.var_names);
    // Genes are selected by name: a permuted, larger gene set gives the same result.
    let perm: Vec<usize> = (0..30).rev().collect();
    let shuffled = ad.select_vars(&perm);
    assert_eq!(
        fitted.transform(&shuffled).unwrap().x.to_dense(),
        out.x.to_dense()
    );
}

#[test]
fn pipeline_transform_errors() {
    let ad = synthetic_counts(50, 30);
    let (_, fitted) = fit_transform(&ad, &small_config()).unwrap();
    // Missing genes: listed (up to 10) with the count.
    let keep: Vec<usize> = (0..30).filter(|j| j % 3 != 0).collect();
    let err = fitted.transform(&ad.select_vars(&keep)).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, Error::InvalidInput(_)));
    assert!(
        msg.contains("10 of the 30 genes") && msg.contains("g0, g3, g6"),
        "{msg}"
    );
    // Log data where counts were fit.
    let mut logged = ad.clone();
    normalize_total(&mut logged.x, Some(1e4)).unwrap();
    log1p(&mut logged.x);
    let msg = fitted.transform(&logged).unwrap_err().to_string();
    assert!(
        msg.contains("raw integer counts") && msg.contains("non-integer"),
        "{msg}"
    );
    // Negative values: the offending cell and gene are named.
    let mut neg = ad.to_owned();
    let mut d = neg.x.to_dense();
    d.row_mut(4)[7] = -2.0;
    neg.x = Matrix::Dense(d);
    let msg = fitted.transform(&neg).unwrap_err().to_string();
    assert!(
        msg.contains("`c4`") && msg.contains("`g7`") && msg.contains("negative"),
        "{msg}"
    );

    // A pipeline fit on log data refuses counts.
    let (_, fitted_log) = fit_transform(
        &logged,
        &PreprocessConfig {
            n_top_genes: Some(10),
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(fitted_log.input_kind, DataKind::LogNormalized);
    assert!(
        !fitted_log
            .steps
            .iter()
            .any(|s| matches!(s, Step::NormalizeTotal { .. } | Step::Log1p))
    );
    let msg = fitted_log.transform(&ad).unwrap_err().to_string();
    assert!(msg.contains("look like raw counts"), "{msg}");
    assert!(fitted_log.transform(&logged).is_ok());
}

#[test]
fn pipeline_config_checks() {
    let ad = synthetic_counts(40, 20);
    let both = PreprocessConfig {
        scale: true,
        minmax: true,
        ..Default::default()
    };
    assert!(matches!(fit_transform(&ad, &both), Err(Error::Param(_))));
    // Fewer genes than n_top_genes: all genes kept, no HVG step.
    let (out, f) = fit_transform(&ad, &PreprocessConfig::default()).unwrap();
    assert_eq!(out.n_vars(), 20);
    assert!(
        !f.steps
            .iter()
            .any(|s| matches!(s, Step::HighlyVariableGenes { .. }))
    );
    // seurat_v3 on log data is refused; on counts it runs before normalisation.
    let mut logged = ad.clone();
    normalize_total(&mut logged.x, None).unwrap();
    log1p(&mut logged.x);
    let v3 = PreprocessConfig {
        n_top_genes: Some(5),
        flavor: HvgFlavor::SeuratV3,
        ..Default::default()
    };
    let msg = fit_transform(&logged, &v3).unwrap_err().to_string();
    assert!(msg.contains("seurat_v3 needs raw counts"), "{msg}");
    let (out, f) = fit_transform(&ad, &v3).unwrap();
    assert_eq!(out.n_vars(), 5);
    assert!(matches!(
        f.steps[0],
        Step::HighlyVariableGenes {
            flavor: HvgFlavor::SeuratV3,
            ..
        }
    ));
    // log1p=true on log data is refused; minmax gives [0, 1].
    let forced = PreprocessConfig {
        log1p: Some(true),
        ..Default::default()
    };
    assert!(fit_transform(&logged, &forced).is_err());
    let (mm, f) = fit_transform(
        &ad,
        &PreprocessConfig {
            minmax: true,
            ..Default::default()
        },
    )
    .unwrap();
    assert!(f.minmax.is_some());
    assert!(
        mm.x.to_dense()
            .data
            .iter()
            .all(|&v| (0.0..=1.0).contains(&v))
    );
    // Filtering removing everything names the filter.
    let strict = PreprocessConfig {
        min_genes: Some(1000),
        ..Default::default()
    };
    let msg = fit_transform(&ad, &strict).unwrap_err().to_string();
    assert!(msg.contains("min_genes=1000"), "{msg}");
}
