//! Tests of SCLD (tiny runs on the demo data).
use super::*;

#[test]
fn mix_keeps_proportions_and_total() {
    let _rng = crate::test_rng_lock();
    let c = Conditions {
        key: "k".into(),
        names: vec!["a".into(), "b".into(), "c".into()],
        counts: vec![5, 3, 2],
        vectors: vec![vec![0.0]; 4],
    };
    let m = c.mix(7);
    assert_eq!(m.len(), 7);
    let count = |k| m.iter().filter(|&&x| x == k).count();
    // 3.5, 2.1, 1.4 → floors 3, 2, 1 (6), the largest remainder (a: .5) gets the last.
    assert_eq!((count(0), count(1), count(2)), (4, 2, 1));
    assert_eq!(c.index_of("b").unwrap(), 1);
    assert!(
        c.index_of("zz")
            .unwrap_err()
            .to_string()
            .contains("a, b, c")
    );
}

#[test]
fn conditions_are_cluster_means_and_global_mean() {
    let _rng = crate::test_rng_lock();
    let x = DenseMatrix::from_vec(3, 2, vec![1.0, 0.0, 3.0, 2.0, 5.0, 4.0]).unwrap();
    let c = Conditions::fit(
        "k",
        vec!["a".into(), "b".into()],
        &[0, 0, 1],
        &Matrix::Dense(x),
    )
    .unwrap();
    assert_eq!(
        c.vectors,
        vec![vec![2.0, 1.0], vec![5.0, 4.0], vec![3.0, 2.0]]
    );
    assert_eq!(c.counts, vec![2, 1]);
    let e = Conditions::fit(
        "k",
        vec!["a".into(), "b".into()],
        &[0, 0, 0],
        &Matrix::Dense(DenseMatrix::zeros(3, 2)),
    )
    .unwrap_err();
    assert!(e.to_string().contains("`b`"), "{e}");
}

/// Two groups of log-normalised cells with opposite programmes (genes 0–9 vs 10–19).
fn two_programmes(n: usize, seed: u64) -> AnnData {
    use rand::{Rng, SeedableRng};
    let mut r = rand::rngs::StdRng::seed_from_u64(seed);
    let g = 20;
    let mut data = Vec::with_capacity(n * g);
    let mut labels = Vec::with_capacity(n);
    for i in 0..n {
        let a = i % 2 == 0;
        for j in 0..g {
            let high = (j < 10) == a;
            let base = if high { 2.0 } else { 0.2 };
            data.push(base + 0.3 * r.random::<f32>());
        }
        labels.push(if a { "A" } else { "B" }.to_string());
    }
    let mut ad = AnnData::new(
        Matrix::Dense(DenseMatrix::from_vec(n, g, data).unwrap()),
        (0..g).map(|j| format!("g{j}")).collect(),
    );
    ad.set_obs("type", Column::categorical_from_labels(&labels));
    ad
}

fn tiny_spec() -> ScldSpec {
    let mut spec = ScldSpec {
        preprocess: PreprocessConfig {
            n_top_genes: None,
            ..PreprocessConfig::default()
        },
        hidden: vec![32],
        n_latent: 4,
        dropout: 0.0,
        latent_epochs: Some(40),
        denoiser_width: 64,
        denoiser_depth: 2,
        time_dim: 16,
        diffusion_epochs: Some(300),
        fit_observation: false,
        ..ScldSpec::default()
    };
    // T = 100 with β_T = 0.05 keeps ᾱ_T ≈ 0.08 as the default T = 1000 schedule does (with
    // the default β_T = 5e-3, T = 100 would leave ᾱ_T ≈ 0.78: x_T far from N(0, I)).
    spec.schedule.num_train_timesteps = 100;
    spec.schedule.beta_end = 0.05;
    spec.diffusion_train.batch_size = 64;
    spec.latent_train.batch_size = 64;
    spec.scorer_train.epochs = 10;
    spec
}

/// Mean of genes 0–9 minus the mean of genes 10–19, per generated set.
fn programme_contrast(x: &DenseMatrix) -> f64 {
    let mut s = 0f64;
    for i in 0..x.n_rows {
        let r = x.row(i);
        s += r[..10].iter().map(|&v| v as f64).sum::<f64>() / 10.0
            - r[10..].iter().map(|&v| v as f64).sum::<f64>() / 10.0;
    }
    s / x.n_rows as f64
}

