//! Training cells read from an `.h5ad` file on disk, block by block (`celldiff train
//! --stream`): [`StreamedCells`] implements [`TrainCells`] without ever holding the matrix.
//!
//! The cells are the rows `cells` of the file's `X` (all rows, or those kept by `--exclude` and
//! `filter_cells`); block `k` is cells `k·block_cells .. (k+1)·block_cells`, read as one
//! contiguous window of rows ([`H5adStream`]) and preprocessed on the fly with the fitted
//! pipeline ([`FittedPreprocess::transform`], row-wise, so a block gives the same values as the
//! whole matrix). An epoch follows a [`Shuffle::Blocks`] plan: a background thread loads the
//! plan's next buffer (its blocks, re-ordered into the plan's order, kept sparse when the
//! preprocessed data are) while the model trains on the current one, so reading and
//! preprocessing stay off the critical path and memory holds at most three buffers.
//!
//! Why our own loader: anndata's backed mode, scvi-tools' `AnnDataLoader` and AnnLoader are
//! Python; no Rust crate reads AnnData row blocks.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::thread::JoinHandle;

use sprs::CsMat;

use crate::anndata::{AnnData, DenseMatrix, Matrix, RowBlocks};
use crate::error::{Error, Result};
use crate::io::H5adStream;
use crate::pp::FittedPreprocess;
use crate::train::{EpochPlan, Shuffle, TrainCells};

/// Default cells per block of `train --stream` (`--shuffle-block`).
pub const DEFAULT_BLOCK_CELLS: usize = 1024;
/// Default blocks per shuffle buffer of `train --stream` (`--shuffle-buffer`): 16,384 cells,
/// about 50 MB of sparse log1p data at 2,000 genes and 18 % density.
pub const DEFAULT_BUFFER_BLOCKS: usize = 16;

/// A block of the rows of a [`RowBlocks`] source that are cells `cells` (file rows,
/// ascending): cells `lo..hi`, read as one window and subset to those rows.
pub fn read_cells(x: &mut dyn RowBlocks, cells: &[usize], lo: usize, hi: usize) -> Result<Matrix> {
    if lo >= hi {
        return Ok(Matrix::Csr(CsMat::zero((0, x.shape().1))));
    }
    let (r0, r1) = (cells[lo], cells[hi - 1] + 1);
    let block = x.read_rows(r0, r1)?;
    if r1 - r0 == hi - lo {
        return Ok(block);
    }
    let idx: Vec<usize> = cells[lo..hi].iter().map(|&r| r - r0).collect();
    Ok(match block {
        Matrix::Dense(d) => Matrix::Dense(d.select_rows(&idx)),
        Matrix::Csr(c) => Matrix::Csr(crate::anndata::select_csr_rows(&c, &idx)),
    })
}

/// The rows `rows` (ascending) of a [`RowBlocks`] source as a source of their own: row `i` of
/// the view is row `rows[i]` of `x` (the cells `--exclude` keeps, for the streaming
/// preprocessing fit).
pub struct RowSubset<'a> {
    /// The whole source.
    pub x: &'a mut dyn RowBlocks,
    /// Its rows in the view, strictly ascending.
    pub rows: &'a [usize],
}

impl RowBlocks for RowSubset<'_> {
    fn shape(&self) -> (usize, usize) {
        (self.rows.len(), self.x.shape().1)
    }

    fn read_rows(&mut self, start: usize, end: usize) -> Result<Matrix> {
        if start > end || end > self.rows.len() {
            return Err(Error::Internal(format!(
                "read_rows({start}, {end}) out of range for {} rows",
                self.rows.len()
            )));
        }
        read_cells(&mut *self.x, self.rows, start, end)
    }
}

/// What a block is turned into before training: the fitted preprocessing, by gene name.
struct Transform {
    fitted: FittedPreprocess,
    var_names: Vec<String>,
    obs_names: Vec<String>,
}

impl Transform {
    /// Cells `lo..hi` of the source, preprocessed (`[hi - lo, n_genes]`).
    fn block(
        &self,
        x: &mut dyn RowBlocks,
        cells: &[usize],
        lo: usize,
        hi: usize,
    ) -> Result<Matrix> {
        let raw = read_cells(x, cells, lo, hi)?;
        let mut ad = AnnData::new(raw, self.var_names.clone());
        ad.obs_names = cells[lo..hi]
            .iter()
            .map(|&r| {
                self.obs_names
                    .get(r)
                    .cloned()
                    .unwrap_or_else(|| r.to_string())
            })
            .collect();
        Ok(self.fitted.transform(&ad)?.x)
    }
}

