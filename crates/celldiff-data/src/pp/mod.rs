//! scanpy-equivalent preprocessing (`scanpy.pp`, version 1.11 semantics).
//!
//! All functions take the expression matrix as `[n_cells, n_genes]` ([`Matrix`], CSR kept
//! sparse except for the steps that are dense by nature: [`scale`], [`minmax_scale`]) and
//! accumulate sums, means and variances in `f64`.
//!
//! - Filtering: [`filter_cells`], [`filter_genes`].
//! - Normalisation: [`normalize_total`], [`log1p`].
//! - Gene selection: [`highly_variable_genes`] (flavors `seurat` and `seurat_v3`).
//! - Scaling: [`scale`], [`minmax_scale`].
//! - Input checks: [`detect_kind`] / [`inspect_kind`], [`check_counts`].
//! - The fitted, serialisable pipeline: [`fit_transform`] → [`FittedPreprocess::transform`];
//!   [`fit_streaming`] fits the same pipeline on a matrix read a block of rows at a time
//!   ([`RowBlocks`]), bit for bit.
//!
//! Equivalence with scanpy 1.11.5 is tested on the 10x mouse-brain subset in
//! `shared/fixtures/scanpy_pp_brain10k`.
//!
//! [`Matrix`]: crate::anndata::Matrix
//! [`RowBlocks`]: crate::anndata::RowBlocks

mod basic;
pub(crate) use basic::csr_of;
mod hvg;
mod loess;
mod pipeline;
mod stream;

#[cfg(test)]
mod golden_tests;
#[cfg(test)]
mod tests;

pub use basic::{
    DataKind, KindReport, MinMaxStats, ScaleStats, check_counts, detect_kind, filter_cells,
    filter_genes, inspect_kind, log1p, minmax_scale, minmax_with, normalize_total, scale,
    scale_with,
};
pub use hvg::{
    HvgFlavor, HvgParams, HvgResult, highly_variable_genes, highly_variable_genes_matrix,
};
pub use pipeline::{FittedPreprocess, PreprocessConfig, Step, fit_transform};
pub use stream::{StreamFit, fit_streaming};
