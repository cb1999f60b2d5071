//! Equivalence tests against scanpy 1.11.5 on the 10x mouse-brain subset (10,000 cells x 1,000
//! genes, raw counts): `shared/fixtures/scanpy_pp_brain10k` (see its README for the calls).
//!
//! Run with `--nocapture` to see the observed deviations.

use std::path::PathBuf;
use std::sync::OnceLock;

use super::basic::col_mean_var;
use super::*;
use crate::anndata::{AnnData, Matrix};

macro_rules! fixture {
    ($name:literal) => {
        concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../../shared/fixtures/scanpy_pp_brain10k/",
            $name
        )
    };
}

const INPUT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../../shared/data/mouse_brain_1m_10k_subset/brain_1m_10k_cells_1000_genes.h5ad"
);

fn existing(p: &str) -> PathBuf {
    let p = PathBuf::from(p);
    assert!(
        p.exists(),
        "scanpy fixture missing: {} (expected the `shared/` folder beside the repository)",
        p.display()
    );
    p
}

/// A `.npy` array (v1/v2/v3 header, little-endian `f4`/`f8`/`i8`/`b1`), values widened to f64.
struct Npy {
    shape: Vec<usize>,
    data: Vec<f64>,
}

fn read_npy(path: &str) -> Npy {
    let bytes = std::fs::read(existing(path)).expect("read .npy");
    assert_eq!(&bytes[..6], b"\x93NUMPY", "{path}: not a .npy file");
    let (hlen, start) = match bytes[6] {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
        _ => (
            u32::from_le_bytes(bytes[8..12].try_into().unwrap()) as usize,
            12,
        ),
    };
    let header = std::str::from_utf8(&bytes[start..start + hlen]).unwrap();
    let field = |key: &str| {
        let at = header
            .find(key)
            .unwrap_or_else(|| panic!("{path}: no {key} in header"));
        &header[at + key.len()..]
    };
    let descr = field("'descr':").trim_start().trim_start_matches('\'');
    let descr = &descr[..descr.find('\'').unwrap()];
    assert!(
        field("'fortran_order':").trim_start().starts_with("False"),
        "{path}: Fortran order"
    );
    let shape_s = field("'shape':");
    let shape_s = &shape_s[shape_s.find('(').unwrap() + 1..shape_s.find(')').unwrap()];
    let shape: Vec<usize> = shape_s
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().unwrap())
        .collect();
    let raw = &bytes[start + hlen..];
    let data: Vec<f64> = match descr {
        "<f4" => raw
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()) as f64)
            .collect(),
        "<f8" => raw
            .chunks_exact(8)
            .map(|c| f64::from_le_bytes(c.try_into().unwrap()))
            .collect(),
        "<i8" => raw
            .chunks_exact(8)
            .map(|c| i64::from_le_bytes(c.try_into().unwrap()) as f64)
            .collect(),
        "|b1" | "?" => raw.iter().map(|&b| b as f64).collect(),
        d => panic!("{path}: unsupported dtype {d}"),
    };
    assert_eq!(
        data.len(),
        shape.iter().product::<usize>(),
        "{path}: size mismatch"
    );
    Npy { shape, data }
}

fn read_bool(path: &str) -> Vec<bool> {
    read_npy(path).data.iter().map(|&v| v != 0.0).collect()
}

/// The raw counts, read once.
fn counts() -> &'static AnnData {
    static C: OnceLock<AnnData> = OnceLock::new();
    C.get_or_init(|| {
        let a = crate::io::read(&existing(INPUT), &crate::io::ReadOptions::default())
            .expect("read the brain 10k h5ad");
        assert_eq!((a.n_obs(), a.n_vars()), (10_000, 1_000));
        a
    })
}

/// `normalize_total(target_sum=1e4)` + `log1p` of the counts, computed once.
fn logged() -> &'static AnnData {
    static L: OnceLock<AnnData> = OnceLock::new();
    L.get_or_init(|| {
        let mut a = counts().clone();
        normalize_total(&mut a.x, Some(1e4)).unwrap();
        log1p(&mut a.x);
        a
    })
}

/// Largest `|a - b| / max(|b|, floor)`.
fn max_rel(ours: &[f64], reference: &[f64], floor: f64) -> f64 {
    assert_eq!(ours.len(), reference.len());
    ours.iter()
        .zip(reference)
        .map(|(a, b)| (a - b).abs() / b.abs().max(floor))
        .fold(0.0, f64::max)
}

