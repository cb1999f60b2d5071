//! `celldiff interpolate` and `celldiff velocity` (scVAEDer interpolation and gene velocity).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::Args;

use crate::plot::{self, Series};
use celldiff::anndata::{Column, DenseMatrix};
use celldiff::backend::DeviceChoice;
use celldiff::io::output::{self, OutputKind};
use celldiff::io::{self, ReadOptions};
use celldiff::pipeline::SamplerKind;
use celldiff::scvaeder::analysis::Encoding;
use celldiff::scvaeder::analysis::interpolate::{
    self, InterpolateOptions, Interpolation, Method, PathKind,
};
use celldiff::scvaeder::analysis::velocity::{self, Direction, VelocityOptions};

use super::{DataArgs, Written, device, load_run, select_where, sibling, write_atomic};
use crate::progress::Bars;

#[derive(Args, Debug)]
pub struct InterpolateArgs {
    /// Run directory written by `celldiff train`.
    #[arg(long)]
    pub run: PathBuf,
    #[command(flatten)]
    pub data: DataArgs,
    /// obs column holding the cell states.
    #[arg(long)]
    pub key: String,
    /// Use only the cells matching KEY=VALUE[,KEY=VALUE...] (e.g. "cell_type=CD4T" to go
    /// from control to stimulated within one cell type); the manifold check uses them too.
    #[arg(long = "where")]
    pub where_: Option<String>,
    /// State A (λ = 0).
    #[arg(long)]
    pub from: String,
    /// State B (λ = 1).
    #[arg(long)]
    pub to: String,
    /// prior (approach 1: interpolate group means in the diffusion prior at K, the paper's
    /// default) or latent (approach 2: interpolate VAE latents, noise to K, reverse).
    #[arg(long, default_value = "prior")]
    pub method: Method,
    /// K, the timestep interpolated at (1..=T; default T, the full prior). Smaller K = finer
    /// interpolation (the paper's "number of diffusion steps before interpolation"). On a
    /// --prior flow run, the flow level with the β schedule's signal-to-noise ratio at K.
    #[arg(long, allow_negative_numbers = true, value_parser = super::flags::count(1, super::flags::MAX_STEPS))]
    pub t_start: Option<usize>,
    /// Number of interpolation points (λ values in [0, 1]).
    #[arg(long, default_value_t = 2000, allow_negative_numbers = true, value_parser = super::flags::count(2, 1_000_000))]
    pub n_steps: usize,
    /// Reverse sampler: ddim (deterministic, 50 steps: seconds) or ddpm (the paper's
    /// ancestral sampler over all T steps, with the same noise for every λ).
    #[arg(long, default_value = "ddim", value_parser = super::flags::analysis_sampler())]
    pub sampler: SamplerKind,
    /// Sampler steps over 0..T (default: 50 for ddim, T for ddpm).
    #[arg(long, allow_negative_numbers = true, value_parser = super::flags::count(1, super::flags::MAX_STEPS))]
    pub steps: Option<usize>,
    /// DDIM η.
    #[arg(long, default_value_t = 0.0, allow_negative_numbers = true, value_parser = super::flags::probability())]
    pub eta: f64,
    /// How cells reach timestep K in approach 1: forward (stochastic q(z_K|z_0), the paper)
    /// or ddim (deterministic DDIM inversion).
    #[arg(long, default_value = "forward")]
    pub encode: Encoding,
    /// Path between the end points: linear or slerp (spherical; keeps the norm of noise).
    #[arg(long, default_value = "linear")]
    pub path: PathKind,
    /// Genes whose expression along λ is plotted (default: the 10 that change most).
    #[arg(long, value_delimiter = ',')]
    pub genes: Vec<String>,
    /// Forward-process draws per cell averaged into the group means (--encode forward; 1 =
    /// the paper's single draw). With one draw the end points of a 50-cell group move with
    /// the seed (docs/RESULTS.md); 16 draws make them seed-independent.
    #[arg(long, default_value_t = 16, allow_negative_numbers = true, value_parser = super::flags::count(1, 100_000))]
    pub noise_draws: usize,
    /// Principal components of the manifold check.
    #[arg(long, default_value_t = 50, allow_negative_numbers = true, value_parser = super::flags::count(1, 10_000))]
    pub n_pcs: usize,
    /// Do not clip x̂₀ to the training latents' range.
    #[arg(long)]
    pub no_clip: bool,
    /// Seed of the forward noise and of the shared reverse noise.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Output .h5ad (PNGs are written beside it: <stem>_correlation.png, <stem>_genes.png).
    #[arg(short = 'o', long)]
    pub out: PathBuf,
    /// Overwrite existing outputs.
    #[arg(long)]
    pub force: bool,
}

