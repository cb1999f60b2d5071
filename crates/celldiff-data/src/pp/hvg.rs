//! Highly variable genes: `scanpy.pp.highly_variable_genes` flavors `seurat` and `seurat_v3`
//! (single batch).

use serde::{Deserialize, Serialize};

use super::basic::{col_mean_var, col_mean_var_with, csr_of};
use super::loess::loess_fit;
use crate::anndata::{AnnData, Column, Matrix};
use crate::error::{Error, Result};

/// The HVG method (scanpy's `flavor`).
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum HvgFlavor {
    /// `flavor='seurat'`: normalised dispersion within 20 mean bins, on log1p-normalised data.
    #[default]
    Seurat,
    /// `flavor='seurat_v3'`: loess-standardised variance, on raw counts.
    #[cfg_attr(feature = "clap", value(name = "seurat_v3"))]
    SeuratV3,
}

impl HvgFlavor {
    /// scanpy's name (`"seurat"`, `"seurat_v3"`).
    pub fn scanpy_name(self) -> &'static str {
        match self {
            HvgFlavor::Seurat => "seurat",
            HvgFlavor::SeuratV3 => "seurat_v3",
        }
    }
}

/// Parameters of [`highly_variable_genes`], with scanpy 1.11's defaults.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct HvgParams {
    /// Method.
    pub flavor: HvgFlavor,
    /// Number of genes to select. `None`: the mean/dispersion cutoffs below (seurat), 2000
    /// (seurat_v3, scanpy's default). When given, the cutoffs are ignored.
    pub n_top_genes: Option<usize>,
    /// Lower cutoff on the log1p mean (exclusive), seurat only. Default 0.0125.
    pub min_mean: f64,
    /// Upper cutoff on the log1p mean (exclusive), seurat only. Default 3.
    pub max_mean: f64,
    /// Lower cutoff on the normalised dispersion (exclusive), seurat only. Default 0.5.
    pub min_disp: f64,
    /// Upper cutoff on the normalised dispersion (exclusive), seurat only. Default +inf.
    pub max_disp: f64,
    /// Number of mean bins, seurat only. Default 20.
    pub n_bins: usize,
    /// Loess span, seurat_v3 only. Default 0.3.
    pub span: f64,
}

impl Default for HvgParams {
    fn default() -> Self {
        Self {
            flavor: HvgFlavor::Seurat,
            n_top_genes: None,
            min_mean: 0.0125,
            max_mean: 3.0,
            min_disp: 0.5,
            max_disp: f64::INFINITY,
            n_bins: 20,
            span: 0.3,
        }
    }
}

/// Per-gene HVG statistics (all vectors of length `n_genes`, input gene order), as the `var`
/// columns written by `scanpy.pp.highly_variable_genes`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct HvgResult {
    /// The method used.
    pub flavor: HvgFlavor,
    /// `var['means']`: seurat: `log1p` of the mean of `expm1(X)` (zero means replaced by 1e-12
    /// first); seurat_v3: mean of the counts.
    pub means: Vec<f64>,
    /// `var['dispersions']` (seurat): log of variance/mean of `expm1(X)`, NaN for zero dispersion.
    pub dispersions: Option<Vec<f64>>,
    /// `var['dispersions_norm']` (seurat): dispersion z-scored within its mean bin.
    pub dispersions_norm: Option<Vec<f64>>,
    /// `var['variances']` (seurat_v3): variance (`ddof = 1`) of the counts.
    pub variances: Option<Vec<f64>>,
    /// `var['variances_norm']` (seurat_v3): variance of the loess-standardised, clipped counts.
    pub variances_norm: Option<Vec<f64>>,
    /// `var['highly_variable_rank']` (seurat_v3): 0-based rank among the selected, NaN otherwise.
    pub highly_variable_rank: Option<Vec<f64>>,
    /// `var['highly_variable']`.
    pub highly_variable: Vec<bool>,
}

impl HvgResult {
    /// Indices of the selected genes, in input order.
    pub fn selected(&self) -> Vec<usize> {
        (0..self.highly_variable.len())
            .filter(|&j| self.highly_variable[j])
            .collect()
    }
}

