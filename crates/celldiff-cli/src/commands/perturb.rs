//! `celldiff perturb` and `celldiff evaluate-perturbation` (scGen-style latent arithmetic in
//! the VAE or the diffusion space; scGen's R² metrics and violin plots).

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::Args;

use crate::plot;
use celldiff::anndata::{AnnData, DenseMatrix};
use celldiff::backend::DeviceChoice;
use celldiff::io;
use celldiff::pipeline::SamplerKind;
use celldiff::scvaeder::analysis::Encoding;
use celldiff::scvaeder::analysis::perturb::{self, PerturbOptions, PerturbationMetrics, Space};

use super::{DataArgs, Written, device, load_run, select_where, sibling, write_atomic};
use crate::progress::Bars;

/// Genes of the paper's Fig. 4c.
/// Kang's interferon-response genes, the violin plot's default where the model has them.
const DEFAULT_VIOLIN_GENES: &[&str] = &["ISG15", "ISG20", "FGL2", "ANXA5"];
/// The y axis of the violin plots: predictions are in the model's expression space.
const VIOLIN_Y_LABEL: &str = "log1p-normalised expression";

#[derive(Args, Debug)]
pub struct PerturbArgs {
    /// Run directory (trained without the target's stimulated cells: `celldiff train
    /// --exclude "cell_type=CD4T,condition=stimulated"`).
    #[arg(long)]
    pub run: PathBuf,
    #[command(flatten)]
    pub data: DataArgs,
    /// obs column of the condition.
    #[arg(long, default_value = "condition")]
    pub condition_key: String,
    /// Control value of --condition-key.
    #[arg(long, default_value = "control")]
    pub control: String,
    /// Stimulated value of --condition-key.
    #[arg(long, default_value = "stimulated")]
    pub stimulated: String,
    /// obs column of the cell type.
    #[arg(long, default_value = "cell_type")]
    pub celltype_key: String,
    /// Cell type whose stimulated response is predicted from its control cells.
    #[arg(long)]
    pub predict: String,
    /// vae (scGen: δ in the VAE latent) or diffusion (scVAEDer: δ in the diffusion prior).
    #[arg(long, default_value = "diffusion")]
    pub space: Space,
    /// K of the diffusion space (1..=T; default T). On a --prior flow run, the flow level
    /// with the β schedule's signal-to-noise ratio at K.
    #[arg(long, allow_negative_numbers = true, value_parser = super::flags::count(1, super::flags::MAX_STEPS))]
    pub t_start: Option<usize>,
    /// How cells reach K: ddim (deterministic inversion) or forward (stochastic q(z_K|z_0)).
    #[arg(long, default_value = "ddim")]
    pub encode: Encoding,
    /// Reverse sampler of the diffusion space: ddim or ddpm.
    #[arg(long, default_value = "ddim", value_parser = super::flags::analysis_sampler())]
    pub sampler: SamplerKind,
    /// Sampler steps (default: 50 for ddim, T for ddpm).
    #[arg(long, allow_negative_numbers = true, value_parser = super::flags::count(1, super::flags::MAX_STEPS))]
    pub steps: Option<usize>,
    /// Cap on the cells drawn per condition for δ (default: scGen's balanced count).
    #[arg(long, allow_negative_numbers = true, value_parser = super::flags::count(1, usize::MAX))]
    pub max_delta_cells: Option<usize>,
    /// Do not clip x̂₀ to the training latents' range.
    #[arg(long)]
    pub no_clip: bool,
    /// Genes of the violin plot (when the data hold the target's real stimulated cells;
    /// default: ISG15, ISG20, FGL2, ANXA5 where the model has them, then the top DEGs, 4 in
    /// all). Genes the model lacks are named in a warning.
    #[arg(long, value_delimiter = ',')]
    pub genes: Vec<String>,
    /// Top DEGs of the R² metrics.
    #[arg(long, default_value_t = 100, allow_negative_numbers = true, value_parser = super::flags::count(1, 1_000_000))]
    pub n_top: usize,
    /// Seed of the balancing draws and any noise.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Output .h5ad of predicted cells (with real stimulated cells of the target in the data,
    /// also <stem>_metrics.json and <stem>_violin.png).
    #[arg(short = 'o', long)]
    pub out: PathBuf,
    /// Overwrite existing outputs.
    #[arg(long)]
    pub force: bool,
}