#[test]
fn golden_normalize_total_row_sums() {
    let mut x = counts().x.clone();
    let (sizes, t) = normalize_total(&mut x, Some(1e4)).unwrap();
    assert_eq!(t, 1e4);
    eprintln!(
        "normalize_total: {} cells with zero counts",
        sizes.iter().filter(|&&s| s == 0.0).count()
    );
    let ours: Vec<f64> = {
        let Matrix::Csr(c) = &x else {
            panic!("CSR input must stay CSR")
        };
        c.outer_iterator()
            .map(|r| r.iter().map(|(_, &v)| v as f64).sum())
            .collect()
    };
    // sc.pp.normalize_total(adata, target_sum=1e4); np.asarray(adata.X.sum(axis=1)).ravel()
    let reference = read_npy(fixture!("normalize_total_row_sums.npy"));
    let dev = max_rel(&ours, &reference.data, 1e-12);
    eprintln!("normalize_total row sums: max relative deviation {dev:.3e}");
    assert!(dev < 1e-4, "row sums deviate by {dev}");
}

#[test]
fn golden_log1p_values_and_gene_stats() {
    let x = &logged().x;
    let first20 = x.rows_dense(&(0..20).collect::<Vec<_>>());
    // sc.pp.log1p(adata); adata.X[:20].toarray()
    let reference = read_npy(fixture!("log1p_first20_rows.npy"));
    assert_eq!(reference.shape, vec![20, 1000]);
    let ours: Vec<f64> = first20.data.iter().map(|&v| v as f64).collect();
    let dev = max_rel(&ours, &reference.data, 1e-6);
    eprintln!("log1p first 20 rows: max relative deviation {dev:.3e}");
    assert!(dev < 1e-4, "log1p values deviate by {dev}");

    // The fixture's per-gene statistics are numpy float32 reductions of the float32 log1p matrix:
    //   X = adata.X.toarray(); X.mean(axis=0); X.var(axis=0, ddof=1)
    // (float32 accumulation over the cells, sequential along axis 0). Reproducing that
    // arithmetic on our log1p values checks them on all 10,000 cells:
    let ref_mean = read_npy(fixture!("log1p_gene_mean.npy"));
    let ref_var = read_npy(fixture!("log1p_gene_var_ddof1.npy"));
    let (m32, v32) = numpy_f32_mean_var(&x.to_dense());
    let dm32 = max_rel(&m32, &ref_mean.data, 1e-12);
    let dv32 = max_rel(&v32, &ref_var.data, 1e-12);
    eprintln!("log1p gene mean/var, numpy float32 arithmetic: max rel dev {dm32:.3e} / {dv32:.3e}");
    assert!(
        dm32 < 1e-4 && dv32 < 1e-4,
        "gene mean/var deviate: {dm32}, {dv32}"
    );
    // Our f64 statistics (scanpy's `_get_mean_var`, used by HVG/scale) differ from the float32
    // fixture only by the fixture's float32 rounding (largest for rare genes).
    let (mean, var) = col_mean_var(x);
    let dm = max_rel(&mean, &ref_mean.data, 1e-12);
    let dv = max_rel(&var, &ref_var.data, 1e-12);
    eprintln!(
        "log1p gene mean/var, f64 (ours) vs float32 fixture: max rel dev {dm:.3e} / {dv:.3e}"
    );
    assert!(dm < 1e-4 && dv < 1e-3, "gene mean/var deviate: {dm}, {dv}");
}

/// numpy's `X.mean(axis=0)` and `X.var(axis=0, ddof=1)` on a C-ordered float32 array: float32
/// accumulators, rows added one after the other.
fn numpy_f32_mean_var(x: &crate::anndata::DenseMatrix) -> (Vec<f64>, Vec<f64>) {
    let (n, p) = (x.n_rows, x.n_cols);
    let mut acc = vec![0.0f32; p];
    for i in 0..n {
        acc.iter_mut().zip(x.row(i)).for_each(|(a, &v)| *a += v);
    }
    let mean: Vec<f32> = acc.iter().map(|a| a / n as f32).collect();
    let mut acc2 = vec![0.0f32; p];
    for i in 0..n {
        for ((a, &v), &m) in acc2.iter_mut().zip(x.row(i)).zip(&mean) {
            let d = v - m;
            *a += d * d;
        }
    }
    let var = acc2.iter().map(|a| (a / (n - 1) as f32) as f64).collect();
    (mean.iter().map(|&m| m as f64).collect(), var)
}

