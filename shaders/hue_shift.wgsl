// Hue shift (stack::HueShift): a rotation of linear RGB about the grey axis. Mirrors
// cpu::hue_shift_px.
// Parameters: the 3x3 matrix, row-major (cpu::hue_matrix on the host).

fn hue_shift_px(rgb: vec3<f32>, m0: vec3<f32>, m1: vec3<f32>, m2: vec3<f32>) -> vec3<f32> {
    return vec3<f32>(
        m0.x * rgb.r + m0.y * rgb.g + m0.z * rgb.b,
        m1.x * rgb.r + m1.y * rgb.g + m1.z * rgb.b,
        m2.x * rgb.r + m2.y * rgb.g + m2.z * rgb.b,
    );
}

fn hue_shift_apply(rgb: vec3<f32>, p: u32, pos: vec2<u32>) -> vec3<f32> {
    let m0 = vec3<f32>(data[p], data[p + 1u], data[p + 2u]);
    let m1 = vec3<f32>(data[p + 3u], data[p + 4u], data[p + 5u]);
    let m2 = vec3<f32>(data[p + 6u], data[p + 7u], data[p + 8u]);
    return hue_shift_px(rgb, m0, m1, m2);
}

@compute @workgroup_size(WORKGROUP, WORKGROUP)
fn hue_shift_main(@builtin(global_invocation_id) id: vec3<u32>) {
    if (!in_tile(id.xy)) {
        return;
    }
    let i = tile_index(id.xy);
    let px = img[i];
    img[i] = vec4<f32>(hue_shift_apply(px.rgb, hdr.offset, hdr.origin + id.xy), px.a);
}
