//! A seeded simulator of scRNA-seq counts for scale tests (`celldiff simulate`): a
//! negative-binomial (gamma-Poisson) count per cell and gene with cell-type programmes, written
//! straight to an `.h5ad` in chunks of cells so that a million cells never sit in memory.
//!
//! # Model (per seed; Splatter-like, Zappia et al., *Genome Biol.* 2017, simplified)
//! - Gene base means m_g: log-normal, ln m_g ~ N(ln(L/G) − σ²/2, σ² = 2²), so that a cell's
//!   expected library size is L (`mean_library`, default 1000 UMIs) over G genes.
//! - Cell-type programmes: for each of the K types, a fraction `de_fraction` (5 %) of genes is
//!   differentially expressed with a log fold change ~ N(0, `de_sd`² = 1.5²).
//! - Cells: type uniform over the K types; library factor s_c ~ LogNormal(0, 0.3²).
//! - Counts: x_cg ~ NB(mean μ = s_c·m_g·e^{lfc_{t(c),g}}, dispersion θ = `theta`, default 2):
//!   λ ~ Gamma(θ, μ/θ), x ~ Poisson(λ). Variance μ + μ²/θ, as scVI's NB.
//!
//! Every cell draws from its own generator seeded by (seed, cell index), so the output does
//! not depend on the chunk size or the number of threads.
//!
//! # Output
//! An AnnData `.h5ad` that scanpy reads: `X` CSR float32 raw counts (`data`, `indices`,
//! `indptr` as chunked, growable HDF5 datasets), `obs['cell_type']` (categorical `type_0`…),
//! `obs_names` `cell_0`…, `var_names` `gene_0`…, `uns['celldiff_simulate']` (the options).
//! Written to a temporary sibling and renamed into place.
//!
//! Why not a library: no Rust crate simulates scRNA-seq counts (Splatter and scDesign are R).

use std::path::Path;
use std::time::Instant;

use hdf5_pure::{File, MaxExtent};
use rand::Rng;
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand_distr::{Distribution, Gamma, LogNormal, Normal, Poisson};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use sprs::CsMat;

use crate::anndata::{AnnData, Column, Matrix};
use crate::error::{Error, Result};
use crate::io::output::check_overwrite;

/// Parameters of [`simulate_h5ad`].
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SimulateOptions {
    /// Cells.
    pub n_cells: usize,
    /// Genes.
    pub n_genes: usize,
    /// Cell types.
    pub n_types: usize,
    /// Seed.
    pub seed: u64,
    /// Expected UMIs per cell, L.
    pub mean_library: f64,
    /// NB dispersion θ (larger = closer to Poisson).
    pub theta: f64,
    /// Fraction of genes in each type's programme.
    pub de_fraction: f64,
    /// Standard deviation of the programme's log fold changes.
    pub de_sd: f64,
    /// Cells generated and written per chunk (memory ~ chunk × non-zeros per cell).
    pub chunk_cells: usize,
}

impl Default for SimulateOptions {
    fn default() -> Self {
        Self {
            n_cells: 10_000,
            n_genes: 2000,
            n_types: 10,
            seed: 0,
            mean_library: 1000.0,
            theta: 2.0,
            de_fraction: 0.05,
            de_sd: 1.5,
            chunk_cells: 10_000,
        }
    }
}

impl SimulateOptions {
    /// Checks the parameters.
    ///
    /// # Errors
    /// [`Error::Param`] naming the field.
    pub fn validate(&self) -> Result<()> {
        if self.n_cells == 0 || self.n_genes == 0 || self.n_types == 0 || self.chunk_cells == 0 {
            return Err(Error::Param(
                "simulate: cells, genes, types and chunk size must be at least 1".into(),
            ));
        }
        if self.n_genes > i32::MAX as usize {
            return Err(Error::Param(format!(
                "simulate: at most {} genes",
                i32::MAX
            )));
        }
        for (name, v) in [
            ("mean_library", self.mean_library),
            ("theta", self.theta),
            ("de_sd", self.de_sd),
        ] {
            if !(v.is_finite() && v > 0.0) {
                return Err(Error::Param(format!(
                    "simulate: {name} must be positive, got {v}"
                )));
            }
        }
        if !(0.0..=1.0).contains(&self.de_fraction) {
            return Err(Error::Param(format!(
                "simulate: de_fraction must be in [0, 1], got {}",
                self.de_fraction
            )));
        }
        Ok(())
    }
}

