//! Counts for the count-likelihood decoders: recovering integer counts from log1p-normalised
//! cells, the library-size model that generated cells draw their size from, and negative
//! binomial sampling of generated counts.
//!
//! # Counts from the model's space
//! The training loops see preprocessed cells, `x = log1p(s·y)` with `y` the counts and
//! `s = target_sum / L` (L the total over all input genes). Each cell's size factor `s` is
//! read off its own lattice ([`crate::observation::size_factor`]: the smallest non-zero value
//! is one count), so `y = expm1(x)/s` is recovered exactly, whether the input was raw counts or
//! stored log1p-normalised (Kang PBMC). The NB's library size is `l = Σ_g y_g` over the model
//! genes (scVI's observed library size).
//!
//! # Library size at generation (CFGen, Palla et al. 2025, Sec. "Library size")
//! A generated latent decides its size through its cluster: the training cells' standardised
//! latent means are clustered by k-means (k = round(√(n/5)) clamped to [1, 20], fitted on at
//! most [`KMEANS_CELLS`] of them); per cluster,
//! `(ln l, ln s)` is a bivariate normal fitted on its cells (CFGen models `ln l` per cell type
//! as `Normal(μ_c, σ_c)`; `ln s` is added so that generated cells can be normalised like real
//! ones, and the pair is correlated). A generated latent is assigned to the nearest centroid
//! and draws its pair there.
//!
//! The alternative (issue 18, option (a); `--library-model joint`): the latent diffusion
//! model diffuses the joint vector `[z, u_l, u_s]`, with `u = (ln l − mean) / sd` and
//! `(ln s − mean) / sd` standardised over the training cells ([`JointLibrary`]), so the
//! denoiser itself decides each cell's size. The clusters are still fitted (the VAE prior's
//! cells, `--prior vae`, draw their sizes from them).
//!
//! # Sampling
//! Counts `y_g ~ NB(l·ρ_g, θ_g)` as a Gamma–Poisson mixture (`λ ~ Gamma(θ, l·ρ/θ)`,
//! `y ~ Poisson(λ)`), and for ZINB zero with probability `sigmoid(π_g)`. One RNG stream per
//! cell, so the thread count does not change the result.
//!
//! No crate provides these (they are part of the generative model), hence our own code.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, Gamma, Poisson, StandardNormal};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::anndata::DenseMatrix;
use crate::error::{Error, Result};
use crate::observation::{MIN_LATTICE_FRACTION, size_factor};

/// Counts recovered from log1p-normalised cells (see the module docs).
#[derive(Debug, Clone)]
pub struct CountRows {
    /// Counts `[n_cells, n_genes]` on the model genes (non-negative integers in f32).
    pub counts: DenseMatrix,
    /// Library size `l` per cell: total count over the model genes.
    pub library: Vec<f64>,
    /// Size factor `s` per cell (normalised units of one count); `None` off every lattice
    /// (the cell's smallest value was then taken as one count).
    pub size_factor: Vec<Option<f64>>,
}

impl CountRows {
    /// Number of cells with a count lattice.
    pub fn n_on_lattice(&self) -> usize {
        self.size_factor.iter().filter(|s| s.is_some()).count()
    }
}

