//! Exact discrete noise: discrete Laplace and discrete Gaussian samplers.
//!
//! This module owns drawing noise. It follows Canonne, Kamath and Steinke, "The Discrete
//! Gaussian for Differential Privacy" (NeurIPS 2020), Algorithms 1-3, with integer and rational
//! arithmetic only: no float ever touches a sample, so the low bits of a released value carry
//! no information about the true value (Mironov 2012). Randomness comes from a caller-supplied
//! [`Randomness`]; production code passes [`OsRandom`] (the kernel CSPRNG), tests a seeded
//! [`rand::RngCore`]. A source that fails makes the draw fail with [`NoiseError::Randomness`]:
//! no value is ever released without the randomness it needs.
//!
//! Arithmetic is in `u128` with checked operations (the Gaussian's acceptance test, whose
//! numbers grow with σ⁴, in arbitrary precision); parameters are bounded at construction so
//! that overflow is practically impossible, and if it happens anyway the draw fails with
//! [`NoiseError::Overflow`] rather than returning a wrong value.

use num_bigint::BigUint;
use rand::RngCore;

/// Largest discrete Gaussian variance supported (2^100, σ ≈ 1.1e15).
pub const MAX_GAUSSIAN_SIGMA2: u128 = 1 << 100;
/// Largest numerator/denominator of a discrete Laplace scale (2^100).
pub const MAX_LAPLACE_PARAM: u128 = 1 << 100;

/// Why a sampler could not be built or could not draw.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NoiseError {
    /// A parameter is zero or beyond the supported range.
    #[error("noise parameter out of range: {0}")]
    Parameter(&'static str),
    /// An intermediate value overflowed 128 bits; no sample was produced.
    #[error("noise arithmetic overflowed; no value was released")]
    Overflow,
    /// The source of randomness failed; no sample was produced.
    #[error("the kernel CSPRNG failed ({0}); no value was released")]
    Randomness(String),
}

/// Where noise gets its random bits. Every read can fail; a failed read fails the draw.
pub trait Randomness: Send {
    /// 64 random bits.
    fn try_next_u64(&mut self) -> Result<u64, NoiseError>;
    /// Fills `dst` with random bytes.
    fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), NoiseError>;
}

/// Generators that cannot fail (the seeded ones of tests and `mecgw policy test`) read
/// exactly as they always did, so seeded outputs stay the same.
impl<R: RngCore + Send> Randomness for R {
    fn try_next_u64(&mut self) -> Result<u64, NoiseError> {
        Ok(self.next_u64())
    }

    fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), NoiseError> {
        self.fill_bytes(dst);
        Ok(())
    }
}

/// The kernel CSPRNG (getrandom). Its failure is an error, as in OpenDP's `fill_bytes`:
/// getrandom(2) fails only before the kernel pool is initialised, and without randomness no
/// release may proceed.
#[derive(Debug, Default)]
pub struct OsRandom(rand::rngs::OsRng);

impl OsRandom {
    /// The kernel CSPRNG.
    pub fn new() -> Self {
        Self(rand::rngs::OsRng)
    }
}

impl Randomness for OsRandom {
    fn try_next_u64(&mut self) -> Result<u64, NoiseError> {
        let mut b = [0u8; 8];
        self.try_fill_bytes(&mut b)?;
        Ok(u64::from_le_bytes(b))
    }

    fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), NoiseError> {
        use rand::TryRngCore as _;
        self.0
            .try_fill_bytes(dst)
            .map_err(|e| NoiseError::Randomness(e.to_string()))
    }
}

fn uniform_below<R: Randomness + ?Sized>(rng: &mut R, n: u128) -> Result<u128, NoiseError> {
    debug_assert!(n > 0);
    if n.is_power_of_two() {
        return Ok(random_u128(rng)? & (n - 1));
    }
    // Rejection sampling on the smallest power-of-two range covering n: exact uniformity.
    let bits = 128 - (n - 1).leading_zeros();
    let mask = if bits == 128 {
        u128::MAX
    } else {
        (1u128 << bits) - 1
    };
    loop {
        let v = random_u128(rng)? & mask;
        if v < n {
            return Ok(v);
        }
    }
}

