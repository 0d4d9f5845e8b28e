//! The studio driven through its widgets with egui_kittest: queueing with Ctrl+Enter,
//! cancelling, a finished image reaching the gallery, and "Reuse settings".
//!
//! Every test uses the tiny random-weight SD 1.5 model written by
//! `atelier::diffusion::tiny::write_tiny_model`, found through `StudioOptions::extra_model_dirs`,
//! and a throw-away `ATELIER_HOME`. No snapshot images: assertions read the accessibility tree.

mod common;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use atelier::app::{StudioApp, StudioOptions};
use atelier::diffusion::tiny::{write_tiny_model, TinyKind};
use egui::{Key, Modifiers};
use egui_kittest::kittest::{NodeT as _, Queryable};
use egui_kittest::Harness;

type StudioHarness = Harness<'static, Option<StudioApp>>;

/// A prompt that makes the engine panic (its test hook, see `GeneratorOptions`).
const PANIC_PROMPT: &str = "a prompt that makes the engine panic";

/// How long a tiny-model job may take before a test gives up.
const JOB_TIMEOUT: Duration = Duration::from_secs(120);

/// The folder holding the tiny model; made once for all tests of this binary.
fn tiny_models_dir() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        // Inside target/tmp, so `cargo clean` removes it; kept for the whole run.
        let root = kept_dir("atelier-ui-");
        // Set once, before any test builds a studio (which reads them): tests run in parallel.
        std::env::set_var("ATELIER_HOME", root.join("home"));
        std::env::set_var("HF_HUB_CACHE", root.join("hf-cache"));
        // The engine's test hook: a job with exactly this prompt panics.
        std::env::set_var("ATELIER_TEST_PANIC_PROMPT", PANIC_PROMPT);
        let models = root.join("models");
        write_tiny_model(&models.join("tiny-sd15"), TinyKind::Sd15)
            .expect("writing the tiny model");
        models
    })
}

fn studio_harness() -> StudioHarness {
    studio_harness_with(StudioOptions {
        extra_model_dirs: vec![tiny_models_dir().clone()],
        ..Default::default()
    })
}

fn studio_harness_with(mut options: StudioOptions) -> StudioHarness {
    // Each studio its own gallery (tests run in parallel; one gallery admits one writer).
    if options.gallery_dir.is_none() {
        let dir = kept_dir("atelier-ui-gallery-");
        options.gallery_dir = Some(dir);
    }
    Harness::builder()
        .with_size([1280.0, 800.0])
        .build_ui_state(
            move |ui, app: &mut Option<StudioApp>| {
                let app =
                    app.get_or_insert_with(|| StudioApp::new_headless(ui.ctx(), options.clone()));
                // What eframe does every frame: `App::logic`, then `App::ui`.
                app.logic_step();
                app.studio_ui(ui);
            },
            None,
        )
}

/// The studio's gallery catalog, opened read-only beside the studio's own writer.
fn catalog(harness: &StudioHarness) -> atelier::gallery::Catalog {
    atelier::gallery::Catalog::open_read_only(&app(harness).gallery_dir().join("catalog.db"))
        .expect("the catalog exists")
}

/// Picture `id`'s row as stored.
fn record(harness: &StudioHarness, id: i64) -> atelier::gallery::ImageRecord {
    catalog(harness)
        .get(id)
        .expect("reading the catalog")
        .expect("the picture exists")
}

/// Steps until picture `id`'s stored row satisfies `done` (the gallery thread writes it).
fn wait_for_record(
    harness: &mut StudioHarness,
    id: i64,
    what: &str,
    done: impl Fn(&atelier::gallery::ImageRecord) -> bool,
) -> atelier::gallery::ImageRecord {
    step_until(harness, what, Duration::from_secs(30), |h| {
        done(&record(h, id))
    });
    record(harness, id)
}

fn app(harness: &StudioHarness) -> &StudioApp {
    harness
        .state()
        .as_ref()
        .expect("the studio is built in the first frame")
}

/// The picture under control layer `index`, if it has one.
fn control_image(harness: &StudioHarness, index: usize) -> Option<image::GrayImage> {
    app(harness).sketch().control(index)?.image.clone()
}

fn app_mut(harness: &mut StudioHarness) -> &mut StudioApp {
    harness
        .state_mut()
        .as_mut()
        .expect("the studio is built in the first frame")
}

