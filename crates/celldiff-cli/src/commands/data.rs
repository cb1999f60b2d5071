//! `celldiff preprocess`: scanpy's normalize_total → log1p → HVG (→ scale) written as `.h5ad`.

use super::*;

pub(super) fn preprocess(a: PreprocessArgs, quiet: bool) -> Result<()> {
    check_out(&a.out, a.force, &[&a.data.data])?;
    let cfg = a.pp.config(None, a.subset)?;
    let adata = a.data.read()?;
    let (out, fitted) = celldiff::pp::fit_transform(&adata, &cfg)?;
    if !quiet {
        for m in &fitted.messages {
            eprintln!("preprocess: {m}");
        }
    }
    let mut out = out;
    out.uns
        .insert("celldiff_preprocess".into(), serde_json::to_value(&fitted)?);
    write_h5ad_out(&a.out, a.force, &out)?;
    if !quiet {
        eprintln!(
            "wrote {} cells × {} genes to {}",
            out.n_obs(),
            out.n_vars(),
            a.out.display()
        );
    }
    Ok(())
}