pub fn run_interpolate(a: InterpolateArgs, dev: DeviceChoice, quiet: bool) -> Result<()> {
    let corr_png = sibling(&a.out, "_correlation.png");
    let genes_png = sibling(&a.out, "_genes.png");
    for p in [&a.out, &corr_png, &genes_png] {
        super::check_out(p, a.force, &[&a.run, &a.data.data])?;
    }
    let opts = InterpolateOptions {
        key: a.key.clone(),
        from: a.from.clone(),
        to: a.to.clone(),
        method: a.method,
        t_start: a.t_start,
        n_steps: a.n_steps,
        sampler: a.sampler,
        steps: a.steps,
        eta: a.eta,
        encoding: a.encode,
        path: a.path,
        clip_x0: !a.no_clip,
        n_pcs: a.n_pcs,
        noise_draws: a.noise_draws,
        seed: a.seed,
    };
    let device = device(dev)?;
    let run = load_run(&a.run, &device)?;
    let mut adata = a.data.read()?;
    if let Some(w) = &a.where_ {
        adata = select_where(adata, w, "--where")?;
    }
    for g in &a.genes {
        if !run.genes.contains(g) {
            bail!(
                "--genes: `{g}` is not one of the run's {} genes (see {}/genes.json)",
                run.genes.len(),
                a.run.display()
            );
        }
    }
    let bars = Bars::new(quiet);
    let start = Instant::now();
    let pb = bars.bar(1, "reverse process");
    let mut res = interpolate::interpolate(&run, &adata, &opts, &device, &mut |i, n| {
        pb.set_length(n as u64);
        pb.set_position(i as u64);
    })
    .with_context(|| {
        format!(
            "interpolating {} → {} of obs['{}'] in {}",
            a.from,
            a.to,
            a.key,
            a.data.data.display()
        )
    })?;
    pb.finish_and_clear();
    let secs = start.elapsed().as_secs_f64();
    let genes = if a.genes.is_empty() {
        most_changed(&res, 10)
    } else {
        a.genes.clone()
    };
    if let Some(serde_json::Value::Object(m)) = res.adata.uns.get_mut("celldiff_interpolation") {
        m.insert("seconds".into(), secs.into());
        m.insert(
            "correlation_png".into(),
            corr_png.display().to_string().into(),
        );
        m.insert("genes_png".into(), genes_png.display().to_string().into());
        m.insert("plotted_genes".into(), genes.clone().into());
    }
    let mut written = Written::default();
    plot_interpolation(&res, &a, &genes, &corr_png, &genes_png, &mut written)?;
    super::write_h5ad_out(&a.out, a.force, &res.adata)?;
    written.keep();
    let mf = &res.manifold;
    // One JSON line on stdout for scripts (the human summary goes to stderr).
    println!(
        "{}",
        serde_json::json!({
            "from": a.from, "to": a.to, "where": a.where_, "method": a.method,
            "encode": a.encode, "path": a.path, "sampler": a.sampler, "timestep": res.timestep,
            "n_steps": a.n_steps, "noise_draws": a.noise_draws, "seed": a.seed, "spearman_from": res.spearman_from,
            "spearman_to": res.spearman_to, "n_outside": mf.n_outside,
            "interpolated_nn_max": mf.interpolated_nn_max, "real_nn_p99": mf.real_nn_p99,
            "real_nn_median": mf.real_nn_median, "seconds": secs,
            "vae_linear_n_outside": res.baseline_manifold.n_outside,
            "vae_linear_nn_max": res.baseline_manifold.interpolated_nn_max,
        })
    );
    bars.println(format!(
        "{} → {} ({} / {} cells), {} points from timestep {} in {secs:.1}s\n\
         Spearman ρ(λ, corr with {}) = {:.3}, ρ(λ, corr with {}) = {:.3}\n\
         manifold check (PCA-{}): nearest real cell ≤ {:.3} (max) vs real-real p99 {:.3} \
         (median {:.3}): {} of {} points outside{}\n\
         wrote {}, {}, {}",
        a.from,
        a.to,
        res.n_cells.0,
        res.n_cells.1,
        a.n_steps,
        res.timestep,
        a.from,
        res.spearman_from,
        a.to,
        res.spearman_to,
        mf.n_pcs,
        mf.interpolated_nn_max,
        mf.real_nn_p99,
        mf.real_nn_median,
        mf.n_outside,
        a.n_steps,
        if mf.passed { " (passed)" } else { " (FAILED)" },
        a.out.display(),
        corr_png.display(),
        genes_png.display()
    ));
    Ok(())
}

