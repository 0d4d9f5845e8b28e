// Moving pixels in and out of the working image when the first or last pass of a plan is
// not a fused point pass (which loads and stores by itself): 8-bit sRGB words in `plane`
// (export and CLI) and textures (the studio preview; needs textures.wgsl). Encoding to 8
// bits mirrors colour::linear_to_srgb8; decoding uses the CPU's exact table.

// Packed R, G, B in `plane` -> linear RGBA, alpha 1.
@compute @workgroup_size(WORKGROUP, WORKGROUP)
fn load_rgb8(@builtin(global_invocation_id) id: vec3<u32>) {
    if (!in_tile(id.xy)) {
        return;
    }
    let i = tile_index(id.xy);
    img[i] = unpack_rgb8(plane[i]);
}

// Linear RGBA -> packed 8-bit sRGB R, G, B (alpha byte 255) in `plane`.
@compute @workgroup_size(WORKGROUP, WORKGROUP)
fn store_rgb8(@builtin(global_invocation_id) id: vec3<u32>) {
    if (!in_tile(id.xy)) {
        return;
    }
    let i = tile_index(id.xy);
    plane[i] = pack_rgb8(img[i].rgb);
}

// The source texture's texels of this tile -> linear RGBA.
@compute @workgroup_size(WORKGROUP, WORKGROUP)
fn load_texture(@builtin(global_invocation_id) id: vec3<u32>) {
    if (!in_tile(id.xy)) {
        return;
    }
    let texel = textureLoad(src_tex, vec2<i32>(hdr.origin + id.xy), 0);
    img[tile_index(id.xy)] = texel_to_linear(texel);
}

// This tile's core -> the target texture.
@compute @workgroup_size(WORKGROUP, WORKGROUP)
fn store_texture(@builtin(global_invocation_id) id: vec3<u32>) {
    if (!in_tile(id.xy) || !in_store_rect(id.xy)) {
        return;
    }
    let px = img[tile_index(id.xy)];
    textureStore(dst_tex, vec2<i32>(hdr.origin + id.xy), linear_to_target(px));
}
