// The fused point pass: a run of consecutive per-pixel ops in one read and one write of the
// image instead of one pass per op. This file is a template: `postfx::gpu::shaders`
// generates one variant per run of ops (cached per op sequence, so parameters can change
// every frame without a recompile), replacing
//   LOAD   with how the pixel is read:  img[i], unpack_rgb8(plane[i]) (export) or the source
//          texture (preview), so the first pass of a plan needs no separate load pass;
//   OPS    with one `rgb = <op>_apply(rgb, <parameter offset>, pos);` line per op, in order
//          (each op's maths is its own file's `<op>_apply`, so fused and one-pass-per-op
//          results agree);
//   STORE  with how it is written: img[i], plane[i] or the target texture (core only).
// The program at hdr.offset holds hdr.count pairs [op code, parameter offset].

@compute @workgroup_size(WORKGROUP, WORKGROUP)
fn pointwise_main(@builtin(global_invocation_id) id: vec3<u32>) {
    if (!in_tile(id.xy)) {
        return;
    }
    let i = tile_index(id.xy);
    let pos = hdr.origin + id.xy;
    let px = /*LOAD*/;
    var rgb = px.rgb;
    /*OPS*/
    /*STORE*/
}
