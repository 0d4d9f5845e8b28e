//! Build-time facts: the compute backends compiled in (for `atelier --version`), and one switch
//! for the test suite: with `ATELIER_SKIP_GPU_TESTS=1` the tests that need a GPU adapter are
//! compiled as ignored (`cargo test` lists them as "ignored" with the reason) instead of
//! passing without having run.

fn main() {
    // `atelier --version` names the compute backends this build has.
    let mut features = vec!["cpu"];
    for (env, name) in [
        ("CARGO_FEATURE_CUDA", "cuda"),
        ("CARGO_FEATURE_METAL", "metal"),
    ] {
        if std::env::var_os(env).is_some() {
            features.push(name);
        }
    }
    println!(
        "cargo:rustc-env=ATELIER_BUILD_FEATURES={}",
        features.join(", ")
    );

    println!("cargo:rustc-check-cfg=cfg(skip_gpu_tests)");
    println!("cargo:rerun-if-env-changed=ATELIER_SKIP_GPU_TESTS");
    if std::env::var("ATELIER_SKIP_GPU_TESTS").is_ok_and(|v| v == "1") {
        println!("cargo:rustc-cfg=skip_gpu_tests");
    }
}
