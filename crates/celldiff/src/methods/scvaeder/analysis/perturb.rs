//! Perturbation prediction by latent vector arithmetic: scGen (Lotfollahi, Wolf & Theis,
//! Nat. Methods 2019) in the VAE latent space, and scVAEDer's version in the diffusion prior
//! space (Sadria & Layton, Genome Biology 2025, "predicts perturbation responses", Fig. 4);
//! `celldiff perturb` and `celldiff evaluate-perturbation`.
//!
//! **δ, as scGen's `predict` computes it.** The cells the model may see are all cells but the
//! target type's stimulated ones. Among them, the control cells and the stimulated cells are
//! each balanced by cell type (every type resampled with replacement to the size of the
//! largest, scGen `balancer`), then the same number `eq = min(n_ctrl, n_stim)` is drawn from
//! each without replacement; δ = mean(z_stim) − mean(z_ctrl) of the posterior means.
//!
//! - `Space::Vae` (scGen): prediction = decoder(z_ctrl(target) + δ).
//! - `Space::Diffusion` (scVAEDer): every cell's standardised latent is mapped to the prior at
//!   timestep K (deterministic DDIM inversion by default, or the stochastic forward process),
//!   δ_K is computed there from the same cells, and the target's control cells
//!   q_K + δ_K are taken back to t = 0 by the reverse process, then decoded.
//!
//! **Evaluation** ([`evaluate_perturbation`]): scGen's `reg_mean_plot` / `reg_var_plot`:
//! R² = `scipy.stats.linregress(real, pred).rvalue²` of the per-gene means (variances) of the
//! real stimulated vs predicted cells, over all genes and over the top-100 DEGs (Wilcoxon,
//! stimulated vs control of the target type, [`super::de`]).

use burn::prelude::*;
use burn::tensor::{Int, TensorData};
use rand::rngs::StdRng;
use rand::seq::index::sample;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

use super::interpolate::json_f64;
use super::{
    Encoding, PriorSpace, ReverseNoise, decode_standardized, mean_row, standardized_latents,
};
use crate::anndata::{AnnData, Column, DenseMatrix};
use crate::error::{Error, Result};
use crate::metrics::pearson;
use crate::pipeline::SamplerKind;
use crate::scvaeder::Run;
use crate::scvaeder::analysis::de::rank_genes;
use crate::train::to_host;

/// Where δ is added.
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Space {
    /// VAE latent (scGen).
    Vae,
    /// Diffusion prior at timestep K (scVAEDer).
    Diffusion,
}

/// Options of [`predict`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PerturbOptions {
    /// `obs` column of the condition.
    pub condition_key: String,
    /// Control value of `condition_key`.
    pub control: String,
    /// Stimulated value.
    pub stimulated: String,
    /// `obs` column of the cell type.
    pub celltype_key: String,
    /// Cell type whose stimulated response is predicted.
    pub predict: String,
    /// VAE or diffusion space.
    pub space: Space,
    /// K ∈ 1..=T of the diffusion space (None = T).
    pub t_start: Option<usize>,
    /// z₀ → z_K map (default: DDIM inversion).
    pub encoding: Encoding,
    /// Reverse sampler of the diffusion space.
    pub sampler: SamplerKind,
    /// Sampler steps (None: T for DDPM, 50 for DDIM).
    pub steps: Option<usize>,
    /// DDIM η.
    pub eta: f64,
    /// Clip x̂₀ to the training latents' range.
    pub clip_x0: bool,
    /// Cap on the cells drawn per condition for δ (None = scGen's eq).
    pub max_delta_cells: Option<usize>,
    /// Seed of the balancing draws and of any noise.
    pub seed: u64,
}

impl Default for PerturbOptions {
    fn default() -> Self {
        Self {
            condition_key: "condition".into(),
            control: "control".into(),
            stimulated: "stimulated".into(),
            celltype_key: "cell_type".into(),
            predict: String::new(),
            space: Space::Diffusion,
            t_start: None,
            encoding: Encoding::Ddim,
            sampler: SamplerKind::Ddim,
            steps: None,
            eta: 0.0,
            clip_x0: true,
            max_delta_cells: None,
            seed: 0,
        }
    }
}

