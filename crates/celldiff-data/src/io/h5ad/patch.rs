//! Annotated copies: an input `.h5ad` with a few elements added or replaced, everything else
//! kept byte for byte (`celldiff embed`, `cluster`, `identify`, `graph`).
//!
//! # How
//! [`write_annotated`] copies the input to a temporary sibling of the output, opens the copy
//! with `hdf5-pure`'s in-place editor (`File::open_rw`) and replaces or adds only the
//! elements in [`Annotations`]: `obs` columns (the dataframe's `column-order` attribute gains
//! the new names), `obsm`/`obsp` entries and top-level `uns` keys, each encoded exactly as
//! [`write_h5ad`](super::write_h5ad) encodes it. Then the copy is published with the same
//! final step as `write_h5ad` (a rename that replaces only a regular file; see
//! [`crate::io::output`]). So `X` and its dtype (integer counts stay integers), `layers`,
//! `.raw`, `obsm`, `varm`, `obsp`, `varp`, `uns`, the other `obs` columns with their dtypes
//! (int64, float32, nullable, categorical) and `var` are exactly the input's, whatever
//! celldiff itself can read. A command that read `X` from `--layer` or `--use-raw` therefore
//! changes nothing but its annotations either.
//!
//! # Fallback
//! Inputs that cannot be edited this way are written whole by
//! [`write_h5ad_with_obsp`](super::write_h5ad_with_obsp) from what celldiff reads of them
//! (`X` as float32, `obs`/`var` columns as celldiff's [`Column`] types, dense `obsm`,
//! `layers`, `obsp`, best-effort `uns`; no `.raw`, `varm` or `varp`), with the annotations
//! applied and a warning naming the reason:
//! - 10x MatrixMarket folders (there is no file to copy);
//! - files not in the anndata ≥ 0.8 layout (no root `encoding-type = anndata`, or an `obs`
//!   that is not a `dataframe` of encoding-version 0.2.0: anndata 0.7 and the pre-0.7
//!   compound layout);
//! - files `hdf5-pure` refuses to edit faithfully (`Error::EditUnsupported`, e.g. exotic
//!   object-header layouts).

use std::path::Path;

use hdf5_pure::{AttrValue, File as H5File, Group as H5Group, StagedGroup};
use serde_json::{Map, Value};
use sprs::CsMat;

use super::write::{
    H5Node, check_key, check_uns_keys, column_node, column_order, csr_node, dense_node, dict_node,
    uns_node,
};
use crate::anndata::{Column, DenseMatrix, Frame};
use crate::error::{Error, Result};
use crate::io::ReadOptions;

/// What an annotated copy adds to (or replaces in) its input. Every entry replaces an element
/// of the same name; nothing else of the input changes.
#[derive(Debug, Clone, Default)]
pub struct Annotations {
    /// `obs` columns, each of length `n_obs` (appended to `column-order` when new).
    pub obs: Frame,
    /// `obsm` entries, each `[n_obs, k]`.
    pub obsm: Vec<(String, DenseMatrix)>,
    /// `obsp` entries, each a CSR `[n_obs, n_obs]` (written as `csr_matrix`).
    pub obsp: Vec<(String, CsMat<f32>)>,
    /// Top-level `uns` keys (each replaced whole, like `adata.uns[key] = value`).
    pub uns: Map<String, Value>,
}

impl Annotations {
    /// Sets (replaces or appends) the `obs` column `key`.
    pub fn set_obs(&mut self, key: &str, col: Column) {
        upsert(&mut self.obs, key, col);
    }

    /// Sets (replaces or appends) `obsm[key]`.
    pub fn set_obsm(&mut self, key: &str, m: DenseMatrix) {
        upsert(&mut self.obsm, key, m);
    }

    /// Sets (replaces or appends) `obsp[key]`.
    pub fn set_obsp(&mut self, key: &str, m: CsMat<f32>) {
        upsert(&mut self.obsp, key, m);
    }

