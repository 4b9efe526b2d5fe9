//! The mecgw XDP programs, compiled for `bpfel-unknown-none` by `gateway/build.rs`.
//!
//! On the host this file compiles to an empty binary so that `cargo clippy --workspace`
//! works; the programs themselves exist only for the BPF target.
#![cfg_attr(target_arch = "bpf", no_std)]
#![cfg_attr(target_arch = "bpf", no_main)]

#[cfg(target_arch = "bpf")]
mod programs;

#[cfg(not(target_arch = "bpf"))]
fn main() {}