/// The `n` genes with the largest |x(λ=1) − x(λ=0)|.
fn most_changed(res: &Interpolation, n: usize) -> Vec<String> {
    let x = res.adata.x.to_dense();
    let (first, last) = (x.row(0), x.row(x.n_rows - 1));
    let mut idx: Vec<usize> = (0..x.n_cols).collect();
    idx.sort_by(|&i, &j| {
        (last[j] - first[j])
            .abs()
            .total_cmp(&(last[i] - first[i]).abs())
    });
    idx.into_iter()
        .take(n)
        .map(|i| res.adata.var_names[i].clone())
        .collect()
}

fn plot_interpolation(
    res: &Interpolation,
    a: &InterpolateArgs,
    genes: &[String],
    corr_png: &Path,
    genes_png: &Path,
    written: &mut Written,
) -> Result<()> {
    output::write_file(corr_png, a.force, |tmp| {
        plot::line_plot(
            tmp,
            &format!("Pearson r with mean expression: {} → {}", a.from, a.to),
            "λ",
            "Pearson r",
            &res.lambdas,
            &[
                Series {
                    name: format!("corr with {}", a.from),
                    y: res.corr_from.clone(),
                },
                Series {
                    name: format!("corr with {}", a.to),
                    y: res.corr_to.clone(),
                },
            ],
        )
    })?;
    written.push(corr_png);
    let x = res.adata.x.to_dense();
    let rows: Vec<Vec<f64>> = genes
        .iter()
        .filter_map(|g| res.adata.var_names.iter().position(|v| v == g))
        .map(|j| (0..x.n_rows).map(|i| x.row(i)[j] as f64).collect())
        .collect();
    output::write_file(genes_png, a.force, |tmp| {
        plot::heatmap(
            tmp,
            &format!("expression along λ: {} → {}", a.from, a.to),
            "λ",
            &res.lambdas,
            genes,
            &rows,
        )
    })?;
    written.push(genes_png);
    Ok(())
}

