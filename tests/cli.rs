//! The `atelier` binary end to end: generate, models, and one-line errors with a non-zero exit.

mod common;

use std::path::Path;
use std::process::{Command, Output};

use atelier::models::tiny::TinyKind;
use common::tiny_model;

fn atelier(args: &[&str], home: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_atelier"))
        .args(args)
        .env("ATELIER_HOME", home)
        .env("HF_HOME", home.join("hf"))
        .output()
        .expect("running atelier")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn generate_writes_a_png_and_is_reproducible() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tiny_model(TinyKind::Sd15);
    let out = |name: &str| tmp.path().join(name).to_string_lossy().into_owned();
    let m = model.to_string_lossy();
    let base = [
        "generate",
        "--model",
        &m,
        "--prompt",
        "a red cat",
        "--seed",
        "5",
        "--steps",
        "3",
        "--width",
        "64",
        "--height",
        "64",
        "--sampler",
        "euler-a",
    ];
    let a = atelier(&[&base[..], &["--out", &out("a.png")]].concat(), tmp.path());
    assert!(a.status.success(), "{}", stderr(&a));
    let b = atelier(&[&base[..], &["--out", &out("b.png")]].concat(), tmp.path());
    assert!(b.status.success(), "{}", stderr(&b));
    let ia = image::open(out("a.png")).unwrap().to_rgb8();
    let ib = image::open(out("b.png")).unwrap().to_rgb8();
    assert_eq!(ia.dimensions(), (64, 64));
    assert_eq!(ia.as_raw(), ib.as_raw());

    // Batch numbering and image-to-image from the file just written.
    let c = atelier(
        &[
            &base[..],
            &[
                "--batch",
                "2",
                "--init-image",
                &out("a.png"),
                "--strength",
                "0.5",
                "--out",
                &out("c.png"),
            ],
        ]
        .concat(),
        tmp.path(),
    );
    assert!(c.status.success(), "{}", stderr(&c));
    assert!(tmp.path().join("c-1.png").is_file() && tmp.path().join("c-2.png").is_file());
}

#[test]
fn bad_input_gives_one_clear_line_and_a_failure_code() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tiny_model(TinyKind::Sd15);
    let m = model.to_string_lossy().into_owned();
    let out = tmp.path().join("x.png").to_string_lossy().into_owned();
    let garbage = tmp.path().join("garbage.png");
    std::fs::write(&garbage, b"not an image at all").unwrap();
    let g = garbage.to_string_lossy().into_owned();
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec![
                "generate",
                "--model",
                "/no/such/model",
                "--prompt",
                "x",
                "--out",
                &out,
            ],
            "no such model folder",
        ),
        (
            vec![
                "generate", "--model", &m, "--prompt", "x", "--width", "65", "--out", &out,
            ],
            "multiple of 8",
        ),
        (
            vec![
                "generate",
                "--model",
                &m,
                "--prompt",
                "x",
                "--init-image",
                &g,
                "--out",
                &out,
            ],
            "garbage.png",
        ),
        (
            vec![
                "generate",
                "--model",
                &m,
                "--prompt",
                "x",
                "--sampler",
                "plms",
                "--out",
                &out,
            ],
            "plms",
        ),
        (
            vec![
                "generate",
                "--model",
                tmp.path().to_str().unwrap(),
                "--prompt",
                "x",
                "--out",
                &out,
            ],
            "model_index.json",
        ),
    ];
    for (args, expected) in cases {
        let o = atelier(&args, tmp.path());
        let err = stderr(&o);
        assert!(!o.status.success(), "{args:?} succeeded");
        assert!(err.contains(expected), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{args:?}: {err}");
    }
    assert!(!tmp.path().join("x.png").exists());
}

#[test]
fn models_lists_given_folders_user_folder_and_hf_cache_with_family() {
    let tmp = tempfile::tempdir().unwrap();
    // The user's models folder holds an SDXL model, the HF cache an SD2 one.
    let user = tmp.path().join("models").join("my-xl");
    common::copy_dir(&tiny_model(TinyKind::Sdxl), &user);
    let snap = tmp
        .path()
        .join("hf/hub/models--someone--tiny-sd2/snapshots/abc123");
    common::copy_dir(&tiny_model(TinyKind::Sd2V), &snap);
    std::fs::create_dir_all(tmp.path().join("hf/hub/models--someone--tiny-sd2/refs")).unwrap();
    std::fs::write(
        tmp.path()
            .join("hf/hub/models--someone--tiny-sd2/refs/main"),
        "abc123",
    )
    .unwrap();
    let given = tiny_model(TinyKind::Sd15);
    let o = atelier(&["models", given.to_str().unwrap()], tmp.path());
    assert!(o.status.success(), "{}", stderr(&o));
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(
        text.lines().any(|l| l.starts_with("sd15\tSD 1.x")),
        "{text}"
    );
    assert!(text.lines().any(|l| l.starts_with("my-xl\tSDXL")), "{text}");
    assert!(
        text.lines()
            .any(|l| l.starts_with("someone/tiny-sd2\tSD 2.x v-pred")),
        "{text}"
    );
}