/// Steps the ui until `done` holds, failing after `timeout`.
fn step_until(
    harness: &mut StudioHarness,
    what: &str,
    timeout: Duration,
    mut done: impl FnMut(&StudioHarness) -> bool,
) {
    let start = Instant::now();
    loop {
        harness.step();
        if done(harness) {
            return;
        }
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}; the queue says: {:?}",
            labels_containing(harness, "")
                .into_iter()
                .filter(|l| l.starts_with("step")
                    || l.starts_with("failed")
                    || l.starts_with("loading")
                    || l.starts_with("queued")
                    || l.starts_with("done")
                    || l.starts_with("cancel"))
                .collect::<Vec<_>>()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn labels_containing(harness: &StudioHarness, part: &str) -> Vec<String> {
    harness
        .query_all_by_label_contains(part)
        .filter_map(|node| {
            let node = node.accesskit_node();
            node.label().or_else(|| node.value())
        })
        .collect()
}

fn has_label_containing(harness: &StudioHarness, part: &str) -> bool {
    harness.query_all_by_label_contains(part).next().is_some()
}

/// A studio with the tiny model found and selected.
fn ready_studio() -> StudioHarness {
    let mut harness = studio_harness();
    step_until(
        &mut harness,
        "the model scan",
        Duration::from_secs(30),
        |h| {
            let app = app(h);
            !app.is_scanning_models() && app.state().selected_model.is_some()
        },
    );
    let selected = app(&harness).state().selected_model.clone();
    assert!(
        selected
            .as_ref()
            .is_some_and(|dir| dir.ends_with("tiny-sd15")),
        "the --model-dir model should be picked first, got {selected:?}"
    );
    harness.run_ok();
    step_until(&mut harness, "the device", Duration::from_secs(30), |h| {
        has_label_containing(h, "Runs on: ") && !has_label_containing(h, "choosing a device")
    });
    #[cfg(not(any(feature = "cuda", feature = "metal")))]
    assert!(has_label_containing(&harness, "Runs on: CPU, "));
    harness.check_accessibility();
    harness
}

/// Types `prompt` into the prompt box and presses Ctrl+Enter.
fn type_prompt_and_generate(harness: &mut StudioHarness, prompt: &str) {
    harness.get_by_label("Prompt").click();
    harness.step();
    harness.get_by_label("Prompt").type_text(prompt);
    harness.step();
    assert_eq!(
        harness.get_by_label("Prompt").value().as_deref(),
        Some(prompt)
    );
    harness.key_press_modifiers(Modifiers::CTRL | Modifiers::COMMAND, Key::Enter);
    harness.step();
}

/// Small, quick settings for the tiny model.
/// Drags a line across the canvas, from `from` to `to` of its size (down the diagonal).
fn draw_line(harness: &mut StudioHarness, from: f32, to: f32) {
    let canvas = harness.get_by_label("Sketch canvas").rect();
    let (from, to) = (
        canvas.left_top() + canvas.size() * from,
        canvas.left_top() + canvas.size() * to,
    );
    harness.hover_at(from);
    harness.drag_at(from);
    harness.hover_at(from.lerp(to, 0.5));
    harness.hover_at(to);
    harness.drop_at(to);
    harness.run_ok();
}

fn quick_settings(harness: &mut StudioHarness, steps: usize) {
    let settings = app_mut(harness).prompt_settings_mut();
    settings.steps = steps;
    settings.width = 64;
    settings.height = 64;
    settings.batch = 1;
}

/// A studio that sees only the install at `root` (its `models/...` folders), once its scan has
/// chosen a model.
fn studio_over_install(root: &Path) -> StudioHarness {
    let mut harness = studio_harness_with(StudioOptions {
        extra_model_dirs: vec![root.to_path_buf()],
        without_embedded_models: true,
        ..Default::default()
    });
    step_until(
        &mut harness,
        "the model scan",
        Duration::from_secs(30),
        |h| !app(h).is_scanning_models() && app(h).state().selected_model.is_some(),
    );
    harness
}

/// Waits until the first job has left the running states, and says how it ended.
/// An install at a fresh folder with the reference tiny model as `models/Stable-diffusion/
/// tiny-ref` and each ControlNet fixture (`controlnet/<fixture>`) as `models/ControlNet/<name>`.
fn install_with_controlnets(prefix: &str, controlnets: &[(&str, &str)]) -> PathBuf {
    let root = kept_dir(prefix);
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/reference");
    common::copy_dir(
        &fixtures.join("tiny-sd15"),
        &root.join("models/Stable-diffusion/tiny-ref"),
    );
    for (fixture, name) in controlnets {
        common::copy_dir(
            &fixtures.join("controlnet").join(fixture),
            &root.join("models/ControlNet").join(name),
        );
    }
    root
}

/// Chooses `name` in the chosen control layer's ControlNet list.
fn choose_controlnet(harness: &mut StudioHarness, name: &str) {
    harness
        .get_by_role_and_label(egui::accesskit::Role::ComboBox, "ControlNet")
        .click();
    harness.run_ok();
    harness.get_by_label(name).click();
    harness.run_ok();
}

fn wait_for_gallery(harness: &mut StudioHarness) {
    step_until(harness, "the finished image", JOB_TIMEOUT, |h| {
        app(h).results_len() > 0 || has_label_containing(h, "failed:")
    });
    let failures = labels_containing(harness, "failed:");
    assert!(failures.is_empty(), "the job failed: {failures:?}");
}

#[test]
fn ctrl_enter_queues_a_job_shown_in_the_queue() {
    let mut harness = ready_studio();
    assert!(has_label_containing(&harness, "No jobs yet"));
    quick_settings(&mut harness, 2);
    type_prompt_and_generate(&mut harness, "a lighthouse at dusk");
    harness.step();
    assert_eq!(app(&harness).state().prompt.prompt, "a lighthouse at dusk");
    // The queue shows job #1 with its prompt (whatever state it has reached by now).
    assert!(has_label_containing(&harness, "#1"), "no row for job #1");
    assert!(has_label_containing(&harness, "a lighthouse at dusk"));
    assert!(!has_label_containing(&harness, "No jobs yet"));
}

#[test]
fn cancel_button_cancels_the_job() {
    let mut harness = ready_studio();
    // Many steps, so the job is still queued or running when Cancel is pressed.
    quick_settings(&mut harness, 200);
    type_prompt_and_generate(&mut harness, "a slow painting");
    harness.step();
    assert_eq!(app(&harness).active_jobs(), 1);
    harness.get_by_label("Cancel").click();
    step_until(&mut harness, "the job to be cancelled", JOB_TIMEOUT, |h| {
        app(h).active_jobs() == 0
    });
    let cancelled: Vec<String> = labels_containing(&harness, "cancelled");
    assert_eq!(cancelled, vec!["cancelled".to_owned()], "queue rows");
    assert_eq!(app(&harness).results_len(), 0);
    // Nothing left to cancel.
    assert!(!has_label_containing(&harness, "Cancel #1"));
}

#[test]
fn finished_image_appears_in_the_gallery() {
    let mut harness = ready_studio();
    quick_settings(&mut harness, 2);
    type_prompt_and_generate(&mut harness, "a red apple");
    wait_for_gallery(&mut harness);
    step_until(&mut harness, "the job to finish", JOB_TIMEOUT, |h| {
        app(h).active_jobs() == 0
    });
    let seed = app(&harness).state().prompt.seed;
    assert!(
        has_label_containing(&harness, &format!("Image 1: seed {seed}")),
        "thumbnail missing; labels: {:?}",
        labels_containing(&harness, "Image")
    );
    assert!(has_label_containing(&harness, "done in"));
    // Clicking the thumbnail shows it large with its settings.
    harness.get_by_label_contains("Image 1: seed").click();
    harness.run_ok();
    assert!(has_label_containing(&harness, "Reuse settings"));
    assert!(has_label_containing(&harness, "Save as…"));
    assert!(has_label_containing(&harness, "a red apple"));
    harness.check_accessibility();
}

#[test]
fn reuse_settings_restores_prompt_and_seed() {
    let mut harness = ready_studio();
    quick_settings(&mut harness, 2);
    type_prompt_and_generate(&mut harness, "a blue boat");
    wait_for_gallery(&mut harness);
    let used_seed = app(&harness).state().prompt.seed;

    // Change the panel, then bring the image's settings back.
    {
        let settings = app_mut(&mut harness).prompt_settings_mut();
        settings.prompt = "something else".to_owned();
        settings.seed = used_seed.wrapping_add(1);
        settings.random_seed = true;
        settings.steps = 9;
    }
    harness.run_ok();
    assert_eq!(
        harness.get_by_label("Prompt").value().as_deref(),
        Some("something else")
    );
    harness.get_by_label_contains("Image 1: seed").click();
    harness.run_ok();
    harness.get_by_label("Reuse settings").click();
    harness.run_ok();

    assert_eq!(
        harness.get_by_label("Prompt").value().as_deref(),
        Some("a blue boat")
    );
    let settings = &app(&harness).state().prompt;
    assert_eq!(settings.prompt, "a blue boat");
    assert_eq!(settings.seed, used_seed);
    assert!(!settings.random_seed, "a reused seed stays fixed");
    assert_eq!(settings.steps, 2);
    assert_eq!((settings.width, settings.height), (64, 64));
}

#[test]
fn without_models_the_studio_says_where_to_put_one() {
    tiny_models_dir(); // sets ATELIER_HOME to an empty home
    let mut harness = studio_harness_with(StudioOptions {
        without_embedded_models: true,
        ..Default::default()
    });
    step_until(
        &mut harness,
        "the model scan",
        Duration::from_secs(30),
        |h| !app(h).is_scanning_models(),
    );
    harness.run_ok();
    assert_eq!(app(&harness).model_count(), 0);
    assert!(has_label_containing(&harness, "No model found"));
    assert!(has_label_containing(&harness, "atelier --model-dir DIR"));
    let models_dir = atelier::paths::models_dir().display().to_string();
    assert!(
        has_label_containing(&harness, &models_dir),
        "{models_dir} not shown"
    );
    assert!(harness
        .get_by_label("Generate")
        .accesskit_node()
        .is_disabled());
    // Ctrl+Enter does nothing but explain.
    harness.key_press_modifiers(Modifiers::CTRL | Modifiers::COMMAND, Key::Enter);
    harness.run_ok();
    assert_eq!(app(&harness).active_jobs(), 0);
    assert!(has_label_containing(&harness, "No model to generate with"));
    harness.check_accessibility();
}

#[test]
fn drawing_on_the_canvas_is_undoable_with_ctrl_z() {
    let mut harness = ready_studio();
    assert!(harness.get_by_label("Undo").accesskit_node().is_disabled());
    draw_line(&mut harness, 0.25, 0.75);
    let sketch = app(&harness).sketch();
    assert_eq!(sketch.strokes(atelier::sketch::Layer::Paint).len(), 1);
    assert!(
        sketch.strokes(atelier::sketch::Layer::Paint)[0]
            .points_in_canvas
            .len()
            >= 2
    );
    assert!(!harness.get_by_label("Undo").accesskit_node().is_disabled());

    harness.key_press_modifiers(Modifiers::CTRL | Modifiers::COMMAND, Key::Z);
    harness.run_ok();
    assert!(app(&harness).sketch().is_empty());
    assert!(!harness.get_by_label("Redo").accesskit_node().is_disabled());

    harness.key_press_modifiers(
        Modifiers::CTRL | Modifiers::COMMAND | Modifiers::SHIFT,
        Key::Z,
    );
    harness.run_ok();
    assert_eq!(
        app(&harness)
            .sketch()
            .strokes(atelier::sketch::Layer::Paint)
            .len(),
        1
    );
}

/// A file dropped on the window, as the platform integration hands it over.
#[derive(Debug)]
struct DroppedPng {
    path: PathBuf,
    bytes: Vec<u8>,
}

impl egui::DroppedFile for DroppedPng {
    fn path(&self) -> &std::path::Path {
        &self.path
    }

    fn bytes(&self) -> Result<Vec<u8>, String> {
        Ok(self.bytes.clone())
    }
}

#[test]
fn dropping_an_image_makes_it_the_canvas_background() {
    let mut harness = ready_studio();
    let image = image::RgbImage::from_pixel(96, 48, image::Rgb([200, 30, 30]));
    let mut bytes = Vec::new();
    image
        .write_to(
            &mut std::io::Cursor::new(&mut bytes),
            image::ImageFormat::Png,
        )
        .expect("encoding a PNG");
    harness
        .input_mut()
        .dropped_files
        .push(std::sync::Arc::new(DroppedPng {
            path: PathBuf::from("/nowhere/red.png"),
            bytes,
        }));
    step_until(
        &mut harness,
        "the dropped image",
        Duration::from_secs(30),
        |h| app(h).sketch().background().is_some(),
    );
    harness.run_ok();
    let studio = app(&harness);
    assert!(
        studio.state().canvas.use_sketch,
        "a dropped image is meant to be used"
    );
    assert_eq!(
        studio.sketch().background().map(|b| b.dimensions()),
        Some((96, 48))
    );
    assert!(has_label_containing(
        &harness,
        "red.png is the canvas background"
    ));
    // The background can be taken away again (undoably).
    harness.get_by_label("Remove background").click();
    harness.run_ok();
    assert!(app(&harness).sketch().background().is_none());
}

#[test]
fn results_are_saved_to_the_library_and_can_be_rated_trashed_and_restored() {
    let mut harness = ready_studio();
    quick_settings(&mut harness, 2);
    type_prompt_and_generate(&mut harness, "a green kite");
    wait_for_gallery(&mut harness);
    // Saved before it was shown: the catalog has it, with its settings, file on disk.
    let seed = app(&harness).state().prompt.seed;
    {
        let q = atelier::gallery::Query {
            text: Some("kite".into()),
            ..Default::default()
        };
        let records = catalog(&harness).records(&q, 0, 10).unwrap();
        assert_eq!(records.len(), 1);
        assert_eq!(records[0].meta.seed, Some(seed));
        assert!(app(&harness).gallery_dir().join(&records[0].file).is_file());
    }
    harness.get_by_label("Library").click();
    harness.run_ok();
    assert_eq!(app(&harness).library_len(), 1);
    select_picture(&mut harness, 1);
    assert!(has_label_containing(&harness, "a green kite"));
    assert!(!has_label_containing(&harness, "Made from"));
    // Key 4 rates, F favourites.
    harness.key_press(Key::Num4);
    harness.key_press(Key::F);
    harness.run_ok();
    let rated = wait_for_record(&mut harness, 1, "the rating and favourite", |r| {
        (r.rating, r.favourite) == (4, true)
    });
    // Delete moves to the trash; Ctrl+Z brings it back.
    harness.key_press(Key::Delete);
    harness.run_ok();
    wait_for_record(&mut harness, 1, "the trash", |r| r.trashed.is_some());
    step_until(
        &mut harness,
        "the emptied grid",
        Duration::from_secs(30),
        |h| app(h).library_len() == 0,
    );
    harness.key_press_modifiers(Modifiers::COMMAND, Key::Z);
    harness.run_ok();
    wait_for_record(&mut harness, 1, "the restore", |r| r.trashed.is_none());
    step_until(
        &mut harness,
        "the grid again",
        Duration::from_secs(30),
        |h| app(h).library_len() == 1,
    );
    // Used as the init image, the next result records it as its parent.
    select_picture(&mut harness, 1);
    click_until(&mut harness, "Use as init image", |h| {
        app(h).state().canvas.use_sketch
    });
    harness.key_press_modifiers(Modifiers::CTRL | Modifiers::COMMAND, Key::Enter);
    step_until(
        &mut harness,
        "the image-to-image result",
        JOB_TIMEOUT,
        |h| app(h).results_len() == 2 || has_label_containing(h, "failed:"),
    );
    let child = record(&harness, 2);
    assert_eq!(child.meta.parent.as_deref(), Some(rated.meta.uid.as_str()));
    // Each job was recorded before it ran and forgotten once it ended.
    assert!(child.meta.job.is_some(), "{:?}", child.meta);
    step_until(
        &mut harness,
        "the jobs' records to go",
        Duration::from_secs(30),
        |h| catalog(h).jobs().unwrap().is_empty(),
    );
    assert_eq!(
        child.meta.lineage,
        Some(atelier::gallery::metadata::Lineage::Img2Img)
    );
    harness.get_by_label("Library").click();
    harness.run_ok();
    // Searching narrows the grid.
    harness.get_by_label("Search").click();
    harness.get_by_label("Search").type_text("zebra");
    harness.run_ok();
    step_until(&mut harness, "the search", Duration::from_secs(30), |h| {
        app(h).library_len() == 0
    });
    harness.check_accessibility();
}

/// A studio on a gallery holding `pictures` (imported before the studio opens it).
fn studio_with_pictures(pictures: &[image::RgbImage]) -> StudioHarness {
    studio_with_gallery(|g| {
        for p in pictures {
            g.import_image(p, "test").expect("importing a picture");
        }
    })
}

/// A studio on a gallery that `setup` filled before the studio opened it (the studio's
/// gallery thread is its only writer from then on).
fn studio_with_gallery(setup: impl FnOnce(&mut atelier::gallery::Gallery)) -> StudioHarness {
    tiny_models_dir();
    let dir = kept_dir("atelier-ui-gallery-");
    {
        let mut g = atelier::gallery::Gallery::open(&dir).expect("opening the gallery");
        setup(&mut g);
    }
    let mut harness = studio_harness_with(StudioOptions {
        extra_model_dirs: vec![tiny_models_dir().clone()],
        gallery_dir: Some(dir),
        ..Default::default()
    });
    step_until(&mut harness, "the gallery", Duration::from_secs(30), |h| {
        app(h).gallery_is_open()
    });
    harness
}

fn gradient(w: u32, h: u32, tint: u8) -> image::RgbImage {
    image::RgbImage::from_fn(w, h, |x, y| {
        image::Rgb([(x * 255 / w) as u8, (y * 255 / h) as u8, tint])
    })
}

fn stored_stack(harness: &StudioHarness, id: i64) -> Option<atelier::postfx::Stack> {
    record(harness, id)
        .meta
        .adjustments
        .map(|v| atelier::postfx::Stack::from_json(&v.to_string()).expect("stored stack"))
}

/// Steps until picture `id`'s stored stack is `wanted` (the gallery thread stores it).
fn wait_for_stack(
    harness: &mut StudioHarness,
    id: i64,
    what: &str,
    wanted: impl Fn(Option<atelier::postfx::Stack>) -> bool,
) -> Option<atelier::postfx::Stack> {
    step_until(harness, what, Duration::from_secs(30), |h| {
        wanted(stored_stack(h, id))
    });
    stored_stack(harness, id)
}

fn mean_luma(h: &atelier::postfx::Histogram) -> f64 {
    let n = h.pixel_count().max(1) as f64;
    h.luma
        .iter()
        .enumerate()
        .map(|(i, &c)| i as f64 * f64::from(c))
        .sum::<f64>()
        / n
}

/// Clicks the widget labelled `label` until `done` holds: the layout can still move between
/// frames while thumbnails and details arrive from worker threads, so a click may miss.
fn click_until(harness: &mut StudioHarness, label: &str, done: impl Fn(&StudioHarness) -> bool) {
    let start = Instant::now();
    while !done(harness) {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "timed out clicking {label:?}"
        );
        if let Some(node) = harness.query_all_by_label(label).next() {
            node.click();
        }
        harness.step();
    }
}

