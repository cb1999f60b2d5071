//! scVAEDer analyses end to end on real data (issue 3): `interpolate` on Weinreb hematopoiesis
//! (undiff → Monocyte) and Kang (control → stimulated within a cell type), `velocity` on its
//! output, and `perturb` / `evaluate-perturbation` on Kang with the target's stimulated cells
//! held out of training. Tiny models (seconds to train) so the suite stays fast; the full-size
//! numbers are in docs/RESULTS.md.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use celldiff::anndata::Column;
use celldiff::io::{ReadOptions, read};

use crate::common::{TINY, assert_bad_input, assert_ok, celldiff, scratch, shared_data};

fn read_h5ad(p: &Path) -> celldiff::AnnData {
    read(p, &ReadOptions::default()).unwrap_or_else(|e| panic!("reading {}: {e}", p.display()))
}

fn train(data: &Path, extra: &[&str]) -> PathBuf {
    let run = scratch().join("run");
    let mut args: Vec<String> = vec![
        "train".into(),
        "--data".into(),
        data.display().to_string(),
        "--seed".into(),
        "0".into(),
        "--no-observation".into(),
        "--out".into(),
        run.display().to_string(),
    ];
    // TINY's flags, unless `extra` sets the same flag.
    for pair in TINY.chunks(2) {
        if !extra.contains(&pair[0]) {
            args.extend(pair.iter().map(|s| s.to_string()));
        }
    }
    args.extend(extra.iter().map(|s| s.to_string()));
    assert_ok(&celldiff(&args));
    run
}

fn weinreb() -> PathBuf {
    shared_data("weinreb_larry_hematopoiesis_subset/test_adata_preprocessed.h5ad")
}

pub(crate) fn kang() -> PathBuf {
    shared_data("kang_pbmc_ifnb_valid/valid_kang.h5ad")
}

/// A tiny run on Weinreb (normalised, not log: `--log1p`), shared by the tests below.
fn weinreb_run() -> &'static Path {
    static RUN: OnceLock<PathBuf> = OnceLock::new();
    RUN.get_or_init(|| {
        train(
            &weinreb(),
            &["--log1p", "--epochs-vae", "40", "--epochs-diffusion", "60"],
        )
    })
}

/// A tiny Kang run that never saw stimulated CD4T cells (1000 HVGs).
pub(crate) fn kang_run() -> &'static Path {
    static RUN: OnceLock<PathBuf> = OnceLock::new();
    RUN.get_or_init(|| {
        train(
            &kang(),
            &[
                "--exclude",
                "cell_type=CD4T,condition=stimulated",
                "--n-top-genes",
                "1000",
                "--epochs-vae",
                "30",
            ],
        )
    })
}

fn uns_f64(a: &celldiff::AnnData, key: &str, field: &str) -> f64 {
    a.uns[key][field]
        .as_f64()
        .unwrap_or_else(|| panic!("uns['{key}']['{field}'] missing"))
}

