//! Builds the eBPF crate for the BPF target and leaves the object in OUT_DIR, where
//! `src/datapath` embeds it with `include_bytes_aligned!`.

fn main() -> anyhow::Result<()> {
    // Read at run time, not baked in with env!: a build script binary shared through one
    // target directory by several checkouts must build the checkout that runs it.
    let manifest_dir = std::env::var("CARGO_MANIFEST_DIR")?;
    let ebpf_dir = format!("{manifest_dir}/../ebpf");
    let ebpf = aya_build::Package {
        name: "mecgw-ebpf",
        root_dir: &ebpf_dir,
        ..Default::default()
    };
    aya_build::build_ebpf([ebpf], aya_build::Toolchain::Nightly)?;
    api_protos(&manifest_dir)
}

/// Generates the gRPC servers, clients and messages of the local APIs (`src/api`) from
/// `../proto/mecgw/v1`, plus a file descriptor set for the reflection service.
fn api_protos(manifest_dir: &str) -> anyhow::Result<()> {
    let root = format!("{manifest_dir}/../proto");
    // aya-build lists its own inputs; once any are listed cargo reruns only for those, so
    // the protos must be listed too.
    println!("cargo:rerun-if-changed={root}");
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
        .compile_protos(&files, &[root])?;
    Ok(())
}
