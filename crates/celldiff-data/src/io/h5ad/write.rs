//! The `.h5ad` writer: the AnnData ≥ 0.8 on-disk layout written by hand on `hdf5-pure`'s
//! `FileBuilder` (see the parent module's doc for why no AnnData crate is used).

use super::*;

/// Writes `adata` as an AnnData `.h5ad` file following the anndata ≥ 0.8 on-disk
/// specification, readable (without warnings) by Python `anndata.read_h5ad` ≥ 0.8.
///
/// Layout: root `encoding-type = anndata` (0.1.0); `X` as a dense `f32` array `[n_cells,
/// n_genes]` (`array`, 0.2.0) or a `csr_matrix` group (0.1.0; `data` f32, `indices` i32,
/// `indptr` i32 or i64, attribute `shape`); `obs`/`var` as `dataframe` groups (0.2.0) with
/// `_index`, `column-order`, categorical columns (`categorical` 0.2.0: `codes` int8/16/32 +
/// `categories` string-array), strings (`string-array`), numbers (f64 `array`) and bools (HDF5
/// bool enum, as h5py); `obsm` (f32 arrays), `layers` (as X), empty `varm`/`varp`, `obsp` empty here (see
/// [`write_h5ad_with_obsp`]); `uns`
/// from JSON in anndata's own encodings (see `uns_node`): objects → `dict` groups, strings →
/// `string` scalars, numbers and bools → `numeric-scalar`, `null` → anndata's `null` element
/// (read back as `None`), lists of numbers/bools → `array` (rectangular nested number lists →
/// 2-D), lists of strings → `string-array`, `[]` → an empty f64 `array`, and any other list
/// (mixed types, objects, nulls) → a `dict` keyed `"0"`, `"1"`, ...; nothing is stored as JSON
/// text. Values are written as given (counts stay counts).
///
/// The file is written uncompressed to a temporary file in the same directory and renamed over
/// `path`, so an existing regular file at `path` is replaced atomically and a failed write
/// leaves no partial output. A directory, symbolic link, FIFO or device at `path` is never
/// replaced ([`Error::Refused`]). Refusing to overwrite a file is the caller's decision: use
/// [`crate::io::output::write_file`] around this call for create-only writes.
///
/// # Errors
/// - [`Error::InvalidInput`]: inconsistent `adata` (names, columns, `obsm` or layers not
///   matching `X`'s shape, duplicate or reserved (`_index`) column names, keys containing `/`,
///   category codes out of range).
/// - [`Error::Io`]: the directory cannot be created or is not writable, the rename failed
///   (missing parent directories are created).
/// - [`Error::Internal`]: the HDF5 encoder refused the data.
pub fn write_h5ad(path: &Path, adata: &AnnData) -> Result<()> {
    write_h5ad_with_obsp(path, adata, &[])
}

/// [`write_h5ad`] with pairwise per-cell matrices in `obsp` (anndata's `adata.obsp`): each
/// `(name, matrix)` is written as `obsp/<name>`, a `csr_matrix` group (encoding-version 0.1.0;
/// `data` f32, `indices` i32, `indptr` i32 or i64, attribute `shape = [n_obs, n_obs]`) exactly
/// like a sparse `X`. A CSC matrix is converted to CSR. [`read_obsp`] reads them back.
///
/// # Errors
/// Those of [`write_h5ad`], and [`Error::InvalidInput`] if an `obsp` matrix is not
/// `[n_obs, n_obs]`, two have the same name, or a name is empty or contains `/`.
pub fn write_h5ad_with_obsp(
    path: &Path,
    adata: &AnnData,
    obsp: &[(String, CsMat<f32>)],
) -> Result<()> {
    validate_for_write(adata)?;
    validate_obsp(adata.n_obs(), obsp)?;
    let mut fb = FileBuilder::new();
    fb.set_attr("encoding-type", vstr("anndata"));
    fb.set_attr("encoding-version", vstr("0.1.0"));
    for (name, node) in anndata_nodes(adata, obsp)? {
        node.emit_root(&mut fb, &name);
    }

    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let file_name = path
        .file_name()
        .ok_or_else(|| Error::InvalidInput(format!("{}: not a file path", path.display())))?;
    std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
    // Temporary sibling (deleted on every error path by the guard), then a rename that replaces
    // only a regular file: never a directory, link, FIFO or device (see `io::output`).
    let target = dir.join(file_name);
    crate::io::output::remove_stale_temps(&target);
    let tmp = crate::io::output::TempPath::new(crate::io::output::temp_sibling(&target));
    let mut f = std::fs::File::create_new(tmp.path()).map_err(|e| Error::io(tmp.path(), e))?;
    fb.finish_to(&mut f).map_err(|e| match e {
        hdf5_pure::Error::Io(io) => Error::io(tmp.path(), io),
        other => Error::Internal(format!("writing {}: {other}", path.display())),
    })?;
    f.sync_all().map_err(|e| Error::io(tmp.path(), e))?;
    drop(f);
    crate::io::output::publish_file(tmp.path(), &target, true)?;
    tmp.keep();
    Ok(())
}