/// Selects picture `id` in the library (clicking its thumbnail until the selection has taken;
/// never clicking a selected one again, which would be a double click) and waits for its
/// details pane.
fn select_picture(harness: &mut StudioHarness, id: i64) {
    click_until(harness, &format!("Picture {id}"), |h| {
        app(h).selected_picture() == Some(id)
    });
    step_until(harness, "the details pane", Duration::from_secs(30), |h| {
        has_label_containing(h, "Use as init image")
    });
}

/// Opens the Adjustments panel on library picture `id` through the widgets.
fn open_adjustments(harness: &mut StudioHarness, id: i64) {
    harness.get_by_label("Library").click();
    harness.run_ok();
    select_picture(harness, id);
    click_until(harness, "Adjust…", |h| app(h).adjust_target() == Some(id));
    step_until(harness, "the preview", Duration::from_secs(30), |h| {
        // The app's state changes during a frame: wait until a frame has also drawn it.
        app(h).adjust_preview_ready() && has_label_containing(h, " preview")
    });
}

#[test]
fn adjustments_preview_store_paste_reset_and_undo() {
    use atelier::postfx::{Exposure, Op, OpEntry};
    let mut harness = studio_with_gallery(|g| {
        g.import_image(&gradient(96, 64, 40), "test").unwrap();
        g.import_image(&gradient(64, 64, 200), "test").unwrap();
        // Picture 2 carries an adjustment from a "newer Atelier".
        g.set_adjustments(
            2,
            Some(r#"{"version":1,"ops":[{"op":"glow","enabled":true,"radius":3}]}"#),
        )
        .unwrap();
    });
    harness.run_ok();
    open_adjustments(&mut harness, 1);
    let before = app(&harness).adjust_histogram().expect("histogram");
    let (adjusted, original) = app(&harness).adjust_textures();
    assert!(adjusted.is_some() && original.is_some());
    assert_ne!(adjusted, original);

    // +1 EV, previewed live, then committed as a slider release does.
    app_mut(&mut harness)
        .adjust_stack_mut()
        .ops
        .push(OpEntry::new(Op::Exposure(Exposure { ev: 1.0 })));
    harness.run_ok();
    step_until(
        &mut harness,
        "the new preview",
        Duration::from_secs(30),
        |h| app(h).adjust_preview_ready(),
    );
    let after = app(&harness).adjust_histogram().expect("histogram");
    assert!(
        mean_luma(&after) > mean_luma(&before) + 10.0,
        "{} vs {}",
        mean_luma(&after),
        mean_luma(&before)
    );
    assert_eq!(stored_stack(&harness, 1), None, "stored only on commit");
    app_mut(&mut harness).commit_adjustments();
    harness.run_ok();
    let stored =
        wait_for_stack(&mut harness, 1, "the commit", |s| s.is_some()).expect("stored on commit");
    assert_eq!(stored.ops.len(), 1);
    assert_eq!(stored.ops[0].op, Op::Exposure(Exposure { ev: 1.0 }));

    // Switching the op off through its checkbox is stored at once.
    harness.get_by_label("Exposure").click();
    harness.run_ok();
    wait_for_stack(&mut harness, 1, "the op switched off", |s| {
        s.is_some_and(|s| !s.ops[0].enabled)
    });
    harness.get_by_label("Exposure").click();
    harness.run_ok();
    wait_for_stack(&mut harness, 1, "the op switched on", |s| {
        s.is_some_and(|s| s.ops[0].enabled)
    });
    harness.get_by_label("Copy stack").click();
    harness.run_ok();

    // The second picture: its unknown op is reported, then the copied stack pasted.
    open_adjustments(&mut harness, 2);
    assert!(has_label_containing(
        &harness,
        "1 adjustment from a newer Atelier is kept but not shown"
    ));
    harness.get_by_label("Paste stack").click();
    harness.run_ok();
    // Picture 2 starts with one (unknown) op too: wait for the pasted one itself.
    let pasted = wait_for_stack(&mut harness, 2, "the paste", |s| {
        s.is_some_and(|s| s.ops.len() == 1 && matches!(s.ops[0].op, Op::Exposure(_)))
    })
    .expect("pasted and stored");
    assert_eq!(pasted.ops[0].op, Op::Exposure(Exposure { ev: 1.0 }));

    // Reset all: identity, nothing stored; Ctrl+Z brings the pasted stack back.
    harness.get_by_label("Reset all").click();
    harness.run_ok();
    wait_for_stack(&mut harness, 2, "the reset", |s| s.is_none());
    assert!(app_mut(&mut harness).adjust_stack_mut().is_identity());
    harness.key_press_modifiers(Modifiers::COMMAND, Key::Z);
    harness.run_ok();
    wait_for_stack(&mut harness, 2, "the undo", |s| s.as_ref() == Some(&pasted));
    harness.check_accessibility();
}

/// The window's path: the preview runs on the wgpu device egui renders with (lavapipe in CI)
/// and egui draws its texture. Ignored only when built with `ATELIER_SKIP_GPU_TESTS=1`.
#[test]
#[cfg_attr(
    skip_gpu_tests,
    ignore = "ATELIER_SKIP_GPU_TESTS=1: no GPU adapter allowed"
)]
fn adjustments_preview_runs_on_the_renderers_wgpu_device() {
    use atelier::postfx::{Exposure, Op, OpEntry};
    tiny_models_dir();
    let dir = kept_dir("atelier-ui-gallery-");
    atelier::gallery::Gallery::open(&dir)
        .and_then(|mut g| g.import_image(&gradient(96, 64, 40), "test"))
        .expect("importing a picture");
    let render_state = egui_kittest::wgpu::create_render_state(
        egui_kittest::wgpu::default_wgpu_setup(),
        egui_wgpu::RendererOptions::PREDICTABLE,
    );
    let options = StudioOptions {
        extra_model_dirs: vec![tiny_models_dir().clone()],
        gallery_dir: Some(dir),
        ..Default::default()
    };
    let rs = render_state.clone();
    let mut harness: StudioHarness = Harness::builder()
        .with_size([1280.0, 800.0])
        .renderer(egui_kittest::wgpu::WgpuTestRenderer::from_render_state(
            render_state,
        ))
        .build_ui_state(
            move |ui, app: &mut Option<StudioApp>| {
                let app = app.get_or_insert_with(|| {
                    StudioApp::new_headless_with_wgpu(ui.ctx(), options.clone(), rs.clone())
                });
                app.logic_step();
                app.studio_ui(ui);
            },
            None,
        );
    harness.run_ok();
    open_adjustments(&mut harness, 1);
    assert_eq!(
        app(&harness).adjust_renderer(),
        "GPU",
        "{:?}",
        app(&harness).adjust_notes()
    );
    let mean_in_preview = |harness: &mut StudioHarness| {
        let rect = harness.get_by_label("Adjusted preview").rect();
        let shot = harness.render().expect("rendering");
        let ppp = shot.width() as f32 / 1280.0;
        let (x0, y0) = (
            (rect.center().x * ppp) as u32,
            (rect.center().y * ppp) as u32,
        );
        let mut sum = 0u64;
        for y in y0.saturating_sub(10)..y0 + 10 {
            for x in x0.saturating_sub(10)..x0 + 10 {
                let p = shot.get_pixel(x, y).0;
                sum += u64::from(p[0]) + u64::from(p[1]) + u64::from(p[2]);
            }
        }
        sum as f64 / (20.0 * 20.0 * 3.0)
    };
    let before = mean_in_preview(&mut harness);
    // The centre of the gradient is (127, 127, 40): shown with the same colours as the file
    // (a second sRGB decode would darken it to about 60).
    let expected = (127.5 + 127.5 + 40.0) / 3.0;
    assert!(
        (before - expected).abs() < 6.0,
        "the unadjusted preview shows the picture's own colours: {before} vs {expected}"
    );
    app_mut(&mut harness)
        .adjust_stack_mut()
        .ops
        .push(OpEntry::new(Op::Exposure(Exposure { ev: 1.5 })));
    harness.run_ok();
    step_until(
        &mut harness,
        "the new preview",
        Duration::from_secs(30),
        |h| app(h).adjust_preview_ready(),
    );
    harness.run_ok();
    let after = mean_in_preview(&mut harness);
    assert!(
        after > before + 20.0,
        "brighter on the GPU: {before} -> {after}"
    );
    assert!(app(&harness).adjust_histogram().is_some());
}

