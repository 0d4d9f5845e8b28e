// Saturation and vibrance (stack::Saturation) around Rec.709 luminance. Mirrors
// cpu::saturation_px.
// Parameters: [saturation, vibrance].

fn saturation_px(rgb: vec3<f32>, saturation: f32, vibrance: f32) -> vec3<f32> {
    let y = luma(rgb);
    let mx = max(max(rgb.r, rgb.g), rgb.b);
    let mn = min(min(rgb.r, rgb.g), rgb.b);
    var own = 0.0;
    if (mx > 1e-6) {
        own = clamp((mx - mn) / mx, 0.0, 1.0);
    }
    let k = saturation * (1.0 + vibrance * (1.0 - own));
    return vec3<f32>(
        y + (rgb.r - y) * k,
        y + (rgb.g - y) * k,
        y + (rgb.b - y) * k,
    );
}

fn saturation_apply(rgb: vec3<f32>, p: u32, pos: vec2<u32>) -> vec3<f32> {
    return saturation_px(rgb, data[p], data[p + 1u]);
}

@compute @workgroup_size(WORKGROUP, WORKGROUP)
fn saturation_main(@builtin(global_invocation_id) id: vec3<u32>) {
    if (!in_tile(id.xy)) {
        return;
    }
    let i = tile_index(id.xy);
    let px = img[i];
    img[i] = vec4<f32>(saturation_apply(px.rgb, hdr.offset, hdr.origin + id.xy), px.a);
}
