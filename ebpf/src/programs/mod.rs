//! XDP programs and the maps they share.
//!
//! `parse` reads headers, `maps` holds the tables (two generations), `counters` counts,
//! `flows` counts per flow (when switched on at load), `fib` asks the kernel's FIB for next
//! hops, `pfcp` judges packets of PFCP
//! sessions by their PDRs and FARs, `uplink` and `downlink` are the
//! programs of the two directions, `pass` the minimal one, `bench` the benchmarks' baseline,
//! restore wrapper, live-frames generator and sink.

mod bench;
mod checksum;
mod counters;
mod downlink;
mod fib;
mod flows;
mod maps;
mod parse;
mod pass;
mod pfcp;
mod uplink;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // The verifier rejects any program that could reach a panic, so this is never executed.
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
