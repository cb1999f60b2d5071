//! DiffVAE end to end (Bica, Andrés-Terré, Cvejic & Liò, *Sci. Rep.* 10, 9790, 2020): the
//! preprocessing, the hand-written training loop of [`DiffVae`] and of its baselines (Gaussian
//! VAE, plain autoencoder, PCA; the paper's Table 2), the latent means μ and the decoder's
//! latent-to-gene weights ω.
//!
//! # Input
//! log1p-normalised expression of the highly variable genes, min-max scaled per gene to
//! [0, 1] ([`preprocess_config`]: `normalize_total(1e4)` + `log1p` for count input, seurat
//! HVGs, subset, per-gene min-max), so that each gene can be modelled as a Bernoulli
//! variable. Every model of [`LatentModelKind`] sees the same matrix.
//!
//! # Training
//! Adam (lr 1e-3, ε 1e-8), minibatches of 128 cells, 100 epochs over all cells (the published
//! `train_DiffVAE.py` defaults; the published code's 80/20 split only monitored a validation
//! loss, so no cells are held out here and there is no early stopping). Weight
//! initialisation, shuffling, ε and the prior draws of the MMD all derive from one seed; the
//! same seed gives the same latent.

pub mod classify;
pub mod graph;
pub mod identify;
pub mod shift;

use burn::module::Module;
use burn::prelude::*;
use burn::tensor::activation;
use rand::SeedableRng;
use rand::rngs::StdRng;
use serde::{Deserialize, Serialize};

use crate::anndata::{AnnData, DenseMatrix};
use crate::error::{Error, Result};
use crate::models::diffvae::{bernoulli_nll, kl_standard_normal, mmd, squared_error};
use crate::models::{DiffVae, DiffVaeConfig};
use crate::pp::{HvgFlavor, PreprocessConfig};
use crate::tl::pca::Pca;
use crate::train::fit::{FitOptions, Regularizer, StepLoss, TrainStep, fit};
use crate::train::plan::shuffled_batches;
use crate::train::{EpochRecord, Observer, map_row_chunks, normal_matrix, to_host, to_tensor};

/// The latent models compared in DiffVAE's Table 2.
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[serde(rename_all = "snake_case")]
pub enum LatentModelKind {
    /// DiffVAE: Bernoulli decoder + λ·MMD(q(z) ‖ N(0, I)) (the paper's model).
    #[serde(rename = "diffvae")]
    #[cfg_attr(feature = "clap", value(name = "diffvae"))]
    DiffVae,
    /// Gaussian VAE: the same network and Bernoulli decoder, β·KL instead of the MMD.
    Vae,
    /// Plain autoencoder: the same network, z = μ, squared error on the sigmoid output.
    Ae,
    /// PCA of the same min-max scaled matrix ([`Pca`]); no training.
    Pca,
}

impl LatentModelKind {
    /// All four, in the order of the paper's table.
    pub const ALL: [LatentModelKind; 4] = [
        LatentModelKind::DiffVae,
        LatentModelKind::Vae,
        LatentModelKind::Ae,
        LatentModelKind::Pca,
    ];

    /// The command-line name: `diffvae`, `vae`, `ae` or `pca`.
    pub fn name(self) -> &'static str {
        match self {
            LatentModelKind::DiffVae => "diffvae",
            LatentModelKind::Vae => "vae",
            LatentModelKind::Ae => "ae",
            LatentModelKind::Pca => "pca",
        }
    }

    /// Whether the model is a neural network (everything but PCA).
    pub fn is_neural(self) -> bool {
        self != LatentModelKind::Pca
    }
}

impl std::fmt::Display for LatentModelKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Parameters of [`fit_latent`]. The default is the published DiffVAE.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct LatentModelConfig {
    /// Which model.
    pub kind: LatentModelKind,
    /// Latent dimension m (PCA: number of components, clamped to `min(n_cells, n_genes) − 1`).
    pub n_latent: usize,
    /// Inner hidden width h1 (paper 256).
    pub h1: usize,
    /// Outer hidden width h2 (paper 512 = 2·h1).
    pub h2: usize,
    /// ReLU on the μ and log σ² heads, as the paper (see [`crate::models::diffvae`]).
    pub relu_heads: bool,
    /// λ, the weight of the MMD term (DiffVAE only; the published code: 1). On pbmc68k λ = 10
    /// scored slightly higher k-means ARIs than 1 (module docs of [`crate::diffvae::identify`]), within
    /// the seed-to-seed spread.
    pub mmd_weight: f64,
    /// β, the weight of the KL term (Gaussian VAE only; 1 = the ELBO).
    pub kl_weight: f64,
    /// Epochs over all cells.
    pub epochs: usize,
    /// Minibatch size in cells (a last minibatch of one cell is dropped: BatchNorm needs 2).
    pub batch_size: usize,
    /// Adam learning rate.
    pub learning_rate: f64,
    /// Seed of the weights, the shuffling, ε and the MMD's prior draws.
    pub seed: u64,
}