/// What [`simulate_h5ad`] wrote.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SimulateSummary {
    /// Cells written.
    pub n_cells: usize,
    /// Genes.
    pub n_genes: usize,
    /// Non-zero counts.
    pub nnz: u64,
    /// nnz / (cells × genes).
    pub density: f64,
    /// Mean UMIs per cell.
    pub mean_library: f64,
    /// Wall time.
    pub seconds: f64,
}

/// The per-gene parameters: base means `[n_genes]` and type-specific means `[n_types][n_genes]`.
fn gene_means(opts: &SimulateOptions) -> Result<Vec<Vec<f64>>> {
    let mut rng = StdRng::seed_from_u64(opts.seed ^ 0x5eed_6e9e);
    let sigma = 2.0f64;
    let mu = (opts.mean_library / opts.n_genes as f64).ln() - sigma * sigma / 2.0;
    let base = Normal::new(mu, sigma).map_err(|e| Error::Param(e.to_string()))?;
    let lfc = Normal::new(0.0, opts.de_sd).map_err(|e| Error::Param(e.to_string()))?;
    let m: Vec<f64> = (0..opts.n_genes)
        .map(|_| base.sample(&mut rng).exp())
        .collect();
    Ok((0..opts.n_types)
        .map(|_| {
            m.iter()
                .map(|&v| {
                    if rng.random_bool(opts.de_fraction) {
                        v * lfc.sample(&mut rng).exp()
                    } else {
                        v
                    }
                })
                .collect()
        })
        .collect())
}

