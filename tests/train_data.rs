//! Training data: captioned-image folders (`train::data`) and the emoji recipe (`train::emoji`),
//! on small data written into temp folders. One test also runs the recipe on the real npm data
//! when `scripts/fetch-emoji-data.sh` has fetched it.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use atelier::train::data::{open_dataset, DataError, DataOptions, Dataset};
use atelier::train::emoji::{is_eval, prepare_emoji, EmojiError, EmojiOptions};
use candle_core::Device;
use image::{Rgb, RgbImage, Rgba, RgbaImage};
use serde_json::Value;

fn write_rgba(path: &Path, w: u32, h: u32, px: [u8; 4]) {
    RgbaImage::from_pixel(w, h, Rgba(px))
        .save(path)
        .expect("write png");
}

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).expect("write file");
}

fn opts(resolution: u32) -> DataOptions {
    DataOptions {
        resolution,
        ..DataOptions::default()
    }
}

fn open(dir: &Path, resolution: u32) -> Dataset {
    open_dataset(dir, &opts(resolution)).expect("dataset opens")
}

fn item_by_name<'a>(data: &'a Dataset, name: &str) -> &'a atelier::train::data::Item {
    data.items
        .iter()
        .find(|i| i.path.file_name().is_some_and(|n| n == name))
        .unwrap_or_else(|| panic!("{name} not loaded: {:?}", data.skipped))
}

#[test]
fn default_options_are_64_on_white() {
    let o = DataOptions::default();
    assert_eq!((o.resolution, o.background), (64, [255, 255, 255]));
}

#[test]
fn captions_jsonl_accepts_key_aliases_and_keeps_extra_keys() {
    let dir = tempfile::tempdir().expect("tempdir");
    for name in ["a.png", "b.png", "c.png"] {
        write_rgba(&dir.path().join(name), 4, 4, [10, 20, 30, 255]);
    }
    write(
        &dir.path().join("captions.jsonl"),
        concat!(
            r#"{"file": "a.png", "caption": "a red cat", "category": "animals", "id": 7}"#,
            "\n\n",
            r#"{"file_name": "b.png", "text": "a blue dog"}"#,
            "\n",
            r#"{"image": "c.png", "caption": ""}"#,
            "\n",
        ),
    );
    let data = open(dir.path(), 4);
    assert_eq!(data.len(), 3, "skipped: {:?}", data.skipped);
    assert!(data.skipped.is_empty(), "{:?}", data.skipped);
    let a = item_by_name(&data, "a.png");
    assert_eq!(a.caption, "a red cat");
    assert_eq!(a.extra.get("category"), Some(&Value::from("animals")));
    assert_eq!(a.extra.get("id"), Some(&Value::from(7)));
    assert!(!a.extra.contains_key("file") && !a.extra.contains_key("caption"));
    assert_eq!(item_by_name(&data, "b.png").caption, "a blue dog");
    assert_eq!(item_by_name(&data, "c.png").caption, "");
    assert_eq!(data.empty_captions(), 1);
    // Order follows the file.
    assert_eq!(data.captions(&[0, 1, 2]), ["a red cat", "a blue dog", ""]);
}

#[test]
fn hf_imagefolder_metadata_jsonl_is_read() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_rgba(&dir.path().join("x.png"), 4, 4, [0, 0, 0, 255]);
    // Written by a Windows editor: byte-order mark and CRLF.
    write(
        &dir.path().join("metadata.jsonl"),
        "\u{feff}{\"file_name\": \"x.png\", \"text\": \"black square\"}\r\n",
    );
    let data = open(dir.path(), 4);
    assert_eq!(data.captions(&[0]), ["black square"]);
}