pub fn run_perturb(a: PerturbArgs, dev: DeviceChoice, quiet: bool) -> Result<()> {
    let metrics_json = sibling(&a.out, "_metrics.json");
    let violin_png = sibling(&a.out, "_violin.png");
    for p in [&a.out, &metrics_json, &violin_png] {
        super::check_out(p, a.force, &[&a.run, &a.data.data])?;
    }
    let space = a.space;
    let opts = PerturbOptions {
        condition_key: a.condition_key.clone(),
        control: a.control.clone(),
        stimulated: a.stimulated.clone(),
        celltype_key: a.celltype_key.clone(),
        predict: a.predict.clone(),
        space,
        t_start: a.t_start,
        encoding: a.encode,
        sampler: a.sampler,
        steps: a.steps,
        eta: 0.0,
        clip_x0: !a.no_clip,
        max_delta_cells: a.max_delta_cells,
        seed: a.seed,
    };
    let device = device(dev)?;
    let run = load_run(&a.run, &device)?;
    let bars = Bars::new(quiet);
    let excluded = run.config.header.exclude.as_deref().is_some_and(|e| {
        e.contains(&format!("{}={}", a.celltype_key, a.predict))
            && e.contains(&format!("{}={}", a.condition_key, a.stimulated))
    });
    if !excluded {
        bars.println(format!(
            "warning: run {} was not trained with --exclude \"{}={},{}={}\": the model may have \
             seen the cells it predicts",
            a.run.display(),
            a.celltype_key,
            a.predict,
            a.condition_key,
            a.stimulated
        ));
    }
    let adata = a.data.read()?;
    let start = Instant::now();
    let mut pred = perturb::predict(&run, &adata, &opts, &device).with_context(|| {
        format!(
            "predicting `{}` of {} in {}",
            a.stimulated,
            a.predict,
            a.data.data.display()
        )
    })?;
    let secs = start.elapsed().as_secs_f64();
    let metrics = if pred.real_stimulated.n_rows >= 2 {
        let m = perturb::evaluate_perturbation(
            &pred.control,
            &pred.real_stimulated,
            &pred.adata.x.to_dense(),
            &pred.adata.var_names,
            a.n_top,
        )?;
        Some(m)
    } else {
        None
    };
    if let Some(serde_json::Value::Object(u)) = pred.adata.uns.get_mut("celldiff_perturbation") {
        u.insert("seconds".into(), secs.into());
        if let Some(m) = &metrics {
            u.insert("metrics".into(), serde_json::to_value(m)?);
        }
    }
    // The violins first (they fail on --genes none of which the model has), then the
    // metrics, then the predictions; all or nothing.
    let mut written = Written::default();
    if let Some(m) = &metrics {
        super::write_out(&violin_png, a.force, |tmp| {
            violins(
                tmp,
                &format!(
                    "{}: control / real {} / predicted ({}{})",
                    a.predict,
                    a.stimulated,
                    super::flags::name(&a.space),
                    pred.timestep
                        .map(|t| format!(", from t = {t}"))
                        .unwrap_or_default()
                ),
                &a.genes,
                &m.top_genes,
                &pred.adata.var_names,
                [
                    ("control", &pred.control),
                    ("real", &pred.real_stimulated),
                    ("predicted", &pred.adata.x.to_dense()),
                ],
            )
        })?;
        written.push(&violin_png);
        let mut json = serde_json::to_value(m)?;
        if let serde_json::Value::Object(o) = &mut json {
            o.insert("cell_type".into(), a.predict.clone().into());
            o.insert("space".into(), super::flags::name(&a.space).into());
            o.insert("seconds".into(), secs.into());
            o.insert("n_control".into(), pred.control.n_rows.into());
            o.insert(
                "n_real_stimulated".into(),
                pred.real_stimulated.n_rows.into(),
            );
        }
        write_atomic(
            &metrics_json,
            a.force,
            &serde_json::to_string_pretty(&json)?,
        )?;
        written.push(&metrics_json);
    }
    super::write_h5ad_out(&a.out, a.force, &pred.adata)?;
    written.keep();
    bars.println(format!(
        "predicted {} `{}` cells of {} in the {} space{} (δ from {} cells per condition, \
         ‖δ‖ = {:.3}) in {secs:.1}s; wrote {}",
        pred.adata.n_obs(),
        a.stimulated,
        a.predict,
        super::flags::name(&a.space),
        pred.timestep
            .map(|t| format!(" at timestep {t}"))
            .unwrap_or_default(),
        pred.n_delta_cells,
        pred.delta_norm,
        a.out.display()
    ));
    if let Some(m) = &metrics {
        print_metrics(&bars, m, a.n_top);
        bars.println(format!(
            "wrote {}, {}",
            metrics_json.display(),
            violin_png.display()
        ));
    }
    Ok(())
}

