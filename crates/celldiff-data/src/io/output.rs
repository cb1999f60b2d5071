//! Output paths: the one policy every file and directory celldiff writes goes through.
//!
//! **Your data is safe.** celldiff never deletes or replaces anything it did not write:
//! - Without `force` nothing that exists is replaced, not even by a process racing this one:
//!   the output is written to a temporary sibling `.NAME.tmp-PID-N` and published with a
//!   rename that fails when the target exists (Linux `renameat2(RENAME_NOREPLACE)`;
//!   `link` + `unlink` for files and `mkdir` + `rename` for directories where that is not
//!   supported). The loser of a race gets [`Error::Refused`] ("appeared meanwhile") and leaves
//!   nothing behind.
//! - `force` replaces only what celldiff itself wrote: a regular file (for a file output), a
//!   run directory recognised by its `config.json` with `model` and `celldiff_version` fields
//!   and no sub-directories (scVAEDer, SCLD and classifier runs; [`OutputKind::RunDir`]), a
//!   directory holding only the files a command writes there ([`OutputKind::Files`]), or an
//!   empty directory (for the two folder kinds: nothing is lost). A run
//!   directory is replaced by moving the old one aside, renaming the new one in, then deleting
//!   the old one.
//! - Refused whatever `force` says, before any work ([`check_output`]): `.`, `..` and paths
//!   ending in them, any other existing directory, a symbolic link, FIFO, socket or device
//!   node, and an output that is an input (canonicalised, hard links included) or a folder
//!   that contains one.
//! - Temporaries are removed on every error path ([`TempPath`] deletes on drop); temporaries
//!   left by a killed process (`.NAME.tmp-PID…` whose PID no longer exists in `/proc`) are
//!   removed by the next write to `NAME` ([`remove_stale_temps`]).

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::{Error, Result};

/// What an output path holds, which decides what `force` may replace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputKind {
    /// One regular file (an `.h5ad`, a PNG, a JSON or TSV file).
    File,
    /// A run directory written by [`write_dir`]: recognised by its `config.json` with string
    /// fields `model` and `celldiff_version`, and no sub-directories (an empty directory may be
    /// replaced too).
    RunDir,
    /// A directory that holds only (a subset of) these regular files, e.g. the output folder
    /// of `celldiff velocity`.
    Files(&'static [&'static str]),
}

fn refused(path: &Path, reason: impl Into<String>) -> Error {
    Error::Refused {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

/// The path actually written for `out`: trailing slashes dropped. Refuses paths whose last
/// component is empty, `.` or `..` (they name a directory the user did not create for this
/// output: the current folder or a parent).
fn target_path(out: &Path) -> Result<PathBuf> {
    let raw = out.as_os_str().as_encoded_bytes();
    let trimmed: &[u8] = {
        let mut end = raw.len();
        while end > 1 && raw[end - 1] == b'/' {
            end -= 1;
        }
        &raw[..end]
    };
    let last = trimmed.rsplit(|&b| b == b'/').next().unwrap_or(&[]);
    if trimmed.is_empty() || last == b"." || last == b".." {
        return Err(refused(
            out,
            "names the current or a parent folder; give a new file or folder name (e.g. `runs/r1`): \
             celldiff never writes over a folder it did not create",
        ));
    }
    let name = out.file_name().ok_or_else(|| {
        refused(
            out,
            "is not a file or folder name (a file system root?); give a new name",
        )
    })?;
    Ok(match out.parent() {
        Some(p) => p.join(name),
        None => PathBuf::from(name),
    })
}

/// `target` with its parent canonicalised and its last component as given; `None` when the
/// parent does not exist (then the target cannot be or hold an existing input).
fn canonical_target(target: &Path) -> Option<PathBuf> {
    let name = target.file_name()?;
    let parent = match target.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    Some(fs::canonicalize(parent).ok()?.join(name))
}

/// Why `target` may not be written given one `input`, if it may not.
fn input_overlap(target: &Path, input: &Path) -> Option<String> {
    let ci = fs::canonicalize(input).ok()?;
    let ct = canonical_target(target)?;
    if ct == ci || same_file(target, input) {
        return Some(format!(
            "is the input {}; write the output to a new path (celldiff never replaces its \
             input)",
            input.display()
        ));
    }
    if ci.starts_with(&ct) {
        return Some(format!(
            "contains the input {}; write the output to a new path (celldiff never replaces \
             a folder that holds its input)",
            input.display()
        ));
    }
    None
}

#[cfg(unix)]
fn same_file(a: &Path, b: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (fs::metadata(a), fs::metadata(b)) {
        (Ok(x), Ok(y)) => x.dev() == y.dev() && x.ino() == y.ino(),
        _ => false,
    }
}

#[cfg(not(unix))]
fn same_file(_: &Path, _: &Path) -> bool {
    false
}

/// What kind of non-regular file `ft` is, for messages.
fn special_kind(ft: &fs::FileType) -> &'static str {
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if ft.is_fifo() {
            return "a FIFO (named pipe)";
        }
        if ft.is_char_device() || ft.is_block_device() {
            return "a device node";
        }
        if ft.is_socket() {
            return "a socket";
        }
    }
    let _ = ft;
    "not a regular file"
}

