//! numpy / scipy / pandas objects ↔ celldiff's [`AnnData`].
//!
//! Python (`python/celldiff/_convert.py`) reduces an AnnData to plain parts: a matrix dict
//! (`kind` `dense` with a 2-D array, or `csr` with `data`, `indices`, `indptr`, `shape`), the
//! names, the `obs` columns a model needs as `{"codes": int array, "categories": [str]}`, and
//! `uns` as JSON text. Arrays are read through the buffer protocol in their own dtype (float32,
//! float64, any integer width; C or Fortran order, views included) and copied once into
//! `f32` rows, as the `.h5ad` reader stores X; unsorted CSR rows are sorted. Non-finite values
//! are refused here with the cell and gene named.

use celldiff::anndata::{AnnData, Column, DenseMatrix, Matrix};
use numpy::ndarray::Array2;
use numpy::{IntoPyArray, PyReadonlyArrayDyn, PyUntypedArrayMethods};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};

/// A required dict entry, with the field named when missing.
fn item<'py>(d: &Bound<'py, PyDict>, key: &str, field: &str) -> PyResult<Bound<'py, PyAny>> {
    d.get_item(key)?
        .ok_or_else(|| PyValueError::new_err(format!("{field}: missing `{key}`")))
}

/// Any numeric array as `f32` values in logical (C) order, with its shape.
fn f32_values(obj: &Bound<'_, PyAny>, field: &str) -> PyResult<(Vec<f32>, Vec<usize>)> {
    macro_rules! numbers {
        ($($t:ty),*) => {{
            $(
                if let Ok(a) = obj.extract::<PyReadonlyArrayDyn<'_, $t>>() {
                    let v: Vec<f32> = a.as_array().iter().map(|&v| v as f32).collect();
                    return Ok((v, a.shape().to_vec()));
                }
            )*
        }};
    }
    numbers!(f32, f64, i8, i16, i32, i64, u8, u16, u32, u64);
    if let Ok(a) = obj.extract::<PyReadonlyArrayDyn<'_, bool>>() {
        let v: Vec<f32> = a
            .as_array()
            .iter()
            .map(|&v| f32::from(u8::from(v)))
            .collect();
        return Ok((v, a.shape().to_vec()));
    }
    Err(PyValueError::new_err(format!(
        "{field}: expected a numpy array of numbers (float32/float64/integer), got {}",
        obj.get_type()
            .name()
            .map(|n| n.to_string())
            .unwrap_or_default()
    )))
}

/// Any integer array as `usize` values (CSR indices and pointers).
fn index_values(obj: &Bound<'_, PyAny>, field: &str) -> PyResult<Vec<usize>> {
    macro_rules! ints {
        ($($t:ty),*) => {{
            $(
                if let Ok(a) = obj.extract::<PyReadonlyArrayDyn<'_, $t>>() {
                    return a
                        .as_array()
                        .iter()
                        .map(|&v| {
                            usize::try_from(v).map_err(|_| {
                                PyValueError::new_err(format!("{field}: negative index {v}"))
                            })
                        })
                        .collect();
                }
            )*
        }};
    }
    ints!(i32, i64, u32, u64);
    Err(PyValueError::new_err(format!(
        "{field}: expected an integer numpy array"
    )))
}