/// What [`predict`] returns.
#[derive(Debug, Clone)]
pub struct Prediction {
    /// Predicted stimulated cells, one per control cell of the target type: X
    /// `[n_target_control, n_genes]` decoder means in the model's space (e.g. log1p HVGs);
    /// `obs[condition_key] = "predicted"`, `obs[celltype_key] = predict`;
    /// `uns['celldiff_perturbation']`.
    pub adata: AnnData,
    /// The target type's control cells in the model's space `[n_target_control, n_genes]`.
    pub control: DenseMatrix,
    /// The target type's real stimulated cells in the model's space (empty when the data
    /// hold none).
    pub real_stimulated: DenseMatrix,
    /// Cells drawn per condition for δ.
    pub n_delta_cells: usize,
    /// ‖δ‖ in the space it was computed in.
    pub delta_norm: f64,
    /// Timestep of the diffusion space (None for the VAE space).
    pub timestep: Option<usize>,
}

/// scGen `balancer`: for each cell type of `idx`, `max` draws with replacement from its
/// cells, where `max` is the size of the largest type. Types in sorted order.
fn balance(idx: &[usize], types: &[String], rng: &mut StdRng) -> Vec<usize> {
    let mut names: Vec<&str> = idx.iter().map(|&i| types[i].as_str()).collect();
    names.sort_unstable();
    names.dedup();
    let groups: Vec<Vec<usize>> = names
        .iter()
        .map(|n| idx.iter().copied().filter(|&i| types[i] == *n).collect())
        .collect();
    let max = groups.iter().map(Vec::len).max().unwrap_or(0);
    let mut out = Vec::with_capacity(max * groups.len());
    for g in &groups {
        for _ in 0..max {
            out.push(g[rng.random_range(0..g.len())]);
        }
    }
    out
}

fn gather(z: &Tensor<2>, idx: &[usize], device: &Device) -> Tensor<2> {
    let ids: Vec<i64> = idx.iter().map(|&i| i as i64).collect();
    let ids = Tensor::<1, Int>::from_data(TensorData::new(ids, [idx.len()]), device);
    z.clone().select(0, ids)
}

