// White balance (stack::WhiteBalance): per-channel linear gains. Mirrors cpu::white_balance_px.
// Parameters: [gain_r, gain_g, gain_b] (cpu::white_balance_gains on the host).

fn white_balance_px(rgb: vec3<f32>, gains: vec3<f32>) -> vec3<f32> {
    return vec3<f32>(rgb.r * gains.r, rgb.g * gains.g, rgb.b * gains.b);
}

fn white_balance_apply(rgb: vec3<f32>, p: u32, pos: vec2<u32>) -> vec3<f32> {
    return white_balance_px(rgb, vec3<f32>(data[p], data[p + 1u], data[p + 2u]));
}

@compute @workgroup_size(WORKGROUP, WORKGROUP)
fn white_balance_main(@builtin(global_invocation_id) id: vec3<u32>) {
    if (!in_tile(id.xy)) {
        return;
    }
    let i = tile_index(id.xy);
    let px = img[i];
    img[i] = vec4<f32>(white_balance_apply(px.rgb, hdr.offset, hdr.origin + id.xy), px.a);
}
