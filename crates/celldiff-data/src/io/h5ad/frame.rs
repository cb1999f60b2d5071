//! The `.h5ad` reader, part 2: `obs`/`var` dataframes (anndata ≥ 0.8, 0.7 categories, pre-0.7
//! compound datasets), `obsm`, `obsp`, `layers` and `uns`.

use hdf5_pure::{DType, Dataset, Datatype, Group};
use serde_json::{Map, Value};
use sprs::CsMat;

use crate::anndata::{Column, DenseMatrix, Frame, Matrix};
use crate::error::Result;

use super::decode::*;
use super::*;

impl Reader<'_> {
    /// `obs`/`var`: names and columns, validated to `n_rows`.
    pub(super) fn read_dataframe(
        &self,
        field: &str,
        n_rows: usize,
        used_uns: &mut Vec<String>,
    ) -> Result<(Vec<String>, Frame)> {
        match self.node(field)? {
            Node::Missing => Ok((self.default_names(field, n_rows)?, Vec::new())),
            Node::Dataset(ds) => self.read_compound_frame(&ds, field, n_rows, used_uns),
            Node::Group(g) => {
                let attrs = self.group_attrs(&g, field)?;
                let members = self.members(&g, field)?;
                let index_key = attr_str(&attrs, "_index").unwrap_or_else(|| "_index".into());
                let f_index = format!("{field}/{index_key}");
                let names = if members.contains(&index_key) {
                    self.read_index(&f_index)?
                } else {
                    self.default_names(&f_index, n_rows)?
                };
                if names.len() != n_rows {
                    return Err(self.err(
                        &f_index,
                        format!("has {} names; expected {n_rows} to match X", names.len()),
                    ));
                }
                let order: Vec<String> = match attrs.get("column-order") {
                    Some(v) => v.as_strings().map(<[String]>::to_vec).unwrap_or_default(),
                    None => members
                        .iter()
                        .filter(|m| **m != index_key && *m != "__categories")
                        .cloned()
                        .collect(),
                };
                let mut frame = Frame::new();
                for col in order {
                    let f_col = format!("{field}/{col}");
                    if let Some(reason) = self.unreadable_reason(&f_col) {
                        tracing::warn!("{}: skipping `{f_col}`: {reason}", self.path.display());
                        continue;
                    }
                    if let Some(c) = self.read_column(field, &col, &f_col)? {
                        if c.len() != n_rows {
                            return Err(self
                                .err(&f_col, format!("has {} rows; expected {n_rows}", c.len())));
                        }
                        frame.push((col, c));
                    }
                }
                Ok((names, frame))
            }
        }
    }

    /// `"0"`, `"1"`, ... for a dataframe stored without row names (anndata's default index),
    /// after checking that `n_rows` (declared by the shape of `X`) is no more than
    /// [`Self::max_unbacked_rows`]: a tiny file declaring 2^40 genes is refused here instead
    /// of allocating 2^40 names.
    pub(super) fn default_names(&self, field: &str, n_rows: usize) -> Result<Vec<String>> {
        let max = self.max_unbacked_rows();
        if n_rows as u64 > max {
            return Err(self.err(
                field,
                format!(
                    "is absent, and X declares {n_rows} rows for it: more than this {}-byte file \
                     can describe without stored names (at most {max}); expected a dataframe \
                     with one name per row, or X's shape is corrupt",
                    self.file_len
                ),
            ));
        }
        Ok((0..n_rows).map(|i| i.to_string()).collect())
    }

    /// One dataframe column; `None` for encodings that are skipped (with a warning).
    pub(super) fn read_column(
        &self,
        frame: &str,
        col: &str,
        f_col: &str,
    ) -> Result<Option<Column>> {
        match self.node(f_col)? {
            Node::Missing => Err(self.err(
                f_col,
                "absent although listed in column-order; expected a column dataset or group",
            )),
            Node::Group(g) => {
                let attrs = self.group_attrs(&g, f_col)?;
                let enc = attr_str(&attrs, "encoding-type").unwrap_or_default();
                match enc.as_str() {
                    "categorical" => {
                        let f_codes = format!("{f_col}/codes");
                        let f_cats = format!("{f_col}/categories");
                        let categories = self
                            .read_labels(&self.dataset(&f_cats, "the category labels")?, &f_cats)?;
                        let codes_ds = self.dataset(&f_codes, "the category codes (integers)")?;
                        let codes = self.read_codes(&codes_ds, &f_codes, categories.len())?;
                        Ok(Some(self.categorical(f_col, codes, categories)))
                    }
                    "nullable-integer" | "nullable-boolean" | "nullable-string-array" => {
                        self.read_nullable(f_col, &enc).map(Some)
                    }
                    other => {
                        tracing::warn!(
                            "{}: skipping column `{f_col}` with unsupported encoding-type `{other}`",
                            self.path.display()
                        );
                        Ok(None)
                    }
                }
            }
            Node::Dataset(ds) => {
                let f_legacy = format!("{frame}/__categories/{col}");
                if self.exists(&f_legacy) {
                    let categories = self
                        .read_labels(&self.dataset(&f_legacy, "the category labels")?, &f_legacy)?;
                    let codes = self.read_codes(&ds, f_col, categories.len())?;
                    return Ok(Some(self.categorical(f_col, codes, categories)));
                }
                let shape = self.checked_shape(&ds, f_col)?;
                if shape.len() != 1 {
                    tracing::warn!(
                        "{}: skipping column `{f_col}` of shape {shape:?} (expected 1-D)",
                        self.path.display()
                    );
                    return Ok(None);
                }
                match self.kind(&ds, f_col)? {
                    Kind::Str => Ok(Some(Column::String(self.read_labels(&ds, f_col)?))),
                    Kind::Bool => Ok(Some(Column::Bool(self.read_bool(&ds, f_col)?))),
                    Kind::Float | Kind::Int => {
                        Ok(Some(Column::Numeric(self.read_f64(&ds, f_col)?.1)))
                    }
                    k => {
                        tracing::warn!(
                            "{}: skipping column `{f_col}` of element type {k:?}",
                            self.path.display()
                        );
                        Ok(None)
                    }
                }
            }
        }
    }

    /// A categorical column from validated `codes` (-1 = missing) and `categories`. Repeated
    /// category labels (which pandas, and so anndata, refuses: "Categorical categories must be
    /// unique") are merged into their first occurrence, with a warning naming the column and
    /// the labels: every cell keeps its label, and the file celldiff writes opens in anndata.
    pub(super) fn categorical(
        &self,
        field: &str,
        codes: Vec<i32>,
        categories: Vec<String>,
    ) -> Column {
        let (codes, categories, repeated) = merge_duplicate_categories(codes, categories);
        if !repeated.is_empty() {
            tracing::warn!(
                "{}: categorical `{field}` lists the categories {} more than once; merged into \
                 one category each (pandas/anndata require unique categories)",
                self.path.display(),
                list_names(&repeated)
            );
        }
        Column::Categorical { codes, categories }
    }

    pub(super) fn read_codes(&self, ds: &Dataset, field: &str, n_cat: usize) -> Result<Vec<i32>> {
        let (_, codes) = self.read_i64(ds, field)?;
        if let Some(&bad) = codes.iter().find(|&&c| c < -1 || c >= n_cat as i64) {
            return Err(self.err(
                field,
                format!("contains code {bad}; expected -1 (missing) or 0..{n_cat} (categories)"),
            ));
        }
        Ok(codes.into_iter().map(|c| c as i32).collect())
    }

    /// Row names: a string dataset, or (anndata ≥ 0.13 with pandas' string dtype) a
    /// `nullable-string-array` group of `values` + `mask`, missing names read as `"nan"`.
    fn read_index(&self, f_index: &str) -> Result<Vec<String>> {
        if let Node::Group(g) = self.node(f_index)? {
            let attrs = self.group_attrs(&g, f_index)?;
            let enc = attr_str(&attrs, "encoding-type").unwrap_or_default();
            if enc != "nullable-string-array" {
                return Err(self.err(
                    f_index,
                    format!(
                        "is a group of encoding `{enc}`; expected the row names (strings or a \
                         nullable-string-array)"
                    ),
                ));
            }
            return match self.read_nullable(f_index, &enc)? {
                Column::String(v) => Ok(v),
                _ => Err(self.err(f_index, "expected the row names (strings)")),
            };
        }
        let ds = self.dataset(f_index, "the row names (strings)")?;
        self.read_labels(&ds, f_index)
    }

    /// anndata's nullable arrays (`values` + `mask`, mask true = missing).
    pub(super) fn read_nullable(&self, f_col: &str, enc: &str) -> Result<Column> {
        let f_vals = format!("{f_col}/values");
        let f_mask = format!("{f_col}/mask");
        let vals = self.dataset(&f_vals, "the values")?;
        let mask = match self.node(&f_mask)? {
            Node::Dataset(d) => Some(self.read_bool(&d, &f_mask)?),
            _ => None,
        };
        let missing = |i: usize| {
            mask.as_ref()
                .is_some_and(|m| m.get(i).copied().unwrap_or(false))
        };
        match enc {
            "nullable-string-array" => {
                let v = self.read_labels(&vals, &f_vals)?;
                Ok(Column::String(
                    v.into_iter()
                        .enumerate()
                        .map(|(i, s)| if missing(i) { "nan".to_string() } else { s })
                        .collect(),
                ))
            }
            "nullable-boolean" if !mask.as_ref().is_some_and(|m| m.iter().any(|&b| b)) => {
                Ok(Column::Bool(self.read_bool(&vals, &f_vals)?))
            }
            _ => {
                let (_, v) = self.read_f64(&vals, &f_vals)?;
                Ok(Column::Numeric(
                    v.into_iter()
                        .enumerate()
                        .map(|(i, x)| if missing(i) { f64::NAN } else { x })
                        .collect(),
                ))
            }
        }
    }

    /// Pre-0.7 dataframe: a compound dataset with an `index` field; categories of integer
    /// fields in `uns/<field>_categories`.
    pub(super) fn read_compound_frame(
        &self,
        ds: &Dataset,
        field: &str,
        n_rows: usize,
        used_uns: &mut Vec<String>,
    ) -> Result<(Vec<String>, Frame)> {
        let fields = self.decode_compound(ds, field, n_rows)?;
        let mut names = None;
        let mut frame = Frame::new();
        for (name, decoded) in fields {
            if name == "index" {
                names = Some(match decoded {
                    Decoded::Str(s) => s,
                    Decoded::Int(v) => v.iter().map(|x| x.to_string()).collect(),
                    Decoded::Num(v) => v.into_iter().map(fmt_number).collect(),
                    _ => return Err(self.err(field, "field `index` is not strings or numbers")),
                });
                continue;
            }
            let uns_key = format!("{name}_categories");
            let f_cats = format!("uns/{uns_key}");
            let col = match decoded {
                Decoded::Int(codes) if self.exists(&f_cats) => {
                    let categories =
                        self.read_labels(&self.dataset(&f_cats, "category labels")?, &f_cats)?;
                    let n_cat = categories.len() as i64;
                    if let Some(&bad) = codes.iter().find(|&&c| c < -1 || c >= n_cat) {
                        return Err(self.err(
                            &format!("{field}/{name}"),
                            format!("contains code {bad}; expected -1..{n_cat}"),
                        ));
                    }
                    used_uns.push(uns_key);
                    self.categorical(
                        &format!("{field}/{name}"),
                        codes.into_iter().map(|c| c as i32).collect(),
                        categories,
                    )
                }
                Decoded::Int(v) => Column::Numeric(v.into_iter().map(|x| x as f64).collect()),
                Decoded::Num(v) => Column::Numeric(v),
                Decoded::Bool(v) => Column::Bool(v),
                Decoded::Str(v) => Column::String(v),
                Decoded::Array { .. } => continue,
            };
            frame.push((name, col));
        }
        let names = names.unwrap_or_else(|| (0..n_rows).map(|i| i.to_string()).collect());
        Ok((names, frame))
    }

    /// All decodable fields of a compound dataset of `n_rows` records.
    pub(super) fn decode_compound(
        &self,
        ds: &Dataset,
        field: &str,
        n_rows: usize,
    ) -> Result<Vec<(String, Decoded)>> {
        let shape = self.checked_shape(ds, field)?;
        let dt = ds.datatype().map_err(|e| self.h5(field, e))?;
        let Datatype::Compound { size, members } = dt else {
            return Err(self.err(
                field,
                "is a dataset but not a compound (legacy) table; expected a dataframe group",
            ));
        };
        if shape.len() != 1 || shape[0] != n_rows {
            return Err(self.err(
                field,
                format!("has shape {shape:?}; expected [{n_rows}] rows to match X"),
            ));
        }
        let raw = ds.read_raw().map_err(|e| self.h5(field, e))?;
        let rec = size as usize;
        if raw.len() != rec * n_rows {
            return Err(self.err(field, "record bytes do not match the shape; file corrupt"));
        }
        let mut out = Vec::new();
        for m in members {
            match decode_field(&raw, rec, n_rows, m.byte_offset as usize, &m.datatype) {
                Some(d) => out.push((m.name, d)),
                None => tracing::warn!(
                    "{}: skipping compound field `{field}/{}` (unsupported type)",
                    self.path.display(),
                    m.name
                ),
            }
        }
        Ok(out)
    }

    pub(super) fn read_obsm(&self, n_obs: usize) -> Result<Vec<(String, DenseMatrix)>> {
        let mut out = Vec::new();
        match self.node("obsm")? {
            Node::Missing => {}
            Node::Dataset(ds) => {
                for (name, d) in self.decode_compound(&ds, "obsm", n_obs)? {
                    if let Decoded::Array { width, data } = d {
                        out.push((
                            name,
                            DenseMatrix {
                                n_rows: n_obs,
                                n_cols: width,
                                data,
                            },
                        ));
                    }
                }
            }
            Node::Group(g) => {
                for name in self.members(&g, "obsm")? {
                    let field = format!("obsm/{name}");
                    if let Some(reason) = self.unreadable_reason(&field) {
                        tracing::warn!("{}: skipping `{field}`: {reason}", self.path.display());
                        continue;
                    }
                    let m = match self.node(&field)? {
                        Node::Dataset(ds) => match self.numeric_2d(&ds, &field)? {
                            Some(m) => m,
                            None => continue,
                        },
                        Node::Group(sub) => {
                            if self.sparse_encoding(&sub, &field)?.is_none() {
                                continue;
                            }
                            let m = self.read_matrix(&field)?;
                            let (r, c) = m.shape();
                            if r.saturating_mul(c) > MAX_DENSIFY_ELEMENTS {
                                tracing::warn!(
                                    "{}: skipping sparse `{field}` [{r}, {c}] (too large to densify)",
                                    self.path.display()
                                );
                                continue;
                            }
                            m.to_dense()
                        }
                        Node::Missing => continue,
                    };
                    if m.n_rows != n_obs {
                        return Err(self.err(
                            &field,
                            format!("has {} rows; expected n_obs = {n_obs}", m.n_rows),
                        ));
                    }
                    out.push((name, m));
                }
            }
        }
        Ok(out)
    }

    /// A 2-D numeric dataset of `obsm`/`obsp` as a dense matrix; `None` (with a warning) for
    /// anything else, which is skipped.
    pub(super) fn numeric_2d(&self, ds: &Dataset, field: &str) -> Result<Option<DenseMatrix>> {
        let shape = self.checked_shape(ds, field)?;
        let numeric = matches!(self.kind(ds, field)?, Kind::Float | Kind::Int | Kind::Bool);
        if shape.len() != 2 || !numeric {
            tracing::warn!(
                "{}: skipping `{field}` (not a 2-D numeric array)",
                self.path.display()
            );
            return Ok(None);
        }
        let (_, data) = self.read_f32(ds, field)?;
        Ok(Some(DenseMatrix {
            n_rows: shape[0],
            n_cols: shape[1],
            data,
        }))
    }

    /// The attributes of a `csr_matrix` / `csc_matrix` member group and whether it is CSR;
    /// `None` (with a warning) for another encoding, which is skipped.
    pub(super) fn sparse_encoding(&self, g: &Group, field: &str) -> Result<Option<(Attrs, bool)>> {
        let attrs = self.group_attrs(g, field)?;
        let enc = attr_str(&attrs, "encoding-type").unwrap_or_default();
        match enc.as_str() {
            "csr_matrix" => Ok(Some((attrs, true))),
            "csc_matrix" => Ok(Some((attrs, false))),
            _ => {
                tracing::warn!(
                    "{}: skipping `{field}` (encoding-type `{enc}`)",
                    self.path.display()
                );
                Ok(None)
            }
        }
    }

    /// `obsp`: every sparse or dense 2-D numeric member as CSR `[n_obs, n_obs]`.
    pub(super) fn read_obsp(&self, n_obs: usize) -> Result<Vec<(String, CsMat<f32>)>> {
        let g = match self.node("obsp")? {
            Node::Missing => return Ok(Vec::new()),
            Node::Dataset(_) => {
                return Err(self.err(
                    "obsp",
                    "is a dataset; expected a group of [n_obs, n_obs] matrices",
                ));
            }
            Node::Group(g) => g,
        };
        let mut out = Vec::new();
        for name in self.members(&g, "obsp")? {
            let field = format!("obsp/{name}");
            if let Some(reason) = self.unreadable_reason(&field) {
                tracing::warn!("{}: skipping `{field}`: {reason}", self.path.display());
                continue;
            }
            let m = match self.node(&field)? {
                Node::Dataset(ds) => match self.numeric_2d(&ds, &field)? {
                    Some(d) => d.to_csr(),
                    None => continue,
                },
                Node::Group(sub) => match self.sparse_encoding(&sub, &field)? {
                    Some((attrs, csr)) => self.read_sparse(&field, &attrs, csr)?,
                    None => continue,
                },
                Node::Missing => continue,
            };
            if m.shape() != (n_obs, n_obs) {
                return Err(self.err(
                    &field,
                    format!(
                        "has shape [{}, {}]; expected [n_obs, n_obs] = [{n_obs}, {n_obs}]",
                        m.rows(),
                        m.cols()
                    ),
                ));
            }
            out.push((name, m));
        }
        Ok(out)
    }

    pub(super) fn read_layers(&self, n_obs: usize, n_vars: usize) -> Result<Vec<(String, Matrix)>> {
        let mut out = Vec::new();
        for name in self.layer_names() {
            let field = format!("layers/{name}");
            if let Some(reason) = self.unreadable_reason(&field) {
                tracing::warn!("{}: skipping `{field}`: {reason}", self.path.display());
                continue;
            }
            let m = self.read_matrix(&field)?;
            if m.shape() != (n_obs, n_vars) {
                return Err(self.err(
                    &field,
                    format!(
                        "has shape {:?}; expected X's shape [{n_obs}, {n_vars}]",
                        m.shape()
                    ),
                ));
            }
            out.push((name, m));
        }
        Ok(out)
    }

    /// Best effort: never fails, skips what it cannot represent.
    pub(super) fn read_uns(&self) -> Map<String, Value> {
        match self.node("uns") {
            Ok(Node::Group(g)) => self.uns_group(&g, "uns", 0),
            _ => Map::new(),
        }
    }

    pub(super) fn uns_group(&self, g: &Group, field: &str, depth: usize) -> Map<String, Value> {
        let mut out = Map::new();
        if depth > 32 {
            return out;
        }
        for name in self.members(g, field).unwrap_or_default() {
            let f = format!("{field}/{name}");
            let v = match self.node(&f) {
                Ok(Node::Group(sub)) => {
                    let attrs = sub.attrs().unwrap_or_default();
                    let enc = attr_str(&attrs, "encoding-type");
                    if attrs.contains_key("h5sparse_format") {
                        None
                    } else {
                        match enc.as_deref() {
                            None | Some("dict") => {
                                let m = self.uns_group(&sub, &f, depth + 1);
                                Some(if attrs.contains_key(write::LIST_MARKER) {
                                    list_from_dict(m)
                                } else {
                                    Value::Object(m)
                                })
                            }
                            _ => None,
                        }
                    }
                }
                Ok(Node::Dataset(ds)) => self.uns_dataset(&ds, &f),
                _ => None,
            };
            if let Some(v) = v {
                out.insert(name, v);
            }
        }
        out
    }

    pub(super) fn uns_dataset(&self, ds: &Dataset, field: &str) -> Option<Value> {
        if self.unsupported_filter(ds).is_some() {
            return None;
        }
        // anndata's `None` (encoding-type `null`, any dataspace).
        if attr_str(&ds.attrs().unwrap_or_default(), "encoding-type").as_deref() == Some("null") {
            return Some(Value::Null);
        }
        let shape = ds.shape().ok()?;
        let n: u64 = shape.iter().try_fold(1u64, |a, &d| a.checked_mul(d))?;
        // Each dimension too: a [2^40, 0] array has no elements but 2^40 (empty) rows.
        if n > MAX_UNS_ELEMENTS || shape.len() > 2 || shape.iter().any(|&d| d > MAX_UNS_ELEMENTS) {
            return None;
        }
        self.checked_shape(ds, field).ok()?;
        let values: Vec<Value> = match self.kind(ds, field).ok()? {
            Kind::Str => ds
                .read_string()
                .ok()?
                .into_iter()
                .map(Value::String)
                .collect(),
            Kind::Bool => ds
                .read_i64()
                .ok()?
                .into_iter()
                .map(|b| Value::Bool(b != 0))
                .collect(),
            Kind::Int => match ds.dtype().ok()? {
                DType::U64 => ds.read_u64().ok()?.into_iter().map(Value::from).collect(),
                _ => ds.read_i64().ok()?.into_iter().map(Value::from).collect(),
            },
            Kind::Float => ds
                .read_f64()
                .ok()?
                .into_iter()
                .map(|x| serde_json::Number::from_f64(x).map_or(Value::Null, Value::Number))
                .collect(),
            _ => return None,
        };
        if values.len() as u64 != n {
            return None;
        }
        match shape.len() {
            0 => values.into_iter().next(),
            1 => Some(Value::Array(values)),
            _ => {
                let cols = shape[1] as usize;
                if cols == 0 {
                    return Some(Value::Array(
                        (0..shape[0]).map(|_| Value::Array(Vec::new())).collect(),
                    ));
                }
                Some(Value::Array(
                    values
                        .chunks(cols)
                        .map(|r| Value::Array(r.to_vec()))
                        .collect(),
                ))
            }
        }
    }
}