/// The matrix dict (see the module doc) as a celldiff [`Matrix`] `[n_obs, n_vars]`.
///
/// # Errors
/// `ValueError` naming `field` for a wrong kind, shape or dtype, out-of-range indices, or
/// NaN/infinite values (the first one's row and column given).
pub(crate) fn matrix_from_py(d: &Bound<'_, PyDict>, field: &str) -> PyResult<Matrix> {
    let kind: String = item(d, "kind", field)?.extract()?;
    let m = match kind.as_str() {
        "dense" => {
            let (data, shape) = f32_values(&item(d, "data", field)?, field)?;
            if shape.len() != 2 {
                return Err(PyValueError::new_err(format!(
                    "{field}: expected a 2-D array [n_obs, n_vars], got {} dimensions",
                    shape.len()
                )));
            }
            Matrix::Dense(DenseMatrix {
                n_rows: shape[0],
                n_cols: shape[1],
                data,
            })
        }
        "csr" => {
            let (data, _) = f32_values(&item(d, "data", field)?, &format!("{field}.data"))?;
            let mut indices =
                index_values(&item(d, "indices", field)?, &format!("{field}.indices"))?;
            let indptr = index_values(&item(d, "indptr", field)?, &format!("{field}.indptr"))?;
            let (r, c): (usize, usize) = item(d, "shape", field)?.extract()?;
            let mut data = data;
            if indptr.len() != r + 1
                || indptr.last() != Some(&data.len())
                || indices.len() != data.len()
            {
                return Err(PyValueError::new_err(format!(
                    "{field}: inconsistent CSR matrix (shape {r}×{c}, indptr {}, indices {}, data {})",
                    indptr.len(),
                    indices.len(),
                    data.len()
                )));
            }
            for w in indptr.windows(2) {
                let (lo, hi) = (w[0], w[1]);
                if lo > hi || hi > data.len() {
                    return Err(PyValueError::new_err(format!(
                        "{field}: indptr is not non-decreasing"
                    )));
                }
                if indices[lo..hi].windows(2).any(|p| p[0] >= p[1]) {
                    let mut pairs: Vec<(usize, f32)> = indices[lo..hi]
                        .iter()
                        .copied()
                        .zip(data[lo..hi].iter().copied())
                        .collect();
                    pairs.sort_by_key(|p| p.0);
                    if pairs.windows(2).any(|p| p[0].0 == p[1].0) {
                        return Err(PyValueError::new_err(format!(
                            "{field}: duplicate column indices in a row (call sum_duplicates() first)"
                        )));
                    }
                    for (k, (j, v)) in pairs.into_iter().enumerate() {
                        indices[lo + k] = j;
                        data[lo + k] = v;
                    }
                }
            }
            if let Some(&j) = indices.iter().find(|&&j| j >= c) {
                return Err(PyValueError::new_err(format!(
                    "{field}: column index {j} out of range for {c} columns"
                )));
            }
            let m = sprs::CsMat::try_new((r, c), indptr, indices, data)
                .map_err(|(_, _, _, e)| PyValueError::new_err(format!("{field}: {e}")))?;
            Matrix::Csr(m)
        }
        other => {
            return Err(PyValueError::new_err(format!(
                "{field}: unknown matrix kind `{other}` (expected dense or csr)"
            )));
        }
    };
    check_finite(&m, field)?;
    Ok(m)
}

fn check_finite(m: &Matrix, field: &str) -> PyResult<()> {
    let bad = match m {
        Matrix::Dense(d) => d
            .data
            .iter()
            .position(|v| !v.is_finite())
            .map(|k| (k / d.n_cols.max(1), k % d.n_cols.max(1), d.data[k])),
        Matrix::Csr(c) => c.outer_iterator().enumerate().find_map(|(i, row)| {
            row.iter()
                .find(|(_, v)| !v.is_finite())
                .map(|(j, v)| (i, j, *v))
        }),
    };
    match bad {
        Some((i, j, v)) => Err(PyValueError::new_err(format!(
            "{field}: value {v} at cell {i}, gene {j}; expected finite numbers (counts or \
             log-normalised expression)"
        ))),
        None => Ok(()),
    }
}

