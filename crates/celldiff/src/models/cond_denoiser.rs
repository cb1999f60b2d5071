//! The conditional ε-prediction network of SCLD (Wang, Li, Di & Chen, arXiv 2312.14220,
//! Sec. 3.2, Eq. 8–11): predicts the noise of a noisy latent z_t given the timestep t and a
//! *condition embedding*, the output of the MLP `Embed` applied to a condition vector c_k
//! (the mean expression of cluster k, or of all cells for the "holistic" condition c_{K+1}).
//!
//! Fusion of the condition with the noisy latent ([`Fusion`], the paper's Table 4 ablation):
//! - `Add` (the paper's winner): the condition embedding is added to the timestep embedding
//!   that every residual block receives (as time embeddings in DDPM U-Nets).
//! - `Concat`: the condition embedding is concatenated to `[z_t | emb(t)]` at the input.
//! - `Attention`: cross-attention after the input layer. The latent is a flat vector, so the
//!   hidden state `[batch, width]` is split into `tokens` query tokens and the condition
//!   embedding into `tokens` key/value tokens of width `width / tokens` (one head); the
//!   attention output is added back (residual). With a single token attention would reduce
//!   to a linear map of the condition, hence the tokens.
//!
//! Architectures ([`Architecture`]):
//! - `Mlp`: `[z_t | emb(t)]` → Dense(width) + SiLU → (depth − 1) residual blocks → Dense(n_latent).
//! - `Unet`: a residual 1-D U-Net over the latent *width* (the latent has no spatial axis, so
//!   levels shrink the feature width, not a length): after the input layer, down blocks at
//!   widths `width, width/2, width/4` (each a residual block then a Dense to the next width),
//!   a middle residual block, and up blocks that widen back, add the skip of their level and
//!   apply a residual block; then Dense(n_latent). Every residual block receives the
//!   timestep (+ condition) embedding. This is the dense analogue of the paper's 1-D U-Net
//!   (down/up blocks with skip connections and time/condition embeddings).
//!
//! A residual block is `h + W₂ SiLU(W₁ SiLU(h) + P e)`, with `e` the embedding and `P` a
//! per-block projection (Ho et al. 2020's ResNet block without normalisation).

use burn::module::Module;
use burn::prelude::*;
use burn::tensor::activation::softmax;
use serde::{Deserialize, Serialize};

use super::denoiser::timestep_embedding_tensor;
use super::layers::{Activation, Dense, DenseConfig};

/// How the condition embedding enters the denoiser (SCLD Table 4).
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Fusion {
    /// Added to the timestep embedding of every residual block (SCLD's best).
    #[default]
    Add,
    /// Concatenated to the input.
    Concat,
    /// Cross-attention from the hidden state to the condition.
    Attention,
}

/// The network body.
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Architecture {
    /// Residual MLP.
    #[default]
    Mlp,
    /// Residual U-Net over the feature width with skip connections.
    Unet,
}

/// Configuration of a [`CondDenoiser`].
#[derive(Config, Debug)]
pub struct CondDenoiserConfig {
    /// Latent dimension (input and output width).
    pub n_latent: usize,
    /// Width of a condition vector (the number of genes: conditions are mean expressions).
    pub n_cond: usize,
    /// Hidden width (also the width of the timestep and condition embeddings).
    #[config(default = 512)]
    pub width: usize,
    /// MLP: number of hidden layers (input layer + depth − 1 residual blocks). U-Net: ignored
    /// (three levels).
    #[config(default = 3)]
    pub depth: usize,
    /// Width of the sinusoidal timestep embedding (even).
    #[config(default = 128)]
    pub time_dim: usize,
    /// Condition fusion.
    #[config(default = "Fusion::Add")]
    pub fusion: Fusion,
    /// Network body.
    #[config(default = "Architecture::Mlp")]
    pub architecture: Architecture,
    /// Tokens of the cross-attention fusion (rounded down to a divisor of `width`).
    #[config(default = 8)]
    pub attention_tokens: usize,
}

/// Residual block with an embedding input: `h + W₂ SiLU(W₁ SiLU(h) + P e)`.
#[derive(Module, Debug)]
pub struct ResBlock {
    l1: Dense,
    proj: Dense,
    l2: Dense,
}

impl ResBlock {
    fn new(width: usize, emb: usize, device: &Device) -> Self {
        Self {
            l1: DenseConfig::new(width, width).init(device),
            proj: DenseConfig::new(emb, width).init(device),
            l2: DenseConfig::new(width, width).init(device),
        }
    }

