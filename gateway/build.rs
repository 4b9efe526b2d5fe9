//! Builds the eBPF crate for the BPF target and leaves the object in OUT_DIR, where
//! `src/datapath` embeds it with `include_bytes_aligned!`.

fn main() -> anyhow::Result<()> {
    let ebpf = aya_build::Package {
        name: "mecgw-ebpf",
        root_dir: concat!(env!("CARGO_MANIFEST_DIR"), "/../ebpf"),
        ..Default::default()
    };
    aya_build::build_ebpf([ebpf], aya_build::Toolchain::Nightly)
}
