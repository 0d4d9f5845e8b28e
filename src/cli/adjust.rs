//! `atelier adjust`: an adjustment stack applied to image files, on the GPU or the CPU.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};

use super::load_rgb;

#[derive(clap::Args)]
pub(crate) struct AdjustArgs {
    /// Input images (PNG or JPEG).
    #[arg(required = true)]
    inputs: Vec<PathBuf>,
    /// The adjustment stack (JSON).
    #[arg(long)]
    stack: PathBuf,
    /// Output PNG for one input; a folder (created if missing) for any number of inputs,
    /// where each result is named after its input (`photo.jpg` -> `photo.png`).
    #[arg(long)]
    out: PathBuf,
    /// Use the CPU reference implementation instead of the GPU.
    #[arg(long)]
    cpu: bool,
    /// Leave the input's prompts and settings out of the result (the AI-generated marking of
    /// a generated input stays). Without it the result carries them, as gallery files do.
    #[arg(long)]
    strip_metadata: bool,
}

/// Where each input's result goes: `out` itself for one input that is not a folder,
/// otherwise `out/<input stem>.png`. Refuses to overwrite an input or to write two results
/// to one file.
pub(crate) fn adjust_outputs(inputs: &[PathBuf], out: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let outputs: Vec<PathBuf> = if inputs.len() == 1 && !out.is_dir() {
        if let Some(parent) = out.parent().filter(|p| !p.as_os_str().is_empty()) {
            if !parent.is_dir() {
                bail!("{}: output folder does not exist", parent.display());
            }
        }
        vec![out.to_path_buf()]
    } else {
        if out.exists() && !out.is_dir() {
            bail!(
                "{}: with several inputs --out must be a folder",
                out.display()
            );
        }
        let mut outputs: Vec<PathBuf> = Vec::new();
        for input in inputs {
            let stem = input
                .file_stem()
                .with_context(|| format!("{}: not a file name", input.display()))?;
            let path = out.join(stem).with_extension("png");
            if let Some(i) = outputs.iter().position(|p| *p == path) {
                bail!(
                    "{} and {} would both be written to {}",
                    inputs[i].display(),
                    input.display(),
                    path.display()
                );
            }
            outputs.push(path);
        }
        outputs
    };
    let canonical_inputs: Vec<PathBuf> = inputs
        .iter()
        .map(|p| {
            std::fs::canonicalize(p).with_context(|| format!("{}: cannot read image", p.display()))
        })
        .collect::<anyhow::Result<_>>()?;
    for output in &outputs {
        if let Ok(existing) = std::fs::canonicalize(output) {
            if canonical_inputs.contains(&existing) {
                bail!(
                    "{}: refusing to overwrite an input image; choose another --out",
                    output.display()
                );
            }
        }
    }
    if inputs.len() > 1 || out.is_dir() {
        std::fs::create_dir_all(out)
            .with_context(|| format!("{}: cannot create the output folder", out.display()))?;
    }
    Ok(outputs)
}

pub(crate) fn adjust(args: AdjustArgs) -> anyhow::Result<()> {
    use atelier::postfx::{apply_to_rgb8, gpu::GpuRunner, Stack};
    let text = std::fs::read_to_string(&args.stack)
        .with_context(|| format!("{}: cannot read the stack", args.stack.display()))?;
    let stack = Stack::from_json(&text).with_context(|| args.stack.display().to_string())?;
    for name in stack.unknown_ops() {
        eprintln!(
            "warning: {}: adjustment \"{name}\" is unknown to this version of Atelier and is skipped",
            args.stack.display()
        );
    }
    let outputs = adjust_outputs(&args.inputs, &args.out)?;
    let gpu = if args.cpu {
        None
    } else {
        match GpuRunner::headless() {
            Ok(runner) => Some(runner),
            Err(e) => {
                eprintln!("GPU unavailable ({e}); using the CPU");
                None
            }
        }
    };
    match &gpu {
        Some(runner) => println!("adjusting on the GPU: {}", runner.adapter_description()),
        None => println!("adjusting on the CPU"),
    }
    for (input, output) in args.inputs.iter().zip(&outputs) {
        let image = load_rgb(input)?;
        let (adjusted, used) = match &gpu {
            Some(runner) => match runner.apply_rgb8(&image, &stack) {
                Ok(adjusted) => (adjusted, "GPU"),
                Err(e) => {
                    eprintln!("{}: the GPU failed ({e}); using the CPU", input.display());
                    (apply_to_rgb8(&image, &stack), "CPU")
                }
            },
            None => (apply_to_rgb8(&image, &stack), "CPU"),
        };
        let carried = atelier::gallery::embedded_meta_of_file(input)?;
        write_adjusted(&adjusted, carried, &args, output)?;
        println!("{} -> {} ({used})", input.display(), output.display());
    }
    Ok(())
}

/// Writes an adjusted picture (durably) in the format its name asks for, carrying the
/// settings its input carried, marked as adjusted from it; an input that carried none (a
/// photo) gives a plain file.
pub(crate) fn write_adjusted(
    image: &image::RgbImage,
    carried: Option<atelier::gallery::ImageMeta>,
    args: &AdjustArgs,
    output: &Path,
) -> anyhow::Result<()> {
    use atelier::gallery::export::{encode, ExportFormat, ExportOptions};
    let opts = ExportOptions {
        format: ExportFormat::from_path(output).unwrap_or_default(),
        strip_metadata: args.strip_metadata,
        ..Default::default()
    };
    let bytes = match carried {
        Some(mut meta) => {
            meta.parent = Some(std::mem::take(&mut meta.uid)).filter(|u| !u.is_empty());
            meta.uid = atelier::gallery::new_uid();
            meta.lineage = Some(atelier::gallery::metadata::Lineage::Adjust);
            meta.created = atelier::gallery::now();
            // The pixels have it applied: a stack stored too would be applied twice.
            meta.adjustments = None;
            meta.extra.insert(
                "Adjusted with".into(),
                args.stack
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default(),
            );
            meta.width = image.width();
            meta.height = image.height();
            encode(image, &meta, &opts).map_err(anyhow::Error::msg)?
        }
        None => {
            let format = match opts.format {
                ExportFormat::Png => image::ImageFormat::Png,
                ExportFormat::Jpeg => image::ImageFormat::Jpeg,
                ExportFormat::Webp => image::ImageFormat::WebP,
            };
            let mut plain = Vec::new();
            image.write_to(&mut std::io::Cursor::new(&mut plain), format)?;
            plain
        }
    };
    atelier::gallery::write_durable(output, &bytes)?;
    Ok(())
}
