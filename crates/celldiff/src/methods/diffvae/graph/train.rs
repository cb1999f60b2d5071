//! Training the Graph-DiffVAE ([`GraphVae`]) through the one training loop: full-batch
//! steps, the weighted dense or sampled reconstruction plus KL/N, validation link scores.

use super::*;

/// Training parameters of [`train_graph_vae`].
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct GraphTrainConfig {
    /// Full-batch epochs (Adam steps); paper: 200.
    pub epochs: usize,
    /// Adam learning rate; paper: 1e-4.
    pub learning_rate: f64,
    /// Up to this many cells the reconstruction loss is computed densely over all `N²` pairs;
    /// above, over the positive pairs and sampled non-edges.
    pub dense_max_nodes: usize,
    /// Sampled path: non-edges sampled per epoch, as a multiple (≥ 1) of the number of
    /// positive pairs.
    pub negative_ratio: usize,
    /// Validation AUC/AP every this many epochs (and at the last one).
    pub eval_every: usize,
    /// Seed of the initialisation, ε and the non-edge samples.
    pub seed: u64,
}

impl Default for GraphTrainConfig {
    fn default() -> Self {
        Self {
            epochs: 200,
            learning_rate: 1e-4,
            dense_max_nodes: 5000,
            negative_ratio: 1,
            eval_every: 10,
            seed: 0,
        }
    }
}

/// One epoch of [`train_graph_vae`].
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct GraphEpoch {
    /// 1-based epoch.
    pub epoch: usize,
    /// Total loss (reconstruction + KL/N).
    pub loss: f64,
    /// The weighted binary cross-entropy term (nats per pair, times `norm`).
    pub recon: f64,
    /// The KL term (nats per node, divided by N).
    pub kl: f64,
    /// Validation scores (every `eval_every` epochs and the last one).
    pub val: Option<LinkScores>,
    /// Wall time of the epoch in seconds.
    pub seconds: f64,
}

/// The trained model of [`train_graph_vae`].
#[derive(Debug)]
pub struct TrainedGraphVae {
    /// The model after the last epoch (evaluation mode, on the plain device).
    pub model: GraphVae,
    /// Per-epoch losses and validation scores.
    pub records: Vec<GraphEpoch>,
    /// Whether the dense `N²` loss was used (otherwise the sampled one).
    pub dense_loss: bool,
    /// GAE's positive weight `(N² − Σ A) / Σ A` of the training graph.
    pub pos_weight: f64,
    /// GAE's norm `N² / (2 (N² − Σ A))`.
    pub norm: f64,
    /// Sampled path: non-edges sampled per epoch (0 for the dense loss).
    pub negatives_per_epoch: usize,
}

/// Ordered pairs as `[len]` index tensors.
pub(super) fn index_tensors(
    pairs: &[(usize, usize)],
    device: &Device,
) -> (Tensor<1, Int>, Tensor<1, Int>) {
    let len = pairs.len();
    let a: Vec<i64> = pairs.iter().map(|p| p.0 as i64).collect();
    let b: Vec<i64> = pairs.iter().map(|p| p.1 as i64).collect();
    (
        Tensor::from_data(TensorData::new(a, [len]), device),
        Tensor::from_data(TensorData::new(b, [len]), device),
    )
}

/// `m` ordered pairs `(i, j)` drawn uniformly (with replacement) from the `N²` ordered pairs
/// that are not in `positives` (keys `i · N + j`).
pub(super) fn sample_non_edges(
    n: usize,
    positives: &HashSet<u64>,
    m: usize,
    rng: &mut StdRng,
) -> Vec<(usize, usize)> {
    let mut out = Vec::with_capacity(m);
    while out.len() < m {
        let i = rng.random_range(0..n);
        let j = rng.random_range(0..n);
        if !positives.contains(&((i as u64) * n as u64 + j as u64)) {
            out.push((i, j));
        }
    }
    out
}