#[test]
fn per_image_txt_captions() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    write_rgba(&d.join("a.png"), 4, 4, [255, 0, 0, 255]);
    write(&d.join("a.txt"), "  red square\n");
    RgbImage::from_pixel(4, 4, Rgb([0, 255, 0]))
        .save(d.join("b.jpg"))
        .expect("write jpg");
    write(&d.join("b.txt"), "\u{feff}green square\r\n");
    RgbImage::from_pixel(4, 4, Rgb([0, 0, 255]))
        .save(d.join("e.JPEG"))
        .expect("write jpeg");
    write(&d.join("e.txt"), "");
    write_rgba(&d.join("c.png"), 4, 4, [0, 0, 255, 255]); // no caption file
    write(&d.join("d.webp"), "not decoded in this build");
    write(&d.join("d.txt"), "a webp");
    write(&d.join("notes.txt"), "not a caption of anything");

    let data = open(d, 4);
    assert_eq!(data.len(), 3, "skipped: {:?}", data.skipped);
    assert_eq!(item_by_name(&data, "a.png").caption, "red square");
    assert_eq!(item_by_name(&data, "b.jpg").caption, "green square");
    assert_eq!(item_by_name(&data, "e.JPEG").caption, "");
    assert_eq!(data.empty_captions(), 1);
    assert!(data.items.iter().all(|i| i.extra.is_empty()));
    let px = item_by_name(&data, "b.jpg").image.get_pixel(1, 1).0;
    assert!(
        px[1] > 200 && px[0] < 60 && px[2] < 60,
        "jpeg decoded: {px:?}"
    );

    let reasons: Vec<(String, String)> = data
        .skipped
        .iter()
        .map(|s| (file_name(&s.path), s.reason.clone()))
        .collect();
    assert_eq!(reasons.len(), 2, "{reasons:?}");
    assert!(reasons
        .iter()
        .any(|(f, r)| f == "c.png" && r.contains("no caption")));
    assert!(reasons
        .iter()
        .any(|(f, r)| f == "d.webp" && r.contains("not supported")));
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// A 3x1 RGBA strip: transparent red, opaque blue, half-transparent green (alpha 128).
fn alpha_strip(dir: &Path) {
    let mut img = RgbaImage::new(3, 1);
    img.put_pixel(0, 0, Rgba([255, 0, 0, 0]));
    img.put_pixel(1, 0, Rgba([0, 0, 255, 255]));
    img.put_pixel(2, 0, Rgba([0, 200, 0, 128]));
    img.save(dir.join("strip.png")).expect("write png");
    write(&dir.join("strip.txt"), "strip");
}

#[test]
fn rgba_is_composited_on_white_by_default() {
    let dir = tempfile::tempdir().expect("tempdir");
    alpha_strip(dir.path());
    let data = open(dir.path(), 3);
    let img = &data.items[0].image;
    // Padding rows (the strip is 3x1) are white too.
    assert_eq!(img.get_pixel(0, 0), &Rgb([255, 255, 255]));
    // Row 1 is the strip: (c*a + 255*(255-a)) / 255, rounded.
    assert_eq!(img.get_pixel(0, 1), &Rgb([255, 255, 255]));
    assert_eq!(img.get_pixel(1, 1), &Rgb([0, 0, 255]));
    // green: (200*128 + 255*127)/255 = 227.4 -> 227; others 255*127/255 = 127.
    assert_eq!(img.get_pixel(2, 1), &Rgb([127, 227, 127]));
}

#[test]
fn rgba_is_composited_on_a_custom_background() {
    let dir = tempfile::tempdir().expect("tempdir");
    alpha_strip(dir.path());
    let o = DataOptions {
        resolution: 3,
        background: [20, 40, 60],
    };
    let data = open_dataset(dir.path(), &o).expect("opens");
    let img = &data.items[0].image;
    assert_eq!(img.get_pixel(0, 0), &Rgb([20, 40, 60]));
    assert_eq!(img.get_pixel(0, 1), &Rgb([20, 40, 60]));
    assert_eq!(img.get_pixel(1, 1), &Rgb([0, 0, 255]));
    // (0*128 + 20*127)/255 = 9.96 -> 10; (200*128 + 40*127)/255 = 120.3 -> 120;
    // (60*127)/255 = 29.88 -> 30.
    assert_eq!(img.get_pixel(2, 1), &Rgb([10, 120, 30]));
}