    /// # Shapes
    /// - `h`: `[batch, width]`, `e`: `[batch, emb]` → `[batch, width]`
    fn forward(&self, h: Tensor<2>, e: Tensor<2>) -> Tensor<2> {
        let a = self
            .l1
            .forward(Activation::Silu.apply(h.clone()), Activation::None)
            .add(self.proj.forward(e, Activation::None));
        h.add(self.l2.forward(Activation::Silu.apply(a), Activation::None))
    }
}

/// Single-head cross-attention between `tokens` query tokens of the hidden state and
/// `tokens` key/value tokens of the condition embedding (Vaswani et al. 2017, Eq. 1).
#[derive(Module, Debug)]
pub struct CrossAttention {
    q: Dense,
    k: Dense,
    v: Dense,
    o: Dense,
    tokens: usize,
}

impl CrossAttention {
    fn new(width: usize, tokens: usize, device: &Device) -> Self {
        Self {
            q: DenseConfig::new(width, width).init(device),
            k: DenseConfig::new(width, width).init(device),
            v: DenseConfig::new(width, width).init(device),
            o: DenseConfig::new(width, width).init(device),
            tokens,
        }
    }

    /// # Shapes
    /// - `h`: `[batch, width]`, `c`: `[batch, width]` → `[batch, width]` (the update to add)
    fn forward(&self, h: Tensor<2>, c: Tensor<2>) -> Tensor<2> {
        let [b, w] = h.dims();
        let (nt, dh) = (self.tokens, w / self.tokens);
        let q = self.q.forward(h, Activation::None).reshape([b, nt, dh]);
        let k = self
            .k
            .forward(c.clone(), Activation::None)
            .reshape([b, nt, dh]);
        let v = self.v.forward(c, Activation::None).reshape([b, nt, dh]);
        let scores = q.matmul(k.swap_dims(1, 2)).div_scalar((dh as f64).sqrt());
        let att = softmax(scores, 2).matmul(v).reshape([b, w]);
        self.o.forward(att, Activation::None)
    }
}

/// The condition-embedding MLP `Embed` of SCLD (Sec. 3.2.1): Dense + SiLU, Dense.
#[derive(Module, Debug)]
pub struct CondEmbed {
    l1: Dense,
    l2: Dense,
}

/// The conditional denoiser. Create with [`CondDenoiserConfig::init`].
#[derive(Module, Debug)]
pub struct CondDenoiser {
    embed: CondEmbed,
    time: Dense,
    input: Dense,
    attention: Option<CrossAttention>,
    /// MLP: the residual blocks; U-Net: the down blocks.
    blocks: Vec<ResBlock>,
    downs: Vec<Dense>,
    mid: Option<ResBlock>,
    ups: Vec<Dense>,
    up_blocks: Vec<ResBlock>,
    output: Dense,
    time_dim: usize,
    #[module(skip)]
    fusion: Fusion,
}

impl CondDenoiserConfig {
    /// Widths of the U-Net levels: `width, width/2, width/4` (at least 16 each).
    pub fn unet_widths(&self) -> Vec<usize> {
        vec![
            self.width,
            (self.width / 2).max(16),
            (self.width / 4).max(16),
        ]
    }

    /// Builds the network on `device`.
    pub fn init(&self, device: &Device) -> CondDenoiser {
        let w = self.width;
        let extra = if self.fusion == Fusion::Concat { w } else { 0 };
        let tokens = (1..=self.attention_tokens.max(1))
            .rev()
            .find(|t| w.is_multiple_of(*t))
            .unwrap_or(1);
        let (blocks, downs, mid, ups, up_blocks) = match self.architecture {
            Architecture::Mlp => (
                (1..self.depth.max(1))
                    .map(|_| ResBlock::new(w, w, device))
                    .collect(),
                Vec::new(),
                None,
                Vec::new(),
                Vec::new(),
            ),
            Architecture::Unet => {
                let ws = self.unet_widths();
                let last = ws.len() - 1;
                (
                    ws[..last]
                        .iter()
                        .map(|&wi| ResBlock::new(wi, w, device))
                        .collect(),
                    (0..last)
                        .map(|i| DenseConfig::new(ws[i], ws[i + 1]).init(device))
                        .collect(),
                    Some(ResBlock::new(ws[last], w, device)),
                    (0..last)
                        .map(|i| DenseConfig::new(ws[i + 1], ws[i]).init(device))
                        .collect(),
                    ws[..last]
                        .iter()
                        .map(|&wi| ResBlock::new(wi, w, device))
                        .collect(),
                )
            }
        };
        CondDenoiser {
            embed: CondEmbed {
                l1: DenseConfig::new(self.n_cond, w).init(device),
                l2: DenseConfig::new(w, w).init(device),
            },
            time: DenseConfig::new(self.time_dim, w).init(device),
            input: DenseConfig::new(self.n_latent + self.time_dim + extra, w).init(device),
            attention: (self.fusion == Fusion::Attention)
                .then(|| CrossAttention::new(w, tokens, device)),
            blocks,
            downs,
            mid,
            ups,
            up_blocks,
            output: DenseConfig::new(w, self.n_latent).init(device),
            time_dim: self.time_dim,
            fusion: self.fusion,
        }
    }
}

