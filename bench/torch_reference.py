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
       [--vae-cells N] [--denoiser-steps N] [--vae-batch N] [--denoiser-batch N]
       [--device cpu|cuda] [--data host|device]
(`torch.set_num_threads(N)`; N defaults to the number of cores, like celldiff's --threads.
--vae-cells / --denoiser-steps / --sample-cells / --vae-batch / --denoiser-batch /
--skip-sampling are `celldiff bench`'s flags of the same names; the batches default to 128 and
256 as there.)

--device cuda runs every model and tensor on torch.device("cuda") and calls
torch.cuda.synchronize() before every timer read. --data host (the default) mirrors
`celldiff bench` (crates/celldiff/src/bench.rs): the VAE matrix, the reparameterisation noise,
the denoiser's inputs (t, z, eps and the t-embedding) and the samplers' noise are drawn on the
host and copied to the device for every minibatch / step. --data device is idiomatic PyTorch
instead: the VAE matrix is copied to the GPU once and every random draw is made there. On
--device cuda the JSON also holds "device", "device_name", "data", "tf32", the sizes and
batches and "max_memory_allocated_mib"; the CPU output keeps exactly the keys it always had
(plus "vae_batch" and "denoiser_batch", as `celldiff bench` prints them).
"""
import argparse
import json
import math
import os
import time

import torch
import torch.nn as nn

CPU = torch.device("cpu")


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
        w = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float64,
                                                        device=t.device) / half)
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


def sync(dev):
    """Waits for the device's queued work (a no-op on the CPU): call before every timer read."""
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def bench_vae(n=16384, g=2000, b=128, dev=CPU, on_device=False):
    gen = torch.Generator().manual_seed(0)
    x = synthetic(n, g, gen)
    if on_device:
        x = x.to(dev)
    vae = Vae(g).to(dev)
    opt = torch.optim.Adam(vae.parameters(), lr=1e-3)

    def epoch():
        vae.train()
        for s in range(0, n - b + 1, b):
            if on_device:
                xb = x[s:s + b]
                eps = torch.randn(b, 50, device=dev)
            else:
                # As bench.rs: the minibatch and the noise are host data, copied every step.
                xb = x[s:s + b].to(dev)
                eps = torch.randn(b, 50).to(dev)
            recon, mu, logvar = vae(xb, eps)
            r = (recon - xb).pow(2).sum() / b
            k = -0.5 * (1 + logvar - mu.pow(2) - logvar.exp()).sum() / b
            loss = r + k
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

    epoch()
    sync(dev)
    t = time.perf_counter()
    epoch()
    sync(dev)
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


