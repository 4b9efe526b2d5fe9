//! The mecgw XDP programs, compiled for `bpfel-unknown-none` by `gateway/build.rs`.
//!
//! On the host this file compiles to an empty binary so that `cargo clippy --workspace`
//! works; the programs themselves exist only for the BPF target.
#![cfg_attr(target_arch = "bpf", no_std)]
#![cfg_attr(target_arch = "bpf", no_main)]
// Atomic adds on map values (the flow slots): the BPF target has no `AtomicU64::fetch_add`
// (no compare-and-swap). An add whose result is unused is the intrinsic, which LLVM lowers
// to the BPF atomic add on any CPU version; the one add whose old value is needed
// (`BPF_FETCH`) is inline assembly, since LLVM emits it only for CPU v3.
#![cfg_attr(target_arch = "bpf", feature(core_intrinsics))]
#![cfg_attr(target_arch = "bpf", feature(asm_experimental_arch))]
#![cfg_attr(target_arch = "bpf", allow(internal_features))]

#[cfg(target_arch = "bpf")]
mod programs;

#[cfg(not(target_arch = "bpf"))]
fn main() {}
