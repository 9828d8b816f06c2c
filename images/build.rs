fn main() {
    // The commit the tool is built from, for `sluice --version` (as the
    // image's `sluice_build_info` says its own).
    let dir = std::env::var("CARGO_MANIFEST_DIR").unwrap();
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