fn print_metrics(bars: &Bars, m: &PerturbationMetrics, n_top: usize) {
    bars.println(format!(
        "R² means: all {} genes {:.4}, top-{n_top} DEGs {:.4} (control baseline {:.4}); \
         R² variances: all {:.4}, top-{n_top} {:.4}",
        m.n_genes, m.r2_mean_all, m.r2_mean_top, m.r2_mean_top_control, m.r2_var_all, m.r2_var_top
    ));
}

/// Violin PNG of the `requested` genes present in `var_names` (none requested: the default
/// genes present, then the `top_genes` DEGs; see [`perturb::violin_genes`]) for the three
/// groups; a warning names the genes that are missing.
fn violins(
    path: &Path,
    title: &str,
    requested: &[String],
    top_genes: &[String],
    var_names: &[String],
    groups: [(&str, &DenseMatrix); 3],
) -> Result<()> {
    let (genes, missing) =
        perturb::violin_genes(requested, DEFAULT_VIOLIN_GENES, var_names, top_genes);
    if !missing.is_empty() {
        let what = if requested.is_empty() {
            "default violin genes"
        } else {
            "--genes"
        };
        eprintln!(
            "warning: {what} not among the {} genes compared (not in the model): {}{}",
            var_names.len(),
            missing.join(", "),
            if genes.is_empty() {
                String::new()
            } else {
                format!("; plotting {}", genes.join(", "))
            }
        );
    }
    let panels: Vec<plot::ViolinPanel> = genes
        .iter()
        .filter_map(|g| var_names.iter().position(|v| v == g).map(|j| (g, j)))
        .map(|(g, j)| {
            let cols = groups
                .iter()
                .map(|(name, m)| {
                    (
                        name.to_string(),
                        (0..m.n_rows).map(|i| m.row(i)[j] as f64).collect(),
                    )
                })
                .collect();
            (g.clone(), cols)
        })
        .collect();
    if panels.is_empty() {
        bail!(
            "--genes: none of {} is among the {} genes compared",
            missing.join(", "),
            var_names.len()
        );
    }
    plot::violin_plot(path, title, VIOLIN_Y_LABEL, &panels)?;
    Ok(())
}