/// A loaded buffer: its cells in plan order and their preprocessed rows in that order.
struct Loaded {
    cells: Vec<usize>,
    x: Matrix,
    pos: usize,
}

/// The background reader of one epoch.
struct Loader {
    rx: Receiver<Result<Loaded>>,
    handle: JoinHandle<H5adStream>,
}

/// Cells of an `.h5ad` file streamed from disk and preprocessed on the fly (see the module
/// docs). Rows come out in the fitted pipeline's output units (`[n, n_genes]`, e.g.
/// log1p-normalised highly variable genes).
pub struct StreamedCells {
    reader: Option<H5adStream>,
    cells: Arc<Vec<usize>>,
    transform: Arc<Transform>,
    n_genes: usize,
    block_cells: usize,
    loader: Option<Loader>,
    ready: VecDeque<Loaded>,
}

impl std::fmt::Debug for StreamedCells {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamedCells")
            .field("n_cells", &self.cells.len())
            .field("n_genes", &self.n_genes)
            .field("block_cells", &self.block_cells)
            .finish()
    }
}

impl StreamedCells {
    /// The cells `cells` (rows of the file, strictly ascending) of `reader`, preprocessed with
    /// `fitted` (which must have been fit on these cells' genes), in blocks of `block_cells`.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] if `cells` is empty, not strictly ascending or out of range, or
    /// `block_cells` is 0.
    pub fn new(
        reader: H5adStream,
        cells: Vec<usize>,
        fitted: FittedPreprocess,
        block_cells: usize,
    ) -> Result<Self> {
        let n_obs = reader.metadata().n_obs();
        if cells.is_empty() {
            return Err(Error::InvalidInput(format!(
                "{}: no cells to stream",
                reader.path().display()
            )));
        }
        if cells.windows(2).any(|w| w[1] <= w[0]) || cells[cells.len() - 1] >= n_obs {
            return Err(Error::InvalidInput(
                "streamed cells must be strictly ascending rows of X".into(),
            ));
        }
        if block_cells == 0 {
            return Err(Error::InvalidInput(
                "shuffle block_cells must be > 0".into(),
            ));
        }
        let n_genes = fitted.genes.len();
        let transform = Transform {
            var_names: reader.metadata().var_names.clone(),
            obs_names: reader.metadata().obs_names.clone(),
            fitted,
        };
        Ok(Self {
            reader: Some(reader),
            cells: Arc::new(cells),
            transform: Arc::new(transform),
            n_genes,
            block_cells,
            loader: None,
            ready: VecDeque::new(),
        })
    }

    /// The [`Shuffle::Blocks`] plan that matches this reader's blocks.
    pub fn shuffle(&self, buffer_blocks: usize) -> Shuffle {
        Shuffle::Blocks {
            block_cells: self.block_cells,
            buffer_blocks,
        }
    }

    fn reader(&mut self) -> Result<&mut H5adStream> {
        self.reader
            .as_mut()
            .ok_or_else(|| Error::Internal("the streaming reader is busy with an epoch".into()))
    }

    fn finish_loader(&mut self) -> Result<()> {
        self.ready.clear();
        if let Some(l) = self.loader.take() {
            drop(l.rx);
            wait_helping_pool(|| l.handle.is_finished().then_some(()));
            let reader = l
                .handle
                .join()
                .map_err(|_| Error::Internal("the streaming reader thread panicked".into()))?;
            self.reader = Some(reader);
        }
        Ok(())
    }
}

impl Drop for StreamedCells {
    fn drop(&mut self) {
        let _ = self.finish_loader();
    }
}

/// Polls `ready` until it gives a value; between polls a rayon worker runs pending pool jobs
/// ([`rayon::yield_now`]) and otherwise sleeps 100 µs.
///
/// Commands run on a rayon worker ([`crate::backend::in_pool`]); a worker that blocked on the
/// reader thread could deadlock a one-thread pool if the reader ever started a parallel
/// operation (its jobs wait for a worker), so the training side waits by helping.
fn wait_helping_pool<T>(mut ready: impl FnMut() -> Option<T>) -> T {
    loop {
        if let Some(v) = ready() {
            return v;
        }
        if rayon::current_thread_index().is_none()
            || rayon::yield_now() != Some(rayon::Yield::Executed)
        {
            std::thread::sleep(std::time::Duration::from_micros(100));
        }
    }
}

