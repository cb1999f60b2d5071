//! Opening a run directory for loading ([`RunDir`]): `config.json`, the version and format
//! checks, the SHA-256 manifest, and the typed reads of its files.

use std::fs;
use std::path::Path;

use burn::module::Module;
use serde::Deserialize;

use super::{
    GENES_JSON, LEGACY_GENES_TXT, LIBRARY_JSON, MANIFEST, RUN_FORMAT, check_field, load_module,
    read_genes, read_history, read_json, read_model_name,
};
use crate::counts::LibrarySizeModel;
use crate::error::{Error, Result};
use crate::models::Likelihood;
use crate::train::EpochRecord;

/// A run directory opened for loading: its `config.json` parsed as JSON, the version checked,
/// and every file listed in [`MANIFEST`] verified against its SHA-256. Files are then read
/// through it, so a file missing from the manifest (added after training) is refused too.
pub struct RunDir {
    dir: std::path::PathBuf,
    config: serde_json::Value,
    /// `None` for a run written before checksums (format 1).
    sums: Option<std::collections::BTreeMap<String, String>>,
}

impl RunDir {
    /// Opens `dir`, a directory of kind `what` (`"run"`, `"classifier directory"`) whose
    /// `config.json` must have `"model": model`; `wrong_model` builds the message for another
    /// model name. Checks, in order: the directory exists, config.json is JSON with that
    /// model, the version ([`check_version`]), the format, and the checksums.
    ///
    /// # Errors
    /// [`Error::Io`] for a missing directory or file; [`Error::Format`] naming the file for
    /// another model, a newer version or format, a missing [`MANIFEST`] in a format-2 run, or
    /// a file whose SHA-256 differs from the manifest (field `weights` for `.bpk` files).
    pub(crate) fn open(
        dir: &Path,
        what: &str,
        model: &str,
        wrong_model: impl FnOnce(&str) -> String,
    ) -> Result<RunDir> {
        if !dir.is_dir() {
            return Err(Error::io(
                dir,
                std::io::Error::new(std::io::ErrorKind::NotFound, format!("{what} not found")),
            ));
        }
        let cp = dir.join("config.json");
        let mut config: serde_json::Value = read_json(&cp)?;
        fill_vae_defaults(&mut config);
        let found = read_model_name(&cp)?;
        if found != model {
            return Err(Error::format(&cp, "model", wrong_model(&found)));
        }
        check_version(&cp, &config)?;
        let format = match config.get("run_format") {
            None => 1,
            Some(v) => v.as_u64().ok_or_else(|| {
                Error::format(&cp, "run_format", format!("{v}, expected an integer"))
            })?,
        };
        check_field(
            &cp,
            "run_format",
            (1..=RUN_FORMAT).contains(&format),
            || {
                format!(
                    "{format}: written by a newer celldiff; this celldiff {} reads formats 1 to \
                 {RUN_FORMAT}",
                    env!("CARGO_PKG_VERSION")
                )
            },
        )?;
        let mp = dir.join(MANIFEST);
        let sums = if format >= 2 || mp.exists() {
            if !mp.exists() {
                return Err(Error::io(
                    &mp,
                    std::io::Error::new(
                        std::io::ErrorKind::NotFound,
                        "missing: the checksums of this run were deleted, so its files cannot \
                         be checked",
                    ),
                ));
            }
            let sums = read_manifest(&mp)?;
            for (name, want) in &sums {
                let p = dir.join(name);
                if !p.is_file() {
                    return Err(Error::io(
                        &p,
                        std::io::Error::new(
                            std::io::ErrorKind::NotFound,
                            format!("listed in {MANIFEST} but missing"),
                        ),
                    ));
                }
                let got = sha256_file(&p)?;
                if &got != want {
                    let field = if name.ends_with(".bpk") {
                        "weights"
                    } else {
                        "SHA-256"
                    };
                    return Err(Error::format(
                        &p,
                        field,
                        format!(
                            "the file changed after training (corrupt or edited): its SHA-256 \
                             is {got}, {MANIFEST} records {want}"
                        ),
                    ));
                }
            }
            Some(sums)
        } else {
            warn(format!(
                "{}: no {MANIFEST} (written by celldiff {} before runs recorded checksums): \
                 its files cannot be checked for corruption; train it again to get a checked run",
                dir.display(),
                config
                    .get("celldiff_version")
                    .and_then(|v| v.as_str())
                    .unwrap_or("?")
            ));
            None
        };
        Ok(RunDir {
            dir: dir.to_path_buf(),
            config,
            sums,
        })
    }

    /// The path of file `name` in the run.
    pub fn path(&self, name: &str) -> std::path::PathBuf {
        self.dir.join(name)
    }

