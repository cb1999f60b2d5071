//! The fitted, serialisable preprocessing pipeline: [`fit_transform`] on training data, then
//! [`FittedPreprocess::transform`] on new cells.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use super::basic::{
    DataKind, KindReport, MinMaxStats, ScaleStats, cell_gene, check_counts_named, filter_cells,
    filter_genes, inspect_kind, log1p, minmax_scale, minmax_with, normalize_rows_with,
    normalize_total, row_sums_with, scale, scale_with,
};
use super::hvg::{HvgFlavor, HvgParams, HvgResult, highly_variable_genes};
use crate::anndata::{AnnData, Column, Matrix};
use crate::error::{Error, Result};

/// What [`fit_transform`] does. Serialisable (JSON/TOML) so runs are reproducible.
///
/// The default is scVAEDer's preprocessing: no filtering; if the input is raw counts,
/// `normalize_total(target_sum=1e4)` + `log1p`; 2000 highly variable genes (`seurat` flavor on
/// the log data, or all genes when there are at most 2000) kept as the model's genes; no
/// scaling.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(default)]
pub struct PreprocessConfig {
    /// `sc.pp.filter_cells(min_genes=...)`: drop cells expressing fewer genes. `None`: no filter.
    pub min_genes: Option<usize>,
    /// `sc.pp.filter_genes(min_cells=...)`: drop genes expressed in fewer cells. `None`: no
    /// filter.
    pub min_cells: Option<usize>,
    /// `sc.pp.normalize_total(target_sum=...)` for count input; `None` = median library size
    /// (scanpy's default), fixed at fit time.
    pub target_sum: Option<f64>,
    /// Normalise + `log1p`: `None` = automatic (only when the input looks like counts);
    /// `Some(true)` forces `log1p` (an error on log or scaled input; on unrecognised
    /// non-negative input only `log1p` is applied); `Some(false)` = counts are normalised but
    /// not log-transformed.
    pub log1p: Option<bool>,
    /// Number of highly variable genes; `None` = keep all genes. When the data have at most this
    /// many genes, all are kept.
    pub n_top_genes: Option<usize>,
    /// HVG method: `Seurat` runs on the log data, `SeuratV3` on the counts before normalisation.
    pub flavor: HvgFlavor,
    /// Keep only the highly variable genes (otherwise they are marked in
    /// `var['highly_variable']`).
    pub subset: bool,
    /// `sc.pp.scale` (zero-centre, unit variance per gene); densifies `X`.
    pub scale: bool,
    /// `sc.pp.scale(max_value=...)`: clip scaled values to `[-max_value, max_value]`.
    pub max_value: Option<f32>,
    /// Min-max scale each gene to `[0, 1]` (exclusive with `scale`); densifies `X`.
    pub minmax: bool,
}

impl Default for PreprocessConfig {
    fn default() -> Self {
        Self {
            min_genes: None,
            min_cells: None,
            target_sum: Some(1e4),
            log1p: None,
            n_top_genes: Some(2000),
            flavor: HvgFlavor::Seurat,
            subset: true,
            scale: false,
            max_value: None,
            minmax: false,
        }
    }
}

/// One step of a fitted pipeline, in the order applied.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(tag = "step", rename_all = "snake_case")]
pub enum Step {
    /// `sc.pp.filter_cells(min_genes=...)` (fit only).
    FilterCells {
        /// Threshold.
        min_genes: usize,
        /// Cells before.
        n_before: usize,
        /// Cells kept.
        n_after: usize,
    },
    /// `sc.pp.filter_genes(min_cells=...)` (fit only; new data are restricted to the kept genes).
    FilterGenes {
        /// Threshold.
        min_cells: usize,
        /// Genes before.
        n_before: usize,
        /// Genes kept.
        n_after: usize,
    },
    /// `sc.pp.highly_variable_genes(flavor=..., n_top_genes=...)` (fit only).
    HighlyVariableGenes {
        /// Method.
        flavor: HvgFlavor,
        /// Requested number.
        n_top_genes: usize,
        /// Number selected (seurat keeps ties at the boundary).
        n_selected: usize,
    },
    /// `sc.pp.normalize_total(target_sum=...)` with the fitted target.
    NormalizeTotal {
        /// Target library size.
        target_sum: f64,
    },
    /// `sc.pp.log1p`.
    Log1p,
    /// Restriction to the selected genes (by name).
    Subset {
        /// Number of genes kept.
        n_genes: usize,
    },
    /// `sc.pp.scale` with the fitted per-gene means/stds.
    Scale {
        /// Always `true` in this pipeline.
        zero_center: bool,
        /// Clipping bound.
        max_value: Option<f32>,
    },
    /// Per-gene min-max scaling with the fitted minima/maxima.
    MinMax,
}

