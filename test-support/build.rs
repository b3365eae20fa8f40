//! Builds the bench object (filter-ebpf's `floodgate-bench` binary, behind its `bench`
//! feature): the product's build script builds only the product object.

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
            features: &["bench"],
            ..Default::default()
        }],
        aya_build::Toolchain::default(),
    )
}