#[derive(Args, Debug)]
pub struct EvaluatePerturbationArgs {
    /// Real stimulated cells of the target type (.h5ad / 10x folder).
    #[arg(long)]
    pub real_stim: PathBuf,
    /// Keep only the cells of --real-stim matching KEY=VALUE[,KEY=VALUE...].
    #[arg(long)]
    pub real_stim_where: Option<String>,
    /// Predicted stimulated cells (`celldiff perturb` output).
    #[arg(long)]
    pub pred: PathBuf,
    /// Control cells of the target type.
    #[arg(long)]
    pub control: PathBuf,
    /// Keep only the cells of --control matching KEY=VALUE[,KEY=VALUE...].
    #[arg(long)]
    pub control_where: Option<String>,
    /// Apply this run's preprocessing to --real-stim and --control (when they are not yet in
    /// the model's expression space, e.g. raw counts).
    #[arg(long)]
    pub run: Option<PathBuf>,
    /// Top DEGs (Wilcoxon, real stimulated vs control).
    #[arg(long, default_value_t = 100, allow_negative_numbers = true, value_parser = super::flags::count(1, 1_000_000))]
    pub n_top: usize,
    /// Genes of the violin plot (default: ISG15, ISG20, FGL2, ANXA5 where present, then the
    /// top DEGs, 4 in all). Genes not compared are named in a warning.
    #[arg(long, value_delimiter = ',')]
    pub genes: Vec<String>,
    /// Output prefix: <PREFIX>_metrics.json and <PREFIX>_violin.png (default: <pred stem>_eval
    /// beside --pred).
    #[arg(short = 'o', long)]
    pub out: Option<PathBuf>,
    /// Overwrite existing outputs.
    #[arg(long)]
    pub force: bool,
}

pub fn run_evaluate(a: EvaluatePerturbationArgs, quiet: bool) -> Result<()> {
    let prefix = a.out.clone().unwrap_or_else(|| sibling(&a.pred, "_eval"));
    let metrics_json = sibling(&prefix.with_extension("h5ad"), "_metrics.json");
    let violin_png = sibling(&prefix.with_extension("h5ad"), "_violin.png");
    let mut inputs = vec![a.real_stim.as_path(), &a.pred, &a.control];
    inputs.extend(a.run.as_deref());
    for p in [&metrics_json, &violin_png] {
        super::check_out(p, a.force, &inputs)?;
    }
    let read = |p: &Path| -> Result<AnnData> { Ok(io::read(p, &io::ReadOptions::default())?) };
    let pred = read(&a.pred)?;
    let mut real = read(&a.real_stim)?;
    let mut ctrl = read(&a.control)?;
    if let Some(w) = &a.real_stim_where {
        real = select_where(real, w, "--real-stim-where")?;
    }
    if let Some(w) = &a.control_where {
        ctrl = select_where(ctrl, w, "--control-where")?;
    }
    if let Some(r) = &a.run {
        let run = load_run(r, &device(DeviceChoice::Cpu)?)?;
        real = run
            .preprocess
            .transform(&real)
            .with_context(|| format!("preprocessing {}", a.real_stim.display()))?;
        ctrl = run
            .preprocess
            .transform(&ctrl)
            .with_context(|| format!("preprocessing {}", a.control.display()))?;
    }
    let genes = pred.var_names.clone();
    let real_x = real.columns_by_name(&genes, &a.real_stim.display().to_string())?;
    let ctrl_x = ctrl.columns_by_name(&genes, &a.control.display().to_string())?;
    let pred_x = pred.x.to_dense();
    let m = perturb::evaluate_perturbation(&ctrl_x, &real_x, &pred_x, &genes, a.n_top)?;
    let bars = Bars::new(quiet);
    let mut written = Written::default();
    super::write_out(&violin_png, a.force, |tmp| {
        violins(
            tmp,
            "control / real stimulated / predicted",
            &a.genes,
            &m.top_genes,
            &genes,
            [
                ("control", &ctrl_x),
                ("real", &real_x),
                ("predicted", &pred_x),
            ],
        )
    })?;
    written.push(&violin_png);
    write_atomic(&metrics_json, a.force, &serde_json::to_string_pretty(&m)?)?;
    written.keep();
    print_metrics(&bars, &m, a.n_top);
    println!(
        "{{\"r2_mean_all\": {:.6}, \"r2_mean_top\": {:.6}, \"r2_var_all\": {:.6}, \"r2_var_top\": {:.6}}}",
        m.r2_mean_all, m.r2_mean_top, m.r2_var_all, m.r2_var_top
    );
    bars.println(format!(
        "wrote {}, {}",
        metrics_json.display(),
        violin_png.display()
    ));
    Ok(())
}