/// Predicts the stimulated response of `opts.predict` from its control cells.
///
/// `adata` is in the run's input space (the run's preprocessing is applied). Its stimulated
/// cells of the target type, if any, are never used for the prediction (only returned as
/// [`Prediction::real_stimulated`] for evaluation).
///
/// # Errors
/// [`Error::InvalidInput`] for unknown keys or values, a target without control cells, no
/// stimulated cells of other types; [`Error::Param`] for bad diffusion settings.
pub fn predict(
    run: &Run,
    adata: &AnnData,
    opts: &PerturbOptions,
    device: &Device,
) -> Result<Prediction> {
    let cond = adata.obs_column(&opts.condition_key)?.labels();
    let types = adata.obs_column(&opts.celltype_key)?.labels();
    let has = |col: &[String], v: &str| col.iter().any(|c| c == v);
    for (col, key, v) in [
        (&cond, &opts.condition_key, &opts.control),
        (&cond, &opts.condition_key, &opts.stimulated),
        (&types, &opts.celltype_key, &opts.predict),
    ] {
        if !has(col, v) {
            let mut vals = col.clone();
            vals.sort();
            vals.dedup();
            return Err(Error::InvalidInput(format!(
                "obs['{key}'] has no cell equal to `{v}` (values: {})",
                vals.join(", ")
            )));
        }
    }
    let n = adata.n_obs();
    let is_target = |i: usize| types[i] == opts.predict;
    let target_ctrl: Vec<usize> = (0..n)
        .filter(|&i| is_target(i) && cond[i] == opts.control)
        .collect();
    let target_stim: Vec<usize> = (0..n)
        .filter(|&i| is_target(i) && cond[i] == opts.stimulated)
        .collect();
    if target_ctrl.is_empty() {
        return Err(Error::InvalidInput(format!(
            "no `{}` cells of `{}` to predict from (obs['{}'] × obs['{}'])",
            opts.control, opts.predict, opts.condition_key, opts.celltype_key
        )));
    }
    // What scGen's model may see: everything but the target's stimulated cells.
    let ctrl: Vec<usize> = (0..n).filter(|&i| cond[i] == opts.control).collect();
    let stim: Vec<usize> = (0..n)
        .filter(|&i| cond[i] == opts.stimulated && !is_target(i))
        .collect();
    if stim.is_empty() {
        return Err(Error::InvalidInput(format!(
            "no `{}` cells of any other cell type than `{}`: δ cannot be computed",
            opts.stimulated, opts.predict
        )));
    }
    let mut rng = StdRng::seed_from_u64(opts.seed);
    let ctrl_b = balance(&ctrl, &types, &mut rng);
    let stim_b = balance(&stim, &types, &mut rng);
    let mut eq = ctrl_b.len().min(stim_b.len());
    if let Some(m) = opts.max_delta_cells {
        eq = eq.min(m.max(1));
    }
    let ctrl_sel: Vec<usize> = sample(&mut rng, ctrl_b.len(), eq)
        .into_iter()
        .map(|k| ctrl_b[k])
        .collect();
    let stim_sel: Vec<usize> = sample(&mut rng, stim_b.len(), eq)
        .into_iter()
        .map(|k| stim_b[k])
        .collect();

    let pp = run.preprocess.transform(adata)?;
    let z = standardized_latents(run, &pp.x, device)?;
    let (z_pred, delta_norm, timestep) = match opts.space {
        Space::Vae => {
            let delta = mean_row(gather(&z, &stim_sel, device))
                .sub(mean_row(gather(&z, &ctrl_sel, device)));
            let norm = norm_of(delta.clone())?;
            let zc = gather(&z, &target_ctrl, device);
            let [m, d] = zc.dims();
            (zc.add(delta.expand([m, d])), norm, None)
        }
        Space::Diffusion => {
            let space = PriorSpace::new(
                run,
                opts.sampler,
                opts.steps,
                opts.eta,
                opts.t_start,
                opts.clip_x0,
                device,
            )?;
            let q = space.encode(z, opts.encoding, opts.seed ^ 0xf0)?;
            let delta = mean_row(gather(&q, &stim_sel, device))
                .sub(mean_row(gather(&q, &ctrl_sel, device)));
            let norm = norm_of(delta.clone())?;
            let qc = gather(&q, &target_ctrl, device);
            let [m, d] = qc.dims();
            let qk = qc.add(delta.expand([m, d]));
            let z0 = space.reverse(
                qk,
                ReverseNoise::Independent,
                opts.seed ^ 0x5eed,
                &mut |_, _| {},
            );
            (z0, norm, Some((space.timestep(), space.flow_level())))
        }
    };
    let x = decode_standardized(run, z_pred)?;
    let control = pp.x.rows_dense(&target_ctrl);
    let real_stimulated = pp.x.rows_dense(&target_stim);
    let m = target_ctrl.len();
    let mut out = AnnData::new(crate::anndata::Matrix::Dense(x), run.genes.clone());
    out.obs_names = target_ctrl
        .iter()
        .map(|&i| format!("pred-{}", adata.obs_names[i]))
        .collect();
    out.set_obs(
        &opts.condition_key,
        Column::Categorical {
            codes: vec![0; m],
            categories: vec!["predicted".into()],
        },
    );
    out.set_obs(
        &opts.celltype_key,
        Column::Categorical {
            codes: vec![0; m],
            categories: vec![opts.predict.clone()],
        },
    );
    let mut meta = serde_json::Map::new();
    meta.insert(
        "params".into(),
        serde_json::to_value(opts).map_err(|e| Error::Internal(e.to_string()))?,
    );
    meta.insert("n_delta_cells".into(), eq.into());
    meta.insert("delta_norm".into(), json_f64(delta_norm));
    if let Some((t, level)) = timestep {
        meta.insert("timestep".into(), t.into());
        if let Some(level) = level {
            meta.insert("flow_level".into(), json_f64(level));
        }
    }
    out.uns.insert(
        "celldiff_perturbation".into(),
        serde_json::Value::Object(meta),
    );
    Ok(Prediction {
        adata: out,
        control,
        real_stimulated,
        n_delta_cells: eq,
        delta_norm,
        timestep: timestep.map(|(t, _)| t),
    })
}

