// The preview's textures (bind group 1): any float-sampled source, an rgba8unorm storage
// target (egui shows it through an rgba8unorm-srgb view).
@group(1) @binding(0) var src_tex: texture_2d<f32>;
@group(1) @binding(1) var dst_tex: texture_storage_2d<rgba8unorm, write>;
