// Contrast (stack::Contrast) around encoded mid grey. Mirrors cpu::contrast_px.
// Parameters: [slope] (= 1 + amount, computed on the host).

fn contrast_px(rgb: vec3<f32>, slope: f32) -> vec3<f32> {
    let e = encode_rgb(rgb);
    return decode_rgb(vec3<f32>(
        (e.r - 0.5) * slope + 0.5,
        (e.g - 0.5) * slope + 0.5,
        (e.b - 0.5) * slope + 0.5,
    ));
}

fn contrast_apply(rgb: vec3<f32>, p: u32, pos: vec2<u32>) -> vec3<f32> {
    return contrast_px(rgb, data[p]);
}

@compute @workgroup_size(WORKGROUP, WORKGROUP)
fn contrast_main(@builtin(global_invocation_id) id: vec3<u32>) {
    if (!in_tile(id.xy)) {
        return;
    }
    let i = tile_index(id.xy);
    let px = img[i];
    img[i] = vec4<f32>(contrast_apply(px.rgb, hdr.offset, hdr.origin + id.xy), px.a);
}
