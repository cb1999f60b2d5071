//! Throughput benchmarks on seeded synthetic data (the `celldiff bench` command; the same
//! workloads as `bench/torch_reference.py`):
//!
//! - VAE training: 2000 genes, encoder 2000 → 512 → 256 → 50 (decoder mirrored), batch 128,
//!   Adam — cells per second over whole epochs (after one warm-up epoch).
//! - Denoiser training: MLP 178 → 512 → 512 → 512 → 50 (n_latent 50 + 128-d timestep
//!   embedding), batch 256, Adam + EMA — optimisation steps per second.
//! - Sampling: `n` latents with DDPM (1000 steps) and DDIM (50 steps) — wall seconds.

use std::time::Instant;

use burn::optim::GradientsParams;
use burn::prelude::*;
use burn::tensor::TensorData;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

use crate::models::vae::vae_loss_terms;
use crate::models::{DenoiserConfig, Ema, VaeConfig};
use crate::pipeline::sample_latents;
use crate::schedulers::{DdimScheduler, DdpmScheduler, NoiseSchedule, ScheduleConfig};
use crate::train::{Noising, normal_matrix};

/// Sizes of the benchmark workloads.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BenchConfig {
    /// Cells in the synthetic VAE training matrix.
    pub vae_cells: usize,
    /// Timed VAE epochs.
    pub vae_epochs: usize,
    /// Timed denoiser optimisation steps.
    pub denoiser_steps: usize,
    /// Latents sampled.
    pub sample_cells: usize,
    /// VAE minibatch (cells); 128 by default, larger to fill a GPU.
    pub vae_batch: usize,
    /// Denoiser minibatch (latents); 256 by default.
    pub denoiser_batch: usize,
    /// Seed.
    pub seed: u64,
}

impl Default for BenchConfig {
    fn default() -> Self {
        Self {
            vae_cells: 16_384,
            vae_epochs: 1,
            denoiser_steps: 200,
            sample_cells: 10_000,
            vae_batch: 128,
            denoiser_batch: 256,
            seed: 0,
        }
    }
}

/// Results, with the JSON keys shared with `bench/torch_reference.py`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BenchResult {
    /// VAE training throughput (cells/s).
    pub vae_train_cells_per_s: f64,
    /// Denoiser training throughput (steps/s of `denoiser_batch` latents).
    pub denoiser_train_steps_per_s: f64,
    /// DDPM 1000-step sampling of `sample_cells` latents (s).
    pub sample_ddpm1000_10k_s: f64,
    /// DDIM 50-step sampling of `sample_cells` latents (s).
    pub sample_ddim50_10k_s: f64,
    /// Threads used.
    pub threads: usize,
    /// Achieved model GFLOP/s of VAE training ([`BenchResult::with_gflops`]).
    #[serde(default)]
    pub vae_train_gflops: f64,
    /// Achieved model GFLOP/s of denoiser training.
    #[serde(default)]
    pub denoiser_train_gflops: f64,
    /// Achieved model GFLOP/s of DDPM-1000 sampling.
    #[serde(default)]
    pub sample_ddpm1000_gflops: f64,
    /// Achieved model GFLOP/s of DDIM-50 sampling.
    #[serde(default)]
    pub sample_ddim50_gflops: f64,
    /// VAE minibatch of the measurement (cells; 128 in results written before it was a
    /// setting).
    #[serde(default = "default_vae_batch")]
    pub vae_batch: usize,
    /// Denoiser minibatch of the measurement (256 in results written before it was a setting).
    #[serde(default = "default_denoiser_batch")]
    pub denoiser_batch: usize,
}

fn default_vae_batch() -> usize {
    BenchConfig::default().vae_batch
}

fn default_denoiser_batch() -> usize {
    BenchConfig::default().denoiser_batch
}

/// Multiply-adds per cell of the benchmark VAE's Linear layers (2000 → 512 → 256 → 2 × 50 heads,
/// 50 → 256 → 512 → 2000).
pub const VAE_MACS: f64 =
    (2000 * 512 + 512 * 256 + 2 * 256 * 50 + 50 * 256 + 256 * 512 + 512 * 2000) as f64;
