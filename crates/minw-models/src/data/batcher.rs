//! Batches as NHWC `f32` tensors, prepared on a background thread while the consumer trains.
//!
//! Everything random is a pure function of the seed: the order of epoch `e` comes from
//! `(seed, e)` and the augmentation of batch `b` of epoch `e` from `(seed, e, b)`, drawn in
//! the batch's image order before the images are processed in parallel. A run resumed at any
//! epoch (or batch) therefore sees exactly the batches of an uninterrupted run, whatever the
//! thread count or prefetch depth.

use std::sync::Arc;
use std::sync::mpsc::{Receiver, sync_channel};
use std::thread::JoinHandle;

use aqe_candle::SeededRng;
use candle_core::{Device, Tensor};
use rayon::prelude::*;

use super::{Augment, Dataset, Normalize, Transform};
use crate::{Error, Result};

/// The order images are visited in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Order {
    /// A new permutation every epoch, fixed by `(seed, epoch)`.
    #[default]
    Shuffle,
    /// Dataset order (evaluation).
    Sequential,
}

/// What happens to a last batch smaller than the batch size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LastBatch {
    /// It is yielded as it is.
    #[default]
    Keep,
    /// It is skipped (every batch has exactly `batch_size` images).
    Drop,
}

/// How a [`Batcher`] makes batches.
#[derive(Debug, Clone, PartialEq)]
pub struct BatchConfig {
    /// Images per batch (> 0).
    pub batch_size: usize,
    /// Seed of the shuffles and augmentations.
    pub seed: u64,
    /// Visiting order.
    pub order: Order,
    /// Keep or drop a partial last batch.
    pub last: LastBatch,
    /// Augmentation applied to every image.
    pub augment: Augment,
    /// Normalisation; `None` only scales pixels to `[0, 1]`.
    pub normalize: Option<Normalize>,
    /// Batches prepared ahead on a background thread; 0 prepares each batch on the calling
    /// thread when it is asked for.
    pub prefetch: usize,
}

impl BatchConfig {
    /// Shuffled batches of `batch_size` with seed `seed`, partial last batch kept, no
    /// augmentation, pixels scaled to `[0, 1]`, two batches prefetched.
    pub fn new(batch_size: usize, seed: u64) -> Self {
        BatchConfig {
            batch_size,
            seed,
            order: Order::Shuffle,
            last: LastBatch::Keep,
            augment: Augment::None,
            normalize: None,
            prefetch: 2,
        }
    }

    /// Evaluation: dataset order, every image once, no augmentation, normalised by
    /// `normalize`.
    pub fn eval(batch_size: usize, normalize: Option<Normalize>) -> Self {
        BatchConfig {
            order: Order::Sequential,
            normalize,
            ..BatchConfig::new(batch_size, 0)
        }
    }
}

/// One batch.
#[derive(Debug, Clone)]
pub struct Batch {
    /// Images, `[b, height, width, channels]` `f32`.
    pub images: Tensor,
    /// Labels, `[b]` `u32`.
    pub labels: Tensor,
    /// Position of the batch in its epoch.
    pub index: usize,
}

#[derive(Debug)]
struct Shared {
    data: Arc<Dataset>,
    config: BatchConfig,
    device: Device,
}

/// Turns a [`Dataset`] into epochs of [`Batch`]es; see the module docs for the determinism
/// guarantees.
#[derive(Debug, Clone)]
pub struct Batcher {
    shared: Arc<Shared>,
}

const ORDER_TAG: u64 = 0x4f52_4445_525f_5348; // "ORDER_SH"
const AUGMENT_TAG: u64 = 0x4155_474d_454e_5421; // "AUGMENT!"

fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A generator seeded from `(seed, tag, a, b)`, independent across each of them.
fn derived_rng(seed: u64, tag: u64, a: u64, b: u64) -> SeededRng {
    let s = mix(mix(mix(seed ^ tag).wrapping_add(a)).wrapping_add(b));
    SeededRng::new(s)
}

impl Batcher {
    /// A batcher over `data`, building tensors on `device`.
    pub fn new(data: impl Into<Arc<Dataset>>, config: BatchConfig, device: Device) -> Result<Self> {
        let data = data.into();
        let bad = |reason: String| Error::Config {
            what: "batcher".into(),
            reason,
        };
        if config.batch_size == 0 {
            return Err(bad("batch size must be positive".into()));
        }
        if let Some(n) = &config.normalize
            && n.channels() != data.shape().channels
        {
            return Err(bad(format!(
                "normalisation for {} channels, images have {}",
                n.channels(),
                data.shape().channels
            )));
        }
        Ok(Batcher {
            shared: Arc::new(Shared {
                data,
                config,
                device,
            }),
        })
    }

    /// The dataset.
    pub fn dataset(&self) -> &Dataset {
        &self.shared.data
    }

    /// The configuration.
    pub fn config(&self) -> &BatchConfig {
        &self.shared.config
    }

    /// Batches in one epoch.
    pub fn batches_per_epoch(&self) -> usize {
        let (n, b) = (self.shared.data.len(), self.shared.config.batch_size);
        match self.shared.config.last {
            LastBatch::Keep => n.div_ceil(b),
            LastBatch::Drop => n / b,
        }
    }

    /// The image indices of epoch `epoch`, in visiting order.
    pub fn order(&self, epoch: u64) -> Vec<usize> {
        self.shared.order(epoch)
    }

