//! `celldiff scld-bench`: the SCLD results of docs/RESULTS.md in one command (SCLD Tables 3
//! and 5, and Fig. 5) on one dataset with a held-out split.
//!
//! 1. Shuffle the cells with the seed and hold out `--holdout` (20 %) of them; nothing below
//!    trains on a held-out cell (neither the diffusion models nor the Scorer).
//! 2. Train scVAEDer (unconditional, the first issue's model) and SCLD (conditions from
//!    `--condition-key`) on the other cells with the same flags and seed.
//! 3. Holistic generation (as many cells as were held out), each evaluated against the held-out
//!    cells with `celldiff evaluate`'s metrics: scVAEDer; SCLD ω = −1 (no guidance); SCLD with
//!    pre-guidance (condition mix in training proportions, ω = `--guidance`); the same with
//!    post-guidance (Scorer, keep 0.8); and the real-vs-real positive control.
//! 4. Per cluster (held-out count ≥ `--min-cluster-cells`), for each ω of
//!    `--guidance-values` (and ω = `--guidance` with post-guidance): generate as many cells as
//!    the cluster has held-out cells, evaluate them against those cells (RF AUC, MMD), and
//!    report the fraction a kNN classifier trained on the *training* cells' labels
//!    ([`celldiff::scld::LabelClassifier`]) assigns to the requested cluster.
//! 5. `umap.png`: UMAP of the held-out cells coloured by cluster with generated cells (condition
//!    mix) overlaid, for ω = −1 and ω = `--guidance` (SCLD Fig. 5). Each panel is its own
//!    UMAP of held-out ∪ generated (PCA 50 → 15 neighbours → layout).
//!
//! Writes `OUT/results.json`, `OUT/tables.md` and `OUT/umap.png`; prints the tables.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::Args;
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use serde_json::json;

use crate::plot::{PointStyle, ScatterGroup, ScatterPanel, scatter_panels};
use celldiff::anndata::DenseMatrix;
use celldiff::backend::DeviceChoice;
use celldiff::metrics::{self, EvalMetrics};
use celldiff::observation::Observation;
use celldiff::pipeline::SamplerKind;
use celldiff::run_dir::DataSource;
use celldiff::scld::{
    self, ConditionChoice, DEFAULT_GUIDANCE, LabelClassifier, SampleOptions, ScldGenerateOptions,
};
use celldiff::scvaeder::{self, GenerateOptions};
use celldiff::tl::neighbors;
use celldiff::tl::pca::Pca;
use celldiff::tl::umap::{UmapOptions, umap_layout};

use crate::commands::scld::ScldTrainArgs;
use crate::commands::{DataArgs, ModelArgs, Written, device, eval_options, write_atomic};
use crate::progress::Bars;

#[derive(Args, Debug)]
pub struct ScldBenchArgs {
    #[command(flatten)]
    pub data: DataArgs,
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub scld: ScldTrainArgs,
    /// Fraction of cells held out for evaluation.
    #[arg(long, default_value_t = 0.2, allow_negative_numbers = true, value_parser = crate::commands::flags::open_fraction())]
    pub holdout: f64,
    /// ω of the pre-guidance rows (and of the UMAP's guided panel).
    #[arg(long, default_value_t = DEFAULT_GUIDANCE, allow_negative_numbers = true, value_parser = crate::commands::flags::finite())]
    pub guidance: f64,
    /// ω values of the per-cluster sweep.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "-1,0,1,2",
        allow_hyphen_values = true,
        value_parser = crate::commands::flags::finite()
    )]
    pub guidance_values: Vec<f64>,
    /// Sampler of every generation (ddpm or ddim).
    #[arg(long, default_value = "ddpm")]
    pub sampler: SamplerKind,
    /// Sampling steps (default: T for ddpm, 50 for ddim).
    #[arg(long, allow_negative_numbers = true, value_parser = crate::commands::flags::count(1, crate::commands::flags::MAX_STEPS))]
    pub steps: Option<usize>,
    /// Observation of generated cells: counts or mean.
    #[arg(long, default_value = "counts")]
    pub observation: Observation,
    /// Clusters with fewer held-out cells are left out of the per-cluster table.
    #[arg(long, default_value_t = 20, allow_negative_numbers = true, value_parser = crate::commands::flags::count(1, usize::MAX))]
    pub min_cluster_cells: usize,
    /// Skip the scVAEDer baseline.
    #[arg(long)]
    pub skip_scvaeder: bool,
    /// Seed of the split, training, sampling and evaluation.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Output directory (results.json, tables.md, umap.png).
    #[arg(short = 'o', long)]
    pub out: PathBuf,
    /// Overwrite existing outputs.
    #[arg(long)]
    pub force: bool,
}