/// Pictures with settings worth keeping private (a prompt) and a seed for file names, saved
/// before the studio opens; picture 1 carries a stored +1 EV adjustment.
fn studio_for_export() -> StudioHarness {
    studio_with_gallery(|g| {
        for i in 0..2u8 {
            let meta = atelier::gallery::ImageMeta {
                prompt: "a secret lighthouse".into(),
                seed: Some(70 + u64::from(i)),
                ..Default::default()
            };
            g.save_image(&gradient(64, 48, 40 + i * 100), meta)
                .expect("saving a picture");
        }
        g.set_adjustments(
            1,
            Some(r#"{"version":1,"ops":[{"op":"exposure","ev":1.0}]}"#),
        )
        .expect("storing an adjustment");
    })
}

/// Selects picture `id` and opens the Export window from its details pane.
fn open_export_window(harness: &mut StudioHarness, id: i64) {
    harness.get_by_label("Library").click();
    harness.run_ok();
    select_picture(harness, id);
    click_until(harness, "Export…", |h| {
        has_label_containing(h, "Export folder")
    });
}

/// Types `dir` as the Export window's folder.
fn set_export_folder(harness: &mut StudioHarness, dir: &std::path::Path) {
    harness.get_by_label("Export folder").click();
    harness.step();
    harness
        .get_by_label("Export folder")
        .type_text(&dir.display().to_string());
    harness.run_ok();
}

/// The finished files in `dir`: not the temporary files an export writes before renaming
/// them into place (`.NAME.tmp-PID`), which a test under load could otherwise catch half
/// written.
fn files_in(dir: &std::path::Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.path())
                .filter(|p| {
                    !p.file_name()
                        .is_some_and(|n| n.to_string_lossy().starts_with('.'))
                })
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    files
}

/// Clicks the window's Export button and waits for the one new file it writes.
fn export_one(harness: &mut StudioHarness, dir: &std::path::Path) -> PathBuf {
    let before = files_in(dir);
    harness.get_by_label("Export 1").click();
    step_until(harness, "the exported file", Duration::from_secs(60), |h| {
        files_in(dir).len() > before.len() || has_label_containing(h, "Export failed")
    });
    assert!(
        !has_label_containing(harness, "Export failed"),
        "{:?}",
        labels_containing(harness, "Export failed")
    );
    files_in(dir)
        .into_iter()
        .find(|f| !before.contains(f))
        .expect("a new file")
}

/// A folder inside target/tmp (so `cargo clean` removes it), kept after the test.
fn kept_dir(prefix: &str) -> PathBuf {
    tempfile::Builder::new()
        .prefix(prefix)
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .expect("creating a temp dir")
        .keep()
}

fn export_dir() -> PathBuf {
    kept_dir("atelier-ui-export-")
}

#[test]
fn export_window_strip_switch_keeps_the_prompt_out_of_the_file() {
    let mut harness = studio_for_export();
    let dir = export_dir();
    open_export_window(&mut harness, 2);
    set_export_folder(&mut harness, &dir);
    // As it was: the prompt travels with the picture.
    let kept = std::fs::read(export_one(&mut harness, &dir)).unwrap();
    let meta = atelier::gallery::metadata::read_embedded(&kept)
        .meta()
        .expect("settings embedded");
    assert_eq!(meta.prompt, "a secret lighthouse");
    // The privacy switch: no prompt, no settings, the AI marking stays.
    harness
        .get_by_label("Strip prompts and settings (privacy; the AI-generated marking stays)")
        .click();
    harness.run_ok();
    assert!(app(&harness).state().export.options.strip_metadata);
    let stripped = std::fs::read(export_one(&mut harness, &dir)).unwrap();
    let text = String::from_utf8_lossy(&stripped);
    assert!(!text.contains("lighthouse"), "the prompt leaked");
    assert!(!text.contains("Steps:") && !text.contains("\"seed\""));
    assert!(text.contains(atelier::gallery::metadata::IPTC_AI_SOURCE));
    harness.check_accessibility();
}

#[test]
fn export_window_format_and_jpeg_quality_are_what_is_written() {
    let mut harness = studio_for_export();
    let dir = export_dir();
    open_export_window(&mut harness, 2);
    set_export_folder(&mut harness, &dir);
    harness.get_by_label("JPEG").click();
    harness.run_ok();
    harness
        .get_by_role_and_label(egui::accesskit::Role::Slider, "JPEG quality")
        .set_value_accesskit(95.0);
    harness.run_ok();
    let fine = export_one(&mut harness, &dir);
    harness
        .get_by_role_and_label(egui::accesskit::Role::Slider, "JPEG quality")
        .set_value_accesskit(5.0);
    harness.run_ok();
    assert_eq!(app(&harness).state().export.options.jpeg_quality, 5);
    let coarse = export_one(&mut harness, &dir);
    for f in [&fine, &coarse] {
        let bytes = std::fs::read(f).unwrap();
        assert_eq!(
            image::guess_format(&bytes).unwrap(),
            image::ImageFormat::Jpeg
        );
        assert_eq!(f.extension().unwrap(), "jpg");
    }
    let original = gradient(64, 48, 140);
    let error = |f: &PathBuf| {
        let img = common::open_image(f).to_rgb8();
        img.as_raw()
            .iter()
            .zip(original.as_raw())
            .map(|(a, b)| (i32::from(*a) - i32::from(*b)).unsigned_abs())
            .sum::<u32>()
    };
    assert!(
        error(&coarse) > 2 * error(&fine),
        "quality 5 should lose far more than 95: {} vs {}",
        error(&coarse),
        error(&fine)
    );
    harness.get_by_label("WEBP").click();
    harness.run_ok();
    let webp = std::fs::read(export_one(&mut harness, &dir)).unwrap();
    assert_eq!(
        image::guess_format(&webp).unwrap(),
        image::ImageFormat::WebP
    );
}

#[test]
fn export_window_name_pattern_names_the_file() {
    let mut harness = studio_for_export();
    let dir = export_dir();
    open_export_window(&mut harness, 2);
    set_export_folder(&mut harness, &dir);
    harness.get_by_label("File names").click();
    harness.step();
    harness.key_press_modifiers(Modifiers::COMMAND, Key::A);
    harness
        .get_by_label("File names")
        .type_text("pic-{id}-seed-{seed}");
    harness.run_ok();
    let file = export_one(&mut harness, &dir);
    assert_eq!(file.file_name().unwrap(), "pic-2-seed-71.png");
}

#[test]
fn export_window_apply_adjustments_switch_decides_the_pixels() {
    let mut harness = studio_for_export();
    let dir = export_dir();
    open_export_window(&mut harness, 1);
    set_export_folder(&mut harness, &dir);
    let mean = |f: &PathBuf| {
        let img = common::open_image(f).to_rgb8();
        img.as_raw().iter().map(|&v| f64::from(v)).sum::<f64>() / img.as_raw().len() as f64
    };
    let adjusted = export_one(&mut harness, &dir);
    harness.get_by_label("Apply adjustments").click();
    harness.run_ok();
    assert!(!app(&harness).state().export.options.apply_adjustments);
    let original = export_one(&mut harness, &dir);
    assert_eq!(
        common::open_image(&original).to_rgb8(),
        gradient(64, 48, 40),
        "without adjustments: the pixels as made"
    );
    assert!(
        mean(&adjusted) > mean(&original) + 20.0,
        "+1 EV applied: {} vs {}",
        mean(&adjusted),
        mean(&original)
    );
}

#[test]
fn results_are_saved_while_the_window_is_hidden() {
    tiny_models_dir();
    let gallery = kept_dir("atelier-ui-gallery-");
    let ctx = egui::Context::default();
    let mut studio = StudioApp::new_headless(
        &ctx,
        StudioOptions {
            extra_model_dirs: vec![tiny_models_dir().clone()],
            gallery_dir: Some(gallery.clone()),
            ..Default::default()
        },
    );
    let mut frame = eframe::Frame::_new_kittest();
    // Never a frame, only `App::logic`: what eframe runs while the window is minimised.
    let mut logic_until =
        |studio: &mut StudioApp, what: &str, done: &dyn Fn(&StudioApp) -> bool| {
            let start = Instant::now();
            while !done(studio) {
                assert!(
                    start.elapsed() < JOB_TIMEOUT,
                    "timed out waiting for {what}"
                );
                eframe::App::logic(studio, &ctx, &mut frame);
                std::thread::sleep(Duration::from_millis(10));
            }
        };
    logic_until(&mut studio, "the model scan", &|s| {
        !s.is_scanning_models() && s.state().selected_model.is_some()
    });
    {
        let settings = studio.prompt_settings_mut();
        settings.prompt = "made while hidden".into();
        settings.steps = 2;
        settings.width = 64;
        settings.height = 64;
    }
    studio.queue_generation();
    logic_until(&mut studio, "the saved result", &|s| s.results_len() == 1);
    let catalog = atelier::gallery::Catalog::open_read_only(&gallery.join("catalog.db")).unwrap();
    let records = catalog
        .records(&atelier::gallery::Query::default(), 0, 10)
        .unwrap();
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].meta.prompt, "made while hidden");
    assert!(gallery.join(&records[0].file).is_file());
}

