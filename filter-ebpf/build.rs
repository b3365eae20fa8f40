use std::process::Command;

fn main() {
    // aya-build compiles this crate with bpf-linker; fail early with a useful hint if missing.
    println!("cargo:rerun-if-env-changed=PATH");
    if Command::new("bpf-linker")
        .arg("--version")
        .output()
        .is_err()
    {
        println!("cargo:warning=bpf-linker not found; run `cargo xtask setup` as root");
    }
}
