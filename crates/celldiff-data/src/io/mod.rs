//! Reading and writing single-cell data: AnnData `.h5ad` files ([`read_h5ad`], [`write_h5ad`])
//! and 10x Genomics MatrixMarket directories ([`read_10x_dir`]).
//!
//! - [`h5ad`] holds all HDF5 access of the project (crate `hdf5-pure`, pure Rust, no libhdf5);
//!   it follows the AnnData on-disk specification (anndata ≥ 0.8, plus anndata 0.7 and the
//!   pre-0.7 compound layout for reading).
//! - [`tenx`] reads `matrix.mtx(.gz)` + `features.tsv(.gz)`/`genes.tsv(.gz)` +
//!   `barcodes.tsv(.gz)` (+ optional `obs.tsv(.gz)`) with `flate2` and a streaming
//!   MatrixMarket parser.
//!
//! [`read`] picks the reader from the path (directory → 10x, file → `.h5ad`) and rejects
//! non-finite values in `X` ([`check_finite`]).

/// Path of a file under the shared data folder (`shared/` beside the repository, as CI clones
/// it); panics with a clear message if it is missing.
pub mod h5ad;
pub mod output;
pub mod tenx;

use std::path::Path;

pub use h5ad::{H5adStream, ReadOptions, read_h5ad, write_h5ad};
pub use tenx::read_10x_dir;

use crate::anndata::{AnnData, Matrix};
use crate::error::{Error, Result};

/// Reads single-cell data into an [`AnnData`] with `X` of shape `[n_cells, n_genes]`, values
/// as stored (raw counts stay counts):
/// - a directory → [`read_10x_dir`] (`opts` must be default: 10x folders have no layers or
///   raw);
/// - a file → [`read_h5ad`] with `opts`, after checking the HDF5 signature.
///
/// `X` is then checked with [`check_finite`].
///
/// # Errors
/// - [`Error::Io`]: the path does not exist or cannot be read.
/// - [`Error::Format`]: field `(file)` "expected an HDF5 file (.h5ad)" when a file lacks the
///   HDF5 signature, or "not a regular, seekable file" for a pipe, FIFO or device; field `X` when `X` holds NaN/±Inf; every error of [`read_h5ad`] /
///   [`read_10x_dir`].
/// - [`Error::InvalidInput`]: a layer or `use_raw` was requested for a 10x directory, or both
///   were requested.
pub fn read(path: &Path, opts: &ReadOptions) -> Result<AnnData> {
    let meta = std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
    let adata = if meta.is_dir() {
        if opts.layer.is_some() || opts.use_raw {
            return Err(Error::InvalidInput(format!(
                "{}: a 10x directory has no layers or raw matrix; drop the layer/raw option",
                path.display()
            )));
        }
        read_10x_dir(path)?
    } else if !meta.is_file() {
        return Err(Error::format(
            path,
            "(file)",
            "is not a regular, seekable file (a pipe, FIFO, socket or device, e.g. from \
             `<(...)`); an .h5ad is read by seeking: save it to a file first",
        ));
    } else {
        h5ad::check_hdf5_signature(path)?;
        read_h5ad(path, opts)?
    };
    check_finite(&adata.x, path)?;
    Ok(adata)
}