fn norm_of(t: Tensor<2>) -> Result<f64> {
    let v = to_host(t)?;
    Ok(v.data
        .iter()
        .map(|x| (*x as f64).powi(2))
        .sum::<f64>()
        .sqrt())
}

/// scGen's `reg_mean_plot` / `reg_var_plot` numbers.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PerturbationMetrics {
    /// R² of per-gene means, real stimulated vs predicted, all genes.
    pub r2_mean_all: f64,
    /// The same over the top DEGs.
    pub r2_mean_top: f64,
    /// R² of per-gene variances, all genes.
    pub r2_var_all: f64,
    /// The same over the top DEGs.
    pub r2_var_top: f64,
    /// R² of means of the *control* cells vs real stimulated over the top DEGs (the
    /// "no response" baseline a prediction must beat).
    pub r2_mean_top_control: f64,
    /// Genes compared.
    pub n_genes: usize,
    /// The top DEGs (Wilcoxon, stimulated vs control), best first.
    pub top_genes: Vec<String>,
}

/// Per-gene mean and variance (`ddof = 0`, numpy `np.var`) of `x` (`[n, n_genes]`).
pub fn mean_var(x: &DenseMatrix) -> (Vec<f64>, Vec<f64>) {
    let (n, g) = (x.n_rows, x.n_cols);
    let mut m = vec![0.0; g];
    let mut s = vec![0.0; g];
    for i in 0..n {
        for (k, &v) in x.row(i).iter().enumerate() {
            m[k] += v as f64;
            s[k] += (v as f64) * (v as f64);
        }
    }
    let nf = n.max(1) as f64;
    for k in 0..g {
        m[k] /= nf;
        s[k] = (s[k] / nf - m[k] * m[k]).max(0.0);
    }
    (m, s)
}

/// Evaluates predicted against real stimulated cells (scGen `reg_mean_plot`,
/// `reg_var_plot`): all three matrices `[*, n_genes]` over the same `genes`, in the same
/// expression space (e.g. log1p-normalised).
///
/// # Errors
/// [`Error::InvalidInput`] if a set has fewer than 2 cells or the gene counts differ.
pub fn evaluate_perturbation(
    control: &DenseMatrix,
    real_stim: &DenseMatrix,
    pred: &DenseMatrix,
    genes: &[String],
    n_top: usize,
) -> Result<PerturbationMetrics> {
    for (name, m) in [
        ("control", control),
        ("real stimulated", real_stim),
        ("predicted", pred),
    ] {
        if m.n_rows < 2 {
            return Err(Error::InvalidInput(format!(
                "{name} cells: need at least 2, got {}",
                m.n_rows
            )));
        }
        if m.n_cols != genes.len() {
            return Err(Error::InvalidInput(format!(
                "{name} cells have {} genes, expected {}",
                m.n_cols,
                genes.len()
            )));
        }
    }
    let ranked = rank_genes(real_stim, control);
    let top: Vec<usize> = ranked.iter().take(n_top).map(|r| r.0).collect();
    let (rm, rv) = mean_var(real_stim);
    let (pm, pv) = mean_var(pred);
    let (cm, _) = mean_var(control);
    let sub = |v: &[f64]| -> Vec<f64> { top.iter().map(|&k| v[k]).collect() };
    let r2 = |a: &[f64], b: &[f64]| pearson(a, b).powi(2);
    Ok(PerturbationMetrics {
        r2_mean_all: r2(&rm, &pm),
        r2_mean_top: r2(&sub(&rm), &sub(&pm)),
        r2_var_all: r2(&rv, &pv),
        r2_var_top: r2(&sub(&rv), &sub(&pv)),
        r2_mean_top_control: r2(&sub(&rm), &sub(&cm)),
        n_genes: genes.len(),
        top_genes: top.iter().map(|&k| genes[k].clone()).collect(),
    })
}

/// Number of genes a perturbation violin plot shows by default.
pub const VIOLIN_DEFAULT_GENES: usize = 4;