    /// Batch `index` of epoch `epoch`, prepared on this thread (equal to the one the epoch's
    /// iterator yields).
    pub fn batch(&self, epoch: u64, index: usize) -> Result<Batch> {
        if index >= self.batches_per_epoch() {
            return Err(Error::Config {
                what: "batcher".into(),
                reason: format!(
                    "batch {index} of an epoch of {} batches",
                    self.batches_per_epoch()
                ),
            });
        }
        self.shared.prepare(&self.order(epoch), epoch, index)
    }

    /// The batches of epoch `epoch`.
    pub fn epoch(&self, epoch: u64) -> EpochIter {
        self.epoch_from(epoch, 0)
    }

    /// The batches of epoch `epoch` from batch `first` on (for resuming inside an epoch).
    pub fn epoch_from(&self, epoch: u64, first: usize) -> EpochIter {
        let order = Arc::new(self.order(epoch));
        let end = self.batches_per_epoch();
        let first = first.min(end);
        let prefetch = self.shared.config.prefetch;
        // Without a thread (prefetch 0, or spawning failed) batches are prepared on demand.
        let worker = (prefetch > 0 && first < end).then(|| {
            let (tx, rx) = sync_channel(prefetch);
            let shared = Arc::clone(&self.shared);
            let order = Arc::clone(&order);
            let handle = std::thread::Builder::new()
                .name("minw-batcher".into())
                .spawn(move || {
                    for i in first..end {
                        let batch = shared.prepare(&order, epoch, i);
                        let failed = batch.is_err();
                        if tx.send(batch).is_err() || failed {
                            break;
                        }
                    }
                })
                .ok()?;
            Some((rx, handle))
        });
        let (rx, handle) = match worker.flatten() {
            Some((rx, h)) => (Some(rx), Some(h)),
            None => (None, None),
        };
        EpochIter {
            shared: Arc::clone(&self.shared),
            order,
            epoch,
            next: first,
            end,
            rx,
            handle,
        }
    }
}

impl Shared {
    fn order(&self, epoch: u64) -> Vec<usize> {
        let mut order: Vec<usize> = (0..self.data.len()).collect();
        if self.config.order == Order::Shuffle {
            derived_rng(self.config.seed, ORDER_TAG, epoch, 0).shuffle(&mut order);
        }
        order
    }

    fn prepare(&self, order: &[usize], epoch: u64, index: usize) -> Result<Batch> {
        let b = self.config.batch_size;
        let idx = &order[index * b..((index + 1) * b).min(order.len())];
        let shape = self.data.shape();
        let per = self.data.image_len();
        let augment = self.config.augment;
        let pad = augment.pad();
        let mut rng = derived_rng(self.config.seed, AUGMENT_TAG, epoch, index as u64);
        let transforms: Vec<Transform> = idx.iter().map(|_| augment.sample(&mut rng)).collect();
        let normalize = match &self.config.normalize {
            Some(n) => n.table(),
            None => Normalize::identity(shape.channels).table(),
        };
        let mut out = vec![0f32; idx.len() * per];
        out.par_chunks_mut(per)
            .zip(idx.par_iter().zip(transforms.par_iter()))
            .for_each_init(
                || vec![0u8; per],
                |scratch, (dst, (&i, t))| {
                    let src = self.data.image(i);
                    if augment == Augment::None {
                        normalize.apply(src, dst);
                    } else {
                        t.apply(src, shape, pad, scratch);
                        normalize.apply(scratch, dst);
                    }
                },
            );
        let labels: Vec<u32> = idx.iter().map(|&i| self.data.label(i)).collect();
        let n = idx.len();
        Ok(Batch {
            images: Tensor::from_vec(
                out,
                (n, shape.height, shape.width, shape.channels),
                &self.device,
            )?,
            labels: Tensor::from_vec(labels, n, &self.device)?,
            index,
        })
    }
}

/// The batches of one epoch, in order; prepared ahead on a background thread when the
/// configuration's `prefetch` is positive. Dropping it stops the thread.
#[derive(Debug)]
pub struct EpochIter {
    shared: Arc<Shared>,
    order: Arc<Vec<usize>>,
    epoch: u64,
    next: usize,
    end: usize,
    rx: Option<Receiver<Result<Batch>>>,
    handle: Option<JoinHandle<()>>,
}

impl EpochIter {
    /// The epoch this iterator walks.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }
}

impl Iterator for EpochIter {
    type Item = Result<Batch>;

    fn next(&mut self) -> Option<Result<Batch>> {
        if self.next >= self.end {
            return None;
        }
        let item = match &self.rx {
            Some(rx) => match rx.recv() {
                Ok(b) => b,
                Err(_) => {
                    // The producer ended early: it panicked (an error is sent before it stops).
                    self.rx = None;
                    if let Some(h) = self.handle.take()
                        && let Err(panic) = h.join()
                    {
                        std::panic::resume_unwind(panic);
                    }
                    return None;
                }
            },
            None => self.shared.prepare(&self.order, self.epoch, self.next),
        };
        self.next = if item.is_err() {
            self.end
        } else {
            self.next + 1
        };
        Some(item)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = self.end - self.next;
        (left, Some(left))
    }
}

impl Drop for EpochIter {
    fn drop(&mut self) {
        // Closing the channel first unblocks a producer waiting to send.
        drop(self.rx.take());
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}
