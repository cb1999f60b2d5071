#!/usr/bin/env python3
"""PyTorch reference for `celldiff bench`: the same workloads, architectures, batch sizes and
JSON keys as crates/celldiff/src/bench.rs, so the two can be reported as a ratio.

- VAE training: 2000 genes, encoder 2000 -> 512 -> 256 (Linear -> BatchNorm -> ReLU -> Dropout
  0.1), mu / logvar heads to 50, decoder 50 -> 256 -> 512 (same blocks) -> Linear 2000; loss =
  squared error summed over genes, averaged over cells, + KL; Adam lr 1e-3; batch 128; one
  warm-up epoch then one timed epoch over 16,384 synthetic cells (70 % zeros, rest U(0, 4)).
- Denoiser training: [z (50) | sinusoidal t-embedding (128)] -> Linear 512 + SiLU -> 2 residual
  blocks h + SiLU(Linear(h)) -> Linear 50; batch 256; MSE to eps; Adam; EMA 0.999 update after
  every step (diffusers-style warm-up); steps/s over 200 timed steps after 10 warm-up steps.
- Sampling: 10,000 latents, DDPM 1000 steps and DDIM 50 steps (eta 0), untrained denoiser,
  T = 1000 linear betas 1e-5 .. 5e-3.

Usage: python bench/torch_reference.py --json [--threads N] [--sample-cells N]
(`torch.set_num_threads(N)`; N defaults to the number of cores, like celldiff's --threads.)
"""
import argparse
import json
import math
import os
import time

import torch
import torch.nn as nn


def block(d_in, d_out):
    return nn.Sequential(nn.Linear(d_in, d_out), nn.BatchNorm1d(d_out), nn.ReLU(), nn.Dropout(0.1))


class Vae(nn.Module):
    def __init__(self, g=2000, hidden=(512, 256), latent=50):
        super().__init__()
        dims = [g, *hidden]
        self.enc = nn.Sequential(*[block(a, b) for a, b in zip(dims, dims[1:])])
        self.mu = nn.Linear(hidden[-1], latent)
        self.logvar = nn.Linear(hidden[-1], latent)
        rev = [latent, *reversed(hidden)]
        self.dec = nn.Sequential(*[block(a, b) for a, b in zip(rev, rev[1:])])
        self.out = nn.Linear(hidden[0], g)

    def forward(self, x, eps):
        h = self.enc(x)
        mu, logvar = self.mu(h), self.logvar(h).clamp(-10, 10)
        z = mu + torch.exp(0.5 * logvar) * eps
        return self.out(self.dec(z)), mu, logvar


class Denoiser(nn.Module):
    def __init__(self, latent=50, width=512, depth=3, time_dim=128):
        super().__init__()
        self.time_dim = time_dim
        self.inp = nn.Linear(latent + time_dim, width)
        self.blocks = nn.ModuleList([nn.Linear(width, width) for _ in range(depth - 1)])
        self.out = nn.Linear(width, latent)

    def embed(self, t):
        half = self.time_dim // 2
        w = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float64) / half)
        a = t.to(torch.float64)[:, None] * w[None]
        return torch.cat([a.sin(), a.cos()], 1).float()

    def forward(self, z, temb):
        if temb.shape[0] != z.shape[0]:
            temb = temb.expand(z.shape[0], -1)
        h = nn.functional.silu(self.inp(torch.cat([z, temb], 1)))
        for b in self.blocks:
            h = h + nn.functional.silu(b(h))
        return self.out(h)


def synthetic(n, g, gen):
    x = torch.rand(n, g, generator=gen) * 4.0
    x[torch.rand(n, g, generator=gen) < 0.7] = 0.0
    return x