/// A fitted preprocessing pipeline: everything needed to put new cells in the same space as
/// the training data (serialise it next to a model).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct FittedPreprocess {
    /// The configuration it was fit with.
    pub config: PreprocessConfig,
    /// What the training input looked like; new data must look the same.
    pub input_kind: DataKind,
    /// The steps applied, in order.
    pub steps: Vec<Step>,
    /// Genes the library sizes were computed over (the input genes after `filter_genes`), in
    /// order; only used when a `NormalizeTotal` step is present.
    pub input_genes: Vec<String>,
    /// The output genes, in order (the model's genes).
    pub genes: Vec<String>,
    /// `var['highly_variable']` for `genes` when HVGs were computed without subsetting.
    pub highly_variable: Option<Vec<bool>>,
    /// The `normalize_total` target actually used (resolved median when configured `None`).
    pub target_sum: Option<f64>,
    /// Per-gene scaling statistics (over `genes`) if `scale`.
    pub scale: Option<ScaleStats>,
    /// Per-gene min/max (over `genes`) if `minmax`.
    pub minmax: Option<MinMaxStats>,
    /// Human-readable log of what was detected and done.
    pub messages: Vec<String>,
}

impl FittedPreprocess {
    fn has_normalize(&self) -> bool {
        self.steps
            .iter()
            .any(|s| matches!(s, Step::NormalizeTotal { .. }))
    }

    fn has_log1p(&self) -> bool {
        self.steps.iter().any(|s| matches!(s, Step::Log1p))
    }

    /// Whether every value of the output space is ≥ 0 (counts, normalised, log1p-normalised or
    /// min-max scaled data; not `scale`d or already centred input). Generated cells are floored
    /// at 0 in such a space, as real cells are.
    pub fn output_nonnegative(&self) -> bool {
        self.scale.is_none() && self.input_kind != DataKind::Scaled
    }

    /// Applies the fitted steps to new cells: selects the genes by name, checks that the data
    /// are of the same kind as the training input, `normalize_total` with the fitted target
    /// (library sizes over the same genes as at fit time), `log1p`, restriction to the fitted
    /// genes (in the fitted order), and `scale`/min-max with the fitted per-gene statistics.
    /// No filtering and no re-fitting; `obs` is kept.
    ///
    /// Input `adata.x`: `[n_cells, any genes]` of the same kind as the training input (raw
    /// counts if the pipeline was fit on counts). Output: `[n_cells, genes.len()]` in the
    /// training output units.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] when genes are missing (listing up to 10 and how many) or the
    /// data are not of the training kind (log data where counts were fit, negative values,
    /// non-finite values, ...), naming the first offending cell and gene.
    pub fn transform(&self, adata: &AnnData) -> Result<AnnData> {
        let norm = self.has_normalize();
        let needed = if norm { &self.input_genes } else { &self.genes };
        let idx = index_by_name(&adata.var_names, needed)?;
        let mut ad = adata.select_vars(&idx);
        self.check_kind(&ad)?;
        if norm {
            let target = self.target_sum.ok_or_else(|| {
                Error::Internal("fitted pipeline has normalize_total but no target_sum".into())
            })?;
            let sizes = row_sums_with(&ad.x, |v| v as f64);
            normalize_rows_with(&mut ad.x, &sizes, target);
        }
        if self.has_log1p() {
            log1p(&mut ad.x);
            ad.uns
                .insert("log1p".into(), serde_json::json!({ "base": null }));
        }
        if norm && self.genes != self.input_genes {
            let pos = index_by_name(&self.input_genes, &self.genes)?;
            ad = ad.select_vars(&pos);
        }
        if let Some(hv) = &self.highly_variable {
            ad.set_var("highly_variable", Column::Bool(hv.clone()));
        }
        if let Some(stats) = &self.scale {
            let mut d = ad.x.to_dense();
            scale_with(&mut d, stats, true, self.config.max_value);
            ad.x = Matrix::Dense(d);
        }
        if let Some(stats) = &self.minmax {
            let mut d = ad.x.to_dense();
            minmax_with(&mut d, stats);
            ad.x = Matrix::Dense(d);
        }
        Ok(ad)
    }