/// Drops a file with these bytes on the window.
fn drop_file(harness: &mut StudioHarness, name: &str, bytes: Vec<u8>) {
    harness
        .input_mut()
        .dropped_files
        .push(std::sync::Arc::new(DroppedPng {
            path: PathBuf::from(format!("/nowhere/{name}")),
            bytes,
        }));
}

#[test]
fn hostile_images_dropped_on_the_studio_are_refused_without_decoding_them() {
    let mut harness = ready_studio();
    // A 100,000 x 100,000 picture claimed in a 70-byte file: 30 GB if decoded.
    let bomb = common::png_claiming(100_000, 100_000);
    drop_file(&mut harness, "bomb.png", bomb.clone());
    step_until(&mut harness, "the refusal", Duration::from_secs(30), |h| {
        has_label_containing(h, "bomb.png is not an image Atelier can read")
    });
    assert!(app(&harness).sketch().background().is_none());
    // Dropped on the library: the gallery thread's import refuses it the same way.
    let dir = export_dir();
    std::fs::write(dir.join("bomb.png"), &bomb).unwrap();
    std::fs::write(dir.join("garbage.png"), b"\x89PNG not really").unwrap();
    harness.get_by_label("Library").click();
    harness.run_ok();
    step_until(&mut harness, "the gallery", Duration::from_secs(30), |h| {
        app(h).gallery_is_open()
    });
    for name in ["bomb.png", "garbage.png"] {
        harness
            .input_mut()
            .dropped_files
            .push(std::sync::Arc::new(DroppedPng {
                path: dir.join(name),
                bytes: Vec::new(),
            }));
    }
    step_until(
        &mut harness,
        "the import's report",
        Duration::from_secs(30),
        |h| has_label_containing(h, "Imported 0, 2 failed"),
    );
    assert_eq!(app(&harness).library_len(), 0);
}

#[test]
fn a_job_that_panics_fails_with_a_message_and_the_next_one_runs() {
    let mut harness = ready_studio();
    quick_settings(&mut harness, 2);
    type_prompt_and_generate(&mut harness, PANIC_PROMPT);
    step_until(&mut harness, "the failure", JOB_TIMEOUT, |h| {
        has_label_containing(h, "internal error")
    });
    assert_eq!(app(&harness).active_jobs(), 0, "no job hangs");
    harness.get_by_label("Clear finished").click();
    harness.run_ok();
    app_mut(&mut harness).prompt_settings_mut().prompt = "after the panic".into();
    harness.run_ok();
    harness.key_press_modifiers(Modifiers::CTRL | Modifiers::COMMAND, Key::Enter);
    wait_for_gallery(&mut harness);
}

