//! One build-time switch for the test suite: with `ATELIER_SKIP_GPU_TESTS=1` the tests that
//! need a GPU adapter are compiled as ignored (`cargo test` lists them as "ignored" with the
//! reason) instead of passing without having run.

fn main() {
    println!("cargo:rustc-check-cfg=cfg(skip_gpu_tests)");
    println!("cargo:rerun-if-env-changed=ATELIER_SKIP_GPU_TESTS");
    if std::env::var("ATELIER_SKIP_GPU_TESTS").is_ok_and(|v| v == "1") {
        println!("cargo:rustc-cfg=skip_gpu_tests");
    }
}
