// Exposure (stack::Exposure): linear RGB times gain = 2^ev. Mirrors cpu::exposure_px.
// Parameters: [gain] (the host computes 2^ev once, as the CPU does).

fn exposure_px(rgb: vec3<f32>, gain: f32) -> vec3<f32> {
    return vec3<f32>(rgb.r * gain, rgb.g * gain, rgb.b * gain);
}

fn exposure_apply(rgb: vec3<f32>, p: u32, pos: vec2<u32>) -> vec3<f32> {
    return exposure_px(rgb, data[p]);
}

@compute @workgroup_size(WORKGROUP, WORKGROUP)
fn exposure_main(@builtin(global_invocation_id) id: vec3<u32>) {
    if (!in_tile(id.xy)) {
        return;
    }
    let i = tile_index(id.xy);
    let px = img[i];
    img[i] = vec4<f32>(exposure_apply(px.rgb, hdr.offset, hdr.origin + id.xy), px.a);
}
