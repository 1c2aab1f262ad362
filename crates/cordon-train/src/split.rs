//! A reproducible train/test split.

/// splitmix64 (Steele, Lea, Flood 2014): a fixed, tiny mixing function, so the split is the
/// same on every platform and for every version of this crate without a `rand` dependency.
fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Splits row indices `0..n_rows` into (train, test), each ascending. A row goes to the test
/// set when its seeded hash falls below `test_fraction` (clamped to [0, 1]), so each row's side
/// depends only on (seed, row index): appending rows never moves earlier ones.
pub fn holdout_split(n_rows: usize, test_fraction: f64, seed: u64) -> (Vec<usize>, Vec<usize>) {
    let fraction = if test_fraction.is_nan() {
        0.0
    } else {
        test_fraction.clamp(0.0, 1.0)
    };
    let key = splitmix64(seed);
    let mut train = Vec::new();
    let mut test = Vec::new();
    for i in 0..n_rows {
        // The top 53 bits as a uniform number in [0, 1).
        let u = (splitmix64(key ^ i as u64) >> 11) as f64 / (1u64 << 53) as f64;
        if u < fraction {
            test.push(i);
        } else {
            train.push(i);
        }
    }
    (train, test)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_is_deterministic_disjoint_and_about_the_right_size() {
        let (train, test) = holdout_split(10_000, 0.25, 7);
        assert_eq!(
            (train.clone(), test.clone()),
            holdout_split(10_000, 0.25, 7)
        );
        assert_eq!(train.len() + test.len(), 10_000);
        assert!((2300..2700).contains(&test.len()), "{}", test.len());
        let mut all: Vec<usize> = train.iter().chain(&test).copied().collect();
        all.sort_unstable();
        assert!(all.iter().enumerate().all(|(i, &r)| i == r));
        assert_ne!(test, holdout_split(10_000, 0.25, 8).1);
        assert_eq!(holdout_split(5, 0.0, 1).1.len(), 0);
        assert_eq!(holdout_split(5, 1.0, 1).0.len(), 0);
    }
}