/// The AnnData parts dict `{"x", "var_names", "obs_names"?, "obs"?, "layers"?, "uns"?}` as a celldiff
/// [`AnnData`]; `obs` holds categorical columns `{"codes", "categories"}`.
///
/// # Errors
/// As [`matrix_from_py`]; `ValueError` when the names do not match the matrix's shape.
pub(crate) fn anndata_from_py(d: &Bound<'_, PyDict>, field: &str) -> PyResult<AnnData> {
    let x = matrix_from_py(
        item(d, "x", field)?.cast::<PyDict>()?,
        &format!("{field}.X"),
    )?;
    let var_names: Vec<String> = item(d, "var_names", field)?.extract()?;
    let (n, g) = x.shape();
    if var_names.len() != g {
        return Err(PyValueError::new_err(format!(
            "{field}: {} var_names for {g} genes in X",
            var_names.len()
        )));
    }
    let mut ad = AnnData::new(x, var_names);
    if let Some(names) = d.get_item("obs_names")? {
        let names: Vec<String> = names.extract()?;
        if names.len() != n {
            return Err(PyValueError::new_err(format!(
                "{field}: {} obs_names for {n} cells in X",
                names.len()
            )));
        }
        ad.obs_names = names;
    }
    if let Some(obs) = d.get_item("obs")? {
        for (k, v) in obs.cast::<PyDict>()?.iter() {
            let key: String = k.extract()?;
            let col = v.cast::<PyDict>()?;
            let codes = index_or_missing(&item(col, "codes", &key)?, &key)?;
            let categories: Vec<String> = item(col, "categories", &key)?.extract()?;
            if let Some(&c) = codes
                .iter()
                .find(|&&c| c < -1 || c >= categories.len() as i32)
            {
                return Err(PyValueError::new_err(format!(
                    "{field}: obs['{key}'] has category code {c}; expected -1 (missing) or \
                     0..{} for its {} categories",
                    categories.len(),
                    categories.len()
                )));
            }
            if codes.len() != n {
                return Err(PyValueError::new_err(format!(
                    "{field}: obs['{key}'] has {} values for {n} cells",
                    codes.len()
                )));
            }
            ad.set_obs(&key, Column::Categorical { codes, categories });
        }
    }
    if let Some(layers) = d.get_item("layers")? {
        for (k, v) in layers.cast::<PyDict>()?.iter() {
            let key: String = k.extract()?;
            let m = matrix_from_py(v.cast::<PyDict>()?, &format!("{field}.layers['{key}']"))?;
            if m.shape() != (n, g) {
                return Err(PyValueError::new_err(format!(
                    "{field}: layers['{key}'] has shape {:?}, X has ({n}, {g})",
                    m.shape()
                )));
            }
            ad.layers.push((key, m));
        }
    }
    if let Some(uns) = d.get_item("uns")? {
        let text: String = uns.extract()?;
        if let Ok(serde_json::Value::Object(m)) = serde_json::from_str(&text) {
            ad.uns = m;
        }
    }
    Ok(ad)
}

/// pandas categorical codes (`-1` = missing) as `i32` (range-checked by the caller).
fn index_or_missing(obj: &Bound<'_, PyAny>, key: &str) -> PyResult<Vec<i32>> {
    if let Ok(a) = obj.extract::<PyReadonlyArrayDyn<'_, i32>>() {
        return Ok(a.as_array().iter().copied().collect());
    }
    let (v, _) = f32_values(obj, &format!("obs['{key}'] codes"))?;
    Ok(v.into_iter().map(|c| c as i32).collect())
}

/// A celldiff [`Matrix`] as a dict for Python: dense `float32 [n_obs, n_vars]` or CSR parts
/// (`data` float32, `indices` int32, `indptr` int64).
pub(crate) fn matrix_to_py<'py>(py: Python<'py>, m: Matrix) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    match m {
        Matrix::Dense(x) => {
            let a = Array2::from_shape_vec((x.n_rows, x.n_cols), x.data)
                .map_err(|e| PyValueError::new_err(e.to_string()))?;
            d.set_item("kind", "dense")?;
            d.set_item("data", a.into_pyarray(py))?;
        }
        Matrix::Csr(c) => {
            let (r, cols) = (c.rows(), c.cols());
            let (indptr, indices, data) = c.into_raw_storage();
            d.set_item("kind", "csr")?;
            d.set_item("shape", (r, cols))?;
            d.set_item("data", data.into_pyarray(py))?;
            d.set_item(
                "indices",
                indices
                    .into_iter()
                    .map(|j| j as i32)
                    .collect::<Vec<_>>()
                    .into_pyarray(py),
            )?;
            d.set_item(
                "indptr",
                indptr
                    .into_iter()
                    .map(|p| p as i64)
                    .collect::<Vec<_>>()
                    .into_pyarray(py),
            )?;
        }
    }
    Ok(d)
}