    /// Refuses data whose kind differs from the training input's.
    fn check_kind(&self, ad: &AnnData) -> Result<()> {
        let obs = Some(ad.obs_names.as_slice());
        let var = Some(ad.var_names.as_slice());
        if self.input_kind == DataKind::Counts {
            check_counts_named(&ad.x, obs, var)?;
        }
        let report = inspect_kind(&ad.x);
        let expected = self.input_kind;
        let found = report.kind;
        let all_zero = report.min == 0.0 && report.max == 0.0 && report.first_non_finite.is_none();
        let compatible = found == expected
            || (all_zero && expected != DataKind::Scaled)
            || (expected == DataKind::Other && found == DataKind::LogNormalized);
        if compatible {
            return Ok(());
        }
        let at = |loc: Option<(usize, usize, f32)>| {
            loc.map(|(i, j, v)| format!(" (e.g. {v} at {})", cell_gene(i, j, obs, var)))
                .unwrap_or_default()
        };
        let hint = match (expected, found) {
            (DataKind::Counts, _) => format!(
                "expected raw integer counts as at fit time, but found non-integer values{}; \
                 pass raw counts (e.g. `adata.raw` or `layers['counts']`)",
                at(report.first_non_integer)
            ),
            (DataKind::LogNormalized, DataKind::Counts) => {
                "the model was fit on log1p-normalised data but these look like raw counts: \
                 apply normalize_total + log1p first (or fit the pipeline on counts)"
                    .to_string()
            }
            (_, DataKind::Scaled) => {
                format!("negative values are present{}", at(report.first_negative))
            }
            (_, DataKind::Other) if report.first_non_finite.is_some() => {
                format!(
                    "non-finite values are present{}",
                    at(report.first_non_finite)
                )
            }
            _ => format!("expected {expected} as at fit time"),
        };
        Err(Error::InvalidInput(format!(
            "new data do not match the training input: fit on {expected}, got {found} ({}); {hint}",
            report.message
        )))
    }
}

/// Positions in `have` of each name in `want` (first occurrence).
///
/// # Errors
/// [`Error::InvalidInput`] listing up to 10 missing names and how many are missing.
fn index_by_name(have: &[String], want: &[String]) -> Result<Vec<usize>> {
    let mut pos: HashMap<&str, usize> = HashMap::with_capacity(have.len());
    for (i, n) in have.iter().enumerate() {
        pos.entry(n.as_str()).or_insert(i);
    }
    let mut missing = Vec::new();
    let idx: Vec<usize> = want
        .iter()
        .filter_map(|n| {
            let p = pos.get(n.as_str()).copied();
            if p.is_none() {
                missing.push(n.as_str());
            }
            p
        })
        .collect();
    if missing.is_empty() {
        return Ok(idx);
    }
    let shown: Vec<&str> = missing.iter().take(10).copied().collect();
    Err(Error::InvalidInput(format!(
        "{} of the {} genes the preprocessing was fit on are missing from the new data \
         (first {}: {}){}",
        missing.len(),
        want.len(),
        shown.len(),
        shown.join(", "),
        if missing.len() > shown.len() {
            ", ..."
        } else {
            ""
        }
    )))
}

