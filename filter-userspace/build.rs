//! Builds the XDP program with aya-build (nightly, bpf-linker) so that a plain `cargo build`
//! yields a `floodgate` binary with the object embedded.

use std::path::PathBuf;

fn main() -> anyhow::Result<()> {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?);
    let ebpf_dir = manifest.join("../filter-ebpf");
    let common_dir = manifest.join("../filter-common");
    println!("cargo:rerun-if-changed={}", common_dir.display());
    let root = ebpf_dir.to_string_lossy().into_owned();
    aya_build::build_ebpf(
        [aya_build::Package {
            name: "filter-ebpf",
            root_dir: &root,
            ..Default::default()
        }],
        aya_build::Toolchain::default(),
    )
}
