//! Data safety of every output path (issue 17): `--force` replaces only what celldiff wrote,
//! nothing is replaced by a racing process, no temporaries are left behind, links / FIFOs are
//! never written through, and the process-level failures (broken pipe, thread pool) are clean.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use crate::common::{TINY, assert_bad_input, assert_ok, demo_h5ad, scratch, stderr, tiny_run};

/// Runs `celldiff --quiet --threads 2 ARGS` in `dir`.
fn celldiff_in(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_celldiff"))
        .current_dir(dir)
        .args(["--quiet", "--threads", "2"])
        .args(args)
        .output()
        .expect("running the celldiff binary")
}

/// Every entry under `dir` (recursively, links not followed) with its bytes (`None` for
/// folders and non-regular files): a snapshot to compare before and after a command.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Option<Vec<u8>>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            let meta = std::fs::symlink_metadata(&p).unwrap();
            let rel = p.strip_prefix(dir).unwrap().to_path_buf();
            if meta.is_dir() {
                stack.push(p);
                out.insert(rel, None);
            } else if meta.is_file() {
                out.insert(rel, Some(std::fs::read(&p).unwrap()));
            } else {
                out.insert(rel, None);
            }
        }
    }
    out
}

/// A scratch folder holding the demo data as `my.h5ad` and two files of the user's.
fn user_folder() -> PathBuf {
    let d = scratch().join("project");
    std::fs::create_dir_all(d.join("figures")).unwrap();
    std::fs::copy(demo_h5ad(), d.join("my.h5ad")).unwrap();
    std::fs::write(d.join("notes.txt"), "my notes\n").unwrap();
    std::fs::write(d.join("figures/fig1.svg"), "<svg/>").unwrap();
    d
}

/// `train` with [`TINY`] and no count observation model (its fit dominates a tiny run's time).
fn train_args<'a>(data: &'a str, out: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut v = vec!["train", "--data", data, "--out", out, "--no-observation"];
    v.extend_from_slice(extra);
    v.extend_from_slice(TINY);
    v
}

#[test]
fn train_out_dot_or_the_inputs_folder_with_force_is_refused_and_nothing_is_lost() {
    let d = user_folder();
    let before = snapshot(&d);
    let o = celldiff_in(&d, &train_args("my.h5ad", ".", &["--force"]));
    assert_bad_input(&o, &["current or a parent folder"]);
    let o = celldiff_in(&d, &train_args("my.h5ad", "figures/..", &["--force"]));
    assert_bad_input(&o, &["current or a parent folder"]);
    // The same folder spelled as an absolute path: it holds the input.
    let abs = d.display().to_string();
    let o = celldiff_in(&d, &train_args("my.h5ad", &abs, &["--force"]));
    assert_bad_input(&o, &["contains the input"]);
    assert_eq!(snapshot(&d), before, "the user's folder changed");
}

#[test]
fn force_refuses_a_folder_celldiff_did_not_write() {
    let d = user_folder();
    let before = snapshot(&d);
    // `figures` holds user files and no celldiff config.json: never replaced.
    let o = celldiff_in(&d, &train_args("my.h5ad", "figures", &["--force"]));
    assert_bad_input(&o, &["figures", "did not write"]);
    // A folder with a config.json of someone else's (no celldiff_version) neither.
    std::fs::write(d.join("figures/config.json"), r#"{"model": "resnet"}"#).unwrap();
    let before2 = snapshot(&d);
    let o = celldiff_in(&d, &train_args("my.h5ad", "figures", &["--force"]));
    assert_bad_input(&o, &["did not write"]);
    assert_eq!(snapshot(&d), before2);
    // A file is not a run: refused before training, and nothing is left behind.
    std::fs::remove_file(d.join("figures/config.json")).unwrap();
    let start = std::time::Instant::now();
    let o = celldiff_in(&d, &train_args("my.h5ad", "notes.txt", &["--force"]));
    assert_bad_input(&o, &["notes.txt", "not a celldiff run"]);
    assert!(
        start.elapsed().as_secs_f64() < 20.0,
        "refused only after training"
    );
    assert_eq!(snapshot(&d), before, "leftovers or a changed file");
}

#[test]
fn output_that_is_the_input_is_refused_even_with_force() {
    let d = user_folder();
    std::fs::hard_link(d.join("my.h5ad"), d.join("alias.h5ad")).unwrap();
    let before = snapshot(&d);
    for out in ["my.h5ad", "./figures/../my.h5ad", "alias.h5ad"] {
        let o = celldiff_in(
            &d,
            &["preprocess", "--data", "my.h5ad", "-o", out, "--force"],
        );
        assert_bad_input(&o, &["is the input"]);
    }
    // An output folder that holds the input.
    let abs = d.display().to_string();
    let o = celldiff_in(&d, &["velocity", "-i", "my.h5ad", "-o", &abs, "--force"]);
    assert_bad_input(&o, &["contains the input"]);
    assert_eq!(snapshot(&d), before);
}

#[test]
fn force_replaces_a_celldiff_run_and_leaves_no_temporaries() {
    let parent = scratch().join("replace");
    std::fs::create_dir_all(&parent).unwrap();
    let run = parent.join("r");
    let data = demo_h5ad().display().to_string();
    let r = run.display().to_string();
    assert_ok(&celldiff_in(
        &parent,
        &train_args(&data, &r, &["--seed", "1"]),
    ));
    let first = std::fs::read(run.join("vae.bpk")).unwrap();
    let o = celldiff_in(&parent, &train_args(&data, &r, &["--seed", "2"]));
    assert_bad_input(&o, &["already exists"]);
    assert_ok(&celldiff_in(
        &parent,
        &train_args(&data, &r, &["--seed", "2", "--force"]),
    ));
    assert_ne!(std::fs::read(run.join("vae.bpk")).unwrap(), first);
    let names: Vec<_> = std::fs::read_dir(&parent)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, vec!["r"], "temporaries left beside the run");
}

