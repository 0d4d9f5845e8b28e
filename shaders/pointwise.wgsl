// The fused point pass: applies a run of consecutive per-pixel ops in one read and one write
// of the working image (instead of one pass per op). Each op's maths is its own file's
// `<op>_apply`, so fused and one-pass-per-op results agree.
//
// Program at hdr.offset: hdr.count pairs [op code, parameter offset] (as f32; small integers
// are exact). Codes are `postfx::gpu::plan::PointOp::code`.

@compute @workgroup_size(WORKGROUP, WORKGROUP)
fn pointwise_main(@builtin(global_invocation_id) id: vec3<u32>) {
    if (!in_tile(id.xy)) {
        return;
    }
    let i = tile_index(id.xy);
    let px = img[i];
    let pos = hdr.origin + id.xy;
    var rgb = px.rgb;
    for (var k = 0u; k < hdr.count; k++) {
        let code = u32(data[hdr.offset + 2u * k]);
        let p = u32(data[hdr.offset + 2u * k + 1u]);
        switch code {
            case 0u: { rgb = exposure_apply(rgb, p, pos); }
            case 1u: { rgb = contrast_apply(rgb, p, pos); }
            case 2u: { rgb = highlights_shadows_apply(rgb, p, pos); }
            case 3u: { rgb = white_balance_apply(rgb, p, pos); }
            case 4u: { rgb = saturation_apply(rgb, p, pos); }
            case 5u: { rgb = hue_shift_apply(rgb, p, pos); }
            case 6u: { rgb = levels_apply(rgb, p, pos); }
            case 7u: { rgb = curves_apply(rgb, p, pos); }
            case 8u: { rgb = vignette_apply(rgb, p, pos); }
            default: {}
        }
    }
    img[i] = vec4<f32>(rgb, px.a);
}
