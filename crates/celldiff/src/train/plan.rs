//! The validation split and each epoch's order of the training cells: shuffled in memory,
//! or block-shuffled for a source streamed from disk ([`Shuffle::Blocks`], [`TrainCells`]).

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use serde::{Deserialize, Serialize};

use crate::anndata::{DenseMatrix, Matrix};
use crate::error::Result;

/// The order in which an epoch visits the training cells.
///
/// [`Shuffle::Blocks`] is the chunk-then-buffer shuffling of out-of-core loaders
/// (scvi-tools' / AnnLoader's chunked samplers, WebDataset shuffle buffers): cells are grouped
/// into blocks of `block_cells` consecutive cells (rows of the file), the blocks are visited in
/// a random order `buffer_blocks` at a time, and the cells of each such buffer are shuffled
/// together. A reader then touches each block once per epoch and holds at most one buffer.
/// When every block fits in one buffer the order is exactly [`Shuffle::Full`]'s, so data that
/// fit in memory give the same model streamed or not.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Shuffle {
    /// A fresh random permutation of all training cells each epoch.
    #[default]
    Full,
    /// Blocks of consecutive cells, visited `buffer_blocks` at a time.
    Blocks {
        /// Cells per block (consecutive rows).
        block_cells: usize,
        /// Blocks per shuffle buffer.
        buffer_blocks: usize,
    },
}

/// One epoch's visiting order of the training cells ([`Shuffle`]), with the buffers it was
/// drawn from so that a streaming reader can load them ahead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EpochPlan {
    /// Cell indices in visiting order (a permutation of the training cells).
    pub order: Vec<usize>,
    /// Consecutive runs of `order`, each drawn from the blocks it names (ascending); empty for
    /// [`Shuffle::Full`].
    pub groups: Vec<PlanGroup>,
}

/// A run of [`EpochPlan::order`] and the blocks its cells lie in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanGroup {
    /// Block indices (cell `i` is in block `i / block_cells`), ascending.
    pub blocks: Vec<usize>,
    /// Number of cells of the run.
    pub len: usize,
}

/// Draws the next epoch's order of `train` (cell indices) from `rng`. `Full`, and `Blocks`
/// when all blocks fit in one buffer, shuffle `train` in place and return it (the in-memory
/// loop's draw); otherwise the blocks are shuffled, then the cells within each buffer.
pub fn plan_epoch(train: &mut [usize], shuffle: Shuffle, rng: &mut StdRng) -> EpochPlan {
    let (block, buffer) = match shuffle {
        Shuffle::Full => {
            train.shuffle(rng);
            return EpochPlan {
                order: train.to_vec(),
                groups: Vec::new(),
            };
        }
        Shuffle::Blocks {
            block_cells,
            buffer_blocks,
        } => (block_cells.max(1), buffer_blocks.max(1)),
    };
    let mut sorted = train.to_vec();
    sorted.sort_unstable();
    // (block id, range in `sorted`) of every block holding training cells.
    let mut blocks: Vec<(usize, std::ops::Range<usize>)> = Vec::new();
    let mut lo = 0;
    while lo < sorted.len() {
        let b = sorted[lo] / block;
        let hi = lo + sorted[lo..].partition_point(|&c| c / block == b);
        blocks.push((b, lo..hi));
        lo = hi;
    }
    if blocks.len() <= buffer {
        train.shuffle(rng);
        return EpochPlan {
            order: train.to_vec(),
            groups: vec![PlanGroup {
                blocks: blocks.iter().map(|(b, _)| *b).collect(),
                len: train.len(),
            }],
        };
    }
    blocks.shuffle(rng);
    let mut order = Vec::with_capacity(sorted.len());
    let mut groups = Vec::new();
    for g in blocks.chunks(buffer) {
        let mut cells: Vec<usize> = g
            .iter()
            .flat_map(|(_, r)| sorted[r.clone()].iter().copied())
            .collect();
        cells.shuffle(rng);
        let mut ids: Vec<usize> = g.iter().map(|(b, _)| *b).collect();
        ids.sort_unstable();
        groups.push(PlanGroup {
            blocks: ids,
            len: cells.len(),
        });
        order.extend(cells);
    }
    EpochPlan { order, groups }
}