#[test]
fn corrupt_images_missing_files_and_bad_lines_are_skipped_with_reasons() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    write_rgba(&d.join("good.png"), 4, 4, [1, 2, 3, 255]);
    write(&d.join("bad.png"), "\u{89}PNG but not really");
    write(
        &d.join("captions.jsonl"),
        concat!(
            r#"{"file": "good.png", "caption": "good"}"#,
            "\n",
            r#"{"file": "bad.png", "caption": "corrupt"}"#,
            "\n",
            r#"{"file": "missing.png", "caption": "gone"}"#,
            "\n",
            r#"{"file": "good.png", "caption": "#,
            "\n",
            r#"{"caption": "no file key"}"#,
            "\n",
        ),
    );
    let data = open(d, 4);
    assert_eq!(data.captions(&[0]), ["good"]);
    assert_eq!(data.len(), 1);
    let find = |needle: &str| {
        data.skipped
            .iter()
            .find(|s| file_name(&s.path) == needle)
            .unwrap_or_else(|| panic!("{needle} not skipped: {:?}", data.skipped))
    };
    assert!(find("bad.png").reason.contains("not a readable image"));
    let missing = find("missing.png");
    assert!(missing.reason.contains("not found") && missing.reason.contains("line 3"));
    let lines: Vec<&str> = data
        .skipped
        .iter()
        .filter(|s| file_name(&s.path) == "captions.jsonl")
        .map(|s| s.reason.as_str())
        .collect();
    assert_eq!(lines.len(), 2, "{:?}", data.skipped);
    assert!(lines[0].contains("line 4") && lines[0].contains("malformed JSON"));
    assert!(lines[1].contains("line 5") && lines[1].contains("no image key"));
    assert_eq!(data.skipped.len(), 4);
}