/// Whether `dir` is a run directory celldiff wrote: `config.json` (a regular file) holds a JSON
/// object with string fields `model` and `celldiff_version`, and `dir` has no sub-directories.
pub fn is_celldiff_run(dir: &Path) -> bool {
    let cp = dir.join("config.json");
    let Ok(meta) = fs::symlink_metadata(&cp) else {
        return false;
    };
    if !meta.file_type().is_file() || meta.len() > (64 << 20) {
        return false;
    }
    let Ok(text) = fs::read_to_string(&cp) else {
        return false;
    };
    let Ok(v) = serde_json::from_str::<serde_json::Value>(&text) else {
        return false;
    };
    let is_str = |k: &str| v.get(k).is_some_and(|x| x.is_string());
    if !(is_str("model") && is_str("celldiff_version")) {
        return false;
    }
    fs::read_dir(dir).is_ok_and(|rd| {
        rd.into_iter().all(|e| {
            e.ok()
                .and_then(|e| e.file_type().ok())
                .is_some_and(|t| t.is_file())
        })
    })
}

/// Whether `dir` is a directory with no entries (replacing it loses nothing).
fn is_empty_dir(dir: &Path) -> bool {
    fs::read_dir(dir).is_ok_and(|mut rd| rd.next().is_none())
}

/// `Ok(())` if `force` may replace the existing `meta` at `target` for `kind`, else why not.
fn replaceable(
    target: &Path,
    meta: &fs::Metadata,
    kind: OutputKind,
) -> std::result::Result<(), String> {
    let ft = meta.file_type();
    if ft.is_symlink() {
        return Err(
            "is a symbolic link: celldiff neither writes through nor replaces links; \
                    give the real path, or remove the link"
                .into(),
        );
    }
    if !ft.is_file() && !ft.is_dir() {
        return Err(format!(
            "is {}: celldiff writes only regular files and its own folders; give a file path",
            special_kind(&ft)
        ));
    }
    match kind {
        OutputKind::File if ft.is_dir() => Err("is a directory; the output is a file (give a \
                                                file name, e.g. DIR/out.h5ad)"
            .into()),
        OutputKind::File => Ok(()),
        OutputKind::RunDir if ft.is_file() => Err("is a file, not a celldiff run directory; \
                                                   force replaces only a run celldiff wrote"
            .into()),
        OutputKind::RunDir if is_celldiff_run(target) || is_empty_dir(target) => Ok(()),
        OutputKind::RunDir => Err("is a folder celldiff did not write (no config.json with \
                                   `model` and `celldiff_version`); --force replaces only a \
                                   run directory: choose a new name"
            .into()),
        OutputKind::Files(_) if ft.is_file() => {
            Err("is a file; the output is a folder: choose a new name".into())
        }
        OutputKind::Files(names) => {
            let entries: Vec<(String, bool)> = fs::read_dir(target)
                .map_err(|e| format!("cannot be listed ({e})"))?
                .filter_map(|e| e.ok())
                .map(|e| {
                    let regular = e.file_type().is_ok_and(|t| t.is_file());
                    (e.file_name().to_string_lossy().into_owned(), regular)
                })
                .collect();
            let foreign: Vec<&str> = entries
                .iter()
                .filter(|(n, regular)| !regular || !names.contains(&n.as_str()))
                .map(|(n, _)| n.as_str())
                .collect();
            if foreign.is_empty() {
                Ok(())
            } else {
                Err(format!(
                    "is a folder celldiff did not write (it holds {}; celldiff writes only {}); \
                     force replaces only its own output: choose a new name",
                    foreign.join(", "),
                    names.join(", ")
                ))
            }
        }
    }
}