fn metrics_row(name: &str, m: &EvalMetrics) -> serde_json::Value {
    let mut v = serde_json::to_value(m).expect("metrics serialise");
    v["method"] = json!(name);
    v
}

pub fn run(a: ScldBenchArgs, dev: DeviceChoice, quiet: bool) -> Result<()> {
    let key = a
        .scld
        .condition_key
        .clone()
        .context("scld-bench needs --condition-key (labels of held-out cells are compared)")?;
    if !(a.holdout > 0.0 && a.holdout < 1.0) {
        bail!("--holdout must be in (0, 1), got {}", a.holdout);
    }
    let outputs = ["results.json", "tables.md", "umap.png"].map(|f| a.out.join(f));
    for p in &outputs {
        crate::commands::check_out(p, a.force, &[&a.data.data])?;
    }
    let device = device(dev)?;
    let mut bars = Bars::new(quiet);
    let total = Instant::now();
    let adata = a.data.read()?;
    adata
        .obs_column(&key)
        .with_context(|| format!("--condition-key {key}"))?;
    let mut idx: Vec<usize> = (0..adata.n_obs()).collect();
    idx.shuffle(&mut StdRng::seed_from_u64(a.seed));
    let n_test = ((adata.n_obs() as f64) * a.holdout).round() as usize;
    if n_test < metrics::MIN_CELLS || adata.n_obs() - n_test < 2 {
        bail!(
            "{} cells are too few for a {} held-out split",
            adata.n_obs(),
            a.holdout
        );
    }
    let (test_idx, train_idx) = idx.split_at(n_test);
    let train = adata.select_obs(train_idx);
    let test = adata.select_obs(test_idx);
    let source = DataSource {
        path: a.data.data.display().to_string(),
        ..Default::default()
    };
    let (sampler, observation) = (a.sampler, a.observation);
    let mut seconds = serde_json::Map::new();
    let opts = eval_options(a.seed);
    let mut holistic: Vec<(String, EvalMetrics)> = Vec::new();

    // scVAEDer baseline.
    if !a.skip_scvaeder {
        let spec = a.model.spec_unchecked(None, a.seed)?;
        let t = Instant::now();
        let run = scvaeder::fit(&train, &spec, &source, &device, &mut bars)?;
        seconds.insert("train_scvaeder".into(), json!(t.elapsed().as_secs_f64()));
        let test_pp = run.preprocess.transform(&test)?.x.to_dense();
        let g = GenerateOptions {
            n: test_pp.n_rows,
            sampler,
            steps: a.steps,
            seed: a.seed.wrapping_add(7),
            observation,
            ..GenerateOptions::default()
        };
        let t = Instant::now();
        let cells = scvaeder::generate(&run, &g, &device, &mut |_, _| {})?;
        seconds.insert("sample_scvaeder".into(), json!(t.elapsed().as_secs_f64()));
        let rec =
            scvaeder::reconstruct(&run, &test_pp, observation, a.seed.wrapping_add(7), &device)?;
        holistic.push((
            "scvaeder-reconstruction".into(),
            metrics::evaluate(&test_pp, &rec, &opts)?,
        ));
        holistic.push((
            "scvaeder".into(),
            metrics::evaluate(&test_pp, &scvaeder::model_space(&cells), &opts)?,
        ));
    }

    // SCLD.
    let spec = crate::commands::scld::spec(&a.model, &a.scld, a.seed)?;
    let t = Instant::now();
    let run = scld::fit(&train, &key, None, &spec, &source, &device, &mut bars)?;
    seconds.insert("train_scld".into(), json!(t.elapsed().as_secs_f64()));
    for (k, v) in &run.config.seconds {
        seconds.insert(format!("train_scld_{k}"), v.clone());
    }
    let test_pp = run.preprocess.transform(&test)?.x.to_dense();
    let train_pp = run.preprocess.transform(&train)?.x.to_dense();
    let n = test_pp.n_rows;
    let names = run.conditions.names.clone();
    let label_of = |ad: &celldiff::anndata::AnnData| -> Result<Vec<Option<usize>>> {
        Ok(ad
            .obs_column(&key)?
            .labels()
            .iter()
            .map(|l| names.iter().position(|x| x == l))
            .collect())
    };
    let test_labels = label_of(&test)?;
    let train_labels: Vec<usize> = label_of(&train)?
        .into_iter()
        .map(|l| l.unwrap_or(0))
        .collect();
    let gen_opts =
        |guidance: f64, post: bool, condition: ConditionChoice, n: usize| ScldGenerateOptions {
            n,
            condition,
            sample: SampleOptions {
                guidance,
                sampler,
                steps: a.steps,
                eta: 0.0,
                seed: a.seed.wrapping_add(7),
                clip_x0: true,
                use_ema: true,
            },
            post_guidance: post,
            keep: 0.8,
            observation,
            output: celldiff::scvaeder::CountsOutput::Log1p,
        };
    let has_scorer = run.scorer.is_some();
    let mut variants = vec![
        ("scld-no-guidance", -1.0, false),
        ("scld-pre-guidance", a.guidance, false),
    ];
    if has_scorer {
        variants.push(("scld-pre+post-guidance", a.guidance, true));
        variants.push(("scld-no-guidance+post", -1.0, true));
    }
    let rec = scld::reconstruct(&run, &test_pp, observation, a.seed.wrapping_add(7), &device)?;
    holistic.push((
        "scld-reconstruction".into(),
        metrics::evaluate(&test_pp, &rec, &opts)?,
    ));
    let mut umap_cells: Vec<(f64, DenseMatrix)> = Vec::new();
    for (name, w, post) in variants {
        let t = Instant::now();
        let g = gen_opts(w, post, ConditionChoice::Mix, n);
        let cells = scld::generate(&run, &g, &device, &mut |_, _| {})?;
        seconds.insert(format!("sample_{name}"), json!(t.elapsed().as_secs_f64()));
        let x = cells.x.to_dense();
        holistic.push((name.into(), metrics::evaluate(&test_pp, &x, &opts)?));
        if !post {
            umap_cells.push((w, x));
        }
        bars.println(format!("{name}: done"));
    }
    holistic.push((
        "positive-control".into(),
        metrics::evaluate(&test_pp, &train_pp, &opts)?,
    ));

    // Per cluster.
    let classifier = LabelClassifier::fit(&train_pp, &train_labels, 50, 15)?;
    let mut per_test = vec![Vec::new(); names.len()];
    for (i, l) in test_labels.iter().enumerate() {
        if let Some(l) = l {
            per_test[*l].push(i);
        }
    }
    let eligible: Vec<usize> = (0..names.len())
        .filter(|&c| per_test[c].len() >= a.min_cluster_cells.max(metrics::MIN_CELLS))
        .collect();
    let wanted: Vec<usize> = eligible
        .iter()
        .flat_map(|&c| std::iter::repeat_n(c, per_test[c].len()))
        .collect();
    let mut sweep: Vec<(String, f64, bool)> = a
        .guidance_values
        .iter()
        .map(|&w| (format!("ω={w}"), w, false))
        .collect();
    if has_scorer {
        sweep.push((format!("ω={}+post", a.guidance), a.guidance, true));
    }
    let mut per_cluster = Vec::new();
    for (label, w, post) in &sweep {
        let t = Instant::now();
        let g = gen_opts(*w, *post, ConditionChoice::Mix, wanted.len());
        let cells = scld::generate_conditions(&run, &wanted, &g, &device, &mut |_, _| {})?;
        let x = cells.x.to_dense();
        let pred = classifier.predict(&x);
        let mut start = 0;
        for &c in &eligible {
            let m = per_test[c].len();
            let rows: Vec<usize> = (start..start + m).collect();
            start += m;
            let frac = rows.iter().filter(|&&r| pred[r] == c).count() as f64 / m as f64;
            let real = test_pp.select_rows(&per_test[c]);
            let met = metrics::evaluate(&real, &x.select_rows(&rows), &opts)?;
            per_cluster.push(json!({
                "cluster": names[c], "variant": label, "guidance": w, "post_guidance": post,
                "n_heldout": m, "rf_auc": met.rf_auc, "mmd": met.mmd,
                "assigned_fraction": frac,
            }));
        }
        seconds.insert(
            format!("per_cluster_{label}"),
            json!(t.elapsed().as_secs_f64()),
        );
        bars.println(format!("per-cluster {label}: done"));
    }

    // UMAP figure.
    let t = Instant::now();
    let mut panels = Vec::new();
    for (w, gen_x) in &umap_cells {
        let mut all = test_pp.clone();
        all.data.extend_from_slice(&gen_x.data);
        all.n_rows += gen_x.n_rows;
        let scores = Pca::fit(&all, 50)?.transform(&all);
        let nb = neighbors::neighbors(&scores, 15)?;
        let layout = umap_layout(
            &nb.connectivities,
            &scores,
            &UmapOptions {
                seed: a.seed,
                ..UmapOptions::default()
            },
        )?;
        let pt = |i: usize| (layout.row(i)[0] as f64, layout.row(i)[1] as f64);
        let mut groups: Vec<ScatterGroup> = (0..names.len())
            .map(|c| ScatterGroup {
                name: names[c].clone(),
                points: per_test[c].iter().map(|&i| pt(i)).collect(),
                style: PointStyle::Palette(c),
            })
            .filter(|g| !g.points.is_empty())
            .collect();
        groups.push(ScatterGroup {
            name: "generated".into(),
            points: (n..all.n_rows).map(pt).collect(),
            style: PointStyle::Overlay,
        });
        panels.push(ScatterPanel {
            title: if *w == -1.0 {
                "ω = −1 (no guidance)".to_string()
            } else {
                format!("ω = {w} (pre-guidance)")
            },
            groups,
        });
    }
    seconds.insert("umap".into(), json!(t.elapsed().as_secs_f64()));
    seconds.insert("total".into(), json!(total.elapsed().as_secs_f64()));

    // Tables.
    let mut md = String::new();
    let _ = writeln!(
        md,
        "held-out real cells: {n} (conditions: obs['{key}'], {} clusters); generated: {n} per row\n",
        names.len()
    );
    let _ = writeln!(
        md,
        "| method | rf_auc | knn_auc | mmd | mean_pearson | var_pearson |"
    );
    let _ = writeln!(md, "|---|---|---|---|---|---|");
    for (name, m) in &holistic {
        let _ = writeln!(
            md,
            "| {name} | {:.3} | {:.3} | {:.4} | {:.4} | {:.4} |",
            m.rf_auc, m.knn_auc, m.mmd, m.mean_pearson, m.var_pearson
        );
    }
    let _ = writeln!(
        md,
        "\nper cluster: rf_auc / mmd / fraction assigned to the requested cluster\n"
    );
    let mut header = "| cluster | n_heldout |".to_string();
    let mut rule = "|---|---|".to_string();
    for (label, _, _) in &sweep {
        let _ = write!(header, " {label} |");
        rule.push_str("---|");
    }
    let _ = writeln!(md, "{header}\n{rule}");
    let cell = |c: &str, v: &str| {
        per_cluster
            .iter()
            .find(|r| r["cluster"] == c && r["variant"] == v)
            .cloned()
    };
    for &c in &eligible {
        let mut line = format!("| {} | {} |", names[c], per_test[c].len());
        for (label, _, _) in &sweep {
            if let Some(r) = cell(&names[c], label) {
                let _ = write!(
                    line,
                    " {:.3} / {:.4} / {:.2} |",
                    r["rf_auc"].as_f64().unwrap_or(f64::NAN),
                    r["mmd"].as_f64().unwrap_or(f64::NAN),
                    r["assigned_fraction"].as_f64().unwrap_or(f64::NAN)
                );
            }
        }
        let _ = writeln!(md, "{line}");
    }
    let mut mean_line = "| mean | |".to_string();
    for (label, _, _) in &sweep {
        let rows: Vec<&serde_json::Value> = per_cluster
            .iter()
            .filter(|r| r["variant"] == *label)
            .collect();
        let mean = |k: &str| {
            rows.iter()
                .map(|r| r[k].as_f64().unwrap_or(f64::NAN))
                .sum::<f64>()
                / rows.len().max(1) as f64
        };
        let _ = write!(
            mean_line,
            " {:.3} / {:.4} / {:.2} |",
            mean("rf_auc"),
            mean("mmd"),
            mean("assigned_fraction")
        );
    }
    let _ = writeln!(md, "{mean_line}");
    if !quiet {
        println!("{md}");
    }
    let doc = json!({
        "data": a.data.data.display().to_string(),
        "condition_key": key,
        "holdout": a.holdout,
        "seed": a.seed,
        "n_train": train.n_obs(),
        "n_heldout": n,
        "guidance": a.guidance,
        "sampler": a.sampler,
        "steps": a.steps,
        "scorer_accuracy": run.config.scorer_accuracy,
        "holistic": holistic.iter().map(|(k, m)| metrics_row(k, m)).collect::<Vec<_>>(),
        "per_cluster": per_cluster,
        "seconds": seconds,
    });
    let mut written = Written::default();
    if let Some(p) = outputs[0].parent() {
        std::fs::create_dir_all(p).with_context(|| format!("creating {}", p.display()))?;
    }
    celldiff::io::output::write_file(&outputs[2], a.force, |tmp| {
        scatter_panels(
            tmp,
            &format!("held-out cells by obs['{key}'], generated cells overlaid"),
            "UMAP1",
            "UMAP2",
            &panels,
        )
    })?;
    written.push(&outputs[2]);
    write_atomic(&outputs[1], a.force, &md)?;
    written.push(&outputs[1]);
    write_atomic(&outputs[0], a.force, &serde_json::to_string_pretty(&doc)?)?;
    written.keep();
    bars.println(format!(
        "wrote {}, {}, {} in {:.0}s",
        outputs[0].display(),
        outputs[1].display(),
        outputs[2].display(),
        total.elapsed().as_secs_f64()
    ));
    Ok(())
}
