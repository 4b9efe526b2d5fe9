//! What the benchmarks (`src/bin/`, run by `cargo xtask bench NAME`) share: tables at the
//! scale the performance goals name ([`scale`]), the memory and the CPU time of a running
//! process as the kernel accounts them ([`procmem`], [`proccpu`]), BPF_PROG_TEST_RUN figures and their proof
//! ([`test_run`]), and the median they all report.
//!
//! A benchmark reports figures and ratios against a baseline measured in the same run; it
//! never fails on a figure (these machines are shared and noisy).

pub mod proccpu;
pub mod procmem;
pub mod scale;
pub mod test_run;

/// The median of `v`: the middle value, or the mean of the two middle ones; NaN if empty.
pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_median_of_an_even_count_is_the_mean_of_the_middle_two() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![4.0, 1.0, 3.0, 2.0]), 2.5);
        assert!(median(Vec::new()).is_nan());
    }
}