impl Default for LatentModelConfig {
    fn default() -> Self {
        Self {
            kind: LatentModelKind::DiffVae,
            n_latent: 50,
            h1: 256,
            h2: 512,
            relu_heads: false,
            mmd_weight: 1.0,
            kl_weight: 1.0,
            epochs: 100,
            batch_size: 128,
            learning_rate: 1e-3,
            seed: 0,
        }
    }
}

impl LatentModelConfig {
    /// Checks the parameters.
    ///
    /// # Errors
    /// [`Error::Param`] for a zero latent size, width, epoch count or batch size below 2, or a
    /// negative / non-finite weight or learning rate.
    pub fn validate(&self) -> Result<()> {
        if self.n_latent == 0 {
            return Err(Error::Param("latent dimension must be at least 1".into()));
        }
        if self.kind.is_neural() {
            if self.h1 == 0 || self.h2 == 0 {
                return Err(Error::Param(format!(
                    "hidden widths must be positive, got h2 = {}, h1 = {}",
                    self.h2, self.h1
                )));
            }
            if self.epochs == 0 {
                return Err(Error::Param("epochs must be at least 1".into()));
            }
            if self.batch_size < 2 {
                return Err(Error::Param(format!(
                    "batch size must be at least 2 (BatchNorm), got {}",
                    self.batch_size
                )));
            }
            if !(self.learning_rate.is_finite() && self.learning_rate > 0.0) {
                return Err(Error::Param(format!(
                    "learning rate must be a positive number, got {}",
                    self.learning_rate
                )));
            }
        }
        for (name, w) in [("MMD", self.mmd_weight), ("KL", self.kl_weight)] {
            if !(w.is_finite() && w >= 0.0) {
                return Err(Error::Param(format!(
                    "{name} weight must be a finite number ≥ 0, got {w}"
                )));
            }
        }
        Ok(())
    }

    /// The network configuration for `n_genes` input genes.
    pub fn network(&self, n_genes: usize) -> DiffVaeConfig {
        DiffVaeConfig::new(n_genes)
            .with_h1(self.h1)
            .with_h2(self.h2)
            .with_n_latent(self.n_latent)
            .with_relu_heads(self.relu_heads)
    }
}

/// DiffVAE's preprocessing: no filtering, `normalize_total(1e4)` + `log1p` when the input is
/// counts, `log1p` alone for non-negative non-count input that is not yet log-transformed
/// (`log1p_other`, e.g. data normalised to 10⁴ per cell such as the Weinreb subset), used as is
/// when already log1p-normalised; `n_top_genes` seurat HVGs (all genes if `None` or if there
/// are fewer), subset to them, per-gene min-max scaling to [0, 1]. Apply with
/// [`crate::pp::fit_transform`]; [`preprocess_config_for`] sets `log1p_other` from the
/// data. Shared by DiffVAE, its classifier and Graph-DiffVAE.
pub fn preprocess_config(n_top_genes: Option<usize>, log1p_other: bool) -> PreprocessConfig {
    PreprocessConfig {
        min_genes: None,
        min_cells: None,
        target_sum: Some(1e4),
        log1p: log1p_other.then_some(true),
        n_top_genes,
        flavor: HvgFlavor::Seurat,
        subset: true,
        scale: false,
        max_value: None,
        minmax: true,
    }
}

/// [`preprocess_config`] with `log1p_other` set when `adata.X` is neither counts, nor
/// log1p-normalised, nor scaled ([`crate::pp::DataKind::Other`]).
pub fn preprocess_config_for(adata: &AnnData, n_top_genes: Option<usize>) -> PreprocessConfig {
    let other = crate::pp::inspect_kind(&adata.x).kind == crate::pp::DataKind::Other;
    preprocess_config(n_top_genes, other)
}