/// Recovers counts from log1p-normalised cells `x` (`[n_cells, n_genes]`): per cell
/// `round(expm1(x)/s)` with the cell's size factor `s`. All-zero cells get `s = None`, zero
/// counts and library 0.
pub fn recover_counts(x: &DenseMatrix) -> CountRows {
    let g = x.n_cols;
    let per_row: Vec<(Vec<f32>, f64, Option<f64>)> = (0..x.n_rows)
        .into_par_iter()
        .map(|i| {
            let row = x.row(i);
            let s = size_factor(row.iter().copied());
            let s_used = s.unwrap_or_else(|| {
                let min = row
                    .iter()
                    .copied()
                    .filter(|&v| v > 0.0)
                    .fold(f32::INFINITY, f32::min);
                if min.is_finite() {
                    (min as f64).exp_m1()
                } else {
                    1.0
                }
            });
            let mut total = 0.0;
            let counts: Vec<f32> = row
                .iter()
                .map(|&v| {
                    let k = if v > 0.0 {
                        ((v as f64).exp_m1() / s_used).round()
                    } else {
                        0.0
                    };
                    total += k;
                    k as f32
                })
                .collect();
            (counts, total, s)
        })
        .collect();
    let mut data = Vec::with_capacity(x.n_rows * g);
    let mut library = Vec::with_capacity(x.n_rows);
    let mut sf = Vec::with_capacity(x.n_rows);
    for (c, l, s) in per_row {
        data.extend(c);
        library.push(l);
        sf.push(s);
    }
    CountRows {
        counts: DenseMatrix {
            n_rows: x.n_rows,
            n_cols: g,
            data,
        },
        library,
        size_factor: sf,
    }
}

/// Checks that at least [`MIN_LATTICE_FRACTION`] of `n_cells` cells (of which `on_lattice`
/// have a count lattice) can give counts for a count likelihood.
///
/// # Errors
/// [`Error::InvalidInput`] naming the fraction found and suggesting the gaussian likelihood.
pub fn check_lattice(on_lattice: usize, n_cells: usize) -> Result<()> {
    if n_cells > 0 && (on_lattice as f64) >= MIN_LATTICE_FRACTION * n_cells as f64 {
        return Ok(());
    }
    Err(Error::InvalidInput(format!(
        "the count likelihood needs counts, but only {on_lattice} of {n_cells} cells lie on a \
         count lattice (expected raw counts or log1p(normalize_total(counts)) in X for at least \
         {:.0} % of the cells); train with the gaussian likelihood for other data",
        MIN_LATTICE_FRACTION * 100.0
    )))
}

/// One cluster of [`LibrarySizeModel`]: a bivariate normal of `(ln l, ln s)`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct LibraryCluster {
    /// Training cells in the cluster.
    pub n_cells: usize,
    /// k-means centroid of the cluster's standardised latent means, `[n_latent]`.
    pub centroid: Vec<f64>,
    /// Mean of `(ln l, ln s)`.
    pub mean: [f64; 2],
    /// Lower Cholesky factor `[L11, L21, L22]` of the covariance of `(ln l, ln s)`.
    pub chol: [f64; 3],
}

/// How generated cells get library sizes (saved as `library_size.json` in a run directory).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct LibrarySizeModel {
    /// Per-cluster bivariate normals (see the module docs).
    pub clusters: Vec<LibraryCluster>,
    /// Median over training cells of `l·s` (the decoder-mean scale, [`crate::models::Vae::decode`]).
    pub mean_scale: f64,
    /// Median training library size `l`, for the record.
    pub median_library: f64,
    /// Standardisation of `(ln l, ln s)` when the diffusion model diffuses them with the
    /// latent (`--library-model joint`); `None` for the cluster model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub joint: Option<JointLibrary>,
}

/// `(ln l, ln s)` as two extra diffused dimensions (`--library-model joint`): their training
/// mean and standard deviation, and the clip range of the standardised values (training
/// range widened by 10 % of its width on each side, as the latent's x̂₀ clipping).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct JointLibrary {
    /// Mean of `(ln l, ln s)` over the training cells with both.
    pub mean: [f64; 2],
    /// Standard deviation of `(ln l, ln s)` (at least 1e-3).
    pub sd: [f64; 2],
    /// Lower clip bound of the standardised pair.
    pub lo: [f64; 2],
    /// Upper clip bound of the standardised pair.
    pub hi: [f64; 2],
}

/// How a count-likelihood run draws generated cells' library sizes (`--library-model`).
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum LibraryModelKind {
    /// CFGen's per-cluster normal of the latent's nearest training cluster (option (b)).
    #[default]
    Cluster,
    /// Diffused with the latent as two extra dimensions (option (a)).
    Joint,
}

