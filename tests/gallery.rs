//! The gallery end to end: crash safety (a child killed with SIGKILL at every write point),
//! catalog rebuild, a second instance, write errors, hostile names and hostile files, import
//! of other tools' PNGs, and the CLI.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use atelier::diffusion::tiny::TinyKind;
use atelier::gallery::metadata::{encode_png, parse_a1111, read_embedded, IPTC_AI_SOURCE};
use atelier::gallery::{Gallery, GalleryError, ImageMeta, Query};
use common::{atelier, atelier_cmd, output_text as text, tiny_model};

fn generate_args<'a>(model: &'a str, prompt: &'a str, seed: &'a str) -> Vec<&'a str> {
    vec![
        "generate", "--model", model, "--prompt", prompt, "--steps", "2", "--width", "64",
        "--height", "64", "--seed", seed,
    ]
}

/// Every file under `dir` (recursively), relative, sorted.
fn files_under(dir: &Path) -> Vec<String> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
        for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(root, &p, out);
            } else {
                out.push(p.strip_prefix(root).unwrap().to_string_lossy().into_owned());
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

/// Rows and image files agree, every file is complete and carries its settings.
fn assert_consistent(home: &Path) -> Gallery {
    let g = Gallery::open(home).expect("reopen");
    let rows = g.catalog().all_files().unwrap();
    let mut row_files: Vec<String> = rows.iter().map(|(_, f, _)| f.clone()).collect();
    row_files.sort();
    let mut disk: Vec<String> = files_under(&home.join("images"))
        .into_iter()
        .map(|f| format!("images/{f}"))
        .collect();
    disk.sort();
    assert_eq!(row_files, disk, "catalog rows and image files differ");
    for f in &disk {
        let bytes = std::fs::read(home.join(f)).unwrap();
        assert!(!bytes.is_empty(), "{f} is empty");
        atelier::imageio::load_image_bytes(&bytes, std::path::Path::new("bytes"))
            .unwrap_or_else(|e| panic!("{f} is not whole: {e}"));
        let meta = read_embedded(&bytes).meta().expect("embedded settings");
        assert!(!meta.prompt.is_empty());
    }
    g
}

/// Runs `generate` with a crash point, waits until the child reaches it, kills it with
/// SIGKILL, and returns the stderr seen.
fn kill_at(point: &str, home: &Path, model: &str, prompt: &str) -> String {
    let mut child = atelier_cmd(&generate_args(model, prompt, "3"), home)
        .env("ATELIER_CRASH_POINT", point)
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let mut seen = String::new();
    let mut reached = false;
    for line in BufReader::new(stderr).lines() {
        let line = line.unwrap();
        seen.push_str(&line);
        seen.push('\n');
        if line.contains(&format!("ATELIER_CRASH_POINT {point}")) {
            reached = true;
            break;
        }
    }
    assert!(reached, "child never reached {point}: {seen}");
    child.kill().unwrap(); // SIGKILL on Unix
    let status = child.wait().unwrap();
    assert!(!status.success());
    seen
}

#[test]
fn a_kill_at_any_write_point_loses_nothing_that_was_finished() {
    let model = tiny_model(TinyKind::Sd15);
    let model = model.to_str().unwrap();
    let home = tempfile::tempdir().unwrap();
    let home = home.path();
    // One picture finished before the crashes.
    let o = atelier(&generate_args(model, "the first picture", "1"), home);
    assert!(o.status.success(), "{}", text(&o));

    for (i, point) in [
        "after-encode",
        "mid-file",
        "between-file-and-row",
        "mid-commit",
    ]
    .into_iter()
    .enumerate()
    {
        let prompt = format!("crash at {point}");
        kill_at(point, home, model, &prompt);
        if point == "mid-file" {
            // The half-written file is hidden under a temp name until reopening removes it.
            let temps: Vec<String> = files_under(&home.join("images"))
                .into_iter()
                .filter(|f| f.contains(".tmp-"))
                .collect();
            assert_eq!(temps.len(), 1, "expected one half-written temp file");
        }
        let g = assert_consistent(home);
        let found = g
            .catalog()
            .count(&Query {
                text: Some(prompt.clone()),
                ..Default::default()
            })
            .unwrap();
        match point {
            // Nothing durable yet: the picture is gone, nothing half-made is visible.
            "after-encode" | "mid-file" => assert_eq!(found, 0, "{point}"),
            // The file was durable: adopted back from its embedded settings.
            "between-file-and-row" => {
                assert_eq!(found, 1, "{point}");
                assert!(g.report.adopted >= 1);
            }
            // SQLite rolled the row back; the durable file is adopted like above.
            _ => assert_eq!(found, 1, "{point}"),
        }
        assert_eq!(
            g.report.temp_removed,
            usize::from(point == "mid-file"),
            "{point}"
        );
        let all = g.catalog().count(&Query::default()).unwrap();
        let expected_total = 1 + match i {
            0 | 1 => 0,
            2 => 1,
            _ => 2,
        };
        assert_eq!(all, expected_total, "after {point}");
        drop(g);
    }
    // The first picture kept all its settings through every crash.
    let g = Gallery::open(home).unwrap();
    let ids = g
        .catalog()
        .ids(
            &Query {
                text: Some("first".into()),
                ..Default::default()
            },
            0,
            5,
        )
        .unwrap();
    let r = g.get(ids[0]).unwrap();
    assert_eq!(r.meta.seed, Some(1));
    assert_eq!(r.meta.steps, Some(2));
}

fn saved_meta(prompt: &str, seed: u64) -> ImageMeta {
    ImageMeta {
        prompt: prompt.into(),
        seed: Some(seed),
        steps: Some(20),
        sampler: Some("Euler a".into()),
        guidance: Some(5.0),
        model_name: Some("m".into()),
        ..Default::default()
    }
}

fn test_image(seed: u8) -> image::RgbImage {
    image::RgbImage::from_fn(40, 24, |x, y| {
        image::Rgb([x as u8 * 6, y as u8 * 10, seed.wrapping_mul(37)])
    })
}

#[test]
fn a_corrupt_or_missing_catalog_is_rebuilt_from_the_images() {
    let home = tempfile::tempdir().unwrap();
    let home = home.path();
    let mut uids = Vec::new();
    {
        let mut g = Gallery::open(home).unwrap();
        for i in 0..5u8 {
            let r = g
                .save_image(
                    &test_image(i),
                    saved_meta(&format!("picture {i}"), i as u64),
                )
                .unwrap();
            uids.push(r.meta.uid);
        }
        let r = g.catalog().by_uid(&uids[4]).unwrap().unwrap();
        g.trash(&[r.id]).unwrap();
        let first = g.catalog().by_uid(&uids[0]).unwrap().unwrap();
        let pixels = g.load(&first).unwrap();
        g.set_tags(first.id, &["kept".to_string()]).unwrap();
        g.set_rating(first.id, 4).unwrap();
        g.set_favourite(first.id, true).unwrap();
        g.set_adjustments(
            first.id,
            Some(r#"{"version":1,"ops":[{"op":"exposure","ev":0.5}]}"#),
        )
        .unwrap();
        assert_eq!(g.load(&first).unwrap(), pixels, "pixels untouched");
    }
    // Garbage over the database.
    std::fs::write(
        home.join("catalog.db"),
        b"this is not a database at all, sorry",
    )
    .unwrap();
    let _ = std::fs::remove_file(home.join("catalog.db-wal"));
    let _ = std::fs::remove_file(home.join("catalog.db-shm"));
    let g = Gallery::open(home).unwrap();
    assert!(g.report.rebuilt);
    assert!(
        g.report.messages.iter().any(|m| m.contains("rebuilt")),
        "{:?}",
        g.report.messages
    );
    assert_eq!(g.catalog().count(&Query::default()).unwrap(), 4);
    assert_eq!(
        g.catalog()
            .count(&Query {
                trash: true,
                ..Default::default()
            })
            .unwrap(),
        1
    );
    for (i, uid) in uids.iter().enumerate() {
        let r = g
            .catalog()
            .by_uid(uid)
            .unwrap()
            .expect("same identity after rebuild");
        assert_eq!(r.meta.prompt, format!("picture {i}"));
        assert_eq!(r.meta.seed, Some(i as u64));
        assert_eq!(r.meta.sampler.as_deref(), Some("Euler a"));
    }
    // Adjustments and tags set after saving survive too (they are rewritten into the file).
    assert!(g.catalog().by_uid(&uids[0]).unwrap().unwrap().meta.tags == vec!["kept".to_string()]);
    assert!(g
        .catalog()
        .by_uid(&uids[0])
        .unwrap()
        .unwrap()
        .meta
        .adjustments
        .is_some());
    // The damaged file was kept for inspection.
    assert!(std::fs::read_dir(home).unwrap().flatten().any(|e| e
        .file_name()
        .to_string_lossy()
        .starts_with("catalog.db.damaged-")));
    drop(g);
    // A deleted catalog comes back the same way.
    std::fs::remove_file(home.join("catalog.db")).unwrap();
    let g = Gallery::open(home).unwrap();
    assert_eq!(g.catalog().count(&Query::default()).unwrap(), 4);
}

#[test]
fn a_second_instance_opens_read_only_and_writes_nothing() {
    let home = tempfile::tempdir().unwrap();
    let home = home.path();
    let mut first = Gallery::open(home).unwrap();
    first
        .save_image(&test_image(1), saved_meta("shared", 1))
        .unwrap();
    // Another handle (same process, separate open file) behaves like another process.
    let mut second = Gallery::open(home).unwrap();
    assert!(second.is_read_only());
    assert!(second.report.messages[0].contains("read-only"));
    assert_eq!(second.catalog().count(&Query::default()).unwrap(), 1);
    assert!(matches!(
        second.save_image(&test_image(2), saved_meta("x", 2)),
        Err(GalleryError::ReadOnly)
    ));
    // Another process: listing works with a message, changing is refused clearly.
    let o = atelier(&["gallery", "list"], home);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains("read-only") && text(&o).contains("shared"),
        "{}",
        text(&o)
    );
    let o = atelier(&["gallery", "rate", "3", "1"], home);
    assert!(!o.status.success());
    assert!(
        text(&o).contains("in use by another Atelier"),
        "{}",
        text(&o)
    );
    // A generation while the gallery is busy still keeps its picture, adopted later.
    let model = tiny_model(TinyKind::Sd15);
    let mut c = atelier_cmd(
        &generate_args(model.to_str().unwrap(), "made while busy", "4"),
        home,
    );
    let o = c.output().unwrap();
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("gallery busy"), "{}", text(&o));
    drop(second);
    first
        .save_image(&test_image(3), saved_meta("after", 3))
        .unwrap();
    drop(first);
    let g = assert_consistent(home);
    assert_eq!(g.catalog().count(&Query::default()).unwrap(), 3);
}