    /// Checks names and shapes against `n_obs` cells.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] naming the element: a key that is empty, `.` or holds `/`, a
    /// duplicate, a wrong length or shape, a category code out of range.
    fn validate(&self, n_obs: usize) -> Result<()> {
        let bad = |m: String| Err(Error::InvalidInput(m));
        for (k, c) in &self.obs {
            check_key(k, "obs")?;
            if c.len() != n_obs {
                return bad(format!(
                    "obs column `{k}` has {} rows; the input has {n_obs} cells",
                    c.len()
                ));
            }
            if let Column::Categorical { codes, categories } = c
                && codes
                    .iter()
                    .any(|&x| x < -1 || x >= categories.len() as i32)
            {
                return bad(format!("obs column `{k}` has a category code out of range"));
            }
        }
        for (k, m) in &self.obsm {
            check_key(k, "obsm")?;
            if m.n_rows != n_obs || m.data.len() != m.n_rows * m.n_cols {
                return bad(format!(
                    "obsm `{k}` is [{}, {}]; the input has {n_obs} cells",
                    m.n_rows, m.n_cols
                ));
            }
        }
        for (k, m) in &self.obsp {
            check_key(k, "obsp")?;
            if (m.rows(), m.cols()) != (n_obs, n_obs) {
                return bad(format!(
                    "obsp `{k}` is [{}, {}]; expected [{n_obs}, {n_obs}]",
                    m.rows(),
                    m.cols()
                ));
            }
        }
        check_uns_keys(&self.uns, 0)
    }
}

fn upsert<T>(v: &mut Vec<(String, T)>, key: &str, x: T) {
    match v.iter_mut().find(|(k, _)| k == key) {
        Some(slot) => slot.1 = x,
        None => v.push((key.to_string(), x)),
    }
}

/// Writes `out` as a copy of `input` (an `.h5ad` file or a 10x folder) with `ann` added,
/// keeping every other element of the input as it is stored (see the module doc; inputs that
/// cannot be edited in place are rewritten whole, with a warning).
///
/// The output is written to a temporary sibling and published like
/// [`write_h5ad`](super::write_h5ad) (a failed write leaves nothing behind; only a regular
/// file is ever replaced). Whether `out` may be replaced at all is the caller's check.
///
/// # Errors
/// - [`Error::InvalidInput`]: an annotation does not fit the input (see
///   [`Annotations`]: lengths, shapes, keys), or a new `obs` column has the name of the
///   input's index column.
/// - [`Error::Format`] / [`Error::Io`]: the input cannot be read (fallback path), the copy or
///   the output cannot be written.
/// - [`Error::Refused`]: `out` exists and is not a regular file.
pub fn write_annotated(input: &Path, out: &Path, ann: &Annotations) -> Result<()> {
    let meta = std::fs::metadata(input).map_err(|e| Error::io(input, e))?;
    if !meta.is_file() {
        tracing::warn!(
            "{}: not an .h5ad file (a 10x folder); {} is written from what celldiff read of it",
            input.display(),
            out.display()
        );
        return rewrite_whole(input, out, ann);
    }
    super::check_hdf5_signature(input)?;
    // The same temporary sibling and final publish as `write_h5ad_with_obsp`.
    let dir = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => std::path::PathBuf::from("."),
    };
    let file_name = out
        .file_name()
        .ok_or_else(|| Error::InvalidInput(format!("{}: not a file path", out.display())))?;
    std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
    let target = dir.join(file_name);
    crate::io::output::remove_stale_temps(&target);
    let tmp = crate::io::output::TempPath::new(crate::io::output::temp_sibling(&target));
    std::fs::copy(input, tmp.path()).map_err(|e| Error::io(tmp.path(), e))?;
    match patch_in_place(tmp.path(), ann) {
        Ok(()) => {}
        Err(Patch::Fallback(why)) => {
            drop(tmp);
            tracing::warn!(
                "{}: {why}; {} is written whole from what celldiff read of the input (X as \
                 float32; .raw, varm and varp are not carried over)",
                input.display(),
                out.display()
            );
            return rewrite_whole(input, out, ann);
        }
        Err(Patch::Fail(e)) => return Err(e),
    }
    std::fs::File::open(tmp.path())
        .and_then(|f| f.sync_all())
        .map_err(|e| Error::io(tmp.path(), e))?;
    crate::io::output::publish_file(tmp.path(), &target, true)?;
    tmp.keep();
    Ok(())
}

/// Why an in-place edit did not happen.
enum Patch {
    /// The input cannot be edited faithfully: rewrite it whole instead.
    Fallback(String),
    /// A real error (bad annotations, I/O).
    Fail(Error),
}

impl From<Error> for Patch {
    fn from(e: Error) -> Self {
        Patch::Fail(e)
    }
}

/// An `hdf5-pure` error while editing the copy: I/O errors are real, everything else means
/// the file is not one this editor reproduces faithfully.
fn h5(path: &Path, what: &str, e: hdf5_pure::Error) -> Patch {
    match e {
        hdf5_pure::Error::Io(io) => Patch::Fail(Error::io(path, io)),
        other => Patch::Fallback(format!("cannot edit {what} in place ({other})")),
    }
}