/// A dense matrix as a `float32` numpy array `[n_rows, n_cols]`.
pub(crate) fn dense_to_py<'py>(py: Python<'py>, m: DenseMatrix) -> PyResult<Bound<'py, PyAny>> {
    let a = Array2::from_shape_vec((m.n_rows, m.n_cols), m.data)
        .map_err(|e| PyValueError::new_err(e.to_string()))?;
    Ok(a.into_pyarray(py).into_any())
}

/// An `obs` column as `{"kind": "categorical", "codes", "categories"}` (or `string`,
/// `numeric`, `bool` with `values`).
pub(crate) fn column_to_py<'py>(py: Python<'py>, col: Column) -> PyResult<Bound<'py, PyDict>> {
    let c = PyDict::new(py);
    match col {
        Column::Categorical { codes, categories } => {
            c.set_item("kind", "categorical")?;
            c.set_item("codes", codes.into_pyarray(py))?;
            c.set_item("categories", categories)?;
        }
        Column::String(v) => {
            c.set_item("kind", "string")?;
            c.set_item("values", v)?;
        }
        Column::Numeric(v) => {
            c.set_item("kind", "numeric")?;
            c.set_item("values", v.into_pyarray(py))?;
        }
        Column::Bool(v) => {
            c.set_item("kind", "bool")?;
            c.set_item("values", v)?;
        }
    }
    Ok(c)
}

/// A celldiff [`AnnData`] as a dict of parts that `python/celldiff/_convert.py` assembles:
/// `X`, `obs_names`, `var_names`, `obs` and `var` (`{name: {"kind", ...}}`), `obsm`, `layers`, `uns`
/// (JSON text; JSON null is Python's None, anndata's null).
pub(crate) fn anndata_to_py<'py>(py: Python<'py>, ad: AnnData) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("uns", serde_json::Value::Object(ad.uns).to_string())?;
    d.set_item("obs_names", PyList::new(py, &ad.obs_names)?)?;
    d.set_item("var_names", PyList::new(py, &ad.var_names)?)?;
    let obs = PyDict::new(py);
    for (name, col) in ad.obs {
        obs.set_item(name, column_to_py(py, col)?)?;
    }
    d.set_item("obs", obs)?;
    let var = PyDict::new(py);
    for (name, col) in ad.var {
        var.set_item(name, column_to_py(py, col)?)?;
    }
    d.set_item("var", var)?;
    let obsm = PyDict::new(py);
    for (k, m) in ad.obsm {
        obsm.set_item(k, dense_to_py(py, m)?)?;
    }
    d.set_item("obsm", obsm)?;
    let layers = PyDict::new(py);
    for (k, m) in ad.layers {
        layers.set_item(k, matrix_to_py(py, m)?)?;
    }
    d.set_item("layers", layers)?;
    d.set_item("X", matrix_to_py(py, ad.x)?)?;
    Ok(d)
}

/// Annotations to write into the caller's AnnData (`celldiff::io::h5ad::Annotations`) as
/// `{"obs": {key: column}, "obsm": {key: ndarray}, "obsp": {key: CSR parts}, "uns": JSON
/// text}`.
pub(crate) fn annotations_to_py<'py>(
    py: Python<'py>,
    ann: celldiff::io::h5ad::Annotations,
) -> PyResult<Bound<'py, PyDict>> {
    let out = PyDict::new(py);
    let obs = PyDict::new(py);
    for (k, c) in ann.obs {
        obs.set_item(k, column_to_py(py, c)?)?;
    }
    out.set_item("obs", obs)?;
    let obsm = PyDict::new(py);
    for (k, m) in ann.obsm {
        obsm.set_item(k, dense_to_py(py, m)?)?;
    }
    out.set_item("obsm", obsm)?;
    let obsp = PyDict::new(py);
    for (k, m) in ann.obsp {
        obsp.set_item(k, matrix_to_py(py, Matrix::Csr(m))?)?;
    }
    out.set_item("obsp", obsp)?;
    out.set_item("uns", serde_json::Value::Object(ann.uns).to_string())?;
    Ok(out)
}
