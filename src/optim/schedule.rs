//! Learning-rate schedules: linear warmup, then cosine or linear decay.

/// The shape of the decay after warmup.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decay {
    /// Half a cosine from `base_lr` down to `min_lr` (the paper's fine-tuning schedule).
    Cosine,
    /// A straight line from `base_lr` down to `min_lr` (the paper's pre-training schedule).
    Linear,
    /// `base_lr` throughout, after warmup.
    Constant,
}

/// Per-step learning rate:
///
/// ```text
///     lr(s) = base * (s + 1) / warmup                                   s < warmup
///     lr(s) = min + (base - min) * f((s - warmup) / (total - warmup))  after, with
///     f(x) = (1 + cos(pi x)) / 2   (cosine),   1 - x   (linear),   1   (constant)
/// ```
///
/// Warmup starts at `base / warmup` rather than 0 so the first step moves the weights; the
/// transformer's early instability is what warmup guards against, and it needs only small
/// steps, not none.
#[derive(Clone, Debug, PartialEq)]
pub struct LrSchedule {
    /// The peak rate `base`, reached at the end of warmup.
    pub base_lr: f64,
    /// The floor `min` the decay ends at.
    pub min_lr: f64,
    /// Steps of linear warmup.
    pub warmup_steps: u64,
    /// Steps of the whole run, warmup included; the rate stays at `min` past them.
    pub total_steps: u64,
    /// The shape `f` of the decay after warmup.
    pub decay: Decay,
}

impl LrSchedule {
    /// The rate of step `step` (counted from 0), by the formula above.
    pub fn lr(&self, step: u64) -> f64 {
        if step < self.warmup_steps {
            return self.base_lr * (step + 1) as f64 / self.warmup_steps as f64;
        }
        let span = self.total_steps.saturating_sub(self.warmup_steps).max(1);
        let x = ((step - self.warmup_steps) as f64 / span as f64).min(1.0);
        let f = match self.decay {
            Decay::Cosine => 0.5 * (1.0 + (std::f64::consts::PI * x).cos()),
            Decay::Linear => 1.0 - x,
            Decay::Constant => 1.0,
        };
        self.min_lr + (self.base_lr - self.min_lr) * f
    }
}
