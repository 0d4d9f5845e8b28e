//! Pictures as egui textures: the one conversion from `image` buffers, and showing a picture
//! in a texture slot that is created on first use and updated in place after.

/// An RGB picture as egui pixels.
pub fn color_image(image: &image::RgbImage) -> egui::ColorImage {
    egui::ColorImage::from_rgb(
        [image.width() as usize, image.height() as usize],
        image.as_raw(),
    )
}

/// A new texture named `name` showing `image` (linear filtering).
pub fn load(
    ctx: &egui::Context,
    name: impl Into<String>,
    image: &image::RgbImage,
) -> egui::TextureHandle {
    ctx.load_texture(name, color_image(image), egui::TextureOptions::LINEAR)
}

/// Shows `image` in `slot`: the texture there is updated, or one named `name` is made.
pub fn show_in(
    ctx: &egui::Context,
    slot: &mut Option<egui::TextureHandle>,
    name: &str,
    image: egui::ColorImage,
) {
    match slot {
        Some(texture) => texture.set(image, egui::TextureOptions::LINEAR),
        None => *slot = Some(ctx.load_texture(name, image, egui::TextureOptions::LINEAR)),
    }
}