def bench_denoiser(steps=200, dev=CPU, on_device=False, bs=256):
    torch.manual_seed(0)
    net = Denoiser().to(dev)
    ema = Ema(net)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)

    def step():
        if on_device:
            t = torch.randint(0, 1000, (bs,), device=dev)
            z, eps = torch.randn(bs, 50, device=dev), torch.randn(bs, 50, device=dev)
            temb = net.embed(t)
        else:
            # As bench.rs: t, z, eps and the t-embedding made on the host, copied every step
            # (a no-op copy on the CPU).
            t = torch.randint(0, 1000, (bs,))
            z, eps = torch.randn(bs, 50), torch.randn(bs, 50)
            temb = net.embed(t)
            z, eps, temb = z.to(dev), eps.to(dev), temb.to(dev)
        loss = (net(z, temb) - eps).pow(2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        ema.update(net)

    for _ in range(10):
        step()
    sync(dev)
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    sync(dev)
    return steps / (time.perf_counter() - t0)


@torch.no_grad()
def bench_sampling(n=10000, dev=CPU, on_device=False):
    torch.manual_seed(0)
    net = Denoiser().eval().to(dev)
    T = 1000
    betas = torch.linspace(1e-5, 5e-3, T, dtype=torch.float64)
    ac = torch.cumprod(1 - betas, 0)
    emb = net.embed(torch.arange(T))
    if on_device:
        emb = emb.to(dev)

    def randn(*shape):
        # --data host: drawn on the host and copied every step, as celldiff's NoiseSource.
        return torch.randn(*shape, device=dev) if on_device else torch.randn(*shape).to(dev)

    def ddpm():
        x = randn(n, 50)
        for t in range(T - 1, -1, -1):
            eps = net(x, emb[t:t + 1].to(dev))
            a_t = float(ac[t])
            a_prev = float(ac[t - 1]) if t > 0 else 1.0
            beta_t = 1 - a_t / a_prev
            x0 = (x - math.sqrt(1 - a_t) * eps) / math.sqrt(a_t)
            mean = (math.sqrt(a_prev) * beta_t / (1 - a_t)) * x0 + \
                   (math.sqrt(1 - beta_t) * (1 - a_prev) / (1 - a_t)) * x
            if t > 0:
                var = beta_t * (1 - a_prev) / (1 - a_t)
                x = mean + math.sqrt(var) * randn(n, 50)
            else:
                x = mean
        return x

    def ddim(k=50):
        x = randn(n, 50)
        ts = list(range(0, T, T // k))[::-1]
        for i, t in enumerate(ts):
            eps = net(x, emb[t:t + 1].to(dev))
            a_t = float(ac[t])
            a_prev = float(ac[ts[i + 1]]) if i + 1 < len(ts) else 1.0
            x0 = (x - math.sqrt(1 - a_t) * eps) / math.sqrt(a_t)
            x = math.sqrt(a_prev) * x0 + math.sqrt(1 - a_prev) * eps
        return x

    ddim(2).sum().item()  # warm-up at the timed shape, as celldiff bench
    sync(dev)
    t0 = time.perf_counter()
    ddpm().sum().item()
    sync(dev)
    t1 = time.perf_counter()
    ddim().sum().item()
    sync(dev)
    t2 = time.perf_counter()
    return t1 - t0, t2 - t1


# Model FLOPs, the same formula as crates/celldiff/src/bench.rs: 2 FLOPs per multiply-add of
# the Linear layers, x3 for a training step (forward + backward).
VAE_MACS = 2000 * 512 + 512 * 256 + 2 * 256 * 50 + 50 * 256 + 256 * 512 + 512 * 2000
DENOISER_MACS = 178 * 512 + 2 * 512 * 512 + 512 * 50


def gflops(r, n_sample=10000, denoiser_batch=256):
    """GFLOP/s of each stage from its throughput."""
    g = {
        "vae_train_gflops": 6 * VAE_MACS * r["vae_train_cells_per_s"] / 1e9,
        "denoiser_train_gflops":
            6 * DENOISER_MACS * denoiser_batch * r["denoiser_train_steps_per_s"] / 1e9,
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
    ap.add_argument("--vae-cells", type=int, default=16384,
                    help="cells in the synthetic VAE training matrix (celldiff bench --vae-cells)")
    ap.add_argument("--denoiser-steps", type=int, default=200,
                    help="timed denoiser steps (celldiff bench --denoiser-steps)")
    ap.add_argument("--vae-batch", type=int, default=128,
                    help="VAE minibatch (celldiff bench --vae-batch)")
    ap.add_argument("--denoiser-batch", type=int, default=256,
                    help="denoiser minibatch (celldiff bench --denoiser-batch)")
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    ap.add_argument("--data", choices=["host", "device"], default="host",
                    help="host: minibatches and noise drawn on the host and copied every step, "
                         "as celldiff bench; device: drawn on the device (idiomatic PyTorch)")
    a = ap.parse_args()
    if a.vae_cells < 2 or min(a.denoiser_steps, a.sample_cells, a.vae_batch, a.denoiser_batch) < 1:
        ap.error("--vae-cells must be >= 2; --denoiser-steps, --sample-cells and the batches >= 1")
    if a.device == "cuda" and not torch.cuda.is_available():
        ap.error("--device cuda: torch.cuda.is_available() is False")
    torch.set_num_threads(a.threads)
    dev = torch.device(a.device)
    on_device = a.data == "device"
    # As `celldiff bench`: at least 256 cells, a batch of at most all of them.
    n_vae = max(a.vae_cells, 256)
    vae_batch = min(a.vae_batch, n_vae)
    vae = bench_vae(n=n_vae, b=vae_batch, dev=dev, on_device=on_device)
    den = bench_denoiser(steps=a.denoiser_steps, dev=dev, on_device=on_device,
                         bs=a.denoiser_batch)
    ddpm, ddim = (0.0, 0.0) if a.skip_sampling else bench_sampling(
        a.sample_cells, dev=dev, on_device=on_device)
    r = {
        "vae_train_cells_per_s": vae,
        "denoiser_train_steps_per_s": den,
        "sample_ddpm1000_10k_s": ddpm,
        "sample_ddim50_10k_s": ddim,
        "threads": torch.get_num_threads(),
        "torch_version": torch.__version__,
    }
    r.update(gflops(r, a.sample_cells, a.denoiser_batch))
    r.update({"vae_batch": vae_batch, "denoiser_batch": a.denoiser_batch})
    if dev.type == "cuda":
        r.update({
            "device": a.device,
            "device_name": torch.cuda.get_device_name(dev),
            "data": a.data,
            "tf32": torch.backends.cuda.matmul.allow_tf32,
            "vae_cells": n_vae,
            "denoiser_steps": a.denoiser_steps,
            "sample_cells": a.sample_cells,
            "max_memory_allocated_mib": torch.cuda.max_memory_allocated(dev) / 2**20,
        })
    if a.json:
        print(json.dumps(r))
    else:
        for k, v in r.items():
            print(f"{k:<28} {v}")


if __name__ == "__main__":
    main()