/// Multiply-adds per latent of the benchmark denoiser (178 → 512 → 512 → 512 → 50).
pub const DENOISER_MACS: f64 = (178 * 512 + 2 * 512 * 512 + 512 * 50) as f64;

impl BenchResult {
    /// Fills the GFLOP/s fields from the throughputs with the model-FLOP convention that
    /// `bench/torch_reference.py` uses too: 2 FLOPs per multiply-add of the Linear layers, × 3
    /// for a training step (forward + backward); `cfg.sample_cells` latents per sampling run,
    /// `cfg.denoiser_batch` latents per denoiser step (both recorded in the result).
    /// Element-wise work (bias, activations, BatchNorm, Adam) is not counted.
    pub fn with_gflops(mut self, cfg: &BenchConfig) -> Self {
        let n = cfg.sample_cells as f64;
        self.vae_batch = cfg.vae_batch;
        self.denoiser_batch = cfg.denoiser_batch;
        self.vae_train_gflops = 6.0 * VAE_MACS * self.vae_train_cells_per_s / 1e9;
        self.denoiser_train_gflops =
            6.0 * DENOISER_MACS * cfg.denoiser_batch as f64 * self.denoiser_train_steps_per_s / 1e9;
        let per_run = |steps: f64, s: f64| {
            if s > 0.0 {
                2.0 * DENOISER_MACS * n * steps / s / 1e9
            } else {
                0.0
            }
        };
        self.sample_ddpm1000_gflops = per_run(1000.0, self.sample_ddpm1000_10k_s);
        self.sample_ddim50_gflops = per_run(50.0, self.sample_ddim50_10k_s);
        self
    }
}

/// A seeded synthetic log1p-like matrix `[n, g]`: 70 % zeros, the rest in (0, 4).
pub fn synthetic_expression(n: usize, g: usize, seed: u64) -> Vec<f32> {
    let mut rng = StdRng::seed_from_u64(seed);
    (0..n * g)
        .map(|_| {
            if rng.random::<f32>() < 0.7 {
                0.0
            } else {
                4.0 * rng.random::<f32>()
            }
        })
        .collect()
}

/// VAE training throughput in cells/s. Each step is the one `train::train_vae` runs: the
/// minibatch and the reparameterisation noise (host-drawn) go to the device, forward, backward,
/// Adam with the model moved in (no copy of the weights).
pub fn vae_train_cells_per_s(cfg: &BenchConfig, device: &Device) -> f64 {
    let ad = device.clone().autodiff();
    ad.seed(cfg.seed);
    let (n, g, b) = (cfg.vae_cells, 2000, cfg.vae_batch.clamp(1, cfg.vae_cells));
    let x = synthetic_expression(n, g, cfg.seed);
    let mut rng = StdRng::seed_from_u64(cfg.seed);
    let mut optim = crate::optim::adam(1e-5);
    let mut epoch = |mut vae: crate::models::Vae| {
        for s in (0..n - b + 1).step_by(b) {
            let xb = Tensor::<2>::from_data(
                TensorData::new(x[s * g..(s + b) * g].to_vec(), [b, g]),
                &ad,
            );
            let eps = crate::train::to_tensor(&normal_matrix(&mut rng, b, 50), &ad);
            let out = vae.forward(xb.clone(), eps);
            let (r, k) = vae_loss_terms(xb, &out);
            let loss = r.add(k);
            let grads = GradientsParams::from_grads(loss.backward(), &vae);
            vae = optim.step(1e-3, vae, grads);
        }
        let _: f32 = vae.encode(Tensor::zeros([2, g], &ad)).0.sum().into_scalar();
        vae
    };
    let mut vae = epoch(VaeConfig::new(g).init(&ad));
    let start = Instant::now();
    for _ in 0..cfg.vae_epochs {
        vae = epoch(vae);
    }
    (n / b * b * cfg.vae_epochs) as f64 / start.elapsed().as_secs_f64()
}

