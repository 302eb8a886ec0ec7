//! Classification metrics: top-k accuracy, per-class accuracy and the confusion matrix.

use std::fmt::Write;

/// Accumulates predictions over an evaluation pass.
#[derive(Clone, Debug)]
pub struct Metrics {
    /// Number of classes.
    pub classes: usize,
    /// `confusion[true * classes + predicted]` counts (samples with non-finite logits left out).
    pub confusion: Vec<u64>,
    /// Samples whose label is among the 5 highest logits.
    pub top5_correct: u64,
    /// Sum of per-sample losses (for the mean loss).
    pub loss_sum: f64,
    /// Samples seen.
    pub count: u64,
    /// Samples with a NaN or infinite logit: no prediction, counted as wrong (a broken model).
    pub non_finite: u64,
}

impl Metrics {
    /// Nothing counted yet, for `classes` classes.
    pub fn new(classes: usize) -> Self {
        Metrics {
            classes,
            confusion: vec![0; classes * classes],
            top5_correct: 0,
            loss_sum: 0.0,
            count: 0,
            non_finite: 0,
        }
    }

    /// Adds a batch: `logits` is row-major `[labels.len(), classes]`; `mean_loss` is the batch's
    /// mean loss.
    pub fn add_batch(&mut self, logits: &[f32], labels: &[usize], mean_loss: f64) {
        let c = self.classes;
        assert_eq!(logits.len(), labels.len() * c, "Metrics: {} logits for {} labels", logits.len(), labels.len());
        for (row, &label) in logits.chunks(c).zip(labels) {
            // NaN compares false with everything: such a row would "rank" its label first.
            if row.iter().any(|v| !v.is_finite()) {
                self.non_finite += 1;
                continue;
            }
            let pred = argmax(row);
            self.confusion[label * c + pred] += 1;
            // The label is in the top 5 iff fewer than 5 classes score strictly higher.
            let higher = row.iter().filter(|&&v| v > row[label]).count();
            if higher < 5 {
                self.top5_correct += 1;
            }
        }
        self.loss_sum += mean_loss * labels.len() as f64;
        self.count += labels.len() as u64;
    }

    /// Samples predicted correctly (top-1).
    pub fn correct(&self) -> u64 {
        (0..self.classes).map(|i| self.confusion[i * self.classes + i]).sum()
    }

    /// Top-1 accuracy in `[0, 1]`.
    pub fn top1(&self) -> f64 {
        self.correct() as f64 / self.count.max(1) as f64
    }

    /// Top-5 accuracy in `[0, 1]`.
    pub fn top5(&self) -> f64 {
        self.top5_correct as f64 / self.count.max(1) as f64
    }

    /// The mean loss per sample.
    pub fn mean_loss(&self) -> f64 {
        self.loss_sum / self.count.max(1) as f64
    }

    /// Accuracy of each class (recall); `None` for a class absent from the data.
    pub fn per_class(&self) -> Vec<Option<f64>> {
        (0..self.classes)
            .map(|i| {
                let row = &self.confusion[i * self.classes..(i + 1) * self.classes];
                let total: u64 = row.iter().sum();
                (total > 0).then(|| row[i] as f64 / total as f64)
            })
            .collect()
    }

    /// A readable report: overall accuracies, per-class accuracy and the confusion matrix.
    pub fn report(&self, class_names: &[String]) -> String {
        let mut s = String::new();
        let name = |i: usize| class_names.get(i).cloned().unwrap_or_else(|| i.to_string());
        let _ = writeln!(s, "samples: {}   loss: {:.4}", self.count, self.mean_loss());
        let _ =
            writeln!(s, "top-1 accuracy: {:.2}%   top-5 accuracy: {:.2}%", 100.0 * self.top1(), 100.0 * self.top5());
        if self.non_finite > 0 {
            let _ = writeln!(
                s,
                "warning: {} of {} samples got non-finite logits (NaN or infinity) and count as wrong: the model is broken",
                self.non_finite, self.count
            );
        }
        let _ = writeln!(s, "\nper-class accuracy:");
        for (i, acc) in self.per_class().into_iter().enumerate() {
            match acc {
                Some(a) => writeln!(s, "  {:>12}  {:6.2}%", name(i), 100.0 * a),
                None => writeln!(s, "  {:>12}  (no samples)", name(i)),
            }
            .ok();
        }
        if self.classes <= 20 {
            let _ = writeln!(s, "\nconfusion matrix (rows: true class, columns: predicted):");
            let _ = write!(s, "  {:>12}", "");
            for j in 0..self.classes {
                let _ = write!(s, " {:>6}", j);
            }
            s.push('\n');
            for i in 0..self.classes {
                let _ = write!(s, "  {:>9} {:>2}", name(i).chars().take(9).collect::<String>(), i);
                for j in 0..self.classes {
                    let _ = write!(s, " {:>6}", self.confusion[i * self.classes + j]);
                }
                s.push('\n');
            }
        }
        s
    }
}

/// Index of the largest value (the first one on ties).
pub fn argmax(row: &[f32]) -> usize {
    let mut best = 0;
    for (i, &v) in row.iter().enumerate() {
        if v > row[best] {
            best = i;
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_top1_top5_and_confusion() {
        let mut m = Metrics::new(6);
        // Sample 0: label 2, predicted 2. Sample 1: label 0, predicted 5, label ranked 6th.
        // Sample 2: label 1, predicted 3, label ranked 2nd.
        let logits = [
            0.0, 0.1, 0.9, 0.2, 0.3, 0.4, //
            0.0, 0.1, 0.2, 0.3, 0.4, 0.5, //
            0.0, 0.8, 0.1, 0.9, 0.2, 0.3,
        ];
        m.add_batch(&logits, &[2, 0, 1], 1.5);
        assert_eq!(m.correct(), 1);
        assert!((m.top1() - 1.0 / 3.0).abs() < 1e-12);
        assert!((m.top5() - 2.0 / 3.0).abs() < 1e-12);
        assert_eq!(m.confusion[5], 1);
        assert_eq!(m.confusion[6 + 3], 1);
        assert_eq!(m.per_class()[2], Some(1.0));
        assert_eq!(m.per_class()[4], None);
        assert!((m.mean_loss() - 1.5).abs() < 1e-12);
        assert!(m.report(&[]).contains("top-1 accuracy: 33.33%"));
    }

    /// A model whose logits are NaN predicts nothing: 0% top-1 and top-5, not 100%.
    #[test]
    fn non_finite_logits_count_as_wrong() {
        let mut m = Metrics::new(6);
        let mut logits = [f32::NAN; 12];
        logits[6..].copy_from_slice(&[0.0, 1.0, f32::INFINITY, 0.0, 0.0, 0.0]);
        m.add_batch(&logits, &[0, 2], f64::NAN);
        assert_eq!((m.correct(), m.top5_correct, m.non_finite, m.count), (0, 0, 2, 2));
        assert_eq!((m.top1(), m.top5()), (0.0, 0.0));
        assert!(m.report(&[]).contains("2 of 2 samples got non-finite logits"), "{}", m.report(&[]));
    }
}