pub(super) fn vstr(s: &str) -> AttrValue {
    AttrValue::VarLenString(s.to_string())
}

/// One HDF5 object to be written: a dataset (a closure that fills `hdf5-pure`'s
/// [`DatasetBuilder`]) or a group (attributes and named members).
///
/// The encoders below build these trees once; [`H5Node::emit_root`] writes them into a new
/// file ([`FileBuilder`]) and the annotated-copy editor (`h5ad_patch`) stages them into an
/// existing file opened with `File::open_rw`, so both paths write the same bytes.
pub(crate) enum H5Node<'a> {
    /// A dataset: the closure sets its data, shape and attributes.
    Dataset(Box<dyn FnOnce(&mut DatasetBuilder) + 'a>),
    /// A group: its attributes and its members in order.
    Group(Vec<(String, AttrValue)>, Vec<(String, H5Node<'a>)>),
}

impl<'a> H5Node<'a> {
    fn dataset(f: impl FnOnce(&mut DatasetBuilder) + 'a) -> Self {
        H5Node::Dataset(Box::new(f))
    }

    /// A group with anndata's `encoding-type`/`encoding-version` attributes.
    fn encoded_group(ty: &str, version: &str, members: Vec<(String, H5Node<'a>)>) -> Self {
        H5Node::Group(enc_attrs(ty, version), members)
    }

    /// Writes this node as `name` in the root of `fb`.
    fn emit_root(self, fb: &mut FileBuilder, name: &str) {
        match self {
            H5Node::Dataset(f) => f(fb.create_dataset(name)),
            H5Node::Group(attrs, members) => {
                let mut g = fb.create_group(name);
                Self::fill(&mut g, attrs, members);
                fb.add_group(g.finish());
            }
        }
    }

    /// Writes this node as `name` in `g`.
    fn emit(self, g: &mut GroupBuilder, name: &str) {
        match self {
            H5Node::Dataset(f) => f(g.create_dataset(name)),
            H5Node::Group(attrs, members) => {
                let mut sub = g.create_group(name);
                Self::fill(&mut sub, attrs, members);
                g.add_group(sub.finish());
            }
        }
    }

    fn fill(g: &mut GroupBuilder, attrs: Vec<(String, AttrValue)>, members: Vec<(String, Self)>) {
        for (k, v) in attrs {
            g.set_attr(&k, v);
        }
        for (k, m) in members {
            m.emit(g, &k);
        }
    }
}

fn enc_attrs(ty: &str, version: &str) -> Vec<(String, AttrValue)> {
    vec![
        ("encoding-type".to_string(), vstr(ty)),
        ("encoding-version".to_string(), vstr(version)),
    ]
}

fn set_enc_ds(ds: &mut DatasetBuilder, ty: &str, version: &str) {
    ds.set_attr("encoding-type", vstr(ty));
    ds.set_attr("encoding-version", vstr(version));
}

#[cfg(test)]
pub(super) fn set_enc_group(g: &mut GroupBuilder, ty: &str, version: &str) {
    g.set_attr("encoding-type", vstr(ty));
    g.set_attr("encoding-version", vstr(version));
}

/// An anndata `dict` group (encoding-version 0.1.0) with `members`.
pub(crate) fn dict_node(members: Vec<(String, H5Node<'_>)>) -> H5Node<'_> {
    H5Node::encoded_group("dict", "0.1.0", members)
}

/// The root members of an AnnData file in anndata's order: `X`, `obs`, `var`, `obsm`,
/// `layers`, `obsp`, `varm`, `varp`, `uns` (all validated by the caller).
fn anndata_nodes<'a>(
    adata: &'a AnnData,
    obsp: &'a [(String, CsMat<f32>)],
) -> Result<Vec<(String, H5Node<'a>)>> {
    let mut out = vec![
        ("X".to_string(), matrix_node(&adata.x)),
        (
            "obs".to_string(),
            dataframe_node(&adata.obs_names, &adata.obs)?,
        ),
        (
            "var".to_string(),
            dataframe_node(&adata.var_names, &adata.var)?,
        ),
    ];
    let obsm = adata
        .obsm
        .iter()
        .map(|(k, m)| (k.clone(), dense_node(m)))
        .collect();
    out.push(("obsm".to_string(), dict_node(obsm)));
    let layers = adata
        .layers
        .iter()
        .map(|(k, m)| (k.clone(), matrix_node(m)))
        .collect();
    out.push(("layers".to_string(), dict_node(layers)));
    let obsp = obsp.iter().map(|(k, m)| (k.clone(), csr_node(m))).collect();
    out.push(("obsp".to_string(), dict_node(obsp)));
    for empty in ["varm", "varp"] {
        out.push((empty.to_string(), dict_node(Vec::new())));
    }
    out.push(("uns".to_string(), uns_map_node(&adata.uns, 0)?));
    Ok(out)
}

/// h5py's boolean type: an enum over int8 with `FALSE = 0`, `TRUE = 1`.
fn bool_type() -> Result<Datatype> {
    EnumTypeBuilder::with_base(make_i8_type())
        .value("FALSE", 0)
        .value("TRUE", 1)
        .build()
        .map_err(|e| Error::Internal(format!("building the HDF5 bool type: {e}")))
}

/// A `string-array` (0.2.0) of variable-length UTF-8 strings.
pub(crate) fn strings_node<'a>(values: impl AsRef<[String]> + 'a) -> H5Node<'a> {
    H5Node::dataset(move |ds| {
        let refs: Vec<&str> = values.as_ref().iter().map(String::as_str).collect();
        ds.with_vlen_strings(&refs);
        set_enc_ds(ds, "string-array", "0.2.0");
    })
}

/// A dense `f32` `array` (0.2.0) of shape `[n_rows, n_cols]`.
pub(crate) fn dense_node(d: &DenseMatrix) -> H5Node<'_> {
    H5Node::dataset(move |ds| {
        ds.with_f32_data(&d.data)
            .with_shape(&[d.n_rows as u64, d.n_cols as u64]);
        set_enc_ds(ds, "array", "0.2.0");
    })
}

fn matrix_node(m: &Matrix) -> H5Node<'_> {
    match m {
        Matrix::Dense(d) => dense_node(d),
        Matrix::Csr(c) => csr_node(c),
    }
}