fn interpolate(run: &Path, data: &Path, extra: &[&str]) -> (celldiff::AnnData, PathBuf) {
    let out = scratch().join("interp.h5ad");
    let mut args: Vec<String> = vec![
        "interpolate".into(),
        "--run".into(),
        run.display().to_string(),
        "--data".into(),
        data.display().to_string(),
        "--seed".into(),
        "0".into(),
        "-o".into(),
        out.display().to_string(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    assert_ok(&celldiff(&args));
    (read_h5ad(&out), out)
}

fn is_png(p: &Path) -> bool {
    std::fs::read(p).is_ok_and(|b| b.starts_with(b"\x89PNG\r\n\x1a\n") && b.len() > 2000)
}

#[test]
fn weinreb_interpolation_moves_from_undiff_to_monocyte_on_the_manifold() {
    let state = [
        "--key",
        "state_info",
        "--from",
        "undiff",
        "--to",
        "Monocyte",
    ];
    let mut extra = state.to_vec();
    extra.extend(["--n-steps", "200", "--genes", "Lyz2,Mpo"]);
    let (a, out) = interpolate(weinreb_run(), &weinreb(), &extra);
    assert_eq!(a.n_obs(), 200);
    let Column::Numeric(lambda) = a.obs_column("lambda").unwrap() else {
        panic!("obs['lambda'] is not numeric");
    };
    assert_eq!((lambda[0], lambda[199]), (0.0, 1.0));
    // The paper's Fig. 3c: correlation with A falls and with B rises along λ.
    let rho_from = uns_f64(&a, "celldiff_interpolation", "spearman_from");
    let rho_to = uns_f64(&a, "celldiff_interpolation", "spearman_to");
    assert!(rho_from < -0.9, "Spearman ρ with undiff = {rho_from}");
    assert!(rho_to > 0.9, "Spearman ρ with Monocyte = {rho_to}");
    let corr = a.uns["celldiff_interpolation"]["corr_from"]
        .as_array()
        .unwrap();
    assert_eq!(corr.len(), 200);
    // "No samples in the empty region".
    let m = &a.uns["celldiff_interpolation"]["manifold"];
    assert_eq!(m["n_outside"].as_u64(), Some(0), "{m}");
    assert!(m["interpolated_nn_max"].as_f64().unwrap() <= m["real_nn_p99"].as_f64().unwrap());
    let dir = out.parent().unwrap();
    assert!(is_png(&dir.join("interp_correlation.png")));
    assert!(is_png(&dir.join("interp_genes.png")));

    // Same seed, same path; a latent-space (approach 2) path with slerp also trends.
    let (b, _) = interpolate(weinreb_run(), &weinreb(), &extra);
    assert_eq!(a.x.to_dense().data, b.x.to_dense().data);
    let mut extra2 = state.to_vec();
    extra2.extend(["--n-steps", "50", "--method", "latent", "--t-start", "30"]);
    extra2.extend(["--path", "slerp", "--sampler", "ddpm"]);
    let (c, _) = interpolate(weinreb_run(), &weinreb(), &extra2);
    assert!(uns_f64(&c, "celldiff_interpolation", "spearman_to") > 0.9);
    assert_eq!(
        c.uns["celldiff_interpolation"]["timestep"].as_u64(),
        Some(29)
    );
}

#[test]
fn velocity_ranks_genes_by_their_change_along_the_path() {
    let (a, out) = interpolate(
        weinreb_run(),
        &weinreb(),
        &[
            "--key",
            "state_info",
            "--from",
            "undiff",
            "--to",
            "Monocyte",
            "--n-steps",
            "100",
        ],
    );
    let vdir = scratch().join("velocity");
    let args = [
        "velocity",
        "-i",
        out.to_str().unwrap(),
        "--report-genes",
        "Lyz2,NotAGene",
        "--top-k",
        "5",
        "--first-steps",
        "10",
        "-o",
        vdir.to_str().unwrap(),
    ];
    assert_ok(&celldiff(args));
    let ranking = std::fs::read_to_string(vdir.join("ranking.tsv")).unwrap();
    let first = ranking
        .lines()
        .nth(1)
        .unwrap()
        .split('\t')
        .nth(1)
        .unwrap()
        .to_string();
    // Independently: the gene with the largest mean |first difference| of X.
    let x = a.x.to_dense();
    let mut best = (0, -1.0f64);
    for g in 0..x.n_cols {
        let s: f64 = (1..x.n_rows)
            .map(|i| (x.row(i)[g] - x.row(i - 1)[g]).abs() as f64)
            .sum();
        if s > best.1 {
            best = (g, s);
        }
    }
    assert_eq!(first, a.var_names[best.0]);
    let per_step = std::fs::read_to_string(vdir.join("top_per_step.tsv")).unwrap();
    assert_eq!(per_step.lines().count(), 1 + 10 * 5);
    assert!(
        std::fs::read_to_string(vdir.join("top_union.txt"))
            .unwrap()
            .lines()
            .count()
            >= 5
    );
    assert!(
        std::fs::read_to_string(vdir.join("diff.tsv"))
            .unwrap()
            .starts_with("rank\tgene")
    );
    let report = std::fs::read_to_string(vdir.join("report_genes.tsv")).unwrap();
    assert!(report.contains("Lyz2\t"), "{report}");
    assert!(is_png(&vdir.join("trajectories.png")));
    // An existing output directory is kept without --force.
    assert_bad_input(&celldiff(args), &["already exists"]);
}

#[test]
fn kang_interpolation_within_a_cell_type() {
    let (a, _) = interpolate(
        kang_run(),
        &kang(),
        &[
            "--key",
            "condition",
            "--from",
            "control",
            "--to",
            "stimulated",
            "--where",
            "cell_type=CD14+Mono",
            "--n-steps",
            "100",
        ],
    );
    assert!(uns_f64(&a, "celldiff_interpolation", "spearman_from") < -0.9);
    assert!(uns_f64(&a, "celldiff_interpolation", "spearman_to") > 0.9);
    assert_eq!(
        a.uns["celldiff_interpolation"]["manifold"]["n_outside"].as_u64(),
        Some(0)
    );
}

fn perturb(space: &str, out: &Path) -> serde_json::Value {
    let kang = kang();
    let args = [
        "perturb",
        "--run",
        kang_run().to_str().unwrap(),
        "--data",
        kang.to_str().unwrap(),
        "--predict",
        "CD4T",
        "--space",
        space,
        "--steps",
        "20",
        "-o",
        out.to_str().unwrap(),
    ];
    assert_ok(&celldiff(args));
    let m = out.with_file_name(format!(
        "{}_metrics.json",
        out.file_stem().unwrap().to_string_lossy()
    ));
    serde_json::from_str(&std::fs::read_to_string(m).unwrap()).unwrap()
}

#[test]
fn kang_perturbation_predicts_the_ifn_response_of_held_out_cd4t() {
    let cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(kang_run().join("config.json")).unwrap())
            .unwrap();
    assert_eq!(cfg["exclude"], "cell_type=CD4T,condition=stimulated");
    let dir = scratch();
    for space in ["vae", "diffusion"] {
        let out = dir.join(format!("{space}.h5ad"));
        let m = perturb(space, &out);
        let top = m["r2_mean_top"].as_f64().unwrap();
        let base = m["r2_mean_top_control"].as_f64().unwrap();
        // Adding δ must move the control cells towards the real stimulated ones on the
        // stimulation's own genes (control cells alone are the "no response" baseline).
        // The margin is small because this tiny model (30 VAE epochs, latent 8) moves with its
        // training seed: over seeds 0–5 the VAE-space gain ranged from −0.15 to +0.14 (mean
        // +0.07, with Burn's dropout and with the fused one alike, 2026-12-02: `celldiff train
        // --seed S` with this test's flags, then `celldiff perturb --space vae`, for S in 0..6
        // and both builds, reading r2_mean_top − r2_mean_top_control); seed 0 gives
        // +0.035 (VAE) and +0.041 (diffusion). RESULTS.md has the full-size figures.
        assert!(
            top > base + 0.02,
            "{space}: R² top-100 {top} vs control {base}"
        );
        assert!(m["r2_mean_all"].as_f64().unwrap() > 0.8, "{space}: {m}");
        assert_eq!(m["n_control"].as_u64(), Some(278));
        assert_eq!(m["n_real_stimulated"].as_u64(), Some(356));
        let pred = read_h5ad(&out);
        assert_eq!(pred.n_obs(), 278);
        assert_eq!(
            pred.obs_column("condition").unwrap().labels()[0],
            "predicted"
        );
        assert!(is_png(&dir.join(format!("{space}_violin.png"))));
    }
    // The standalone evaluation on the same cells gives the same numbers.
    let kang = kang();
    let pred = dir.join("diffusion.h5ad");
    let prefix = dir.join("standalone");
    let args = [
        "evaluate-perturbation",
        "--real-stim",
        kang.to_str().unwrap(),
        "--real-stim-where",
        "cell_type=CD4T,condition=stimulated",
        "--control",
        kang.to_str().unwrap(),
        "--control-where",
        "cell_type=CD4T,condition=control",
        "--pred",
        pred.to_str().unwrap(),
        "-o",
        prefix.to_str().unwrap(),
    ];
    assert_ok(&celldiff(args));
    let a: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.join("standalone_metrics.json")).unwrap(),
    )
    .unwrap();
    let b: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("diffusion_metrics.json")).unwrap())
            .unwrap();
    for k in ["r2_mean_all", "r2_mean_top", "r2_var_all", "r2_var_top"] {
        let (x, y) = (a[k].as_f64().unwrap(), b[k].as_f64().unwrap());
        assert!((x - y).abs() < 1e-9, "{k}: {x} vs {y}");
    }
}

