//! The methods, one folder each; no method imports another (what two share lives below them:
//! `models/`, `schedulers/`, `pipeline`, `train`, `run`, `observation`, `counts`).
//!
//! - [`scvaeder`]: scVAEDer (Sadria & Layton, Genome Biology 2025): VAE + latent DDPM; fit,
//!   generate, embed, `--stream` training, and the analyses (interpolation, gene velocity,
//!   perturbation by latent arithmetic).
//! - [`scld`]: SCLD (Wang et al., arXiv 2312.14220): autoencoder + conditional latent
//!   diffusion with pre-guidance (classifier-free, ω) and post-guidance (Scorer).
//! - [`diffvae`]: DiffVAE and Graph-DiffVAE (Bica et al., Sci. Rep. 2020): MMD-VAE latent
//!   models, cell-type identification, the cell-type classifier, latent shifts between cell
//!   states, and the graph VAE for links between cells.

pub mod diffvae;
pub mod scld;
pub mod scvaeder;