def bench_vae(n=16384, g=2000, b=128):
    gen = torch.Generator().manual_seed(0)
    x = synthetic(n, g, gen)
    vae = Vae(g)
    opt = torch.optim.Adam(vae.parameters(), lr=1e-3)

    def epoch():
        vae.train()
        for s in range(0, n - b + 1, b):
            xb = x[s:s + b]
            eps = torch.randn(b, 50)
            recon, mu, logvar = vae(xb, eps)
            r = (recon - xb).pow(2).sum() / b
            k = -0.5 * (1 + logvar - mu.pow(2) - logvar.exp()).sum() / b
            loss = r + k
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

    epoch()
    t = time.perf_counter()
    epoch()
    return (n // b * b) / (time.perf_counter() - t)


class Ema:
    def __init__(self, model, decay=0.999):
        self.shadow = [p.detach().clone() for p in model.parameters()]
        self.decay, self.step = decay, 0

    @torch.no_grad()
    def update(self, model):
        k = self.step + 1
        d = min(self.decay, (1 + k) / (10 + k))
        torch._foreach_mul_(self.shadow, d)
        torch._foreach_add_(self.shadow, [p.detach() for p in model.parameters()], alpha=1 - d)
        self.step += 1


def bench_denoiser(steps=200):
    torch.manual_seed(0)
    net = Denoiser()
    ema = Ema(net)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)

    def step():
        t = torch.randint(0, 1000, (256,))
        z, eps = torch.randn(256, 50), torch.randn(256, 50)
        loss = (net(z, net.embed(t)) - eps).pow(2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        ema.update(net)

    for _ in range(10):
        step()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    return steps / (time.perf_counter() - t0)


@torch.no_grad()
def bench_sampling(n=10000):
    torch.manual_seed(0)
    net = Denoiser().eval()
    T = 1000
    betas = torch.linspace(1e-5, 5e-3, T, dtype=torch.float64)
    ac = torch.cumprod(1 - betas, 0)
    emb = net.embed(torch.arange(T))

    def ddpm():
        x = torch.randn(n, 50)
        for t in range(T - 1, -1, -1):
            eps = net(x, emb[t:t + 1])
            a_t = float(ac[t])
            a_prev = float(ac[t - 1]) if t > 0 else 1.0
            beta_t = 1 - a_t / a_prev
            x0 = (x - math.sqrt(1 - a_t) * eps) / math.sqrt(a_t)
            mean = (math.sqrt(a_prev) * beta_t / (1 - a_t)) * x0 + \
                   (math.sqrt(1 - beta_t) * (1 - a_prev) / (1 - a_t)) * x
            if t > 0:
                var = beta_t * (1 - a_prev) / (1 - a_t)
                x = mean + math.sqrt(var) * torch.randn_like(x)
            else:
                x = mean
        return x

    def ddim(k=50):
        x = torch.randn(n, 50)
        ts = list(range(0, T, T // k))[::-1]
        for i, t in enumerate(ts):
            eps = net(x, emb[t:t + 1])
            a_t = float(ac[t])
            a_prev = float(ac[ts[i + 1]]) if i + 1 < len(ts) else 1.0
            x0 = (x - math.sqrt(1 - a_t) * eps) / math.sqrt(a_t)
            x = math.sqrt(a_prev) * x0 + math.sqrt(1 - a_prev) * eps
        return x

    t0 = time.perf_counter()
    ddpm().sum().item()
    t1 = time.perf_counter()
    ddim().sum().item()
    t2 = time.perf_counter()
    return t1 - t0, t2 - t1


# Model FLOPs, the same formula as crates/celldiff/src/bench.rs: 2 FLOPs per multiply-add of
# the Linear layers, x3 for a training step (forward + backward).
VAE_MACS = 2000 * 512 + 512 * 256 + 2 * 256 * 50 + 50 * 256 + 256 * 512 + 512 * 2000
DENOISER_MACS = 178 * 512 + 2 * 512 * 512 + 512 * 50


def gflops(r, n_sample=10000):
    """GFLOP/s of each stage from its throughput."""
    g = {
        "vae_train_gflops": 6 * VAE_MACS * r["vae_train_cells_per_s"] / 1e9,
        "denoiser_train_gflops": 6 * DENOISER_MACS * 256 * r["denoiser_train_steps_per_s"] / 1e9,
    }
    for key, steps in [("sample_ddpm1000_10k_s", 1000), ("sample_ddim50_10k_s", 50)]:
        s = r[key]
        g[key.replace("_10k_s", "_gflops")] = (
            2 * DENOISER_MACS * n_sample * steps / s / 1e9 if s > 0 else 0.0)
    return g


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--skip-sampling", action="store_true")
    ap.add_argument("--sample-cells", type=int, default=10000,
                    help="latents to sample (the key names say 10k)")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    vae = bench_vae()
    den = bench_denoiser()
    ddpm, ddim = (0.0, 0.0) if a.skip_sampling else bench_sampling(a.sample_cells)
    r = {
        "vae_train_cells_per_s": vae,
        "denoiser_train_steps_per_s": den,
        "sample_ddpm1000_10k_s": ddpm,
        "sample_ddim50_10k_s": ddim,
        "threads": torch.get_num_threads(),
        "torch_version": torch.__version__,
    }
    r.update(gflops(r, a.sample_cells))
    if a.json:
        print(json.dumps(r))
    else:
        for k, v in r.items():
            print(f"{k:<28} {v}")


if __name__ == "__main__":
    main()
