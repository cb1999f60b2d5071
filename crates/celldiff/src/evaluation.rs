//! Generated cells against real ones, as `celldiff evaluate` and the Python
//! `celldiff.evaluate` score them: the real cells are put through the preprocessing a
//! generated file records (`uns['celldiff']['preprocess']`) and the generated file's gene
//! order, then both go to [`crate::metrics::evaluate`] (scDiffusion's random-forest protocol
//! and the distribution metrics).
//!
//! Shared by the command line and the Python bindings so that both give the same numbers.

use crate::anndata::{AnnData, DenseMatrix};
use crate::error::{Error, Result};
use crate::pp::FittedPreprocess;

/// The preprocessing recorded in `uns['celldiff']['preprocess']` of a generated AnnData (a
/// dict; a JSON string in files of celldiff ≤ 0.1), if any. `source` names the file (or the
/// Python object) in the error.
///
/// # Errors
/// [`Error::InvalidInput`] when the entry exists but is not a celldiff preprocessing record.
pub fn recorded_preprocess(generated: &AnnData, source: &str) -> Result<Option<FittedPreprocess>> {
    let Some(pp) = generated
        .uns
        .get("celldiff")
        .and_then(|m| m.get("preprocess"))
    else {
        return Ok(None);
    };
    let parsed: std::result::Result<FittedPreprocess, _> = match pp {
        serde_json::Value::String(s) => serde_json::from_str(s),
        v => serde_json::from_value(lists_from_position_maps(v.clone())),
    };
    parsed.map(Some).map_err(|e| {
        Error::InvalidInput(format!(
            "{source}: uns['celldiff']['preprocess'] is not a celldiff preprocessing record ({e})"
        ))
    })
}

/// `v` with every object keyed exactly `"0"`, `"1"`, …, `"n-1"` turned back into a list. h5ad
/// stores a list of mixed items (the preprocessing `steps`) as such a dict; celldiff's reader
/// restores the list from its marker attribute, but a file that went through anndata
/// (`sc.read_h5ad(...).write_h5ad(...)`, or an AnnData built in Python) has lost the marker.
fn lists_from_position_maps(v: serde_json::Value) -> serde_json::Value {
    use serde_json::Value;
    match v {
        Value::Object(m) => {
            // Checked as a set: serde_json's map may keep keys sorted ("10" < "2").
            let positional = !m.is_empty() && (0..m.len()).all(|i| m.contains_key(&i.to_string()));
            if positional {
                let mut m = m;
                Value::Array(
                    (0..m.len())
                        .map(|i| {
                            lists_from_position_maps(
                                m.remove(&i.to_string()).unwrap_or(Value::Null),
                            )
                        })
                        .collect(),
                )
            } else {
                Value::Object(
                    m.into_iter()
                        .map(|(k, x)| (k, lists_from_position_maps(x)))
                        .collect(),
                )
            }
        }
        Value::Array(a) => Value::Array(a.into_iter().map(lists_from_position_maps).collect()),
        other => other,
    }
}

/// Brings `real` into the generated cells' space (the recorded preprocessing `pp`, then the
/// generated cells' gene order) and returns both as dense matrices.
///
/// # Shapes
/// real `[n_real, n_genes_real]` (the kind of data the run was trained on, e.g. raw counts),
/// generated `[n_gen, n_genes]` → (`[n_real', n_genes]`, `[n_gen, n_genes]`) in the model's
/// space (log1p-normalised HVGs for the defaults; a count output's `layers['log1p_norm']`).
///
/// # Errors
/// [`Error::InvalidInput`] when the preprocessing cannot be applied to `real` (another kind
/// of data) or genes of the generated cells are missing from `real` (the first ten named).
pub fn align(
    real: &AnnData,
    generated: &AnnData,
    pp: Option<&FittedPreprocess>,
) -> Result<(DenseMatrix, DenseMatrix)> {
    let real = match pp {
        Some(pp) => pp.transform(real).map_err(|e| {
            Error::InvalidInput(format!(
                "cannot apply the generated cells' preprocessing to the real cells (are they \
                 the same kind of data, e.g. raw counts?): {e}"
            ))
        })?,
        None => real.clone(),
    };
    let pos: std::collections::HashMap<&str, usize> = real
        .var_names
        .iter()
        .enumerate()
        .map(|(i, g)| (g.as_str(), i))
        .collect();
    let mut idx = Vec::with_capacity(generated.n_vars());
    let mut missing = Vec::new();
    for g in &generated.var_names {
        match pos.get(g.as_str()) {
            Some(&i) => idx.push(i),
            None => missing.push(g.clone()),
        }
    }
    if !missing.is_empty() {
        return Err(Error::InvalidInput(format!(
            "{} of the generated cells' {} genes are missing from the real cells (first: {:?})",
            missing.len(),
            generated.n_vars(),
            &missing[..missing.len().min(10)]
        )));
    }
    let r = real.select_vars(&idx).x.to_dense();
    // Count output keeps the model's space in layers['log1p_norm'] (X holds the counts).
    Ok((r, crate::scvaeder::model_space(generated)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::anndata::Matrix;
    use crate::pp::{PreprocessConfig, fit_transform};

    /// A generated file's preprocessing record whose `steps` list went through anndata (a
    /// dict keyed "0", "1", … without celldiff's list marker) still parses, as the original.
    #[test]
    fn a_preprocessing_record_whose_lists_became_position_dicts_still_parses() {
        let x = crate::anndata::DenseMatrix {
            n_rows: 4,
            n_cols: 3,
            data: vec![1., 0., 3., 2., 5., 0., 0., 1., 1., 4., 2., 0.],
        };
        let ad = AnnData::new(Matrix::Dense(x), vec!["a".into(), "b".into(), "c".into()]);
        let cfg = PreprocessConfig {
            n_top_genes: None,
            ..PreprocessConfig::default()
        };
        let (_, fitted) = fit_transform(&ad, &cfg).unwrap();
        let mut v = serde_json::to_value(&fitted).unwrap();
        let steps = v["steps"].as_array().unwrap().clone();
        assert!(steps.len() >= 2, "normalize_total and log1p are recorded");
        v["steps"] = serde_json::Value::Object(
            steps
                .into_iter()
                .enumerate()
                .map(|(i, s)| (i.to_string(), s))
                .collect(),
        );
        let mut g = ad.clone();
        g.uns
            .insert("celldiff".into(), serde_json::json!({ "preprocess": v }));
        let back = recorded_preprocess(&g, "gen.h5ad").unwrap().unwrap();
        assert_eq!(
            serde_json::to_value(&back).unwrap(),
            serde_json::to_value(&fitted).unwrap()
        );
        // Not a record at all: an error that names the source and the field.
        g.uns.insert(
            "celldiff".into(),
            serde_json::json!({ "preprocess": {"steps": 3} }),
        );
        let e = recorded_preprocess(&g, "gen.h5ad").unwrap_err().to_string();
        assert!(
            e.contains("gen.h5ad") && e.contains("uns['celldiff']['preprocess']"),
            "{e}"
        );
    }
}