#[test]
fn guided_generation_produces_the_requested_programme_and_reproduces() {
    let _rng = crate::test_rng_lock();
    let device = Device::default();
    let ad = two_programmes(300, 1);
    let spec = tiny_spec();
    let run = fit(
        &ad,
        "type",
        None,
        &spec,
        &DataSource::default(),
        &device,
        &mut crate::train::Silent,
    )
    .unwrap();
    assert_eq!(run.conditions.names, vec!["A", "B"]);
    // Diffusion loss falls.
    let d: Vec<f64> = run
        .history
        .iter()
        .filter(|r| r.stage == "diffusion")
        .map(|r| r.train_loss)
        .collect();
    assert!(
        d[d.len() - 1] < 0.8 * d[0],
        "diffusion loss did not fall: {d:?}"
    );
    let sample_cells = |cond: ConditionChoice, w: f64, post: bool, seed: u64| {
        let o = ScldGenerateOptions {
            n: 60,
            condition: cond,
            sample: SampleOptions {
                guidance: w,
                sampler: SamplerKind::Ddim,
                steps: Some(25),
                eta: 0.0,
                seed,
                clip_x0: true,
                use_ema: true,
            },
            post_guidance: post,
            keep: 0.8,
            observation: Observation::Mean,
            output: CountsOutput::Counts,
        };
        generate(&run, &o, &device, &mut |_, _| {}).unwrap()
    };
    let a = sample_cells(ConditionChoice::Cluster("A".into()), 1.0, false, 3);
    let b = sample_cells(ConditionChoice::Cluster("B".into()), 1.0, false, 3);
    let (ca, cb) = (
        programme_contrast(&a.x.to_dense()),
        programme_contrast(&b.x.to_dense()),
    );
    // Real contrast: +1.8 for A, −1.8 for B.
    assert!(
        ca > 1.0 && cb < -1.0,
        "condition ignored: A {ca:.2}, B {cb:.2}"
    );
    assert_eq!(a.obs_column("celldiff_condition").unwrap().labels()[0], "A");
    // Same seed, same cells.
    let a2 = sample_cells(ConditionChoice::Cluster("A".into()), 1.0, false, 3);
    assert_eq!(a.x.to_dense(), a2.x.to_dense());
    // Holistic generation mixes both programmes (|contrast| well below a pure group).
    let h = sample_cells(ConditionChoice::Mix, -1.0, false, 4);
    assert!(programme_contrast(&h.x.to_dense()).abs() < 1.0);
    assert_eq!(
        h.obs_column("celldiff_condition").unwrap().labels()[0],
        HOLISTIC
    );
    // Post-guidance keeps better-scored cells than no post-guidance (same draw seed).
    let score = |ad: &AnnData| match ad.obs_column("celldiff_score").unwrap() {
        Column::Numeric(v) => v.iter().sum::<f64>() / v.len() as f64,
        _ => panic!("celldiff_score must be numeric"),
    };
    let off = sample_cells(ConditionChoice::Mix, 1.0, false, 5);
    let on = sample_cells(ConditionChoice::Mix, 1.0, true, 5);
    assert_eq!(on.n_obs(), 60);
    assert!(
        score(&on) > score(&off),
        "{} vs {}",
        score(&on),
        score(&off)
    );
    // Save and load round trip.
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("run");
    run.save(&p, false).unwrap();
    let back = ScldRun::load(&p, &device).unwrap();
    assert_eq!(back.conditions, run.conditions);
    let a3 = {
        let o = ScldGenerateOptions {
            n: 60,
            condition: ConditionChoice::Cluster("A".into()),
            sample: SampleOptions {
                guidance: 1.0,
                sampler: SamplerKind::Ddim,
                steps: Some(25),
                eta: 0.0,
                seed: 3,
                clip_x0: true,
                use_ema: true,
            },
            post_guidance: false,
            keep: 0.8,
            observation: Observation::Mean,
            output: CountsOutput::Counts,
        };
        generate(&back, &o, &device, &mut |_, _| {}).unwrap()
    };
    assert_eq!(a.x.to_dense(), a3.x.to_dense());
    assert!(<crate::scvaeder::Run as crate::RunFiles>::load(&p, &device).is_err());
}