#[test]
fn golden_hvg_seurat_v3() {
    let p = HvgParams {
        flavor: HvgFlavor::SeuratV3,
        n_top_genes: Some(200),
        ..HvgParams::default()
    };
    let res = highly_variable_genes_matrix(&counts().x, &p, None).unwrap();
    // sc.pp.highly_variable_genes(counts, flavor="seurat_v3", n_top_genes=200)
    let ref_vn = read_npy(fixture!("hvg_seurat_v3_variances_norm.npy")).data;
    let ref_hv = read_bool(fixture!("hvg_seurat_v3_highly_variable.npy"));
    let vn = res.variances_norm.as_ref().unwrap();
    let dev = max_rel(vn, &ref_vn, 1e-12);
    eprintln!("seurat_v3 variances_norm: max relative deviation {dev:.3e}");
    assert!(dev < 1e-4, "variances_norm deviate by {dev}");

    // scanpy ranks with numpy's unstable argsort, whose order among exactly tied values depends
    // on the CPU's SIMD sort (here 73 genes tie at the 200th value: genes seen once with one
    // count). Genes strictly above the boundary value must match; the differing genes must all
    // sit exactly on the boundary.
    let boundary = (0..1000)
        .filter(|&j| ref_hv[j])
        .map(|j| ref_vn[j])
        .fold(f64::INFINITY, f64::min);
    let differing: Vec<usize> = (0..1000)
        .filter(|&j| res.highly_variable[j] != ref_hv[j])
        .collect();
    let off_boundary: Vec<usize> = differing
        .iter()
        .copied()
        .filter(|&j| (ref_vn[j] - boundary).abs() > 1e-9 * boundary)
        .collect();
    let n_tied = (0..1000)
        .filter(|&j| (ref_vn[j] - boundary).abs() <= 1e-9 * boundary)
        .count();
    eprintln!(
        "seurat_v3 HVG: {} selected, {} genes differ from scanpy, all tied at the boundary \
         ({n_tied} genes share the 200th value {boundary:.6}); {} differ off the tie",
        res.selected().len(),
        differing.len(),
        off_boundary.len()
    );
    assert_eq!(res.selected().len(), 200);
    assert!(
        off_boundary.is_empty(),
        "HVGs differ away from the boundary tie: {off_boundary:?}"
    );
}

#[test]
fn golden_hvg_seurat() {
    let p = HvgParams {
        n_top_genes: Some(200),
        ..HvgParams::default()
    };
    let res = highly_variable_genes_matrix(&logged().x, &p, None).unwrap();
    // sc.pp.highly_variable_genes(adata, flavor="seurat", n_top_genes=200) on log1p data
    let ref_dn = read_npy(fixture!("hvg_seurat_dispersions_norm.npy")).data;
    let ref_hv = read_bool(fixture!("hvg_seurat_highly_variable.npy"));
    let dn = res.dispersions_norm.as_ref().unwrap();
    let nan_mismatch = (0..1000)
        .filter(|&j| dn[j].is_nan() != ref_dn[j].is_nan())
        .count();
    let (ours, reference): (Vec<f64>, Vec<f64>) = (0..1000)
        .filter(|&j| !ref_dn[j].is_nan())
        .map(|j| (dn[j], ref_dn[j]))
        .unzip();
    // dispersions_norm is stored as float32 by scanpy: compare with an absolute floor of 1e-4.
    let dev = max_rel(&ours, &reference, 1.0);
    let differing = (0..1000)
        .filter(|&j| res.highly_variable[j] != ref_hv[j])
        .count();
    eprintln!(
        "seurat dispersions_norm: max deviation {dev:.3e} (relative, abs below 1), NaN pattern \
         mismatches {nan_mismatch}; HVG set: {} selected, {differing} genes differ",
        res.selected().len()
    );
    assert_eq!(nan_mismatch, 0);
    assert!(dev < 1e-4, "dispersions_norm deviate by {dev}");
    assert!(differing <= 2, "{differing} HVGs differ from scanpy");
}

