//! Choosing the next token from the logits: greedy, or temperature and nucleus (top-p) sampling
//! from a seeded generator, so a seed gives the same reply again.

use crate::{LlmError, TokenId};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// How tokens are chosen.
#[derive(Clone, Debug, PartialEq)]
pub struct Sampling {
    /// 0 chooses the most likely token (greedy); higher flattens the distribution. 0..=2.
    pub temperature: f32,
    /// Sample only among the most likely tokens whose probabilities add up to `top_p`. (0, 1].
    pub top_p: f32,
    /// The generator's seed.
    pub seed: u64,
}

impl Sampling {
    /// The most likely token every time.
    pub fn greedy() -> Self {
        Self {
            temperature: 0.0,
            top_p: 1.0,
            seed: 0,
        }
    }
}

/// A [`Sampling`] with its generator's state.
pub struct Sampler {
    temperature: f32,
    top_p: f32,
    rng: StdRng,
    order: Vec<(f32, TokenId)>,
}

impl Sampler {
    /// Checks the parameters and seeds the generator.
    pub fn new(s: &Sampling) -> Result<Self, LlmError> {
        if !(0.0..=2.0).contains(&s.temperature) {
            return Err(LlmError::BadParameter {
                name: "temperature",
                why: format!("{} is outside 0..=2", s.temperature),
            });
        }
        if !(s.top_p > 0.0 && s.top_p <= 1.0) {
            return Err(LlmError::BadParameter {
                name: "top_p",
                why: format!("{} is outside (0, 1]", s.top_p),
            });
        }
        Ok(Self {
            temperature: s.temperature,
            top_p: s.top_p,
            rng: StdRng::seed_from_u64(s.seed),
            order: Vec::new(),
        })
    }

    /// The next token. NaN logits count as the least likely.
    pub fn sample(&mut self, logits: &[f32]) -> TokenId {
        if self.temperature == 0.0 {
            return argmax(logits);
        }
        let max = logits
            .iter()
            .copied()
            .filter(|l| !l.is_nan())
            .fold(f32::NEG_INFINITY, f32::max);
        if !max.is_finite() {
            return argmax(logits);
        }
        self.order.clear();
        self.order
            .extend(logits.iter().enumerate().filter_map(|(i, &l)| {
                let p = ((l - max) / self.temperature).exp();
                (p > 0.0).then_some((p, i as TokenId))
            }));
        self.order
            .sort_unstable_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        let total: f32 = self.order.iter().map(|e| e.0).sum();
        // Keep the smallest prefix whose mass reaches top_p.
        let mut kept = 0.0;
        let mut n = 0;
        for &(p, _) in &self.order {
            kept += p;
            n += 1;
            if kept >= self.top_p * total {
                break;
            }
        }
        let mut x = self.rng.random::<f32>() * kept;
        for &(p, id) in &self.order[..n] {
            if x < p {
                return id;
            }
            x -= p;
        }
        self.order[n - 1].1
    }
}

/// The index of the largest logit; the first on ties; NaN never wins (unless all are).
fn argmax(logits: &[f32]) -> TokenId {
    let mut best = 0;
    let mut best_value = f32::NEG_INFINITY;
    for (i, &l) in logits.iter().enumerate() {
        if l > best_value {
            best = i;
            best_value = l;
        }
    }
    best as TokenId
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greedy_takes_the_first_largest_and_skips_nan() {
        let mut s = Sampler::new(&Sampling::greedy()).unwrap();
        assert_eq!(s.sample(&[0.0, 3.0, 3.0, 1.0]), 1);
        assert_eq!(s.sample(&[f32::NAN, 1.0, 0.5]), 1);
    }

    #[test]
    fn a_seed_repeats_and_top_p_cuts_the_tail() {
        let logits: Vec<f32> = (0..50).map(|i| (i % 7) as f32).collect();
        let params = Sampling {
            temperature: 1.0,
            top_p: 1.0,
            seed: 42,
        };
        let draw = |p: &Sampling| {
            let mut s = Sampler::new(p).unwrap();
            (0..200).map(|_| s.sample(&logits)).collect::<Vec<_>>()
        };
        assert_eq!(draw(&params), draw(&params));
        assert_ne!(
            draw(&params),
            draw(&Sampling {
                seed: 43,
                ..params.clone()
            })
        );
        // With a small top_p only the tokens of the largest logit (6) remain.
        let narrow = draw(&Sampling {
            top_p: 0.05,
            ..params.clone()
        });
        assert!(narrow.iter().all(|&t| logits[t as usize] == 6.0));
        // With top_p 1 other tokens appear too.
        assert!(draw(&params).iter().any(|&t| logits[t as usize] != 6.0));
    }

    #[test]
    fn refuses_parameters_out_of_range() {
        for (t, p) in [
            (-0.1, 1.0),
            (2.5, 1.0),
            (f32::NAN, 1.0),
            (1.0, 0.0),
            (1.0, 1.5),
            (1.0, f32::NAN),
        ] {
            let s = Sampling {
                temperature: t,
                top_p: p,
                seed: 0,
            };
            assert!(Sampler::new(&s).is_err(), "{t} {p}");
        }
    }
}