/// Trains a [`GraphVae`] with full-batch Adam on the node features `x` (`[N, n_features]`)
/// and the training graph of `split`, recording the validation [`LinkScores`] of
/// `split.val`/`split.val_neg` every `eval_every` epochs (see the module documentation for the
/// loss and its dense and sampled forms).
///
/// # Errors
/// - [`Error::Param`]: `epochs`, `learning_rate`, `negative_ratio` or `eval_every` not
///   positive; `model.n_features` differs from `x`'s width.
/// - [`Error::InvalidInput`]: `x`'s rows differ from the graph's nodes, or the training graph
///   has no edge; the loss became non-finite (lower the learning rate).
/// - [`Error::Internal`]: the backend failed to return data.
pub fn train_graph_vae(
    x: &DenseMatrix,
    split: &EdgeSplit,
    model: &GraphVaeConfig,
    cfg: &GraphTrainConfig,
    device: &Device,
    observer: &mut dyn Observer,
) -> Result<TrainedGraphVae> {
    let n = split.train.n_nodes;
    if cfg.epochs == 0 || cfg.negative_ratio == 0 || cfg.eval_every == 0 {
        return Err(Error::Param(
            "graph: epochs, negative_ratio and eval_every must be at least 1".into(),
        ));
    }
    if !(cfg.learning_rate.is_finite() && cfg.learning_rate > 0.0) {
        return Err(Error::Param(format!(
            "graph: the learning rate must be a positive number, got {}",
            cfg.learning_rate
        )));
    }
    if x.n_rows != n {
        return Err(Error::InvalidInput(format!(
            "graph: {} feature rows for a {n}-node graph",
            x.n_rows
        )));
    }
    if x.n_cols != model.n_features {
        return Err(Error::Param(format!(
            "graph: the features have {} columns, the model expects {}",
            x.n_cols, model.n_features
        )));
    }
    if model.hidden == 0 || model.n_latent == 0 {
        return Err(Error::Param(
            "graph: hidden and n_latent must be at least 1".into(),
        ));
    }
    let e_train = split.train.n_edges();
    if e_train == 0 {
        return Err(Error::InvalidInput(
            "graph: the training graph has no edges".into(),
        ));
    }
    let ad = device.clone().autodiff();
    let mut rng = StdRng::seed_from_u64(cfg.seed ^ 0x6a09_e667_f3bc_c908);
    let adj = normalized_adjacency(&split.train);
    let prop_ad = adj.propagation(&ad)?;
    let prop = adj.propagation(device)?;
    let x_ad = to_tensor(x, &ad);
    let x_dev = to_tensor(x, device);

    // GAE: Σ A over the training adjacency (both directions, no self-loops); labels A + I.
    let nn = n as f64 * n as f64;
    let sum_a = 2.0 * e_train as f64;
    let pos_weight = (nn - sum_a) / sum_a;
    let norm = nn / (2.0 * (nn - sum_a));
    let dense_loss = n <= cfg.dense_max_nodes;
    let mut positives: Vec<(usize, usize)> = Vec::with_capacity(n + 2 * e_train);
    positives.extend((0..n).map(|i| (i, i)));
    for &(a, b) in &split.train.edges {
        positives.push((a, b));
        positives.push((b, a));
    }
    let labels = dense_loss.then(|| {
        let mut lab = vec![0.0f32; n * n];
        for &(a, b) in &positives {
            lab[a * n + b] = 1.0;
        }
        Tensor::<2>::from_data(TensorData::new(lab, [n, n]), &ad)
    });
    let pos_keys: HashSet<u64> = if dense_loss {
        HashSet::new()
    } else {
        positives
            .iter()
            .map(|&(a, b)| a as u64 * n as u64 + b as u64)
            .collect()
    };
    if !dense_loss && 2 * positives.len() as u128 > (n as u128) * (n as u128) {
        return Err(Error::InvalidInput(format!(
            "graph: {} of the {n}² node pairs are edges; the sampled loss needs a sparse graph \
             (use a smaller k)",
            positives.len()
        )));
    }
    let (pos_i, pos_j) = index_tensors(&positives, &ad);
    let n_neg = if dense_loss {
        0
    } else {
        cfg.negative_ratio * positives.len()
    };
    let neg_scale = (nn - positives.len() as f64) / n_neg.max(1) as f64;

    let net = model.init_seeded(&ad, cfg.seed);
    let mut step = GraphStep {
        prop_ad,
        x_ad,
        labels,
        pos_keys,
        pos_i,
        pos_j,
        n_nodes: n,
        n_latent: model.n_latent,
        n_neg,
        pos_weight,
        norm,
        neg_scale,
        ad,
        val: GraphValidation {
            prop,
            x: x_dev,
            split,
            eval_every: cfg.eval_every,
            epochs: cfg.epochs,
            scores: Vec::new(),
        },
    };
    let opts = FitOptions {
        label: "Graph-DiffVAE".into(),
        ..FitOptions::new("graph_vae", cfg.epochs, cfg.learning_rate)
    };
    let fitted = train_fit::fit(&mut step, net, &opts, &mut rng, observer)?;
    let records = fitted
        .records
        .iter()
        .zip(step.val.scores)
        .map(|(r, val)| GraphEpoch {
            epoch: r.epoch,
            loss: r.train_loss,
            recon: r.recon.unwrap_or(f64::NAN),
            kl: r.kl.unwrap_or(f64::NAN),
            val,
            seconds: r.seconds,
        })
        .collect();
    let net = fitted.last;
    Ok(TrainedGraphVae {
        model: net.valid(),
        records,
        dense_loss,
        pos_weight,
        norm,
        negatives_per_epoch: n_neg,
    })
}