/// Checks an output path before any work, so that a refusal costs nothing:
/// - refused always ([`Error::Refused`], exit 2): `.`, `..` or a path ending in them; an
///   output that is one of `inputs` or a folder containing one (paths canonicalised, hard
///   links detected); an existing symbolic link, FIFO, socket or device node; an existing
///   path `force` could not replace either (a directory for [`OutputKind::File`], a file or a
///   non-run folder for [`OutputKind::RunDir`], a folder with foreign entries for
///   [`OutputKind::Files`]);
/// - [`Error::AlreadyExists`] when the path exists, could be replaced, and `force` is false.
///
/// Inputs that do not exist are skipped (reading them reports that).
///
/// # Errors
/// [`Error::Refused`], [`Error::AlreadyExists`] as above; [`Error::Io`] if the path cannot be
/// inspected (permission).
pub fn check_output(out: &Path, force: bool, kind: OutputKind, inputs: &[&Path]) -> Result<()> {
    let target = target_path(out)?;
    for input in inputs {
        if let Some(why) = input_overlap(&target, input) {
            return Err(refused(out, why));
        }
    }
    match fs::symlink_metadata(&target) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io(out, e)),
        Ok(meta) => match replaceable(&target, &meta, kind) {
            Err(why) => Err(refused(out, why)),
            Ok(()) if force => Ok(()),
            Ok(()) => Err(Error::AlreadyExists {
                path: out.to_path_buf(),
            }),
        },
    }
}

/// A fresh temporary sibling name for `target`: `.NAME.tmp-PID-N` in the same folder (so the
/// final rename stays on one file system). Nothing is created.
pub fn temp_sibling(target: &Path) -> PathBuf {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let name = target
        .file_name()
        .map_or_else(|| "output".into(), |s| s.to_string_lossy().into_owned());
    target.with_file_name(format!(".{name}.tmp-{}-{n}", std::process::id()))
}

/// The PID in a temporary name of `name` (`.NAME.tmp-PID` or `.NAME.tmp-PID-N`, optionally
/// followed by `.png`, as figures are drawn), if it is one.
fn temp_pid(entry: &str, name: &str) -> Option<u32> {
    let rest = entry
        .strip_prefix('.')?
        .strip_prefix(name)?
        .strip_prefix(".tmp-")?;
    let rest = rest.strip_suffix(".png").unwrap_or(rest);
    let (pid, n) = rest.split_once('-').unwrap_or((rest, "0"));
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    (digits(pid) && digits(n)).then(|| pid.parse().ok())?
}

/// Removes temporaries of `target` left by dead processes: siblings named `.NAME.tmp-PID`,
/// `.NAME.tmp-PID-N` or `.NAME.tmp-PID-N.png` (exactly celldiff's patterns) whose PID is not this process and has no
/// `/proc/PID`. Does nothing where `/proc` is not mounted (the PID cannot be checked).
/// Failures are ignored: this is housekeeping.
pub fn remove_stale_temps(target: &Path) {
    if !Path::new("/proc/self").exists() {
        return;
    }
    let Some(name) = target.file_name().map(|n| n.to_string_lossy().into_owned()) else {
        return;
    };
    let parent = match target.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let Ok(rd) = fs::read_dir(parent) else {
        return;
    };
    for e in rd.filter_map(|e| e.ok()) {
        let entry = e.file_name().to_string_lossy().into_owned();
        let Some(pid) = temp_pid(&entry, &name) else {
            continue;
        };
        if pid == std::process::id() || Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        remove_path(&e.path());
    }
}

