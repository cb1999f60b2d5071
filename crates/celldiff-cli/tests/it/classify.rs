//! `celldiff classify train|predict` and `celldiff shift` end to end: the classifier directory,
//! the documented obs/obsm/uns keys, accuracy above the majority baseline on held-out cells,
//! the shift outputs on Weinreb (undiff → Monocyte), overwrite protection and bad flags.

use celldiff::anndata::Column;
use celldiff::io::{ReadOptions, read};

use crate::common::{assert_bad_input, assert_ok, celldiff, demo_h5ad, scratch, shared_data};

const WEINREB: &str = "weinreb_larry_hematopoiesis_subset/test_adata_preprocessed.h5ad";

fn stdout_json(o: &std::process::Output) -> serde_json::Value {
    let s = String::from_utf8_lossy(&o.stdout);
    serde_json::from_str(s.lines().last().unwrap_or("").trim()).expect("a JSON line")
}

#[test]
fn classify_train_then_predict_on_the_demo_data() {
    let dir = scratch();
    let clf = dir.join("clf");
    let demo = demo_h5ad();
    let demo = demo.to_str().unwrap();
    let train = |extra: &[&str]| {
        let mut a = vec![
            "classify",
            "train",
            "--data",
            demo,
            "--labels-key",
            "bulk_labels",
            "--classifier-epochs",
            "30",
            "--seed",
            "0",
            "-o",
            clf.to_str().unwrap(),
        ];
        a.extend_from_slice(extra);
        celldiff(&a)
    };
    let o = train(&[]);
    assert_ok(&o);
    let j = stdout_json(&o);
    let acc = j["report"]["accuracy"].as_f64().unwrap();
    let base = j["report"]["majority_baseline"].as_f64().unwrap();
    // bulk_labels: 10 types, the largest ~ 30 % of the cells.
    assert!(
        acc > base + 0.2,
        "held-out accuracy {acc} vs majority {base}"
    );
    for f in [
        "config.json",
        "genes.json",
        "preprocess.json",
        "classifier.bpk",
    ] {
        assert!(clf.join(f).exists(), "{f} missing");
    }
    // An existing directory is kept without --force.
    assert_bad_input(&train(&[]), &["--force"]);

    let out = dir.join("pred.h5ad");
    let o = celldiff([
        "classify",
        "predict",
        "--data",
        demo,
        "--model",
        clf.to_str().unwrap(),
        "--labels-key",
        "bulk_labels",
        "-o",
        out.to_str().unwrap(),
    ]);
    assert_ok(&o);
    let a = read(&out, &ReadOptions::default()).unwrap();
    let Column::Categorical { codes, categories } = a.obs_column("celldiff_cell_type").unwrap()
    else {
        panic!("obs['celldiff_cell_type'] should be categorical");
    };
    assert_eq!(codes.len(), 700);
    assert_eq!(categories.len(), 10);
    let probs = &a
        .obsm
        .iter()
        .find(|(k, _)| k == "celldiff_cell_type_probs")
        .unwrap()
        .1;
    assert_eq!((probs.n_rows, probs.n_cols), (700, 10));
    let uns = &a.uns["celldiff_classify"];
    // Mostly training cells, so accuracy on all cells is at least the held-out one.
    assert!(uns["accuracy"].as_f64().unwrap() >= acc - 0.05, "{uns}");

    // Not a classifier directory: a named error.
    let o = celldiff([
        "classify",
        "predict",
        "--data",
        demo,
        "--model",
        dir.to_str().unwrap(),
        "-o",
        dir.join("x.h5ad").to_str().unwrap(),
    ]);
    assert_bad_input(&o, &["config.json"]);
}

#[test]
fn shift_converts_weinreb_progenitors_and_rejects_unknown_types() {
    let dir = scratch();
    let out = dir.join("shift");
    let data = shared_data(WEINREB);
    let run = |target: &str, out: &std::path::Path| {
        celldiff([
            "shift",
            "--data",
            data.to_str().unwrap(),
            "--labels-key",
            "state_info",
            "--source",
            "undiff",
            "--target",
            target,
            "--lambda",
            "1,2",
            "--latent",
            "20",
            "--epochs",
            "30",
            "--n-top-genes",
            "1000",
            "--classifier-epochs",
            "20",
            "--seed",
            "1",
            "-o",
            out.to_str().unwrap(),
        ])
    };
    let o = run("Monocyte", &out);
    assert_ok(&o);
    let r: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("results.json")).unwrap()).unwrap();
    let outcomes = r["targets"][0]["outcomes"].as_array().unwrap();
    let conv = |kind: &str, l: f64| {
        outcomes
            .iter()
            .find(|o| o["dimensions"] == kind && o["lambda"].as_f64() == Some(l))
            .unwrap()["n_converted"]
            .as_u64()
            .unwrap()
    };
    assert!(conv("top", 2.0) > conv("none", 0.0), "{outcomes:?}");
    assert!(conv("top", 2.0) > conv("random", 2.0), "{outcomes:?}");
    let table = std::fs::read_to_string(out.join("table.md")).unwrap();
    assert!(table.contains("held-out accuracy"), "{table}");
    let genes = std::fs::read_to_string(out.join("genes.tsv")).unwrap();
    assert!(genes.starts_with("target\tlambda\tgene\tn_cells\tmean_change\n"));
    assert!(genes.lines().count() > 1);

    let o = run("Neuron", &dir.join("bad"));
    assert_bad_input(&o, &["'Neuron'", "Monocyte"]);
    assert!(!dir.join("bad").join("results.json").exists());
}
