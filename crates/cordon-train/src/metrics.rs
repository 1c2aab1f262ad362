//! Evaluation metrics for binary classifiers (labels 0/1, scores = probability of class 1).

/// The fraction of rows whose label equals `probability > 0.5` (scikit-learn's `predict` rule).
/// 0 for no rows.
pub fn accuracy(labels: &[f32], probs: &[f64]) -> f64 {
    let n = labels.len().min(probs.len());
    if n == 0 {
        return 0.0;
    }
    let right = labels
        .iter()
        .zip(probs)
        .filter(|(&y, &p)| (p > 0.5) == (y == 1.0))
        .count();
    right as f64 / n as f64
}

/// Area under the ROC curve, from the Mann–Whitney rank statistic; tied scores share their
/// average rank (as scikit-learn's `roc_auc_score`). `None` when a class is absent or a score
/// is NaN.
pub fn roc_auc(labels: &[f32], scores: &[f64]) -> Option<f64> {
    let n = labels.len().min(scores.len());
    if scores[..n].iter().any(|s| s.is_nan()) {
        return None;
    }
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]));
    let positives = labels[..n].iter().filter(|&&y| y == 1.0).count();
    let negatives = n - positives;
    if positives == 0 || negatives == 0 {
        return None;
    }
    // Sum of the positives' ranks (1-based), ties averaged.
    let mut rank_sum = 0f64;
    let mut i = 0;
    while i < n {
        let mut j = i + 1;
        while j < n && scores[order[j]] == scores[order[i]] {
            j += 1;
        }
        let average_rank = (i + 1 + j) as f64 / 2.0;
        let tied_positives = order[i..j].iter().filter(|&&k| labels[k] == 1.0).count();
        rank_sum += average_rank * tied_positives as f64;
        i = j;
    }
    let p = positives as f64;
    Some((rank_sum - p * (p + 1.0) / 2.0) / (p * negatives as f64))
}

/// Mean binary cross-entropy, with probabilities clipped to [1e-15, 1 - 1e-15] so that one
/// confident mistake gives a large, finite loss. 0 for no rows.
pub fn log_loss(labels: &[f32], probs: &[f64]) -> f64 {
    let n = labels.len().min(probs.len());
    if n == 0 {
        return 0.0;
    }
    let eps = 1e-15;
    let total: f64 = labels
        .iter()
        .zip(probs)
        .map(|(&y, &p)| {
            let p = p.clamp(eps, 1.0 - eps);
            if y == 1.0 {
                -p.ln()
            } else {
                -(1.0 - p).ln()
            }
        })
        .sum();
    total / n as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auc_counts_ties_as_half() {
        // One positive above every negative but one tie: (2 + 0.5) / 3.
        let labels = [0.0, 0.0, 0.0, 1.0];
        let scores = [0.1, 0.2, 0.9, 0.9];
        let auc = roc_auc(&labels, &scores).unwrap();
        assert!((auc - 2.5 / 3.0).abs() < 1e-12, "{auc}");
        assert_eq!(roc_auc(&[1.0, 1.0], &[0.1, 0.2]), None);
        assert_eq!(roc_auc(&[0.0, 1.0], &[0.1, 0.9]), Some(1.0));
    }

    #[test]
    fn accuracy_and_log_loss() {
        let labels = [0.0, 1.0, 1.0, 0.0];
        let probs = [0.2, 0.7, 0.4, 0.5];
        // 0.5 is not above 0.5: class 0, right; 0.4 for a 1 is the one miss.
        assert_eq!(accuracy(&labels, &probs), 0.75);
        let want = -(0.8f64.ln() + 0.7f64.ln() + 0.4f64.ln() + 0.5f64.ln()) / 4.0;
        assert!((log_loss(&labels, &probs) - want).abs() < 1e-12);
    }
}