/// Denoiser training throughput in steps/s (batch `cfg.denoiser_batch`, with the EMA update).
/// Each step is the one `train::train_diffusion` runs: t ~ U{0..999}, ε and z_t drawn on the host with the
/// timestep embeddings from a table, forward, backward, Adam (model moved in), EMA.
pub fn denoiser_train_steps_per_s(cfg: &BenchConfig, device: &Device) -> f64 {
    let ad = device.clone().autodiff();
    ad.seed(cfg.seed);
    let net_cfg = DenoiserConfig::new(50);
    let net = net_cfg.init(&ad);
    let mut ema = Ema::new(&net, 0.999);
    let mut optim = crate::optim::adam(1e-5);
    let mut rng = StdRng::seed_from_u64(cfg.seed);
    let schedule = NoiseSchedule::new(&ScheduleConfig::default()).expect("default schedule");
    let tables = Noising::new(
        &schedule,
        net_cfg.time_dim,
        crate::train::Objective::Epsilon,
    );
    // A pool of 4096 latents (or one batch, if larger) read in consecutive windows.
    let bs = cfg.denoiser_batch.max(1);
    let pool = bs * 4096usize.div_ceil(bs);
    let z0 = normal_matrix(&mut rng, pool, 50);
    let rows: Vec<usize> = (0..z0.n_rows).collect();
    let mut step = |mut net: crate::models::Denoiser, ema: &mut Ema<_>, k: usize| {
        let b = &rows[(k * bs) % pool..][..bs];
        let (zt, emb, eps) = tables.batch(&z0, b, &mut rng, &ad);
        let pred = net.forward(zt, emb);
        let loss = pred.sub(eps).square().mean();
        let grads = GradientsParams::from_grads(loss.backward(), &net);
        net = optim.step(1e-3, net, grads);
        ema.update(&net);
        net
    };
    let mut net = net;
    for k in 0..10 {
        net = step(net, &mut ema, k);
    }
    let sync = |ema: &Ema<crate::models::Denoiser>, net: &crate::models::Denoiser| {
        let _: f32 = ema
            .model()
            .forward(
                Tensor::zeros([1, 50], device),
                net.embed_timesteps(&[0], device),
            )
            .sum()
            .into_scalar();
    };
    sync(&ema, &net);
    let start = Instant::now();
    for k in 0..cfg.denoiser_steps {
        net = step(net, &mut ema, k);
    }
    sync(&ema, &net);
    cfg.denoiser_steps as f64 / start.elapsed().as_secs_f64()
}

/// Wall seconds to sample `cfg.sample_cells` latents with DDPM-1000 and DDIM-50 (untrained
/// denoiser, x̂₀ clipping off: the cost does not depend on the weights).
pub fn sampling_seconds(cfg: &BenchConfig, device: &Device) -> (f64, f64) {
    let net = DenoiserConfig::new(50).init(device);
    let schedule = NoiseSchedule::new(&ScheduleConfig::default()).expect("default schedule");
    let ddpm = DdpmScheduler::new(schedule.clone(), 1000).expect("1000 steps");
    let ddim = DdimScheduler::new(schedule, 50, 0.0).expect("50 steps");
    let time = |s: &dyn crate::schedulers::Scheduler| {
        let start = Instant::now();
        let z = sample_latents(
            &net,
            s,
            cfg.sample_cells,
            50,
            None,
            cfg.seed,
            device,
            &mut |_, _| {},
        );
        let _: f32 = z.sum().into_scalar();
        start.elapsed().as_secs_f64()
    };
    // Warm-up at the timed shape: on a GPU the first steps compile and tune the kernels for
    // `[sample_cells, 50]`, which would otherwise be charged to DDPM (≈ 0.2 % of the timed
    // work on the CPU).
    let warm = DdimScheduler::new(
        NoiseSchedule::new(&ScheduleConfig::default()).expect("default schedule"),
        2,
        0.0,
    )
    .expect("2 steps");
    time(&warm);
    (time(&ddpm), time(&ddim))
}