/// Fits the preprocessing on `adata` (`[n_cells, n_genes]`; raw counts, or already
/// log1p-normalised data) and returns the processed copy and the [`FittedPreprocess`].
///
/// Steps, each the scanpy 1.11 function of the same name:
/// 1. detect the input kind ([`inspect_kind`]) and decide normalisation (see
///    [`PreprocessConfig::log1p`]);
/// 2. `filter_cells(min_genes)`, `filter_genes(min_cells)`;
/// 3. `highly_variable_genes(flavor='seurat_v3')` on the counts, if that flavor;
/// 4. `normalize_total(target_sum)` and `log1p` (count input);
/// 5. `highly_variable_genes(flavor='seurat')` on the log data, if that flavor;
/// 6. subset to the HVGs (if `subset`);
/// 7. `scale(max_value)` or min-max scaling (dense output).
///
/// `var` gets scanpy's HVG columns (and `mean`/`std` after scaling), `uns` gets `log1p`, `hvg`
/// and a `celldiff_preprocess` summary (kind, steps, messages).
///
/// # Errors
/// - [`Error::Param`] for inconsistent settings (`scale` with `minmax`, `n_top_genes = 0`).
/// - [`Error::InvalidInput`] if filtering removes everything, the input kind does not fit
///   the requested steps (`seurat_v3` without counts, `log1p` on log or negative data, `seurat`
///   HVGs on data that are not log1p-normalised), or the data have negative/non-finite values.
pub fn fit_transform(
    adata: &AnnData,
    cfg: &PreprocessConfig,
) -> Result<(AnnData, FittedPreprocess)> {
    validate_config(cfg)?;
    let report: KindReport = inspect_kind(&adata.x);
    let mut fit = FitPlan::new(
        &report,
        cfg,
        adata.n_obs(),
        adata.n_vars(),
        Some(&adata.obs_names),
        Some(&adata.var_names),
    )?;
    let mut ad = adata.clone();
    if let Some(m) = cfg.min_genes {
        let before = ad.n_obs();
        ad = filter_cells(&ad, None, Some(m))?.0;
        fit.filtered_cells(m, before, ad.n_obs());
    }
    if let Some(m) = cfg.min_cells {
        let before = ad.n_vars();
        ad = filter_genes(&ad, None, Some(m))?.0;
        fit.filtered_genes(m, before, ad.n_vars());
    }
    let hvg_n = fit.hvg_n(ad.n_vars());
    if let Some(params) = fit.hvg_params(hvg_n, HvgFlavor::SeuratV3) {
        let res = highly_variable_genes(&mut ad, &params, false)?;
        fit.hvg(&res);
    }
    let input_genes = ad.var_names.clone();
    let mut target_sum = None;
    if fit.do_norm {
        let (sizes, t) = normalize_total(&mut ad.x, cfg.target_sum)?;
        fit.normalized(&sizes, t);
        target_sum = Some(t);
    }
    if fit.do_log {
        log1p(&mut ad.x);
        ad.uns
            .insert("log1p".into(), serde_json::json!({ "base": null }));
        fit.logged();
    }
    if let Some(params) = fit.hvg_params(hvg_n, HvgFlavor::Seurat) {
        let res = highly_variable_genes(&mut ad, &params, false)?;
        fit.hvg(&res);
    }
    if let Some(idx) = fit.subset_genes() {
        ad = ad.select_vars(&idx);
    }
    let mut scale_stats = None;
    let mut minmax_stats = None;
    if cfg.scale {
        let mut d = ad.x.to_dense();
        let stats = scale(&mut d, true, cfg.max_value);
        ad.x = Matrix::Dense(d);
        ad.set_var("mean", Column::Numeric(stats.mean.clone()));
        ad.set_var("std", Column::Numeric(stats.std.clone()));
        fit.scaled(ad.n_obs(), ad.n_vars());
        scale_stats = Some(stats);
    } else if cfg.minmax {
        let mut d = ad.x.to_dense();
        minmax_stats = Some(minmax_scale(&mut d));
        ad.x = Matrix::Dense(d);
        fit.minmaxed(ad.n_obs(), ad.n_vars());
    }
    let fitted = fit.finish(
        input_genes,
        ad.var_names.clone(),
        target_sum,
        scale_stats,
        minmax_stats,
    );
    ad.uns.insert(
        "celldiff_preprocess".into(),
        serde_json::json!({
            "input_kind": fitted.input_kind,
            "steps": fitted.steps,
            "messages": fitted.messages,
        }),
    );
    Ok((ad, fitted))
}

