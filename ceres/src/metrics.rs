//! Scores against labels: confusion matrix, precision, recall and F1 per class, the best recall
//! at a precision floor (what early stopping watches) and the threshold that reaches a recall
//! target (what `ceres_classify` uses).

use serde::{Deserialize, Serialize};

/// Precision, recall, F1 and support of one class.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, Default)]
pub struct ClassMetrics {
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
    pub support: usize,
}

/// Everything measured at one threshold.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Report {
    pub threshold: f64,
    /// `confusion[true][predicted]`, index 0 artifact, 1 asteroid.
    pub confusion: [[usize; 2]; 2],
    pub artifact: ClassMetrics,
    pub asteroid: ClassMetrics,
    /// The highest asteroid recall with precision >= `precision_floor`, and its threshold.
    pub precision_floor: f64,
    pub recall_at_floor: f64,
    pub threshold_at_floor: f64,
}

fn ratio(a: usize, b: usize) -> f64 {
    if b == 0 {
        0.0
    } else {
        a as f64 / b as f64
    }
}

fn class(tp: usize, fp: usize, fn_: usize) -> ClassMetrics {
    let p = ratio(tp, tp + fp);
    let r = ratio(tp, tp + fn_);
    ClassMetrics {
        precision: p,
        recall: r,
        f1: if p + r > 0.0 {
            2.0 * p * r / (p + r)
        } else {
            0.0
        },
        support: tp + fn_,
    }
}

/// The confusion matrix of `score >= threshold` (asteroid) against `labels` (1 = asteroid).
pub fn confusion(scores: &[f32], labels: &[u8], threshold: f64) -> [[usize; 2]; 2] {
    let mut c = [[0usize; 2]; 2];
    for (s, l) in scores.iter().zip(labels) {
        let p = (*s as f64 >= threshold) as usize;
        c[(*l != 0) as usize][p] += 1;
    }
    c
}

/// Asteroid-class (precision, recall) at every distinct threshold, highest threshold first.
fn curve(scores: &[f32], labels: &[u8]) -> Vec<(f64, f64, f64)> {
    let mut idx: Vec<usize> = (0..scores.len()).collect();
    idx.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
    let pos = labels.iter().filter(|l| **l != 0).count();
    let (mut tp, mut fp) = (0usize, 0usize);
    let mut out = Vec::new();
    for (k, &i) in idx.iter().enumerate() {
        if labels[i] != 0 {
            tp += 1
        } else {
            fp += 1
        }
        let last_of_tie = idx.get(k + 1).is_none_or(|&j| scores[j] != scores[i]);
        if last_of_tie {
            out.push((scores[i] as f64, ratio(tp, tp + fp), ratio(tp, pos)));
        }
    }
    out
}

/// The highest asteroid recall whose precision is at least `floor`, with its threshold
/// (recall 0 and threshold 1 when no threshold reaches the floor).
pub fn recall_at_precision(scores: &[f32], labels: &[u8], floor: f64) -> (f64, f64) {
    curve(scores, labels)
        .into_iter()
        .filter(|(_, p, _)| *p >= floor)
        .map(|(t, _, r)| (r, t))
        .fold((0.0, 1.0), |best, x| if x.0 > best.0 { x } else { best })
}

/// The highest threshold whose asteroid recall reaches `target` (so precision is as high as
/// that recall allows); the lowest score when none does.
pub fn threshold_for_recall(scores: &[f32], labels: &[u8], target: f64) -> f64 {
    let c = curve(scores, labels);
    c.iter()
        .find(|(_, _, r)| *r >= target)
        .or(c.last())
        .map_or(0.5, |(t, _, _)| *t)
}

/// The full report at `threshold`.
pub fn report(scores: &[f32], labels: &[u8], threshold: f64, floor: f64) -> Report {
    let c = confusion(scores, labels, threshold);
    let (recall_at_floor, threshold_at_floor) = recall_at_precision(scores, labels, floor);
    Report {
        threshold,
        confusion: c,
        asteroid: class(c[1][1], c[0][1], c[1][0]),
        artifact: class(c[0][0], c[1][0], c[0][1]),
        precision_floor: floor,
        recall_at_floor,
        threshold_at_floor,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn confusion_and_per_class_metrics_by_hand() {
        // 3 asteroids (scores 0.9, 0.8, 0.3), 3 artifacts (0.7, 0.2, 0.1).
        let s = [0.9, 0.8, 0.3, 0.7, 0.2, 0.1];
        let l = [1, 1, 1, 0, 0, 0];
        let r = report(&s, &l, 0.5, 0.9);
        assert_eq!(r.confusion, [[2, 1], [1, 2]]);
        assert!((r.asteroid.precision - 2.0 / 3.0).abs() < 1e-12);
        assert!((r.asteroid.recall - 2.0 / 3.0).abs() < 1e-12);
        assert!((r.artifact.recall - 2.0 / 3.0).abs() < 1e-12);
        assert_eq!(r.asteroid.support, 3);
        // Precision >= 0.9 holds down to 0.8 (2 of 3 found).
        assert!((r.recall_at_floor - 2.0 / 3.0).abs() < 1e-12);
        assert!((r.threshold_at_floor - 0.8).abs() < 1e-6);
        // Recall 1 needs the threshold down at 0.3.
        assert!((threshold_for_recall(&s, &l, 1.0) - 0.3).abs() < 1e-6);
    }

    #[test]
    fn ties_count_together() {
        let s = [0.5, 0.5, 0.5];
        let l = [1, 0, 0];
        let (r, _) = recall_at_precision(&s, &l, 0.5);
        assert_eq!(r, 0.0, "the tie gives precision 1/3 at once, never 1");
    }
}
