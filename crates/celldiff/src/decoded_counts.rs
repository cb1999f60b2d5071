//! Counts out of a trained count decoder (issue 18), shared by every method whose decoder has
//! a count likelihood (scVAEDer's VAE, SCLD's autoencoder): the maximum-likelihood re-fit of
//! θ_g after training, NB/ZINB draws at given latents and library sizes (scVI's generative
//! model, Lopez et al., *Nat. Methods* 15:1053, 2018), the reconstruction of held-out cells
//! with their own library sizes, and the AnnData such cells are written as.

use burn::prelude::*;
use serde::{Deserialize, Serialize};

use crate::anndata::{AnnData, Column, DenseMatrix, Matrix};
use crate::counts::{check_lattice, recover_counts};
use crate::error::{Error, Result};
use crate::models::{CountDecoder, Likelihood};
use crate::pp::FittedPreprocess;
use crate::train::{Observer, TrainCells, to_host, to_tensor};

/// Cells the NB dispersions are re-fitted on (evenly spaced over the training cells).
pub const THETA_FIT_CELLS: usize = 2000;

/// What a count-likelihood run writes to `X` (`--output`); the other form goes to a layer.
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum CountsOutput {
    /// `X` = counts (CSR float32), `layers['log1p_norm']` = the model's space (like the
    /// user's count input).
    #[default]
    Counts,
    /// `X` = the model's space (log1p-normalised), `layers['counts']` = the counts.
    Log1p,
}

/// Library sizes `l` and size factors `s` of the training cells, for a count likelihood.
pub type Libraries = (Vec<f64>, Vec<Option<f64>>);

/// The decoder likelihood of a run (`requested`; automatic when `None`: NB when
/// `fit_observation` is on and the model's space holds log1p-normalised counts) and, for
/// a count likelihood, every training cell's library size and size factor (one pass over the
/// cells, 1024 at a time).
///
/// # Errors
/// [`Error::InvalidInput`] when `nb`/`zinb` is asked for but the model's space is not
/// log1p-normalised counts (scaled, min-max, or fewer than 80 % of the cells on a count
/// lattice); reading the cells.
pub fn resolve_likelihood(
    x: &mut dyn TrainCells,
    fitted: &FittedPreprocess,
    requested: Option<Likelihood>,
    fit_observation: bool,
    observer: &mut dyn Observer,
) -> Result<(Likelihood, Option<Libraries>)> {
    let space_ok = fitted.output_nonnegative() && fitted.minmax.is_none() && fitted.scale.is_none();
    let wanted = match requested {
        Some(l) => l,
        None if fit_observation && space_ok => Likelihood::Nb,
        None => return Ok((Likelihood::Gaussian, None)),
    };
    if !wanted.is_count() {
        return Ok((wanted, None));
    }
    if !space_ok {
        return Err(Error::InvalidInput(format!(
            "the {} likelihood needs log1p-normalised counts, but the model's space is scaled \
             (scale or min-max preprocessing); train with the gaussian likelihood",
            wanted.name()
        )));
    }
    let n = x.n_cells();
    let (mut lib, mut sf) = (Vec::with_capacity(n), Vec::with_capacity(n));
    for start in (0..n).step_by(1024) {
        let idx: Vec<usize> = (start..(start + 1024).min(n)).collect();
        let rows = recover_counts(&x.rows(&idx)?);
        lib.extend(rows.library);
        sf.extend(rows.size_factor);
    }
    let on = sf.iter().filter(|s| s.is_some()).count();
    match (check_lattice(on, n), requested) {
        (Ok(()), _) => {
            observer.message(&format!(
                "likelihood: {} on counts recovered from the log1p-normalised cells ({on} of {n} \
                 on a count lattice)",
                wanted.name()
            ));
            Ok((wanted, Some((lib, sf))))
        }
        (Err(e), Some(_)) => Err(e),
        (Err(_), None) => {
            observer.message(&format!(
                "likelihood: gaussian (only {on} of {n} cells lie on a count lattice, so counts \
                 cannot be recovered)"
            ));
            Ok((Likelihood::Gaussian, None))
        }
    }
}

/// Maximum-likelihood ln θ_g (`[n_genes]`) of an NB decoder on up to [`THETA_FIT_CELLS`]
/// training cells, given the decoder means at their latent codes (`codes`,
/// `[n_cells, n_latent]`: VAE posterior means or autoencoder codes): the decoded cells are the
/// ones generation produces, and θ trained jointly with the network converges slowly (on
/// pbmc68k the top genes kept θ far too low: generated cells had 3× the real variance there).
/// [`crate::counts::fit_log_theta`].
///
/// # Errors
/// Reading the cells; the backend.
pub fn refit_log_theta(
    decoder: &dyn CountDecoder,
    x: &mut dyn TrainCells,
    codes: &DenseMatrix,
    device: &Device,
) -> Result<Vec<f64>> {
    // Evenly spaced cells: a file sorted by cell type still gives every type.
    let total = x.n_cells();
    let n = total.min(THETA_FIT_CELLS);
    let idx: Vec<usize> = (0..n).map(|k| k * total / n).collect();
    let rows = recover_counts(&x.rows(&idx)?);
    let z = to_tensor(&codes.select_rows(&idx), device);
    let (logits, _) = decoder.count_logits(z);
    let mut means = to_host(burn::tensor::activation::softmax(logits, 1))?;
    let g = means.n_cols.max(1);
    for (row, &l) in means.data.chunks_mut(g).zip(&rows.library) {
        for v in row {
            *v *= l.max(1.0) as f32;
        }
    }
    Ok(crate::counts::fit_log_theta(&rows.counts, &means))
}