/// A sparse matrix as an anndata `csr_matrix` group (0.1.0; `data` f32, `indices` i32,
/// `indptr` i32 or i64, attribute `shape`). CSC input is converted; column indices are
/// sorted per row.
pub(crate) fn csr_node(c: &CsMat<f32>) -> H5Node<'static> {
    let (n_rows, n_cols) = (c.rows(), c.cols());
    let mut indptr: Vec<i64> = Vec::with_capacity(n_rows + 1);
    let mut indices: Vec<i32> = Vec::with_capacity(c.nnz());
    let mut data: Vec<f32> = Vec::with_capacity(c.nnz());
    indptr.push(0);
    let converted;
    let csr = if c.is_csr() {
        c
    } else {
        converted = c.to_csr();
        &converted
    };
    for row in csr.outer_iterator() {
        let mut entries: Vec<(usize, f32)> = row.iter().map(|(j, &v)| (j, v)).collect();
        if entries.windows(2).any(|w| w[0].0 > w[1].0) {
            entries.sort_unstable_by_key(|e| e.0);
        }
        for (j, v) in entries {
            indices.push(j as i32);
            data.push(v);
        }
        indptr.push(indices.len() as i64);
    }
    let mut attrs = enc_attrs("csr_matrix", "0.1.0");
    attrs.push((
        "shape".to_string(),
        AttrValue::I64Array(vec![n_rows as i64, n_cols as i64]),
    ));
    let indptr_node = if indices.len() <= i32::MAX as usize {
        let p32: Vec<i32> = indptr.iter().map(|&x| x as i32).collect();
        H5Node::dataset(move |ds| {
            ds.with_i32_data(&p32);
        })
    } else {
        H5Node::dataset(move |ds| {
            ds.with_i64_data(&indptr);
        })
    };
    H5Node::Group(
        attrs,
        vec![
            (
                "data".to_string(),
                H5Node::dataset(move |ds| {
                    ds.with_f32_data(&data);
                }),
            ),
            (
                "indices".to_string(),
                H5Node::dataset(move |ds| {
                    ds.with_i32_data(&indices);
                }),
            ),
            ("indptr".to_string(), indptr_node),
        ],
    )
}