fn random_u128<R: Randomness + ?Sized>(rng: &mut R) -> Result<u128, NoiseError> {
    let high = rng.try_next_u64()?;
    Ok((u128::from(high) << 64) | u128::from(rng.try_next_u64()?))
}

/// Bernoulli(num/den), exactly. Requires 0 ≤ num ≤ den, den > 0.
fn bernoulli<R: Randomness + ?Sized>(
    rng: &mut R,
    num: u128,
    den: u128,
) -> Result<bool, NoiseError> {
    Ok(uniform_below(rng, den)? < num)
}

/// Bernoulli(exp(-num/den)) for 0 ≤ num/den ≤ 1 (CKS Algorithm 1, first case).
fn bernoulli_exp_small<R: Randomness + ?Sized>(
    rng: &mut R,
    num: u128,
    den: u128,
) -> Result<bool, NoiseError> {
    let mut k: u128 = 1;
    loop {
        let d = den.checked_mul(k).ok_or(NoiseError::Overflow)?;
        if !bernoulli(rng, num, d)? {
            return Ok(k % 2 == 1);
        }
        k += 1;
    }
}

/// Bernoulli(exp(-num/den)) for any num/den ≥ 0 (CKS Algorithm 1).
pub fn bernoulli_exp<R: Randomness + ?Sized>(
    rng: &mut R,
    num: u128,
    den: u128,
) -> Result<bool, NoiseError> {
    if den == 0 {
        return Err(NoiseError::Parameter("zero denominator"));
    }
    let whole = num / den;
    for _ in 0..whole {
        if !bernoulli_exp_small(rng, 1, 1)? {
            return Ok(false);
        }
    }
    bernoulli_exp_small(rng, num % den, den)
}

/// The discrete Laplace distribution with scale `t/s`: P(x) ∝ exp(-|x|·s/t).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DiscreteLaplace {
    s: u128,
    t: u128,
}

impl DiscreteLaplace {
    /// Scale `t/s` (for ε-DP with L1 sensitivity Δ and ε = a/b: t = Δ·b, s = a).
    pub fn new(t: u128, s: u128) -> Result<Self, NoiseError> {
        if s == 0 || t == 0 {
            return Err(NoiseError::Parameter(
                "discrete Laplace scale must be positive",
            ));
        }
        if s > MAX_LAPLACE_PARAM || t > MAX_LAPLACE_PARAM {
            return Err(NoiseError::Parameter(
                "discrete Laplace scale too fine or too large",
            ));
        }
        let g = gcd(s, t);
        Ok(Self { s: s / g, t: t / g })
    }

    /// The scale `t/s` as a float, for display.
    pub fn scale(&self) -> f64 {
        self.t as f64 / self.s as f64
    }

    /// One draw (CKS Algorithm 2).
    pub fn sample<R: Randomness + ?Sized>(&self, rng: &mut R) -> Result<i64, NoiseError> {
        let (s, t) = (self.s, self.t);
        loop {
            let u = uniform_below(rng, t)?;
            if !bernoulli_exp(rng, u, t)? {
                continue;
            }
            let mut v: u128 = 0;
            while bernoulli_exp(rng, 1, 1)? {
                v += 1;
            }
            let x = u
                .checked_add(t.checked_mul(v).ok_or(NoiseError::Overflow)?)
                .ok_or(NoiseError::Overflow)?;
            let y = x / s;
            let negative = bernoulli(rng, 1, 2)?;
            if negative && y == 0 {
                continue;
            }
            let y = i64::try_from(y).map_err(|_| NoiseError::Overflow)?;
            return Ok(if negative { -y } else { y });
        }
    }
}

/// The discrete Gaussian N_Z(0, σ²) with integer σ²: P(x) ∝ exp(-x²/(2σ²)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DiscreteGaussian {
    sigma2: u128,
    t: u128,
}

