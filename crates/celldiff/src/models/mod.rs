//! Neural networks (Burn modules). One file per model:
//!
//! - [`layers`]: the dense layer every model is built from (the single place a custom CPU
//!   kernel can later replace Burn's matmul + bias + activation without touching callers).
//! - [`vae`]: the scVAEDer VAE (Sadria & Layton 2025; Kingma & Welling 2014).
//! - [`count_head`]: the softmax-ρ / θ_g head of every count decoder (scVI).
//! - [`likelihood`]: NB / ZINB count likelihoods of the decoders (scVI, Lopez et al. 2018).
//! - [`denoiser`]: the ε-prediction MLP of the latent DDPM.
//! - [`autoencoder`]: the SCLD autoencoder (Wang et al. 2023, Eq. 3–6).
//! - [`cond_denoiser`]: SCLD's conditional denoiser (MLP or U-Net; add/concat/attention fusion).
//! - [`scorer`]: SCLD's post-guidance real-vs-generated Scorer.
//! - [`diffvae`]: the DiffVAE encoder/decoder and its Bernoulli, MMD and KL loss terms.
//! - [`graph_vae`]: Graph-DiffVAE's variational graph autoencoder (sparse GCN propagation).
//! - [`ema`]: exponential moving average of weights (diffusers `EMAModel`).

pub mod autoencoder;
pub mod classifier;
pub mod cond_denoiser;
pub mod count_head;
pub mod denoiser;
pub mod diffvae;
pub mod ema;
#[cfg(feature = "flex")]
pub mod fused;
pub mod graph_vae;
pub mod layers;
pub mod likelihood;
pub mod scorer;
pub mod vae;

pub use autoencoder::{Autoencoder, AutoencoderConfig};
pub use classifier::{CellTypeClassifier, CellTypeClassifierConfig};
pub use cond_denoiser::{Architecture, CondDenoiser, CondDenoiserConfig, Fusion};
pub use count_head::CountDecoder;
pub use denoiser::{Denoiser, DenoiserConfig};
pub use diffvae::{DiffVae, DiffVaeConfig};
pub use ema::Ema;
pub use layers::{Activation, Dense, DenseConfig};
pub use likelihood::Likelihood;
pub use scorer::{Scorer, ScorerConfig};
pub use vae::{HiddenNorm, Vae, VaeConfig, VaeOutput};