/// Computes highly variable genes of `x` (`[n_cells, n_genes]`) without an AnnData, as
/// `scanpy.pp.highly_variable_genes(adata, flavor=..., n_top_genes=..., inplace=False)`
/// (single batch, `subset=False`).
///
/// Input units: `Seurat` expects log1p-normalised data (natural log; pass `log1p_base` if
/// `uns['log1p']['base']` was set), `SeuratV3` raw counts (non-integer values are used as they
/// are, as scanpy does after its warning).
///
/// Seurat: mean and variance (`ddof = 1`) of `expm1(X)` per gene; `dispersion = var / mean`
/// (zero means set to 1e-12), log-dispersion (0 → NaN) and `log1p(mean)`; genes are binned by
/// `pandas.cut(means, n_bins)`; `dispersions_norm` is the z-score of the dispersion within its
/// bin (a bin with a single gene gets normalised dispersion 1, as scanpy). With `n_top_genes`,
/// genes with `dispersions_norm >=` the n-th highest non-NaN value are selected (ties at the
/// boundary are all kept, NaN never selected), otherwise the mean/dispersion cutoffs apply.
///
/// SeuratV3: loess (span 0.3, degree 2, skmisc's interpolated surface) of log10 variance on
/// log10 mean over non-constant genes; counts are standardised with the fitted standard
/// deviation, clipped at `mean + sd * sqrt(n_cells)`, and ranked by their variance
/// (`variances_norm`). The top `n_top_genes` are selected; exact ties are broken by gene order
/// (scanpy's order among exactly tied genes comes from numpy's unstable argsort and differs
/// between CPUs).
///
/// # Errors
/// - [`Error::Param`] for `n_top_genes = Some(0)` or `n_bins = 0`.
/// - [`Error::InvalidInput`] for an empty matrix, negative/non-finite values (seurat_v3), no
///   finite normalised dispersion with `n_top_genes` (seurat), or too few non-constant genes
///   for the loess (seurat_v3).
pub fn highly_variable_genes_matrix(
    x: &Matrix,
    params: &HvgParams,
    log1p_base: Option<f64>,
) -> Result<HvgResult> {
    let (n_cells, n_genes) = x.shape();
    check_hvg_input(params, n_cells, n_genes)?;
    match params.flavor {
        HvgFlavor::Seurat => hvg_seurat(x, params, log1p_base),
        HvgFlavor::SeuratV3 => hvg_seurat_v3(x, params),
    }
}

/// The parameter and shape checks of [`highly_variable_genes_matrix`] for a
/// `[n_cells, n_genes]` input, before any statistic is computed.
///
/// # Errors
/// [`Error::Param`] for `n_top_genes = Some(0)` or (seurat) `n_bins = 0`;
/// [`Error::InvalidInput`] for fewer than 2 cells or no gene.
pub(crate) fn check_hvg_input(params: &HvgParams, n_cells: usize, n_genes: usize) -> Result<()> {
    if params.n_top_genes == Some(0) {
        return Err(Error::Param(
            "highly_variable_genes: n_top_genes must be > 0".into(),
        ));
    }
    if n_cells < 2 || n_genes == 0 {
        return Err(Error::InvalidInput(format!(
            "highly_variable_genes needs at least 2 cells and 1 gene, got [{n_cells}, {n_genes}]"
        )));
    }
    if params.flavor == HvgFlavor::Seurat && params.n_bins == 0 {
        return Err(Error::Param(
            "highly_variable_genes: n_bins must be > 0".into(),
        ));
    }
    Ok(())
}