/// One `obs`/`var` column: `categorical` (0.2.0; `codes` int8/16/32 by the number of
/// categories + `categories` string-array), `string-array`, an f64 `array`, or an h5py bool
/// `array`.
pub(crate) fn column_node(col: &Column) -> Result<H5Node<'_>> {
    Ok(match col {
        Column::Categorical { codes, categories } => {
            let n_cat = categories.len();
            let codes_node = H5Node::dataset(move |ds| {
                if n_cat < i8::MAX as usize {
                    let v: Vec<i8> = codes.iter().map(|&c| c as i8).collect();
                    ds.with_i8_data(&v);
                } else if n_cat < i16::MAX as usize {
                    let v: Vec<i16> = codes.iter().map(|&c| c as i16).collect();
                    ds.with_i16_data(&v);
                } else {
                    ds.with_i32_data(codes);
                }
                set_enc_ds(ds, "array", "0.2.0");
            });
            let mut attrs = enc_attrs("categorical", "0.2.0");
            attrs.push(("ordered".to_string(), AttrValue::I8(0)));
            H5Node::Group(
                attrs,
                vec![
                    ("codes".to_string(), codes_node),
                    (
                        "categories".to_string(),
                        strings_node(categories.as_slice()),
                    ),
                ],
            )
        }
        Column::String(v) => strings_node(v.as_slice()),
        Column::Numeric(v) => H5Node::dataset(move |ds| {
            ds.with_f64_data(v);
            set_enc_ds(ds, "array", "0.2.0");
        }),
        Column::Bool(v) => {
            let ty = bool_type()?;
            let bytes: Vec<u8> = v.iter().map(|&b| u8::from(b)).collect();
            H5Node::dataset(move |ds| {
                ds.with_enum_u8_data(ty, &bytes);
                set_enc_ds(ds, "array", "0.2.0");
            })
        }
    })
}

/// The `column-order` attribute of a dataframe with columns `names` (anndata writes an empty
/// float array when there are none).
pub(crate) fn column_order(names: Vec<String>) -> AttrValue {
    if names.is_empty() {
        AttrValue::F64Array(Vec::new())
    } else {
        AttrValue::VarLenStringArray(names)
    }
}

fn dataframe_node<'a>(index: &'a [String], frame: &'a Frame) -> Result<H5Node<'a>> {
    let mut attrs = enc_attrs("dataframe", "0.2.0");
    attrs.push(("_index".to_string(), vstr("_index")));
    attrs.push((
        "column-order".to_string(),
        column_order(frame.iter().map(|(k, _)| k.clone()).collect()),
    ));
    let mut members = vec![("_index".to_string(), strings_node(index))];
    for (k, col) in frame {
        members.push((k.clone(), column_node(col)?));
    }
    Ok(H5Node::Group(attrs, members))
}