#[test]
fn write_failures_are_clear_errors_and_leave_no_partial_files() {
    let home = tempfile::tempdir().unwrap();
    let home = home.path();
    let mut g = Gallery::open(home).unwrap();
    g.save_image(&test_image(1), saved_meta("kept", 1)).unwrap();
    // An unwritable destination: "images" replaced by a file (works even as root).
    let images = home.join("images");
    let moved = home.join("images-moved");
    std::fs::rename(&images, &moved).unwrap();
    std::fs::write(&images, b"not a folder").unwrap();
    let img = test_image(2);
    let err = g.save_image(&img, saved_meta("lost?", 2)).unwrap_err();
    assert!(matches!(err, GalleryError::Io { .. }), "{err:?}");
    assert!(err.to_string().contains("images"), "{err}");
    // The picture is still in memory (the caller's `img`) and nothing was recorded.
    assert_eq!(img.width(), 40);
    assert_eq!(g.catalog().count(&Query::default()).unwrap(), 1);
    drop(g);
    std::fs::remove_file(&images).unwrap();
    std::fs::rename(&moved, &images).unwrap();
    assert_consistent(home);

    // A write that runs out of space half way (a file-size limit stands in for a full disk):
    // the CLI fails with a clear message and the gallery stays consistent.
    let model = tiny_model(TinyKind::Sd15);
    let mut args = generate_args(model.to_str().unwrap(), "too big to write", "5");
    args[8] = "256";
    args[10] = "256";
    let args = args.join("' '");
    // 120 KiB: room for the catalog and its log, not for a 256x256 noisy PNG (~180 KB).
    let script = format!(
        "trap '' XFSZ; ulimit -f 120; exec '{}' '{args}'",
        env!("CARGO_BIN_EXE_atelier")
    );
    let o = Command::new("sh")
        .arg("-c")
        .arg(&script)
        .env("ATELIER_HOME", home)
        .output()
        .unwrap();
    assert!(!o.status.success(), "{}", text(&o));
    let t = text(&o);
    assert!(t.contains("error:") && t.contains("images"), "{t}");
    assert!(!t.contains("panicked"), "{t}");
    let g = assert_consistent(home);
    assert_eq!(g.catalog().count(&Query::default()).unwrap(), 1);
}