/// Starts `n` copies of `args` in `dir` at once and waits for all of them.
fn race(dir: &Path, args: &[Vec<String>]) -> Vec<Output> {
    let children: Vec<_> = args
        .iter()
        .map(|a| {
            Command::new(env!("CARGO_BIN_EXE_celldiff"))
                .current_dir(dir)
                .args(["--quiet", "--threads", "1"])
                .args(a)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    children
        .into_iter()
        .map(|c| c.wait_with_output().unwrap())
        .collect()
}

fn assert_one_winner(outs: &[Output], dir: &Path, expected: &[&str]) {
    let ok = outs.iter().filter(|o| o.status.success()).count();
    assert_eq!(
        ok,
        1,
        "exactly one of the racing commands may succeed: {:?}",
        outs.iter().map(stderr).collect::<Vec<_>>()
    );
    for o in outs.iter().filter(|o| !o.status.success()) {
        assert_eq!(o.status.code(), Some(2), "{}", stderr(o));
        let e = stderr(o);
        assert!(
            e.contains("appeared meanwhile") || e.contains("already exists"),
            "{e}"
        );
        assert!(!e.contains("panicked"), "{e}");
    }
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, expected, "leftovers after the race");
}

#[test]
fn two_generates_racing_for_one_output_one_wins_the_other_exits_2() {
    let dir = scratch().join("race-generate");
    std::fs::create_dir_all(&dir).unwrap();
    let run = tiny_run().display().to_string();
    let args: Vec<Vec<String>> = (0..2)
        .map(|seed| {
            [
                "generate",
                "--run",
                &run,
                "-n",
                "300",
                "--seed",
                &seed.to_string(),
                "-o",
                "g.h5ad",
            ]
            .map(String::from)
            .to_vec()
        })
        .collect();
    let outs = race(&dir, &args);
    assert_one_winner(&outs, &dir, &["g.h5ad"]);
}

#[test]
fn two_trains_racing_for_one_run_one_wins_the_other_exits_2() {
    let dir = scratch().join("race-train");
    std::fs::create_dir_all(&dir).unwrap();
    let data = demo_h5ad().display().to_string();
    let args: Vec<Vec<String>> = ["1", "2"]
        .iter()
        .map(|seed| {
            train_args(&data, "r", &["--seed", seed])
                .into_iter()
                .map(String::from)
                .collect()
        })
        .collect();
    let outs = race(&dir, &args);
    assert_one_winner(&outs, &dir, &["r"]);
    assert!(dir.join("r/config.json").is_file());
}

#[test]
fn output_directory_given_as_a_file_output_is_refused_before_work_without_leftovers() {
    let d = user_folder();
    let before = snapshot(&d);
    let demo = demo_h5ad().display().to_string();
    // Before: evaluated for seconds, then failed to rename, leaving `figures.tmp-PID`.
    let o = celldiff_in(
        &d,
        &[
            "evaluate",
            "--real",
            &demo,
            "--generated",
            &demo,
            "-o",
            "figures",
            "--force",
        ],
    );
    assert_bad_input(&o, &["figures", "is a directory"]);
    assert_eq!(snapshot(&d), before);
}

#[test]
fn stale_temporaries_of_dead_processes_are_removed_and_nothing_else() {
    let d = scratch().join("stale");
    std::fs::create_dir_all(&d).unwrap();
    // PID 4194305 is above Linux's largest pid_max (2^22): never a live process.
    std::fs::write(d.join(".sim.h5ad.tmp-4194305-0"), "half a file").unwrap();
    std::fs::create_dir(d.join(".sim.h5ad.tmp-4194305")).unwrap();
    std::fs::write(d.join(".sim.h5ad.tmp-4194305/x"), "x").unwrap();
    std::fs::write(d.join(".sim.h5ad.tmp-4194305.keep"), "user file").unwrap();
    std::fs::write(d.join(".other.tmp-4194305"), "another name").unwrap();
    let o = celldiff_in(
        &d,
        &[
            "simulate", "--cells", "50", "--genes", "20", "-o", "sim.h5ad",
        ],
    );
    assert_ok(&o);
    let mut names: Vec<String> = std::fs::read_dir(&d)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            ".other.tmp-4194305",
            ".sim.h5ad.tmp-4194305.keep",
            "sim.h5ad"
        ]
    );
}

