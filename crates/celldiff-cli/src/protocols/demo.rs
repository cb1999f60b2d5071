//! `celldiff demo`: the whole scVAEDer pipeline on the embedded pbmc68k_reduced counts (or on
//! any dataset given with `--data`) with a held-out 20 % split, compared with the VAE prior and
//! a real-vs-real positive control. This is also the command behind the real-data table of
//! `docs/RESULTS.md`.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::Args;
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use serde_json::json;

use celldiff::RunFiles;
use celldiff::backend::{self, DeviceChoice};
use celldiff::io::{self, ReadOptions};
use celldiff::metrics::{self, EvalMetrics};
use celldiff::observation::Observation;
use celldiff::pipeline::SamplerKind;
use celldiff::run_dir::DataSource;
use celldiff::scvaeder::{self, GenerateOptions, Prior};
use celldiff::train::Observer;

use crate::commands::{device, eval_options, print_table, write_atomic};
use crate::progress::Bars;

/// The embedded demo dataset (data/demo/SOURCE.md).
const DEMO_H5AD: &[u8] = include_bytes!("../../../../data/demo/pbmc68k_reduced_counts.h5ad");

#[derive(Args, Debug)]
pub struct DemoArgs {
    /// Run on this dataset (.h5ad or 10x directory) instead of the embedded demo data.
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// With --data: use layers/<LAYER> as X.
    #[arg(long, requires = "data")]
    pub layer: Option<String>,
    /// With --data: use raw/X as X.
    #[arg(long, requires = "data")]
    pub use_raw: bool,
    /// obs column with labels to record with the run (default: bulk_labels for the embedded
    /// data, none otherwise).
    #[arg(long)]
    pub labels_key: Option<String>,
    /// How decoded latents become cells: counts (default) or mean (see `generate --help`).
    #[arg(long, default_value = "counts")]
    pub observation: Observation,
    /// Fraction of cells held out for the evaluation.
    #[arg(long, default_value_t = 0.2, allow_negative_numbers = true, value_parser = crate::commands::flags::open_fraction())]
    pub holdout: f64,
    /// Write DIR/metrics.json, the trained run (DIR/run), the generated cells
    /// (DIR/generated_ddpm.h5ad) and the split (DIR/split.json: the input rows of the
    /// training and held-out cells, for reference models trained on the same cells).
    #[arg(short = 'o', long)]
    pub out: Option<PathBuf>,
    /// Seed of the split, training, sampling and evaluation.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Preprocessing, model, training and schedule flags (as for `celldiff train`).
    #[command(flatten)]
    pub model: crate::commands::ModelArgs,
    /// Replace an existing output directory's files.
    #[arg(long)]
    pub force: bool,
}