/// The configuration checks of [`fit_transform`] (and `fit_streaming`), before any data are
/// looked at.
///
/// # Errors
/// [`Error::Param`] for `scale` with `minmax`, `n_top_genes = Some(0)`, or a `max_value` that is
/// NaN or not positive.
pub(crate) fn validate_config(cfg: &PreprocessConfig) -> Result<()> {
    if cfg.scale && cfg.minmax {
        return Err(Error::Param(
            "preprocess: scale and minmax are mutually exclusive".into(),
        ));
    }
    if cfg.n_top_genes == Some(0) {
        return Err(Error::Param(
            "preprocess: n_top_genes must be > 0 (none keeps every gene)".into(),
        ));
    }
    if let Some(m) = cfg.max_value
        && (m.is_nan() || m <= 0.0)
    {
        return Err(Error::Param(format!(
            "preprocess: max_value must be > 0, got {m}"
        )));
    }
    Ok(())
}

/// The decisions and the record of a fit, shared by [`fit_transform`] (in memory) and
/// `fit_streaming` (block by block) so that both take the same decisions, write the same
/// messages and steps in the same order and build the same [`FittedPreprocess`]; only the way
/// the statistics are computed differs.
///
/// Call order (each only when the step applies): [`new`](Self::new),
/// [`filtered_cells`](Self::filtered_cells), [`filtered_genes`](Self::filtered_genes),
/// [`hvg_n`](Self::hvg_n), [`hvg`](Self::hvg) (seurat_v3), [`normalized`](Self::normalized),
/// [`logged`](Self::logged), [`hvg`](Self::hvg) (seurat), [`subset_genes`](Self::subset_genes),
/// [`scaled`](Self::scaled) or [`minmaxed`](Self::minmaxed), [`finish`](Self::finish).
pub(crate) struct FitPlan {
    cfg: PreprocessConfig,
    /// The detected input kind.
    pub(crate) kind: DataKind,
    /// Whether `normalize_total` is applied.
    pub(crate) do_norm: bool,
    /// Whether `log1p` is applied.
    pub(crate) do_log: bool,
    messages: Vec<String>,
    steps: Vec<Step>,
    hv_mask: Option<Vec<bool>>,
    highly_variable: Option<Vec<bool>>,
}

