//! The scVAEDer model subcommands: `train` (in memory or `--stream`; `--model scld` is handed to
//! `scld`), `generate` (either method's run), `embed`.

use super::*;

pub(super) fn train(a: TrainArgs, dev: DeviceChoice, quiet: bool, threads: usize) -> Result<()> {
    if a.model.model == ModelKind::Scld {
        if a.stream || a.shuffle_block.is_some() || a.shuffle_buffer.is_some() {
            bail!(
                "--stream / --shuffle-block / --shuffle-buffer: only --model scvaeder streams \
                 (SCLD's cluster conditions need the whole matrix)"
            );
        }
        return scld::train(a, dev, quiet, threads);
    }
    if a.scld.condition_key.is_some() || a.scld.leiden_resolution.is_some() {
        bail!("--condition-key / --leiden-resolution need --model scld");
    }
    check_run_out(&a.out, a.force, &[&a.data.data])?;
    let mut spec = a.model.spec(a.labels_key.clone(), a.seed)?;
    let stream = a.stream_spec()?;
    if let Some(st) = stream {
        spec.vae_train.shuffle = celldiff::train::Shuffle::Blocks {
            block_cells: st.block_cells,
            buffer_blocks: st.buffer_blocks,
        };
    }
    let device = device(dev)?;
    let mut bars = Bars::new(quiet);
    let source = DataSource {
        path: a.data.data.display().to_string(),
        layer: a.data.layer.clone(),
        use_raw: a.data.use_raw,
        exclude: a.exclude.clone(),
    };
    let start = Instant::now();
    let run = match (a.stream, stream) {
        (true, Some(st)) => train_streamed(&a, &spec, st, &source, &device, &mut bars, threads)?,
        _ => {
            let adata = a.read_training_data(&bars, threads)?;
            scvaeder::fit(&adata, &spec, &source, &device, &mut bars)?
        }
    };
    // The preprocessing messages were printed when preprocessing ran (`Observer::message`).
    bars.finish_step();
    bars.println(format!(
        "noise schedule: {:?} β {}…{}, T = {}, ᾱ_T = {:.4}{}",
        spec.schedule.beta_schedule,
        spec.schedule.beta_start,
        spec.schedule.beta_end,
        spec.schedule.num_train_timesteps,
        run.config.alphas_cumprod_terminal,
        if run.config.alphas_cumprod_terminal > 0.01 {
            " (x_T is not N(0, I); see --zero-terminal-snr)"
        } else {
            ""
        }
    ));
    match (&run.observation, &run.library) {
        (_, Some(l)) => bars.println(format!(
            "likelihood {}: library-size model with {} clusters (median library {:.0} counts \
             over the model genes); generated cells are NB counts",
            run.vae.likelihood().name(),
            l.clusters.len(),
            l.median_library
        )),
        (Some(o), None) => bars.println(format!(
            "count observation model: {} training size factors, NB dispersion φ = {} \
             (zero fraction {:.3} real vs {:.3} re-sampled)",
            o.size_factors.len(),
            o.dispersion,
            o.zero_fraction_real,
            o.zero_fraction_model
        )),
        (None, None) => bars.println(
            "no count observation model (the data are not log1p-normalised counts): generated \
             cells are decoder means",
        ),
    }
    run.save(&a.out, a.force).map_err(appeared_meanwhile)?;
    bars.println(format!(
        "trained on {} cells × {} genes in {:.1}s; wrote {}",
        run.config.n_cells,
        run.genes.len(),
        start.elapsed().as_secs_f64(),
        a.out.display()
    ));
    Ok(())
}

