//! The per-dimension standardisation of the latent that the denoisers train on.

use burn::prelude::*;
use burn::tensor::TensorData;
use serde::{Deserialize, Serialize};

use crate::anndata::DenseMatrix;
use crate::error::{Error, Result};

/// Per-dimension standardisation of the latent: `z_std = (μ − mean) / std`, and the range of
/// the standardised training latents (used to clip x̂₀ while sampling).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct LatentStats {
    /// Mean of μ per dimension, `[n_latent]`.
    pub mean: Vec<f32>,
    /// Standard deviation (ddof = 0, floored at 1e-6) of μ per dimension, `[n_latent]`.
    pub std: Vec<f32>,
    /// Minimum of the standardised latents per dimension, `[n_latent]`.
    pub min: Vec<f32>,
    /// Maximum of the standardised latents per dimension, `[n_latent]`.
    pub max: Vec<f32>,
}

impl LatentStats {
    /// Fits the statistics on μ `[n_cells, n_latent]`.
    pub fn fit(mu: &DenseMatrix) -> Self {
        let (n, d) = (mu.n_rows, mu.n_cols);
        let mut mean = vec![0f64; d];
        let mut sq = vec![0f64; d];
        for i in 0..n {
            for (j, &v) in mu.row(i).iter().enumerate() {
                mean[j] += v as f64;
                sq[j] += (v as f64) * (v as f64);
            }
        }
        let nf = n.max(1) as f64;
        let mean: Vec<f64> = mean.iter().map(|m| m / nf).collect();
        let std: Vec<f64> = sq
            .iter()
            .zip(&mean)
            .map(|(s, m)| (s / nf - m * m).max(0.0).sqrt().max(1e-6))
            .collect();
        let mut min = vec![f32::INFINITY; d];
        let mut max = vec![f32::NEG_INFINITY; d];
        for i in 0..n {
            for (j, &v) in mu.row(i).iter().enumerate() {
                let z = ((v as f64 - mean[j]) / std[j]) as f32;
                min[j] = min[j].min(z);
                max[j] = max[j].max(z);
            }
        }
        Self {
            mean: mean.iter().map(|&v| v as f32).collect(),
            std: std.iter().map(|&v| v as f32).collect(),
            min,
            max,
        }
    }

    /// `(μ − mean) / std`, `[n, n_latent]` → `[n, n_latent]`.
    pub fn standardize(&self, mu: &DenseMatrix) -> DenseMatrix {
        let mut out = mu.clone();
        for i in 0..out.n_rows {
            for (j, v) in out.row_mut(i).iter_mut().enumerate() {
                *v = (*v - self.mean[j]) / self.std[j];
            }
        }
        out
    }

    /// Checks statistics loaded from `path` (`latent.json`) against the model's latent
    /// dimension: four vectors of `n_latent` finite values, every `std` > 0 and `min ≤ max`.
    ///
    /// # Errors
    /// [`Error::Format`] naming `path` and the field (`std[3]`, `mean`, ...).
    pub fn check(&self, path: &std::path::Path, n_latent: usize) -> Result<()> {
        use crate::run_dir::{check_all_finite, check_len};
        for (name, v) in [
            ("mean", &self.mean),
            ("std", &self.std),
            ("min", &self.min),
            ("max", &self.max),
        ] {
            check_len(
                path,
                name,
                v.len(),
                n_latent,
                "n_latent of the model in config.json",
            )?;
            check_all_finite(path, name, v)?;
        }
        if let Some(j) = self.std.iter().position(|&s| s <= 0.0) {
            return Err(Error::format(
                path,
                format!("std[{j}]"),
                format!(
                    "{}, expected > 0 (a standard deviation; training stores at least 1e-6)",
                    self.std[j]
                ),
            ));
        }
        if let Some(j) = (0..n_latent).find(|&j| self.min[j] > self.max[j]) {
            return Err(Error::format(
                path,
                format!("min[{j}]"),
                format!("{} is above max[{j}] = {}", self.min[j], self.max[j]),
            ));
        }
        Ok(())
    }

    /// `z · std + mean` (the inverse of [`LatentStats::standardize`]) on a tensor.
    ///
    /// # Shapes
    /// `[n, n_latent]` → `[n, n_latent]`
    pub fn unstandardize(&self, z: Tensor<2>) -> Tensor<2> {
        let device = z.device();
        let d = self.mean.len();
        let std = Tensor::<2>::from_data(TensorData::new(self.std.clone(), [1, d]), &device);
        let mean = Tensor::<2>::from_data(TensorData::new(self.mean.clone(), [1, d]), &device);
        z.mul(std).add(mean)
    }
}
