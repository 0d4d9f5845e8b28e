// Moving pixels in and out of the working image: 8-bit sRGB words (export and CLI, through
// `plane`), and textures (the studio preview: any float-sampled source texture in, an
// rgba8unorm storage texture out, which egui shows through an rgba8unorm-srgb view).
// Encoding to 8 bits mirrors colour::linear_to_srgb8; decoding uses the CPU's exact table.

@group(1) @binding(0) var src_tex: texture_2d<f32>;
@group(1) @binding(1) var dst_tex: texture_storage_2d<rgba8unorm, write>;

// Packed R, G, B (low byte first) in `plane` -> linear RGBA, alpha 1.
@compute @workgroup_size(WORKGROUP, WORKGROUP)
fn load_rgb8(@builtin(global_invocation_id) id: vec3<u32>) {
    if (!in_tile(id.xy)) {
        return;
    }
    let i = tile_index(id.xy);
    let v = plane[i];
    img[i] = vec4<f32>(
        srgb8_to_linear(v & 255u),
        srgb8_to_linear((v >> 8u) & 255u),
        srgb8_to_linear((v >> 16u) & 255u),
        1.0,
    );
}

// Linear RGBA -> packed 8-bit sRGB R, G, B (alpha byte 255) in `plane`.
@compute @workgroup_size(WORKGROUP, WORKGROUP)
fn store_rgb8(@builtin(global_invocation_id) id: vec3<u32>) {
    if (!in_tile(id.xy)) {
        return;
    }
    let i = tile_index(id.xy);
    let px = img[i];
    plane[i] = linear_to_srgb8(px.r) | (linear_to_srgb8(px.g) << 8u)
        | (linear_to_srgb8(px.b) << 16u) | (255u << 24u);
}

// The source texture's texels of this tile -> linear RGBA. hdr.flags == 1: the texel holds
// sRGB-encoded 8-bit codes (rgba8unorm, bgra8unorm), decoded by table; otherwise it is
// already linear (float formats, or *-srgb formats decoded by the sampler hardware).
@compute @workgroup_size(WORKGROUP, WORKGROUP)
fn load_texture(@builtin(global_invocation_id) id: vec3<u32>) {
    if (!in_tile(id.xy)) {
        return;
    }
    let texel = textureLoad(src_tex, vec2<i32>(hdr.origin + id.xy), 0);
    var rgb = texel.rgb;
    if (hdr.flags == 1u) {
        rgb = vec3<f32>(
            srgb8_to_linear(unorm8_code(texel.r)),
            srgb8_to_linear(unorm8_code(texel.g)),
            srgb8_to_linear(unorm8_code(texel.b)),
        );
    }
    img[tile_index(id.xy)] = vec4<f32>(rgb, texel.a);
}

// This tile's core (hdr.store_min .. hdr.store_max) -> the target texture, sRGB-encoded and
// quantised exactly like the CPU's 8-bit conversion.
@compute @workgroup_size(WORKGROUP, WORKGROUP)
fn store_texture(@builtin(global_invocation_id) id: vec3<u32>) {
    if (!in_tile(id.xy) || any(id.xy < hdr.store_min) || any(id.xy >= hdr.store_max)) {
        return;
    }
    let px = img[tile_index(id.xy)];
    let q = vec3<f32>(
        f32(linear_to_srgb8(px.r)),
        f32(linear_to_srgb8(px.g)),
        f32(linear_to_srgb8(px.b)),
    ) / 255.0;
    textureStore(dst_tex, vec2<i32>(hdr.origin + id.xy), vec4<f32>(q, clamp(px.a, 0.0, 1.0)));
}
