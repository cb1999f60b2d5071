//! Neural networks (Burn modules). One file per model:
//!
//! - [`layers`]: the dense layer every model is built from (the single place a custom CPU
//!   kernel can later replace Burn's matmul + bias + activation without touching callers).
//! - [`vae`]: the scVAEDer VAE (Sadria & Layton 2025; Kingma & Welling 2014).
//! - [`denoiser`]: the ε-prediction MLP of the latent DDPM.
//! - [`ema`]: exponential moving average of weights (diffusers `EMAModel`).

pub mod denoiser;
pub mod ema;
pub mod layers;
pub mod vae;

pub use denoiser::{Denoiser, DenoiserConfig};
pub use ema::Ema;
pub use layers::{Activation, Dense, DenseConfig};
pub use vae::{Vae, VaeConfig, VaeOutput};