#[test]
fn missing_and_empty_folders_are_clear_errors() {
    let dir = tempfile::tempdir().expect("tempdir");
    let gone = dir.path().join("nope");
    let err = open_dataset(&gone, &DataOptions::default()).expect_err("missing");
    assert!(matches!(err, DataError::Missing { .. }), "{err:?}");
    assert!(err.to_string().contains("nope"), "{err}");

    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty).expect("mkdir");
    let err = open_dataset(&empty, &DataOptions::default()).expect_err("empty");
    assert!(matches!(err, DataError::Empty { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.contains("empty") && msg.contains(&*empty.to_string_lossy()),
        "{msg}"
    );

    // Images without captions: still empty, and the message says why.
    write_rgba(&empty.join("a.png"), 2, 2, [0, 0, 0, 255]);
    let err = open_dataset(&empty, &DataOptions::default()).expect_err("uncaptioned");
    assert!(
        matches!(err, DataError::Empty { skipped: 1, .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("no caption"), "{err}");

    let file = dir.path().join("file.png");
    write_rgba(&file, 2, 2, [0, 0, 0, 255]);
    let err = open_dataset(&file, &DataOptions::default()).expect_err("not a folder");
    assert!(matches!(err, DataError::Unreadable { .. }), "{err:?}");
}

#[test]
fn a_folder_of_only_bad_images_is_a_clear_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    write(&d.join("one.png"), "garbage");
    write(&d.join("one.txt"), "caption one");
    write(&d.join("two.jpg"), "more garbage");
    write(&d.join("two.txt"), "caption two");
    let err = open_dataset(d, &DataOptions::default()).expect_err("all bad");
    match &err {
        DataError::AllUnreadable { path, count, first } => {
            assert_eq!(path, d);
            assert_eq!(*count, 2);
            assert!(first.contains("one.png"), "{first}");
        }
        other => panic!("expected AllUnreadable, got {other:?}"),
    }
    assert!(err.to_string().contains(&*d.to_string_lossy()));

    // A captions file whose every line points nowhere reads the same way as the folder empty.
    let dir2 = tempfile::tempdir().expect("tempdir");
    write(
        &dir2.path().join("captions.jsonl"),
        "{\"file\": \"x.png\", \"caption\": \"x\"}\n",
    );
    let err = open_dataset(dir2.path(), &DataOptions::default()).expect_err("all missing");
    assert!(
        matches!(err, DataError::Empty { skipped: 1, .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("not found"), "{err}");
}

#[test]
fn non_square_images_are_padded_with_the_background() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    // 16x8 red (wide) and 6x12 blue (tall), fitted into 8x8.
    write_rgba(&d.join("wide.png"), 16, 8, [255, 0, 0, 255]);
    write(&d.join("wide.txt"), "wide");
    write_rgba(&d.join("tall.png"), 6, 12, [0, 0, 255, 255]);
    write(&d.join("tall.txt"), "tall");
    let o = DataOptions {
        resolution: 8,
        background: [0, 255, 0],
    };
    let data = open_dataset(d, &o).expect("opens");
    let bg = Rgb([0, 255, 0]);

    let wide = &item_by_name(&data, "wide.png").image;
    assert_eq!(wide.dimensions(), (8, 8));
    for x in 0..8 {
        for y in [0, 1, 6, 7] {
            assert_eq!(wide.get_pixel(x, y), &bg, "wide pad at {x},{y}");
        }
        for y in 2..6 {
            assert_eq!(
                wide.get_pixel(x, y),
                &Rgb([255, 0, 0]),
                "wide body at {x},{y}"
            );
        }
    }

    let tall = &item_by_name(&data, "tall.png").image;
    assert_eq!(tall.dimensions(), (8, 8));
    // 6x12 -> 4x8, centred: columns 0,1 and 6,7 are padding.
    for y in 0..8 {
        for x in [0, 1, 6, 7] {
            assert_eq!(tall.get_pixel(x, y), &bg, "tall pad at {x},{y}");
        }
        for x in 2..6 {
            assert_eq!(
                tall.get_pixel(x, y),
                &Rgb([0, 0, 255]),
                "tall body at {x},{y}"
            );
        }
    }
}

#[test]
fn larger_images_are_resized_to_the_resolution() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_rgba(&dir.path().join("big.png"), 40, 40, [30, 60, 90, 255]);
    write(&dir.path().join("big.txt"), "big");
    let data = open(dir.path(), 16);
    let img = &data.items[0].image;
    assert_eq!(img.dimensions(), (16, 16));
    assert!(img.pixels().all(|p| p == &Rgb([30, 60, 90])));
}

#[test]
fn batch_tensor_is_bchw_in_minus_one_to_one() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    write_rgba(&d.join("a_white.png"), 4, 4, [255, 255, 255, 255]);
    write(&d.join("a_white.txt"), "white");
    write_rgba(&d.join("b_red.png"), 4, 4, [255, 0, 0, 255]);
    write(&d.join("b_red.txt"), "red");
    let mut img = RgbaImage::from_pixel(4, 4, Rgba([0, 0, 0, 255]));
    img.put_pixel(3, 1, Rgba([51, 102, 204, 255]));
    img.save(d.join("c_black.png")).expect("write png");
    write(&d.join("c_black.txt"), "black");
    let data = open(d, 4);
    assert_eq!(data.captions(&[2, 0]), ["black", "white"]);

    let t = data.batch_tensor(&[2, 1, 0], &Device::Cpu).expect("batch");
    assert_eq!(t.dims(), &[3, 3, 4, 4]);
    assert_eq!(t.dtype(), candle_core::DType::F32);
    let v: Vec<Vec<Vec<Vec<f32>>>> = (0..3)
        .map(|b| t.get(b).and_then(|s| s.to_vec3::<f32>()).expect("sample"))
        .collect();
    let min = t
        .flatten_all()
        .and_then(|f| f.min(0))
        .and_then(|m| m.to_scalar::<f32>());
    let max = t
        .flatten_all()
        .and_then(|f| f.max(0))
        .and_then(|m| m.to_scalar::<f32>());
    assert_eq!((min.expect("min"), max.expect("max")), (-1.0, 1.0));
    // Sample 0 is black with one coloured pixel at x=3, y=1: x / 127.5 - 1 per channel.
    assert_eq!(v[0][0][0][0], -1.0);
    let expect = |x: f32| x / 127.5 - 1.0;
    assert_eq!(
        [v[0][0][1][3], v[0][1][1][3], v[0][2][1][3]],
        [expect(51.0), expect(102.0), expect(204.0)]
    );
    // Sample 1 is red: channel 0 at +1, channels 1 and 2 at -1.
    assert_eq!(
        [v[1][0][2][2], v[1][1][2][2], v[1][2][2][2]],
        [1.0, -1.0, -1.0]
    );
    // Sample 2 is white.
    assert!(v[2].iter().flatten().flatten().all(|&x| x == 1.0));

    assert!(data.batch_tensor(&[0, 9], &Device::Cpu).is_err());
    assert!(data.batch_tensor(&[], &Device::Cpu).is_err());
}

// ---------------------------------------------------------------------------------------------
// The emoji recipe.

/// A miniature npm layout: grinning face, cat face (tags), copyright (FE0F-qualified, tags under
/// the unqualified hexcode in emojibase), thumbs up with two skin variants and one without an
/// image, handshake with a two-tone variant, a Component entry, and an entry without an image.
fn fake_npm(root: &Path) -> PathBuf {
    let modules = root.join("node_modules");
    let images = modules.join("emoji-datasource-google/img/google/64");
    std::fs::create_dir_all(&images).expect("mkdir");
    std::fs::create_dir_all(modules.join("emojibase-data/en")).expect("mkdir");
    let files = [
        ("1f600.png", [250, 200, 0, 255]),
        ("1f431.png", [200, 120, 40, 255]),
        ("00a9-fe0f.png", [90, 90, 90, 255]),
        ("1f44d.png", [255, 210, 0, 255]),
        ("1f44d-1f3fb.png", [250, 220, 190, 255]),
        ("1f44d-1f3ff.png", [90, 60, 40, 255]),
        ("1f91d.png", [255, 210, 0, 255]),
        ("1faf1-1f3fb-200d-1faf2-1f3ff.png", [170, 140, 110, 255]),
        ("1f3fb.png", [250, 220, 190, 255]),
    ];
    for (name, px) in files {
        let mut img = RgbaImage::from_pixel(8, 8, Rgba(px));
        img.put_pixel(0, 0, Rgba([0, 0, 0, 0]));
        img.save(images.join(name)).expect("write png");
    }
    let emoji_json = serde_json::json!([
        {"name": "GRINNING FACE", "unified": "1F600", "image": "1f600.png",
         "category": "Smileys & Emotion", "subcategory": "face-smiling", "sort_order": 1,
         "short_names": ["grinning"], "has_img_google": true},
        {"name": "CAT FACE", "unified": "1F431", "image": "1f431.png",
         "category": "Animals & Nature", "subcategory": "animal-mammal", "sort_order": 500,
         "short_names": ["cat"], "has_img_google": true},
        {"name": "COPYRIGHT SIGN", "unified": "00A9-FE0F", "image": "00a9-fe0f.png",
         "category": "Symbols", "subcategory": "other-symbol", "sort_order": 1600,
         "has_img_google": true},
        {"name": "THUMBS UP SIGN", "unified": "1F44D", "image": "1f44d.png",
         "category": "People & Body", "subcategory": "hand-fingers-closed", "sort_order": 200,
         "has_img_google": true,
         "skin_variations": {
            "1F3FB": {"unified": "1F44D-1F3FB", "image": "1f44d-1f3fb.png", "has_img_google": true},
            "1F3FD": {"unified": "1F44D-1F3FD", "image": "1f44d-1f3fd.png", "has_img_google": false},
            "1F3FF": {"unified": "1F44D-1F3FF", "image": "1f44d-1f3ff.png", "has_img_google": true}
         }},
        {"name": "HANDSHAKE", "unified": "1F91D", "image": "1f91d.png",
         "category": "People & Body", "subcategory": "hands", "sort_order": 210,
         "has_img_google": true,
         "skin_variations": {
            "1F3FB-1F3FF": {"unified": "1FAF1-1F3FB-200D-1FAF2-1F3FF",
                            "image": "1faf1-1f3fb-200d-1faf2-1f3ff.png", "has_img_google": true}
         }},
        {"name": "EMOJI MODIFIER FITZPATRICK TYPE-1-2", "unified": "1F3FB", "image": "1f3fb.png",
         "category": "Component", "subcategory": "skin-tone", "sort_order": 1500,
         "has_img_google": true},
        {"name": "GHOST OF AN EMOJI", "unified": "1F47B", "image": "1f47b.png",
         "category": "Smileys & Emotion", "subcategory": "face-costume", "sort_order": 100,
         "has_img_google": true}
    ]);
    let emojibase = serde_json::json!([
        {"label": "grinning face", "hexcode": "1F600",
         "tags": ["face", "grin", "grinning face"]},
        {"label": "cat face", "hexcode": "1F431",
         "tags": ["animal", "cat", "face", "kitten", "kitty", "pet"]},
        {"label": "copyright", "hexcode": "00A9", "tags": ["c"]},
        {"label": "thumbs up", "hexcode": "1F44D",
         "tags": ["+1", "good", "hand", "like", "thumb", "up", "yes"],
         "skins": [
            {"label": "thumbs up: light skin tone", "hexcode": "1F44D-1F3FB", "tone": 1},
            {"label": "thumbs up: dark skin tone", "hexcode": "1F44D-1F3FF", "tone": 5}
         ]},
        {"label": "handshake", "hexcode": "1F91D", "tags": ["agreement", "hand", "meeting"],
         "skins": [
            {"label": "handshake: light skin tone, dark skin tone",
             "hexcode": "1FAF1-1F3FB-200D-1FAF2-1F3FF", "tone": [1, 5]}
         ]}
    ]);
    write(
        &modules.join("emoji-datasource-google/emoji.json"),
        &emoji_json.to_string(),
    );
    write(
        &modules.join("emojibase-data/en/data.json"),
        &emojibase.to_string(),
    );
    root.to_path_buf()
}

fn read_lines(path: &Path) -> Vec<serde_json::Map<String, Value>> {
    std::fs::read_to_string(path)
        .expect("captions.jsonl")
        .lines()
        .map(|l| match serde_json::from_str(l).expect("json line") {
            Value::Object(m) => m,
            other => panic!("not an object: {other}"),
        })
        .collect()
}

fn field<'a>(line: &'a serde_json::Map<String, Value>, key: &str) -> &'a str {
    line.get(key).and_then(Value::as_str).unwrap_or_default()
}

