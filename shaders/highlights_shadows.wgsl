// Highlights and shadows (stack::HighlightsShadows): a luma-weighted tone offset on encoded
// values. Mirrors cpu::highlights_shadows_px.
// Parameters: [highlights, shadows].

fn highlights_shadows_px(rgb: vec3<f32>, highlights: f32, shadows: f32) -> vec3<f32> {
    let e = encode_rgb(rgb);
    let l = clamp(luma(e), 0.0, 1.0);
    let inv = 1.0 - l;
    let delta = 1.6875 * (shadows * l * inv * inv + highlights * l * l * inv);
    return decode_rgb(vec3<f32>(e.r + delta, e.g + delta, e.b + delta));
}

fn highlights_shadows_apply(rgb: vec3<f32>, p: u32, pos: vec2<u32>) -> vec3<f32> {
    return highlights_shadows_px(rgb, data[p], data[p + 1u]);
}

@compute @workgroup_size(WORKGROUP, WORKGROUP)
fn highlights_shadows_main(@builtin(global_invocation_id) id: vec3<u32>) {
    if (!in_tile(id.xy)) {
        return;
    }
    let i = tile_index(id.xy);
    let px = img[i];
    img[i] = vec4<f32>(highlights_shadows_apply(px.rgb, hdr.offset, hdr.origin + id.xy), px.a);
}
