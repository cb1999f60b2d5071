//! `celldiff bench`: training and sampling throughput on seeded synthetic data; the same
//! workloads and JSON keys as `bench/torch_reference.py`.

use anyhow::Result;
use clap::Args;

use celldiff::backend::{self, DeviceChoice};
use celldiff::bench::{self, BenchConfig, BenchResult};

use crate::commands::device;

#[derive(Args, Debug)]
pub struct BenchArgs {
    /// Print one JSON object instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Cells in the synthetic VAE training matrix.
    #[arg(long, default_value_t = 16_384, allow_negative_numbers = true, value_parser = crate::commands::flags::count(2, crate::commands::flags::MAX_CELLS))]
    pub vae_cells: usize,
    /// Timed denoiser steps.
    #[arg(long, default_value_t = 200, allow_negative_numbers = true, value_parser = crate::commands::flags::count(1, crate::commands::flags::MAX_STEPS))]
    pub denoiser_steps: usize,
    /// Latents to sample (the key names say 10k; this is 10,000 by default).
    #[arg(long, default_value_t = 10_000, allow_negative_numbers = true, value_parser = crate::commands::flags::count(1, crate::commands::flags::MAX_CELLS))]
    pub sample_cells: usize,
    /// VAE minibatch (cells; larger batches fill a GPU, e.g. 4096 on an H200).
    #[arg(long, default_value_t = 128, allow_negative_numbers = true, value_parser = crate::commands::flags::count(1, crate::commands::flags::MAX_BATCH))]
    pub vae_batch: usize,
    /// Denoiser minibatch (latents).
    #[arg(long, default_value_t = 256, allow_negative_numbers = true, value_parser = crate::commands::flags::count(1, crate::commands::flags::MAX_BATCH))]
    pub denoiser_batch: usize,
    /// Skip the DDPM-1000 / DDIM-50 sampling measurements (reported as 0).
    #[arg(long)]
    pub skip_sampling: bool,
    /// Seed.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

/// `celldiff bench`: the throughput of each stage and its model GFLOP/s, as a table or JSON
/// (the keys of `bench/torch_reference.py`).
pub fn run(a: BenchArgs, dev: DeviceChoice, quiet: bool, threads: usize) -> Result<()> {
    let device = device(dev)?;
    let cfg = BenchConfig {
        vae_cells: a.vae_cells.max(256),
        vae_epochs: 1,
        denoiser_steps: a.denoiser_steps.max(1),
        sample_cells: a.sample_cells.max(1),
        vae_batch: a.vae_batch,
        denoiser_batch: a.denoiser_batch,
        seed: a.seed,
    };
    let say = |m: &str| {
        if !quiet && !a.json {
            eprintln!("{m}");
        }
    };
    say(&format!(
        "backend {} on {threads} threads",
        backend::cpu_backend_name()
    ));
    let vae = bench::vae_train_cells_per_s(&cfg, &device);
    say(&format!("VAE training: {vae:.0} cells/s"));
    let den = bench::denoiser_train_steps_per_s(&cfg, &device);
    say(&format!("denoiser training: {den:.1} steps/s"));
    let (ddpm, ddim) = if a.skip_sampling {
        (0.0, 0.0)
    } else {
        bench::sampling_seconds(&cfg, &device)
    };
    say(&format!(
        "sampling {} latents: DDPM-1000 {ddpm:.1}s, DDIM-50 {ddim:.2}s",
        cfg.sample_cells
    ));
    let r = BenchResult {
        vae_train_cells_per_s: vae,
        denoiser_train_steps_per_s: den,
        sample_ddpm1000_10k_s: ddpm,
        sample_ddim50_10k_s: ddim,
        threads,
        vae_train_gflops: 0.0,
        denoiser_train_gflops: 0.0,
        sample_ddpm1000_gflops: 0.0,
        sample_ddim50_gflops: 0.0,
        vae_batch: cfg.vae_batch,
        denoiser_batch: cfg.denoiser_batch,
    }
    .with_gflops(&cfg);
    if a.json {
        println!("{}", serde_json::to_string(&r)?);
    } else {
        println!(
            "vae_train_cells_per_s      {:>10.1}",
            r.vae_train_cells_per_s
        );
        println!(
            "denoiser_train_steps_per_s {:>10.1}",
            r.denoiser_train_steps_per_s
        );
        println!(
            "sample_ddpm1000_10k_s      {:>10.2}",
            r.sample_ddpm1000_10k_s
        );
        println!("sample_ddim50_10k_s        {:>10.2}", r.sample_ddim50_10k_s);
        println!("threads                    {:>10}", r.threads);
        println!(
            "GFLOP/s: VAE {:.1}, denoiser {:.1}, DDPM {:.1}, DDIM {:.1}",
            r.vae_train_gflops,
            r.denoiser_train_gflops,
            r.sample_ddpm1000_gflops,
            r.sample_ddim50_gflops
        );
    }
    Ok(())
}