#[test]
fn analyses_reject_bad_input_with_named_fields() {
    let out = scratch().join("x.h5ad");
    let o = out.to_str().unwrap();
    let run = weinreb_run().to_str().unwrap().to_string();
    let data = weinreb();
    let d = data.to_str().unwrap();
    let base = ["interpolate", "--run", &run, "--data", d, "-o", o];
    let with = |extra: &[&str]| {
        let mut v: Vec<&str> = base.to_vec();
        v.extend(extra);
        celldiff(v)
    };
    assert_bad_input(
        &with(&[
            "--key",
            "state_info",
            "--from",
            "undiff",
            "--to",
            "Macrophage",
        ]),
        &["state_info", "Macrophage", "Monocyte"],
    );
    assert_bad_input(
        &with(&["--key", "no_such_key", "--from", "a", "--to", "b"]),
        &["no_such_key"],
    );
    assert_bad_input(
        &with(&[
            "--key",
            "state_info",
            "--from",
            "undiff",
            "--to",
            "Monocyte",
            "--t-start",
            "0",
        ]),
        &["--t-start"],
    );
    assert_bad_input(
        &with(&[
            "--key",
            "state_info",
            "--from",
            "undiff",
            "--to",
            "Monocyte",
            "--genes",
            "XYZ1",
        ]),
        &["--genes", "XYZ1"],
    );
    assert!(!out.exists(), "nothing may be written on bad input");
    let kang = kang();
    // velocity needs obs['lambda'].
    let vout = scratch().join("v");
    assert_bad_input(
        &celldiff(["velocity", "-i", d, "-o", vout.to_str().unwrap()]),
        &["obs/lambda", "test_adata_preprocessed.h5ad"],
    );
    assert!(!vout.exists());
    // perturb: unknown target type.
    assert_bad_input(
        &celldiff([
            "perturb",
            "--run",
            kang_run().to_str().unwrap(),
            "--data",
            kang.to_str().unwrap(),
            "--predict",
            "Macrophage",
            "-o",
            o,
        ]),
        &["cell_type", "Macrophage", "CD4T"],
    );
    assert!(!out.exists());
    // Violin genes the model does not have: the error comes after the prediction, and none of
    // the three outputs (h5ad, metrics, violins) may be left behind.
    assert_bad_input(
        &celldiff([
            "perturb",
            "--run",
            kang_run().to_str().unwrap(),
            "--data",
            kang.to_str().unwrap(),
            "--predict",
            "CD4T",
            "--space",
            "vae",
            "--genes",
            "NOTAGENE1,NOTAGENE2",
            "-o",
            o,
        ]),
        &["--genes", "NOTAGENE1"],
    );
    let dir = out.parent().unwrap();
    let left: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(left.is_empty(), "outputs left behind: {left:?}");
}