/// The scaled reference-HVG200 matrix (dense `[10000, 200]`).
fn scaled_hvg200() -> &'static DenseMatrixAndStats {
    static S: OnceLock<DenseMatrixAndStats> = OnceLock::new();
    S.get_or_init(|| {
        let ref_hv = read_bool(fixture!("hvg_seurat_highly_variable.npy"));
        let idx: Vec<usize> = (0..1000).filter(|&j| ref_hv[j]).collect();
        let sub = logged().select_vars(&idx);
        let mut d = sub.x.to_dense();
        let stats = scale(&mut d, true, Some(10.0));
        DenseMatrixAndStats {
            x: d,
            _stats: stats,
        }
    })
}

struct DenseMatrixAndStats {
    x: crate::anndata::DenseMatrix,
    _stats: ScaleStats,
}

#[test]
fn golden_scale_hvg200() {
    let s = scaled_hvg200();
    // adata = adata[:, adata.var.highly_variable]; sc.pp.scale(adata, max_value=10); adata.X[:20]
    let reference = read_npy(fixture!("scale_hvg200_first20_rows.npy"));
    assert_eq!(reference.shape, vec![20, 200]);
    let ours: Vec<f64> = s.x.data[..20 * 200].iter().map(|&v| v as f64).collect();
    let dev = max_rel(&ours, &reference.data, 1.0);
    eprintln!("scale(max_value=10) HVG200 first 20 rows: max deviation {dev:.3e} (abs below 1)");
    assert!(dev < 1e-4, "scaled values deviate by {dev}");
    assert!(s.x.data.iter().all(|v| v.abs() <= 10.0));
}

#[test]
fn golden_pca50_variance_ratio() {
    let s = scaled_hvg200();
    let pca = crate::tl::pca::Pca::fit(&s.x, 50).expect("PCA");
    // sc.pp.pca(adata, n_comps=50, svd_solver="arpack"); adata.uns["pca"]["variance_ratio"]
    let reference = read_npy(fixture!("pca50_variance_ratio.npy"));
    let dev = max_rel(&pca.explained_variance_ratio, &reference.data, 1e-12);
    let abs = pca
        .explained_variance_ratio
        .iter()
        .zip(&reference.data)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f64::max);
    eprintln!("PCA-50 explained variance ratio: max relative deviation {dev:.3e} (abs {abs:.3e})");
    assert!(dev < 1e-3, "variance ratios deviate by {dev}");
}

#[test]
fn golden_pipeline_matches_scanpy_sequence() {
    let cfg = PreprocessConfig {
        n_top_genes: Some(200),
        flavor: HvgFlavor::Seurat,
        scale: true,
        max_value: Some(10.0),
        ..PreprocessConfig::default()
    };
    let (out, fitted) = fit_transform(counts(), &cfg).unwrap();
    for m in &fitted.messages {
        eprintln!("pipeline: {m}");
    }
    assert_eq!(fitted.input_kind, DataKind::Counts);
    let ref_hv = read_bool(fixture!("hvg_seurat_highly_variable.npy"));
    let ref_genes: Vec<String> = (0..1000)
        .filter(|&j| ref_hv[j])
        .map(|j| counts().var_names[j].clone())
        .collect();
    assert_eq!(
        fitted.genes, ref_genes,
        "pipeline HVGs differ from scanpy's"
    );
    // normalize_total(1e4) -> log1p -> hvg(seurat, 200) -> subset -> scale(max_value=10)
    let reference = read_npy(fixture!("scale_hvg200_first20_rows.npy"));
    let ours: Vec<f64> = out
        .x
        .rows_dense(&(0..20).collect::<Vec<_>>())
        .data
        .iter()
        .map(|&v| v as f64)
        .collect();
    let dev = max_rel(&ours, &reference.data, 1.0);
    eprintln!("pipeline output vs scanpy scaled HVG200: max deviation {dev:.3e}");
    assert!(dev < 1e-4);
    // transform() of the training cells reproduces fit_transform's output.
    let again = fitted.transform(counts()).unwrap();
    assert_eq!(again.x.to_dense(), out.x.to_dense());
    // Log data are refused by a pipeline fit on counts.
    let err = fitted.transform(logged()).unwrap_err().to_string();
    assert!(err.contains("raw integer counts"), "{err}");
}