impl JointLibrary {
    /// Fits the standardisation on the training cells' `library` sizes and `size_factor`s
    /// (cells with `l = 0` or no `s` are left out) and returns it with the standardised pair
    /// of every cell, `[n_cells, 2]` (cells left out get 0, the mean).
    ///
    /// # Errors
    /// [`Error::InvalidInput`] if no cell has both.
    pub fn fit(library: &[f64], size_factor: &[Option<f64>]) -> Result<(Self, DenseMatrix)> {
        let pairs: Vec<Option<[f64; 2]>> = library
            .iter()
            .zip(size_factor)
            .map(|(&l, s)| match s {
                Some(s) if l > 0.0 && *s > 0.0 => Some([l.ln(), s.ln()]),
                _ => None,
            })
            .collect();
        let ok: Vec<[f64; 2]> = pairs.iter().flatten().copied().collect();
        if ok.is_empty() {
            return Err(Error::InvalidInput(
                "no training cell has counts and a size factor: cannot fit the library-size model"
                    .into(),
            ));
        }
        let n = ok.len() as f64;
        let mut mean = [0.0; 2];
        let mut sd = [0.0; 2];
        for k in 0..2 {
            mean[k] = ok.iter().map(|p| p[k]).sum::<f64>() / n;
            let var = ok.iter().map(|p| (p[k] - mean[k]).powi(2)).sum::<f64>() / n;
            sd[k] = var.sqrt().max(1e-3);
        }
        let mut u = DenseMatrix::zeros(library.len(), 2);
        for (i, p) in pairs.iter().enumerate() {
            if let Some(p) = p {
                for k in 0..2 {
                    u.data[i * 2 + k] = ((p[k] - mean[k]) / sd[k]) as f32;
                }
            }
        }
        let (mut lo, mut hi) = ([f64::INFINITY; 2], [f64::NEG_INFINITY; 2]);
        for p in &ok {
            for k in 0..2 {
                let v = (p[k] - mean[k]) / sd[k];
                lo[k] = lo[k].min(v);
                hi[k] = hi[k].max(v);
            }
        }
        for k in 0..2 {
            let w = (hi[k] - lo[k]).max(1e-3);
            lo[k] -= 0.1 * w;
            hi[k] += 0.1 * w;
        }
        Ok((Self { mean, sd, lo, hi }, u))
    }

    /// `(l, s)` of each row of standardised pairs `u` (`[n, 2]`).
    pub fn sizes(&self, u: &DenseMatrix) -> Vec<(f64, f64)> {
        (0..u.n_rows)
            .map(|i| {
                let r = u.row(i);
                let ln_l = self.mean[0] + self.sd[0] * r[0] as f64;
                let ln_s = self.mean[1] + self.sd[1] * r[1] as f64;
                (ln_l.exp(), ln_s.exp())
            })
            .collect()
    }
}

/// The median of the finite values of `v` (NaN when there are none).
pub fn median_of(v: &[f64]) -> f64 {
    let mut s: Vec<f64> = v.iter().copied().filter(|x| x.is_finite()).collect();
    if s.is_empty() {
        return f64::NAN;
    }
    s.sort_by(|a, b| a.total_cmp(b));
    let m = s.len() / 2;
    if s.len() % 2 == 1 {
        s[m]
    } else {
        0.5 * (s[m - 1] + s[m])
    }
}