#[test]
fn hostile_export_names_stay_inside_the_folder_and_never_overwrite() {
    let home = tempfile::tempdir().unwrap();
    let home = home.path();
    let hostile = [
        "../../x",
        "C:\\x",
        "CON",
        "nul.png",
        "a\u{0}b",
        "evil\u{202E}gnp.exe",
        &"😀".repeat(300),
        "/etc/passwd",
        "..",
    ];
    {
        let mut g = Gallery::open(home).unwrap();
        for (i, p) in hostile.iter().enumerate() {
            g.save_image(&test_image(i as u8), saved_meta(p, i as u64))
                .unwrap();
        }
    }
    let out = tempfile::tempdir().unwrap();
    let out_dir = out.path().join("export");
    for round in 0..2 {
        let o = atelier(
            &[
                "gallery",
                "export",
                "--format",
                "png",
                "--name-pattern",
                "{prompt}",
                "--out",
                out_dir.to_str().unwrap(),
            ],
            home,
        );
        assert!(o.status.success(), "{}", text(&o));
        // Everything landed directly inside the folder; the second round added new files.
        let inside = files_under(&out_dir);
        assert_eq!(inside.len(), hostile.len() * (round + 1), "{inside:?}");
        for f in &inside {
            assert!(!f.contains('/'), "{f} is not directly inside");
            assert!(f.len() <= 255);
        }
    }
    // Nothing escaped next to the export folder.
    assert_eq!(files_under(out.path()).len(), hostile.len() * 2);
}

