//! # celldiff-data
//!
//! The data layer of celldiff, without a tensor library: it builds and tests alone, and
//! everything above it (the Burn networks, the diffusion models, the methods, the command
//! line) reads and writes cells through it.
//!
//! - [`anndata`]: in-memory AnnData (`X`, `obs`, `var`, `obsm`, `layers`, `uns`).
//! - [`io`]: `.h5ad` (anndata 0.7–0.12 layouts, streaming, in-place annotation) and 10x
//!   `matrix.mtx` reading and writing; output paths that never replace what celldiff did not
//!   write.
//! - [`pp`]: scanpy-equivalent preprocessing (`filter_cells`, `normalize_total`, `log1p`,
//!   highly variable genes, `scale`), one step a file, with golden tests against scanpy.
//! - [`tl`]: scanpy-style tools: [`tl::pca`], [`tl::neighbors`] (UMAP connectivities),
//!   [`tl::leiden`] (Leiden/Louvain clustering) and [`tl::umap`].
//! - [`metrics`]: real-vs-generated evaluation (RF/kNN AUC, MMD, correlations).
//! - [`observation`]: the count observation model of decoded cells (size factors, one
//!   dispersion φ, counts drawn from a decoded mean).
//! - [`simulate`]: seeded negative-binomial count simulator written to `.h5ad` in chunks
//!   (scale tests).
//! - [`error`]: the one error type of celldiff ([`Error`]), with `is_bad_input` for exit code 2.

/// The path of a file under the shared datasets folder beside the repository
/// (`../shared/data/<rel>`, relative to the calling crate's manifest), asserting that it
/// exists: for the tests of celldiff's crates (all live at `crates/<name>`).
#[doc(hidden)]
#[macro_export]
macro_rules! shared_data {
    ($rel:literal) => {{
        let p = std::path::Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../../shared/data/",
            $rel
        ));
        assert!(
            p.exists(),
            "shared dataset missing: {} (expected the `shared/` folder beside the repository)",
            p.display()
        );
        p
    }};
}

pub mod anndata;
pub mod error;
pub mod io;
pub mod metrics;
pub mod observation;
pub mod pp;
pub mod simulate;
pub mod tl;

pub use anndata::{AnnData, Column, DenseMatrix, Matrix};
pub use error::{Error, Result};
