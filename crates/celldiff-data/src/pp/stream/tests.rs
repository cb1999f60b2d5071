//! `fit_streaming` against `fit_transform` on real data (pbmc68k_reduced counts, log1p and
//! scaled; the 10x brain 10k subset; Weinreb), for block sizes 1, 37 and all rows.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use super::*;
use crate::anndata::{AnnData, DenseMatrix};
use crate::io::{ReadOptions, read};
use crate::pp::{DataKind, Step, filter_cells, fit_transform};

const SHARED: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared");

fn shared(rel: &str) -> PathBuf {
    let p = Path::new(SHARED).join(rel);
    assert!(
        p.exists(),
        "shared file missing: {} (expected the `shared/` folder beside the repository)",
        p.display()
    );
    p
}

fn load(rel: &str, use_raw: bool) -> AnnData {
    let opts = ReadOptions {
        use_raw,
        ..ReadOptions::default()
    };
    read(&shared(rel), &opts).unwrap_or_else(|e| panic!("read {rel}: {e}"))
}

/// pbmc68k_reduced raw counts (700 x 765, CSR).
fn pbmc_counts() -> &'static AnnData {
    static A: OnceLock<AnnData> = OnceLock::new();
    A.get_or_init(|| load("data/pbmc68k_reduced/pbmc68k_reduced_counts.h5ad", false))
}

/// pbmc68k_reduced `raw.X`: log1p-normalised (700 x 765).
fn pbmc_log() -> &'static AnnData {
    static A: OnceLock<AnnData> = OnceLock::new();
    A.get_or_init(|| load("data/pbmc68k_reduced/10x_pbmc68k_reduced.h5ad", true))
}

/// pbmc68k_reduced `X`: scaled, dense (700 x 765).
fn pbmc_scaled() -> &'static AnnData {
    static A: OnceLock<AnnData> = OnceLock::new();
    A.get_or_init(|| load("data/pbmc68k_reduced/10x_pbmc68k_reduced.h5ad", false))
}

/// The 10x mouse-brain subset: raw counts, 10,000 x 1,000 (285 genes never detected).
fn brain() -> &'static AnnData {
    static A: OnceLock<AnnData> = OnceLock::new();
    A.get_or_init(|| {
        load(
            "data/mouse_brain_1m_10k_subset/brain_1m_10k_cells_1000_genes.h5ad",
            false,
        )
    })
}

/// Weinreb: normalised to 1e4 per cell over all genes, not log-transformed (781 x 2481).
fn weinreb() -> &'static AnnData {
    static A: OnceLock<AnnData> = OnceLock::new();
    A.get_or_init(|| {
        load(
            "data/weinreb_larry_hematopoiesis_subset/test_adata_preprocessed.h5ad",
            false,
        )
    })
}

fn streamed(ad: &AnnData, cfg: &PreprocessConfig, block_rows: usize) -> Result<StreamFit> {
    fit_streaming(
        &mut ad.x.clone(),
        &ad.var_names,
        Some(&ad.obs_names),
        cfg,
        block_rows,
    )
}

/// `fit_streaming` equals `fit_transform` for block sizes 1, 37 and all rows, and `kept`
/// is what `filter_cells` keeps. Returns the fitted pipeline.
fn assert_same(ad: &AnnData, cfg: &PreprocessConfig) -> FittedPreprocess {
    let (_, want) = fit_transform(ad, cfg).unwrap();
    let n = ad.n_obs();
    let want_kept: Vec<usize> = match cfg.min_genes {
        Some(m) => {
            let mask = filter_cells(ad, None, Some(m)).unwrap().1;
            (0..n).filter(|&i| mask[i]).collect()
        }
        None => (0..n).collect(),
    };
    for b in [1, 37, n] {
        let got = streamed(ad, cfg, b).unwrap();
        let f = &got.fitted;
        // Field by field first, for a readable failure.
        assert_eq!(f.messages, want.messages, "messages, block_rows {b}");
        assert_eq!(f.steps, want.steps, "steps, block_rows {b}");
        assert_eq!(f.input_kind, want.input_kind, "kind, block_rows {b}");
        assert_eq!(f.target_sum, want.target_sum, "target_sum, block_rows {b}");
        assert_eq!(
            f.input_genes, want.input_genes,
            "input_genes, block_rows {b}"
        );
        assert_eq!(f.genes, want.genes, "genes, block_rows {b}");
        assert_eq!(
            f.highly_variable, want.highly_variable,
            "hv, block_rows {b}"
        );
        assert_eq!(f.scale, want.scale, "scale stats, block_rows {b}");
        assert_eq!(f.minmax, want.minmax, "minmax stats, block_rows {b}");
        assert_eq!(*f, want, "block_rows {b}");
        assert_eq!(got.kept, want_kept, "kept, block_rows {b}");
    }
    want
}