/// A valid small PNG with a zTXt chunk that inflates to `inflated` bytes.
fn ztxt_bomb(inflated: usize) -> Vec<u8> {
    let mut data = b"Comment\0\0".to_vec();
    data.extend_from_slice(&common::zlib_bomb(inflated));
    common::png_with_chunk(b"zTXt", &data)
}

#[test]
fn hostile_files_get_clear_errors_with_bounded_memory() {
    let home = tempfile::tempdir().unwrap();
    let home = home.path();
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, bytes: &[u8]| -> PathBuf {
        let p = dir.path().join(name);
        std::fs::write(&p, bytes).unwrap();
        p
    };
    let huge = write("huge.png", &common::png_claiming(100_000, 100_000));
    let tiny_jpeg = write("four.jpg", &[0xFF, 0xD8, 0xFF, 0xE0]);
    let good = encode_png(&test_image(1), &[]).unwrap();
    let truncated = write("truncated.png", &good[..good.len() / 2]);
    let empty = write("empty.png", b"");
    let bomb = write("bomb.png", &ztxt_bomb(64 << 20));
    let mut g = Gallery::open(home).unwrap();
    for bad in [&huge, &tiny_jpeg, &truncated, &empty] {
        let err = g.import_file(bad).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains(bad.file_name().unwrap().to_str().unwrap()),
            "{msg}"
        );
    }
    // The bomb's pixels are fine: imported, the oversized text refused.
    let r = g.import_file(&bomb).unwrap();
    assert!(r.meta.extra.values().all(|v| v.len() < 1 << 20));
    let embedded = read_embedded(&std::fs::read(&bomb).unwrap());
    assert_eq!(embedded.unreadable.len(), 1, "{:?}", embedded.unreadable);
    // Over 8192 px: scaled down on import.
    let wide = image::RgbImage::from_pixel(9000, 4, image::Rgb([10, 20, 30]));
    let wide_path = write("wide.png", &encode_png(&wide, &[]).unwrap());
    let r = g.import_file(&wide_path).unwrap();
    assert_eq!((r.meta.width, r.meta.height), (8192, 4));
    assert_eq!(
        r.meta.extra.get("Downscaled from").map(String::as_str),
        Some("9000x4")
    );
    // Through the CLI: one line per bad file, non-zero exit, no panic.
    drop(g);
    let o = atelier(
        &[
            "import",
            huge.to_str().unwrap(),
            tiny_jpeg.to_str().unwrap(),
        ],
        home,
    );
    assert!(!o.status.success());
    assert!(!text(&o).contains("panicked"), "{}", text(&o));
    assert!(
        text(&o).contains("2 of 2 file(s) could not be imported"),
        "{}",
        text(&o)
    );
}

