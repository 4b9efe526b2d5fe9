//! Builds the eBPF crate for the BPF target and leaves the object in OUT_DIR, where
//! `src/datapath` embeds it with `include_bytes_aligned!`.

fn main() -> anyhow::Result<()> {
    let ebpf = aya_build::Package {
        name: "mecgw-ebpf",
        root_dir: concat!(env!("CARGO_MANIFEST_DIR"), "/../ebpf"),
        ..Default::default()
    };
    aya_build::build_ebpf([ebpf], aya_build::Toolchain::Nightly)?;
    api_protos()
}

/// Generates the gRPC servers, clients and messages of the local APIs (`src/api`) from
/// `../proto/mecgw/v1`, plus a file descriptor set for the reflection service.
fn api_protos() -> anyhow::Result<()> {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../proto");
    let files: Vec<String> = [
        "traffic_rules",
        "sessions",
        "services",
        "telemetry",
        "status",
    ]
    .iter()
    .map(|f| format!("{root}/mecgw/v1/{f}.proto"))
    .collect();
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    tonic_prost_build::configure()
        .file_descriptor_set_path(out.join("mecgw_v1_descriptor.bin"))
        .compile_protos(&files, &[root.to_string()])?;
    Ok(())
}