/// Removes a file, link or directory tree at `p` (links are removed, never followed).
fn remove_path(p: &Path) {
    match fs::symlink_metadata(p) {
        Ok(m) if m.file_type().is_dir() => {
            let _ = fs::remove_dir_all(p);
        }
        Ok(_) => {
            let _ = fs::remove_file(p);
        }
        Err(_) => {}
    }
}

/// A temporary file or directory that is deleted when dropped, unless [`TempPath::keep`] was
/// called (after it was renamed into place).
#[derive(Debug)]
pub struct TempPath {
    path: PathBuf,
    armed: bool,
}

impl TempPath {
    /// Guards `path` (which may not exist yet).
    pub fn new(path: PathBuf) -> Self {
        Self { path, armed: true }
    }

    /// The guarded path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Disarms the guard (the path was published or handed on) and returns the path.
    pub fn keep(mut self) -> PathBuf {
        self.armed = false;
        std::mem::take(&mut self.path)
    }
}

impl Drop for TempPath {
    fn drop(&mut self) {
        if self.armed {
            remove_path(&self.path);
        }
    }
}

/// Outcome of a rename that must not replace anything.
fn rename_noreplace(from: &Path, to: &Path) -> io::Result<()> {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    {
        use rustix::fs::{CWD, RenameFlags, renameat_with};
        use rustix::io::Errno;
        match renameat_with(CWD, from, CWD, to, RenameFlags::NOREPLACE) {
            Ok(()) => return Ok(()),
            // Kernel or file system without RENAME_NOREPLACE: fall back below.
            Err(e) if e == Errno::INVAL || e == Errno::NOSYS || e == Errno::OPNOTSUPP => {}
            Err(e) => return Err(e.into()),
        }
    }
    if fs::symlink_metadata(from)?.is_dir() {
        // mkdir is exclusive; rename then replaces only the empty folder this call created.
        fs::create_dir(to)?;
        fs::rename(from, to).inspect_err(|_| {
            let _ = fs::remove_dir(to);
        })
    } else {
        match fs::hard_link(from, to) {
            Ok(()) => fs::remove_file(from),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Err(e),
            // No hard links on this file system: check, then rename (a narrow race remains).
            Err(_) if fs::symlink_metadata(to).is_ok() => {
                Err(io::Error::from(io::ErrorKind::AlreadyExists))
            }
            Err(_) => fs::rename(from, to),
        }
    }
}

fn appeared(out: &Path) -> Error {
    refused(
        out,
        "appeared meanwhile (another process wrote it while this one worked); nothing was \
         replaced and this command's output was discarded",
    )
}

fn is_exists(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::AlreadyExists || e.kind() == io::ErrorKind::DirectoryNotEmpty
}

/// Publishes the finished temporary file `tmp` at `target`: without `force` only if `target`
/// still does not exist; with `force` also over a regular file (never over a directory, link,
/// FIFO or device). On error `tmp` is left for its owner to remove.
///
/// # Errors
/// [`Error::Refused`] if `target` appeared meanwhile (without `force`) or is not a regular
/// file; [`Error::Io`] if the rename fails.
pub fn publish_file(tmp: &Path, target: &Path, force: bool) -> Result<()> {
    if force {
        match fs::symlink_metadata(target) {
            Ok(meta) => {
                replaceable(target, &meta, OutputKind::File).map_err(|why| refused(target, why))?;
                return fs::rename(tmp, target).map_err(|e| Error::io(target, e));
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io(target, e)),
        }
    }
    rename_noreplace(tmp, target).map_err(|e| {
        if is_exists(&e) {
            appeared(target)
        } else {
            Error::io(target, e)
        }
    })
}

/// Creates the missing parent folders of `target`.
fn create_parent(target: &Path) -> Result<()> {
    if let Some(p) = target.parent().filter(|p| !p.as_os_str().is_empty()) {
        fs::create_dir_all(p).map_err(|e| Error::io(p, e))?;
    }
    Ok(())
}