impl DiscreteGaussian {
    /// σ² (an integer ≥ 1; callers round the calibrated variance up, which only adds noise).
    pub fn new(sigma2: u128) -> Result<Self, NoiseError> {
        if sigma2 == 0 || sigma2 > MAX_GAUSSIAN_SIGMA2 {
            return Err(NoiseError::Parameter(
                "discrete Gaussian variance must be between 1 and 2^100",
            ));
        }
        Ok(Self {
            sigma2,
            t: isqrt(sigma2) + 1,
        })
    }

    /// σ² as given.
    pub fn sigma2(&self) -> u128 {
        self.sigma2
    }

    /// One draw (CKS Algorithm 3).
    pub fn sample<R: Randomness + ?Sized>(&self, rng: &mut R) -> Result<i64, NoiseError> {
        let (s2, t) = (self.sigma2, self.t);
        let lap = DiscreteLaplace { s: 1, t };
        // γ = (|Y| − σ²/t)² / (2σ²) = (|Y|·t − σ²)² / (2·σ²·t²)
        let t_big = BigUint::from(t);
        let den = BigUint::from(s2) * 2u32 * &t_big * &t_big;
        loop {
            let y = lap.sample(rng)?;
            let a = u128::from(y.unsigned_abs())
                .checked_mul(t)
                .ok_or(NoiseError::Overflow)?;
            let diff = BigUint::from(a.abs_diff(s2));
            let num = &diff * &diff;
            if bernoulli_exp_big(rng, &num, &den)? {
                return Ok(y);
            }
        }
    }
}

fn uniform_below_big<R: Randomness + ?Sized>(
    rng: &mut R,
    n: &BigUint,
) -> Result<BigUint, NoiseError> {
    let bits = n.bits();
    let bytes = bits.div_ceil(8) as usize;
    let top_mask = if bits.is_multiple_of(8) {
        0xff
    } else {
        (1u8 << (bits % 8)) - 1
    };
    let mut buf = vec![0u8; bytes.max(1)];
    loop {
        rng.try_fill_bytes(&mut buf)?;
        // Little-endian: the last byte is the most significant.
        if let Some(last) = buf.last_mut() {
            *last &= top_mask;
        }
        let v = BigUint::from_bytes_le(&buf);
        if &v < n {
            return Ok(v);
        }
    }
}

/// Bernoulli(exp(-num/den)) in arbitrary precision (CKS Algorithm 1).
fn bernoulli_exp_big<R: Randomness + ?Sized>(
    rng: &mut R,
    num: &BigUint,
    den: &BigUint,
) -> Result<bool, NoiseError> {
    if den == &BigUint::ZERO {
        return Err(NoiseError::Parameter("zero denominator"));
    }
    let whole = num / den;
    let mut i = BigUint::ZERO;
    while i < whole {
        if !bernoulli_exp_small(rng, 1, 1)? {
            return Ok(false);
        }
        i += 1u32;
    }
    let rem = num % den;
    let mut k: u32 = 1;
    loop {
        let d = den * k;
        if uniform_below_big(rng, &d)? >= rem {
            return Ok(k % 2 == 1);
        }
        k += 1;
    }
}

fn gcd(mut a: u128, mut b: u128) -> u128 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

