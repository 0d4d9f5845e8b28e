// Denoise (stack::Denoise): the self-guided filter (He, Sun, Tang 2010, I = p) on each
// sRGB-encoded channel, as five passes over the tile with separable box means,
// clamp-to-edge. Mirrors cpu::denoise, cpu::guided_filter_plane, cpu::box_mean_plane (a
// direct window sum here; the same up to rounding), cpu::guided_coefficients and
// cpu::guided_output_px.
// Parameters: [radius r, eps].
//
// Buffers: img holds the encoded guide from pass 1 on (alpha untouched); t0/t1 the
// horizontal means; t2/t3 the coefficients a and b.

fn denoise_radius() -> i32 {
    return i32(data[hdr.offset]);
}

// cpu::guided_coefficients on three channels: returns a; b = mean - a * mean.
fn guided_a(mean: vec3<f32>, mean_sq: vec3<f32>, eps: f32) -> vec3<f32> {
    let var_ = max(mean_sq - mean * mean, vec3<f32>(0.0));
    return var_ / (var_ + eps);
}

// Pass 1: the guide, each channel sRGB-encoded, in place.
@compute @workgroup_size(WORKGROUP, WORKGROUP)
fn denoise_encode(@builtin(global_invocation_id) id: vec3<u32>) {
    if (!in_tile(id.xy)) {
        return;
    }
    let i = tile_index(id.xy);
    let px = img[i];
    img[i] = vec4<f32>(encode_rgb(px.rgb), px.a);
}

// Pass 2: horizontal means of the guide and of its square.
@compute @workgroup_size(WORKGROUP, WORKGROUP)
fn denoise_box_h1(@builtin(global_invocation_id) id: vec3<u32>) {
    if (!in_tile(id.xy)) {
        return;
    }
    let r = denoise_radius();
    let norm = 1.0 / f32(2 * r + 1);
    let row = id.y * hdr.size.x;
    let last = i32(hdr.size.x) - 1;
    var sum = vec3<f32>(0.0);
    var sum_sq = vec3<f32>(0.0);
    for (var dx = -r; dx <= r; dx++) {
        let e = img[row + u32(clamp(i32(id.x) + dx, 0, last))].rgb;
        sum += e;
        sum_sq += e * e;
    }
    let i = tile_index(id.xy);
    t0[i] = vec4<f32>(sum * norm, 0.0);
    t1[i] = vec4<f32>(sum_sq * norm, 0.0);
}

// Pass 3: vertical means, then the local linear model a, b.
@compute @workgroup_size(WORKGROUP, WORKGROUP)
fn denoise_coefficients_v1(@builtin(global_invocation_id) id: vec3<u32>) {
    if (!in_tile(id.xy)) {
        return;
    }
    let r = denoise_radius();
    let norm = 1.0 / f32(2 * r + 1);
    let last = i32(hdr.size.y) - 1;
    var sum = vec3<f32>(0.0);
    var sum_sq = vec3<f32>(0.0);
    for (var dy = -r; dy <= r; dy++) {
        let j = u32(clamp(i32(id.y) + dy, 0, last)) * hdr.size.x + id.x;
        sum += t0[j].rgb;
        sum_sq += t1[j].rgb;
    }
    let mean = sum * norm;
    let a = guided_a(mean, sum_sq * norm, data[hdr.offset + 1u]);
    let i = tile_index(id.xy);
    t2[i] = vec4<f32>(a, 0.0);
    t3[i] = vec4<f32>(mean - a * mean, 0.0);
}

// Pass 4: horizontal means of a and b.
@compute @workgroup_size(WORKGROUP, WORKGROUP)
fn denoise_box_h2(@builtin(global_invocation_id) id: vec3<u32>) {
    if (!in_tile(id.xy)) {
        return;
    }
    let r = denoise_radius();
    let norm = 1.0 / f32(2 * r + 1);
    let row = id.y * hdr.size.x;
    let last = i32(hdr.size.x) - 1;
    var sum_a = vec3<f32>(0.0);
    var sum_b = vec3<f32>(0.0);
    for (var dx = -r; dx <= r; dx++) {
        let j = row + u32(clamp(i32(id.x) + dx, 0, last));
        sum_a += t2[j].rgb;
        sum_b += t3[j].rgb;
    }
    let i = tile_index(id.xy);
    t0[i] = vec4<f32>(sum_a * norm, 0.0);
    t1[i] = vec4<f32>(sum_b * norm, 0.0);
}

// Pass 5: vertical means of a and b, the averaged model applied to the guide, decoded.
@compute @workgroup_size(WORKGROUP, WORKGROUP)
fn denoise_output_v2(@builtin(global_invocation_id) id: vec3<u32>) {
    if (!in_tile(id.xy)) {
        return;
    }
    let r = denoise_radius();
    let norm = 1.0 / f32(2 * r + 1);
    let last = i32(hdr.size.y) - 1;
    var sum_a = vec3<f32>(0.0);
    var sum_b = vec3<f32>(0.0);
    for (var dy = -r; dy <= r; dy++) {
        let j = u32(clamp(i32(id.y) + dy, 0, last)) * hdr.size.x + id.x;
        sum_a += t0[j].rgb;
        sum_b += t1[j].rgb;
    }
    let i = tile_index(id.xy);
    let guide = img[i];
    let filtered = (sum_a * norm) * guide.rgb + sum_b * norm;
    img[i] = vec4<f32>(decode_rgb(filtered), guide.a);
}
