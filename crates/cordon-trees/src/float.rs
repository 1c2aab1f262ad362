//! The two numeric types the engine compares and sums in.

use std::fmt::Debug;
use std::ops::{Add, Div};

/// f32 or f64: thresholds, feature values, leaf weights and running scores.
pub trait Float:
    Copy
    + PartialOrd
    + Add<Output = Self>
    + Div<Output = Self>
    + Default
    + Debug
    + Send
    + Sync
    + 'static
{
    const ZERO: Self;
    fn from_f64(v: f64) -> Self;
    fn to_f64(self) -> f64;
    fn to_f32(self) -> f32;
    fn from_f32(v: f32) -> Self;
    fn from_usize(v: usize) -> Self;
    /// Flips the sign bit when bit 31 of `mask` is set: exact, and NaN stays NaN.
    fn negate_if(self, mask: u32) -> Self;
    /// The largest value below `self` (`self` for NaN and -inf).
    fn next_down(self) -> Self;
    fn is_nan(self) -> bool;
}

impl Float for f32 {
    const ZERO: Self = 0.0;
    fn from_f64(v: f64) -> Self {
        v as f32
    }
    fn to_f64(self) -> f64 {
        self as f64
    }
    fn to_f32(self) -> f32 {
        self
    }
    fn from_f32(v: f32) -> Self {
        v
    }
    fn from_usize(v: usize) -> Self {
        v as f32
    }
    #[inline(always)]
    fn negate_if(self, mask: u32) -> Self {
        f32::from_bits(self.to_bits() ^ (mask & 0x8000_0000))
    }
    fn next_down(self) -> Self {
        if self.is_nan() || self == f32::NEG_INFINITY {
            return self;
        }
        if self == 0.0 {
            return -f32::from_bits(1);
        }
        let bits = self.to_bits();
        f32::from_bits(if self > 0.0 { bits - 1 } else { bits + 1 })
    }
    fn is_nan(self) -> bool {
        f32::is_nan(self)
    }
}

impl Float for f64 {
    const ZERO: Self = 0.0;
    fn from_f64(v: f64) -> Self {
        v
    }
    fn to_f64(self) -> f64 {
        self
    }
    fn to_f32(self) -> f32 {
        self as f32
    }
    fn from_f32(v: f32) -> Self {
        v as f64
    }
    fn from_usize(v: usize) -> Self {
        v as f64
    }
    #[inline(always)]
    fn negate_if(self, mask: u32) -> Self {
        f64::from_bits(self.to_bits() ^ (((mask & 0x8000_0000) as u64) << 32))
    }
    fn next_down(self) -> Self {
        if self.is_nan() || self == f64::NEG_INFINITY {
            return self;
        }
        if self == 0.0 {
            return -f64::from_bits(1);
        }
        let bits = self.to_bits();
        f64::from_bits(if self > 0.0 { bits - 1 } else { bits + 1 })
    }
    fn is_nan(self) -> bool {
        f64::is_nan(self)
    }
}

#[cfg(test)]
mod tests {
    use super::Float;

    #[test]
    fn next_down_is_the_previous_float() {
        for t in [
            1.5f32,
            -1.5,
            0.0,
            -0.0,
            f32::MIN_POSITIVE,
            f32::INFINITY,
            -f32::MAX,
        ] {
            let d = Float::next_down(t);
            assert!(d < t, "{t}");
            // nothing representable lies strictly between
            for x in [d, t] {
                assert_eq!(x < t, x <= d, "{t} {x}");
            }
        }
        for t in [1.5f64, -1.5, 0.0, f64::INFINITY] {
            assert!(Float::next_down(t) < t);
        }
    }

    #[test]
    fn negate_if_flips_only_with_the_bit() {
        assert_eq!(2.0f32.negate_if(0x8000_0000), -2.0);
        assert_eq!(2.0f32.negate_if(0x7fff_ffff), 2.0);
        assert_eq!(2.0f64.negate_if(0x8000_0000), -2.0);
        assert!(f32::NAN.negate_if(0x8000_0000).is_nan());
    }
}