/// `scanpy.pp.highly_variable_genes(adata, flavor=..., n_top_genes=..., subset=...)` on
/// `adata.x` (`[n_cells, n_genes]`; log1p-normalised for `Seurat`, raw counts for `SeuratV3`).
///
/// Writes `var['highly_variable']`, `var['means']` and, for seurat, `var['dispersions']`,
/// `var['dispersions_norm']`, for seurat_v3, `var['highly_variable_rank']`, `var['variances']`,
/// `var['variances_norm']`, and `uns['hvg'] = {'flavor': ...}`, like scanpy. If `subset`, keeps
/// only the selected genes (in their original order). `uns['log1p']['base']` is honoured for
/// seurat. See [`highly_variable_genes_matrix`] for the method.
///
/// # Errors
/// As [`highly_variable_genes_matrix`].
pub fn highly_variable_genes(
    adata: &mut AnnData,
    params: &HvgParams,
    subset: bool,
) -> Result<HvgResult> {
    let base = adata
        .uns
        .get("log1p")
        .and_then(|v| v.get("base"))
        .and_then(|b| b.as_f64());
    let res = highly_variable_genes_matrix(&adata.x, params, base)?;
    write_hvg_columns(adata, &res);
    if subset {
        *adata = adata.select_vars(&res.selected());
    }
    Ok(res)
}

/// Writes the `var` columns and `uns['hvg']` of an [`HvgResult`] (same gene order as `adata`).
pub(crate) fn write_hvg_columns(adata: &mut AnnData, res: &HvgResult) {
    adata.set_var("highly_variable", Column::Bool(res.highly_variable.clone()));
    if let Some(r) = &res.highly_variable_rank {
        adata.set_var("highly_variable_rank", Column::Numeric(r.clone()));
    }
    adata.set_var("means", Column::Numeric(res.means.clone()));
    for (key, col) in [
        ("dispersions", &res.dispersions),
        ("dispersions_norm", &res.dispersions_norm),
        ("variances", &res.variances),
        ("variances_norm", &res.variances_norm),
    ] {
        if let Some(c) = col {
            adata.set_var(key, Column::Numeric(c.clone()));
        }
    }
    adata.uns.insert(
        "hvg".into(),
        serde_json::json!({ "flavor": res.flavor.scanpy_name() }),
    );
}

/// The per-value transform of the seurat flavor: `expm1(X * ln(base))` in `f32` (numpy on
/// scanpy's `float32` data), widened to `f64`; `log1p_base = None` is base e. Its per-gene mean
/// and variance ([`super::basic::col_mean_var_with`]) are the input of [`seurat_select`].
pub(crate) fn seurat_expm1(log1p_base: Option<f64>) -> impl Fn(f32) -> f64 + Copy {
    let ln_base = log1p_base.map(|b| b.ln() as f32);
    move |v: f32| {
        let v = match ln_base {
            Some(l) => v * l,
            None => v,
        };
        v.exp_m1() as f64
    }
}

fn hvg_seurat(x: &Matrix, params: &HvgParams, log1p_base: Option<f64>) -> Result<HvgResult> {
    let (mean, var) = col_mean_var_with(x, seurat_expm1(log1p_base));
    seurat_select(mean, &var, params)
}