#[test]
fn other_tools_pngs_import_with_their_settings() {
    let home = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let img = test_image(4);
    let a1111 = "portrait of a knight\nNegative prompt: lowres\nSteps: 30, Sampler: DPM++ 2M Karras, CFG scale: 6.5, Seed: 12345, Size: 40x24, Model hash: abcdef1234, Model: dreamshaper_8, Clip skip: 2, Version: v1.9.0";
    let comfy = r#"{"3":{"class_type":"KSampler","inputs":{"seed":99,"steps":12,"cfg":4.5,"sampler_name":"euler","denoise":1.0,"positive":["6",0],"negative":["7",0]}},"6":{"class_type":"CLIPTextEncode","inputs":{"text":"a comfy castle"}},"7":{"class_type":"CLIPTextEncode","inputs":{"text":"ugly"}}}"#;
    let invoke = r#"{"positive_prompt":"an invoked dragon","negative_prompt":"","seed":7,"steps":25,"cfg_scale":7.0,"scheduler":"euler","width":40,"height":24,"model":{"name":"sdxl"}}"#;
    let files = [
        ("a1111.png", vec![("parameters", a1111.to_string())]),
        (
            "comfy.png",
            vec![
                ("prompt", comfy.to_string()),
                ("workflow", "{}".to_string()),
            ],
        ),
        (
            "invoke.png",
            vec![("invokeai_metadata", invoke.to_string())],
        ),
        ("plain.png", vec![]),
    ];
    let mut paths = Vec::new();
    for (name, chunks) in &files {
        let chunks: Vec<(&str, String)> = chunks.iter().map(|(k, v)| (*k, v.clone())).collect();
        let p = dir.path().join(name);
        std::fs::write(&p, encode_png(&img, &chunks).unwrap()).unwrap();
        paths.push(p);
    }
    let mut g = Gallery::open(home.path()).unwrap();
    let r = g.import_file(&paths[0]).unwrap();
    assert_eq!(r.meta.prompt, "portrait of a knight");
    assert_eq!(r.meta.negative_prompt, "lowres");
    assert_eq!(r.meta.seed, Some(12345));
    assert_eq!(r.meta.guidance, Some(6.5));
    assert_eq!(r.meta.model_name.as_deref(), Some("dreamshaper_8"));
    assert_eq!(r.meta.clip_skip, Some(2));
    let r = g.import_file(&paths[1]).unwrap();
    assert_eq!(
        (r.meta.prompt.as_str(), r.meta.seed),
        ("a comfy castle", Some(99))
    );
    assert!(r.meta.extra.contains_key("png:workflow"), "raw graph kept");
    let r = g.import_file(&paths[2]).unwrap();
    assert_eq!(
        (r.meta.prompt.as_str(), r.meta.seed),
        ("an invoked dragon", Some(7))
    );
    let r = g.import_file(&paths[3]).unwrap();
    assert_eq!(r.meta.prompt, "");
    // The gallery copy carries A1111-readable settings and the AI marking.
    let r = g.get(1).unwrap();
    let bytes = std::fs::read(g.path_of(&r)).unwrap();
    let e = read_embedded(&bytes);
    let again = parse_a1111(e.get("parameters").unwrap());
    assert_eq!(again.prompt, "portrait of a knight");
    assert_eq!(again.seed, Some(12345));
    assert!(e.get("XML:com.adobe.xmp").unwrap().contains(IPTC_AI_SOURCE));
    // The original files were not touched.
    for (p, (_, chunks)) in paths.iter().zip(&files) {
        let chunks: Vec<(&str, String)> = chunks.iter().map(|(k, v)| (*k, v.clone())).collect();
        assert_eq!(
            std::fs::read(p).unwrap(),
            encode_png(&img, &chunks).unwrap()
        );
    }
}