impl FitPlan {
    /// Decides normalisation and `log1p` from the input's [`KindReport`] (of the whole
    /// `[n_obs, n_vars]` input) and `cfg`, and checks that the requested HVG flavor fits the
    /// input. Names (when given) are used in the non-finite error.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] for an input without cells or genes, non-finite values,
    /// `log1p = true` on log or negative input, seurat_v3 without counts, seurat without log
    /// data.
    pub(crate) fn new(
        report: &KindReport,
        cfg: &PreprocessConfig,
        n_obs: usize,
        n_vars: usize,
        obs_names: Option<&[String]>,
        var_names: Option<&[String]>,
    ) -> Result<Self> {
        if n_obs == 0 || n_vars == 0 {
            return Err(Error::InvalidInput(format!(
                "the input has {n_obs} cells × {n_vars} genes: there is nothing to preprocess \
                 (need at least 1 cell and 1 gene; {} is empty)",
                if n_obs == 0 {
                    "obs: 0 cells"
                } else {
                    "var: 0 genes"
                }
            )));
        }
        let kind = report.kind;
        let mut messages = vec![format!(
            "input [{n_obs} cells x {n_vars} genes]: {}",
            report.message
        )];
        if let Some((i, j, v)) = report.first_non_finite {
            return Err(Error::InvalidInput(format!(
                "X contains a non-finite value ({v} at {})",
                cell_gene(i, j, obs_names, var_names)
            )));
        }
        let (do_norm, do_log) = match (kind, cfg.log1p) {
            (DataKind::Counts, Some(false)) => (true, false),
            (DataKind::Counts, _) => (true, true),
            (DataKind::LogNormalized, Some(true)) => {
                return Err(Error::InvalidInput(format!(
                    "log1p was requested, but the input already looks log1p-normalised ({}); \
                     do not request it",
                    report.message
                )));
            }
            (DataKind::Scaled, Some(true)) => {
                return Err(Error::InvalidInput(format!(
                    "log1p was requested, but the input has negative values ({}); do not request it",
                    report.message
                )));
            }
            (DataKind::Other, Some(true)) => (false, true),
            // normalize_total was applied but not log1p: the model's space is log1p data.
            (DataKind::Other, None) if report.normalized_not_logged => (false, true),
            _ => (false, false),
        };
        let target_desc = cfg
            .target_sum
            .map_or("median".to_string(), |t| format!("{t:e}"));
        messages.push(match (kind, do_norm, do_log) {
            (DataKind::Counts, true, true) => {
                format!("input looks like integer counts: normalize_total({target_desc}) + log1p")
            }
            (DataKind::Counts, true, false) => {
                format!("input looks like integer counts: normalize_total({target_desc}), no log1p")
            }
            (DataKind::LogNormalized, ..) => "input looks log1p-normalised: used as is".to_string(),
            (DataKind::Scaled, ..) => "input has negative values (scaled): used as is".to_string(),
            (DataKind::Other, _, true) if report.normalized_not_logged && cfg.log1p.is_none() => {
                "input looks normalised but not log-transformed: log1p applied (log1p = false \
                 keeps it as is)"
                    .to_string()
            }
            (_, _, true) => "input kind unrecognised; log1p applied as requested".to_string(),
            _ => "input kind unrecognised (not counts, not log1p data): used as is".to_string(),
        });
        if cfg.n_top_genes.is_some() {
            match cfg.flavor {
                HvgFlavor::SeuratV3 if kind != DataKind::Counts => {
                    return Err(Error::InvalidInput(format!(
                        "flavor seurat_v3 needs raw counts, but the input looks like {kind} \
                         ({}); use flavor seurat",
                        report.message
                    )));
                }
                HvgFlavor::Seurat if !(do_log || kind == DataKind::LogNormalized) => {
                    return Err(Error::InvalidInput(format!(
                        "flavor seurat needs log1p-normalised data, but the input looks like \
                         {kind} ({}) and log1p is off: request log1p, or no highly variable \
                         gene selection (n_top_genes none) to keep every gene",
                        report.message
                    )));
                }
                _ => {}
            }
        }
        Ok(Self {
            cfg: cfg.clone(),
            kind,
            do_norm,
            do_log,
            messages,
            steps: Vec::new(),
            hv_mask: None,
            highly_variable: None,
        })
    }

    /// Records `filter_cells(min_genes = m)`: `after` of `before` cells kept.
    pub(crate) fn filtered_cells(&mut self, m: usize, before: usize, after: usize) {
        self.messages.push(format!(
            "filter_cells(min_genes={m}): kept {after} of {before} cells"
        ));
        self.steps.push(Step::FilterCells {
            min_genes: m,
            n_before: before,
            n_after: after,
        });
    }

    /// Records `filter_genes(min_cells = m)`: `after` of `before` genes kept.
    pub(crate) fn filtered_genes(&mut self, m: usize, before: usize, after: usize) {
        self.messages.push(format!(
            "filter_genes(min_cells={m}): kept {after} of {before} genes"
        ));
        self.steps.push(Step::FilterGenes {
            min_cells: m,
            n_before: before,
            n_after: after,
        });
    }

    /// The number of HVGs to select among the `n_vars` genes left after filtering: `None` when
    /// no selection is configured or all genes are kept (recorded in the messages).
    pub(crate) fn hvg_n(&mut self, n_vars: usize) -> Option<usize> {
        match self.cfg.n_top_genes {
            Some(n) if n < n_vars => Some(n),
            Some(n) => {
                self.messages.push(format!(
                    "n_top_genes={n} >= {n_vars} genes: keeping all genes, no HVG selection"
                ));
                None
            }
            None => None,
        }
    }