pub(crate) fn check_key(key: &str, what: &str) -> Result<()> {
    if key.is_empty() || key.contains('/') || key == "." {
        return Err(Error::InvalidInput(format!(
            "{what} key `{key}` cannot be stored in HDF5 (empty, `.` or containing `/`)"
        )));
    }
    Ok(())
}

fn validate_for_write(a: &AnnData) -> Result<()> {
    let (n_obs, n_vars) = a.x.shape();
    let bad = |msg: String| Err(Error::InvalidInput(msg));
    if a.obs_names.len() != n_obs {
        return bad(format!(
            "obs_names has {} names; X has {n_obs} rows",
            a.obs_names.len()
        ));
    }
    if a.var_names.len() != n_vars {
        return bad(format!(
            "var_names has {} names; X has {n_vars} columns",
            a.var_names.len()
        ));
    }
    if let Matrix::Dense(d) = &a.x
        && d.data.len() != d.n_rows * d.n_cols
    {
        return bad("X: dense data length does not match its shape".into());
    }
    if n_vars > i32::MAX as usize {
        return bad(format!(
            "X has {n_vars} columns; at most 2^31 - 1 can be written"
        ));
    }
    for (what, names) in [("obs_names", &a.obs_names), ("var_names", &a.var_names)] {
        let unique: HashSet<&str> = names.iter().map(String::as_str).collect();
        if unique.len() != names.len() {
            tracing::warn!(
                "{what} has {} duplicate names; Python anndata will warn when reading the file \
                 (make them unique first, e.g. name-1, name-2)",
                names.len() - unique.len()
            );
        }
    }
    for (what, frame, n) in [("obs", &a.obs, n_obs), ("var", &a.var, n_vars)] {
        let mut seen = HashSet::new();
        for (k, c) in frame {
            check_key(k, what)?;
            if k == "_index" {
                return bad(format!(
                    "{what} column `_index` clashes with the stored index"
                ));
            }
            if !seen.insert(k.as_str()) {
                return bad(format!("{what} has two columns named `{k}`"));
            }
            if c.len() != n {
                return bad(format!(
                    "{what} column `{k}` has {} rows; expected {n}",
                    c.len()
                ));
            }
            if let Column::Categorical { codes, categories } = c
                && let Some(&bad_code) = codes
                    .iter()
                    .find(|&&x| x < -1 || x >= categories.len() as i32)
            {
                return bad(format!(
                    "{what} column `{k}` has code {bad_code} for {} categories",
                    categories.len()
                ));
            }
        }
    }
    let mut seen = HashSet::new();
    for (k, m) in &a.obsm {
        check_key(k, "obsm")?;
        if !seen.insert(k.as_str()) {
            return bad(format!("obsm has two entries named `{k}`"));
        }
        if m.n_rows != n_obs || m.data.len() != m.n_rows * m.n_cols {
            return bad(format!(
                "obsm `{k}` is [{}, {}] with {} values; expected {n_obs} rows",
                m.n_rows,
                m.n_cols,
                m.data.len()
            ));
        }
    }
    let mut seen = HashSet::new();
    for (k, m) in &a.layers {
        check_key(k, "layers")?;
        if !seen.insert(k.as_str()) {
            return bad(format!("layers has two entries named `{k}`"));
        }
        if m.shape() != (n_obs, n_vars) {
            return bad(format!(
                "layer `{k}` has shape {:?}; expected X's",
                m.shape()
            ));
        }
    }
    check_uns_keys(&a.uns, 0)
}

fn validate_obsp(n_obs: usize, obsp: &[(String, CsMat<f32>)]) -> Result<()> {
    let mut seen = HashSet::new();
    for (k, m) in obsp {
        check_key(k, "obsp")?;
        if !seen.insert(k.as_str()) {
            return Err(Error::InvalidInput(format!(
                "obsp has two entries named `{k}`"
            )));
        }
        if (m.rows(), m.cols()) != (n_obs, n_obs) {
            return Err(Error::InvalidInput(format!(
                "obsp `{k}` has shape [{}, {}]; expected [n_obs, n_obs] = [{n_obs}, {n_obs}]",
                m.rows(),
                m.cols()
            )));
        }
        if n_obs > i32::MAX as usize {
            return Err(Error::InvalidInput(format!(
                "obsp `{k}` has {n_obs} columns; at most 2^31 - 1 can be written"
            )));
        }
    }
    Ok(())
}