impl CondDenoiser {
    /// Width of the timestep embedding this network expects.
    pub fn time_dim(&self) -> usize {
        self.time_dim
    }

    /// Sinusoidal embeddings of timesteps `ts` on `device`.
    ///
    /// # Shapes
    /// output: `[ts.len(), time_dim]`
    pub fn embed_timesteps(&self, ts: &[usize], device: &Device) -> Tensor<2> {
        timestep_embedding_tensor(ts, self.time_dim, device)
    }

    /// `Embed(c)`: condition vectors to condition embeddings (SCLD Sec. 3.2.1).
    ///
    /// # Shapes
    /// - `c`: `[n_conditions, n_cond]` (mean expression in the model's expression space)
    /// - output: `[n_conditions, width]`
    pub fn embed_conditions(&self, c: Tensor<2>) -> Tensor<2> {
        let h = self.embed.l1.forward(c, Activation::Silu);
        self.embed.l2.forward(h, Activation::None)
    }

    /// Predicts ε from the noisy latent, the timestep embedding and the condition embedding.
    ///
    /// # Shapes
    /// - `z_t`: `[batch, n_latent]` (standardised latent units)
    /// - `t_emb`: `[batch, time_dim]` or `[1, time_dim]` (broadcast)
    /// - `c_emb`: `[batch, width]` (rows of [`CondDenoiser::embed_conditions`])
    /// - output: `[batch, n_latent]`
    pub fn forward(&self, z_t: Tensor<2>, t_emb: Tensor<2>, c_emb: Tensor<2>) -> Tensor<2> {
        let [b, _] = z_t.dims();
        let t_emb = if t_emb.dims()[0] == b {
            t_emb
        } else {
            t_emb.expand([b, self.time_dim])
        };
        let mut e = self.time.forward(t_emb.clone(), Activation::Silu);
        if self.fusion == Fusion::Add {
            e = e.add(c_emb.clone());
        }
        let inp = match self.fusion {
            Fusion::Concat => Tensor::cat(vec![z_t, t_emb, c_emb.clone()], 1),
            _ => Tensor::cat(vec![z_t, t_emb], 1),
        };
        let mut h = self.input.forward(inp, Activation::Silu);
        if let Some(att) = &self.attention {
            h = h.clone().add(att.forward(h, c_emb));
        }
        match &self.mid {
            None => {
                for block in &self.blocks {
                    h = block.forward(h, e.clone());
                }
            }
            Some(mid) => {
                let mut skips = Vec::with_capacity(self.downs.len());
                for (block, down) in self.blocks.iter().zip(&self.downs) {
                    h = block.forward(h, e.clone());
                    skips.push(h.clone());
                    h = down.forward(h, Activation::Silu);
                }
                h = mid.forward(h, e.clone());
                for ((up, block), skip) in self
                    .ups
                    .iter()
                    .zip(&self.up_blocks)
                    .rev()
                    .zip(skips.into_iter().rev())
                {
                    h = up.forward(h, Activation::Silu).add(skip);
                    h = block.forward(h, e.clone());
                }
            }
        }
        self.output.forward(h, Activation::None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(fusion: Fusion, arch: Architecture) {
        let device = Device::default();
        let net = CondDenoiserConfig::new(6, 10)
            .with_width(32)
            .with_time_dim(8)
            .with_fusion(fusion)
            .with_architecture(arch)
            .init(&device);
        let c = net.embed_conditions(Tensor::<2>::ones([3, 10], &device));
        assert_eq!(c.dims(), [3, 32]);
        let z = Tensor::<2>::ones([3, 6], &device);
        let out = net.forward(z.clone(), net.embed_timesteps(&[5], &device), c.clone());
        assert_eq!(out.dims(), [3, 6]);
        // The condition must change the output (it reaches the network).
        let c2 = net.embed_conditions(Tensor::<2>::zeros([3, 10], &device));
        let out2 = net.forward(z, net.embed_timesteps(&[5], &device), c2);
        let d: f32 = out.sub(out2).abs().sum().into_scalar();
        assert!(d > 1e-4, "{fusion:?}/{arch:?}: condition has no effect");
    }

    #[test]
    fn every_fusion_and_architecture_runs_and_uses_the_condition() {
        let _rng = crate::test_rng_lock();
        for f in [Fusion::Add, Fusion::Concat, Fusion::Attention] {
            for a in [Architecture::Mlp, Architecture::Unet] {
                check(f, a);
            }
        }
    }
}