pub fn run(a: DemoArgs, dev: DeviceChoice, quiet: bool, threads: usize) -> Result<()> {
    let total = Instant::now();
    if let Some(o) = &a.out {
        let inputs: Vec<&std::path::Path> = a.data.iter().map(|p| p.as_path()).collect();
        crate::commands::check_out(&o.join("metrics.json"), a.force, &inputs)?;
        crate::commands::check_out(&o.join("generated_ddpm.h5ad"), a.force, &inputs)?;
        crate::commands::check_out(&o.join("split.json"), a.force, &inputs)?;
        crate::commands::check_run_out(&o.join("run"), a.force, &inputs)?;
    }
    if !(a.holdout > 0.0 && a.holdout < 1.0) {
        bail!("--holdout must be in (0, 1), got {}", a.holdout);
    }
    let device = device(dev)?;
    let mut bars = Bars::new(quiet);
    let (adata, dataset, labels_key) = match &a.data {
        None => {
            // A fresh file (never through a link planted at the name), removed on every path.
            let guard = celldiff::io::output::TempPath::new(tempfile_path()?);
            let tmp = guard.path();
            std::fs::File::create_new(tmp)
                .and_then(|mut f| std::io::Write::write_all(&mut f, DEMO_H5AD))
                .with_context(|| format!("writing {}", tmp.display()))?;
            let adata = io::read(tmp, &ReadOptions::default());
            drop(guard);
            let key = a.labels_key.clone().or(Some("bulk_labels".into()));
            (
                adata?,
                "pbmc68k_reduced_counts (embedded demo)".to_string(),
                key,
            )
        }
        Some(p) => {
            let opts = ReadOptions {
                layer: a.layer.clone(),
                use_raw: a.use_raw,
            };
            (
                io::read(p, &opts)?,
                p.display().to_string(),
                a.labels_key.clone(),
            )
        }
    };
    if let Some(k) = &labels_key {
        adata.obs_column(k)?;
    }
    bars.println(format!(
        "demo: {dataset}, {} cells × {} genes ({} threads, {} backend)",
        adata.n_obs(),
        adata.n_vars(),
        threads,
        backend::cpu_backend_name()
    ));
    let mut idx: Vec<usize> = (0..adata.n_obs()).collect();
    idx.shuffle(&mut StdRng::seed_from_u64(a.seed));
    let n_test = ((adata.n_obs() as f64) * a.holdout).round() as usize;
    if n_test < celldiff::metrics::MIN_CELLS || adata.n_obs() - n_test < 2 {
        bail!(
            "{dataset}: {} cells are too few for a {} held-out split",
            adata.n_obs(),
            a.holdout
        );
    }
    let (test_idx, train_idx) = idx.split_at(n_test);
    let train = adata.select_obs(train_idx);
    let test = adata.select_obs(test_idx);
    let spec = a.model.spec(labels_key, a.seed)?;
    let source = DataSource {
        path: "embedded:pbmc68k_reduced_counts.h5ad".into(),
        ..Default::default()
    };
    let t = Instant::now();
    let run = scvaeder::fit(&train, &spec, &source, &device, &mut bars)?;
    let train_s = t.elapsed().as_secs_f64();
    bars.finish_step();
    // Held-out real cells in the model's space.
    let test_pp = run.preprocess.transform(&test)?.x.to_dense();
    let train_pp = run.preprocess.transform(&train)?.x.to_dense();
    let n = test_pp.n_rows;
    let opts = eval_options(a.seed);
    let mut rows: Vec<(String, EvalMetrics)> = Vec::new();
    let mut seconds = serde_json::Map::new();
    seconds.insert("train".into(), json!(train_s));
    for (k, v) in &run.config.seconds {
        seconds.insert(format!("train_{k}"), v.clone());
    }
    let mut variants = vec![
        ("diffusion-ddpm", Prior::Diffusion, SamplerKind::Ddpm, None),
        (
            "diffusion-ddim50",
            Prior::Diffusion,
            SamplerKind::Ddim,
            Some(50),
        ),
    ];
    // A flow prior's rows above are Euler-1000 and Euler-50; add its 2nd-order solvers at
    // 25 steps (about 50 network evaluations, DDIM-50's cost).
    if run.config.diffusion_train.objective == celldiff::train::Objective::Velocity {
        variants.push(("flow-heun25", Prior::Diffusion, SamplerKind::Heun, Some(25)));
        variants.push((
            "flow-midpoint25",
            Prior::Diffusion,
            SamplerKind::Midpoint,
            Some(25),
        ));
    }
    variants.push(("vae-prior", Prior::Vae, SamplerKind::Ddpm, None));
    let observation = a.observation;
    let real_library = library_logs(&test_pp);
    let mut ks = serde_json::Map::new();
    // The decoder's ceiling: held-out cells encoded, decoded and sampled like generated ones.
    {
        let t = Instant::now();
        bars.step_start("reconstructing the held-out cells");
        let rec =
            scvaeder::reconstruct(&run, &test_pp, observation, a.seed.wrapping_add(7), &device)?;
        bars.finish_step();
        seconds.insert("reconstruction".into(), json!(t.elapsed().as_secs_f64()));
        ks.insert(
            "reconstruction".into(),
            ks_json(&real_library, &library_logs(&rec)),
        );
        rows.push((
            "reconstruction".into(),
            metrics::evaluate(&test_pp, &rec, &opts)?,
        ));
    }
    let mut ddpm_cells = None;
    for (name, prior, sampler, steps) in variants {
        let g = GenerateOptions {
            n,
            prior,
            sampler,
            steps,
            seed: a.seed.wrapping_add(7),
            observation,
            ..GenerateOptions::default()
        };
        let t = Instant::now();
        let pb = bars.bar(1, name);
        let cells = scvaeder::generate(&run, &g, &device, &mut |i, k| {
            pb.set_length(k as u64);
            pb.set_position(i as u64);
        })?;
        pb.finish_and_clear();
        seconds.insert(format!("sample_{name}"), json!(t.elapsed().as_secs_f64()));
        let gen_x = scvaeder::model_space(&cells);
        ks.insert(name.into(), ks_json(&real_library, &library_logs(&gen_x)));
        let m = metrics::evaluate(&test_pp, &gen_x, &opts)?;
        rows.push((name.to_string(), m));
        if name == "diffusion-ddpm" {
            ddpm_cells = Some(cells);
        }
    }
    let control = metrics::evaluate(&test_pp, &train_pp, &opts)?;
    rows.push(("positive-control".into(), control));
    seconds.insert("total".into(), json!(total.elapsed().as_secs_f64()));
    println!(
        "\nheld-out real cells: {n}; generated: {n} per method; lower AUC/MMD/corr_mad is \
         better; reconstruction = held-out cells encoded and decoded (the decoder's ceiling)"
    );
    print_table(&rows);
    if let Some(v) = ks
        .get("diffusion-ddpm")
        .and_then(|v| v.get("ks_log_library"))
    {
        println!(
            "library size: KS statistic of ln(total counts), generated (ddpm) vs held-out: {v}"
        );
    }
    if let Some(o) = &a.out {
        std::fs::create_dir_all(o).with_context(|| format!("creating {}", o.display()))?;
        let json_rows: Vec<_> = rows
            .iter()
            .map(|(name, m)| {
                let mut v = serde_json::to_value(m).expect("metrics serialise");
                v["method"] = json!(name);
                if let Some(k) = ks.get(name) {
                    v["ks_log_library"] = k["ks_log_library"].clone();
                }
                v
            })
            .collect();
        let doc = json!({
            "dataset": dataset,
            "holdout": a.holdout,
            "seed": a.seed,
            "n_train": train.n_obs(),
            "n_heldout": n,
            "alphas_cumprod_terminal": run.config.alphas_cumprod_terminal,
            "observation": a.observation,
            "dispersion": run.observation.as_ref().map(|o| o.dispersion),
            "likelihood": run.vae.likelihood().name(),
            "library_clusters": run.library.as_ref().map(|l| l.clusters.len()),
            "rows": json_rows,
            "seconds": seconds,
        });
        run.save(&o.join("run"), a.force)
            .map_err(crate::commands::appeared_meanwhile)?;
        if let Some(c) = &ddpm_cells {
            crate::commands::write_h5ad_out(&o.join("generated_ddpm.h5ad"), a.force, c)?;
        }
        let split = json!({
            "seed": a.seed,
            "n_obs": adata.n_obs(),
            "train": train_idx,
            "heldout": test_idx,
        });
        write_atomic(
            &o.join("split.json"),
            a.force,
            &serde_json::to_string(&split)?,
        )?;
        write_atomic(
            &o.join("metrics.json"),
            a.force,
            &serde_json::to_string_pretty(&doc)?,
        )?;
        bars.println(format!("wrote {}", o.join("metrics.json").display()));
    }
    bars.println(format!(
        "demo finished in {:.1}s",
        total.elapsed().as_secs_f64()
    ));
    Ok(())
}

/// ln of each cell's total count over the model genes, for cells of the model's space
/// (`[n, n_genes]`, log1p-normalised) whose counts can be recovered (others are skipped).
fn library_logs(x: &celldiff::anndata::DenseMatrix) -> Vec<f64> {
    let rows = celldiff::counts::recover_counts(x);
    rows.library
        .iter()
        .zip(&rows.size_factor)
        .filter(|(l, s)| **l > 0.0 && s.is_some())
        .map(|(l, _)| l.ln())
        .collect()
}

/// `{"ks_log_library": D}`: the KS statistic of ln library sizes (null when a set has none).
fn ks_json(real: &[f64], generated: &[f64]) -> serde_json::Value {
    let d = metrics::ks_statistic(real, generated);
    json!({ "ks_log_library": if d.is_finite() { json!(d) } else { serde_json::Value::Null } })
}

fn tempfile_path() -> Result<PathBuf> {
    let dir = std::env::temp_dir();
    Ok(celldiff::io::output::temp_sibling(
        &dir.join("celldiff-demo.h5ad"),
    ))
}
