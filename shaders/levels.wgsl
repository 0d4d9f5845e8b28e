// Levels (stack::Levels): per-channel levels, then master levels, on encoded values.
// Mirrors cpu::levels_value and cpu::levels_px.
// Parameters: four sets (R, G, B, master) of [black, white - black, gamma, 1 / gamma]
// (the span and the reciprocal are computed on the host exactly as the CPU computes them).

fn levels_value(v: f32, q: u32) -> f32 {
    let t = (v - data[q]) / data[q + 1u];
    if (data[q + 2u] == 1.0) {
        return t;
    }
    return spow(t, data[q + 3u]);
}

fn levels_px(rgb: vec3<f32>, p: u32) -> vec3<f32> {
    let e = encode_rgb(rgb);
    let master = p + 12u;
    return decode_rgb(vec3<f32>(
        levels_value(levels_value(e.r, p), master),
        levels_value(levels_value(e.g, p + 4u), master),
        levels_value(levels_value(e.b, p + 8u), master),
    ));
}

fn levels_apply(rgb: vec3<f32>, p: u32, pos: vec2<u32>) -> vec3<f32> {
    return levels_px(rgb, p);
}

@compute @workgroup_size(WORKGROUP, WORKGROUP)
fn levels_main(@builtin(global_invocation_id) id: vec3<u32>) {
    if (!in_tile(id.xy)) {
        return;
    }
    let i = tile_index(id.xy);
    let px = img[i];
    img[i] = vec4<f32>(levels_apply(px.rgb, hdr.offset, hdr.origin + id.xy), px.a);
}