/// Mean and lower Cholesky factor of the covariance of 2-vectors (with a 1e-4 ridge, so one
/// cell or equal values still give a valid normal).
fn gaussian2(pts: &[[f64; 2]]) -> ([f64; 2], [f64; 3]) {
    let n = pts.len().max(1) as f64;
    let m = [
        pts.iter().map(|p| p[0]).sum::<f64>() / n,
        pts.iter().map(|p| p[1]).sum::<f64>() / n,
    ];
    let dn = (pts.len().saturating_sub(1)).max(1) as f64;
    let (mut a, mut b, mut c) = (0.0, 0.0, 0.0);
    for p in pts {
        let (u, v) = (p[0] - m[0], p[1] - m[1]);
        a += u * u;
        b += u * v;
        c += v * v;
    }
    let (a, b, c) = (a / dn + 1e-4, b / dn, c / dn + 1e-4);
    let l11 = a.sqrt();
    let l21 = b / l11;
    let l22 = (c - l21 * l21).max(1e-8).sqrt();
    (m, [l11, l21, l22])
}

impl LibrarySizeModel {
    /// Fits the model on training cells: `z` their standardised latent means
    /// (`[n_cells, n_latent]`), `library` their library sizes `l` and `size_factor` their size
    /// factors `s` (cells with `l = 0` or no `s` are left out of the normals).
    ///
    /// # Errors
    /// [`Error::InvalidInput`] if no cell has both; k-means errors.
    pub fn fit(
        z: &DenseMatrix,
        library: &[f64],
        size_factor: &[Option<f64>],
        seed: u64,
    ) -> Result<Self> {
        let ok: Vec<usize> = (0..z.n_rows)
            .filter(|&i| library[i] > 0.0 && size_factor[i].is_some_and(|s| s > 0.0))
            .collect();
        if ok.is_empty() {
            return Err(Error::InvalidInput(
                "no training cell has counts and a size factor: cannot fit the library-size model"
                    .into(),
            ));
        }
        let pts: Vec<[f64; 2]> = ok
            .iter()
            .map(|&i| [library[i].ln(), size_factor[i].unwrap().ln()])
            .collect();
        let n = ok.len();
        let k = ((n as f64 / 5.0).sqrt().round() as usize).clamp(1, 20);
        let zs = z.select_rows(&ok);
        // k-means on at most KMEANS_CELLS cells (seeded subsample); every cell then joins its
        // nearest centroid (on 8000 brain cells the full fit took 30 s, the subsample 2 s).
        let labels = if k > 1 {
            let mut rng = StdRng::seed_from_u64(seed);
            let mut sub = rand::seq::index::sample(&mut rng, n, n.min(KMEANS_CELLS)).into_vec();
            sub.sort_unstable();
            let part = zs.select_rows(&sub);
            let lab = crate::tl::kmeans::kmeans(&part, k, 2, seed)?;
            let kk = lab.iter().copied().max().unwrap_or(0) + 1;
            let d = zs.n_cols;
            let mut cent = vec![vec![0f64; d]; kk];
            let mut cnt = vec![0usize; kk];
            for (r, &c) in lab.iter().enumerate() {
                cnt[c] += 1;
                for (a, &v) in cent[c].iter_mut().zip(part.row(r)) {
                    *a += v as f64;
                }
            }
            for (c, m) in cent.iter_mut().enumerate() {
                m.iter_mut().for_each(|a| *a /= cnt[c].max(1) as f64);
            }
            nearest(&zs, &cent)
        } else {
            vec![0; n]
        };
        let k = labels.iter().copied().max().unwrap_or(0) + 1;
        let d = z.n_cols;
        let mut clusters = Vec::with_capacity(k);
        for c in 0..k {
            let members: Vec<usize> = (0..n).filter(|&j| labels[j] == c).collect();
            if members.is_empty() {
                continue;
            }
            let mut centroid = vec![0f64; d];
            for &j in &members {
                for (a, &v) in centroid.iter_mut().zip(zs.row(j)) {
                    *a += v as f64;
                }
            }
            for a in &mut centroid {
                *a /= members.len() as f64;
            }
            let p: Vec<[f64; 2]> = members.iter().map(|&j| pts[j]).collect();
            let (mean, chol) = gaussian2(&p);
            clusters.push(LibraryCluster {
                n_cells: members.len(),
                centroid,
                mean,
                chol,
            });
        }
        let ls: Vec<f64> = ok
            .iter()
            .map(|&i| library[i] * size_factor[i].unwrap())
            .collect();
        let lib: Vec<f64> = ok.iter().map(|&i| library[i]).collect();
        Ok(Self {
            clusters,
            mean_scale: median_of(&ls),
            median_library: median_of(&lib),
            joint: None,
        })
    }