/// The next message of `rx`, waiting as [`wait_helping_pool`] does; `Err` once the sender is
/// gone and the channel is empty.
fn recv_helping_pool<T>(rx: &Receiver<T>) -> std::result::Result<T, ()> {
    use std::sync::mpsc::TryRecvError;
    wait_helping_pool(|| match rx.try_recv() {
        Ok(v) => Some(Ok(v)),
        Err(TryRecvError::Disconnected) => Some(Err(())),
        Err(TryRecvError::Empty) => None,
    })
}

/// Reads the plan's buffers in order on a background thread and sends them, re-ordered.
fn load_epoch(
    mut reader: H5adStream,
    cells: Arc<Vec<usize>>,
    transform: Arc<Transform>,
    block_cells: usize,
    plan: EpochPlan,
    tx: SyncSender<Result<Loaded>>,
) -> H5adStream {
    let n = cells.len();
    let mut offset = 0;
    for g in &plan.groups {
        let order = &plan.order[offset..offset + g.len];
        offset += g.len;
        let loaded = (|| -> Result<Loaded> {
            let mut parts = Vec::with_capacity(g.blocks.len());
            for &b in &g.blocks {
                let lo = b * block_cells;
                let hi = ((b + 1) * block_cells).min(n);
                parts.push((lo, transform.block(&mut reader, &cells, lo, hi)?));
            }
            let x = gather(&parts, block_cells, order)?;
            Ok(Loaded {
                cells: order.to_vec(),
                x,
                pos: 0,
            })
        })();
        let failed = loaded.is_err();
        if tx.send(loaded).is_err() || failed {
            break;
        }
    }
    reader
}

/// Rows `order` (cell indices) out of blocks `parts` (`(first cell, rows)`, each block the
/// cells `first..first + rows`), stacked in that order; CSR if every block is CSR.
fn gather(parts: &[(usize, Matrix)], block_cells: usize, order: &[usize]) -> Result<Matrix> {
    let find = |c: usize| -> Result<(&Matrix, usize)> {
        let k = parts
            .binary_search_by_key(&(c / block_cells * block_cells), |(lo, _)| *lo)
            .map_err(|_| Error::Internal(format!("cell {c} is not in the loaded blocks")))?;
        Ok((&parts[k].1, c - parts[k].0))
    };
    let n_cols = parts.first().map_or(0, |(_, m)| m.n_cols());
    if parts.iter().all(|(_, m)| matches!(m, Matrix::Csr(_))) {
        let mut indptr = Vec::with_capacity(order.len() + 1);
        let (mut indices, mut data) = (Vec::new(), Vec::new());
        indptr.push(0);
        for &c in order {
            let (m, i) = find(c)?;
            let Matrix::Csr(csr) = m else { unreachable!() };
            if let Some(row) = csr.outer_view(i) {
                indices.extend_from_slice(row.indices());
                data.extend_from_slice(row.data());
            }
            indptr.push(indices.len());
        }
        return Ok(Matrix::Csr(CsMat::new(
            (order.len(), n_cols),
            indptr,
            indices,
            data,
        )));
    }
    let mut out = DenseMatrix::zeros(order.len(), n_cols);
    for (k, &c) in order.iter().enumerate() {
        let (m, i) = find(c)?;
        out.row_mut(k)
            .copy_from_slice(&m.rows_dense(&[i]).data[..n_cols]);
    }
    Ok(Matrix::Dense(out))
}

impl TrainCells for StreamedCells {
    fn n_cells(&self) -> usize {
        self.cells.len()
    }

    fn n_genes(&self) -> usize {
        self.n_genes
    }