/// What [`fit_latent`] returns.
#[derive(Debug, Clone)]
pub struct LatentFit {
    /// The model.
    pub kind: LatentModelKind,
    /// The latent representation `[n_cells, m]`: the posterior mean μ (encoder in evaluation
    /// mode, BatchNorm running statistics) for the neural models, the PCA scores for PCA.
    pub latent: DenseMatrix,
    /// The matrices whose product is ω ([`LatentFit::gene_weights`]): the decoder's weights
    /// W(0) `[m, h1]`, W(1) `[h1, h2]`, W(2) `[h2, n_genes]` for the neural models; for PCA
    /// the one matrix of principal axes `[m, n_genes]` (its loadings play ω's role).
    pub decoder_weights: Vec<DenseMatrix>,
    /// Per-epoch losses (empty for PCA). `recon` is the reconstruction term; the regulariser
    /// before weighting is `mmd` (the MMD², weight λ in `mmd_weight`) for DiffVAE, `kl`
    /// (weight β in `kl_weight`) for the VAE, none for the autoencoder.
    pub records: Vec<EpochRecord>,
}

impl LatentFit {
    /// The latent-to-gene weights ω = W(0)·W(1)·W(2) `[m, n_genes]` (DiffVAE, "High-weight
    /// genes"; biases and nonlinearities ignored), or the PCA loadings. Computed in `f64`.
    ///
    /// # Errors
    /// [`Error::Internal`] if there are no matrices or their shapes do not chain.
    pub fn gene_weights(&self) -> Result<DenseMatrix> {
        matmul_chain(&self.decoder_weights)
    }
}

/// The product `A₀·A₁·…` of row-major matrices, in `f64` (faer), returned as `f32`.
fn matmul_chain(ms: &[DenseMatrix]) -> Result<DenseMatrix> {
    let first = ms
        .first()
        .ok_or_else(|| Error::Internal("no decoder weight matrices".into()))?;
    let to_faer =
        |m: &DenseMatrix| faer::Mat::<f64>::from_fn(m.n_rows, m.n_cols, |i, j| m.row(i)[j] as f64);
    let mut acc = to_faer(first);
    for m in &ms[1..] {
        if m.n_rows != acc.ncols() {
            return Err(Error::Internal(format!(
                "decoder weights do not chain: [{}, {}] · [{}, {}]",
                acc.nrows(),
                acc.ncols(),
                m.n_rows,
                m.n_cols
            )));
        }
        acc = &acc * &to_faer(m);
    }
    let (r, c) = (acc.nrows(), acc.ncols());
    let data = (0..r)
        .flat_map(|i| (0..c).map(move |j| (i, j)))
        .map(|(i, j)| acc[(i, j)] as f32)
        .collect();
    DenseMatrix::from_vec(r, c, data)
}

/// Fits the latent model `cfg.kind` on `x` (`[n_cells, n_genes]`, min-max scaled log1p
/// expression in [0, 1], e.g. the output of [`crate::pp::fit_transform`] with
/// [`preprocess_config`]) and returns the latent means, the decoder weights and the losses.
///
/// # Errors
/// - [`Error::Param`]: invalid `cfg` ([`LatentModelConfig::validate`]).
/// - [`Error::InvalidInput`]: fewer than 2 cells or genes, or values outside [0, 1] / not
///   finite for the neural models (the Bernoulli likelihood needs them in [0, 1]); the loss
///   became non-finite (lower the learning rate).
/// - [`Error::Internal`]: the backend failed.
pub fn fit_latent(
    x: &DenseMatrix,
    cfg: &LatentModelConfig,
    device: &Device,
    observer: &mut dyn Observer,
) -> Result<LatentFit> {
    cfg.validate()?;
    let (n, g) = (x.n_rows, x.n_cols);
    if n < 2 || g < 2 {
        return Err(Error::InvalidInput(format!(
            "{} needs at least 2 cells and 2 genes, got {n} cells × {g} genes",
            cfg.kind
        )));
    }
    if cfg.kind == LatentModelKind::Pca {
        let pca = Pca::fit(x, cfg.n_latent)?;
        return Ok(LatentFit {
            kind: cfg.kind,
            latent: pca.transform(x),
            decoder_weights: vec![pca.components],
            records: Vec::new(),
        });
    }
    if let Some(k) = x
        .data
        .iter()
        .position(|v| !(v.is_finite() && (0.0..=1.0).contains(v)))
    {
        return Err(Error::InvalidInput(format!(
            "{}: the Bernoulli decoder needs values in [0, 1] (per-gene min-max scaled), found \
             {} at (cell {}, gene {}) (0-based)",
            cfg.kind,
            x.data[k],
            k / g,
            k % g
        )));
    }
    let (net, records) = train_network(x, cfg, device, observer)?;
    let latent = encode_mean(&net, x, device)?;
    let decoder_weights = net
        .decoder_weights()
        .into_iter()
        .map(to_host)
        .collect::<Result<Vec<_>>>()?;
    Ok(LatentFit {
        kind: cfg.kind,
        latent,
        decoder_weights,
        records,
    })
}