/// Writes one output file safely: checks `out` ([`check_output`] with [`OutputKind::File`],
/// no inputs: call `check_output` with the inputs before the work), removes stale temporaries,
/// lets `write` fill a fresh temporary sibling path (it must create the file there), then
/// publishes it ([`publish_file`]). Whatever fails, the temporary is removed and `out` is left
/// as it was.
///
/// # Errors
/// Those of [`check_output`] and [`publish_file`], except that an `out` that exists without
/// `force` is [`Error::Refused`] "appeared meanwhile" (the caller checked it before the work);
/// whatever `write` returns; [`Error::Io`] if the parent folder cannot be created.
pub fn write_file(out: &Path, force: bool, write: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    check_output(out, force, OutputKind::File, &[]).map_err(|e| match e {
        Error::AlreadyExists { .. } => appeared(out),
        e => e,
    })?;
    let target = target_path(out)?;
    create_parent(&target)?;
    remove_stale_temps(&target);
    let tmp = TempPath::new(temp_sibling(&target));
    write(tmp.path())?;
    publish_file(tmp.path(), &target, force)?;
    tmp.keep();
    Ok(())
}

/// Writes an output directory safely: checks `out` for `kind` ([`check_output`], no inputs),
/// removes stale temporaries, creates a fresh temporary sibling folder that `write` fills,
/// then publishes it: without `force` by a rename that fails if `out` appeared meanwhile; with
/// `force` over an existing `out` that `kind` allows replacing, by moving the old folder aside,
/// renaming the new one in, and only then deleting the old one (restored if the rename fails).
/// Whatever fails, the temporary folder is removed and `out` is left as it was.
///
/// # Errors
/// Those of [`check_output`], [`Error::Refused`] if `out` appeared meanwhile, whatever `write`
/// returns, and [`Error::Io`] for failed folder operations.
pub fn write_dir(
    out: &Path,
    force: bool,
    kind: OutputKind,
    write: impl FnOnce(&Path) -> Result<()>,
) -> Result<()> {
    check_output(out, force, kind, &[])?;
    let target = target_path(out)?;
    create_parent(&target)?;
    remove_stale_temps(&target);
    let tmp = TempPath::new(temp_sibling(&target));
    fs::create_dir(tmp.path()).map_err(|e| Error::io(tmp.path(), e))?;
    write(tmp.path())?;
    let mut old = None;
    if force {
        match fs::symlink_metadata(&target) {
            Ok(meta) => {
                replaceable(&target, &meta, kind).map_err(|why| refused(out, why))?;
                let aside = TempPath::new(temp_sibling(&target));
                fs::rename(&target, aside.path()).map_err(|e| Error::io(&target, e))?;
                old = Some(aside);
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io(&target, e)),
        }
    }
    if let Err(e) = rename_noreplace(tmp.path(), &target) {
        if let Some(aside) = old {
            // Put the old run back where it was.
            if rename_noreplace(aside.path(), &target).is_ok() {
                aside.keep();
            }
        }
        return Err(if is_exists(&e) {
            appeared(out)
        } else {
            Error::io(&target, e)
        });
    }
    tmp.keep();
    drop(old); // deletes the replaced folder
    Ok(())
}