/// Checks every `uns` key (also inside lists, which are written as dicts keyed by position
/// when they are not plain arrays) and the nesting depth (at most 32 levels).
pub(crate) fn check_uns_keys(m: &Map<String, Value>, depth: usize) -> Result<()> {
    if depth > 32 {
        return Err(Error::InvalidInput(
            "uns is nested more than 32 levels deep".into(),
        ));
    }
    for (k, v) in m {
        check_key(k, "uns")?;
        check_uns_value(v, depth + 1)?;
    }
    Ok(())
}

fn check_uns_value(v: &Value, depth: usize) -> Result<()> {
    match v {
        Value::Object(o) => check_uns_keys(o, depth),
        Value::Array(items) if list_as_dict(items) => {
            if depth > 32 {
                return Err(Error::InvalidInput(
                    "uns is nested more than 32 levels deep".into(),
                ));
            }
            items.iter().try_for_each(|x| check_uns_value(x, depth + 1))
        }
        _ => Ok(()),
    }
}

/// `Some(rows)` if `items` is a non-empty rectangular array of arrays of numbers.
fn numeric_matrix(items: &[Value]) -> Option<(usize, usize)> {
    let first = items.first()?.as_array()?;
    let cols = first.len();
    let ok = items.iter().all(|r| {
        r.as_array()
            .is_some_and(|r| r.len() == cols && r.iter().all(Value::is_number))
    });
    ok.then_some((items.len(), cols))
}

/// The attribute (int8 `1`) that marks a `uns` `dict` written for a list ([`list_as_dict`]),
/// so that celldiff's reader turns it back into a list and leaves real dicts keyed `"0"`,
/// `"1"`, ... alone. anndata ignores it (the dict reads as a dict there).
pub(crate) const LIST_MARKER: &str = "celldiff-list";

/// Whether the JSON list `items` is written as an anndata `dict` keyed `"0"`, `"1"`, ... (one
/// member per element, each encoded on its own) rather than as one array: true unless the
/// list is empty (an empty f64 `array`, as anndata writes `[]`), all numbers, all strings,
/// all booleans, or a rectangular matrix of numbers with at least one column. The dict carries
/// [`LIST_MARKER`]; the reader turns it back into a list, so `uns` round-trips.
pub(crate) fn list_as_dict(items: &[Value]) -> bool {
    !(items.is_empty()
        || items.iter().all(Value::is_number)
        || items.iter().all(Value::is_string)
        || items.iter().all(Value::is_boolean)
        || numeric_matrix(items).is_some_and(|(_, c)| c > 0))
}

/// `m` as an anndata `dict` group.
pub(crate) fn uns_map_node(m: &Map<String, Value>, depth: usize) -> Result<H5Node<'static>> {
    let mut members = Vec::with_capacity(m.len());
    for (k, v) in m {
        members.push((k.clone(), uns_node(v, depth + 1)?));
    }
    Ok(dict_node(members))
}