/// Checks that every stored value of `x` (`[n_cells, n_genes]`, dense or CSR) is finite.
///
/// # Errors
/// [`Error::Format`] with field `X` naming `path` and the first offending value in row-major
/// order as `(cell, gene)` (0-based row and column), e.g. "NaN at (cell 3, gene 17)".
pub fn check_finite(x: &Matrix, path: &Path) -> Result<()> {
    let found = match x {
        Matrix::Dense(d) => d
            .data
            .iter()
            .position(|v| !v.is_finite())
            .map(|k| (k / d.n_cols.max(1), k % d.n_cols.max(1), d.data[k])),
        Matrix::Csr(c) => c.outer_iterator().enumerate().find_map(|(i, row)| {
            row.iter()
                .find(|(_, v)| !v.is_finite())
                .map(|(j, &v)| (i, j, v))
        }),
    };
    match found {
        None => Ok(()),
        Some((i, j, v)) => Err(Error::format(
            path,
            "X",
            format!(
                "contains {v} at (cell {i}, gene {j}) (0-based); expected finite values \
                 (counts or normalised expression)"
            ),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::anndata::DenseMatrix;

    #[test]
    fn check_finite_names_first_offending_cell_and_gene() {
        let p = Path::new("x.h5ad");
        let mut d = DenseMatrix::zeros(3, 4);
        assert!(check_finite(&Matrix::Dense(d.clone()), p).is_ok());
        d.data[2 * 4 + 1] = f32::NAN;
        d.data[2 * 4 + 3] = f32::INFINITY;
        let e = check_finite(&Matrix::Dense(d), p).unwrap_err();
        match &e {
            Error::Format { field, message, .. } => {
                assert_eq!(field, "X");
                assert!(message.contains("NaN at (cell 2, gene 1)"), "{message}");
            }
            other => panic!("expected Error::Format, got {other:?}"),
        }
        let c = sprs::CsMat::new(
            (2, 3),
            vec![0, 1, 2],
            vec![2, 0],
            vec![1.0, f32::NEG_INFINITY],
        );
        let e = check_finite(&Matrix::Csr(c), p).unwrap_err().to_string();
        assert!(e.contains("-inf at (cell 1, gene 0)"), "{e}");
    }

    #[test]
    fn read_dispatches_on_directory_and_file() {
        let dir = shared_data!("pbmc68k_reduced/counts_mtx");
        let a = read(dir, &ReadOptions::default()).unwrap();
        assert_eq!(a.x.shape(), (700, 765));
        let f = shared_data!("pbmc68k_reduced/pbmc68k_reduced_counts.h5ad");
        let b = read(f, &ReadOptions::default()).unwrap();
        assert_eq!(b.x.shape(), (700, 765));
        let opts = ReadOptions {
            layer: Some("counts".into()),
            use_raw: false,
        };
        assert!(matches!(read(dir, &opts), Err(Error::InvalidInput(_))));
    }

    #[test]
    fn read_rejects_missing_path_and_non_hdf5_file() {
        let missing = Path::new("/nonexistent/celldiff/none.h5ad");
        assert!(matches!(
            read(missing, &ReadOptions::default()),
            Err(Error::Io { .. })
        ));
        let tmp = tempfile::tempdir().unwrap();
        let p = tmp.path().join("cells.h5ad");
        std::fs::write(&p, "cell,gene,count\nA,B,1\n").unwrap();
        match read(&p, &ReadOptions::default()) {
            Err(Error::Format { field, message, .. }) => {
                assert_eq!(field, "(file)");
                assert!(
                    message.contains("expected an HDF5 file (.h5ad)"),
                    "{message}"
                );
            }
            other => panic!("expected Error::Format, got {other:?}"),
        }
    }

    #[cfg(unix)]
    #[test]
    fn read_rejects_a_fifo_as_not_seekable() {
        let tmp = tempfile::tempdir().unwrap();
        let p = tmp.path().join("pipe.h5ad");
        let ok = std::process::Command::new("mkfifo").arg(&p).status();
        if !ok.is_ok_and(|s| s.success()) {
            eprintln!("skipped: mkfifo not available");
            return;
        }
        let e = read(&p, &ReadOptions::default()).unwrap_err().to_string();
        assert!(e.contains("not a regular, seekable file"), "{e}");
    }

    #[test]
    fn read_rejects_nan_in_x() {
        let tmp = tempfile::tempdir().unwrap();
        let p = tmp.path().join("nan.h5ad");
        let mut d = DenseMatrix::zeros(2, 2);
        d.data[3] = f32::NAN;
        let a = AnnData::new(Matrix::Dense(d), vec!["g0".into(), "g1".into()]);
        write_h5ad(&p, &a).unwrap();
        match read(&p, &ReadOptions::default()) {
            Err(Error::Format { field, message, .. }) => {
                assert_eq!(field, "X");
                assert!(message.contains("(cell 1, gene 1)"), "{message}");
            }
            other => panic!("expected Error::Format, got {other:?}"),
        }
    }
}