/// The seurat flavor from the per-gene mean and variance (`ddof = 1`) of `expm1(X)` (length
/// `n_genes`, from [`seurat_expm1`]): dispersions, their z-scores within mean bins, and the
/// selection (see [`highly_variable_genes_matrix`]). `params` must have passed
/// [`check_hvg_input`].
///
/// # Errors
/// [`Error::InvalidInput`] if `n_top_genes` is given and no gene has a finite normalised
/// dispersion.
pub(crate) fn seurat_select(
    mut mean: Vec<f64>,
    var: &[f64],
    params: &HvgParams,
) -> Result<HvgResult> {
    let n_genes = mean.len();
    for m in mean.iter_mut() {
        if *m == 0.0 {
            *m = 1e-12;
        }
    }
    let dispersions: Vec<f64> = mean
        .iter()
        .zip(var)
        .map(|(&m, &v)| {
            let d = v / m;
            if d == 0.0 { f64::NAN } else { d.ln() }
        })
        .collect();
    let means: Vec<f64> = mean.iter().map(|m| m.ln_1p()).collect();
    let bins = pandas_cut(&means, params.n_bins);
    let n_bins = params.n_bins;
    // Per-bin mean (Kahan) and std (ddof=1, Welford) of the non-NaN dispersions, as pandas
    // groupby().agg(avg="mean", dev="std").
    let mut count = vec![0usize; n_bins];
    let mut members = vec![0usize; n_bins];
    let mut sum = vec![0.0f64; n_bins];
    let mut comp = vec![0.0f64; n_bins];
    let mut wmean = vec![0.0f64; n_bins];
    let mut ssqdm = vec![0.0f64; n_bins];
    for (g, &d) in dispersions.iter().enumerate() {
        let b = bins[g];
        members[b] += 1;
        if d.is_nan() {
            continue;
        }
        count[b] += 1;
        let y = d - comp[b];
        let t = sum[b] + y;
        comp[b] = (t - sum[b]) - y;
        sum[b] = t;
        let old = wmean[b];
        wmean[b] += (d - old) / count[b] as f64;
        ssqdm[b] += (d - wmean[b]) * (d - old);
    }
    let mut avg = vec![f64::NAN; n_bins];
    let mut dev = vec![f64::NAN; n_bins];
    for b in 0..n_bins {
        if count[b] > 0 {
            avg[b] = sum[b] / count[b] as f64;
        }
        if count[b] > 1 {
            dev[b] = (ssqdm[b] / (count[b] - 1) as f64).sqrt();
        }
        // _postprocess_dispersions_seurat: bins (that hold genes) with NaN std get dev = avg,
        // avg = 0, i.e. a single-gene bin has normalised dispersion 1.
        if members[b] > 0 && dev[b].is_nan() {
            dev[b] = avg[b];
            avg[b] = 0.0;
        }
    }
    let dispersions_norm: Vec<f64> = dispersions
        .iter()
        .zip(&bins)
        .map(|(&d, &b)| (d - avg[b]) / dev[b])
        .collect();
    let highly_variable = match params.n_top_genes {
        Some(n_top) => {
            let n_top = n_top.min(n_genes);
            let mut finite: Vec<f64> = dispersions_norm
                .iter()
                .copied()
                .filter(|d| !d.is_nan())
                .collect();
            if finite.is_empty() {
                return Err(Error::InvalidInput(
                    "highly_variable_genes(seurat): no gene has a finite normalised dispersion \
                     (all genes constant?)"
                        .into(),
                ));
            }
            let n = n_top.min(finite.len());
            finite.sort_by(|a, b| b.total_cmp(a));
            let cutoff = finite[n - 1];
            // np.nan_to_num(dispersion_norm, nan=-inf) >= cutoff
            dispersions_norm
                .iter()
                .map(|&d| nan_to_num(d, f64::NEG_INFINITY) >= cutoff)
                .collect()
        }
        None => means
            .iter()
            .zip(&dispersions_norm)
            .map(|(&m, &d)| {
                let d = nan_to_num(d, 0.0);
                m > params.min_mean
                    && m < params.max_mean
                    && d > params.min_disp
                    && d < params.max_disp
            })
            .collect(),
    };
    Ok(HvgResult {
        flavor: HvgFlavor::Seurat,
        means,
        dispersions: Some(dispersions),
        dispersions_norm: Some(dispersions_norm),
        variances: None,
        variances_norm: None,
        highly_variable_rank: None,
        highly_variable,
    })
}

/// `np.nan_to_num(x, nan=nan)`: ±inf become the largest finite values.
fn nan_to_num(x: f64, nan: f64) -> f64 {
    if x.is_nan() {
        nan
    } else if x == f64::INFINITY {
        f64::MAX
    } else if x == f64::NEG_INFINITY {
        f64::MIN
    } else {
        x
    }
}