    /// Fails if the run has a manifest that does not list `name`.
    fn check_listed(&self, name: &str) -> Result<()> {
        match &self.sums {
            Some(s) if !s.contains_key(name) => Err(Error::format(
                self.path(name),
                "SHA-256",
                format!("not listed in {MANIFEST}: the file was added after training"),
            )),
            _ => Ok(()),
        }
    }

    /// `config.json` as `T`.
    ///
    /// # Errors
    /// [`Error::Format`] naming the field that does not parse.
    pub fn config<T: for<'de> Deserialize<'de>>(&self) -> Result<T> {
        from_value(&self.path("config.json"), &self.config)
    }

    /// Reads JSON file `name` as `T`.
    ///
    /// # Errors
    /// [`Error::Io`] if it is missing; [`Error::Format`] naming the field that does not parse,
    /// or if it is not in the manifest.
    pub fn json<T: for<'de> Deserialize<'de>>(&self, name: &str) -> Result<T> {
        self.check_listed(name)?;
        let p = self.path(name);
        let s = fs::read_to_string(&p).map_err(|e| Error::io(&p, e))?;
        parse_json(&p, &s)
    }

    /// [`RunDir::json`] for a file that may be absent (`None`).
    ///
    /// # Errors
    /// As [`RunDir::json`].
    pub fn optional_json<T: for<'de> Deserialize<'de>>(&self, name: &str) -> Result<Option<T>> {
        if self.path(name).exists() {
            self.json(name).map(Some)
        } else {
            Ok(None)
        }
    }

    /// Loads weights file `name` into `m`.
    ///
    /// # Errors
    /// As loading weights: [`Error::Format`] for corrupt or truncated weights, or if the file is not in the manifest.
    pub fn module<M: Module>(&self, m: M, name: &str) -> Result<M> {
        self.check_listed(name)?;
        load_module(m, &self.path(name))
    }

    /// The model's genes ([`GENES_JSON`], or [`LEGACY_GENES_TXT`] of a format-1 run) and the
    /// file they came from; `n` is the count the config implies (`why` says where from).
    ///
    /// # Errors
    /// [`Error::Io`] if neither file exists; [`Error::Format`] naming the file if it does not
    /// parse or holds another number of genes.
    pub fn genes(&self, n: usize, why: &str) -> Result<(Vec<String>, std::path::PathBuf)> {
        let (genes, p) = if self.path(GENES_JSON).exists() || self.sums.is_some() {
            (self.json::<Vec<String>>(GENES_JSON)?, self.path(GENES_JSON))
        } else {
            (read_genes(&self.dir)?, self.path(LEGACY_GENES_TXT))
        };
        check_field(&p, "genes", genes.len() == n, || {
            format!("{} genes listed, {why} has {n}", genes.len())
        })?;
        Ok((genes, p))
    }

    /// The training history (`metrics.jsonl`, informational: unreadable lines are skipped).
    pub fn history(&self) -> Vec<EpochRecord> {
        read_history(&self.dir)
    }
}

impl RunDir {
    /// The run's `library_size.json`, checked against the latent width `n_latent`: required
    /// for a count `likelihood`, `None` when absent otherwise.
    ///
    /// # Errors
    /// [`Error::Format`] for a missing file of a count-likelihood run, unreadable JSON or
    /// values out of range.
    pub fn library(
        &self,
        likelihood: Likelihood,
        n_latent: usize,
    ) -> Result<Option<LibrarySizeModel>> {
        let library: Option<LibrarySizeModel> = self.optional_json(LIBRARY_JSON)?;
        match (&library, likelihood.is_count()) {
            (Some(l), true) => l.check(&self.path(LIBRARY_JSON), n_latent)?,
            (None, true) => {
                return Err(Error::format(
                    self.path(LIBRARY_JSON),
                    "(file)",
                    format!(
                        "missing: a run with the {} likelihood needs its library-size model",
                        likelihood.name()
                    ),
                ));
            }
            _ => {}
        }
        Ok(library)
    }
}

/// Files of a run directory that no model reads back, so the manifest leaves them out.
const UNSEALED: &[&str] = &["metrics.jsonl", MANIFEST];

/// Lowercase hex SHA-256 of a file's bytes (streamed).
fn sha256_file(path: &Path) -> Result<String> {
    use sha2::{Digest, Sha256};
    let mut f = fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut h = Sha256::new();
    std::io::copy(&mut f, &mut h).map_err(|e| Error::io(path, e))?;
    Ok(format!("{:x}", h.finalize()))
}