/// Counts `[n, n_genes]` drawn from a count decoder (in evaluation mode) at latents `z`
/// (`[n, n_latent]`, the decoder's input units) with one `(l, s)` per cell (library size over
/// the model genes, size factor); returns the counts and the size factors.
///
/// # Errors
/// [`Error::Internal`] if the backend fails; [`Error::Param`] for a Gaussian decoder or no
/// cells.
pub fn sample_count_cells(
    decoder: &dyn CountDecoder,
    z: Tensor<2>,
    sizes: &[(f64, f64)],
    seed: u64,
) -> Result<(DenseMatrix, Vec<f64>)> {
    let Some(log_theta) = decoder.count_log_theta() else {
        return Err(Error::Param(
            "the run's decoder has no count likelihood".into(),
        ));
    };
    let theta: Vec<f64> = log_theta
        .into_data()
        .try_to_vec::<f32>()
        .map_err(|e| Error::Internal(format!("{e:?}")))?
        .into_iter()
        .map(|v| (v as f64).exp())
        .collect();
    let [n, _] = z.dims();
    let (mut log_rho, mut dropout): (Vec<DenseMatrix>, Vec<DenseMatrix>) = (Vec::new(), Vec::new());
    for start in (0..n).step_by(4096) {
        let end = (start + 4096).min(n);
        let (logits, pi) = decoder.count_logits(z.clone().narrow(0, start, end - start));
        log_rho.push(to_host(burn::tensor::activation::log_softmax(logits, 1))?);
        if let Some(pi) = pi {
            dropout.push(to_host(pi)?);
        }
    }
    let stack = |parts: Vec<DenseMatrix>| {
        let mut it = parts.into_iter();
        let mut first = it.next()?;
        for p in it {
            first.data.extend_from_slice(&p.data);
            first.n_rows += p.n_rows;
        }
        Some(first)
    };
    let log_rho = stack(log_rho).ok_or_else(|| Error::Param("no cells to decode".into()))?;
    let dropout = stack(dropout);
    let library: Vec<f64> = sizes.iter().map(|p| p.0).collect();
    let s: Vec<f64> = sizes.iter().map(|p| p.1).collect();
    let counts = crate::counts::sample_counts(
        &log_rho,
        &theta,
        dropout.as_ref(),
        &library,
        seed ^ 0xc0_0a75,
    );
    Ok((counts, s))
}

/// Held-out cells `x` (`[n, n_genes]`, log1p-normalised) put through a count decoder at their
/// latent codes `z` (`[n, n_latent]`) with each cell's own library size and size factor
/// (cells off a count lattice use the median of the others), returned in the model's space
/// (`log1p(counts·s)`): the decoder's ceiling of issue 18's reconstruction row.
///
/// # Errors
/// As [`sample_count_cells`].
pub fn reconstruct_counts(
    decoder: &dyn CountDecoder,
    x: &DenseMatrix,
    z: Tensor<2>,
    seed: u64,
) -> Result<DenseMatrix> {
    let rows = recover_counts(x);
    let known: Vec<f64> = rows.size_factor.iter().flatten().copied().collect();
    let fallback = crate::counts::median_of(&known);
    let sizes: Vec<(f64, f64)> = rows
        .library
        .iter()
        .zip(&rows.size_factor)
        .map(|(&l, s)| (l.max(1.0), s.unwrap_or(fallback)))
        .collect();
    let (counts, s) = sample_count_cells(decoder, z, &sizes, seed)?;
    Ok(crate::counts::log1p_normalise(&counts, &s))
}

/// The generated AnnData of a count-likelihood run over `genes`: `X` = counts (CSR float32)
/// and `layers['log1p_norm']` = `log1p(y·s)` (the model's space), or the two swapped
/// (`layers['counts']`) with [`CountsOutput::Log1p`]; `obs['n_counts']` = total counts per
/// cell over the model genes.
///
/// # Shapes
/// `counts`: `[n, n_genes]` raw counts; `s`: `[n]` size factors.
pub fn counts_anndata(
    genes: &[String],
    counts: DenseMatrix,
    s: &[f64],
    output: CountsOutput,
) -> AnnData {
    let norm = crate::counts::log1p_normalise(&counts, s);
    let n_counts: Vec<f64> = (0..counts.n_rows)
        .map(|i| counts.row(i).iter().map(|&v| v as f64).sum())
        .collect();
    let csr = Matrix::Csr(counts.to_csr());
    let mut out = match output {
        CountsOutput::Counts => {
            let mut a = AnnData::new(csr, genes.to_vec());
            a.layers.push(("log1p_norm".into(), Matrix::Dense(norm)));
            a
        }
        CountsOutput::Log1p => {
            let mut a = AnnData::new(Matrix::Dense(norm), genes.to_vec());
            a.layers.push(("counts".into(), csr));
            a
        }
    };
    out.set_obs("n_counts", Column::Numeric(n_counts));
    out
}

/// The cells of a generated AnnData in the model's space: `layers['log1p_norm']` when
/// present (count-likelihood output, whose `X` holds counts), otherwise `X`;
/// `[n_obs, n_vars]`.
pub fn model_space(adata: &AnnData) -> DenseMatrix {
    adata
        .layers
        .iter()
        .find(|(k, _)| k == "log1p_norm")
        .map_or_else(|| adata.x.to_dense(), |(_, m)| m.to_dense())
}