#[test]
fn emoji_recipe_on_a_miniature_layout() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let npm = fake_npm(&tmp.path().join("npm"));
    let out = tmp.path().join("out");
    let report = prepare_emoji(&npm, &out, &EmojiOptions::default()).expect("prepares");

    // The fixture's hexcodes: thumbs up and handshake hash into eval (fnv1a64 % 10 == 0), the
    // rest into train. Check the hash rather than trusting the fixture comment.
    assert!(is_eval("1F44D", 10) && is_eval("1F91D", 10));
    assert!(!is_eval("1F600", 10) && !is_eval("1F431", 10) && !is_eval("00A9-FE0F", 10));

    let train = read_lines(&out.join("train/captions.jsonl"));
    let eval = read_lines(&out.join("eval/captions.jsonl"));
    let captions = |lines: &[serde_json::Map<String, Value>]| -> Vec<String> {
        lines
            .iter()
            .map(|l| field(l, "caption").to_string())
            .collect()
    };
    assert_eq!(
        captions(&train),
        [
            "grinning face, grin, smileys & emotion",
            "cat face, animal, kitten, kitty, pet, animals & nature",
            "copyright, c, symbols",
        ]
    );
    assert_eq!(
        captions(&eval),
        [
            "thumbs up, +1, good, hand, like, people & body",
            "thumbs up, +1, good, hand, like, people & body, light skin tone",
            "thumbs up, +1, good, hand, like, people & body, dark skin tone",
            "handshake, agreement, hand, meeting, people & body",
            "handshake, agreement, hand, meeting, people & body, light skin tone, dark skin tone",
        ]
    );
    // Every variant sits with its base, in the split its base hexcode hashes to.
    for line in &train {
        assert!(!is_eval(field(line, "base_hexcode"), 10), "{line:?}");
    }
    for line in &eval {
        assert!(is_eval(field(line, "base_hexcode"), 10), "{line:?}");
    }
    let dark = &eval[2];
    assert_eq!(field(dark, "file"), "1f44d-1f3ff.png");
    assert_eq!(field(dark, "hexcode"), "1F44D-1F3FF");
    assert_eq!(field(dark, "base_hexcode"), "1F44D");
    assert_eq!(field(dark, "name"), "thumbs up");
    assert_eq!(field(dark, "category"), "People & Body");
    assert_eq!(field(dark, "subcategory"), "hand-fingers-closed");
    assert_eq!(field(&train[2], "hexcode"), "00A9-FE0F");

    // Component and image-less entries are skipped.
    let all: Vec<&str> = train
        .iter()
        .chain(&eval)
        .map(|l| field(l, "file"))
        .collect();
    assert!(!all.contains(&"1f3fb.png") && !all.contains(&"1f47b.png"));
    assert!(!all.contains(&"1f44d-1f3fd.png"));

    assert_eq!(report.train_images, 3);
    assert_eq!(report.eval_images, 5);
    assert_eq!((report.base_train, report.base_eval), (3, 2));
    assert_eq!(report.skipped_component, 1);
    assert_eq!(report.skipped_no_image, 2);
    let categories: Vec<(&str, usize)> = report
        .categories
        .iter()
        .map(|(k, v)| (k.as_str(), *v))
        .collect();
    assert_eq!(
        categories,
        [
            ("Animals & Nature", 1),
            ("People & Body", 5),
            ("Smileys & Emotion", 1),
            ("Symbols", 1)
        ]
    );

    // The PNGs are copied as they are (RGBA), and the loader reads the folders back.
    let copied =
        atelier::imageio::load_image_file(&out.join("eval/1f44d-1f3ff.png")).expect("copied png");
    assert_eq!(copied.color(), image::ColorType::Rgba8);
    let data = open(&out.join("eval"), 8);
    assert_eq!(data.len(), 5);
    assert_eq!(data.items[2].image.get_pixel(0, 0), &Rgb([255, 255, 255]));
    assert_eq!(data.items[2].image.get_pixel(4, 4), &Rgb([90, 60, 40]));
    assert_eq!(
        data.items[2].extra.get("base_hexcode"),
        Some(&Value::from("1F44D"))
    );
    assert_eq!(open(&out.join("train"), 8).len(), 3);

    // Deterministic: a second run writes the same files.
    let out2 = tmp.path().join("out2");
    let report2 = prepare_emoji(&npm, &out2, &EmojiOptions::default()).expect("again");
    assert_eq!(report, report2);
    for split in ["train", "eval"] {
        let a = std::fs::read(out.join(split).join("captions.jsonl")).expect("a");
        let b = std::fs::read(out2.join(split).join("captions.jsonl")).expect("b");
        assert_eq!(a, b, "{split} differs between runs");
    }
}