#[test]
fn cli_generate_search_show_and_export_with_lineage_and_adjustments() {
    let model = tiny_model(TinyKind::Sd15);
    let model = model.to_str().unwrap();
    let home = tempfile::tempdir().unwrap();
    let home = home.path();
    let work = tempfile::tempdir().unwrap();
    let first = work.path().join("whale.png");
    let mut args = generate_args(model, "a blue whale", "9");
    args.extend(["--out", first.to_str().unwrap()]);
    let o = atelier(&args, home);
    assert!(o.status.success(), "{}", text(&o));
    let mut args = generate_args(model, "a whale at night", "10");
    args.extend(["--init-image", first.to_str().unwrap(), "--strength", "0.5"]);
    let o = atelier(&args, home);
    assert!(o.status.success(), "{}", text(&o));
    let o = atelier(
        &[
            "generate",
            "--model",
            model,
            "--prompt",
            "x",
            "--no-gallery",
        ],
        home,
    );
    assert!(!o.status.success());
    assert!(
        text(&o).contains("--no-gallery needs --out"),
        "{}",
        text(&o)
    );

    let o = atelier(&["gallery", "tag", "ocean, dark", "2"], home);
    assert!(o.status.success(), "{}", text(&o));
    let o = atelier(&["gallery", "search", "dark"], home);
    assert!(text(&o).contains("a whale at night"), "{}", text(&o));
    let o = atelier(&["gallery", "search", "night"], home);
    let t = text(&o);
    assert!(
        t.contains("a whale at night") && !t.contains("a blue whale"),
        "{t}"
    );
    let o = atelier(&["gallery", "show", "2"], home);
    let t = text(&o);
    assert!(t.contains("made from #1 (a blue whale) by img2img"), "{t}");
    assert!(t.contains("Denoising strength: 0.5"), "{t}");

    // An adjustment stack stored with the picture is applied on export.
    {
        let g = Gallery::open(home).unwrap();
        let stack = r#"{"version":1,"ops":[{"op":"exposure","ev":1.0}]}"#;
        atelier::postfx::Stack::from_json(stack).expect("valid stack");
        g.set_adjustments(1, Some(stack)).unwrap();
    }
    let out = work.path().join("out");
    let o = atelier(
        &[
            "gallery",
            "export",
            "--ids",
            "1",
            "--format",
            "jpeg",
            "--quality",
            "95",
            "--out",
            out.to_str().unwrap(),
            "--name-pattern",
            "{seed}-{prompt}",
        ],
        home,
    );
    assert!(o.status.success(), "{}", text(&o));
    let exported = out.join("9-a blue whale.jpg");
    let bytes = std::fs::read(&exported).unwrap();
    let meta = read_embedded(&bytes).meta().unwrap();
    assert_eq!(meta.prompt, "a blue whale");
    assert_eq!(meta.seed, Some(9));
    let original = common::open_image(&first).to_rgb8();
    let adjusted = atelier::imageio::load_image_bytes(&bytes, std::path::Path::new("bytes"))
        .unwrap()
        .to_rgb8();
    let mean = |i: &image::RgbImage| {
        i.pixels()
            .map(|p| p[0] as f64 + p[1] as f64 + p[2] as f64)
            .sum::<f64>()
            / i.len() as f64
    };
    assert!(
        mean(&adjusted) > mean(&original) + 5.0,
        "exposure +1 EV brightens"
    );
    // The original in the gallery is untouched.
    let g = Gallery::open(home).unwrap();
    let r = g.get(1).unwrap();
    assert_eq!(g.load(&r).unwrap(), original);
    // Stripped: no prompt anywhere in the file.
    let o = atelier(
        &[
            "gallery",
            "export",
            "--ids",
            "1",
            "--format",
            "png",
            "--strip-metadata",
            "--out",
            out.to_str().unwrap(),
            "--name-pattern",
            "private",
        ],
        home,
    );
    assert!(o.status.success(), "{}", text(&o));
    let bytes = std::fs::read(out.join("private.png")).unwrap();
    assert!(!String::from_utf8_lossy(&bytes).contains("whale"));
    let _ = std::io::stdout().flush();
}