/// What the Graph-DiffVAE's validation needs: the graph and features on the plain device,
/// the held-out edges, and the [`LinkScores`] of each epoch (every `eval_every` and the last).
struct GraphValidation<'a> {
    prop: Propagation,
    x: Tensor<2>,
    split: &'a EdgeSplit,
    eval_every: usize,
    epochs: usize,
    scores: Vec<Option<LinkScores>>,
}

/// The Graph-DiffVAE as a [`TrainStep`]: one full-batch step per epoch, z = μ + σ ⊙ ε with
/// fresh ε, the weighted reconstruction (dense, or over positives and freshly sampled
/// non-edges) plus KL/N (Kipf & Welling 2016, Eq. 4; Bica et al. 2020, Methods).
struct GraphStep<'a> {
    prop_ad: Propagation,
    x_ad: Tensor<2>,
    labels: Option<Tensor<2>>,
    pos_keys: HashSet<u64>,
    pos_i: Tensor<1, Int>,
    pos_j: Tensor<1, Int>,
    n_nodes: usize,
    n_latent: usize,
    n_neg: usize,
    pos_weight: f64,
    norm: f64,
    neg_scale: f64,
    ad: Device,
    val: GraphValidation<'a>,
}

impl TrainStep<GraphVae> for GraphStep<'_> {
    fn batches(&mut self, _epoch: usize, _rng: &mut StdRng) -> Result<Vec<Vec<usize>>> {
        Ok(vec![Vec::new()])
    }

    fn loss(
        &mut self,
        net: &GraphVae,
        _batch: &[usize],
        _epoch: usize,
        rng: &mut StdRng,
    ) -> Result<StepLoss> {
        let eps = to_tensor(&normal_matrix(rng, self.n_nodes, self.n_latent), &self.ad);
        let out = net.forward(&self.prop_ad, self.x_ad.clone(), Some(eps));
        let recon = match &self.labels {
            Some(l) => weighted_bce_dense(out.z_star, l.clone(), self.pos_weight, self.norm),
            None => {
                let neg = sample_non_edges(self.n_nodes, &self.pos_keys, self.n_neg, rng);
                let (neg_i, neg_j) = index_tensors(&neg, &self.ad);
                weighted_bce_pairs(
                    out.z_star,
                    self.pos_i.clone(),
                    self.pos_j.clone(),
                    neg_i,
                    neg_j,
                    self.pos_weight,
                    self.neg_scale,
                    self.norm,
                )
            }
        };
        let kl = kl_per_node(out.mu, out.logvar);
        Ok(StepLoss {
            loss: recon.clone().add(kl.clone()),
            recon: Some(recon),
            regularizer: Some((Regularizer::Kl, kl, 1.0)),
        })
    }

    fn validate(&mut self, net: &GraphVae, epoch: usize) -> Result<Option<f64>> {
        let v = &mut self.val;
        let due = epoch.is_multiple_of(v.eval_every) || epoch == v.epochs;
        let scores = if due && !v.split.val.is_empty() {
            let z = to_host(net.valid().forward(&v.prop, v.x.clone(), None).z_star)?;
            Some(link_scores(&z, &v.split.val, &v.split.val_neg))
        } else {
            None
        };
        v.scores.push(scores);
        Ok(None)
    }
}
