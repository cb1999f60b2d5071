//! What `celldiff graph` (and Python's `celldiff.GraphDiffVAE`) report for a [`GraphFit`]:
//! the `uns['celldiff_graph']` summary, the annotations written into the input
//! (`obsm['X_graph']`, `obsm['X_graph_mu']`, `obsp['celldiff_links']`,
//! `obsp['celldiff_graph_input']`) and the table of predicted links.

use std::fmt::Write as _;

use super::*;
use crate::io::h5ad::Annotations;

impl GraphFit {
    /// The `uns['celldiff_graph']` summary: parameters (`n_top_genes` as given, 0 = all
    /// genes), graph and split sizes, per-epoch `loss`/`recon`/`kl`, test and validation AUC
    /// and AP (those that are finite), link counts and the preprocessing messages.
    pub fn summary(&self, spec: &GraphSpec, n_top_genes: usize) -> serde_json::Value {
        let records = &self.trained.records;
        let finite = |v: f64| v.is_finite().then_some(v);
        let mut params = serde_json::json!({
            "k": spec.k,
            "epochs": spec.train.epochs,
            "lr": spec.train.learning_rate,
            "n_top_genes": n_top_genes,
            "hidden": spec.hidden,
            "latent": spec.n_latent,
            "seed": spec.seed,
            "link_mode": match spec.links {
                LinkMode::TopK(_) => "top_k",
                LinkMode::Threshold(_) => "threshold",
            },
            "test_fraction": spec.test_fraction,
            "val_fraction": spec.val_fraction,
            "dense_max_nodes": spec.train.dense_max_nodes,
            "negative_ratio": spec.train.negative_ratio,
        });
        match spec.links {
            LinkMode::TopK(k) => params["top_k_links"] = k.into(),
            LinkMode::Threshold(p) => params["threshold"] = p.into(),
        }
        let mut summary = serde_json::json!({
            "model": "graph_diffvae",
            "params": params,
            "n_cells": self.mu.n_rows,
            "n_features": self.preprocess.genes.len(),
            "n_edges": self.graph.n_edges(),
            "n_train_edges": self.split.train.n_edges(),
            "n_val_edges": self.split.val.len(),
            "n_test_edges": self.split.test.len(),
            "n_constant_cells": self.n_constant_cells,
            "dense_loss": self.trained.dense_loss,
            "negatives_per_epoch": self.trained.negatives_per_epoch,
            "pos_weight": self.trained.pos_weight,
            "norm": self.trained.norm,
            "loss": records.iter().map(|r| r.loss).collect::<Vec<_>>(),
            "recon": records.iter().map(|r| r.recon).collect::<Vec<_>>(),
            "kl": records.iter().map(|r| r.kl).collect::<Vec<_>>(),
            "n_links": self.links.matrix.nnz() / 2,
            "n_capped_cells": self.links.n_capped,
        });
        let obj = summary.as_object_mut().expect("an object");
        for (key, v) in [
            ("test_auc", finite(self.test.auc)),
            ("test_ap", finite(self.test.ap)),
            ("test_auc_correlation", finite(self.test_correlation.auc)),
            ("test_ap_correlation", finite(self.test_correlation.ap)),
            ("val_auc", self.val.and_then(|s| finite(s.auc))),
            ("val_ap", self.val.and_then(|s| finite(s.ap))),
        ] {
            if let Some(v) = v {
                obj.insert(key.into(), v.into());
            }
        }
        obj.insert("preprocess".into(), self.preprocess.messages.clone().into());
        summary
    }

    /// The annotations written into the input: `obsm['X_graph']` (Z* `[N, n_latent]`),
    /// `obsm['X_graph_mu']` (μ), `obsp['celldiff_links']` (predicted link probabilities,
    /// symmetric CSR `[N, N]`), `obsp['celldiff_graph_input']` (the correlation graph) and
    /// `uns['celldiff_graph']` = `summary`.
    pub fn annotations(&self, summary: serde_json::Value) -> Annotations {
        let mut ann = Annotations::default();
        ann.set_obsm("X_graph", self.z_star.clone());
        ann.set_obsm("X_graph_mu", self.mu.clone());
        ann.uns.insert("celldiff_graph".into(), summary);
        ann.set_obsp("celldiff_links", self.links.matrix.clone());
        ann.set_obsp("celldiff_graph_input", self.graph.adjacency());
        ann
    }

    /// The predicted links as TSV (`cell_i`, `cell_j`, `probability`, `in_input_graph`), each
    /// pair once (i < j), cells named by `obs_names`.
    pub fn links_tsv(&self, obs_names: &[String]) -> String {
        let mut text = String::from("cell_i\tcell_j\tprobability\tin_input_graph\n");
        for (i, row) in self.links.matrix.outer_iterator().enumerate() {
            for (j, &p) in row.iter().filter(|(j, _)| *j > i) {
                let _ = writeln!(
                    text,
                    "{}\t{}\t{p:.6}\t{}",
                    obs_names[i],
                    obs_names[j],
                    u8::from(self.graph.has_edge(i, j))
                );
            }
        }
        text
    }
}