    /// Checks a model loaded from `path`: at least one cluster, every centroid `n_latent`
    /// long, every number finite, Cholesky diagonals > 0, `mean_scale > 0`.
    ///
    /// # Errors
    /// [`Error::Format`] naming `path` and the field.
    pub fn check(&self, path: &std::path::Path, n_latent: usize) -> Result<()> {
        if self.clusters.is_empty() {
            return Err(Error::format(
                path,
                "clusters",
                "empty: expected at least one cluster",
            ));
        }
        for (i, c) in self.clusters.iter().enumerate() {
            if c.centroid.len() != n_latent {
                return Err(Error::format(
                    path,
                    format!("clusters[{i}].centroid"),
                    format!(
                        "{} values, expected n_latent = {n_latent}",
                        c.centroid.len()
                    ),
                ));
            }
            let finite = c
                .centroid
                .iter()
                .chain(&c.mean)
                .chain(&c.chol)
                .all(|v| v.is_finite());
            if !finite || c.chol[0] <= 0.0 || c.chol[2] <= 0.0 {
                return Err(Error::format(
                    path,
                    format!("clusters[{i}]"),
                    "expected finite numbers and a Cholesky factor with a positive diagonal",
                ));
            }
        }
        if let Some(j) = &self.joint {
            let finite = j.mean.iter().chain(&j.sd).chain(&j.lo).chain(&j.hi);
            if !finite.clone().all(|v| v.is_finite()) || j.sd.iter().any(|&v| v <= 0.0) {
                return Err(Error::format(
                    path,
                    "joint",
                    "expected finite numbers and standard deviations > 0",
                ));
            }
        }
        if !(self.mean_scale.is_finite() && self.mean_scale > 0.0) {
            return Err(Error::format(
                path,
                "mean_scale",
                format!("{}, expected a finite number > 0", self.mean_scale),
            ));
        }
        Ok(())
    }

    /// The nearest cluster (squared Euclidean distance to the centroids) of each row of `z`
    /// (`[n, n_latent]`, standardised latents).
    pub fn assign(&self, z: &DenseMatrix) -> Vec<usize> {
        let cent: Vec<Vec<f64>> = self.clusters.iter().map(|c| c.centroid.clone()).collect();
        nearest(z, &cent)
    }

    /// Draws `(l, s)` for each row of `z` (`[n, n_latent]`, standardised latents) from its
    /// nearest cluster's normal. Deterministic given `seed`.
    pub fn sample(&self, z: &DenseMatrix, seed: u64) -> Vec<(f64, f64)> {
        let labels = self.assign(z);
        labels
            .iter()
            .enumerate()
            .map(|(i, &c)| {
                let mut rng =
                    StdRng::seed_from_u64(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ i as u64);
                let (e1, e2): (f64, f64) = (rng.sample(StandardNormal), rng.sample(StandardNormal));
                let cl = &self.clusters[c];
                let ln_l = cl.mean[0] + cl.chol[0] * e1;
                let ln_s = cl.mean[1] + cl.chol[1] * e1 + cl.chol[2] * e2;
                (ln_l.exp(), ln_s.exp())
            })
            .collect()
    }
}

/// Cells the library-size model's k-means is fitted on (a seeded subsample of larger sets).
pub const KMEANS_CELLS: usize = 2000;