/// Bin index of each value under `pandas.cut(values, bins=n_bins)` (equal-width bins over
/// `[min, max]`, right-closed, the first edge lowered by 0.1% of the range; a constant input
/// widens the range by 0.1% of |value| on both sides).
fn pandas_cut(values: &[f64], n_bins: usize) -> Vec<usize> {
    let mn = values.iter().copied().fold(f64::INFINITY, f64::min);
    let mx = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let linspace = |start: f64, stop: f64| -> Vec<f64> {
        let step = (stop - start) / n_bins as f64;
        let mut e: Vec<f64> = (0..=n_bins).map(|i| i as f64 * step + start).collect();
        e[n_bins] = stop;
        e
    };
    let edges = if mn == mx {
        let (a, b) = if mn != 0.0 {
            (mn - 0.001 * mn.abs(), mx + 0.001 * mx.abs())
        } else {
            (-0.001, 0.001)
        };
        linspace(a, b)
    } else {
        let mut e = linspace(mn, mx);
        e[0] -= (mx - mn) * 0.001;
        e
    };
    values
        .iter()
        .map(|&v| {
            // searchsorted(edges, v, side='left') - 1
            let pos = edges.partition_point(|&e| e < v);
            pos.saturating_sub(1).min(n_bins - 1)
        })
        .collect()
}

fn hvg_seurat_v3(x: &Matrix, params: &HvgParams) -> Result<HvgResult> {
    let mut bad = None;
    x.for_each_nonzero(|i, j, v| {
        if bad.is_none() && (v < 0.0 || !v.is_finite()) {
            bad = Some((i, j, v));
        }
    });
    if let Some((i, j, v)) = bad {
        return Err(Error::InvalidInput(format!(
            "highly_variable_genes(seurat_v3) expects raw counts, found {v} at cell {i}, gene {j}"
        )));
    }
    let (means, variances) = col_mean_var(x);
    let trend = SeuratV3Trend::fit(means, variances, x.n_rows(), params)?;
    let mut clipped = trend.clipped_sums();
    clipped.add(x);
    Ok(trend.select(clipped, params))
}

/// The seurat_v3 flavor between its passes over the counts: the per-gene mean and variance
/// (`ddof = 1`) of the counts, the loess trend of the variance and the clipping values.
/// [`highly_variable_genes_matrix`] and `fit_streaming` both use it: fit it on the
/// [`super::basic::col_mean_var`] statistics, feed every block of counts (rows in order) to
/// [`clipped_sums`](Self::clipped_sums), then [`select`](Self::select).
pub(crate) struct SeuratV3Trend {
    means: Vec<f64>,
    variances: Vec<f64>,
    reg_std: Vec<f64>,
    clip_val: Vec<f64>,
    n_cells: usize,
}

impl SeuratV3Trend {
    /// Loess (span `params.span`) of log10 variance on log10 mean over the non-constant genes
    /// of a `[n_cells, means.len()]` count matrix.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] when too few genes have non-zero variance for the loess.
    pub(crate) fn fit(
        means: Vec<f64>,
        variances: Vec<f64>,
        n_cells: usize,
        params: &HvgParams,
    ) -> Result<Self> {
        let n_genes = means.len();
        let not_const: Vec<usize> = (0..n_genes).filter(|&j| variances[j] > 0.0).collect();
        let lx: Vec<f64> = not_const.iter().map(|&j| means[j].log10()).collect();
        let ly: Vec<f64> = not_const.iter().map(|&j| variances[j].log10()).collect();
        let fitted = loess_fit(&lx, &ly, params.span).map_err(|e| {
            Error::InvalidInput(format!(
                "highly_variable_genes(seurat_v3): {} genes with non-zero variance are too few \
                 for the loess trend ({e})",
                not_const.len()
            ))
        })?;
        let mut estimat_var = vec![0.0f64; n_genes];
        for (k, &j) in not_const.iter().enumerate() {
            estimat_var[j] = fitted[k];
        }
        let reg_std: Vec<f64> = estimat_var.iter().map(|&e| 10f64.powf(e).sqrt()).collect();
        let vmax = (n_cells as f64).sqrt();
        let clip_val: Vec<f64> = (0..n_genes).map(|j| reg_std[j] * vmax + means[j]).collect();
        Ok(Self {
            means,
            variances,
            reg_std,
            clip_val,
            n_cells,
        })
    }

    /// Empty per-gene sums of the clipped counts and of their squares.
    pub(crate) fn clipped_sums(&self) -> SeuratV3ClippedSums {
        let n_genes = self.means.len();
        SeuratV3ClippedSums {
            clip_val: self.clip_val.clone(),
            sq_sum: vec![0.0; n_genes],
            sum: vec![0.0; n_genes],
        }
    }