#[cfg(unix)]
#[test]
fn fifo_and_symlink_outputs_are_never_replaced() {
    use std::os::unix::fs::FileTypeExt;
    let d = scratch().join("special");
    std::fs::create_dir_all(&d).unwrap();
    let fifo = d.join("pipe.h5ad");
    assert!(
        Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success()
    );
    std::fs::write(d.join("target.h5ad"), "the user's file").unwrap();
    std::os::unix::fs::symlink("target.h5ad", d.join("link.h5ad")).unwrap();
    for (out, why) in [("pipe.h5ad", "FIFO"), ("link.h5ad", "symbolic link")] {
        for force in [false, true] {
            let mut args = vec!["simulate", "--cells", "20", "--genes", "10", "-o", out];
            if force {
                args.push("--force");
            }
            assert_bad_input(&celldiff_in(&d, &args), &[out, why]);
        }
    }
    assert!(
        std::fs::symlink_metadata(&fifo)
            .unwrap()
            .file_type()
            .is_fifo()
    );
    assert!(
        std::fs::symlink_metadata(d.join("link.h5ad"))
            .unwrap()
            .file_type()
            .is_symlink()
    );
    assert_eq!(
        std::fs::read(d.join("target.h5ad")).unwrap(),
        b"the user's file"
    );
    assert_eq!(std::fs::read_dir(&d).unwrap().count(), 3, "leftovers");
}

#[test]
fn broken_pipe_on_stdout_exits_quietly() {
    let d = scratch().join("pipe");
    std::fs::create_dir_all(&d).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_celldiff"))
        .current_dir(&d)
        .args([
            "--quiet", "simulate", "--cells", "50", "--genes", "20", "-o", "s.h5ad",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The reader goes away before anything is printed (`| head -c0`).
    drop(child.stdout.take());
    let o = child.wait_with_output().unwrap();
    let e = stderr(&o);
    assert!(!e.contains("panicked"), "{e}");
    assert_eq!(o.status.code(), Some(0), "{e}");
    assert!(d.join("s.h5ad").is_file(), "the output was written first");
}

#[cfg(target_os = "linux")]
#[test]
fn a_thread_pool_that_cannot_start_is_an_error() {
    // 1000 workers × 16 MiB stacks do not fit in 2 GiB of address space.
    let o = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "ulimit -v 2000000 && exec '{}' --quiet --threads 1000 simulate --cells 10 \
             --genes 10 -o '{}'",
            env!("CARGO_BIN_EXE_celldiff"),
            scratch().join("t.h5ad").display()
        ))
        .output()
        .unwrap();
    assert_bad_input(&o, &["1000 worker threads", "--threads"]);
}

/// A pipe (`<(cat file)`) as input is named as not seekable, by the in-memory reader
/// (`preprocess`) and by `train --stream`'s own HDF5 reader.
#[cfg(target_os = "linux")]
#[test]
fn a_pipe_as_input_is_named_as_not_seekable() {
    for (i, cmd) in [
        "preprocess --data <(cat '{}') -o out.h5ad",
        "train --stream --data <(cat '{}') --out run",
    ]
    .iter()
    .enumerate()
    {
        let d = scratch().join(format!("fifo-input-{i}"));
        std::fs::create_dir_all(&d).unwrap();
        let cmd = cmd.replace("{}", &demo_h5ad().display().to_string());
        let o = Command::new("bash")
            .current_dir(&d)
            .arg("-c")
            .arg(format!(
                "exec '{}' --quiet {cmd}",
                env!("CARGO_BIN_EXE_celldiff")
            ))
            .output()
            .unwrap();
        assert_bad_input(&o, &["not a regular, seekable file"]);
        assert_eq!(std::fs::read_dir(&d).unwrap().count(), 0, "{cmd}");
    }
}