/// Index of the nearest of `centroids` (squared Euclidean distance) for each row of `z`.
fn nearest(z: &DenseMatrix, centroids: &[Vec<f64>]) -> Vec<usize> {
    (0..z.n_rows)
        .into_par_iter()
        .map(|i| {
            let row = z.row(i);
            let mut best = (f64::INFINITY, 0);
            for (c, m) in centroids.iter().enumerate() {
                let d: f64 = m
                    .iter()
                    .zip(row)
                    .map(|(a, &b)| (a - b as f64).powi(2))
                    .sum();
                if d < best.0 {
                    best = (d, c);
                }
            }
            best.1
        })
        .collect()
}

/// One NB (or ZINB, `p_zero > 0`) draw with mean `mu` and inverse dispersion `theta`.
fn draw_nb(rng: &mut StdRng, mu: f64, theta: f64, p_zero: f64) -> f64 {
    if mu <= 0.0 || (p_zero > 0.0 && rng.random::<f64>() < p_zero) {
        return 0.0;
    }
    let rate = match Gamma::new(theta, mu / theta) {
        Ok(g) => g.sample(rng),
        Err(_) => mu,
    };
    if rate.is_nan() || rate <= 0.0 {
        return 0.0;
    }
    match Poisson::new(rate) {
        Ok(p) => p.sample(rng),
        Err(_) => rate.round(),
    }
}

/// Draws counts `[n, n_genes]` from the count decoder's output: `log_rho` the log gene
/// proportions (`[n, n_genes]`, log-softmax of the logits), `theta` the inverse dispersions
/// (`[n_genes]`), `dropout` the ZINB dropout logits (`[n, n_genes]`) if any, `library` one
/// library size per cell. Deterministic given `seed` (one stream per cell).
pub fn sample_counts(
    log_rho: &DenseMatrix,
    theta: &[f64],
    dropout: Option<&DenseMatrix>,
    library: &[f64],
    seed: u64,
) -> DenseMatrix {
    let g = log_rho.n_cols;
    let mut out = DenseMatrix::zeros(log_rho.n_rows, g);
    out.data
        .par_chunks_mut(g.max(1))
        .enumerate()
        .for_each(|(i, row)| {
            let mut rng =
                StdRng::seed_from_u64(seed.wrapping_mul(0x2545_f491_4f6c_dd1d) ^ ((i as u64) << 1));
            let lr = log_rho.row(i);
            for j in 0..g {
                let mu = library[i] * (lr[j] as f64).exp();
                let p0 = dropout.map_or(0.0, |d| 1.0 / (1.0 + (-(d.row(i)[j] as f64)).exp()));
                row[j] = draw_nb(&mut rng, mu, theta[j], p0) as f32;
            }
        });
    out
}

/// Maximum-likelihood ln θ_g per gene given the NB means: for every gene, the ln θ in
/// [−12, 12] maximising `Σ_i log NB(y_ig | μ_ig, θ)` (golden-section search, 60 steps, on the
/// terms that depend on θ: `θ ln θ − (θ + y) ln(θ + μ) + lgamma(y + θ) − lgamma(θ)`).
///
/// # Shapes
/// `counts`, `mu`: `[n_cells, n_genes]` (counts and NB means); returns `[n_genes]`.
pub fn fit_log_theta(counts: &DenseMatrix, mu: &DenseMatrix) -> Vec<f64> {
    let (n, g) = (counts.n_rows, counts.n_cols);
    (0..g)
        .into_par_iter()
        .map(|j| {
            let col: Vec<(f64, f64)> = (0..n)
                .map(|i| (counts.row(i)[j] as f64, (mu.row(i)[j] as f64).max(1e-12)))
                .collect();
            let ll = |lt: f64| -> f64 {
                let th = lt.exp();
                let lg_th = libm::lgamma(th);
                col.iter()
                    .map(|&(y, m)| {
                        let base = th * lt - (th + y) * (th + m).ln();
                        if y > 0.0 {
                            base + libm::lgamma(y + th) - lg_th
                        } else {
                            base
                        }
                    })
                    .sum()
            };
            let (mut a, mut b) = (-12.0f64, 12.0f64);
            let r = 0.618_033_988_749_894_8;
            let mut c = b - r * (b - a);
            let mut d = a + r * (b - a);
            let (mut fc, mut fd) = (ll(c), ll(d));
            for _ in 0..60 {
                if fc > fd {
                    b = d;
                    d = c;
                    fd = fc;
                    c = b - r * (b - a);
                    fc = ll(c);
                } else {
                    a = c;
                    c = d;
                    fc = fd;
                    d = a + r * (b - a);
                    fd = ll(d);
                }
            }
            0.5 * (a + b)
        })
        .collect()
}