    /// The HVG parameters if the HVGs are computed with `flavor` at this point (the configured
    /// flavor, and `hvg_n` from [`hvg_n`](Self::hvg_n) is `Some`).
    pub(crate) fn hvg_params(&self, hvg_n: Option<usize>, flavor: HvgFlavor) -> Option<HvgParams> {
        (hvg_n.is_some() && self.cfg.flavor == flavor).then(|| HvgParams {
            flavor,
            n_top_genes: hvg_n,
            ..HvgParams::default()
        })
    }

    /// Records the HVG selection `res` (over the genes left after filtering).
    pub(crate) fn hvg(&mut self, res: &HvgResult) {
        let n = self.cfg.n_top_genes.unwrap_or_default();
        let k = res.highly_variable.iter().filter(|&&b| b).count();
        self.messages.push(format!(
            "highly_variable_genes(flavor={}, n_top_genes={n}): {k} genes selected",
            res.flavor.scanpy_name()
        ));
        self.steps.push(Step::HighlyVariableGenes {
            flavor: res.flavor,
            n_top_genes: n,
            n_selected: k,
        });
        self.hv_mask = Some(res.highly_variable.clone());
    }

    /// Records `normalize_total` with library sizes `sizes` (one per cell) and target `t`.
    pub(crate) fn normalized(&mut self, sizes: &[f64], t: f64) {
        if sizes.contains(&0.0) {
            let n0 = sizes.iter().filter(|&&s| s == 0.0).count();
            self.messages.push(format!(
                "warning: {n0} cells have zero counts (left at zero)"
            ));
        }
        self.steps.push(Step::NormalizeTotal { target_sum: t });
    }

    /// Records `log1p`.
    pub(crate) fn logged(&mut self) {
        self.steps.push(Step::Log1p);
    }

    /// After the HVGs: the positions (among the genes left after filtering) of the genes to
    /// keep when subsetting (recorded), or `None` when all are kept (the HVG mask, if any, then
    /// goes to `highly_variable`).
    pub(crate) fn subset_genes(&mut self) -> Option<Vec<usize>> {
        let mask = self.hv_mask.take()?;
        if self.cfg.subset {
            let idx: Vec<usize> = (0..mask.len()).filter(|&j| mask[j]).collect();
            self.steps.push(Step::Subset { n_genes: idx.len() });
            Some(idx)
        } else {
            self.highly_variable = Some(mask);
            None
        }
    }

    /// Records `scale` on the `[n_obs, n_vars]` output.
    pub(crate) fn scaled(&mut self, n_obs: usize, n_vars: usize) {
        let max_value = self.cfg.max_value;
        self.steps.push(Step::Scale {
            zero_center: true,
            max_value,
        });
        self.messages.push(format!(
            "scale(zero_center=True, max_value={}): dense [{n_obs} x {n_vars}]",
            max_value.map_or("None".to_string(), |m| m.to_string()),
        ));
    }

    /// Records min-max scaling of the `[n_obs, n_vars]` output.
    pub(crate) fn minmaxed(&mut self, n_obs: usize, n_vars: usize) {
        self.steps.push(Step::MinMax);
        self.messages.push(format!(
            "min-max scaled to [0, 1]: dense [{n_obs} x {n_vars}]"
        ));
    }

    /// The fitted pipeline: `input_genes` (after filtering), `genes` (output), the resolved
    /// target and the scaling statistics.
    pub(crate) fn finish(
        self,
        input_genes: Vec<String>,
        genes: Vec<String>,
        target_sum: Option<f64>,
        scale: Option<ScaleStats>,
        minmax: Option<MinMaxStats>,
    ) -> FittedPreprocess {
        FittedPreprocess {
            config: self.cfg,
            input_kind: self.kind,
            steps: self.steps,
            input_genes,
            genes,
            highly_variable: self.highly_variable,
            target_sum,
            scale,
            minmax,
            messages: self.messages,
        }
    }
}