#[test]
fn a_rating_that_cannot_be_stored_says_so() {
    let mut harness = studio_with_pictures(&[gradient(32, 32, 10)]);
    harness.get_by_label("Library").click();
    harness.run_ok();
    select_picture(&mut harness, 1);
    // The file vanishes behind the studio's back: the rating cannot be written into it.
    let file = app(&harness).gallery_dir().join(record(&harness, 1).file);
    std::fs::remove_file(&file).unwrap();
    // Pressed again until it takes: on a loaded machine the first press can land before the
    // selection has reached the details pane (then it rates nothing and nothing fails).
    let start = Instant::now();
    while !has_label_containing(&harness, "Rating failed") {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "timed out waiting for the rating error"
        );
        harness.key_press(Key::Num4);
        for _ in 0..20 {
            harness.step();
            if has_label_containing(&harness, "Rating failed") {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    let text = labels_containing(&harness, "Rating failed").join(" ");
    assert!(text.contains(&file.display().to_string()), "{text}");
}

/// A studio whose gallery holds a job an earlier session left with its first of two
/// pictures made.
fn studio_with_unfinished_job() -> (StudioHarness, String) {
    let uid = std::sync::Mutex::new(String::new());
    let harness = studio_with_gallery(|g| {
        let request = atelier::generation::GenerationRequest {
            model_dir: tiny_models_dir().join("tiny-sd15"),
            prompt: "left behind by a crash".into(),
            seed: 500,
            steps: 2,
            width: 64,
            height: 64,
            batch: 2,
            ..Default::default()
        };
        let job = g.add_job(&request, &Default::default()).unwrap();
        let first = atelier::gallery::ImageMeta {
            prompt: request.prompt.clone(),
            seed: Some(500),
            job: Some(atelier::gallery::job_ref(&job.uid, 0)),
            ..Default::default()
        };
        g.save_image(&gradient(64, 64, 1), first).unwrap();
        *uid.lock().unwrap() = job.uid;
    });
    let uid = uid.into_inner().unwrap();
    (harness, uid)
}

#[test]
fn unfinished_jobs_from_a_crash_are_offered_and_resume_only_what_is_missing() {
    let (mut harness, _) = studio_with_unfinished_job();
    step_until(
        &mut harness,
        "the unfinished jobs",
        Duration::from_secs(30),
        |h| {
            has_label_containing(
                h,
                "1 unfinished job(s) from the last session, 1 picture(s) to make",
            )
        },
    );
    assert!(has_label_containing(
        &harness,
        "left behind by a crash (1 of 2)"
    ));
    harness.get_by_label("Resume all").click();
    step_until(&mut harness, "the resumed picture", JOB_TIMEOUT, |h| {
        app(h).results_len() == 1 || has_label_containing(h, "failed:")
    });
    assert!(!has_label_containing(&harness, "from the last session"));
    // Only the missing picture was made: seed 501, and the job is gone from the catalog.
    step_until(
        &mut harness,
        "the job's record to go",
        Duration::from_secs(30),
        |h| catalog(h).jobs().unwrap().is_empty(),
    );
    let records = catalog(&harness)
        .records(&atelier::gallery::Query::default(), 0, 10)
        .unwrap();
    let mut seeds: Vec<u64> = records.iter().filter_map(|r| r.meta.seed).collect();
    seeds.sort();
    assert_eq!(seeds, vec![500, 501]);
    harness.check_accessibility();
}

#[test]
fn unfinished_jobs_can_be_discarded() {
    let (mut harness, uid) = studio_with_unfinished_job();
    step_until(
        &mut harness,
        "the unfinished jobs",
        Duration::from_secs(30),
        |h| has_label_containing(h, "unfinished job(s)"),
    );
    harness.get_by_label("Discard").click();
    harness.run_ok();
    step_until(
        &mut harness,
        "the job's record to go",
        Duration::from_secs(30),
        |h| catalog(h).jobs().unwrap().iter().all(|j| j.uid != uid),
    );
    assert!(!has_label_containing(&harness, "from the last session"));
    assert!(has_label_containing(
        &harness,
        "Discarded 1 unfinished job(s)."
    ));
    assert_eq!(app(&harness).active_jobs(), 0);
}

#[test]
fn the_prompt_and_the_sketch_survive_a_crash() {
    let gallery = kept_dir("atelier-ui-gallery-");
    let options = StudioOptions {
        extra_model_dirs: vec![tiny_models_dir().clone()],
        gallery_dir: Some(gallery.clone()),
        ..Default::default()
    };
    {
        let mut harness = studio_harness_with(options.clone());
        harness.run_ok();
        harness.get_by_label("Prompt").click();
        harness.step();
        harness
            .get_by_label("Prompt")
            .type_text("kept through a crash");
        draw_line(&mut harness, 0.3, 0.6);
        assert_eq!(
            app(&harness)
                .sketch()
                .strokes(atelier::sketch::Layer::Paint)
                .len(),
            1
        );
        // A line on the control layer too: the layer, its strokes and its settings are kept.
        harness.get_by_label("Control").click();
        harness.run_ok();
        draw_line(&mut harness, 0.5, 0.8);
        step_until(
            &mut harness,
            "the session on disk",
            Duration::from_secs(30),
            |h| app(h).session_saved(),
        );
        // A change of the layer's settings alone is kept too.
        let mut settings = app(&harness).sketch().controls()[0].settings.clone();
        settings.scale = 0.35;
        app_mut(&mut harness).set_control_settings(0, settings);
        harness.run_ok();
        assert!(!app(&harness).session_saved(), "the change is noticed");
        step_until(
            &mut harness,
            "the settings on disk",
            Duration::from_secs(30),
            |h| app(h).session_saved(),
        );
        // The studio goes away without eframe's save (a crash, a kill).
    }
    let mut harness = studio_harness_with(options);
    harness.run_ok();
    let studio = app(&harness);
    assert_eq!(studio.state().prompt.prompt, "kept through a crash");
    assert_eq!(
        studio.sketch().strokes(atelier::sketch::Layer::Paint).len(),
        1
    );
    assert_eq!(
        studio
            .sketch()
            .strokes(atelier::sketch::Layer::Control(0))
            .len(),
        1
    );
    assert_eq!(
        studio.state().canvas.layer,
        atelier::sketch::Layer::Control(0)
    );
    assert_eq!(studio.sketch().controls()[0].settings.scale, 0.35);
    assert_eq!(
        harness.get_by_label("Prompt").value().as_deref(),
        Some("kept through a crash")
    );
}

/// The prompt box counts tokens as the model will see them: chunks of 75, BREAK opening a new
/// one, attention brackets not counted, a long prompt never cut.
#[test]
fn prompt_token_counter_follows_chunks() {
    let mut harness = ready_studio();
    let count = |h: &StudioHarness| -> Option<(usize, usize)> {
        labels_containing(h, " / ").iter().find_map(|l| {
            let (a, b) = l.split_once(" / ")?;
            Some((a.trim().parse().ok()?, b.trim().parse().ok()?))
        })
    };
    app_mut(&mut harness).prompt_settings_mut().prompt = "a red cat".into();
    step_until(
        &mut harness,
        "the token count",
        Duration::from_secs(30),
        |h| count(h).is_some_and(|(_, room)| room == 75),
    );
    let (plain, _) = count(&harness).unwrap();
    assert!(plain > 0);
    // Brackets and weights are syntax, not tokens.
    app_mut(&mut harness).prompt_settings_mut().prompt = "a ((red:1.3)) [cat]".into();
    step_until(
        &mut harness,
        "the weighted count",
        Duration::from_secs(10),
        |h| count(h) == Some((plain, 75)),
    );
    // BREAK opens a second chunk.
    app_mut(&mut harness).prompt_settings_mut().prompt = "a red cat BREAK a red cat".into();
    step_until(&mut harness, "two chunks", Duration::from_secs(10), |h| {
        count(h) == Some((2 * plain, 150))
    });
    // A prompt of many chunks is counted whole.
    app_mut(&mut harness).prompt_settings_mut().prompt = "a red cat, ".repeat(60);
    step_until(
        &mut harness,
        "a long prompt",
        Duration::from_secs(10),
        |h| count(h).is_some_and(|(used, room)| used > 150 && room >= 225),
    );
}

/// An AUTOMATIC1111 install added with "Add model folder…" (the dialog answered by the test):
/// the folder is remembered, its single-file checkpoint is found and chosen; its VAE is
/// offered and picked for the model; its LoRA is listed under the prompt, a click adds
/// `<lora:NAME:1>`, the weight is dragged to 0.5 (the tag follows) and Remove takes it out
/// again. The picture made then names the LoRA, the VAE and their hashes as A1111 does.
#[test]
fn a1111_folder_single_file_checkpoint_vae_and_lora_picker() {
    let root = kept_dir("atelier-ui-webui-");
    let sd = root.join("models/Stable-diffusion");
    std::fs::create_dir_all(&sd).unwrap();
    atelier::models::export::write_single_file(
        &tiny_models_dir().join("tiny-sd15"),
        &sd.join("dreamy.safetensors"),
        Default::default(),
    )
    .unwrap();
    std::fs::create_dir_all(root.join("models/Lora")).unwrap();
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/reference/lora/sd15-kohya.safetensors"),
        root.join("models/Lora/sd15-kohya.safetensors"),
    )
    .unwrap();
    std::fs::create_dir_all(root.join("models/VAE")).unwrap();
    std::fs::copy(
        tiny_models_dir().join("tiny-sd15/vae/diffusion_pytorch_model.safetensors"),
        root.join("models/VAE/crisp-vae.safetensors"),
    )
    .unwrap();
    let answer = root.clone();
    let mut harness = studio_harness_with(StudioOptions {
        without_embedded_models: true,
        folder_picker: Some(atelier::app::FolderPicker(std::sync::Arc::new(move || {
            Some(answer.clone())
        }))),
        ..Default::default()
    });
    step_until(
        &mut harness,
        "the empty state",
        Duration::from_secs(30),
        |h| !app(h).is_scanning_models() && has_label_containing(h, "No model found"),
    );
    harness.get_by_label("Add model folder…").click();
    step_until(
        &mut harness,
        "the model scan",
        Duration::from_secs(30),
        |h| {
            let app = app(h);
            !app.is_scanning_models() && app.state().selected_model.is_some()
        },
    );
    assert_eq!(app(&harness).state().model_folders, vec![root.clone()]);
    assert_eq!(
        app(&harness).state().selected_model.as_deref(),
        Some(sd.join("dreamy.safetensors").as_path())
    );
    // The VAE picker: the model's own until another is chosen, then that one for this model.
    harness
        .get_by_role_and_label(egui::accesskit::Role::ComboBox, "VAE")
        .click();
    harness.run_ok();
    harness.get_by_label("crisp-vae").click();
    harness.run_ok();
    assert_eq!(
        app(&harness)
            .state()
            .model_vaes
            .get(&sd.join("dreamy.safetensors")),
        Some(&root.join("models/VAE/crisp-vae.safetensors"))
    );
    harness.get_by_label("LoRAs (1)").click();
    harness.run_ok();
    harness.get_by_label("sd15-kohya").click();
    harness.run_ok();
    assert!(
        app(&harness)
            .state()
            .prompt
            .prompt
            .ends_with("<lora:sd15-kohya:1>"),
        "{}",
        app(&harness).state().prompt.prompt
    );
    harness
        .get_by_role_and_label(egui::accesskit::Role::SpinButton, "LoRA sd15-kohya")
        .set_value_accesskit(0.5);
    harness.run_ok();
    assert!(app(&harness)
        .state()
        .prompt
        .prompt
        .ends_with("<lora:sd15-kohya:0.5>"));
    harness.get_by_label("Remove").click();
    harness.run_ok();
    assert!(!app(&harness).state().prompt.prompt.contains("<lora:"));
    // Generated with the LoRA, the picture names it and its hash as A1111 does.
    harness.get_by_label("sd15-kohya").click();
    harness.run_ok();
    step_until(&mut harness, "the hashes", Duration::from_secs(30), |h| {
        !app(h).is_hashing_models()
    });
    quick_settings(&mut harness, 2);
    app_mut(&mut harness).queue_generation();
    wait_for_gallery(&mut harness);
    assert!(!has_label_containing(&harness, "failed:"));
    let meta = wait_for_record(&mut harness, 1, "the saved picture", |_| true).meta;
    assert!(
        meta.prompt.ends_with("<lora:sd15-kohya:1>"),
        "{}",
        meta.prompt
    );
    let hash =
        atelier::models::hash::lora_short_hash(&root.join("models/Lora/sd15-kohya.safetensors"))
            .unwrap();
    assert_eq!(
        meta.extra.get("Lora hashes").map(String::as_str),
        Some(format!("sd15-kohya: {hash}").as_str())
    );
    assert_eq!(meta.model_name.as_deref(), Some("dreamy"));
    assert_eq!(meta.model_hash.as_ref().map(String::len), Some(10));
    assert_eq!(meta.extra.get("VAE").map(String::as_str), Some("crisp-vae"));
    let vae_hash =
        atelier::models::hash::a1111_short_hash(&root.join("models/VAE/crisp-vae.safetensors"))
            .unwrap();
    assert_eq!(meta.extra.get("VAE hash"), Some(&vae_hash));
}

/// The control layer: a ControlNet found in an install's `models/ControlNet` folder is offered
/// on the canvas; lines drawn on the Control layer go to that layer only, and Generate sends
/// them, white on black at the output size, as the ControlNet's control image; the picture
/// names the ControlNet as sd-webui-controlnet does.
#[test]
fn lines_on_the_control_layer_steer_through_the_chosen_controlnet() {
    let root = install_with_controlnets("atelier-ui-control-", &[("sd15-a", "scribble-a")]);
    let mut harness = studio_over_install(&root);
    harness.get_by_label("Control").click();
    harness.run_ok();
    choose_controlnet(&mut harness, "scribble-a");
    draw_line(&mut harness, 0.2, 0.8);
    let sketch = app(&harness).sketch();
    assert_eq!(sketch.strokes(atelier::sketch::Layer::Control(0)).len(), 1);
    assert!(sketch.strokes(atelier::sketch::Layer::Paint).is_empty());
    quick_settings(&mut harness, 2);
    app_mut(&mut harness).queue_generation();
    wait_for_gallery(&mut harness);
    let request = app(&harness).last_result_request().unwrap().clone();
    assert_eq!(request.controlnets.len(), 1);
    // The subject pass is on by default while control layers steer.
    assert!(request.subject_pass);
    let spec = &request.controlnets[0];
    assert_eq!(spec.path, root.join("models/ControlNet/scribble-a"));
    let image = spec.image.as_ref().unwrap();
    assert_eq!(image.dimensions(), (64, 64));
    // The diagonal line, white on black.
    assert_eq!(image.get_pixel(32, 32).0, [255, 255, 255]);
    assert_eq!(image.get_pixel(60, 4).0, [0, 0, 0]);
    let meta = wait_for_record(&mut harness, 1, "the saved picture", |_| true).meta;
    let entry = meta.extra.get("ControlNet 0").cloned().unwrap_or_default();
    assert!(entry.contains("Model: scribble-a"), "{entry}");
    // The control image is kept with the picture, named in its settings (in the catalog and
    // embedded in the file), and "reuse settings" puts it back on the control layer.
    assert_eq!(meta.control_images.len(), 1, "{meta:?}");
    let gallery = app(&harness).gallery_dir().to_path_buf();
    let kept = atelier::imageio::load_image_file(&gallery.join(&meta.control_images[0]))
        .unwrap()
        .to_luma8();
    assert_eq!(kept.dimensions(), (64, 64));
    assert_eq!(kept.get_pixel(32, 32)[0], 255);
    assert_eq!(kept.get_pixel(60, 4)[0], 0);
    let file = record(&harness, 1).file;
    let embedded = atelier::gallery::embedded_meta_of_file(&gallery.join(file))
        .unwrap()
        .unwrap();
    assert_eq!(embedded.control_images, meta.control_images);
    app_mut(&mut harness).clear_sketch();
    let mut changed = app(&harness).sketch().controls()[0].settings.clone();
    changed.scale = 0.3;
    changed.controlnet = None;
    app_mut(&mut harness).set_control_settings(0, changed);
    assert!(app(&harness).sketch().is_empty());
    assert_eq!(
        meta.extra.get("Subject pass").map(String::as_str),
        Some("on")
    );
    app_mut(&mut harness).canvas_settings_mut().subject_pass = false;
    app_mut(&mut harness).reuse_picture(1);
    assert!(
        app(&harness).state().canvas.subject_pass,
        "reuse brings the subject pass back"
    );
    step_until(&mut harness, "the control image back", JOB_TIMEOUT, |h| {
        control_image(h, 0).is_some()
    });
    assert_eq!(app(&harness).sketch().controls().len(), 1);
    let control = &app(&harness).sketch().controls()[0].settings;
    assert_eq!(control.scale, 1.0);
    assert_eq!(
        control.controlnet.as_deref(),
        Some(root.join("models/ControlNet/scribble-a").as_path())
    );
    let again = app(&harness).sketch().rasterize_control(0, 64, 64);
    assert_eq!(
        again.as_raw(),
        image.as_raw(),
        "the same control image goes out again"
    );
}

/// A control layer that names no ControlNet uses the model's own: one named after the model
/// (`tiny-ref-scribble` for `tiny-ref`, as Atelier Mini Scribble is for Atelier Mini), shown as
/// such in the layer's ControlNet list; without one, generating says what is missing.
#[test]
fn a_control_layer_without_a_choice_uses_the_models_own_controlnet() {
    let root = install_with_controlnets("atelier-ui-own-control-", &[("sd15-b", "other-lines")]);
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/reference");
    let mut harness = studio_over_install(&root);
    harness.get_by_label("Control").click();
    harness.run_ok();
    draw_line(&mut harness, 0.2, 0.8);
    quick_settings(&mut harness, 2);
    app_mut(&mut harness).queue_generation();
    harness.run_ok();
    assert!(
        has_label_containing(&harness, "no ControlNet is chosen"),
        "a clear refusal"
    );
    assert_eq!(app(&harness).results_len(), 0);
    // The model's own ControlNet installed: the layer uses it.
    common::copy_dir(
        &fixtures.join("controlnet/sd15-a"),
        &root.join("models/ControlNet/tiny-ref-scribble"),
    );
    harness.get_by_label("Rescan").click();
    harness.run_ok();
    step_until(&mut harness, "the rescan", Duration::from_secs(30), |h| {
        !app(h).is_scanning_models()
    });
    harness.run_ok();
    let shown = harness
        .get_by_role_and_label(egui::accesskit::Role::ComboBox, "ControlNet")
        .value()
        .unwrap_or_default();
    assert_eq!(shown, "The model's own (tiny-ref-scribble)");
    app_mut(&mut harness).queue_generation();
    wait_for_gallery(&mut harness);
    let request = app(&harness).last_result_request().unwrap().clone();
    assert_eq!(request.controlnets.len(), 1);
    assert_eq!(
        request.controlnets[0].path,
        root.join("models/ControlNet/tiny-ref-scribble")
    );
    assert_eq!(
        app(&harness).sketch().controls()[0].settings.controlnet,
        None
    );
}

/// One control layer per ControlNet: each layer has its own lines and ControlNet and both
/// steer together; a hidden layer still steers and one turned off does not; removing a layer
/// is undoable; reusing the picture brings both layers back with their ControlNets.
#[test]
fn each_control_layer_steers_through_its_own_controlnet() {
    let root = install_with_controlnets(
        "atelier-ui-two-controls-",
        &[("sd15-a", "scribble-a"), ("sd15-b", "canny-b")],
    );
    let mut harness = studio_over_install(&root);
    harness.get_by_label("Control").click();
    harness.run_ok();
    choose_controlnet(&mut harness, "scribble-a");
    draw_line(&mut harness, 0.2, 0.8);
    harness.get_by_label("+ Control").click();
    harness.run_ok();
    assert_eq!(
        app(&harness).state().canvas.layer,
        atelier::sketch::Layer::Control(1)
    );
    choose_controlnet(&mut harness, "canny-b");
    draw_line(&mut harness, 0.02, 0.2);
    let doc = app(&harness).sketch();
    assert_eq!(doc.controls().len(), 2);
    assert_eq!(doc.strokes(atelier::sketch::Layer::Control(0)).len(), 1);
    assert_eq!(doc.strokes(atelier::sketch::Layer::Control(1)).len(), 1);
    // The second layer hidden: it still steers.
    harness.get_by_label("Show").click();
    harness.run_ok();
    assert!(!app(&harness).sketch().controls()[1].settings.visible);
    quick_settings(&mut harness, 2);
    app_mut(&mut harness).queue_generation();
    wait_for_gallery(&mut harness);
    let request = app(&harness).last_result_request().unwrap().clone();
    let paths: Vec<_> = request.controlnets.iter().map(|c| c.path.clone()).collect();
    assert_eq!(
        paths,
        vec![
            root.join("models/ControlNet/scribble-a"),
            root.join("models/ControlNet/canny-b")
        ]
    );
    let first = request.controlnets[0].image.clone().unwrap();
    let second = request.controlnets[1].image.clone().unwrap();
    assert_eq!(first.get_pixel(32, 32).0, [255; 3], "the long line");
    assert_eq!(
        second.get_pixel(32, 32).0,
        [0; 3],
        "not on the second layer"
    );
    let white: Vec<(u32, u32)> = second
        .enumerate_pixels()
        .filter(|(_, _, p)| p.0 == [255; 3])
        .map(|(x, y, _)| (x, y))
        .collect();
    assert!(!white.is_empty(), "the short line");
    assert!(white.iter().all(|&(x, y)| x < 32 && y < 32), "{white:?}");
    let meta = wait_for_record(&mut harness, 1, "the saved picture", |_| true).meta;
    assert_eq!(meta.control_images.len(), 2);
    assert!(meta.extra["ControlNet 1"].contains("Model: canny-b"));
    // Turned off, the second layer does not steer.
    harness.get_by_label("Steer").click();
    harness.run_ok();
    app_mut(&mut harness).queue_generation();
    step_until(&mut harness, "the second picture", JOB_TIMEOUT, |h| {
        app(h).results_len() > 1 || has_label_containing(h, "failed:")
    });
    let request = app(&harness).last_result_request().unwrap().clone();
    assert_eq!(request.controlnets.len(), 1);
    // Removing the first layer is undoable.
    harness.get_by_label("Control 1").click();
    harness.run_ok();
    harness.get_by_label("Remove layer").click();
    harness.run_ok();
    assert_eq!(app(&harness).sketch().controls().len(), 1);
    assert_eq!(
        app(&harness).state().canvas.layer,
        atelier::sketch::Layer::Control(0)
    );
    harness.get_by_label("Undo").click();
    harness.run_ok();
    assert_eq!(app(&harness).sketch().controls().len(), 2);
    // Undoing the second layer's line and addition leaves the first chosen.
    harness.get_by_label("Control 2").click();
    harness.run_ok();
    let mut undos = 0;
    while app(&harness).sketch().controls().len() > 1 && undos < 5 {
        harness.get_by_label("Undo").click();
        harness.run_ok();
        undos += 1;
    }
    assert_eq!(undos, 2, "its line, then the layer");
    assert_eq!(
        app(&harness).state().canvas.layer,
        atelier::sketch::Layer::Control(0),
        "drawing goes to a layer that exists"
    );
    for _ in 0..undos {
        harness.get_by_label("Redo").click();
        harness.run_ok();
    }
    assert_eq!(app(&harness).sketch().controls().len(), 2);
    // The first picture's settings bring back its two layers, each with its ControlNet and
    // its control image.
    app_mut(&mut harness).reuse_picture(1);
    step_until(&mut harness, "the control layers back", JOB_TIMEOUT, |h| {
        control_image(h, 1).is_some()
    });
    let doc = app(&harness).sketch();
    assert_eq!(doc.controls().len(), 2);
    assert!(doc.strokes(atelier::sketch::Layer::Control(0)).is_empty());
    let nets: Vec<_> = doc
        .controls()
        .iter()
        .map(|c| c.settings.controlnet.clone())
        .collect();
    assert_eq!(nets, paths.into_iter().map(Some).collect::<Vec<_>>());
    assert_eq!(doc.rasterize_control(0, 64, 64).as_raw(), first.as_raw());
    assert_eq!(doc.rasterize_control(1, 64, 64).as_raw(), second.as_raw());
}

/// Live mode: switched on, the studio generates a quarter of a second after the last change,
/// with the panel's seed; a change while that picture is being made cancels it for a new
/// one; the newest picture is shown beside the canvas and nothing goes to the queue or the
/// gallery.
#[test]
fn live_mode_follows_changes_and_cancels_the_stale_job() {
    let mut harness = ready_studio();
    quick_settings(&mut harness, 150);
    app_mut(&mut harness).prompt_settings_mut().random_seed = false;
    harness.get_by_label("Live").click();
    step_until(
        &mut harness,
        "the first live job",
        Duration::from_secs(10),
        |h| app(h).live_counts().0 >= 1,
    );
    // A stroke while it runs: after the quiet period a new job replaces the stale one.
    draw_line(&mut harness, 0.3, 0.4);
    step_until(
        &mut harness,
        "the second live job",
        Duration::from_secs(10),
        |h| app(h).live_counts().0 >= 2,
    );
    assert!(
        app(&harness).live_counts().1 >= 1,
        "{:?}",
        app(&harness).live_counts()
    );
    step_until(&mut harness, "the live picture", JOB_TIMEOUT, |h| {
        app(h).has_live_picture() && !has_label_containing(h, "Live:")
    });
    assert!(harness.query_by_label("Live picture").is_some());
    assert_eq!(app(&harness).active_jobs(), 0);
    assert_eq!(app(&harness).results_len(), 0);
    // Nothing changes: nothing more is generated.
    let started = app(&harness).live_counts().0;
    let until = Instant::now() + Duration::from_millis(600);
    while Instant::now() < until {
        harness.step();
    }
    assert_eq!(app(&harness).live_counts().0, started);
}

/// Zooming the canvas view (pinch / Ctrl+wheel) keeps the point under the pointer in place,
/// strokes land where they are drawn at any zoom, and Fit shows the whole canvas again.
#[test]
fn zoomed_strokes_land_where_they_are_drawn() {
    let mut harness = ready_studio();
    let area = harness.get_by_label("Sketch canvas").rect();
    let (dw, dh) = {
        let doc = app(&harness).sketch();
        (doc.width_px() as f32, doc.height_px() as f32)
    };
    let fit = (area.width() / dw).min(area.height() / dh);
    let pointer = area.center() + egui::vec2(20.0, 10.0);
    // The canvas point under the pointer before zooming.
    let before = [dw / 2.0 + 20.0 / fit, dh / 2.0 + 10.0 / fit];
    harness.hover_at(pointer);
    harness.event(egui::Event::Zoom(2.0));
    harness.run_ok();
    let zoom = app(&harness).state().canvas.view_zoom;
    assert!((zoom - 2.0).abs() < 1e-3, "zoom {zoom}");
    let dot = |h: &mut StudioHarness, at: egui::Pos2| {
        h.hover_at(at);
        h.drag_at(at);
        h.drop_at(at);
        h.run_ok();
    };
    dot(&mut harness, pointer);
    dot(&mut harness, pointer + egui::vec2(40.0, 0.0));
    let strokes = app(&harness)
        .sketch()
        .strokes(atelier::sketch::Layer::Paint)
        .to_vec();
    assert_eq!(strokes.len(), 2);
    let first = strokes[0].points_in_canvas[0];
    assert!(
        (first[0] - before[0]).abs() < 1.0 && (first[1] - before[1]).abs() < 1.0,
        "{first:?} vs {before:?}"
    );
    // 40 screen points at zoom 2 are half as many canvas pixels as at zoom 1.
    let second = strokes[1].points_in_canvas[0];
    let expect = before[0] + 40.0 / (fit * 2.0);
    assert!((second[0] - expect).abs() < 1.0, "{second:?} vs {expect}");
    harness.get_by_label("Fit").click();
    harness.run_ok();
    assert_eq!(app(&harness).state().canvas.view_zoom, 1.0);
    assert_eq!(app(&harness).state().canvas.view_pan, [0.0, 0.0]);
}

/// The canvas's tools: G picks the fill bucket and a click fills the empty canvas; I picks
/// the eyedropper, whose click takes the fill's colour as the brush colour and goes back to
/// the brush; E switches the eraser, [ and ] size the brush; a pen's pressure readings reach
/// the stroke.
#[test]
fn canvas_tools_fill_pick_eraser_size_and_pen_pressure() {
    use atelier::app::state::CanvasTool;
    use atelier::sketch::Layer;
    let mut harness = ready_studio();
    let area = harness.get_by_label("Sketch canvas").rect();
    let click = |h: &mut StudioHarness, at: egui::Pos2| {
        h.hover_at(at);
        h.drag_at(at);
        h.drop_at(at);
        h.run_ok();
    };
    app_mut(&mut harness).canvas_settings_mut().color_rgba = [200, 40, 10, 255];
    harness.key_press(Key::G);
    harness.run_ok();
    assert_eq!(app(&harness).state().canvas.tool, CanvasTool::Fill);
    click(&mut harness, area.center());
    let strokes = app(&harness).sketch().strokes(Layer::Paint).to_vec();
    assert_eq!(strokes.len(), 1);
    assert!(strokes[0].fill);
    let doc = app(&harness).sketch();
    let img = doc.rasterize(doc.width_px(), doc.height_px());
    assert!(
        img.pixels().all(|p| p.0 == [200, 40, 10]),
        "the empty canvas is filled"
    );

    app_mut(&mut harness).canvas_settings_mut().color_rgba = [0, 0, 255, 255];
    harness.key_press(Key::I);
    harness.run_ok();
    assert_eq!(app(&harness).state().canvas.tool, CanvasTool::Eyedropper);
    click(&mut harness, area.center() + egui::vec2(30.0, -20.0));
    let canvas = &app(&harness).state().canvas;
    assert_eq!(canvas.color_rgba, [200, 40, 10, 255]);
    assert_eq!(canvas.tool, CanvasTool::Brush);
    assert_eq!(
        app(&harness).sketch().strokes(Layer::Paint).len(),
        1,
        "picking paints nothing"
    );

    let size = app(&harness).state().canvas.brush_size_px;
    harness.key_press(Key::CloseBracket);
    harness.key_press(Key::E);
    harness.run_ok();
    let canvas = &app(&harness).state().canvas;
    assert!(canvas.brush_size_px > size && canvas.eraser);
    harness.key_press(Key::OpenBracket);
    harness.key_press(Key::E);
    harness.run_ok();
    let canvas = &app(&harness).state().canvas;
    assert!((canvas.brush_size_px - size).abs() < 1e-3 && !canvas.eraser);

    // A pen stroke: each move comes with a touch reading carrying the pressure.
    let (from, to) = (
        area.center() - egui::vec2(60.0, 0.0),
        area.center() + egui::vec2(60.0, 0.0),
    );
    let touch = |h: &mut StudioHarness, pos: egui::Pos2, force: f32| {
        h.event(egui::Event::Touch {
            device_id: egui::TouchDeviceId(1),
            id: egui::TouchId(1),
            phase: egui::TouchPhase::Move,
            pos,
            force: Some(force),
        });
    };
    harness.hover_at(from);
    touch(&mut harness, from, 0.9);
    harness.drag_at(from);
    let mid = from.lerp(to, 0.5);
    touch(&mut harness, mid, 0.5);
    harness.hover_at(mid);
    touch(&mut harness, to, 0.2);
    harness.hover_at(to);
    harness.drop_at(to);
    harness.run_ok();
    let strokes = app(&harness).sketch().strokes(Layer::Paint).to_vec();
    assert_eq!(strokes.len(), 2);
    let pen = &strokes[1];
    assert!(!pen.fill);
    assert_eq!(pen.pressures.len(), pen.points_in_canvas.len());
    assert!(
        pen.pressures.first() > pen.pressures.last(),
        "{:?}",
        pen.pressures
    );
}

/// A drawing dropped while the Control layer is chosen becomes the control layer's picture,
/// through its preprocessor: a black-on-white drawing comes out white on black (scribble);
/// another preprocessor runs again on the kept drawing; the background is left alone, and
/// "Remove picture" takes it off again.
#[test]
fn a_picture_dropped_on_the_control_layer_becomes_its_lines() {
    use atelier::sketch::control::Preprocessor;
    let mut harness = ready_studio();
    harness.get_by_label("Control").click();
    harness.run_ok();
    // A dark ring drawn on white paper.
    let drawing = image::RgbImage::from_fn(96, 96, |x, y| {
        let d = ((x as f32 - 48.0).powi(2) + (y as f32 - 48.0).powi(2)).sqrt();
        if (d - 30.0).abs() < 3.0 {
            image::Rgb([20, 20, 30])
        } else {
            image::Rgb([245, 240, 230])
        }
    });
    let mut png = Vec::new();
    drawing
        .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
        .unwrap();
    drop_file(&mut harness, "ring.png", png);
    step_until(&mut harness, "the control picture", JOB_TIMEOUT, |h| {
        control_image(h, 0).is_some()
    });
    let doc = app(&harness).sketch();
    assert!(doc.background().is_none(), "not the background");
    let lines = control_image(&harness, 0).unwrap();
    assert_eq!(lines.get_pixel(48, 18)[0], 255, "the ring, white");
    assert_eq!(lines.get_pixel(48, 48)[0], 0, "the paper, black");
    assert_eq!(lines.get_pixel(2, 2)[0], 0);
    let control = doc.rasterize_control(0, 64, 64);
    assert_eq!(control.get_pixel(32, 12).0, [255, 255, 255]);
    // Canny: the ring's two edges, not its filled stroke.
    let canny = atelier::sketch::ControlSettings {
        preprocessor: Preprocessor::from_name("canny").unwrap(),
        ..app(&harness).sketch().controls()[0].settings.clone()
    };
    app_mut(&mut harness).set_control_settings(0, canny);
    step_until(&mut harness, "the Canny lines", JOB_TIMEOUT, |h| {
        control_image(h, 0).is_some_and(|c| c != lines)
    });
    let edges = control_image(&harness, 0).unwrap();
    assert_eq!(edges.get_pixel(48, 48)[0], 0);
    let column: Vec<u8> = (0..96).map(|y| edges.get_pixel(48, y)[0]).collect();
    let rises = column
        .windows(2)
        .filter(|w| w[0] == 0 && w[1] == 255)
        .count();
    assert!(rises >= 4, "two edges on each side of the ring: {column:?}");
    harness.get_by_label("Remove picture").click();
    harness.run_ok();
    assert!(control_image(&harness, 0).is_none());
}

/// "Use as control" on a library picture puts its lines on the control layer.
#[test]
fn a_library_picture_can_be_used_as_control() {
    // White on black already: a bright square on a dark picture.
    let square = image::RgbImage::from_fn(64, 64, |x, y| {
        let inside = (16..48).contains(&x) && (16..48).contains(&y);
        image::Rgb(if inside {
            [250, 250, 250]
        } else {
            [10, 10, 10]
        })
    });
    let mut harness = studio_with_pictures(&[square]);
    step_until(&mut harness, "the gallery", Duration::from_secs(30), |h| {
        app(h).gallery_is_open()
    });
    harness.get_by_label("Library").click();
    harness.run_ok();
    step_until(&mut harness, "the grid", Duration::from_secs(30), |h| {
        app(h).library_len() == 1
    });
    select_picture(&mut harness, 1);
    click_until(&mut harness, "Use as control", |h| {
        control_image(h, 0).is_some()
    });
    let lines = control_image(&harness, 0).unwrap();
    // Scribble keeps light-on-dark as it is.
    assert_eq!(lines.get_pixel(32, 32)[0], 255);
    assert_eq!(lines.get_pixel(4, 4)[0], 0);
    assert_eq!(
        app(&harness).state().canvas.layer,
        atelier::sketch::Layer::Control(0)
    );
}

/// Fast decode: with a tiny decoder in an A1111 install's `models/VAE-taesd`, the prompt
/// panel's switch sends `--decoder tiny`'s request, the picture records `Decoder: tiny`, and
/// reusing its settings turns the switch back on.
#[test]
fn the_fast_decode_switch_decodes_with_the_tiny_decoder_found_beside_the_install() {
    let root = kept_dir("atelier-ui-taesd-");
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/reference");
    common::copy_dir(
        &fixtures.join("tiny-sd15"),
        &root.join("models/Stable-diffusion/tiny-ref"),
    );
    let approx = root.join("models/VAE-taesd");
    std::fs::create_dir_all(&approx).unwrap();
    for f in ["taesd_decoder.safetensors", "taesd_encoder.safetensors"] {
        std::fs::copy(fixtures.join("taesd").join(f), approx.join(f)).unwrap();
    }
    let mut harness = studio_over_install(&root);
    assert!(!app(&harness).state().prompt.fast_decode);
    harness
        .get_by_role_and_label(egui::accesskit::Role::CheckBox, "Fast decode")
        .click();
    harness.run_ok();
    assert!(app(&harness).state().prompt.fast_decode);
    quick_settings(&mut harness, 2);
    app_mut(&mut harness).queue_generation();
    wait_for_gallery(&mut harness);
    let request = app(&harness).last_result_request().unwrap().clone();
    assert_eq!(request.decoder, atelier::generation::DecoderChoice::Tiny);
    let meta = wait_for_record(&mut harness, 1, "the saved picture", |r| {
        r.meta.extra.contains_key("Decoder")
    })
    .meta;
    assert_eq!(meta.extra.get("Decoder").map(String::as_str), Some("tiny"));

    // Off again, then "Reuse settings" of the picture turns it back on.
    harness
        .get_by_role_and_label(egui::accesskit::Role::CheckBox, "Fast decode")
        .click();
    harness.run_ok();
    assert!(!app(&harness).state().prompt.fast_decode);
    app_mut(&mut harness).reuse_picture(1);
    harness.run_ok();
    assert!(app(&harness).state().prompt.fast_decode);
}
