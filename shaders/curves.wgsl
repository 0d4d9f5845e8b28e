// Curves (stack::Curves): the baked monotone-cubic LUT on encoded values. Mirrors
// curve::sample_lut and cpu::curves_px.
// Parameters: [lut offset]; the LUT is 3 x 1024 samples (R, G, B) at that offset.

const CURVE_LUT_SIZE: u32 = 1024u;

fn sample_lut(base: u32, x: f32) -> f32 {
    let last = CURVE_LUT_SIZE - 1u;
    let t = x * f32(last);
    // NaN and huge values land on an end segment, as the CPU saturating cast does.
    let i = u32(clamp(floor(t), 0.0, f32(last - 1u)));
    let f = t - f32(i);
    let a = data[base + i];
    let b = data[base + i + 1u];
    return a + (b - a) * f;
}

fn curves_px(rgb: vec3<f32>, lut: u32) -> vec3<f32> {
    let e = encode_rgb(rgb);
    return decode_rgb(vec3<f32>(
        sample_lut(lut, e.r),
        sample_lut(lut + CURVE_LUT_SIZE, e.g),
        sample_lut(lut + 2u * CURVE_LUT_SIZE, e.b),
    ));
}

fn curves_apply(rgb: vec3<f32>, p: u32, pos: vec2<u32>) -> vec3<f32> {
    return curves_px(rgb, u32(data[p]));
}

@compute @workgroup_size(WORKGROUP, WORKGROUP)
fn curves_main(@builtin(global_invocation_id) id: vec3<u32>) {
    if (!in_tile(id.xy)) {
        return;
    }
    let i = tile_index(id.xy);
    let px = img[i];
    img[i] = vec4<f32>(curves_apply(px.rgb, hdr.offset, hdr.origin + id.xy), px.a);
}