/// SplitMix64 of (seed, cell): the seed of one cell's generator.
fn cell_seed(seed: u64, cell: u64) -> u64 {
    let mut z = seed ^ cell.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// One cell: its type and its non-zero (gene, count) pairs, genes ascending.
fn simulate_cell(
    opts: &SimulateOptions,
    means: &[Vec<f64>],
    cell: usize,
) -> (usize, Vec<(i32, f32)>) {
    let mut rng = StdRng::seed_from_u64(cell_seed(opts.seed, cell as u64));
    let t = rng.random_range(0..opts.n_types);
    let s = LogNormal::new(0.0, 0.3)
        .map(|d| d.sample(&mut rng))
        .unwrap_or(1.0);
    let mut out = Vec::new();
    for (g, &m) in means[t].iter().enumerate() {
        let mean = s * m;
        let lambda = Gamma::new(opts.theta, mean / opts.theta)
            .map(|d| d.sample(&mut rng))
            .unwrap_or(0.0);
        if lambda <= 0.0 {
            continue;
        }
        let k = Poisson::new(lambda)
            .map(|d| d.sample(&mut rng))
            .unwrap_or(0.0);
        if k > 0.0 {
            out.push((g as i32, k as f32));
        }
    }
    (t, out)
}

fn h5(path: &Path, what: &str, e: hdf5_pure::Error) -> Error {
    Error::format(path, what, e.to_string())
}

/// Simulates `opts.n_cells` cells (module docs) and writes them to `path` chunk by chunk.
///
/// # Errors
/// [`Error::Param`] for invalid options; [`Error::AlreadyExists`] if `path` exists and `force`
/// is false; [`Error::Io`] / [`Error::Format`] if writing fails (the temporary file is removed
/// and `path` is left as it was).
pub fn simulate_h5ad(
    path: &Path,
    opts: &SimulateOptions,
    force: bool,
    progress: &mut dyn FnMut(usize),
) -> Result<SimulateSummary> {
    opts.validate()?;
    check_overwrite(path, force)?;
    let start = Instant::now();
    let means = gene_means(opts)?;
    let (n, g) = (opts.n_cells, opts.n_genes);
    // Cell types come first (cheap: one draw per cell), so obs can be written up front.
    let types: Vec<i32> = (0..n)
        .into_par_iter()
        .map(|c| {
            let mut rng = StdRng::seed_from_u64(cell_seed(opts.seed, c as u64));
            rng.random_range(0..opts.n_types) as i32
        })
        .collect();
    // A temporary sibling (removed by the guard on every error path), published without
    // replacing anything unless `force` (see `io::output`).
    if let Some(p) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(p).map_err(|e| Error::io(p, e))?;
    }
    crate::io::output::remove_stale_temps(path);
    let guard = crate::io::output::TempPath::new(crate::io::output::temp_sibling(path));
    let tmp = guard.path().to_path_buf();
    let res = (|| -> Result<(u64, f64)> {
        // The skeleton: obs, var, uns and an empty CSR X, written by the regular writer.
        let mut skel = AnnData::new(
            Matrix::Csr(CsMat::new((n, g), vec![0; n + 1], Vec::new(), Vec::new())),
            (0..g).map(|j| format!("gene_{j}")).collect(),
        );
        skel.obs_names = (0..n).map(|i| format!("cell_{i}")).collect();
        skel.set_obs(
            "cell_type",
            Column::Categorical {
                codes: types,
                categories: (0..opts.n_types).map(|t| format!("type_{t}")).collect(),
            },
        );
        skel.uns.insert(
            "celldiff_simulate".into(),
            serde_json::to_value(opts).map_err(|e| Error::Internal(e.to_string()))?,
        );
        crate::io::write_h5ad(&tmp, &skel)?;
        drop(skel);
        // Replace X's arrays by growable chunked datasets, then append chunk by chunk. Chunks of
        // 2^15 elements: with 2^16 or more (a chunk dimension that needs 3 bytes) h5py 3.16
        // refuses the layout message hdf5-pure 0.47 writes ("stored chunk dimension encoding
        // length does not match"); 2^15 reads in h5py/anndata.
        let file = File::open_rw(&tmp).map_err(|e| h5(&tmp, "X", e))?;
        let root = file.root();
        for d in ["X/data", "X/indices", "X/indptr"] {
            root.delete(d).map_err(|e| h5(&tmp, d, e))?;
        }
        file.commit().map_err(|e| h5(&tmp, "X", e))?;
        root.create_dataset("X/data", |b| {
            b.with_f32_data(&[])
                .with_shape(&[0])
                .with_maxshape(&[MaxExtent::Unlimited])
                .with_chunks(&[1 << 15]);
        })
        .map_err(|e| h5(&tmp, "X/data", e))?;
        root.create_dataset("X/indices", |b| {
            b.with_i32_data(&[])
                .with_shape(&[0])
                .with_maxshape(&[MaxExtent::Unlimited])
                .with_chunks(&[1 << 15]);
        })
        .map_err(|e| h5(&tmp, "X/indices", e))?;
        root.create_dataset("X/indptr", |b| {
            b.with_i64_data(&[])
                .with_shape(&[0])
                .with_maxshape(&[MaxExtent::Unlimited])
                .with_chunks(&[1 << 15]);
        })
        .map_err(|e| h5(&tmp, "X/indptr", e))?;
        file.commit().map_err(|e| h5(&tmp, "X", e))?;
        let mut ds_data = file.dataset("X/data").map_err(|e| h5(&tmp, "X/data", e))?;
        let mut ds_idx = file
            .dataset("X/indices")
            .map_err(|e| h5(&tmp, "X/indices", e))?;
        let mut ds_ptr = file
            .dataset("X/indptr")
            .map_err(|e| h5(&tmp, "X/indptr", e))?;
        {
            let mut a_data = ds_data
                .buffered_appender()
                .map_err(|e| h5(&tmp, "X/data", e))?;
            let mut a_idx = ds_idx
                .buffered_appender()
                .map_err(|e| h5(&tmp, "X/indices", e))?;
            let mut a_ptr = ds_ptr
                .buffered_appender()
                .map_err(|e| h5(&tmp, "X/indptr", e))?;
            a_ptr.append(&[0i64]).map_err(|e| h5(&tmp, "X/indptr", e))?;
            let (mut nnz, mut total) = (0u64, 0f64);
            for c0 in (0..n).step_by(opts.chunk_cells) {
                let c1 = (c0 + opts.chunk_cells).min(n);
                let cells: Vec<(usize, Vec<(i32, f32)>)> = (c0..c1)
                    .into_par_iter()
                    .map(|c| simulate_cell(opts, &means, c))
                    .collect();
                let mut data = Vec::new();
                let mut idx = Vec::new();
                let mut ptr = Vec::with_capacity(cells.len());
                for (_, row) in &cells {
                    for &(j, v) in row {
                        idx.push(j);
                        data.push(v);
                        total += v as f64;
                    }
                    nnz += row.len() as u64;
                    ptr.push(nnz as i64);
                }
                a_data.append(&data).map_err(|e| h5(&tmp, "X/data", e))?;
                a_idx.append(&idx).map_err(|e| h5(&tmp, "X/indices", e))?;
                a_ptr.append(&ptr).map_err(|e| h5(&tmp, "X/indptr", e))?;
                progress(c1);
            }
            a_data.finish().map_err(|e| h5(&tmp, "X/data", e))?;
            a_idx.finish().map_err(|e| h5(&tmp, "X/indices", e))?;
            a_ptr.finish().map_err(|e| h5(&tmp, "X/indptr", e))?;
            drop((ds_data, ds_idx, ds_ptr, root));
            file.close().map_err(|e| h5(&tmp, "X", e))?;
            Ok((nnz, total))
        }
    })();
    let (nnz, total) = res?;
    crate::io::output::publish_file(&tmp, path, force)?;
    guard.keep();
    Ok(SimulateSummary {
        n_cells: n,
        n_genes: g,
        nnz,
        density: nnz as f64 / (n as f64 * g as f64),
        mean_library: total / n as f64,
        seconds: start.elapsed().as_secs_f64(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::{ReadOptions, read};

    /// The file reads back as counts with the requested shape, types and a realistic
    /// sparsity; the same seed gives the same matrix whatever the chunk size; another seed
    /// gives another matrix; the type programmes make types differ in mean expression.
    #[test]
    fn simulated_file_reads_back_and_is_seeded_and_chunk_independent() {
        let dir = tempfile::tempdir().unwrap();
        let opts = SimulateOptions {
            n_cells: 3000,
            n_genes: 300,
            n_types: 4,
            mean_library: 300.0,
            chunk_cells: 1000,
            ..Default::default()
        };
        let p1 = dir.path().join("a.h5ad");
        let mut calls = 0;
        let s = simulate_h5ad(&p1, &opts, false, &mut |_| calls += 1).unwrap();
        assert_eq!(calls, 3);
        assert!(matches!(
            simulate_h5ad(&p1, &opts, false, &mut |_| {}),
            Err(Error::AlreadyExists { .. })
        ));
        let a = read(&p1, &ReadOptions::default()).unwrap();
        assert_eq!(a.x.shape(), (3000, 300));
        assert!(s.density > 0.02 && s.density < 0.6, "density {}", s.density);
        assert!(
            (s.mean_library / 300.0 - 1.0).abs() < 0.5,
            "library {}",
            s.mean_library
        );
        crate::pp::check_counts(&a.x).unwrap();
        let p2 = dir.path().join("b.h5ad");
        simulate_h5ad(
            &p2,
            &SimulateOptions {
                chunk_cells: 777,
                ..opts.clone()
            },
            false,
            &mut |_| {},
        )
        .unwrap();
        let b = read(&p2, &ReadOptions::default()).unwrap();
        assert_eq!(a.x.to_dense().data, b.x.to_dense().data);
        assert_eq!(
            a.obs_column("cell_type").unwrap(),
            b.obs_column("cell_type").unwrap()
        );
        let p3 = dir.path().join("c.h5ad");
        simulate_h5ad(
            &p3,
            &SimulateOptions {
                seed: 1,
                ..opts.clone()
            },
            false,
            &mut |_| {},
        )
        .unwrap();
        let c = read(&p3, &ReadOptions::default()).unwrap();
        assert_ne!(a.x.to_dense().data, c.x.to_dense().data);
        // Types are separable: the mean profile of type 0 differs from type 1's.
        let labels = a.obs_column("cell_type").unwrap().labels();
        let x = a.x.to_dense();
        let mean_of = |t: &str| {
            let rows: Vec<usize> = (0..3000).filter(|&i| labels[i] == t).collect();
            (0..300)
                .map(|j| rows.iter().map(|&i| x.row(i)[j] as f64).sum::<f64>() / rows.len() as f64)
                .collect::<Vec<f64>>()
        };
        let (m0, m1) = (mean_of("type_0"), mean_of("type_1"));
        let big = m0
            .iter()
            .zip(&m1)
            .filter(|(a, b)| ((**a + 0.1) / (**b + 0.1)).ln().abs() > 0.7)
            .count();
        assert!(
            big >= 3,
            "only {big} genes differ strongly between type 0 and 1"
        );
    }
}