/// Checks an output path before any work ([`check_output`] without input paths): an existing
/// directory is checked as a run directory ([`OutputKind::RunDir`]), anything else as a file.
/// Commands that read inputs should call [`check_output`] with them.
///
/// # Errors
/// [`Error::AlreadyExists`] if `path` exists and `force` is false; [`Error::Refused`] for `.`,
/// `..`, links, FIFOs, devices and folders celldiff did not write.
pub fn check_overwrite(path: &Path, force: bool) -> Result<()> {
    let kind = if std::fs::symlink_metadata(path).is_ok_and(|m| m.is_dir()) {
        OutputKind::RunDir
    } else {
        OutputKind::File
    };
    check_output(path, force, kind, &[])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run_dir(p: &Path) {
        fs::create_dir_all(p).unwrap();
        fs::write(
            p.join("config.json"),
            r#"{"model": "scvaeder", "celldiff_version": "0.1.0"}"#,
        )
        .unwrap();
    }

    #[test]
    fn dot_dotdot_and_trailing_dots_are_refused() {
        for p in [".", "..", "a/.", "a/..", "./", "../", ""] {
            for kind in [OutputKind::File, OutputKind::RunDir] {
                let e = check_output(Path::new(p), true, kind, &[]).unwrap_err();
                assert!(matches!(e, Error::Refused { .. }), "{p}: {e}");
            }
        }
        assert_eq!(
            target_path(Path::new("runs/r/")).unwrap(),
            Path::new("runs/r")
        );
    }

    #[test]
    fn force_replaces_only_what_celldiff_wrote() {
        let d = tempfile::tempdir().unwrap();
        let file = d.path().join("notes.txt");
        fs::write(&file, "mine").unwrap();
        let user_dir = d.path().join("photos");
        fs::create_dir(&user_dir).unwrap();
        fs::write(user_dir.join("a.jpg"), "x").unwrap();
        let run = d.path().join("run");
        run_dir(&run);
        // A file output may replace a file, never a folder.
        assert!(check_output(&file, true, OutputKind::File, &[]).is_ok());
        assert!(matches!(
            check_output(&file, false, OutputKind::File, &[]),
            Err(Error::AlreadyExists { .. })
        ));
        for (p, kind) in [
            (&user_dir, OutputKind::File),
            (&user_dir, OutputKind::RunDir),
            (&file, OutputKind::RunDir),
            (&run, OutputKind::File),
        ] {
            for force in [false, true] {
                let e = check_output(p, force, kind, &[]).unwrap_err();
                assert!(matches!(e, Error::Refused { .. }), "{}: {e}", p.display());
            }
        }
        assert!(check_output(&run, true, OutputKind::RunDir, &[]).is_ok());
        let empty = d.path().join("empty");
        fs::create_dir(&empty).unwrap();
        assert!(check_output(&empty, true, OutputKind::RunDir, &[]).is_ok());
        assert!(check_output(&empty, true, OutputKind::File, &[]).is_err());
        // A run with a sub-directory is not one celldiff wrote.
        fs::create_dir(run.join("sub")).unwrap();
        assert!(check_output(&run, true, OutputKind::RunDir, &[]).is_err());
        // Files(...): only the listed names.
        let v = d.path().join("velocity");
        fs::create_dir(&v).unwrap();
        fs::write(v.join("ranking.tsv"), "").unwrap();
        let kind = OutputKind::Files(&["ranking.tsv", "diff.tsv"]);
        assert!(check_output(&v, true, kind, &[]).is_ok());
        fs::write(v.join("thesis.docx"), "").unwrap();
        let e = check_output(&v, true, kind, &[]).unwrap_err().to_string();
        assert!(e.contains("thesis.docx"), "{e}");
    }

    #[test]
    fn inputs_and_their_folders_are_refused() {
        let d = tempfile::tempdir().unwrap();
        let input = d.path().join("in.h5ad");
        fs::write(&input, "data").unwrap();
        let e = check_output(&input, true, OutputKind::File, &[&input]).unwrap_err();
        assert!(e.to_string().contains("is the input"), "{e}");
        let e = check_output(d.path(), true, OutputKind::RunDir, &[&input]).unwrap_err();
        assert!(e.to_string().contains("contains the input"), "{e}");
        // A different spelling of the same file, and a hard link.
        let alias = d.path().join("x/../in.h5ad");
        fs::create_dir(d.path().join("x")).unwrap();
        assert!(check_output(&alias, true, OutputKind::File, &[&input]).is_err());
        let link = d.path().join("hard.h5ad");
        fs::hard_link(&input, &link).unwrap();
        let e = check_output(&link, true, OutputKind::File, &[&input]).unwrap_err();
        assert!(e.to_string().contains("is the input"), "{e}");
        // A new file next to the input is fine.
        assert!(
            check_output(
                &d.path().join("out.h5ad"),
                false,
                OutputKind::File,
                &[&input]
            )
            .is_ok()
        );
    }

    #[cfg(unix)]
    #[test]
    fn links_fifos_and_devices_are_refused() {
        let d = tempfile::tempdir().unwrap();
        let target = d.path().join("t");
        fs::write(&target, "x").unwrap();
        let link = d.path().join("l");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let e = check_output(&link, true, OutputKind::File, &[]).unwrap_err();
        assert!(e.to_string().contains("symbolic link"), "{e}");
        let e = check_output(Path::new("/dev/null"), true, OutputKind::File, &[]).unwrap_err();
        assert!(e.to_string().contains("device"), "{e}");
        // Publishing over them is refused too (the race window).
        let tmp = d.path().join("new");
        fs::write(&tmp, "y").unwrap();
        assert!(publish_file(&tmp, &link, true).is_err());
        assert_eq!(fs::read(&target).unwrap(), b"x");
    }

    #[test]
    fn publish_never_replaces_without_force() {
        let d = tempfile::tempdir().unwrap();
        let target = d.path().join("g.h5ad");
        let a = d.path().join("a");
        fs::write(&a, "a").unwrap();
        publish_file(&a, &target, false).unwrap();
        let b = d.path().join("b");
        fs::write(&b, "b").unwrap();
        let e = publish_file(&b, &target, false).unwrap_err();
        assert!(e.to_string().contains("appeared meanwhile"), "{e}");
        assert_eq!(fs::read(&target).unwrap(), b"a");
        publish_file(&b, &target, true).unwrap();
        assert_eq!(fs::read(&target).unwrap(), b"b");
    }

    #[test]
    fn write_file_and_dir_leave_nothing_behind_on_error() {
        let d = tempfile::tempdir().unwrap();
        let out = d.path().join("o.txt");
        let e = write_file(&out, false, |tmp| {
            fs::write(tmp, "half").unwrap();
            Err(Error::Internal("disk full".into()))
        });
        assert!(e.is_err());
        let run = d.path().join("r");
        let e = write_dir(&run, false, OutputKind::RunDir, |tmp| {
            fs::write(tmp.join("config.json"), "{}").unwrap();
            Err(Error::Internal("killed".into()))
        });
        assert!(e.is_err());
        assert_eq!(fs::read_dir(d.path()).unwrap().count(), 0);
    }

    #[test]
    fn write_dir_replaces_a_run_with_force_and_refuses_without() {
        let d = tempfile::tempdir().unwrap();
        let run = d.path().join("r");
        let fill = |v: &'static str| {
            move |tmp: &Path| {
                fs::write(
                    tmp.join("config.json"),
                    format!(r#"{{"model": "{v}", "celldiff_version": "0"}}"#),
                )
                .map_err(|e| Error::io(tmp, e))
            }
        };
        write_dir(&run, false, OutputKind::RunDir, fill("one")).unwrap();
        assert!(matches!(
            write_dir(&run, false, OutputKind::RunDir, fill("two")),
            Err(Error::AlreadyExists { .. })
        ));
        write_dir(&run, true, OutputKind::RunDir, fill("two")).unwrap();
        let s = fs::read_to_string(run.join("config.json")).unwrap();
        assert!(s.contains("two"));
        assert_eq!(fs::read_dir(d.path()).unwrap().count(), 1, "no leftovers");
    }

    #[test]
    fn stale_temps_of_dead_processes_are_removed() {
        if !Path::new("/proc/self").exists() {
            return;
        }
        let d = tempfile::tempdir().unwrap();
        let target = d.path().join("r");
        // PID 2^22 + 1 is above Linux's pid_max ceiling (2^22), so never alive.
        let dead = d.path().join(".r.tmp-4194305");
        fs::create_dir(&dead).unwrap();
        fs::write(dead.join("config.json"), "{}").unwrap();
        let dead_file = d.path().join(".r.tmp-4194305-3");
        fs::write(&dead_file, "x").unwrap();
        let alive = d.path().join(format!(".r.tmp-{}-9", std::process::id()));
        fs::write(&alive, "x").unwrap();
        let other = d.path().join(".rr.tmp-4194305");
        fs::write(&other, "x").unwrap();
        let user = d.path().join(".r.tmp-4194305.bak");
        fs::write(&user, "x").unwrap();
        remove_stale_temps(&target);
        assert!(!dead.exists() && !dead_file.exists());
        assert!(alive.exists() && other.exists() && user.exists());
    }
}