#[derive(Args, Debug)]
pub struct VelocityArgs {
    /// Output of `celldiff interpolate` (.h5ad with obs['lambda']).
    #[arg(long, short = 'i')]
    pub input: PathBuf,
    /// Average the velocity over windows of this many steps.
    #[arg(long, default_value_t = 1, allow_negative_numbers = true, value_parser = super::flags::count(1, 1_000_000))]
    pub window: usize,
    /// Ranking: abs (|velocity|, the paper), up (largest positive, the published code) or
    /// down (most negative).
    #[arg(long, default_value = "abs")]
    pub direction: Direction,
    /// Genes kept per step.
    #[arg(long, default_value_t = 10, allow_negative_numbers = true, value_parser = super::flags::count(1, 1_000_000))]
    pub top_k: usize,
    /// Steps whose top genes form the union (the paper: 40 steps × 10 genes).
    #[arg(long, default_value_t = 40, allow_negative_numbers = true, value_parser = super::flags::count(1, 1_000_000))]
    pub first_steps: usize,
    /// Step m of the |x_m − x_0| ranking (default: the last step).
    #[arg(long, allow_negative_numbers = true, value_parser = super::flags::count(1, 1_000_000))]
    pub diff_step: Option<usize>,
    /// Genes whose ranks are reported (report_genes.tsv and the terminal).
    #[arg(long, value_delimiter = ',')]
    pub report_genes: Vec<String>,
    /// Genes in the trajectory plot (the top of the ranking).
    #[arg(long, default_value_t = 10, allow_negative_numbers = true, value_parser = super::flags::count(1, 1_000))]
    pub n_plot: usize,
    /// Output directory (ranking.tsv, top_per_step.tsv, top_union.txt, diff.tsv,
    /// report_genes.tsv, trajectories.png).
    #[arg(short = 'o', long)]
    pub out: PathBuf,
    /// Replace an existing output directory.
    #[arg(long)]
    pub force: bool,
}

/// The files `celldiff velocity` writes into its output folder (what `--force` may replace).
const VELOCITY_OUTPUT: OutputKind = OutputKind::Files(&[
    "ranking.tsv",
    "top_per_step.tsv",
    "top_union.txt",
    "diff.tsv",
    "report_genes.tsv",
    "trajectories.png",
]);