/// One `uns` value in anndata's encodings: objects → `dict` groups; strings → `string`
/// scalars; numbers (i64/u64/f64) and bools → `numeric-scalar`; `null` → anndata's `null`
/// element (encoding-type `null` 0.1.0, read back as `None`); lists of numbers/bools →
/// `array` (rectangular lists of number lists → 2-D), of strings → `string-array`, empty →
/// an empty f64 `array`; any other list (mixed types, objects, nulls, ragged) → a `dict`
/// keyed by position ([`list_as_dict`]). Nothing is written as JSON text.
pub(crate) fn uns_node(v: &Value, depth: usize) -> Result<H5Node<'static>> {
    if depth > 33 {
        return Err(Error::InvalidInput(
            "uns is nested more than 32 levels deep".into(),
        ));
    }
    Ok(match v {
        Value::Object(o) => uns_map_node(o, depth)?,
        Value::String(s) => string_scalar_node(s.clone()),
        Value::Null => null_node(),
        Value::Bool(b) => {
            let ty = bool_type()?;
            let b = u8::from(*b);
            H5Node::dataset(move |ds| {
                ds.with_enum_u8_data(ty, &[b]).with_shape(&[]);
                set_enc_ds(ds, "numeric-scalar", "0.2.0");
            })
        }
        Value::Number(n) => {
            let n = n.clone();
            H5Node::dataset(move |ds| {
                if let Some(i) = n.as_i64() {
                    ds.with_i64_data(&[i]);
                } else if let Some(u) = n.as_u64() {
                    ds.with_u64_data(&[u]);
                } else {
                    ds.with_f64_data(&[n.as_f64().unwrap_or(f64::NAN)]);
                }
                ds.with_shape(&[]);
                set_enc_ds(ds, "numeric-scalar", "0.2.0");
            })
        }
        Value::Array(items) if list_as_dict(items) => {
            let mut members = Vec::with_capacity(items.len());
            for (i, x) in items.iter().enumerate() {
                members.push((i.to_string(), uns_node(x, depth + 1)?));
            }
            let mut attrs = enc_attrs("dict", "0.1.0");
            attrs.push((LIST_MARKER.to_string(), AttrValue::I8(1)));
            H5Node::Group(attrs, members)
        }
        Value::Array(items) if items.is_empty() => H5Node::dataset(|ds| {
            ds.with_f64_data(&[]).with_shape(&[0]);
            set_enc_ds(ds, "array", "0.2.0");
        }),
        Value::Array(items) if items.iter().all(Value::is_string) => strings_node(
            items
                .iter()
                .filter_map(|x| x.as_str().map(str::to_string))
                .collect::<Vec<String>>(),
        ),
        Value::Array(items) if items.iter().all(Value::is_boolean) => {
            let ty = bool_type()?;
            let v: Vec<u8> = items
                .iter()
                .map(|x| u8::from(x.as_bool() == Some(true)))
                .collect();
            H5Node::dataset(move |ds| {
                ds.with_enum_u8_data(ty, &v);
                set_enc_ds(ds, "array", "0.2.0");
            })
        }
        Value::Array(items) => {
            // All numbers (1-D) or a rectangular number matrix (2-D), see `list_as_dict`.
            let (flat, shape): (Vec<&Value>, Vec<u64>) = if items.iter().all(Value::is_number) {
                (items.iter().collect(), vec![items.len() as u64])
            } else {
                let (rows, cols) = numeric_matrix(items).unwrap_or((0, 0));
                (
                    items.iter().filter_map(Value::as_array).flatten().collect(),
                    vec![rows as u64, cols as u64],
                )
            };
            if flat.iter().all(|x| x.is_i64()) {
                let v: Vec<i64> = flat.iter().filter_map(|x| x.as_i64()).collect();
                H5Node::dataset(move |ds| {
                    ds.with_i64_data(&v).with_shape(&shape);
                    set_enc_ds(ds, "array", "0.2.0");
                })
            } else {
                let v: Vec<f64> = flat
                    .iter()
                    .map(|x| x.as_f64().unwrap_or(f64::NAN))
                    .collect();
                H5Node::dataset(move |ds| {
                    ds.with_f64_data(&v).with_shape(&shape);
                    set_enc_ds(ds, "array", "0.2.0");
                })
            }
        }
    })
}

/// anndata's `None`: a dataset with encoding-type `null` (0.1.0). anndata ≥ 0.11 writes it
/// with an HDF5 null dataspace (`h5py.Empty("f")`), which `hdf5-pure` cannot write; this is
/// a float32 scalar holding NaN instead. anndata's reader dispatches on the encoding-type
/// only (`read_null` ignores the dataset), so both read back as `None`.
fn null_node() -> H5Node<'static> {
    H5Node::dataset(|ds| {
        ds.with_f32_data(&[f32::NAN]).with_shape(&[]);
        set_enc_ds(ds, "null", "0.1.0");
    })
}

fn string_scalar_node(s: String) -> H5Node<'static> {
    H5Node::dataset(move |ds| {
        ds.with_vlen_strings(&[s.as_str()]).with_shape(&[]);
        set_enc_ds(ds, "string", "0.2.0");
    })
}