/// ⌊√n⌋, exactly.
pub fn isqrt(n: u128) -> u128 {
    if n < 2 {
        return n;
    }
    // Newton's method from an upper bound; converges monotonically.
    let mut x = 1u128 << (128 - n.leading_zeros()).div_ceil(2);
    loop {
        let y = (x + n / x) / 2;
        if y >= x {
            return x;
        }
        x = y;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    const DRAWS: usize = 60_000;

    #[test]
    fn isqrt_is_exact() {
        for n in 0u128..10_000 {
            let r = isqrt(n);
            assert!(r * r <= n && (r + 1) * (r + 1) > n, "{n}");
        }
        assert_eq!(isqrt(1 << 96), 1 << 48);
    }

    /// χ² goodness of fit of draws against a pmf over [-range, range] with merged tails.
    fn chi2(draws: &[i64], pmf: impl Fn(i64) -> f64, range: i64) -> (f64, usize) {
        let n = draws.len() as f64;
        let mut counts = vec![0f64; (2 * range + 3) as usize];
        for &d in draws {
            let i = if d < -range {
                0
            } else if d > range {
                counts.len() - 1
            } else {
                (d + range + 1) as usize
            };
            counts[i] += 1.0;
        }
        let inner: f64 = (-range..=range).map(&pmf).sum();
        let tail = (1.0 - inner) / 2.0;
        let mut stat = 0.0;
        let mut cells = 0;
        for (i, c) in counts.iter().enumerate() {
            let p = if i == 0 || i == counts.len() - 1 {
                tail
            } else {
                pmf(i as i64 - range - 1)
            };
            let e = p * n;
            if e >= 5.0 {
                stat += (c - e) * (c - e) / e;
                cells += 1;
            }
        }
        (stat, cells - 1)
    }

    /// Empirical log P[M(0)=z]/P[M(1)=z] for well-populated z, with its standard error.
    fn log_ratios(draws: &[i64]) -> Vec<(i64, f64, f64)> {
        let mut c = std::collections::BTreeMap::<i64, f64>::new();
        for &d in draws {
            *c.entry(d).or_default() += 1.0;
        }
        let mut out = Vec::new();
        for (&z, &c0) in &c {
            // M(1) = 1 + noise, so P[M(1) = z] = P[noise = z - 1].
            if let Some(&c1) = c.get(&(z - 1))
                && c0 >= 1000.0
                && c1 >= 1000.0
            {
                out.push((z, (c0 / c1).ln(), (1.0 / c0 + 1.0 / c1).sqrt()));
            }
        }
        out
    }

    #[test]
    fn discrete_laplace_fits_its_pmf_and_epsilon() {
        // ε = 0.5 for sensitivity 1: scale t/s = 2.
        let lap = DiscreteLaplace::new(2, 1).unwrap();
        let mut rng = StdRng::seed_from_u64(0x5eed_0001);
        let draws: Vec<i64> = (0..DRAWS).map(|_| lap.sample(&mut rng).unwrap()).collect();
        let p = (-0.5f64).exp();
        let pmf = |z: i64| (1.0 - p) / (1.0 + p) * p.powi(z.unsigned_abs() as i32);
        let (stat, df) = chi2(&draws, pmf, 12);
        // χ² critical value at α = 0.001 for 26 degrees of freedom is 54.05.
        assert_eq!(df, 26);
        assert!(stat < 54.05, "χ² = {stat} with {df} df");
        let mean = draws.iter().sum::<i64>() as f64 / DRAWS as f64;
        assert!(mean.abs() < 0.05, "mean {mean}");
        // Likelihood ratio between neighbouring inputs 0 and 1: never above ε (beyond sampling
        // error, 4 standard errors), and reaching ε (the noise is not wastefully large).
        let ratios = log_ratios(&draws);
        assert!(ratios.len() >= 8, "{ratios:?}");
        for &(z, lr, se) in &ratios {
            assert!(lr.abs() <= 0.5 + 4.0 * se, "z={z}: |log ratio| {lr} > ε");
        }
        let max = ratios.iter().map(|r| r.1.abs()).fold(0.0, f64::max);
        assert!(max > 0.5 - 0.1, "max log ratio {max} far below ε");
    }

    #[test]
    fn discrete_laplace_with_a_fractional_scale() {
        // ε = 1.68 with sensitivity 1: scale 100/168.
        let lap = DiscreteLaplace::new(100, 168).unwrap();
        let mut rng = StdRng::seed_from_u64(0x5eed_0002);
        let draws: Vec<i64> = (0..DRAWS).map(|_| lap.sample(&mut rng).unwrap()).collect();
        let p = (-1.68f64).exp();
        let pmf = |z: i64| (1.0 - p) / (1.0 + p) * p.powi(z.unsigned_abs() as i32);
        let (stat, df) = chi2(&draws, pmf, 4);
        // α = 0.001, 10 degrees of freedom: 29.59.
        assert_eq!(df, 10);
        assert!(stat < 29.59, "χ² = {stat} with {df} df");
        for (z, lr, se) in log_ratios(&draws) {
            assert!(lr.abs() <= 1.68 + 4.0 * se, "z={z}: {lr}");
        }
    }

    #[test]
    fn discrete_gaussian_fits_its_pmf_and_likelihood_ratios() {
        let sigma2 = 9u128;
        let g = DiscreteGaussian::new(sigma2).unwrap();
        let mut rng = StdRng::seed_from_u64(0x5eed_0003);
        let draws: Vec<i64> = (0..DRAWS).map(|_| g.sample(&mut rng).unwrap()).collect();
        let norm: f64 = (-200i64..=200)
            .map(|z| (-(z * z) as f64 / 18.0).exp())
            .sum();
        let pmf = |z: i64| (-(z * z) as f64 / 18.0).exp() / norm;
        let (stat, df) = chi2(&draws, pmf, 9);
        // α = 0.001, 20 degrees of freedom: 45.31.
        assert_eq!(df, 20);
        assert!(stat < 45.31, "χ² = {stat} with {df} df");
        let var = draws.iter().map(|&d| (d * d) as f64).sum::<f64>() / DRAWS as f64;
        assert!((var - 9.0).abs() < 0.3, "variance {var}");
        // The privacy loss of neighbouring inputs 0 and 1 at output z is (1 − 2z)/(2σ²).
        for (z, lr, se) in log_ratios(&draws) {
            let want = (1.0 - 2.0 * z as f64) / 18.0;
            assert!((lr - want).abs() <= 4.0 * se, "z={z}: {lr} vs {want}");
        }
    }

    #[test]
    fn bernoulli_exp_matches_its_probability() {
        let mut rng = StdRng::seed_from_u64(7);
        for (num, den) in [(1u128, 2u128), (3, 1), (7, 3)] {
            let hits = (0..DRAWS)
                .filter(|_| bernoulli_exp(&mut rng, num, den).unwrap())
                .count() as f64;
            let p = (-(num as f64) / den as f64).exp();
            let se = (p * (1.0 - p) / DRAWS as f64).sqrt();
            assert!((hits / DRAWS as f64 - p).abs() < 4.0 * se, "{num}/{den}");
        }
    }

    /// A source that cannot produce randomness (getrandom before the pool is initialised).
    struct Failing;

    impl Randomness for Failing {
        fn try_next_u64(&mut self) -> Result<u64, NoiseError> {
            Err(NoiseError::Randomness("not initialised".into()))
        }
        fn try_fill_bytes(&mut self, _: &mut [u8]) -> Result<(), NoiseError> {
            Err(NoiseError::Randomness("not initialised".into()))
        }
    }

    #[test]
    fn a_failing_source_fails_the_draw_without_a_value() {
        let want = Err(NoiseError::Randomness("not initialised".into()));
        assert_eq!(
            DiscreteLaplace::new(2, 1).unwrap().sample(&mut Failing),
            want
        );
        assert_eq!(DiscreteGaussian::new(9).unwrap().sample(&mut Failing), want);
        assert_eq!(
            DiscreteGaussian::new(MAX_GAUSSIAN_SIGMA2)
                .unwrap()
                .sample(&mut Failing),
            want
        );
        // The kernel CSPRNG itself works here, through the same interface.
        let mut os = OsRandom::new();
        assert!(DiscreteLaplace::new(2, 1).unwrap().sample(&mut os).is_ok());
    }

    #[test]
    fn parameters_are_checked() {
        assert!(DiscreteLaplace::new(0, 1).is_err());
        assert!(DiscreteLaplace::new(1, 0).is_err());
        assert!(DiscreteGaussian::new(0).is_err());
        assert!(DiscreteGaussian::new(MAX_GAUSSIAN_SIGMA2 + 1).is_err());
        let big = DiscreteGaussian::new(MAX_GAUSSIAN_SIGMA2).unwrap();
        let mut rng = StdRng::seed_from_u64(9);
        for _ in 0..100 {
            big.sample(&mut rng).unwrap();
        }
    }
}