/// Where the training loops get preprocessed cells from: the in-memory matrix
/// ([`InMemoryCells`]) or an `.h5ad` file read block by block ([`crate::scvaeder::stream::StreamedCells`]).
/// Both return the same `f32` values for the same cells, so training is identical.
pub trait TrainCells {
    /// Number of cells.
    fn n_cells(&self) -> usize;
    /// Number of genes (model input width).
    fn n_genes(&self) -> usize;
    /// Rows `idx` (any order) as `[idx.len(), n_genes]`, in the preprocessed units.
    ///
    /// # Errors
    /// Reading or preprocessing the source failed.
    fn rows(&mut self, idx: &[usize]) -> Result<DenseMatrix>;
    /// An epoch with this plan starts; its minibatches are then asked for in plan order with
    /// [`TrainCells::next_batch`].
    ///
    /// # Errors
    /// Starting the reader failed.
    fn start_epoch(&mut self, _plan: &EpochPlan) -> Result<()> {
        Ok(())
    }
    /// The next `idx.len()` cells of the plan (`idx` are their indices), `[idx.len(), n_genes]`.
    ///
    /// # Errors
    /// Reading the source failed, or `idx` is not the plan's next run.
    fn next_batch(&mut self, idx: &[usize]) -> Result<DenseMatrix> {
        self.rows(idx)
    }
    /// The epoch ended (possibly before its last cells were asked for).
    ///
    /// # Errors
    /// The background reader failed.
    fn end_epoch(&mut self) -> Result<()> {
        Ok(())
    }
}

/// [`TrainCells`] over a preprocessed matrix in memory (`[n_cells, n_genes]`).
pub struct InMemoryCells<'a>(pub &'a Matrix);

impl TrainCells for InMemoryCells<'_> {
    fn n_cells(&self) -> usize {
        self.0.n_rows()
    }
    fn n_genes(&self) -> usize {
        self.0.n_cols()
    }
    fn rows(&mut self, idx: &[usize]) -> Result<DenseMatrix> {
        Ok(self.0.rows_dense(idx))
    }
}

/// Shuffles the indices `0..n` with `rng` and holds out the first `round(n · fraction)` (at
/// most `max_val`, none below 20 cells) for validation: `(train, validation)`.
pub(crate) fn split(
    n: usize,
    fraction: f64,
    max_val: usize,
    rng: &mut StdRng,
) -> (Vec<usize>, Vec<usize>) {
    let mut idx: Vec<usize> = (0..n).collect();
    idx.shuffle(rng);
    let n_val = if fraction > 0.0 && n >= 20 {
        (((n as f64) * fraction).round() as usize).min(max_val)
    } else {
        0
    };
    let val = idx[..n_val].to_vec();
    let train = idx[n_val..].to_vec();
    (train, val)
}

/// Consecutive minibatches of `batch_size` (at least 2) of `idx`.
pub(crate) fn batches(idx: &[usize], batch_size: usize) -> impl Iterator<Item = &[usize]> {
    // A final minibatch of one cell is dropped: BatchNorm needs ≥ 2 cells.
    idx.chunks(batch_size.max(2)).filter(|b| b.len() >= 2)
}

/// `train` shuffled in place with `rng`, cut into minibatches of `batch_size` (at least 1);
/// with `drop_single` a final minibatch of one cell is dropped (BatchNorm needs ≥ 2 cells).
/// The in-memory epoch order of the training loops.
pub(crate) fn shuffled_batches(
    train: &mut [usize],
    rng: &mut StdRng,
    batch_size: usize,
    drop_single: bool,
) -> Vec<Vec<usize>> {
    train.shuffle(rng);
    if drop_single {
        batches(train, batch_size).map(<[usize]>::to_vec).collect()
    } else {
        train
            .chunks(batch_size.max(1))
            .map(<[usize]>::to_vec)
            .collect()
    }
}