pub fn run_velocity(a: VelocityArgs, quiet: bool) -> Result<()> {
    output::check_output(&a.out, a.force, VELOCITY_OUTPUT, &[&a.input])?;
    let opts = VelocityOptions {
        window: a.window,
        direction: a.direction,
        top_k: a.top_k,
        first_steps: a.first_steps,
        diff_step: a.diff_step,
    };
    let adata = io::read(&a.input, &ReadOptions::default())?;
    let lambda = match adata.obs_column("lambda") {
        Ok(Column::Numeric(v)) => v.clone(),
        Ok(_) => bail!(
            "{}: field `obs/lambda`: expected numbers (the output of `celldiff interpolate`)",
            a.input.display()
        ),
        Err(_) => bail!(
            "{}: field `obs/lambda`: missing; expected the output of `celldiff interpolate`",
            a.input.display()
        ),
    };
    let mut order: Vec<usize> = (0..lambda.len()).collect();
    order.sort_by(|&i, &j| lambda[i].total_cmp(&lambda[j]));
    let x: DenseMatrix = adata.x.rows_dense(&order);
    let lam: Vec<f64> = order.iter().map(|&i| lambda[i]).collect();
    let v = velocity::velocity(&x, &opts)
        .with_context(|| format!("gene velocity of {}", a.input.display()))?;
    let genes = &adata.var_names;
    let mut missing = Vec::new();
    let report: Vec<(String, usize, usize, usize)> = a
        .report_genes
        .iter()
        .filter_map(|g| match genes.iter().position(|n| n == g) {
            Some(k) => Some((
                g.clone(),
                v.rank_of(k).unwrap_or(0),
                v.diff_rank_of(k).unwrap_or(0),
                v.union.iter().position(|&u| u == k).map_or(0, |p| p + 1),
            )),
            None => {
                missing.push(g.clone());
                None
            }
        })
        .collect();

    // Everything goes into a temporary sibling folder renamed into place: never over a folder
    // celldiff did not write, never over one that appeared meanwhile (see `io::output`).
    let mut failed: Option<anyhow::Error> = None;
    let published = output::write_dir(&a.out, a.force, VELOCITY_OUTPUT, |tmp| {
        let res = (|| -> Result<()> {
            let mut s = String::from("rank\tgene\tmean_score\tmean_velocity\n");
            for (r, (k, score, mv)) in v.ranking.iter().enumerate() {
                writeln!(s, "{}\t{}\t{score:.6e}\t{mv:.6e}", r + 1, genes[*k])?;
            }
            write_atomic(&tmp.join("ranking.tsv"), false, &s)?;
            let mut s = String::from("step\tlambda\trank\tgene\tvelocity\n");
            for (j, top) in v.top_per_step.iter().enumerate() {
                for (r, (k, val)) in top.iter().enumerate() {
                    writeln!(
                        s,
                        "{j}\t{:.6}\t{}\t{}\t{val:.6e}",
                        lam[j * opts.window],
                        r + 1,
                        genes[*k]
                    )?;
                }
            }
            write_atomic(&tmp.join("top_per_step.tsv"), false, &s)?;
            let s: String = v.union.iter().map(|&k| format!("{}\n", genes[k])).collect();
            write_atomic(&tmp.join("top_union.txt"), false, &s)?;
            let mut s = format!("rank\tgene\tdiff_step0_step{}\tabs_diff\n", v.diff_step);
            for (r, (k, d)) in v.diff.iter().enumerate() {
                writeln!(s, "{}\t{}\t{d:.6e}\t{:.6e}", r + 1, genes[*k], d.abs())?;
            }
            write_atomic(&tmp.join("diff.tsv"), false, &s)?;
            let mut s = String::from("gene\tvelocity_rank\tdiff_rank\tunion_position\n");
            for (g, r, d, u) in &report {
                writeln!(s, "{g}\t{r}\t{d}\t{u}")?;
            }
            write_atomic(&tmp.join("report_genes.tsv"), false, &s)?;
            let series: Vec<Series> = v
                .ranking
                .iter()
                .take(a.n_plot)
                .map(|(k, _, _)| Series {
                    name: genes[*k].clone(),
                    y: (0..x.n_rows).map(|i| x.row(i)[*k] as f64).collect(),
                })
                .collect();
            plot::line_plot(
                &tmp.join("trajectories.png"),
                &format!(
                    "top {} genes by velocity ({})",
                    series.len(),
                    super::flags::name(&a.direction)
                ),
                "λ",
                "expression",
                &lam,
                &series,
            )?;
            Ok(())
        })();
        // Keep the error as it is (its exit code and context); the folder is removed anyway.
        res.map_err(|e| {
            let msg = format!("{e:#}");
            failed = Some(e);
            celldiff::Error::Internal(msg)
        })
    });
    if let Some(e) = failed {
        return Err(e);
    }
    published.map_err(super::appeared_meanwhile)?;
    if !quiet {
        let top: Vec<&str> = v
            .ranking
            .iter()
            .take(20)
            .map(|(k, _, _)| genes[*k].as_str())
            .collect();
        eprintln!(
            "{} steps × {} genes: top genes by {} velocity: {}",
            x.n_rows,
            x.n_cols,
            super::flags::name(&a.direction),
            top.join(", ")
        );
        eprintln!(
            "union of the top {} of the first {} steps: {} genes",
            opts.top_k,
            v.top_per_step.len(),
            v.union.len()
        );
        for (g, r, d, u) in &report {
            eprintln!(
                "  {g}: velocity rank {r}, |x_{} − x_0| rank {d}, union position {}",
                v.diff_step,
                if *u == 0 {
                    "-".to_string()
                } else {
                    u.to_string()
                }
            );
        }
        if !missing.is_empty() {
            eprintln!("  not among the genes: {}", missing.join(", "));
        }
        eprintln!("wrote {}", a.out.display());
    }
    Ok(())
}