/// Trains the network of a neural `cfg.kind` (DiffVAE, VAE or autoencoder) on `x`
/// (`[n_cells, n_genes]`, values in [0, 1]) for `cfg.epochs` epochs over all cells and returns
/// it in evaluation mode with its per-epoch records. Per minibatch of B cells:
/// - DiffVAE: z = μ + σ ⊙ ε, ε ~ N(0, I) `[B, m]`; loss = [`bernoulli_nll`] + λ·[`mmd`] of
///   z and z′ ~ N(0, I) `[B, m]`;
/// - VAE: the same z; loss = [`bernoulli_nll`] + β·[`kl_standard_normal`];
/// - autoencoder: z = μ; loss = [`squared_error`] of sigmoid(l) and x.
///
/// The per-epoch records (stage `diffvae`, `vae` or `ae`; fields as in
/// [`LatentFit::records`]) also go to `observer`.
///
/// # Errors
/// [`Error::Param`] for PCA or an invalid `cfg`; [`Error::InvalidInput`] for fewer than 2
/// cells or a loss that became non-finite.
pub fn train_network(
    x: &DenseMatrix,
    cfg: &LatentModelConfig,
    device: &Device,
    observer: &mut dyn Observer,
) -> Result<(DiffVae, Vec<EpochRecord>)> {
    cfg.validate()?;
    if !cfg.kind.is_neural() {
        return Err(Error::Param(
            "train_network: PCA has no network to train".into(),
        ));
    }
    let n = x.n_rows;
    if n < 2 {
        return Err(Error::InvalidInput(format!(
            "need at least 2 cells to train, got {n}"
        )));
    }
    let ad = device.clone().autodiff();
    let mut rng = StdRng::seed_from_u64(cfg.seed);
    // Weights from a host generator (not the device's global one): reproducible even when
    // other fits run concurrently in the process.
    let net = cfg
        .network(x.n_cols)
        .init_seeded(&ad, cfg.seed ^ 0xd1ff_fae0);
    let mut step = NetworkStep {
        x,
        order: (0..n).collect(),
        cfg,
        ad,
    };
    let opts = FitOptions {
        label: cfg.kind.name().into(),
        ..FitOptions::new(cfg.kind.name(), cfg.epochs, cfg.learning_rate)
    };
    let fitted = fit(&mut step, net, &opts, &mut rng, observer)?;
    Ok((fitted.last.valid(), fitted.records))
}

/// A DiffVAE network of one [`LatentModelKind`] as a [`TrainStep`]: every cell each epoch,
/// shuffled, minibatches of at least 2 cells; the loss of [`train_network`].
struct NetworkStep<'a> {
    x: &'a DenseMatrix,
    order: Vec<usize>,
    cfg: &'a LatentModelConfig,
    ad: Device,
}

impl TrainStep<DiffVae> for NetworkStep<'_> {
    fn batches(&mut self, _epoch: usize, rng: &mut StdRng) -> Result<Vec<Vec<usize>>> {
        Ok(shuffled_batches(
            &mut self.order,
            rng,
            self.cfg.batch_size,
            true,
        ))
    }

    fn loss(
        &mut self,
        net: &DiffVae,
        b: &[usize],
        _epoch: usize,
        rng: &mut StdRng,
    ) -> Result<StepLoss> {
        let (m, ad) = (self.cfg.n_latent, &self.ad);
        let xb = to_tensor(&self.x.select_rows(b), ad);
        let (mu, logvar) = net.encode(xb.clone());
        if self.cfg.kind == LatentModelKind::Ae {
            let p = activation::sigmoid(net.decode_logits(mu));
            let recon = squared_error(p, xb);
            return Ok(StepLoss {
                recon: Some(recon.clone()),
                ..StepLoss::plain(recon)
            });
        }
        let eps = to_tensor(&normal_matrix(rng, b.len(), m), ad);
        let z = mu
            .clone()
            .add(logvar.clone().mul_scalar(0.5).exp().mul(eps));
        let (kind, reg, w) = if self.cfg.kind == LatentModelKind::DiffVae {
            let prior = to_tensor(&normal_matrix(rng, b.len(), m), ad);
            (Regularizer::Mmd, mmd(z.clone(), prior), self.cfg.mmd_weight)
        } else {
            (
                Regularizer::Kl,
                kl_standard_normal(mu, logvar),
                self.cfg.kl_weight,
            )
        };
        let recon = bernoulli_nll(net.decode_logits(z), xb);
        Ok(StepLoss {
            loss: recon.clone().add(reg.clone().mul_scalar(w)),
            recon: Some(recon),
            regularizer: Some((kind, reg, w)),
        })
    }
}