    /// Reads every block holding one of `idx` (one window each, in file order) and returns
    /// the rows in the order of `idx`.
    fn rows(&mut self, idx: &[usize]) -> Result<DenseMatrix> {
        let bc = self.block_cells;
        let n = self.cells.len();
        if let Some(&bad) = idx.iter().find(|&&i| i >= n) {
            return Err(Error::Internal(format!(
                "cell {bad} out of range ({n} cells)"
            )));
        }
        let mut blocks: Vec<usize> = idx.iter().map(|&i| i / bc).collect();
        blocks.sort_unstable();
        blocks.dedup();
        let (cells, transform) = (Arc::clone(&self.cells), Arc::clone(&self.transform));
        let g = self.n_genes;
        let reader = self.reader()?;
        let mut out = DenseMatrix::zeros(idx.len(), g);
        // Positions in `idx` of each cell, grouped by block.
        let mut by_block: Vec<(usize, usize)> =
            idx.iter().enumerate().map(|(k, &i)| (i, k)).collect();
        by_block.sort_unstable();
        let mut p = 0;
        for b in blocks {
            let (lo, hi) = (b * bc, ((b + 1) * bc).min(n));
            let m = transform.block(reader, &cells, lo, hi)?;
            while p < by_block.len() && by_block[p].0 < hi {
                let (i, k) = by_block[p];
                out.row_mut(k)
                    .copy_from_slice(&m.rows_dense(&[i - lo]).data);
                p += 1;
            }
        }
        Ok(out)
    }

    fn start_epoch(&mut self, plan: &EpochPlan) -> Result<()> {
        self.finish_loader()?;
        if plan.groups.is_empty() && !plan.order.is_empty() {
            return Err(Error::Internal(
                "a streamed epoch needs a block plan (Shuffle::Blocks)".into(),
            ));
        }
        let reader = self
            .reader
            .take()
            .ok_or_else(|| Error::Internal("the streaming reader is missing".into()))?;
        let (tx, rx) = sync_channel(1);
        let (cells, transform, bc) = (
            Arc::clone(&self.cells),
            Arc::clone(&self.transform),
            self.block_cells,
        );
        let plan = plan.clone();
        let handle = std::thread::Builder::new()
            .name("celldiff-stream".into())
            .spawn(move || load_epoch(reader, cells, transform, bc, plan, tx))
            .map_err(|e| Error::Internal(format!("cannot start the reader thread: {e}")))?;
        self.loader = Some(Loader { rx, handle });
        Ok(())
    }

    fn next_batch(&mut self, idx: &[usize]) -> Result<DenseMatrix> {
        let g = self.n_genes;
        let mut out = DenseMatrix::zeros(idx.len(), g);
        for (k, &want) in idx.iter().enumerate() {
            while self.ready.front().is_none_or(|l| l.pos >= l.cells.len()) {
                self.ready.pop_front();
                let loader = self
                    .loader
                    .as_ref()
                    .ok_or_else(|| Error::Internal("next_batch outside an epoch".into()))?;
                let next = recv_helping_pool(&loader.rx).map_err(|_| {
                    Error::Internal("the streaming reader ended before the epoch did".into())
                })?;
                match next {
                    Ok(l) => self.ready.push_back(l),
                    Err(e) => {
                        let _ = self.finish_loader();
                        return Err(e);
                    }
                }
            }
            let l = self.ready.front_mut().expect("a loaded buffer");
            if l.cells[l.pos] != want {
                return Err(Error::Internal(format!(
                    "streamed cell {} where the plan has {want}",
                    l.cells[l.pos]
                )));
            }
            match &l.x {
                Matrix::Csr(c) => {
                    if let Some(row) = c.outer_view(l.pos) {
                        let dst = out.row_mut(k);
                        for (j, &v) in row.iter() {
                            dst[j] = v;
                        }
                    }
                }
                Matrix::Dense(d) => out.row_mut(k).copy_from_slice(d.row(l.pos)),
            }
            l.pos += 1;
        }
        Ok(out)
    }

