//! Types shared between the mecgw XDP programs and userspace.
//!
//! Everything here is `#[repr(C)]` with explicit padding (`u32` flags, never `bool`) so the
//! kernel and userspace agree on every byte. With the `user` feature the types implement
//! `aya::Pod` so the userspace loader can read and write them in maps.
#![no_std]

/// Names of the programs and maps in the eBPF object. Userspace looks them up by these names.
pub mod names {
    /// The minimal program: counts every frame and passes it to the kernel.
    pub const PROG_PASS: &str = "mecgw_pass";
    /// Per-CPU packet/byte counters indexed by [`super::Verdict`].
    pub const MAP_VERDICTS: &str = "VERDICTS";
}

/// What the fast path decided for a frame. The discriminant indexes the verdict counters.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Handed to the kernel's stack unchanged (`XDP_PASS`).
    Pass = 0,
    /// Dropped (`XDP_DROP`).
    Drop = 1,
    /// Transmitted back out of the interface it came in on (`XDP_TX`).
    Tx = 2,
    /// Redirected to another interface (`XDP_REDIRECT`).
    Redirect = 3,
}

impl Verdict {
    /// Number of verdicts: the size of the verdict counter array.
    pub const COUNT: u32 = 4;
    /// All verdicts, in discriminant order.
    pub const ALL: [Verdict; Self::COUNT as usize] =
        [Verdict::Pass, Verdict::Drop, Verdict::Tx, Verdict::Redirect];

    /// Lower-case name used in logs and metrics.
    pub const fn name(self) -> &'static str {
        match self {
            Verdict::Pass => "pass",
            Verdict::Drop => "drop",
            Verdict::Tx => "tx",
            Verdict::Redirect => "redirect",
        }
    }
}

/// A packet and byte counter. Kept per CPU in the kernel; userspace sums the CPUs.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counter {
    pub packets: u64,
    pub bytes: u64,
}

impl Counter {
    /// The sum of two counters (used to add up per-CPU values).
    pub const fn plus(self, other: Counter) -> Counter {
        Counter {
            packets: self.packets.wrapping_add(other.packets),
            bytes: self.bytes.wrapping_add(other.bytes),
        }
    }
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: `Counter` is `#[repr(C)]`, made only of `u64`s, so it has no padding and every
    // bit pattern is a valid value.
    unsafe impl aya::Pod for super::Counter {}
}