/// Both fail with the same variant and text, for every block size.
fn assert_same_error(ad: &AnnData, cfg: &PreprocessConfig) -> String {
    let want = fit_transform(ad, cfg).unwrap_err();
    for b in [1, 37, ad.n_obs().max(1)] {
        let got = streamed(ad, cfg, b).unwrap_err();
        assert_eq!(
            std::mem::discriminant(&got),
            std::mem::discriminant(&want),
            "block_rows {b}: {got} vs {want}"
        );
        assert_eq!(got.to_string(), want.to_string(), "block_rows {b}");
    }
    want.to_string()
}

fn top(n: usize) -> PreprocessConfig {
    PreprocessConfig {
        n_top_genes: Some(n),
        ..PreprocessConfig::default()
    }
}

fn has_hvg(f: &FittedPreprocess) -> bool {
    f.steps
        .iter()
        .any(|s| matches!(s, Step::HighlyVariableGenes { .. }))
}

#[test]
fn pbmc_counts_default_median_filters_subset() {
    let ad = pbmc_counts();
    // Default: 765 genes < 2000, normalize 1e4 + log1p, all genes kept.
    let f = assert_same(ad, &PreprocessConfig::default());
    assert_eq!(f.input_kind, DataKind::Counts);
    assert_eq!(f.target_sum, Some(1e4));
    assert!(!has_hvg(&f));
    // 300 seurat HVGs.
    let f = assert_same(ad, &top(300));
    assert!(has_hvg(&f) && f.genes.len() >= 300);
    // Median target.
    let f = assert_same(
        ad,
        &PreprocessConfig {
            target_sum: None,
            ..top(300)
        },
    );
    assert!(f.target_sum.is_some_and(|t| t != 1e4));
    // Both filters: some cells and genes go.
    let cfg = PreprocessConfig {
        min_genes: Some(230),
        min_cells: Some(60),
        ..top(300)
    };
    let f = assert_same(ad, &cfg);
    let s = streamed(ad, &cfg, 100).unwrap();
    assert!(s.kept.len() < 700 && s.kept.len() > 100, "{}", s.kept.len());
    assert!(f.input_genes.len() < 765, "{}", f.input_genes.len());
    // No subset: HVG mask over all genes.
    let f = assert_same(
        ad,
        &PreprocessConfig {
            subset: false,
            ..top(300)
        },
    );
    assert_eq!(f.highly_variable.as_ref().map(Vec::len), Some(765));
    // Normalised, not logged, no HVGs.
    assert_same(
        ad,
        &PreprocessConfig {
            log1p: Some(false),
            n_top_genes: None,
            ..PreprocessConfig::default()
        },
    );
}

#[test]
fn pbmc_counts_scale_minmax_and_dense_input() {
    let ad = pbmc_counts();
    let f = assert_same(
        ad,
        &PreprocessConfig {
            scale: true,
            max_value: Some(10.0),
            ..top(300)
        },
    );
    assert!(f.scale.is_some());
    let f = assert_same(
        ad,
        &PreprocessConfig {
            minmax: true,
            min_genes: Some(230),
            ..top(300)
        },
    );
    assert!(f.minmax.is_some());
    // The same counts stored dense: dense blocks, dense statistics.
    let mut dense = ad.clone();
    dense.x = Matrix::Dense(ad.x.to_dense());
    assert_same(
        &dense,
        &PreprocessConfig {
            scale: true,
            max_value: Some(10.0),
            min_genes: Some(230),
            min_cells: Some(60),
            target_sum: None,
            ..top(300)
        },
    );
    assert_same(
        &dense,
        &PreprocessConfig {
            subset: false,
            minmax: true,
            ..top(200)
        },
    );
}

#[test]
fn pbmc_seurat_v3() {
    let ad = pbmc_counts();
    let v3 = |n| PreprocessConfig {
        flavor: HvgFlavor::SeuratV3,
        ..top(n)
    };
    let f = assert_same(ad, &v3(300));
    assert!(matches!(
        f.steps[0],
        Step::HighlyVariableGenes {
            flavor: HvgFlavor::SeuratV3,
            n_selected: 300,
            ..
        }
    ));
    assert_same(
        ad,
        &PreprocessConfig {
            min_genes: Some(230),
            min_cells: Some(60),
            scale: true,
            ..v3(200)
        },
    );
}