fn attr_string(v: Option<&AttrValue>) -> Option<String> {
    v?.as_str().map(str::to_string)
}

/// The names in a `column-order` attribute (a string array, or anndata's empty float array).
fn column_names(v: Option<&AttrValue>) -> Option<Vec<String>> {
    match v {
        None => Some(Vec::new()),
        Some(AttrValue::F64Array(a)) if a.is_empty() => Some(Vec::new()),
        Some(other) => other.as_strings().map(<[String]>::to_vec),
    }
}

/// Edits the copy at `path` in place.
fn patch_in_place(path: &Path, ann: &Annotations) -> std::result::Result<(), Patch> {
    let file = H5File::open_rw(path).map_err(|e| h5(path, "the file", e))?;
    let root = file.root();
    let root_attrs = root.attrs().map_err(|e| h5(path, "the root group", e))?;
    if attr_string(root_attrs.get("encoding-type")).as_deref() != Some("anndata") {
        return Err(Patch::Fallback(
            "not in the anndata ≥ 0.8 layout (no root encoding-type `anndata`)".into(),
        ));
    }
    let groups = root.groups().map_err(|e| h5(path, "the root group", e))?;
    if !groups.iter().any(|g| g == "obs") {
        return Err(Patch::Fallback("`obs` is not a group".into()));
    }
    let obs = file.group("obs").map_err(|e| h5(path, "obs", e))?;
    let obs_attrs = obs.attrs().map_err(|e| h5(path, "obs", e))?;
    if attr_string(obs_attrs.get("encoding-type")).as_deref() != Some("dataframe")
        || attr_string(obs_attrs.get("encoding-version")).as_deref() != Some("0.2.0")
    {
        return Err(Patch::Fallback(
            "`obs` is not an anndata ≥ 0.8 dataframe (encoding-version 0.2.0)".into(),
        ));
    }
    let Some(index) = attr_string(obs_attrs.get("_index")) else {
        return Err(Patch::Fallback("`obs` has no `_index` attribute".into()));
    };
    let n_obs = file
        .dataset(&format!("obs/{index}"))
        .and_then(|d| d.shape())
        .map_err(|e| h5(path, "the obs index", e))?
        .first()
        .copied()
        .unwrap_or(0) as usize;
    ann.validate(n_obs)?;
    let Some(mut order) = column_names(obs_attrs.get("column-order")) else {
        return Err(Patch::Fallback(
            "`obs` has an unreadable `column-order` attribute".into(),
        ));
    };

    if !ann.obs.is_empty() {
        for (k, col) in &ann.obs {
            if *k == index {
                return Err(Patch::Fail(Error::InvalidInput(format!(
                    "obs column `{k}` clashes with the index column `{index}` of the input"
                ))));
            }
            let node = column_node(col)?;
            replace_member(&obs, path, "obs", k, node)?;
            if !order.contains(k) {
                order.push(k.clone());
            }
        }
        obs.set_attr("column-order", column_order(order))
            .map_err(|e| h5(path, "obs/column-order", e))?;
    }
    let obsm: Vec<(String, H5Node<'_>)> = ann
        .obsm
        .iter()
        .map(|(k, m)| (k.clone(), dense_node(m)))
        .collect();
    patch_dict(&file, path, &groups, "obsm", obsm)?;
    let obsp: Vec<(String, H5Node<'_>)> = ann
        .obsp
        .iter()
        .map(|(k, m)| (k.clone(), csr_node(m)))
        .collect();
    patch_dict(&file, path, &groups, "obsp", obsp)?;
    let mut uns = Vec::with_capacity(ann.uns.len());
    for (k, v) in &ann.uns {
        uns.push((k.clone(), uns_node(v, 1)?));
    }
    patch_dict(&file, path, &groups, "uns", uns)?;
    file.commit().map_err(|e| h5(path, "the file", e))?;
    drop(obs);
    drop(root);
    file.close().map_err(|e| h5(path, "the file", e))?;
    Ok(())
}

/// Adds `members` to the top-level `dict` group `name` (created when the input has none),
/// replacing members of the same name.
fn patch_dict(
    file: &H5File,
    path: &Path,
    root_groups: &[String],
    name: &str,
    members: Vec<(String, H5Node<'_>)>,
) -> std::result::Result<(), Patch> {
    if members.is_empty() {
        return Ok(());
    }
    let root = file.root();
    if !root_groups.iter().any(|g| g == name) {
        let exists = root
            .datasets()
            .map_err(|e| h5(path, "the root group", e))?
            .iter()
            .any(|d| d == name);
        if exists {
            return Err(Patch::Fallback(format!("`{name}` is not a group")));
        }
        return emit(&root, path, name, dict_node(members));
    }
    let g = file.group(name).map_err(|e| h5(path, name, e))?;
    for (k, node) in members {
        replace_member(&g, path, name, &k, node)?;
    }
    Ok(())
}

/// Replaces (or adds) the member `key` of `g` (whose path is `what`) by `node`.
fn replace_member(
    g: &H5Group,
    path: &Path,
    what: &str,
    key: &str,
    node: H5Node<'_>,
) -> std::result::Result<(), Patch> {
    let field = format!("{what}/{key}");
    let in_groups = g.groups().map_err(|e| h5(path, what, e))?;
    let exists = in_groups.iter().any(|x| x == key)
        || g.datasets()
            .map_err(|e| h5(path, what, e))?
            .iter()
            .any(|x| x == key);
    if exists {
        g.delete(key).map_err(|e| h5(path, &field, e))?;
    }
    emit(g, path, key, node)
}

/// Stages `node` as `name` in the existing group `g`.
fn emit(g: &H5Group, path: &Path, name: &str, node: H5Node<'_>) -> std::result::Result<(), Patch> {
    let field = name.to_string();
    match node {
        H5Node::Dataset(f) => {
            g.create_dataset(name, f).map_err(|e| h5(path, &field, e))?;
        }
        H5Node::Group(attrs, members) => {
            g.create_group_with(name, |sg| fill_staged(sg, attrs, members))
                .map_err(|e| h5(path, &field, e))?;
        }
    }
    Ok(())
}

fn fill_staged(
    sg: &mut StagedGroup<'_>,
    attrs: Vec<(String, AttrValue)>,
    members: Vec<(String, H5Node<'_>)>,
) {
    for (k, v) in attrs {
        sg.set_attr(&k, v);
    }
    for (k, m) in members {
        match m {
            H5Node::Dataset(f) => {
                sg.create_dataset(&k, f);
            }
            H5Node::Group(a, ms) => {
                sg.create_group_with(&k, |s| fill_staged(s, a, ms));
            }
        }
    }
}

/// The fallback: reads `input` whole, applies `ann` and writes `out` with the full writer.
fn rewrite_whole(input: &Path, out: &Path, ann: &Annotations) -> Result<()> {
    let mut adata = crate::io::read(input, &ReadOptions::default())?;
    ann.validate(adata.n_obs())?;
    let mut obsp = if input.is_file() {
        super::read_obsp(input, adata.n_obs())?
    } else {
        Vec::new()
    };
    for (k, c) in &ann.obs {
        adata.set_obs(k, c.clone());
    }
    for (k, m) in &ann.obsm {
        adata.set_obsm(k, m.clone());
    }
    for (k, m) in &ann.obsp {
        upsert(&mut obsp, k, m.clone());
    }
    for (k, v) in &ann.uns {
        adata.uns.insert(k.clone(), v.clone());
    }
    super::write_h5ad_with_obsp(out, &adata, &obsp)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::h5ad::{read_h5ad, read_obsp};

    fn demo() -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../data/demo/pbmc68k_reduced_counts.h5ad")
    }

    fn example(n: usize) -> Annotations {
        let mut ann = Annotations::default();
        ann.set_obs(
            "new_labels",
            Column::Categorical {
                codes: (0..n as i32).map(|i| i % 2).collect(),
                categories: vec!["a".into(), "b".into()],
            },
        );
        ann.set_obsm("X_new", DenseMatrix::zeros(n, 3));
        ann.set_obsp("links", sprs::CsMat::eye(n));
        ann.uns = serde_json::json!({"note": {"base": null, "list": [1, "x"]}})
            .as_object()
            .unwrap()
            .clone();
        ann
    }

    #[test]
    fn annotated_copy_keeps_dtypes_and_adds_the_annotations() {
        let tmp = tempfile::tempdir().unwrap();
        let out = tmp.path().join("out.h5ad");
        let ann = example(700);
        write_annotated(&demo(), &out, &ann).unwrap();
        let f = H5File::open(&out).unwrap();
        // Untouched elements keep their stored dtypes (int32 counts, int64/float32 columns).
        let dt = |p: &str| f.dataset(p).unwrap().dtype().unwrap();
        assert_eq!(dt("X/data"), hdf5_pure::DType::I32);
        assert_eq!(dt("obs/n_genes"), hdf5_pure::DType::I64);
        assert_eq!(dt("obs/percent_mito"), hdf5_pure::DType::F32);
        assert_eq!(dt("obsm/X_umap"), hdf5_pure::DType::F64);
        let order = f.group("obs").unwrap().attrs().unwrap()["column-order"].clone();
        let order = order.as_strings().unwrap().to_vec();
        assert_eq!(order.first().map(String::as_str), Some("bulk_labels"));
        assert_eq!(order.last().map(String::as_str), Some("new_labels"));
        drop(f);
        let a = read_h5ad(&out, &ReadOptions::default()).unwrap();
        let b = read_h5ad(&demo(), &ReadOptions::default()).unwrap();
        assert_eq!(a.obs.len(), b.obs.len() + 1);
        assert_eq!(a.obs_column("new_labels").unwrap(), &ann.obs[0].1);
        let keys: Vec<&str> = a.obsm.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, ["X_new", "X_umap"]);
        assert_eq!(a.uns["note"]["base"], Value::Null);
        assert_eq!(a.uns["note"]["list"], serde_json::json!([1, "x"]));
        let obsp = read_obsp(&out, 700).unwrap();
        assert_eq!(obsp.len(), 1);
        assert_eq!(obsp[0].1.nnz(), 700);
        // Annotating the copy again replaces elements of the same name.
        let again = tmp.path().join("again.h5ad");
        let mut ann2 = Annotations::default();
        ann2.set_obs("new_labels", Column::Numeric(vec![1.0; 700]));
        ann2.set_obsm("X_umap", DenseMatrix::zeros(700, 2));
        write_annotated(&out, &again, &ann2).unwrap();
        let c = read_h5ad(&again, &ReadOptions::default()).unwrap();
        assert_eq!(c.obs.len(), a.obs.len());
        assert_eq!(
            c.obs_column("new_labels").unwrap(),
            &Column::Numeric(vec![1.0; 700])
        );
        let umap = &c.obsm.iter().find(|(k, _)| k == "X_umap").unwrap().1;
        assert!(umap.data.iter().all(|&v| v == 0.0));
    }

    #[test]
    fn uns_lists_and_position_keyed_dicts_round_trip_as_written() {
        let tmp = tempfile::tempdir().unwrap();
        let out = tmp.path().join("out.h5ad");
        let mut ann = Annotations::default();
        let uns = serde_json::json!({
            "clusters": {"0": {"a": 1}, "1": {"a": 2}},
            "list": [{"a": 1}, null, "x"],
            "empty": [],
            "none": null,
        });
        ann.uns = uns.as_object().unwrap().clone();
        write_annotated(&demo(), &out, &ann).unwrap();
        let a = read_h5ad(&out, &ReadOptions::default()).unwrap();
        for k in ["clusters", "list", "empty", "none"] {
            assert_eq!(a.uns[k], uns[k], "uns['{k}']");
        }
    }

    #[test]
    fn bad_annotations_are_refused_and_leave_nothing() {
        let tmp = tempfile::tempdir().unwrap();
        let out = tmp.path().join("out.h5ad");
        let mut ann = Annotations::default();
        ann.set_obsm("X_new", DenseMatrix::zeros(5, 3));
        let e = write_annotated(&demo(), &out, &ann).unwrap_err();
        assert!(matches!(e, Error::InvalidInput(_)), "{e}");
        let mut ann = Annotations::default();
        ann.set_obs("index", Column::Numeric(vec![0.0; 700]));
        let e = write_annotated(&demo(), &out, &ann).unwrap_err();
        assert!(e.to_string().contains("index column"), "{e}");
        let left: Vec<_> = std::fs::read_dir(tmp.path()).unwrap().collect();
        assert!(left.is_empty(), "{left:?}");
    }

    #[test]
    fn a_10x_folder_is_written_whole() {
        let dir = shared_data!("pbmc68k_reduced/counts_mtx");
        let tmp = tempfile::tempdir().unwrap();
        let out = tmp.path().join("out.h5ad");
        let ann = example(700);
        write_annotated(dir, &out, &ann).unwrap();
        let a = read_h5ad(&out, &ReadOptions::default()).unwrap();
        assert_eq!(a.x.shape(), (700, 765));
        assert_eq!(a.obs_column("new_labels").unwrap(), &ann.obs[0].1);
        assert_eq!(read_obsp(&out, 700).unwrap().len(), 1);
    }
}
