// Shared by every Atelier postfx compute shader (prepended to each module by
// `postfx::gpu::shaders`): the bindings, the per-dispatch header, the exact sRGB transfer
// functions and Rec.709 luma. Mirrors `src/postfx/colour.rs`.
//
// Working image: straight linear-light RGBA, one `vec4<f32>` per pixel, row-major over the
// current tile (`hdr.size`); the tile sits at `hdr.origin` in the whole image (`hdr.full`).

struct Header {
    // This tile's width and height (the buffers' row length and row count).
    size: vec2<u32>,
    // The tile's top-left pixel in the whole image.
    origin: vec2<u32>,
    // The whole image's width and height.
    full: vec2<u32>,
    // Where this dispatch's parameters start in `data`.
    offset: u32,
    // Fused point pass: the number of ops in its program.
    count: u32,
    // Store passes: the tile-local rectangle that is written out (min inclusive, max exclusive).
    store_min: vec2<u32>,
    store_max: vec2<u32>,
    // Load passes: 1 when the source holds sRGB-encoded 8-bit codes (decoded by table).
    flags: u32,
    pad0: u32,
    pad1: u32,
    pad2: u32,
}

@group(0) @binding(0) var<uniform> hdr: Header;
// The working image of the tile.
@group(0) @binding(1) var<storage, read_write> img: array<vec4<f32>>;
// Parameters: data[0..256] is the sRGB 8-bit -> linear table, then each op's numbers
// (gains, matrices, curve LUTs, blur kernels) at the offsets the host hands out.
@group(0) @binding(2) var<storage, read> data: array<f32>;
// Temporaries of the neighbourhood ops.
@group(0) @binding(3) var<storage, read_write> t0: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read_write> t1: array<vec4<f32>>;
@group(0) @binding(5) var<storage, read_write> t2: array<vec4<f32>>;
@group(0) @binding(6) var<storage, read_write> t3: array<vec4<f32>>;
// One 32-bit word per pixel: packed 8-bit RGBA for upload/readback, or a scalar plane
// (bitcast f32) for the unsharp mask's blurred luminance.
@group(0) @binding(7) var<storage, read_write> plane: array<u32>;

const WORKGROUP: u32 = 16u;

fn in_tile(p: vec2<u32>) -> bool {
    return p.x < hdr.size.x && p.y < hdr.size.y;
}

fn tile_index(p: vec2<u32>) -> u32 {
    return p.y * hdr.size.x + p.x;
}

// Rust's `f32::copysign` for a non-negative (or NaN) magnitude.
fn copysign_f(magnitude: f32, sign: f32) -> f32 {
    return select(magnitude, -magnitude, sign < 0.0);
}

// Sign-symmetric power: sign(x)·|x|^p (cpu::spow).
fn spow(x: f32, p: f32) -> f32 {
    return copysign_f(pow(abs(x), p), x);
}

// colour::srgb_to_linear: the piecewise IEC 61966-2-1 decode, odd-extended.
fn srgb_to_linear(encoded: f32) -> f32 {
    let a = abs(encoded);
    var l: f32;
    if (a <= 0.04045) {
        l = a / 12.92;
    } else {
        l = pow((a + 0.055) / 1.055, 2.4);
    }
    return copysign_f(l, encoded);
}

// colour::linear_to_srgb: the piecewise encode, odd-extended.
fn linear_to_srgb(linear: f32) -> f32 {
    let a = abs(linear);
    var e: f32;
    if (a <= 0.0031308) {
        e = a * 12.92;
    } else {
        e = 1.055 * pow(a, 1.0 / 2.4) - 0.055;
    }
    return copysign_f(e, linear);
}

fn decode_rgb(e: vec3<f32>) -> vec3<f32> {
    return vec3<f32>(srgb_to_linear(e.r), srgb_to_linear(e.g), srgb_to_linear(e.b));
}

fn encode_rgb(l: vec3<f32>) -> vec3<f32> {
    return vec3<f32>(linear_to_srgb(l.r), linear_to_srgb(l.g), linear_to_srgb(l.b));
}

// colour::luma: Rec.709 weighted sum, in the same order.
fn luma(rgb: vec3<f32>) -> f32 {
    return 0.2126 * rgb.r + 0.7152 * rgb.g + 0.0722 * rgb.b;
}

// colour::linear_to_srgb8: the nearest 8-bit code, clamped; NaN becomes 0.
fn linear_to_srgb8(linear: f32) -> u32 {
    let e = linear_to_srgb(linear);
    let c = select(0.0, min(e, 1.0) * 255.0, e > 0.0);
    return u32(floor(c + 0.5));
}

// The 8-bit code an 8-bit texel holds (textureLoad of a unorm format gives code/255).
fn unorm8_code(v: f32) -> u32 {
    return u32(floor(clamp(v, 0.0, 1.0) * 255.0 + 0.5));
}

// Linear value of an 8-bit sRGB code: the same f32 table as the CPU.
fn srgb8_to_linear(code: u32) -> f32 {
    return data[min(code, 255u)];
}

// Packed 8-bit R, G, B (low byte first) -> linear RGBA, alpha 1 (by the exact table).
fn unpack_rgb8(v: u32) -> vec4<f32> {
    return vec4<f32>(
        srgb8_to_linear(v & 255u),
        srgb8_to_linear((v >> 8u) & 255u),
        srgb8_to_linear((v >> 16u) & 255u),
        1.0,
    );
}

// Linear RGB -> packed 8-bit sRGB R, G, B with an opaque alpha byte.
fn pack_rgb8(rgb: vec3<f32>) -> u32 {
    return linear_to_srgb8(rgb.r) | (linear_to_srgb8(rgb.g) << 8u)
        | (linear_to_srgb8(rgb.b) << 16u) | (255u << 24u);
}

// A source texel -> linear RGBA. hdr.flags == 1: the texel holds sRGB-encoded 8-bit codes
// (rgba8unorm, bgra8unorm), decoded by table; otherwise it is already linear (float formats,
// or *-srgb formats decoded by the sampler hardware).
fn texel_to_linear(texel: vec4<f32>) -> vec4<f32> {
    if (hdr.flags == 1u) {
        return vec4<f32>(
            srgb8_to_linear(unorm8_code(texel.r)),
            srgb8_to_linear(unorm8_code(texel.g)),
            srgb8_to_linear(unorm8_code(texel.b)),
            texel.a,
        );
    }
    return texel;
}

// Linear RGBA -> the value an rgba8unorm target stores: sRGB-encoded and quantised exactly
// like the CPU's 8-bit conversion (k/255 converts back to the code k).
fn linear_to_target(px: vec4<f32>) -> vec4<f32> {
    let q = vec3<f32>(
        f32(linear_to_srgb8(px.r)),
        f32(linear_to_srgb8(px.g)),
        f32(linear_to_srgb8(px.b)),
    ) / 255.0;
    return vec4<f32>(q, clamp(px.a, 0.0, 1.0));
}

// Whether a tile pixel belongs to the tile's core (the part a store writes out).
fn in_store_rect(p: vec2<u32>) -> bool {
    return all(p >= hdr.store_min) && all(p < hdr.store_max);
}