/// A picture's control images are kept in `controls/`, named in its settings in the row and
/// the file, survive a reopen (and are not taken for pictures), and go when the trash is
/// emptied.
#[test]
fn control_images_are_kept_with_their_picture() {
    let home = tempfile::tempdir().unwrap();
    let home = home.path();
    let mut g = Gallery::open(home).unwrap();
    let control = std::sync::Arc::new(image::RgbImage::from_fn(16, 16, |x, _| {
        let v = if x == 8 { 255 } else { 0 };
        image::Rgb([v, v, v])
    }));
    let r = g
        .save_image_with_controls(
            &test_image(1),
            saved_meta("steered", 1),
            &[control.clone(), control],
        )
        .unwrap();
    assert_eq!(r.meta.control_images.len(), 2);
    let first = home.join(&r.meta.control_images[0]);
    let kept = atelier::imageio::load_image_file(&first)
        .unwrap()
        .to_luma8();
    assert_eq!((kept.get_pixel(8, 3)[0], kept.get_pixel(2, 3)[0]), (255, 0));
    let embedded = atelier::gallery::embedded_meta_of_file(&g.path_of(&r))
        .unwrap()
        .unwrap();
    assert_eq!(embedded.control_images, r.meta.control_images);
    drop(g);
    let mut g = Gallery::open(home).unwrap();
    assert_eq!(g.catalog().count(&Query::default()).unwrap(), 1);
    assert_eq!(
        g.get(r.id).unwrap().meta.control_images,
        r.meta.control_images
    );
    g.trash(&[r.id]).unwrap();
    assert!(first.exists(), "trash keeps them");
    g.empty_trash().unwrap();
    assert!(!first.exists());
}
