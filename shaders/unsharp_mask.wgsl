// Unsharp mask (stack::UnsharpMask) on linear luminance: a luminance plane, then two
// separable blur passes over the tile, clamp-to-edge. Mirrors cpu::unsharp_mask (luminance plane, cpu::blur_plane with
// cpu::gaussian_kernel, then cpu::unsharp_mask_px), summing taps in the same order.
// Parameters: [amount, threshold, taps n, weights w0 .. w(n-1)].

fn unsharp_mask_px(rgb: vec3<f32>, lum: f32, blurred_lum: f32, amount: f32, threshold: f32) -> vec3<f32> {
    let detail = lum - blurred_lum;
    let kept = copysign_f(max(abs(detail) - threshold, 0.0), detail);
    let add = amount * kept;
    return vec3<f32>(rgb.r + add, rgb.g + add, rgb.b + add);
}

// Luminance, then the blurred luminance, live in `plane` (as f32 bits): the first
// tile-sized half holds the luminance, the second the horizontal blur.
fn usm_blurred_at(i: u32) -> u32 {
    return hdr.size.x * hdr.size.y + i;
}

// Pass 1: the luminance plane (cpu::plane(img, luma)).
@compute @workgroup_size(WORKGROUP, WORKGROUP)
fn unsharp_mask_luma(@builtin(global_invocation_id) id: vec3<u32>) {
    if (!in_tile(id.xy)) {
        return;
    }
    let i = tile_index(id.xy);
    plane[i] = bitcast<u32>(luma(img[i].rgb));
}

// Pass 2: the horizontal blur of luminance.
@compute @workgroup_size(WORKGROUP, WORKGROUP)
fn unsharp_mask_blur_h(@builtin(global_invocation_id) id: vec3<u32>) {
    if (!in_tile(id.xy)) {
        return;
    }
    let n = u32(data[hdr.offset + 2u]);
    let r = i32(n / 2u);
    let row = id.y * hdr.size.x;
    let last = i32(hdr.size.x) - 1;
    var sum = 0.0;
    for (var k = 0u; k < n; k++) {
        let sx = u32(clamp(i32(id.x) + i32(k) - r, 0, last));
        sum += data[hdr.offset + 3u + k] * bitcast<f32>(plane[row + sx]);
    }
    plane[usm_blurred_at(tile_index(id.xy))] = bitcast<u32>(sum);
}

// The last step at tile pixel p (index i), parameters at o: the vertical blur of the
// horizontal blur, then the soft-thresholded detail added to every channel. Per pixel given
// the horizontal blur, so fused point passes open with it (`postfx::gpu::shaders`).
fn unsharp_mask_apply(rgb: vec3<f32>, o: u32, p: vec2<u32>, i: u32) -> vec3<f32> {
    let n = u32(data[o + 2u]);
    let r = i32(n / 2u);
    let last = i32(hdr.size.y) - 1;
    var blurred = 0.0;
    for (var k = 0u; k < n; k++) {
        let sy = u32(clamp(i32(p.y) + i32(k) - r, 0, last));
        blurred += data[o + 3u + k] * bitcast<f32>(plane[usm_blurred_at(sy * hdr.size.x + p.x)]);
    }
    let lum = bitcast<f32>(plane[i]);
    return unsharp_mask_px(rgb, lum, blurred, data[o], data[o + 1u]);
}

// Pass 3 (when no fused pass follows): unsharp_mask_apply on the working image.
@compute @workgroup_size(WORKGROUP, WORKGROUP)
fn unsharp_mask_apply_v(@builtin(global_invocation_id) id: vec3<u32>) {
    if (!in_tile(id.xy)) {
        return;
    }
    let i = tile_index(id.xy);
    let px = img[i];
    img[i] = vec4<f32>(unsharp_mask_apply(px.rgb, hdr.offset, id.xy, i), px.a);
}