#[test]
fn already_log_and_scaled_input() {
    let ad = pbmc_log();
    let f = assert_same(ad, &PreprocessConfig::default());
    assert_eq!(f.input_kind, DataKind::LogNormalized);
    assert!(
        !f.steps
            .iter()
            .any(|s| matches!(s, Step::NormalizeTotal { .. } | Step::Log1p))
    );
    assert_same(ad, &top(300));
    assert_same(
        ad,
        &PreprocessConfig {
            min_cells: Some(60),
            min_genes: Some(230),
            scale: true,
            ..top(300)
        },
    );
    // Scaled (dense, negative) input, used as is.
    let sc = pbmc_scaled();
    let f = assert_same(
        sc,
        &PreprocessConfig {
            n_top_genes: None,
            minmax: true,
            ..PreprocessConfig::default()
        },
    );
    assert_eq!(f.input_kind, DataKind::Scaled);
}

#[test]
fn brain_10k() {
    let ad = brain();
    let f = assert_same(ad, &PreprocessConfig::default());
    assert_eq!(f.genes.len(), 1000);
    let f = assert_same(
        ad,
        &PreprocessConfig {
            min_genes: Some(20),
            min_cells: Some(3),
            scale: true,
            max_value: Some(10.0),
            ..top(500)
        },
    );
    assert!(f.input_genes.len() < 1000);
    assert_same(
        ad,
        &PreprocessConfig {
            target_sum: None,
            subset: false,
            minmax: true,
            ..top(300)
        },
    );
    assert_same(
        ad,
        &PreprocessConfig {
            flavor: HvgFlavor::SeuratV3,
            min_cells: Some(3),
            ..top(300)
        },
    );
}

#[test]
fn weinreb_normalised_not_logged() {
    let ad = weinreb();
    // log1p only (no normalisation), then 2000 seurat HVGs of 2481 genes.
    let f = assert_same(
        ad,
        &PreprocessConfig {
            log1p: Some(true),
            ..PreprocessConfig::default()
        },
    );
    assert_eq!(f.input_kind, DataKind::Other);
    assert_eq!(f.steps.first(), Some(&Step::Log1p));
    assert!(has_hvg(&f));
    assert_same(
        ad,
        &PreprocessConfig {
            log1p: Some(true),
            scale: true,
            max_value: Some(10.0),
            min_genes: Some(500),
            ..PreprocessConfig::default()
        },
    );
    // Used as is with --no-log1p.
    assert_same(
        ad,
        &PreprocessConfig {
            n_top_genes: None,
            log1p: Some(false),
            minmax: true,
            ..PreprocessConfig::default()
        },
    );
    // Default: detected as normalised but not logged, so log1p is applied.
    let f = assert_same(ad, &PreprocessConfig::default());
    assert_eq!(f.steps.first(), Some(&Step::Log1p));
    assert!(f.messages.iter().any(|m| m.contains("log1p applied")));
    // seurat HVGs with log1p turned off: the same refusal, naming the CLI flags.
    let msg = assert_same_error(
        ad,
        &PreprocessConfig {
            log1p: Some(false),
            ..PreprocessConfig::default()
        },
    );
    assert!(
        msg.contains("flavor seurat needs log1p-normalised") && msg.contains("request log1p"),
        "{msg}"
    );
}

/// Sets stored value `k` of a CSR `X` to `v`.
fn with_value(ad: &AnnData, k: usize, v: f32) -> AnnData {
    let mut bad = ad.clone();
    let Matrix::Csr(c) = &mut bad.x else {
        panic!("expected CSR")
    };
    c.data_mut()[k] = v;
    bad
}

#[test]
fn bad_input_same_errors() {
    let ad = pbmc_counts();
    let nnz = match &ad.x {
        Matrix::Csr(c) => c.nnz(),
        Matrix::Dense(_) => panic!("expected CSR"),
    };
    let k = nnz / 2 + 3;
    // A negative count with log1p forced.
    let neg = with_value(ad, k, -1.0);
    let forced = PreprocessConfig {
        log1p: Some(true),
        ..PreprocessConfig::default()
    };
    let msg = assert_same_error(&neg, &forced);
    assert!(msg.contains("negative values"), "{msg}");
    // A non-finite value, named by cell and gene.
    let nan = with_value(ad, k, f32::NAN);
    let msg = assert_same_error(&nan, &PreprocessConfig::default());
    assert!(
        msg.contains("non-finite") && msg.contains("cell `"),
        "{msg}"
    );
    let inf = with_value(ad, nnz - 1, f32::INFINITY);
    assert_same_error(&inf, &top(100));
    // log1p forced on log data; seurat_v3 on log data.
    assert_same_error(pbmc_log(), &forced);
    let msg = assert_same_error(
        pbmc_log(),
        &PreprocessConfig {
            flavor: HvgFlavor::SeuratV3,
            ..top(100)
        },
    );
    assert!(msg.contains("seurat_v3 needs raw counts"), "{msg}");
    // Filters removing everything.
    let msg = assert_same_error(
        ad,
        &PreprocessConfig {
            min_genes: Some(100_000),
            ..PreprocessConfig::default()
        },
    );
    assert!(msg.contains("min_genes=100000"), "{msg}");
    let msg = assert_same_error(
        ad,
        &PreprocessConfig {
            min_cells: Some(100_000),
            ..PreprocessConfig::default()
        },
    );
    assert!(msg.contains("min_cells=100000"), "{msg}");
    // A bad target sum (found after filtering) and configuration errors.
    assert_same_error(
        ad,
        &PreprocessConfig {
            target_sum: Some(-1.0),
            min_genes: Some(10),
            ..PreprocessConfig::default()
        },
    );
    assert_same_error(
        ad,
        &PreprocessConfig {
            scale: true,
            minmax: true,
            ..PreprocessConfig::default()
        },
    );
    assert_same_error(ad, &top(0));
}