/// The posterior means μ of all rows of `x` (`[n_cells, n_genes]` → `[n_cells, m]`), with the
/// network in evaluation mode (BatchNorm running statistics), in chunks of 4096 cells.
///
/// # Errors
/// [`Error::InvalidInput`] if `x`'s width differs from the network's input;
/// [`Error::Internal`] if the backend fails to return data.
pub fn encode_mean(net: &DiffVae, x: &DenseMatrix, device: &Device) -> Result<DenseMatrix> {
    let expected = net.decoder_weights()[2].dims()[1];
    if x.n_cols != expected {
        return Err(Error::InvalidInput(format!(
            "X has {} genes, the network expects {expected}",
            x.n_cols
        )));
    }
    let net = net.valid();
    map_row_chunks(x.n_rows, 4096, "encode", |idx| {
        to_host(net.encode(to_tensor(&x.select_rows(idx), device)).0)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::{ReadOptions, read};
    use crate::train::Silent;

    const PBMC: &str = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../../shared/data/pbmc68k_reduced/pbmc68k_reduced_counts.h5ad"
    );

    /// pbmc68k_reduced raw counts (700 cells × 765 genes), through DiffVAE's preprocessing.
    fn pbmc_minmax() -> DenseMatrix {
        let p = std::path::Path::new(PBMC);
        assert!(
            p.exists(),
            "shared dataset missing: {} (expected the `shared/` folder beside the repository)",
            p.display()
        );
        let a = read(p, &ReadOptions::default()).unwrap();
        let (pp, _) = crate::pp::fit_transform(&a, &preprocess_config(Some(2000), false)).unwrap();
        pp.x.to_dense()
    }

    fn small(kind: LatentModelKind, epochs: usize, seed: u64) -> LatentModelConfig {
        LatentModelConfig {
            kind,
            n_latent: 10,
            h1: 64,
            h2: 128,
            epochs,
            seed,
            ..LatentModelConfig::default()
        }
    }

    fn normal(n: usize, d: usize, seed: u64, shift: f32, device: &Device) -> Tensor<2> {
        let mut rng = StdRng::seed_from_u64(seed);
        to_tensor(&normal_matrix(&mut rng, n, d), device).add_scalar(shift)
    }

    #[test]
    fn diffvae_loss_falls_on_pbmc68k() {
        let _rng = crate::test_rng_lock();
        let x = pbmc_minmax();
        assert_eq!((x.n_rows, x.n_cols), (700, 765));
        assert!(x.data.iter().all(|v| (0.0..=1.0).contains(v)));
        let device = Device::default();
        let cfg = LatentModelConfig {
            epochs: 12,
            ..LatentModelConfig::default()
        };
        let fit = fit_latent(&x, &cfg, &device, &mut Silent).unwrap();
        assert_eq!((fit.latent.n_rows, fit.latent.n_cols), (700, 50));
        assert_eq!(fit.records.len(), 12);
        let (first, last) = (&fit.records[0], &fit.records[11]);
        eprintln!(
            "DiffVAE pbmc68k: loss {:.2} → {:.2}, recon {:.2} → {:.2}, MMD {:.4} → {:.4}",
            first.train_loss,
            last.train_loss,
            first.recon.unwrap(),
            last.recon.unwrap(),
            first.mmd.unwrap(),
            last.mmd.unwrap()
        );
        assert!(
            last.train_loss < 0.9 * first.train_loss,
            "{first:?} → {last:?}"
        );
        assert!(last.recon.unwrap() < first.recon.unwrap());
        let omega = fit.gene_weights().unwrap();
        assert_eq!((omega.n_rows, omega.n_cols), (50, 765));
        assert!(omega.data.iter().all(|v| v.is_finite()));
    }

    #[test]
    fn mmd_is_near_zero_for_two_standard_normal_samples_and_large_for_a_shift() {
        let _rng = crate::test_rng_lock();
        let device = Device::default();
        let a = normal(256, 50, 1, 0.0, &device);
        let b = normal(256, 50, 2, 0.0, &device);
        let same: f32 = mmd(a.clone(), b).into_scalar();
        // Shifted by 1 along every axis: ‖δ‖² = m, population MMD² ≈ 2·0.146·(1 − e^{−50/54}).
        let shifted: f32 = mmd(a.clone(), normal(256, 50, 3, 1.0, &device)).into_scalar();
        let half: f32 = mmd(a, normal(256, 50, 4, 0.3, &device)).into_scalar();
        eprintln!("MMD² same {same:.5}, shift 0.3 {half:.5}, shift 1 {shifted:.5}");
        assert!(same.abs() < 0.005, "{same}");
        assert!(shifted > 0.1, "{shifted}");
        assert!(half > 5.0 * same.abs() && half < shifted, "{half}");
        // Fewer than two rows: defined as 0.
        let one = normal(1, 50, 5, 0.0, &device);
        let z: f32 = mmd(one.clone(), one).into_scalar();
        assert_eq!(z, 0.0);
    }

    #[test]
    fn fit_is_reproducible_with_a_seed_and_differs_across_seeds() {
        let _rng = crate::test_rng_lock();
        let x = pbmc_minmax();
        let device = Device::default();
        for kind in [
            LatentModelKind::DiffVae,
            LatentModelKind::Vae,
            LatentModelKind::Ae,
        ] {
            let a = fit_latent(&x, &small(kind, 2, 7), &device, &mut Silent).unwrap();
            let b = fit_latent(&x, &small(kind, 2, 7), &device, &mut Silent).unwrap();
            let c = fit_latent(&x, &small(kind, 2, 8), &device, &mut Silent).unwrap();
            assert_eq!(a.latent, b.latent, "{kind}");
            assert_eq!(a.decoder_weights, b.decoder_weights, "{kind}");
            assert_ne!(a.latent, c.latent, "{kind}");
            assert_eq!((a.latent.n_rows, a.latent.n_cols), (700, 10));
            assert_eq!(a.decoder_weights.len(), 3);
        }
        let p = fit_latent(&x, &small(LatentModelKind::Pca, 1, 0), &device, &mut Silent).unwrap();
        assert_eq!((p.latent.n_rows, p.latent.n_cols), (700, 10));
        assert!(p.records.is_empty());
        let w = p.gene_weights().unwrap();
        assert_eq!((w.n_rows, w.n_cols), (10, 765));
    }

    #[test]
    fn latent_model_kind_names_round_trip_and_bad_input_is_refused() {
        let _rng = crate::test_rng_lock();
        // The names written into outputs read back as the same kinds (config files).
        for k in LatentModelKind::ALL {
            let v = serde_json::Value::from(k.name());
            assert_eq!(serde_json::from_value::<LatentModelKind>(v).unwrap(), k);
        }
        assert!(serde_json::from_value::<LatentModelKind>("scvi".into()).is_err());
        let device = Device::default();
        let mut x = DenseMatrix::zeros(10, 4);
        x.data[6] = 1.5;
        match fit_latent(
            &x,
            &small(LatentModelKind::DiffVae, 1, 0),
            &device,
            &mut Silent,
        ) {
            Err(Error::InvalidInput(m)) => assert!(m.contains("(cell 1, gene 2)"), "{m}"),
            other => panic!("expected InvalidInput, got {other:?}"),
        }
        let bad = LatentModelConfig {
            n_latent: 0,
            ..LatentModelConfig::default()
        };
        assert!(matches!(
            fit_latent(&DenseMatrix::zeros(10, 4), &bad, &device, &mut Silent),
            Err(Error::Param(_))
        ));
        let bad = LatentModelConfig {
            batch_size: 1,
            ..LatentModelConfig::default()
        };
        assert!(matches!(bad.validate(), Err(Error::Param(_))));
        let bad = LatentModelConfig {
            mmd_weight: f64::NAN,
            ..LatentModelConfig::default()
        };
        assert!(matches!(bad.validate(), Err(Error::Param(_))));
        assert!(matches!(
            fit_latent(
                &DenseMatrix::zeros(1, 4),
                &LatentModelConfig::default(),
                &device,
                &mut Silent
            ),
            Err(Error::InvalidInput(_))
        ));
    }
}
