//! Shared alpha handles: the trainer advances them, the quantized layers read them.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use aqe_core::{AlphaSchedule, AqeError, Progress};

/// A shared, thread-safe alpha value (the weight of `h(x)` in AQE's blend).
///
/// Clones share the value: give one clone to every layer and keep one in the trainer, which
/// calls [`AlphaHandle::advance`] at the start of every epoch or iteration.
///
/// ```
/// use aqe_candle::AlphaHandle;
/// use aqe_core::{AlphaSchedule, Progress};
///
/// let alpha = AlphaHandle::new(0.5)?;
/// let layer_copy = alpha.clone();
/// alpha.advance(&AlphaSchedule::default(), &Progress::at_epoch(9, 10)?);
/// assert_eq!(layer_copy.get(), 1.0);
/// # Ok::<(), aqe_core::AqeError>(())
/// ```
#[derive(Debug, Clone)]
pub struct AlphaHandle(Arc<AtomicU32>);

impl AlphaHandle {
    /// A handle holding `alpha`, which must lie in `[0, 1]`.
    pub fn new(alpha: f32) -> Result<Self, AqeError> {
        check(alpha)?;
        Ok(AlphaHandle(Arc::new(AtomicU32::new(alpha.to_bits()))))
    }

    /// The current value.
    pub fn get(&self) -> f32 {
        f32::from_bits(self.0.load(Ordering::Relaxed))
    }

    /// Sets the value, which must lie in `[0, 1]`.
    pub fn set(&self, alpha: f32) -> Result<(), AqeError> {
        check(alpha)?;
        self.0.store(alpha.to_bits(), Ordering::Relaxed);
        Ok(())
    }

    /// Sets the value the schedule gives at `progress` and returns it.
    pub fn advance(&self, schedule: &AlphaSchedule, progress: &Progress) -> f32 {
        let a = schedule.alpha_at(progress);
        self.0.store(a.to_bits(), Ordering::Relaxed);
        a
    }
}

fn check(alpha: f32) -> Result<(), AqeError> {
    if (0.0..=1.0).contains(&alpha) {
        Ok(())
    } else {
        Err(AqeError::InvalidParameter {
            name: "alpha",
            value: alpha.to_string(),
            reason: "alpha must lie in [0, 1]",
        })
    }
}

/// The alpha handles of a network: one for weights and one for activations (the same handle by
/// default, so one schedule drives both).
#[derive(Debug, Clone)]
pub struct Alphas {
    /// Alpha of the kernel (weight) quantizers.
    pub weight: AlphaHandle,
    /// Alpha of the input (activation) quantizers.
    pub input: AlphaHandle,
}

impl Alphas {
    /// Weights and activations sharing one handle.
    pub fn shared(handle: AlphaHandle) -> Self {
        Alphas {
            weight: handle.clone(),
            input: handle,
        }
    }
}

impl Default for Alphas {
    /// One shared handle starting at the default schedule's first value, 0.5.
    fn default() -> Self {
        Alphas::shared(AlphaHandle(Arc::new(AtomicU32::new(0.5f32.to_bits()))))
    }
}
