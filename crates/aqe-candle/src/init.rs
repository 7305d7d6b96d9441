//! Seeded initialisation: Candle's CPU device cannot be seeded, so initial values come from our
//! own generator.

/// A small, fast, seedable generator (SplitMix64) for initial weights and data order.
#[derive(Debug, Clone)]
pub struct SeededRng(u64);

impl SeededRng {
    /// A generator whose sequence is fixed by `seed`.
    pub fn new(seed: u64) -> Self {
        SeededRng(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)`.
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in `[lo, hi)`.
    pub fn uniform(&mut self, lo: f32, hi: f32) -> f32 {
        (f64::from(lo) + (f64::from(hi) - f64::from(lo)) * self.next_f64()) as f32
    }

    /// Standard normal (Box-Muller).
    pub fn normal(&mut self) -> f32 {
        let u1 = 1.0 - self.next_f64();
        let u2 = self.next_f64();
        ((-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()) as f32
    }

    /// Uniform integer in `0..n` (`n > 0`).
    pub fn below(&mut self, n: usize) -> usize {
        ((self.next_u64() as u128 * n as u128) >> 64) as usize
    }

    /// Shuffles `v` in place (Fisher-Yates).
    pub fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            v.swap(i, self.below(i + 1));
        }
    }
}

/// How a parameter is initialised.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Init {
    /// Every value equal to this constant.
    Const(f32),
    /// Uniform in `[-bound, bound]`.
    Uniform(f32),
    /// Normal with mean 0 and this standard deviation.
    Normal(f32),
    /// He/Kaiming normal for `fan_in` inputs: std `sqrt(2 / fan_in)`.
    KaimingNormal {
        /// Inputs per output unit.
        fan_in: usize,
    },
    /// Glorot/Xavier uniform: bound `sqrt(6 / (fan_in + fan_out))`.
    GlorotUniform {
        /// Inputs per output unit.
        fan_in: usize,
        /// Outputs per input unit.
        fan_out: usize,
    },
}

impl Init {
    /// `n` values drawn from `rng`.
    pub fn sample(self, n: usize, rng: &mut SeededRng) -> Vec<f32> {
        match self {
            Init::Const(c) => vec![c; n],
            Init::Uniform(b) => (0..n).map(|_| rng.uniform(-b, b)).collect(),
            Init::Normal(s) => (0..n).map(|_| s * rng.normal()).collect(),
            Init::KaimingNormal { fan_in } => {
                let s = (2.0 / fan_in.max(1) as f32).sqrt();
                (0..n).map(|_| s * rng.normal()).collect()
            }
            Init::GlorotUniform { fan_in, fan_out } => {
                let b = (6.0 / (fan_in + fan_out).max(1) as f32).sqrt();
                (0..n).map(|_| rng.uniform(-b, b)).collect()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_sequence_and_sane_moments() {
        let a: Vec<u64> = (0..5)
            .scan(SeededRng::new(7), |r, _| Some(r.next_u64()))
            .collect();
        let b: Vec<u64> = (0..5)
            .scan(SeededRng::new(7), |r, _| Some(r.next_u64()))
            .collect();
        let c: Vec<u64> = (0..5)
            .scan(SeededRng::new(8), |r, _| Some(r.next_u64()))
            .collect();
        assert_eq!(a, b);
        assert_ne!(a, c);
        let mut r = SeededRng::new(1);
        let v = Init::Normal(1.0).sample(20_000, &mut r);
        let mean = v.iter().sum::<f32>() / v.len() as f32;
        let var = v.iter().map(|x| (x - mean) * (x - mean)).sum::<f32>() / v.len() as f32;
        assert!(
            mean.abs() < 0.03 && (var - 1.0).abs() < 0.05,
            "{mean} {var}"
        );
        let u = Init::Uniform(0.5).sample(1000, &mut r);
        assert!(u.iter().all(|x| (-0.5..0.5).contains(x)));
    }

    #[test]
    fn shuffle_is_a_permutation() {
        let mut v: Vec<usize> = (0..100).collect();
        SeededRng::new(3).shuffle(&mut v);
        assert_ne!(v, (0..100).collect::<Vec<_>>());
        v.sort_unstable();
        assert_eq!(v, (0..100).collect::<Vec<_>>());
    }
}