#[test]
fn emoji_options_change_tags_and_split() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let npm = fake_npm(&tmp.path().join("npm"));
    let out = tmp.path().join("out");
    let o = EmojiOptions {
        tags_per_caption: 1,
        eval_one_in: 0,
    };
    let report = prepare_emoji(&npm, &out, &o).expect("prepares");
    assert_eq!((report.train_images, report.eval_images), (8, 0));
    assert_eq!((report.base_train, report.base_eval), (5, 0));
    let train = read_lines(&out.join("train/captions.jsonl"));
    assert_eq!(field(&train[1], "caption"), "thumbs up, +1, people & body");
    assert!(read_lines(&out.join("eval/captions.jsonl")).is_empty());
}

#[test]
fn emoji_recipe_without_fetched_data_says_to_fetch_it() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let err = prepare_emoji(
        tmp.path(),
        &tmp.path().join("out"),
        &EmojiOptions::default(),
    )
    .expect_err("no data");
    assert!(matches!(err, EmojiError::NotFetched { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains("scripts/fetch-emoji-data.sh"), "{msg}");
    assert!(msg.contains("emoji.json"), "{msg}");

    // Half fetched: emoji.json present, emojibase missing.
    let npm = fake_npm(&tmp.path().join("npm"));
    std::fs::remove_file(npm.join("node_modules/emojibase-data/en/data.json")).expect("rm");
    let err =
        prepare_emoji(&npm, &tmp.path().join("out"), &EmojiOptions::default()).expect_err("half");
    assert!(
        err.to_string().contains("emojibase-data/en/data.json"),
        "{err}"
    );
}

/// Needs the data fetched by `scripts/fetch-emoji-data.sh` (at `~/.cache/atelier/emoji-npm`,
/// or `ATELIER_EMOJI_NPM`): `cargo test --test train_data -- --ignored` runs it.
#[test]
#[ignore = "needs the emoji data from scripts/fetch-emoji-data.sh (npm, not in CI)"]
fn real_emoji_data_prepares_the_recipe() {
    let npm = std::env::var_os("ATELIER_EMOJI_NPM")
        .map(PathBuf::from)
        .or_else(|| dirs::cache_dir().map(|c| c.join("atelier/emoji-npm")))
        .filter(|p| {
            p.join("node_modules/emoji-datasource-google/emoji.json")
                .is_file()
        })
        .expect("the emoji data: run scripts/fetch-emoji-data.sh first");
    let tmp = tempfile::tempdir().expect("tempdir");
    let out = tmp.path().join("emoji");
    let report = prepare_emoji(&npm, &out, &EmojiOptions::default()).expect("prepares");
    println!("{report:#?}");

    let images = report.train_images + report.eval_images;
    assert!(images > 3000, "{images} images");
    let bases = report.base_train + report.base_eval;
    let eval_pct = 100.0 * report.base_eval as f64 / bases as f64;
    println!("eval bases: {eval_pct:.1}%");
    assert!(
        (7.0..=13.0).contains(&eval_pct),
        "{eval_pct:.1}% of bases held out"
    );
    assert!(!report.categories.contains_key("Component"));
    assert_eq!(report.categories.values().sum::<usize>(), images);

    let mut seen_files = BTreeSet::new();
    for (split, held_out) in [("train", false), ("eval", true)] {
        let lines = read_lines(&out.join(split).join("captions.jsonl"));
        assert_eq!(
            lines.len(),
            if held_out {
                report.eval_images
            } else {
                report.train_images
            }
        );
        for line in &lines {
            let caption = field(line, "caption");
            assert!(!caption.trim().is_empty(), "{line:?}");
            assert_eq!(
                is_eval(field(line, "base_hexcode"), 10),
                held_out,
                "{line:?}"
            );
            let file = field(line, "file");
            assert!(out.join(split).join(file).is_file(), "{file} not written");
            assert!(seen_files.insert(file.to_string()), "{file} listed twice");
        }
        for line in lines.iter().take(2) {
            println!("{split}: {}", field(line, "caption"));
        }
    }
    // The loader reads the held-out split back in full.
    let data = open(&out.join("eval"), 64);
    assert_eq!(data.len(), report.eval_images);
    assert!(
        data.skipped.is_empty(),
        "{:?}",
        &data.skipped[..data.skipped.len().min(3)]
    );
}