    fn end_epoch(&mut self) -> Result<()> {
        self.finish_loader()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::ReadOptions;
    use crate::pp::{PreprocessConfig, fit_transform};
    use crate::train::{InMemoryCells, PlanGroup, plan_epoch};
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    fn assert_send<T: Send>() {}

    #[test]
    fn reader_can_move_to_the_loader_thread() {
        assert_send::<H5adStream>();
    }

    /// The only worker of a one-thread pool waits for a thread that itself needs that pool (a
    /// parallel sum through `pool.install`): the waits run the pool's jobs meanwhile, so both
    /// finish (a plain `recv` / `join` here would never return).
    #[test]
    fn waits_on_a_pool_worker_run_the_pools_jobs() {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .build()
            .unwrap();
        let (got, done) = pool.install(|| {
            std::thread::scope(|sc| {
                let (tx, rx) = sync_channel(1);
                let pool = &pool;
                let h = sc.spawn(move || {
                    use rayon::prelude::*;
                    let sum: u64 = pool.install(|| (0..10_000u64).into_par_iter().sum());
                    tx.send(sum).unwrap();
                });
                let got = recv_helping_pool(&rx);
                wait_helping_pool(|| h.is_finished().then_some(()));
                (got, h.join().is_ok())
            })
        });
        assert_eq!(got, Ok(49_995_000));
        assert!(done);
        let (tx, rx) = sync_channel::<u8>(1);
        drop(tx);
        assert_eq!(
            recv_helping_pool(&rx),
            Err(()),
            "a closed channel ends the wait"
        );
    }

    #[test]
    fn plan_with_one_buffer_is_the_full_shuffle() {
        let mut a: Vec<usize> = (0..100).collect();
        let mut b = a.clone();
        let (mut r1, mut r2) = (StdRng::seed_from_u64(3), StdRng::seed_from_u64(3));
        for _ in 0..3 {
            let p1 = plan_epoch(&mut a, Shuffle::Full, &mut r1);
            let p2 = plan_epoch(
                &mut b,
                Shuffle::Blocks {
                    block_cells: 10,
                    buffer_blocks: 10,
                },
                &mut r2,
            );
            assert_eq!(p1.order, p2.order);
            assert_eq!(p2.groups.len(), 1);
        }
    }

    #[test]
    fn block_plan_visits_each_cell_once_buffer_by_buffer() {
        let mut train: Vec<usize> = (0..95).filter(|i| i % 7 != 3).collect();
        let mut rng = StdRng::seed_from_u64(1);
        let plan = plan_epoch(
            &mut train,
            Shuffle::Blocks {
                block_cells: 10,
                buffer_blocks: 3,
            },
            &mut rng,
        );
        let mut seen = plan.order.clone();
        seen.sort_unstable();
        let mut want = train.clone();
        want.sort_unstable();
        assert_eq!(seen, want);
        assert_eq!(plan.groups.len(), 4); // 10 blocks, 3 per buffer
        let mut off = 0;
        for PlanGroup { blocks, len } in &plan.groups {
            for &c in &plan.order[off..off + len] {
                assert!(blocks.contains(&(c / 10)), "cell {c} outside {blocks:?}");
            }
            off += len;
        }
        // Not the identity and not block-sorted: cells are shuffled within buffers.
        assert_ne!(plan.order, want);
    }

    #[test]
    fn streamed_rows_and_batches_equal_the_in_memory_ones() {
        let path = celldiff_data::shared_data!("pbmc68k_reduced/pbmc68k_reduced_counts.h5ad");
        let adata = crate::io::read(path, &ReadOptions::default()).unwrap();
        let (pp, fitted) = fit_transform(&adata, &PreprocessConfig::default()).unwrap();
        // Every third cell, as --exclude would leave.
        let cells: Vec<usize> = (0..adata.n_obs()).filter(|i| i % 3 != 1).collect();
        let sub = adata.select_obs(&cells);
        let mem_x = fitted.transform(&sub).unwrap().x;
        let mut mem = InMemoryCells(&mem_x);
        let reader = H5adStream::open(path, &ReadOptions::default()).unwrap();
        let mut s = StreamedCells::new(reader, cells.clone(), fitted, 50).unwrap();
        assert_eq!(s.n_cells(), cells.len());
        assert_eq!(s.n_genes(), pp.n_vars());
        let idx = [5, 0, 400, 51, 50, 49, cells.len() - 1];
        assert_eq!(s.rows(&idx).unwrap(), mem.rows(&idx).unwrap());
        let mut train: Vec<usize> = (0..cells.len()).collect();
        let mut rng = StdRng::seed_from_u64(0);
        for _ in 0..2 {
            let plan = plan_epoch(&mut train, s.shuffle(2), &mut rng);
            assert!(plan.groups.len() > 1);
            s.start_epoch(&plan).unwrap();
            for b in plan.order.chunks(128).take(3) {
                assert_eq!(s.next_batch(b).unwrap(), mem.rows(b).unwrap());
            }
            s.end_epoch().unwrap(); // before the end: the loader stops early
        }
        // Asking out of order is an error, not a silent mix-up.
        let plan = plan_epoch(&mut train, s.shuffle(2), &mut rng);
        s.start_epoch(&plan).unwrap();
        assert!(s.next_batch(&[plan.order[1]]).is_err());
    }
}