#[test]
fn tiny_inputs_same_results_and_errors() {
    // 3 cells x 4 genes, one zero cell; only cell 1 has >= 3 genes.
    let x = Matrix::Dense(
        DenseMatrix::from_vec(
            3,
            4,
            vec![1.0, 0.0, 2.0, 0.0, 3.0, 1.0, 1.0, 5.0, 0.0, 0.0, 0.0, 0.0],
        )
        .unwrap(),
    );
    let mut ad = AnnData::new(x, (0..4).map(|j| format!("g{j}")).collect());
    ad.obs_names = (0..3).map(|i| format!("c{i}")).collect();
    // Zero-count cell warning, median target.
    let f = assert_same(
        &ad,
        &PreprocessConfig {
            target_sum: None,
            n_top_genes: None,
            ..PreprocessConfig::default()
        },
    );
    assert!(
        f.messages
            .iter()
            .any(|m| m.contains("1 cells have zero counts"))
    );
    // One cell left: HVGs need two.
    let msg = assert_same_error(
        &ad,
        &PreprocessConfig {
            min_genes: Some(3),
            ..top(2)
        },
    );
    assert!(msg.contains("at least 2 cells"), "{msg}");
}

/// A source whose `read_rows` fails on call `fail_on` (1-based).
struct Failing {
    inner: Matrix,
    calls: usize,
    fail_on: usize,
}

impl RowBlocks for Failing {
    fn shape(&self) -> (usize, usize) {
        self.inner.shape()
    }

    fn read_rows(&mut self, start: usize, end: usize) -> Result<Matrix> {
        self.calls += 1;
        if self.calls == self.fail_on {
            return Err(Error::format(
                "/data/cells.h5ad",
                "X/data",
                format!("truncated chunk at rows {start}..{end}"),
            ));
        }
        self.inner.read_rows(start, end)
    }
}

#[test]
fn read_errors_propagate() {
    let ad = pbmc_counts();
    let cfg = PreprocessConfig {
        scale: true,
        ..top(300)
    };
    // 700 rows in blocks of 100: 7 reads per pass; fail in the first pass, in the HVG
    // passes and in the last (scale) pass.
    for fail_on in [1, 7, 10, 30, 35] {
        let mut src = Failing {
            inner: ad.x.clone(),
            calls: 0,
            fail_on,
        };
        let err = fit_streaming(&mut src, &ad.var_names, None, &cfg, 100).unwrap_err();
        assert!(matches!(err, Error::Format { .. }), "{err}");
        assert!(err.to_string().contains("truncated chunk"), "{err}");
        assert_eq!(src.calls, fail_on, "stopped at the failing read");
    }
    // The same source without failure: 5 passes (kind, 2 HVG, 2 scale).
    let mut src = Failing {
        inner: ad.x.clone(),
        calls: 0,
        fail_on: usize::MAX,
    };
    let s = fit_streaming(&mut src, &ad.var_names, None, &cfg, 100).unwrap();
    assert_eq!(src.calls, 35);
    assert_eq!(s.fitted, fit_transform(ad, &cfg).unwrap().1);
}

#[test]
fn bad_arguments() {
    let ad = pbmc_counts();
    let cfg = PreprocessConfig::default();
    let err = streamed(ad, &cfg, 0).unwrap_err();
    assert!(matches!(err, Error::Param(_)), "{err}");
    let err = fit_streaming(&mut ad.x.clone(), &ad.var_names[1..], None, &cfg, 10).unwrap_err();
    assert!(matches!(err, Error::InvalidInput(_)), "{err}");
    let err = fit_streaming(
        &mut ad.x.clone(),
        &ad.var_names,
        Some(&ad.obs_names[1..]),
        &cfg,
        10,
    )
    .unwrap_err();
    assert!(matches!(err, Error::InvalidInput(_)), "{err}");
}