/// `train --stream`: opens the file for block reads, applies `--exclude` on `obs`, and trains
/// without loading X.
fn train_streamed(
    a: &TrainArgs,
    spec: &TrainSpec,
    stream: scvaeder::StreamSpec,
    source: &DataSource,
    device: &celldiff::Device,
    bars: &mut Bars,
    threads: usize,
) -> Result<Run> {
    let path = &a.data.data;
    if path.is_dir() {
        bail!(
            "--stream reads an .h5ad file block by block; {} is a directory (10x matrix.mtx is \
             read whole: drop --stream, or convert it to .h5ad with `celldiff preprocess`)",
            path.display()
        );
    }
    let opts = ReadOptions {
        layer: a.data.layer.clone(),
        use_raw: a.data.use_raw,
    };
    let reader = celldiff::io::H5adStream::open(path, &opts)?;
    let meta = reader.metadata();
    bars.println(format!(
        "streaming {} cells × {} genes from {} ({}, blocks of {} cells, {} blocks per shuffle \
         buffer; {} threads, {} backend)",
        meta.n_obs(),
        meta.n_vars(),
        path.display(),
        reader.field(),
        stream.block_cells,
        stream.buffer_blocks,
        threads,
        backend::cpu_backend_name()
    ));
    if let Some(k) = &a.labels_key {
        meta.obs_column(k)?;
    }
    let cells: Vec<usize> = match &a.exclude {
        Some(expr) => {
            let m = matches_all(meta, expr, "--exclude")?;
            let keep: Vec<usize> = (0..meta.n_obs()).filter(|&i| !m[i]).collect();
            if keep.is_empty() {
                bail!("--exclude `{expr}` removes every cell");
            }
            bars.println(format!(
                "--exclude {expr}: {} of {} cells kept",
                keep.len(),
                meta.n_obs()
            ));
            keep
        }
        None => (0..meta.n_obs()).collect(),
    };
    Ok(scvaeder::fit_stream(
        reader, cells, spec, stream, source, device, bars,
    )?)
}

/// Loads a run, with the file named in the error.
pub fn load_run(path: &Path, device: &celldiff::Device) -> Result<Run> {
    Run::load(path, device).with_context(|| format!("loading run {}", path.display()))
}

pub(super) fn generate(a: GenerateArgs, dev: DeviceChoice, quiet: bool) -> Result<()> {
    if scld::is_scld_run(&a.run) {
        return scld::generate(a, dev, quiet);
    }
    if a.scld.any() {
        bail!(
            "--condition, --condition-mix, --guidance and --post-guidance need an SCLD run \
             (`celldiff train --model scld`); {} is not one",
            a.run.display()
        );
    }
    check_out(&a.out, a.force, &[&a.run])?;
    let opts = a.options()?;
    let device = device(dev)?;
    let run = load_run(&a.run, &device)?;
    if run.library.is_none() && opts.output == CountsOutput::Log1p {
        bail!(
            "--output log1p: {} has a Gaussian decoder, whose X is already the model's space; \
             --output only applies to runs trained with --likelihood nb/zinb",
            a.run.display()
        );
    }
    let bars = Bars::new(quiet);
    let start = Instant::now();
    let pb = bars.bar(1, "sampling");
    let out = scvaeder::generate(&run, &opts, &device, &mut |i, n| {
        pb.set_length(n as u64);
        pb.set_position(i as u64);
    })?;
    pb.finish_and_clear();
    write_h5ad_out(&a.out, a.force, &out)?;
    bars.println(format!(
        "generated {} cells × {} genes in {:.1}s; wrote {}",
        out.n_obs(),
        out.n_vars(),
        start.elapsed().as_secs_f64(),
        a.out.display()
    ));
    Ok(())
}

pub(super) fn embed(a: EmbedArgs, dev: DeviceChoice, quiet: bool) -> Result<()> {
    if a.key_added.is_empty() || a.key_added.contains('/') || a.key_added == "." {
        return Err(celldiff::Error::Param(format!(
            "--key-added `{}` must be a non-empty name without `/`",
            a.key_added
        ))
        .into());
    }
    check_out(&a.out, a.force, &[&a.run, &a.data.data])?;
    let device = device(dev)?;
    let run = load_run(&a.run, &device)?;
    let adata = a.data.read()?;
    let z = scvaeder::embed(&run, &adata, &device).with_context(|| {
        format!(
            "embedding {} with run {}",
            a.data.data.display(),
            a.run.display()
        )
    })?;
    let n_obs = adata.n_obs();
    drop(adata);
    // An annotated copy of the input: only obsm[key] changes.
    let mut ann = io::h5ad::Annotations::default();
    ann.set_obsm(&a.key_added, z);
    write_annotated_out(&a.out, a.force, &a.data.data, &ann)?;
    if !quiet {
        eprintln!(
            "wrote obsm['{}'] for {n_obs} cells to {}",
            a.key_added,
            a.out.display()
        );
    }
    Ok(())
}