/// Writes [`MANIFEST`] over every regular file in `dir` but `metrics.jsonl` (sorted by name).
pub(super) fn write_manifest(dir: &Path) -> Result<()> {
    let mut names = Vec::new();
    for e in fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
        let e = e.map_err(|e| Error::io(dir, e))?;
        let name = e.file_name().to_string_lossy().into_owned();
        let is_file = e.file_type().map_err(|x| Error::io(e.path(), x))?.is_file();
        if is_file && !UNSEALED.contains(&name.as_str()) {
            names.push(name);
        }
    }
    names.sort();
    let mut s = String::new();
    for n in names {
        s += &format!("{}  {n}\n", sha256_file(&dir.join(&n))?);
    }
    let p = dir.join(MANIFEST);
    fs::write(&p, s).map_err(|e| Error::io(p, e))
}

/// Parses a [`MANIFEST`]: file name → lowercase hex SHA-256.
fn read_manifest(path: &Path) -> Result<std::collections::BTreeMap<String, String>> {
    let s = fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let mut out = std::collections::BTreeMap::new();
    for (i, line) in s.lines().enumerate() {
        let bad = |msg: &str| Error::format(path, format!("line {}", i + 1), msg.to_string());
        let (hash, name) = line
            .split_once("  ")
            .ok_or_else(|| bad("expected `SHA-256  FILE` (sha256sum format)"))?;
        if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(bad("the checksum is not 64 hexadecimal digits"));
        }
        if name.is_empty() || name.contains('/') || name.contains('\\') || name.starts_with('.') {
            return Err(bad("expected a file name inside the run directory"));
        }
        if out
            .insert(name.to_string(), hash.to_ascii_lowercase())
            .is_some()
        {
            return Err(bad("the file is listed twice"));
        }
    }
    Ok(out)
}

/// A warning about a loaded run (logged with `tracing::warn!`; the `celldiff` binary prints
/// it to stderr as `warning: ...`).
fn warn(msg: String) {
    tracing::warn!("{msg}");
}

/// Fills the VAE fields added after a run was written with the values such runs were trained
/// with (`vae.norm`: `batch`, `vae.activation`: `Relu`, issue 18): Burn's `Config` derive does
/// not default missing fields on deserialisation. Applies to `vae` of scVAEDer and SCLD runs.
fn fill_vae_defaults(config: &mut serde_json::Value) {
    if let Some(vae) = config.get_mut("vae").and_then(|v| v.as_object_mut()) {
        vae.entry("norm").or_insert_with(|| "batch".into());
        vae.entry("activation").or_insert_with(|| "Relu".into());
    }
}

/// Parses JSON into `T`, naming the failing field path in the error
/// (`diffusion_train.ema_decay: invalid type: null, expected f64`).
fn parse_json<T: for<'de> Deserialize<'de>>(path: &Path, text: &str) -> Result<T> {
    let de = &mut serde_json::Deserializer::from_str(text);
    serde_path_to_error::deserialize(de).map_err(|e| json_error(path, &e))
}

/// [`parse_json`] from an already parsed value.
fn from_value<T: for<'de> Deserialize<'de>>(path: &Path, v: &serde_json::Value) -> Result<T> {
    serde_path_to_error::deserialize(v).map_err(|e| json_error(path, &e))
}

fn json_error<E: std::fmt::Display>(path: &Path, e: &serde_path_to_error::Error<E>) -> Error {
    let field = e.path().to_string();
    let field = if field == "." { "(json)".into() } else { field };
    let inner = e.inner().to_string();
    let hint = if inner.contains("null") {
        " (a NaN or infinite number is written as null: the run was trained with a value out \
         of range; train it again)"
    } else {
        ""
    };
    Error::format(path, field, format!("{inner}{hint}"))
}

