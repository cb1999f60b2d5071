use super::*;
use crate::diffvae::LatentModelKind;
use crate::io::{ReadOptions, read};
use crate::train::Silent;

fn matrix(rows: &[&[f32]]) -> DenseMatrix {
    let d = rows[0].len();
    DenseMatrix::from_vec(
        rows.len(),
        d,
        rows.iter().flat_map(|r| r.to_vec()).collect(),
    )
    .unwrap()
}

#[test]
fn cluster_dimensions_counts_cells_beyond_one_sd() {
    // Dimension 0: cells 0 and 1 (cluster 0) are extreme; dimension 1: cells 2 (cluster 1)
    // and 5 (noise); dimension 2 is constant (σ = 0: no extreme cells).
    let z = matrix(&[
        &[5.0, 0.0, 1.0],
        &[-5.0, 0.0, 1.0],
        &[0.0, 5.0, 1.0],
        &[0.0, 0.0, 1.0],
        &[0.0, 0.0, 1.0],
        &[0.0, -5.0, 1.0],
    ]);
    let labels = [Some(0), Some(0), Some(1), Some(1), Some(0), None];
    let d = cluster_dimensions(&z, &labels, 2, 2).unwrap();
    assert_eq!(d.len(), 2);
    assert_eq!((d[0].cluster, d[0].size), (0, 3));
    assert_eq!(
        d[0].top[0],
        DimensionShare {
            dimension: 0,
            share: 1.0,
            n_in_cluster: 2,
            n_extreme: 2
        }
    );
    // Ties (share 0 on dimensions 1 and 2) go to the lower dimension.
    assert_eq!(d[0].top[1].dimension, 1);
    assert_eq!(d[1].top[0].dimension, 1);
    assert_eq!(d[1].top[0].share, 0.5);
    assert_eq!(d[1].top[0].n_extreme, 2);
    assert!(matches!(
        cluster_dimensions(&z, &labels[..3], 2, 2),
        Err(Error::InvalidInput(_))
    ));
    assert!(matches!(
        cluster_dimensions(&z, &labels, 1, 2),
        Err(Error::InvalidInput(_))
    ));
}

#[test]
fn high_weight_genes_rank_by_absolute_weight_and_find_shared_genes() {
    let omega = matrix(&[&[0.1, -3.0, 2.0, 0.0], &[2.5, 0.2, -2.0, 0.1]]);
    let genes: Vec<String> = ["A", "B", "C", "D"].iter().map(|s| s.to_string()).collect();
    let t = top_genes(&omega, &genes, 0, 2).unwrap();
    assert_eq!(
        t,
        vec![
            GeneWeight {
                gene: "B".into(),
                weight: -3.0
            },
            GeneWeight {
                gene: "C".into(),
                weight: 2.0
            }
        ]
    );
    let dims = vec![ClusterDimensions {
        cluster: 0,
        size: 3,
        top: [0, 1]
            .iter()
            .map(|&k| DimensionShare {
                dimension: k,
                share: 0.5,
                n_in_cluster: 1,
                n_extreme: 2,
            })
            .collect(),
    }];
    let g = cluster_genes(&omega, &genes, &dims, 2).unwrap();
    assert_eq!(g[0].dimensions[1].genes[0].gene, "A");
    assert_eq!(
        g[0].shared,
        vec![SharedGene {
            gene: "C".into(),
            n_dimensions: 2
        }]
    );
    assert!(matches!(
        top_genes(&omega, &genes, 2, 1),
        Err(Error::InvalidInput(_))
    ));
    assert!(matches!(
        top_genes(&omega, &genes[..3], 0, 1),
        Err(Error::InvalidInput(_))
    ));
}

#[test]
fn ari_scores_noise_as_a_cluster_and_skips_missing_references() {
    let pred = [Some(0), Some(0), Some(1), Some(1), None, None];
    let truth = [Some(0), Some(0), Some(1), Some(1), Some(2), Some(2)];
    assert_eq!(ari_against(&pred, &truth).unwrap(), (1.0, 6));
    let truth = [Some(0), Some(0), Some(1), Some(1), None, None];
    assert_eq!(ari_against(&pred, &truth).unwrap(), (1.0, 4));
    assert!(matches!(
        ari_against(&pred, &truth[..2]),
        Err(Error::InvalidInput(_))
    ));
    assert_eq!(
        "auto".parse::<DbscanEps>().unwrap(),
        DbscanEps::Auto {
            quantile: DEFAULT_EPS_QUANTILE
        }
    );
    assert_eq!("0.5".parse::<DbscanEps>().unwrap(), DbscanEps::Fixed(0.5));
    assert!("-1".parse::<DbscanEps>().is_err());
}

#[test]
fn identify_with_pca_on_pbmc68k_and_bad_options() {
    let p = std::path::Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../../shared/data/pbmc68k_reduced/pbmc68k_reduced_counts.h5ad"
    ));
    assert!(p.exists(), "shared dataset missing: {}", p.display());
    let adata = read(p, &ReadOptions::default()).unwrap();
    let device = crate::Device::default();
    let opts = IdentifyOptions {
        latent: LatentModelConfig {
            kind: LatentModelKind::Pca,
            n_latent: 20,
            ..LatentModelConfig::default()
        },
        tsne: TsneOptions {
            epochs: 300,
            ..TsneOptions::default()
        },
        labels_key: Some("bulk_labels".into()),
        ..IdentifyOptions::default()
    };
    let r = identify(&adata, &opts, &device, &mut Silent).unwrap();
    assert_eq!(r.n_clusters(), 10, "k = number of bulk_labels");
    assert_eq!(r.k, Some(10));
    assert_eq!(r.sizes.iter().sum::<usize>(), 700);
    assert!(r.sizes.windows(2).all(|w| w[0] >= w[1]));
    assert_eq!((r.tsne.n_rows, r.tsne.n_cols), (700, 2));
    assert_eq!((r.omega.n_rows, r.omega.n_cols), (20, 765));
    assert_eq!(r.dimensions.len(), 10);
    assert!(r.dimensions.iter().all(|d| d.top.len() == 10));
    assert!(
        r.weight_genes
            .iter()
            .all(|g| g.dimensions.iter().all(|d| d.genes.len() == 20))
    );
    let ari = r.ari.unwrap();
    eprintln!("PCA-20 k-means ARI vs bulk_labels: {ari:.3}");
    assert!(ari > 0.3, "{ari}");
    let uns = r.uns(&opts);
    assert_eq!(uns["n_clusters"], 10);
    assert_eq!(uns["params"]["latent_model"], "pca");
    assert_eq!(
        uns["clusters"]["0"]["dimensions"].as_array().unwrap().len(),
        10
    );
    let tsv = r.genes_tsv();
    assert_eq!(tsv.lines().count(), 1 + 10 * 10 * 20);
    assert_eq!(r.dimensions_tsv().lines().count(), 1 + 10 * 10);
    // Bad options fail before any training.
    let bad = |o: IdentifyOptions| identify(&adata, &o, &device, &mut Silent).unwrap_err();
    let e = bad(IdentifyOptions {
        clustering: Clustering::KMeans {
            k: Some(701),
            n_init: 1,
        },
        ..opts.clone()
    });
    assert!(matches!(e, Error::Param(_)), "{e}");
    let e = bad(IdentifyOptions {
        labels_key: None,
        ..opts.clone()
    });
    assert!(matches!(e, Error::Param(_)), "{e}");
    let e = bad(IdentifyOptions {
        labels_key: Some("no_such_column".into()),
        ..opts.clone()
    });
    assert!(e.to_string().contains("no_such_column"), "{e}");
}
