// Vignette (stack::Vignette): a radial factor from the pixel centre's position in the whole
// image (tiles pass their origin). Mirrors cpu::vignette_px and cpu::smoothstep.
// Parameters: [amount, midpoint, feather].

// smoothstep that is a step when the edges meet (WGSL's is undefined there).
fn smoothstep_or_step(edge0: f32, edge1: f32, x: f32) -> f32 {
    if (edge1 <= edge0) {
        return select(0.0, 1.0, x >= edge0);
    }
    let t = clamp((x - edge0) / (edge1 - edge0), 0.0, 1.0);
    return t * t * (3.0 - 2.0 * t);
}

fn vignette_px(rgb: vec3<f32>, pos: vec2<u32>, size: vec2<u32>, amount: f32, midpoint: f32, feather: f32) -> vec3<f32> {
    let u = ((f32(pos.x) + 0.5) / f32(size.x) - 0.5) * 2.0;
    let v = ((f32(pos.y) + 0.5) / f32(size.y) - 0.5) * 2.0;
    let d = sqrt((u * u + v * v) * 0.5);
    let t = smoothstep_or_step(midpoint - feather * 0.5, midpoint + feather * 0.5, d);
    let k = 1.0 + amount * t;
    return vec3<f32>(rgb.r * k, rgb.g * k, rgb.b * k);
}

fn vignette_apply(rgb: vec3<f32>, p: u32, pos: vec2<u32>) -> vec3<f32> {
    return vignette_px(rgb, pos, hdr.full, data[p], data[p + 1u], data[p + 2u]);
}

@compute @workgroup_size(WORKGROUP, WORKGROUP)
fn vignette_main(@builtin(global_invocation_id) id: vec3<u32>) {
    if (!in_tile(id.xy)) {
        return;
    }
    let i = tile_index(id.xy);
    let px = img[i];
    img[i] = vec4<f32>(vignette_apply(px.rgb, hdr.offset, hdr.origin + id.xy), px.a);
}
