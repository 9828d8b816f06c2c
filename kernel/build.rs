fn main() {
    let dir = std::env::var("CARGO_MANIFEST_DIR").unwrap();
    println!("cargo:rustc-link-arg-bins=-T{dir}/linker.ld");
    println!("cargo:rustc-link-arg-bins=--gc-sections");
    // defmt's interned strings (an INFO section the host decoder reads).
    println!("cargo:rustc-link-arg-bins=-Tdefmt.x");
    println!("cargo:rerun-if-changed={dir}/linker.ld");
    println!("cargo:rerun-if-changed={dir}/../images/configs/default.conf");
    // The commit the image is built from, for `sluice_build_info`.
    let git = std::process::Command::new("git")
        .args(["-C", &dir, "rev-parse", "--short=12", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=SLUICE_GIT={git}");
    println!("cargo:rerun-if-changed={dir}/../.git/HEAD");
    println!("cargo:rerun-if-changed={dir}/../.git/refs/heads");
}