    /// `variances_norm`, ranks and the top `n_top_genes` (default 2000) from the clipped sums
    /// over all cells.
    pub(crate) fn select(self, clipped: SeuratV3ClippedSums, params: &HvgParams) -> HvgResult {
        let n_top = params.n_top_genes.unwrap_or(2000);
        let n_genes = self.means.len();
        let SeuratV3ClippedSums { sq_sum, sum, .. } = clipped;
        let (means, reg_std) = (&self.means, &self.reg_std);
        let n = self.n_cells as f64;
        let variances_norm: Vec<f64> = (0..n_genes)
            .map(|j| {
                let m = means[j];
                (1.0 / ((n - 1.0) * reg_std[j] * reg_std[j]))
                    * (n * m * m + sq_sum[j] - 2.0 * sum[j] * m)
            })
            .collect();
        // Rank by decreasing normalised variance (NaN last, ties by gene order).
        let mut order: Vec<usize> = (0..n_genes).collect();
        order.sort_by(|&a, &b| {
            let (va, vb) = (variances_norm[a], variances_norm[b]);
            match (va.is_nan(), vb.is_nan()) {
                (true, true) => std::cmp::Ordering::Equal,
                (true, false) => std::cmp::Ordering::Greater,
                (false, true) => std::cmp::Ordering::Less,
                _ => vb.total_cmp(&va),
            }
        });
        let mut rank = vec![f64::NAN; n_genes];
        let mut highly_variable = vec![false; n_genes];
        for (r, &j) in order.iter().enumerate().take(n_top) {
            rank[j] = r as f64;
            highly_variable[j] = true;
        }
        HvgResult {
            flavor: HvgFlavor::SeuratV3,
            means: self.means,
            dispersions: None,
            dispersions_norm: None,
            variances: Some(self.variances),
            variances_norm: Some(variances_norm),
            highly_variable_rank: Some(rank),
            highly_variable,
        }
    }
}

/// Per-gene sums of `min(count, clip_val)` and of its square (`f64`), fed one block of counts
/// at a time in row order (see [`SeuratV3Trend`]).
pub(crate) struct SeuratV3ClippedSums {
    clip_val: Vec<f64>,
    sq_sum: Vec<f64>,
    sum: Vec<f64>,
}

impl SeuratV3ClippedSums {
    /// Adds the stored counts of `block` (`[rows, n_genes]`, the next rows in order).
    pub(crate) fn add(&mut self, block: &Matrix) {
        let (clip_val, sq_sum, sum) = (&self.clip_val, &mut self.sq_sum, &mut self.sum);
        match block {
            Matrix::Csr(c) => {
                let c = csr_of(c);
                for (&j, &v) in c.indices().iter().zip(c.data()) {
                    let e = f64::min(v as f64, clip_val[j]);
                    sq_sum[j] += e * e;
                    sum[j] += e;
                }
            }
            Matrix::Dense(_) => block.for_each_nonzero(|_, j, v| {
                let e = f64::min(v as f64, clip_val[j]);
                sq_sum[j] += e * e;
                sum[j] += e;
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pandas_cut_edges() {
        // pd.cut([0, 1, 2, 3, 4], 4) -> codes [0, 0, 1, 2, 3]
        assert_eq!(
            pandas_cut(&[0.0, 1.0, 2.0, 3.0, 4.0], 4),
            vec![0, 0, 1, 2, 3]
        );
        // Constant input: pandas widens the range by 0.1%; all values share one bin.
        let c = pandas_cut(&[2.0, 2.0, 2.0], 4);
        assert!(c.iter().all(|&b| b == c[0] && b < 4));
    }

    #[test]
    fn nan_to_num_like_numpy() {
        assert_eq!(nan_to_num(f64::NAN, -1.0), -1.0);
        assert_eq!(nan_to_num(f64::INFINITY, 0.0), f64::MAX);
        assert_eq!(nan_to_num(f64::NEG_INFINITY, 0.0), f64::MIN);
    }
}