/// The genes of a perturbation violin plot, and the requested genes that are missing.
///
/// `requested` are the user's genes (empty: not given), `defaults` the genes shown when none
/// are given (e.g. Kang's interferon genes), `var_names` the genes compared and `top_genes`
/// the top DEGs, best first (all of them in `var_names`). Requested genes are kept in order
/// when present; without a request the defaults that are present come first and the top DEGs
/// fill up to [`VIOLIN_DEFAULT_GENES`] panels. The second list names the requested (or
/// default) genes that are not in `var_names`, for a warning.
pub fn violin_genes(
    requested: &[String],
    defaults: &[&str],
    var_names: &[String],
    top_genes: &[String],
) -> (Vec<String>, Vec<String>) {
    let present = |g: &str| var_names.iter().any(|v| v == g);
    if !requested.is_empty() {
        let (keep, missing): (Vec<String>, Vec<String>) =
            requested.iter().cloned().partition(|g| present(g));
        return (keep, missing);
    }
    let mut keep: Vec<String> = Vec::new();
    let mut missing = Vec::new();
    for d in defaults {
        if present(d) {
            keep.push((*d).to_string());
        } else {
            missing.push((*d).to_string());
        }
    }
    for g in top_genes {
        if keep.len() >= VIOLIN_DEFAULT_GENES {
            break;
        }
        if present(g) && !keep.contains(g) {
            keep.push(g.clone());
        }
    }
    (keep, missing)
}

#[cfg(test)]
mod tests {
    use super::violin_genes;

    #[test]
    fn violin_genes_keep_requested_present_genes_and_fill_defaults_with_top_degs() {
        let names = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let var = names(&["A", "ISG15", "B", "C", "D"]);
        let top = names(&["C", "ISG15", "A", "B"]);
        // Explicit genes: the present ones, in order; the others reported.
        let (keep, missing) = violin_genes(&names(&["X", "B", "A"]), &[], &var, &top);
        assert_eq!((keep, missing), (names(&["B", "A"]), names(&["X"])));
        // Default: the default genes present, then the top DEGs up to 4 panels.
        let (keep, missing) = violin_genes(&[], &["ISG15", "ISG20", "FGL2"], &var, &top);
        assert_eq!(keep, names(&["ISG15", "C", "A", "B"]));
        assert_eq!(missing, names(&["ISG20", "FGL2"]));
    }
    use super::*;

    #[test]
    fn balance_resamples_every_type_to_the_largest() {
        let types: Vec<String> = ["a", "a", "a", "b", "c", "c"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let idx: Vec<usize> = (0..6).collect();
        let mut rng = StdRng::seed_from_u64(1);
        let b = balance(&idx, &types, &mut rng);
        assert_eq!(b.len(), 9);
        for (chunk, t) in b.chunks(3).zip(["a", "b", "c"]) {
            assert!(chunk.iter().all(|&i| types[i] == t));
        }
    }

    #[test]
    fn perfect_prediction_scores_one_and_control_baseline_is_lower() {
        // 4 genes; stimulation raises genes 0 and 1.
        let mut ctrl = Vec::new();
        let mut stim = Vec::new();
        for i in 0..20 {
            let e = (i % 5) as f32 * 0.1;
            ctrl.extend([1.0 + e, 0.5 + e, 2.0 + e, 0.2 + e]);
            stim.extend([3.0 + e, 2.5 + 2.0 * e, 2.0 + e, 0.2 + e]);
        }
        let ctrl = DenseMatrix::from_vec(20, 4, ctrl).unwrap();
        let stim = DenseMatrix::from_vec(20, 4, stim).unwrap();
        let genes: Vec<String> = (0..4).map(|g| format!("g{g}")).collect();
        let m = evaluate_perturbation(&ctrl, &stim, &stim, &genes, 2).unwrap();
        assert!((m.r2_mean_all - 1.0).abs() < 1e-12);
        assert!((m.r2_var_all - 1.0).abs() < 1e-12);
        assert_eq!(m.top_genes, vec!["g0", "g1"]);
        let base = evaluate_perturbation(&ctrl, &stim, &ctrl, &genes, 4).unwrap();
        assert!(base.r2_mean_all < 0.9, "{base:?}");
        assert!(evaluate_perturbation(&ctrl, &stim, &ctrl.select_rows(&[0]), &genes, 2).is_err());
    }
}
