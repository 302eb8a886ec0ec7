//! Learning-rate schedules: linear warmup, then cosine or linear decay.

/// The shape of the decay after warmup.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decay {
    Cosine,
    Linear,
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
    pub base_lr: f64,
    pub min_lr: f64,
    pub warmup_steps: u64,
    pub total_steps: u64,
    pub decay: Decay,
}

impl LrSchedule {
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