/// Checks that the `celldiff_version` in `config` (the file at `path`) can be read by this
/// build: runs of older or compatible versions load; a run written by a newer, incompatible
/// version (another major version, or another minor version while the major is 0, as in
/// Cargo's semver rule) is refused with both versions named.
///
/// # Errors
/// [`Error::Format`] naming `celldiff_version` if it is missing, not a version, or newer and
/// incompatible.
pub fn check_version(path: &Path, config: &serde_json::Value) -> Result<()> {
    let running = env!("CARGO_PKG_VERSION");
    let field = "celldiff_version";
    let written = config
        .get(field)
        .and_then(|v| v.as_str())
        .ok_or_else(|| Error::format(path, field, "missing or not a string"))?;
    let w = semver::Version::parse(written).map_err(|e| {
        Error::format(
            path,
            field,
            format!("`{written}` is not a version (MAJOR.MINOR.PATCH): {e}"),
        )
    })?;
    let r = semver::Version::parse(running).expect("CARGO_PKG_VERSION is semver");
    let compatible = w.major == r.major && (w.major != 0 || w.minor == r.minor);
    if w > r && !compatible {
        return Err(Error::format(
            path,
            field,
            format!(
                "written by celldiff {written}, a newer major version than this celldiff \
                 {running}, which cannot read it: upgrade celldiff, or train the model again \
                 with this version"
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::save_run_dir;
    use super::*;

    #[test]
    fn runs_written_before_the_vae_block_options_load_with_batchnorm_and_relu() {
        let mut old = serde_json::json!({"vae": {"n_genes": 3, "hidden": [4]}});
        fill_vae_defaults(&mut old);
        assert_eq!(old["vae"]["norm"], "batch");
        assert_eq!(old["vae"]["activation"], "Relu");
        let mut new = serde_json::json!({"vae": {"norm": "none", "activation": "Silu"}});
        fill_vae_defaults(&mut new);
        assert_eq!(new["vae"]["norm"], "none");
        assert_eq!(new["vae"]["activation"], "Silu");
        // SCLD runs without a VAE are left alone.
        let mut scld = serde_json::json!({"vae": null});
        fill_vae_defaults(&mut scld);
        assert!(scld["vae"].is_null());
    }

    #[test]
    fn newer_incompatible_versions_are_refused_with_both_versions_named() {
        let p = Path::new("run/config.json");
        let v = |s: &str| serde_json::json!({ "celldiff_version": s });
        let running = env!("CARGO_PKG_VERSION");
        check_version(p, &v(running)).unwrap();
        check_version(p, &v("0.0.1")).unwrap();
        let r = semver::Version::parse(running).unwrap();
        // A newer patch release is compatible.
        let patch = format!("{}.{}.{}", r.major, r.minor, r.patch + 1);
        check_version(p, &v(&patch)).unwrap();
        for newer in ["99.0.0", &format!("{}.{}.0", r.major, r.minor + 1)] {
            let e = check_version(p, &v(newer)).unwrap_err().to_string();
            assert!(
                e.contains(newer) && e.contains(running) && e.contains("celldiff_version"),
                "{e}"
            );
        }
        let e = check_version(p, &v("latest")).unwrap_err().to_string();
        assert!(e.contains("not a version"), "{e}");
        let e = check_version(p, &serde_json::json!({}))
            .unwrap_err()
            .to_string();
        assert!(e.contains("missing"), "{e}");
    }

    #[test]
    fn the_manifest_round_trips_and_catches_a_changed_byte() {
        let d = tempfile::tempdir().unwrap();
        let cfg = serde_json::json!({ "model": "m", "celldiff_version": "0.0.1" });
        let genes: Vec<String> = vec!["".into(), "a\nb".into(), "c".into()];
        let dir = d.path().join("r");
        save_run_dir(&dir, false, &cfg, &genes, |tmp| {
            fs::write(tmp.join("w.bpk"), [1u8, 2, 3]).map_err(|e| Error::io(tmp, e))?;
            fs::write(tmp.join("metrics.jsonl"), "{}\n").map_err(|e| Error::io(tmp, e))
        })
        .unwrap();
        let sums = read_manifest(&dir.join(MANIFEST)).unwrap();
        let names: Vec<&str> = sums.keys().map(String::as_str).collect();
        assert_eq!(names, ["config.json", "genes.json", "w.bpk"]);
        // SHA-256 of the empty string, as a known answer.
        fs::write(dir.join("e"), "").unwrap();
        assert_eq!(
            sha256_file(&dir.join("e")).unwrap(),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        fs::remove_file(dir.join("e")).unwrap();
        let rd = RunDir::open(&dir, "run", "m", |m| m.into()).unwrap();
        assert_eq!(rd.genes(3, "test").unwrap().0, genes);
        // metrics.jsonl is not sealed: editing it is fine.
        fs::write(dir.join("metrics.jsonl"), "").unwrap();
        RunDir::open(&dir, "run", "m", |m| m.into()).unwrap();
        fs::write(dir.join("w.bpk"), [1u8, 2, 4]).unwrap();
        let e = RunDir::open(&dir, "run", "m", |m| m.into())
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("w.bpk") && e.contains("weights"), "{e}");
        // Another model name is refused before anything else.
        let e = RunDir::open(&dir, "run", "other", |m| format!("got {m}"))
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("got m"), "{e}");
    }

    #[test]
    fn malformed_manifest_lines_are_named() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join(MANIFEST);
        for (text, want) in [
            ("abc  x\n", "64 hexadecimal"),
            (
                &format!("{}  ../x\n", "0".repeat(64)),
                "inside the run directory",
            ),
            (&format!("{0}  x\n{0}  x\n", "0".repeat(64)), "listed twice"),
            ("no separator\n", "sha256sum format"),
        ] {
            fs::write(&p, text).unwrap();
            let e = read_manifest(&p).unwrap_err().to_string();
            assert!(e.contains(want) && e.contains("line"), "{text}: {e}");
        }
    }
}