/// `log1p(y·s)` per cell: counts `[n, n_genes]` into the model's log1p-normalised space with
/// one size factor per cell.
pub fn log1p_normalise(counts: &DenseMatrix, size_factor: &[f64]) -> DenseMatrix {
    let mut out = counts.clone();
    let g = out.n_cols.max(1);
    out.data
        .par_chunks_mut(g)
        .zip(size_factor.par_iter())
        .for_each(|(row, &s)| {
            for v in row {
                *v = ((*v as f64) * s).ln_1p() as f32;
            }
        });
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn joint_library_standardises_and_inverts() {
        let library = [100.0, 400.0, 0.0, 1600.0, 800.0];
        let sf = [Some(10.0), Some(2.5), Some(1.0), None, Some(1.25)];
        let (j, u) = JointLibrary::fit(&library, &sf).unwrap();
        // Cells 0, 1, 4 have both: their standardised columns have mean 0 and sd 1.
        for k in 0..2 {
            let v: Vec<f64> = [0, 1, 4].iter().map(|&i| u.row(i)[k] as f64).collect();
            let m = v.iter().sum::<f64>() / 3.0;
            let sd = (v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / 3.0).sqrt();
            assert!(
                m.abs() < 1e-6 && (sd - 1.0).abs() < 1e-5,
                "column {k}: {m} {sd}"
            );
            assert!(j.lo[k] < j.hi[k]);
        }
        // Cells left out sit at the mean; `sizes` inverts the standardisation.
        assert_eq!(u.row(2), &[0.0, 0.0]);
        assert_eq!(u.row(3), &[0.0, 0.0]);
        let back = j.sizes(&u.select_rows(&[0, 1, 4]));
        for (b, (l, s)) in back
            .iter()
            .zip([(100.0, 10.0), (400.0, 2.5), (800.0, 1.25)])
        {
            assert!(
                (b.0 / l - 1.0).abs() < 1e-5 && (b.1 / s - 1.0).abs() < 1e-5,
                "{b:?}"
            );
        }
        assert!(JointLibrary::fit(&[0.0], &[None]).is_err());
    }

    #[test]
    fn counts_are_recovered_from_log1p_normalised_cells() {
        let counts = [[0.0f32, 1.0, 3.0, 0.0, 7.0], [2.0, 0.0, 5.0, 1.0, 0.0]];
        let lib_all = [40.0f64, 25.0];
        let mut data = Vec::new();
        for (r, l) in counts.iter().zip(lib_all) {
            let s = 1e4 / l;
            data.extend(r.iter().map(|&k| ((k as f64) * s).ln_1p() as f32));
        }
        let x = DenseMatrix::from_vec(2, 5, data).unwrap();
        let got = recover_counts(&x);
        assert_eq!(got.counts.data, counts.concat());
        assert_eq!(got.library, vec![11.0, 8.0]);
        assert!((got.size_factor[0].unwrap() - 250.0).abs() < 0.1);
        assert!((got.size_factor[1].unwrap() - 400.0).abs() < 0.1);
        assert_eq!(got.n_on_lattice(), 2);
        assert!(check_lattice(2, 2).is_ok());
        let err = check_lattice(1, 2).unwrap_err().to_string();
        assert!(err.contains("gaussian likelihood"), "{err}");
    }

    #[test]
    fn nb_draws_have_the_nb_mean_and_variance() {
        // Var[NB(μ, θ)] = μ + μ²/θ.
        let n = 20_000;
        let (mu, theta) = (6.0f64, 2.0f64);
        let log_rho = DenseMatrix::from_vec(n, 1, vec![0.0; n]).unwrap();
        let lib = vec![mu; n];
        let y = sample_counts(&log_rho, &[theta], None, &lib, 3);
        let m = y.data.iter().map(|&v| v as f64).sum::<f64>() / n as f64;
        let v = y.data.iter().map(|&v| (v as f64 - m).powi(2)).sum::<f64>() / (n - 1) as f64;
        assert!((m - mu).abs() < 0.1, "mean {m}");
        assert!((v - (mu + mu * mu / theta)).abs() < 1.0, "variance {v}");
        // Same seed, same counts; ZINB with π = +∞ gives zeros.
        assert_eq!(
            y.data,
            sample_counts(&log_rho, &[theta], None, &lib, 3).data
        );
        let pi = DenseMatrix::from_vec(n, 1, vec![50.0; n]).unwrap();
        let z = sample_counts(&log_rho, &[theta], Some(&pi), &lib, 3);
        assert!(z.data.iter().all(|&v| v == 0.0));
    }

    #[test]
    fn fitted_dispersion_recovers_the_one_that_made_the_counts() {
        // NB counts with known means and θ = 0.5 (gene 0) and 20 (gene 1).
        let n = 4000;
        let mut rng = StdRng::seed_from_u64(2);
        let mut mu = Vec::new();
        for _ in 0..n {
            let m: f64 = rng.random_range(1.0..50.0);
            mu.extend([m as f32, m as f32]);
        }
        let mu = DenseMatrix::from_vec(n, 2, mu).unwrap();
        let mut counts = DenseMatrix::zeros(n, 2);
        for i in 0..n {
            for (j, th) in [0.5, 20.0].into_iter().enumerate() {
                counts.row_mut(i)[j] = draw_nb(&mut rng, mu.row(i)[j] as f64, th, 0.0) as f32;
            }
        }
        let lt = fit_log_theta(&counts, &mu);
        assert!((lt[0].exp() - 0.5).abs() < 0.05, "θ0 = {}", lt[0].exp());
        assert!((lt[1].exp() - 20.0).abs() < 4.0, "θ1 = {}", lt[1].exp());
    }

    #[test]
    fn library_model_follows_the_cluster_of_the_latent() {
        // Two latent clusters with libraries around 100 and 5000.
        let n = 400;
        let mut z = Vec::new();
        let mut lib = Vec::new();
        let mut sf = Vec::new();
        let mut rng = StdRng::seed_from_u64(1);
        for i in 0..n {
            let c = i % 2;
            let x: f64 = rng.sample(StandardNormal);
            z.extend([c as f32 * 10.0 + 0.1 * x as f32, 0.1 * x as f32]);
            let l = if c == 0 { 100.0 } else { 5000.0 } * (0.2 * x).exp();
            lib.push(l);
            sf.push(Some(1e4 / (2.0 * l)));
        }
        let z = DenseMatrix::from_vec(n, 2, z).unwrap();
        let m = LibrarySizeModel::fit(&z, &lib, &sf, 0).unwrap();
        m.check(std::path::Path::new("x"), 2).unwrap();
        assert!(
            (m.mean_scale - 5000.0).abs() < 1.0,
            "l·s = 5000 for every cell"
        );
        let q = DenseMatrix::from_vec(2, 2, vec![0.0, 0.0, 10.0, 0.0]).unwrap();
        let mut small = Vec::new();
        let mut big = Vec::new();
        for seed in 0..200 {
            let d = m.sample(&q, seed);
            small.push(d[0].0.ln());
            big.push(d[1].0.ln());
        }
        let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
        assert!((mean(&small) - 100f64.ln()).abs() < 0.1, "{}", mean(&small));
        assert!((mean(&big) - 5000f64.ln()).abs() < 0.1, "{}", mean(&big));
    }
}
