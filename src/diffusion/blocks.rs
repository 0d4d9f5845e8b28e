//! The Stable Diffusion building blocks (diffusers' module names and maths): convolutions,
//! resnet blocks, the spatial transformer, up/down samplers, the VAE's attention block.
//! Convolutions are written as patch gathering plus one matrix product, which runs about as
//! fast as candle's own `conv2d` forward and several times faster backwards, so the same
//! code serves inference and `atelier train`.

use candle_core::{
    CpuStorage, CustomOp2, CustomOp3, DType, Layout, Module, Result, Shape, Tensor, D,
};
use candle_nn::{linear, linear_no_bias, Linear, VarBuilder};

use super::fused::{add_into, contiguous_f32, geglu, layer_norm, LayerNorm};
pub use super::fused::{group_norm, silu, GroupNorm};

/// A 2D convolution (square kernel 1 or 3, stride 1 or 2) with optional bias.
#[derive(Clone, Debug)]
pub struct Conv2d {
    weight: Tensor,
    bias: Option<Tensor>,
    kernel: usize,
    stride: usize,
    /// (top/left, bottom/right) zero padding.
    pad: (usize, usize),
}

impl Conv2d {
    pub fn new(
        vb: VarBuilder,
        cin: usize,
        cout: usize,
        kernel: usize,
        stride: usize,
        pad: (usize, usize),
    ) -> Result<Self> {
        let fan_in = (cin * kernel * kernel) as f64;
        let bound = 1.0 / fan_in.sqrt();
        let weight = vb.get_with_hints(
            (cout, cin, kernel, kernel),
            "weight",
            candle_nn::Init::Uniform {
                lo: -bound,
                up: bound,
            },
        )?;
        let bias = vb.get_with_hints(
            cout,
            "bias",
            candle_nn::Init::Uniform {
                lo: -bound,
                up: bound,
            },
        )?;
        Ok(Self {
            weight,
            bias: Some(bias),
            kernel,
            stride,
            pad,
        })
    }

    /// A convolution without bias (its weight only).
    pub fn without_bias(
        vb: VarBuilder,
        cin: usize,
        cout: usize,
        kernel: usize,
        stride: usize,
        pad: (usize, usize),
    ) -> Result<Self> {
        let bound = 1.0 / ((cin * kernel * kernel) as f64).sqrt();
        let weight = vb.get_with_hints(
            (cout, cin, kernel, kernel),
            "weight",
            candle_nn::Init::Uniform {
                lo: -bound,
                up: bound,
            },
        )?;
        Ok(Self {
            weight,
            bias: None,
            kernel,
            stride,
            pad,
        })
    }

    /// 3x3, stride 1, padding 1.
    pub fn same(vb: VarBuilder, cin: usize, cout: usize) -> Result<Self> {
        Self::new(vb, cin, cout, 3, 1, (1, 1))
    }

    /// 1x1.
    pub fn pointwise(vb: VarBuilder, cin: usize, cout: usize) -> Result<Self> {
        Self::new(vb, cin, cout, 1, 1, (0, 0))
    }
}

impl Module for Conv2d {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let pointwise = self.kernel == 1 && self.stride == 1;
        if !pointwise && x.device().is_cpu() && x.dtype() == DType::F32 {
            let op = ConvOp {
                stride: self.stride,
                pad: self.pad,
                tile_floats: CONV_TILE_FLOATS,
                winograd: WinogradUse::Auto,
                upsample: false,
            };
            let (x, w) = (x.contiguous()?, self.weight.contiguous()?);
            // The bias is added inside the op (and its gradient summed there): candle's
            // broadcast add and its reduction backwards cost more than the whole addition.
            return match &self.bias {
                Some(bias) => x.apply_op3(&w, &bias.contiguous()?, op),
                None => x.apply_op2(&w, op),
            };
        }
        let (b, c, h, w) = x.dims4()?;
        let cout = self.weight.dim(0)?;
        let y = if pointwise {
            let wm = self.weight.reshape((cout, c))?;
            wm.broadcast_matmul(&x.reshape((b, c, h * w))?)?
                .reshape((b, cout, h, w))?
        } else {
            // The custom op is CPU/f32 only; GPUs (the cuda/metal features) and f16 use
            // candle's own convolution.
            let (p0, p1) = self.pad;
            let xp = x.pad_with_zeros(2, p0, p1)?.pad_with_zeros(3, p0, p1)?;
            xp.conv2d(&self.weight, 0, self.stride, 1, 1)?
        };
        match &self.bias {
            Some(bias) => y.broadcast_add(&bias.reshape((1, cout, 1, 1))?),
            None => Ok(y),
        }
    }
}

impl Conv2d {
    /// `self.forward(&upsample_nearest(x, size))`: a nearest upsample (2x, or to `size`) and
    /// this layer. For inference where the upsample is 2x and the layer runs Winograd at the
    /// upsampled size, the upsampled input is never written out (the transform reads each
    /// pixel twice along both sides); elsewhere (other sizes, training, small pictures, other
    /// devices) the two steps as written.
    pub fn forward_upsampled(&self, x: &Tensor, size: Option<(usize, usize)>) -> Result<Tensor> {
        let plain = || self.forward(&upsample_nearest(x, size)?);
        let (_, c, h, w) = x.dims4()?;
        let twice = size.is_none_or(|s| s == (2 * h, 2 * w));
        let cpu_f32 = x.device().is_cpu() && x.dtype() == DType::F32;
        let tracked = x.track_op()
            || self.weight.track_op()
            || self.bias.as_ref().is_some_and(|b| b.track_op());
        let plain_3x3 = self.kernel == 3 && self.stride == 1 && self.pad == (1, 1);
        if !twice || !cpu_f32 || tracked || !plain_3x3 {
            return plain();
        }
        let cout = self.weight.dim(0)?;
        if winograd_tiles(c, cout, 2 * h, 2 * w).is_none() {
            return plain();
        }
        let op = ConvOp {
            stride: 1,
            pad: (1, 1),
            tile_floats: CONV_TILE_FLOATS,
            winograd: WinogradUse::Auto,
            upsample: true,
        };
        op.apply_no_bwd(x, &self.weight, self.bias.as_ref())
    }
}

/// A convolution with zero padding written as patch gathering plus one matrix product
/// (forward), and two matrix products (weights) plus a transposed convolution written as a
/// plain one (input) backwards, several times faster than candle's generic convolution
/// backward.
struct ConvOp {
    stride: usize,
    /// (top/left, bottom/right) zero padding.
    pad: (usize, usize),
    /// Patch floats per tile of output rows ([`CONV_TILE_FLOATS`]; `usize::MAX` gathers the
    /// whole picture at once, the benchmarks' baseline).
    tile_floats: usize,
    /// Whether 3x3 stride-1 convolutions go through [`winograd_3x3`], and with which tiles.
    winograd: WinogradUse,
    /// The input is read 2x nearest-upsampled (each pixel twice along both sides) without
    /// being written out: only with Winograd tiles chosen ([`Conv2d::forward_upsampled`]).
    upsample: bool,
}

/// Output size of a `k`-wide, stride-`s` window over `n` samples padded by `pad`.
fn conv_out(n: usize, k: usize, s: usize, pad: (usize, usize)) -> usize {
    (n + pad.0 + pad.1 - k) / s + 1
}

/// The `k x k` stride-`s` patches of an unpadded, contiguous `[B, C, H, W]` input with zero
/// padding, in one pass: `[C*k*k, B*oh*ow]` (row `(c*k + ky)*k + kx`, the order of a
/// `[Cout, C, k, k]` weight, so the weight needs no copy), ready for one matrix product.
fn patches(
    x: &[f32],
    (b, c, h, w): (usize, usize, usize, usize),
    k: usize,
    s: usize,
    pad: (usize, usize),
) -> (Vec<f32>, usize, usize) {
    use rayon::prelude::*;
    let (oh, ow) = (conv_out(h, k, s, pad), conv_out(w, k, s, pad));
    let cols = b * oh * ow;
    let mut out = vec![0f32; c * k * k * cols];
    if cols == 0 {
        return (out, oh, ow);
    }
    out.par_chunks_mut(cols).enumerate().for_each(|(row, dst)| {
        let (ci, ky, kx) = (row / (k * k), (row / k) % k, row % k);
        for bi in 0..b {
            let plane = &x[(bi * c + ci) * h * w..][..h * w];
            let dst = &mut dst[bi * oh * ow..][..oh * ow];
            for oy in 0..oh {
                // Padded coordinates minus the padding; out of range reads stay zero.
                let Some(y) = (oy * s + ky).checked_sub(pad.0).filter(|&y| y < h) else {
                    continue;
                };
                let src = &plane[y * w..][..w];
                let dst = &mut dst[oy * ow..][..ow];
                // Outputs whose column `ox*s + kx - pad` falls inside the row.
                let lo = pad.0.saturating_sub(kx).div_ceil(s);
                let hi = ow.min((w + pad.0).saturating_sub(kx).div_ceil(s));
                if lo >= hi {
                    continue;
                }
                let x0 = lo * s + kx - pad.0;
                if s == 1 {
                    dst[lo..hi].copy_from_slice(&src[x0..x0 + hi - lo]);
                } else {
                    for (i, d) in dst[lo..hi].iter_mut().enumerate() {
                        *d = src[x0 + i * s];
                    }
                }
            }
        }
    });
    (out, oh, ow)
}

/// The patch matrix of a tensor input (the backward pass).
fn patch_tensor(x: &Tensor, k: usize, s: usize, pad: (usize, usize)) -> Result<Tensor> {
    let dims = x.dims4()?;
    let data = x.contiguous()?.flatten_all()?.to_vec1::<f32>()?;
    let (p, oh, ow) = patches(&data, dims, k, s, pad);
    Tensor::from_vec(p, (dims.1 * k * k, dims.0 * oh * ow), x.device())
}

/// Patch-matrix floats per tile of output rows: 1 MiB of patches stays in a core's cache
/// while the matrix product reads it, where the whole patch matrix of a full-resolution VAE
/// convolution is over a gigabyte of fresh memory.
const CONV_TILE_FLOATS: usize = 1 << 18;

/// Fewest output columns per tile: the product packs the whole weight for every tile, which
/// is cheap next to the multiplications only when a tile is this wide.
const CONV_TILE_MIN_COLS: usize = 256;

/// Multiply-adds below which one convolution tile runs on one thread: handing a small product
/// to the pool costs more than it saves.
const CONV_PARALLEL_MACS: usize = 1 << 22;

/// A raw output pointer the tiles of one convolution share; each tile writes only its own
/// columns.
#[derive(Clone, Copy)]
struct OutPtr(*mut f32);
// SAFETY: the tiles write disjoint parts of one buffer that outlives them (see `ConvOp::forward`).
unsafe impl Send for OutPtr {}
unsafe impl Sync for OutPtr {}

impl OutPtr {
    /// The address `offset` floats in (a method, so closures capture the whole `Sync` value).
    fn at(self, offset: usize) -> *mut f32 {
        self.0.wrapping_add(offset)
    }
}

/// The patches of output rows `rows` of one picture `x` (`[C, H, W]`, unpadded) into `dst` as
/// `[C*k*k, rows.len()*ow]` (row `(c*k + ky)*k + kx`), zero where a window reaches the padding.
#[allow(clippy::too_many_arguments)]
fn gather_tile(
    x: &[f32],
    (c, h, w): (usize, usize, usize),
    k: usize,
    s: usize,
    pad: (usize, usize),
    rows: std::ops::Range<usize>,
    ow: usize,
    dst: &mut [f32],
) {
    let cols = rows.len() * ow;
    for (row, d) in dst.chunks_exact_mut(cols).take(c * k * k).enumerate() {
        let (ci, ky, kx) = (row / (k * k), (row / k) % k, row % k);
        let plane = &x[ci * h * w..][..h * w];
        // Outputs whose column `ox*s + kx - pad` falls inside the row.
        let lo = pad.0.saturating_sub(kx).div_ceil(s).min(ow);
        let hi = ow.min((w + pad.0).saturating_sub(kx).div_ceil(s)).max(lo);
        for (t, oy) in rows.clone().enumerate() {
            let d = &mut d[t * ow..][..ow];
            let Some(y) = (oy * s + ky).checked_sub(pad.0).filter(|&y| y < h) else {
                d.fill(0.0);
                continue;
            };
            let src = &plane[y * w..][..w];
            d[..lo].fill(0.0);
            d[hi..].fill(0.0);
            if lo == hi {
                continue;
            }
            let x0 = lo * s + kx - pad.0;
            if s == 1 {
                d[lo..hi].copy_from_slice(&src[x0..x0 + hi - lo]);
            } else {
                for (i, v) in d[lo..hi].iter_mut().enumerate() {
                    *v = src[x0 + i * s];
                }
            }
        }
    }
}

/// `dst (m x n) = lhs (m x k) rhs (k x n)`, or `+=` with `accumulate`, in f32: `dst` and
/// `lhs` row-major with row strides `dst_rs` and `lhs_rs`, `rhs` with row and column strides
/// `rhs_strides`.
///
/// # Safety
/// Each pointer with its strides must address a valid region of its shape; `dst` must be
/// writable and neither read nor written by anyone else meanwhile.
#[allow(clippy::too_many_arguments)]
unsafe fn matmul_into(
    (m, n, k): (usize, usize, usize),
    dst: *mut f32,
    dst_rs: usize,
    lhs: *const f32,
    lhs_rs: usize,
    rhs: *const f32,
    (rhs_rs, rhs_cs): (usize, usize),
    accumulate: bool,
    par: gemm::Parallelism,
) {
    // SAFETY: the caller's promise above.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst,
            1,
            dst_rs as isize,
            accumulate,
            lhs,
            1,
            lhs_rs as isize,
            rhs,
            rhs_cs as isize,
            rhs_rs as isize,
            if accumulate { 1.0 } else { 0.0 },
            1.0,
            false,
            false,
            false,
            par,
        )
    }
}

/// Runs `run(buffer, tile, split)` over `tiles` of `tile_macs` multiply-adds each: many
/// tiles one per thread (each with its own reused buffer, `split` false); few in turn on the
/// calling thread, each split across the pool (`split` true) when it is large enough to be
/// worth handing out; small work on the calling thread alone.
fn over_tiles<T: Copy + Sync, B: Default + Send>(
    tiles: &[T],
    tile_macs: usize,
    run: impl Fn(&mut B, T, bool) + Sync,
) {
    use rayon::prelude::*;
    let threads = rayon::current_num_threads();
    if threads > 1 && tiles.len() >= 2 * threads && tile_macs * tiles.len() >= CONV_PARALLEL_MACS {
        tiles
            .par_iter()
            .for_each_init(B::default, |buf, &t| run(buf, t, false));
    } else {
        let split = threads > 1 && tile_macs >= CONV_PARALLEL_MACS;
        let mut buf = B::default();
        for &t in tiles {
            run(&mut buf, t, split);
        }
    }
}

/// `dst += k * src`, element by element.
fn add_scaled(dst: &mut [f32], k: f32, src: &[f32]) {
    for (d, &v) in dst.iter_mut().zip(src) {
        *d += k * v;
    }
}

/// The Winograd tiles for a 3x3 convolution of `c` to `cout` channels with an `oh x ow`
/// output, when they are worth their transforms: outputs enough to amortise the weights'
/// transform on each call (its memory grows with the tiles' n*n) and the products' packing
/// of it per band, and channels enough for the products to be real matrix products.
/// Measured with `benches/blocks.rs` against the tiled kernel: F(4x4) 0.40-0.58x at the SD
/// VAE's and TAESD's full-size levels (128x128 outputs and more); F(2x2) 0.70x at SD 1.5's
/// first UNet level (64x64), where F(4x4) was 0.85x; at 32x32 (640 channels) neither paid
/// reliably (F(2x2) 0.59-1.1x across runs, F(4x4) 1.6x); at 16x16 (1280 channels) F(2x2)
/// took 2.5x.
fn winograd_tiles(c: usize, cout: usize, oh: usize, ow: usize) -> Option<&'static Winograd> {
    if c < 8 || cout < 8 {
        return None;
    }
    match oh * ow {
        px if px >= 128 * 128 => Some(&WINOGRAD_F4),
        px if px >= 2048 => Some(&WINOGRAD_F2),
        _ => None,
    }
}

/// Which convolution a [`ConvOp`] runs for 3x3 stride-1 layers.
#[derive(Clone, Copy)]
enum WinogradUse {
    /// The tiled kernel always (its benchmarks' baseline).
    Off,
    /// [`winograd_tiles`]'s choice.
    Auto,
    /// These tiles wherever the layer has at least 8 channels in and out and 1024 outputs.
    Tiles(&'static Winograd),
}

/// Winograd's F(m x m, 3x3): output tiles of `m x m` from input tiles of `n = m + 2`, through
/// `B^T` (`n x n`), `G` (`n x 3`) and `A^T` (`m x n`), row-major (Lavin and Gray, "Fast
/// Algorithms for Convolutional Neural Networks", 2015).
pub struct Winograd {
    m: usize,
    n: usize,
    bt: &'static [f32],
    g: &'static [f32],
    at: &'static [f32],
}

/// F(2x2, 3x3): 16 products for 4 outputs (9 per output directly, 4 here).
pub const WINOGRAD_F2: Winograd = Winograd {
    m: 2,
    n: 4,
    bt: &[
        1.0, 0.0, -1.0, 0.0, //
        0.0, 1.0, 1.0, 0.0, //
        0.0, -1.0, 1.0, 0.0, //
        0.0, 1.0, 0.0, -1.0,
    ],
    g: &[
        1.0, 0.0, 0.0, //
        0.5, 0.5, 0.5, //
        0.5, -0.5, 0.5, //
        0.0, 0.0, 1.0,
    ],
    at: &[
        1.0, 1.0, 1.0, 0.0, //
        0.0, 1.0, -1.0, -1.0,
    ],
};

/// F(4x4, 3x3): 36 products for 16 outputs (2.25 per output), for the largest layers.
pub const WINOGRAD_F4: Winograd = Winograd {
    m: 4,
    n: 6,
    bt: &[
        4.0, 0.0, -5.0, 0.0, 1.0, 0.0, //
        0.0, -4.0, -4.0, 1.0, 1.0, 0.0, //
        0.0, 4.0, -4.0, -1.0, 1.0, 0.0, //
        0.0, -2.0, -1.0, 2.0, 1.0, 0.0, //
        0.0, 2.0, -1.0, -2.0, 1.0, 0.0, //
        0.0, 4.0, 0.0, -5.0, 0.0, 1.0,
    ],
    g: &[
        1.0 / 4.0,
        0.0,
        0.0,
        -1.0 / 6.0,
        -1.0 / 6.0,
        -1.0 / 6.0,
        -1.0 / 6.0,
        1.0 / 6.0,
        -1.0 / 6.0,
        1.0 / 24.0,
        1.0 / 12.0,
        1.0 / 6.0,
        1.0 / 24.0,
        -1.0 / 12.0,
        1.0 / 6.0,
        0.0,
        0.0,
        1.0,
    ],
    at: &[
        1.0, 1.0, 1.0, 1.0, 1.0, 0.0, //
        0.0, 1.0, -1.0, 2.0, -2.0, 0.0, //
        0.0, 1.0, 1.0, 4.0, 4.0, 0.0, //
        0.0, 1.0, -1.0, 8.0, -8.0, 1.0,
    ],
};

/// Fewest tiles per band: each of a band's products packs its transformed weights, which is
/// cheap next to the multiplications only when the band is this wide.
const WINOGRAD_MIN_BAND_COLS: usize = 256;

/// Transform floats per band of tile rows in [`winograd_3x3`] (inputs and products alike):
/// a band's transformed inputs stay in a core's cache while its products read them.
const WINOGRAD_BAND_FLOATS: usize = 1 << 18;

/// The 3x3 weights `[Cout, C, 3, 3]` transformed, `G g G^T`, as `n * n` matrices
/// `[n*n][Cout][C]`.
fn winograd_weights(f: &Winograd, w: &[f32], cout: usize, c: usize) -> Vec<f32> {
    use rayon::prelude::*;
    let n = f.n;
    let mut u = vec![0f32; n * n * cout * c];
    let plane = cout * c;
    let up = OutPtr(u.as_mut_ptr());
    // One output channel per task: its `C` entries of each matrix.
    (0..cout).into_par_iter().for_each(|o| {
        let mut q = [0f32; 3 * 8];
        for i in 0..c {
            let g = &w[(o * c + i) * 9..][..9];
            // G g: n rows of 3.
            for a in 0..n {
                for s in 0..3 {
                    q[a * 3 + s] = (0..3).map(|r| f.g[a * 3 + r] * g[r * 3 + s]).sum();
                }
            }
            // (G g) G^T: n x n.
            for a in 0..n {
                for b in 0..n {
                    let value: f32 = (0..3).map(|s| q[a * 3 + s] * f.g[b * 3 + s]).sum();
                    // SAFETY: inside `u`; entry `o * c + i` of each matrix belongs to this
                    // task's output channel only; `u` outlives the loop.
                    unsafe { *up.at((a * n + b) * plane + o * c + i) = value };
                }
            }
        }
    });
    u
}

/// A 3x3, stride-1, padding-1 convolution by Winograd's F(m x m, 3x3): each `m x m` block of
/// the output from an `n x n` block of the input, transformed so that the 9 multiply-adds per
/// output and channel pair become `n*n / (m*m)`, in `n * n` matrix products per band of tile
/// rows. `x` `[B, C, H, W]` (`[B, C, H/2, W/2]` read 2x nearest-upsampled with `up`), `w`
/// `[Cout, C, 3, 3]`, both contiguous; the result is added to `out` `[B, Cout, H, W]` (which
/// holds the bias). The weights are transformed on each call,
/// not kept: a UNet's transformed weights would take 4x its convolutions' memory, and LoRAs
/// are written into the weights in place.
fn winograd_3x3(
    f: &Winograd,
    x: &[f32],
    w: &[f32],
    (b, c, h, wd): (usize, usize, usize, usize),
    up: bool,
    cout: usize,
    out: &mut [f32],
) {
    use rayon::prelude::*;
    let (m, n) = (f.m, f.n);
    // The stored input's sides.
    let (hs, ws) = if up { (h / 2, wd / 2) } else { (h, wd) };
    let nn = n * n;
    let u = winograd_weights(f, w, cout, c);
    let (th, tw) = (h.div_ceil(m), wd.div_ceil(m));
    let rows_per_band = (WINOGRAD_BAND_FLOATS / (nn * c.max(cout) * tw).max(1))
        .max(WINOGRAD_MIN_BAND_COLS.div_ceil(tw))
        .clamp(1, th);
    let bands: Vec<(usize, usize)> = (0..b)
        .flat_map(|bi| (0..th).step_by(rows_per_band).map(move |ty| (bi, ty)))
        .collect();
    let band_macs = nn * cout * c * rows_per_band * tw;
    let dst = OutPtr(out.as_mut_ptr());
    // Padded input row: one zero on the left, the row, zeros to the last tile's end.
    let padded = m * tw + 2;
    let run = |bufs: &mut (Vec<f32>, Vec<f32>), (bi, ty0): (usize, usize), par: bool| {
        let rows = ty0..(ty0 + rows_per_band).min(th);
        let tb = rows.len() * tw;
        let (v, mbuf) = bufs;
        v.resize(nn * c * tb, 0.0);
        mbuf.resize(nn * cout * tb, 0.0);
        let picture = &x[bi * c * hs * ws..][..c * hs * ws];
        // Input transform, B^T d B, per channel and row of tiles: the n input rows the tiles
        // read, their B^T combinations (along the row), then each tile's n columns of those.
        // Channel `ci` writes the elements `(p * c + ci) * tb + col` of V, which no other
        // channel writes.
        let vp = OutPtr(v.as_mut_ptr());
        let transform = |ci: usize| {
            let plane = &picture[ci * hs * ws..][..hs * ws];
            let mut d = vec![0f32; n * padded];
            let mut t = vec![0f32; n * padded];
            let mut ph = vec![0f32; m * (tw + 1)];
            for (r, ty) in rows.clone().enumerate() {
                for (i, row) in d.chunks_exact_mut(padded).enumerate() {
                    row.fill(0.0);
                    if let Some(y) = (m * ty + i).checked_sub(1).filter(|&y| y < h) {
                        if up {
                            let src = &plane[(y / 2) * ws..][..ws];
                            for (pair, &v) in row[1..1 + wd].chunks_exact_mut(2).zip(src) {
                                pair.fill(v);
                            }
                        } else {
                            row[1..1 + wd].copy_from_slice(&plane[y * wd..][..wd]);
                        }
                    }
                }
                for (a, ta) in t.chunks_exact_mut(padded).enumerate() {
                    ta.fill(0.0);
                    for (rr, dr) in d.chunks_exact(padded).enumerate() {
                        let k = f.bt[a * n + rr];
                        if k != 0.0 {
                            add_scaled(ta, k, dr);
                        }
                    }
                }
                for (a, ta) in t.chunks_exact(padded).enumerate() {
                    // The row split into its m phases (`ph[r][j] = ta[m*j + r]`), so that each
                    // of a tile's n columns is a contiguous run: column q of tile tx is
                    // `ph[q % m][tx + q / m]`.
                    for (r, phase) in ph.chunks_exact_mut(tw + 1).enumerate() {
                        for (j, v) in phase.iter_mut().enumerate() {
                            *v = ta.get(m * j + r).copied().unwrap_or(0.0);
                        }
                    }
                    for bcol in 0..n {
                        // SAFETY: row `r` of tiles in matrix `a * n + bcol`, channel `ci`:
                        // inside V, written by this channel only (above); V outlives the loop.
                        let dst = unsafe {
                            std::slice::from_raw_parts_mut(
                                vp.at(((a * n + bcol) * c + ci) * tb + r * tw),
                                tw,
                            )
                        };
                        dst.fill(0.0);
                        for q in 0..n {
                            let k = f.bt[bcol * n + q];
                            if k == 0.0 {
                                continue;
                            }
                            add_scaled(dst, k, &ph[(q % m) * (tw + 1) + q / m..][..tw]);
                        }
                    }
                }
            }
        };
        if par {
            (0..c).into_par_iter().for_each(transform);
        } else {
            (0..c).for_each(transform);
        }
        // The products: M[p] (Cout x Tb) = U[p] (Cout x C) V[p] (C x Tb).
        let product = |p: usize, mp: &mut [f32]| {
            // SAFETY: `mp` is M[p], `[Cout, Tb]` row-major; U[p] is `[Cout, C]` and V[p]
            // `[C, Tb]`, row-major, inside their buffers.
            unsafe {
                matmul_into(
                    (cout, tb, c),
                    mp.as_mut_ptr(),
                    tb,
                    u.as_ptr().add(p * cout * c),
                    c,
                    v.as_ptr().add(p * c * tb),
                    (tb, 1),
                    false,
                    gemm::Parallelism::None,
                )
            }
        };
        if par {
            mbuf.par_chunks_mut(cout * tb)
                .enumerate()
                .for_each(|(p, mp)| product(p, mp));
        } else {
            mbuf.chunks_mut(cout * tb)
                .enumerate()
                .for_each(|(p, mp)| product(p, mp));
        }
        // Output transform, A^T m A, per output channel and row of tiles (along the row),
        // added to the output.
        let mres = &*mbuf;
        let finish = |o: usize| {
            let plane = dst.at((bi * cout + o) * h * wd);
            // s[a][bcol][tx] = sum_r A^T[a][r] M[r * n + bcol][o][tile].
            let mut s = vec![0f32; m * n * tw];
            let mut acc = vec![0f32; tw];
            for (r, ty) in rows.clone().enumerate() {
                s.fill(0.0);
                for a in 0..m {
                    for rr in 0..n {
                        let k = f.at[a * n + rr];
                        if k == 0.0 {
                            continue;
                        }
                        for bcol in 0..n {
                            add_scaled(
                                &mut s[(a * n + bcol) * tw..][..tw],
                                k,
                                &mres[((rr * n + bcol) * cout + o) * tb + r * tw..][..tw],
                            );
                        }
                    }
                }
                for a in 0..m {
                    let y = m * ty + a;
                    if y >= h {
                        continue;
                    }
                    // SAFETY: row `y` of output channel `o` of picture `bi`: written by this
                    // band and channel only; `out` outlives the loop.
                    let row = unsafe { std::slice::from_raw_parts_mut(plane.add(y * wd), wd) };
                    let sa = &s[a * n * tw..][..n * tw];
                    for e in 0..m {
                        acc.fill(0.0);
                        for bcol in 0..n {
                            let k = f.at[e * n + bcol];
                            if k == 0.0 {
                                continue;
                            }
                            add_scaled(&mut acc, k, &sa[bcol * tw..][..tw]);
                        }
                        for (tx, &v) in acc.iter().enumerate() {
                            let xx = m * tx + e;
                            if xx >= wd {
                                break;
                            }
                            row[xx] += v;
                        }
                    }
                }
            }
        };
        if par {
            (0..cout).into_par_iter().for_each(finish);
        } else {
            (0..cout).for_each(finish);
        }
    };
    over_tiles(&bands, band_macs, run);
}

/// Each of `out`'s `[cout, l]` planes set to its channel's bias (left zero without one), in
/// parallel: the first touch of a large output's pages is much of its cost.
fn fill_bias(out: &mut [f32], bias: Option<&[f32]>, cout: usize, l: usize) {
    use rayon::prelude::*;
    if let Some(bias) = bias {
        out.par_chunks_mut(l.max(1))
            .with_min_len(((1 << 16) / l.max(1)).max(1))
            .enumerate()
            .for_each(|(i, plane)| plane.fill(bias[i % cout]));
    }
}

impl ConvOp {
    /// The convolution of `x` by `w` (and `bias`), without a backward pass.
    fn apply_no_bwd(&self, x: &Tensor, w: &Tensor, bias: Option<&Tensor>) -> Result<Tensor> {
        let (x, w) = (x.contiguous()?, w.contiguous()?);
        match bias {
            Some(bias) => x.apply_op3_no_bwd(&w, &bias.contiguous()?, self),
            None => x.apply_op2_no_bwd(&w, self),
        }
    }

    /// `x` `[B, C, H, W]`, `w` `[Cout, C, k, k]`, both contiguous; `bias` `[Cout]`.
    ///
    /// The output is computed in tiles of whole output rows: each tile's patches are gathered
    /// into a small reused buffer and multiplied straight into the output (which starts as the
    /// bias), so no patch matrix of the whole picture is ever allocated. Many tiles run one per
    /// thread; a few large ones split each product across the pool; small ones stay on the
    /// calling thread.
    fn forward(
        &self,
        x: (&[f32], &Layout),
        w: (&[f32], &Layout),
        bias: Option<&[f32]>,
    ) -> Result<(CpuStorage, Shape)> {
        let (b, c, hs, ws) = x.1.shape().dims4()?;
        let (cout, _, k, _) = w.1.shape().dims4()?;
        // The input's sides as the convolution reads it: twice the stored ones with `upsample`.
        let (h, wd) = if self.upsample {
            (2 * hs, 2 * ws)
        } else {
            (hs, ws)
        };
        let (oh, ow) = (
            conv_out(h, k, self.stride, self.pad),
            conv_out(wd, k, self.stride, self.pad),
        );
        let (l, kk) = (oh * ow, c * k * k);
        let mut out = vec![0f32; b * cout * l];
        fill_bias(&mut out, bias, cout, l);
        if l == 0 || cout == 0 {
            return Ok((CpuStorage::F32(out), Shape::from((b, cout, oh, ow))));
        }
        let plain_3x3 = k == 3 && self.stride == 1 && self.pad == (1, 1);
        let tiles = match self.winograd {
            _ if !plain_3x3 => None,
            WinogradUse::Off => None,
            WinogradUse::Auto => winograd_tiles(c, cout, oh, ow),
            WinogradUse::Tiles(f) => (c >= 8 && cout >= 8 && oh * ow >= 1024).then_some(f),
        };
        if let Some(f) = tiles {
            winograd_3x3(f, x.0, w.0, (b, c, h, wd), self.upsample, cout, &mut out);
            return Ok((CpuStorage::F32(out), Shape::from((b, cout, oh, ow))));
        }
        if self.upsample {
            // `forward_upsampled` builds the op only where Winograd runs at the upsampled size.
            candle_core::bail!("an upsampled convolution without Winograd tiles");
        }
        let rows_per_tile = (self.tile_floats / (kk * ow).max(1))
            .max(CONV_TILE_MIN_COLS.div_ceil(ow))
            .clamp(1, oh);
        let tiles: Vec<(usize, usize)> = (0..b)
            .flat_map(|bi| (0..oh).step_by(rows_per_tile).map(move |oy| (bi, oy)))
            .collect();
        let dst = OutPtr(out.as_mut_ptr());
        let (xs, ws) = (x.0, w.0);
        let run = |buf: &mut Vec<f32>, (bi, oy0): (usize, usize), par: gemm::Parallelism| {
            let rows = oy0..(oy0 + rows_per_tile).min(oh);
            let cols = rows.len() * ow;
            buf.resize(kk * cols, 0.0);
            let picture = &xs[bi * c * h * wd..][..c * h * wd];
            gather_tile(picture, (c, h, wd), k, self.stride, self.pad, rows, ow, buf);
            // SAFETY: `dst` points into `out`, alive until this function returns, and this
            // tile writes only its own `[Cout, cols]` block: columns `oy0*ow..` of picture
            // `bi`'s planes (row stride `l`), which no other tile touches. `ws` is the
            // `[Cout, kk]` weight (row stride `kk`) and `buf` the `[kk, cols]` patches.
            unsafe {
                matmul_into(
                    (cout, cols, kk),
                    dst.at(bi * cout * l + oy0 * ow),
                    l,
                    ws.as_ptr(),
                    kk,
                    buf.as_ptr(),
                    (cols, 1),
                    true,
                    par,
                )
            }
        };
        let tile_macs = cout * kk * rows_per_tile * ow;
        over_tiles(&tiles, tile_macs, |buf: &mut Vec<f32>, t, split| {
            let par = if split {
                gemm::Parallelism::Rayon(rayon::current_num_threads())
            } else {
                gemm::Parallelism::None
            };
            run(buf, t, par)
        });
        Ok((CpuStorage::F32(out), Shape::from((b, cout, oh, ow))))
    }

    /// Gradients of the input and the weights.
    fn backward(&self, x: &Tensor, w: &Tensor, grad: &Tensor) -> Result<(Tensor, Tensor)> {
        let (b, c, h, wd) = x.dims4()?;
        let (cout, _, k, _) = w.dims4()?;
        let (_, _, oh, ow) = grad.dims4()?;
        let s = self.stride;
        let (p0, p1) = self.pad;
        let (hp, wp) = (h + p0 + p1, wd + p0 + p1);
        let x = x.detach();
        let w = w.detach();
        let grad = grad.detach().contiguous()?;
        // Weights: one product over the whole batch, patches [C*k*k, B*L] x grad^T [B*L, Cout]
        // (neither big operand needs a transposed copy).
        let patches = patch_tensor(&x, k, s, self.pad)?;
        let grad_t = grad
            .permute((0, 2, 3, 1))?
            .contiguous()?
            .reshape((b * oh * ow, cout))?;
        let gw = patches
            .matmul(&grad_t)?
            .reshape((c, k, k, cout))?
            .permute((3, 0, 1, 2))?
            .contiguous()?;
        // Input: a full convolution of the (stride-dilated) output gradient with the flipped,
        // transposed kernel, over the padded input; the padding's share is cut off.
        let g = if s == 1 {
            grad
        } else {
            let g = grad
                .reshape((b, cout, oh, 1, ow, 1))?
                .pad_with_zeros(3, 0, s - 1)?
                .pad_with_zeros(5, 0, s - 1)?;
            g.reshape((b, cout, oh * s, ow * s))?
                .narrow(2, 0, (oh - 1) * s + 1)?
                .narrow(3, 0, (ow - 1) * s + 1)?
        };
        let w_t = w
            .transpose(0, 1)?
            .contiguous()?
            .flip(&[2, 3])?
            .contiguous()?;
        let gx = g.contiguous()?.apply_op2_no_bwd(
            &w_t,
            &ConvOp {
                stride: 1,
                pad: (k - 1, k - 1),
                tile_floats: CONV_TILE_FLOATS,
                winograd: WinogradUse::Auto,
                upsample: false,
            },
        )?;
        // Rows/columns of the padded input that no output window reached get zero gradient.
        let (gh, gww) = (gx.dim(2)?, gx.dim(3)?);
        let gx = gx
            .pad_with_zeros(2, 0, hp - gh)?
            .pad_with_zeros(3, 0, wp - gww)?
            .narrow(2, p0, h)?
            .narrow(3, p0, wd)?;
        Ok((gx, gw))
    }
}

/// The bias gradient: `grad` `[B, Cout, H, W]` summed over all but the channel.
fn bias_grad(grad: &Tensor) -> Result<Tensor> {
    let (b, cout, h, w) = grad.dims4()?;
    let data = grad.contiguous()?.flatten_all()?.to_vec1::<f32>()?;
    let mut sums = vec![0f64; cout];
    for (i, plane) in data.chunks_exact((h * w).max(1)).enumerate().take(b * cout) {
        sums[i % cout] += plane.iter().map(|&v| f64::from(v)).sum::<f64>();
    }
    Tensor::from_vec(
        sums.into_iter().map(|v| v as f32).collect::<Vec<_>>(),
        cout,
        grad.device(),
    )
}

impl CustomOp2 for ConvOp {
    fn name(&self) -> &'static str {
        "atelier-conv2d"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        self.forward(
            (contiguous_f32(s1, l1)?, l1),
            (contiguous_f32(s2, l2)?, l2),
            None,
        )
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let (gx, gw) = self.backward(x, w, grad)?;
        Ok((Some(gx), Some(gw)))
    }
}

impl CustomOp3 for ConvOp {
    fn name(&self) -> &'static str {
        "atelier-conv2d-bias"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        self.forward(
            (contiguous_f32(s1, l1)?, l1),
            (contiguous_f32(s2, l2)?, l2),
            Some(contiguous_f32(s3, l3)?),
        )
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _bias: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (gx, gw) = self.backward(x, w, grad)?;
        Ok((Some(gx), Some(gw), Some(bias_grad(grad)?)))
    }
}

/// A 3x3 or strided convolution through the tiled kernel with `tile_floats` patch floats per
/// tile (`usize::MAX`: the whole picture's patches at once), for benchmarks and tests; the
/// model's layers use [`Conv2d`].
#[doc(hidden)]
pub fn conv2d_tiled(
    x: &Tensor,
    w: &Tensor,
    bias: Option<&Tensor>,
    stride: usize,
    pad: (usize, usize),
    tile_floats: usize,
) -> Result<Tensor> {
    let op = ConvOp {
        stride,
        pad,
        tile_floats,
        winograd: WinogradUse::Off,
        upsample: false,
    };
    op.apply_no_bwd(x, w, bias)
}

/// A 3x3, stride-1, padding-1 convolution through Winograd's F(m x m, 3x3) with `tiles`
/// (the model's layers choose by size, [`winograd_tiles`]) where the layer has at least 8
/// channels in and out and 1024 outputs, else the tiled kernel; for benchmarks and tests.
#[doc(hidden)]
pub fn conv2d_winograd(
    x: &Tensor,
    w: &Tensor,
    bias: Option<&Tensor>,
    tiles: &'static Winograd,
) -> Result<Tensor> {
    let op = ConvOp {
        stride: 1,
        pad: (1, 1),
        tile_floats: CONV_TILE_FLOATS,
        winograd: WinogradUse::Tiles(tiles),
        upsample: false,
    };
    op.apply_no_bwd(x, w, bias)
}

/// Nearest-neighbour upsampling to `(h, w)` (2x by default), differentiable.
pub fn upsample_nearest(x: &Tensor, size: Option<(usize, usize)>) -> Result<Tensor> {
    let (b, c, h, w) = x.dims4()?;
    match size {
        Some((th, tw)) if (th, tw) != (2 * h, 2 * w) => x.upsample_nearest2d(th, tw),
        _ => x
            .reshape((b, c, h, 1, w, 1))?
            .broadcast_as((b, c, h, 2, w, 2))?
            .reshape((b, c, 2 * h, 2 * w)),
    }
}

/// Score bytes per block of query rows in [`TiledAttention`]: a block's scores stay in a
/// core's cache between the two products and the softmax.
const ATTENTION_BLOCK_BYTES: usize = 256 << 10;

/// Multi-head softmax attention of queries `[B, N, H*D]` over keys and values `[B, M, H*D]`
/// (contiguous f32, head `h` in columns `h*D..(h+1)*D`), written as `[B, N, H*D]`, without
/// gradients: the heads are read and written in place through the products' strides, never
/// split into copies of their own, and the scores' scale is applied inside their exponentials.
/// Each block of one head's query rows computes its scores (one product), their exponentials
/// and its share of the output (a second product) while the scores are in cache, then divides
/// each output row by its softmax's sum. Blocks run one per thread. The whole score matrix is
/// never allocated, so it holds `M` floats per query row of a block instead of `N x M` a head.
struct TiledAttention {
    /// At most this many score bytes per block (fewer rows for longer keys; one at least).
    budget: usize,
    /// Heads, each `D` = channels / heads wide.
    heads: usize,
    /// What the scores are multiplied by (`1 / sqrt(D)`).
    scale: f32,
}

impl candle_core::CustomOp3 for TiledAttention {
    fn name(&self) -> &'static str {
        "atelier-tiled-attention"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        use rayon::prelude::*;
        let (q, k, v) = (
            contiguous_f32(s1, l1)?,
            contiguous_f32(s2, l2)?,
            contiguous_f32(s3, l3)?,
        );
        let (b, n, c) = l1.shape().dims3()?;
        let m = l2.shape().dims3()?.1;
        if l2.shape().dims3()? != (b, m, c) || l3.shape().dims3()? != (b, m, c) {
            candle_core::bail!("attention: keys and values must both be [{b}, M, {c}]");
        }
        let heads = self.heads.max(1);
        if c % heads != 0 {
            candle_core::bail!("attention: {c} channels do not split into {heads} heads");
        }
        let d = c / heads;
        let mut out = vec![0f32; b * n * c];
        if b == 0 || n == 0 || d == 0 || m == 0 {
            return Ok((CpuStorage::F32(out), Shape::from((b, n, c))));
        }
        // Each block reads all of its head's keys and values: once they outgrow the cache
        // (a VAE's 512 channels), blocks need enough rows to pay for reading them again.
        let reread_rows = if 2 * m * d * 4 > 1 << 20 { 128 } else { 1 };
        let rows = (ATTENTION_BLOCK_BYTES.min(self.budget) / (m * 4).max(1))
            .max(reread_rows)
            .clamp(1, n);
        let blocks: Vec<(usize, usize)> = (0..b * heads)
            .flat_map(|gi| (0..n).step_by(rows).map(move |r| (gi, r)))
            .collect();
        let dst = OutPtr(out.as_mut_ptr());
        let run = |(scores, sums): &mut (Vec<f32>, Vec<f32>), (gi, r0): (usize, usize)| {
            let (bi, head) = (gi / heads, gi % heads);
            let len = rows.min(n - r0);
            scores.resize(len * m, 0.0);
            sums.resize(len, 0.0);
            let (qb, kg, vg) = (
                &q[(bi * n + r0) * c + head * d..],
                &k[bi * m * c + head * d..],
                &v[bi * m * c + head * d..],
            );
            // SAFETY: `qb` holds `len` rows of `d` floats at row stride `c` (the block's rows of
            // this head), `kg` `m` such rows read as their transpose `[d, m]` (row stride 1,
            // column stride c), each slice long enough as it runs to the operand's end;
            // `scores` is a `[len, m]` buffer of that size.
            unsafe {
                matmul_into(
                    (len, m, d),
                    scores.as_mut_ptr(),
                    m,
                    qb.as_ptr(),
                    c,
                    kg.as_ptr(),
                    (1, c),
                    false,
                    gemm::Parallelism::None,
                )
            }
            // Softmax but for its division, which waits for the output's `d` floats a row
            // instead of the scores' `m`.
            super::fused::exp_rows(scores, m, self.scale, sums);
            let at = dst.at((bi * n + r0) * c + head * d);
            // SAFETY: the block's output rows `r0..r0 + len` of picture `bi`, columns of head
            // `head` (row stride c), lie inside `out`, alive until this function returns, and
            // no other block reads or writes them; `scores` is `[len, m]` and `vg` `m` rows of
            // `d` floats at row stride c.
            unsafe {
                matmul_into(
                    (len, d, m),
                    at,
                    c,
                    scores.as_ptr(),
                    m,
                    vg.as_ptr(),
                    (c, 1),
                    false,
                    gemm::Parallelism::None,
                )
            }
            for (r, sum) in sums.iter().enumerate() {
                // SAFETY: row `r` of the block's output, `d` floats of this head (see above).
                let row = unsafe { std::slice::from_raw_parts_mut(at.wrapping_add(r * c), d) };
                let inv = 1.0 / sum;
                row.iter_mut().for_each(|v| *v *= inv);
            }
        };
        if rayon::current_num_threads() > 1 && blocks.len() > 1 {
            blocks
                .par_iter()
                .for_each_init(Default::default, |buf, &b| run(buf, b));
        } else {
            let mut buf = Default::default();
            for &b in &blocks {
                run(&mut buf, b);
            }
        }
        Ok((CpuStorage::F32(out), Shape::from((b, n, c))))
    }
}

/// Most bytes of attention scores held at once (see [`attention`]).
const ATTENTION_SCORE_BYTES: usize = 256 << 20;

/// Multi-head attention over `[B, N, C]` queries and `[B, M, C']` keys/values.
pub fn attention(q: &Tensor, k: &Tensor, v: &Tensor, heads: usize) -> Result<Tensor> {
    attention_within(q, k, v, heads, ATTENTION_SCORE_BYTES)
}

/// [`attention`] holding at most `budget` bytes of scores at once (one row at the least).
fn attention_within(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    heads: usize,
    budget: usize,
) -> Result<Tensor> {
    let (b, n, c) = q.dims3()?;
    let m = k.dim(1)?;
    let d = c / heads;
    if q.device().is_cpu()
        && [q, k, v].iter().all(|t| t.dtype() == DType::F32)
        && !(q.track_op() || k.track_op() || v.track_op())
    {
        // Inference on the CPU: blocks of one head's query rows, their scores kept in cache.
        return q.contiguous()?.apply_op3_no_bwd(
            &k.contiguous()?,
            &v.contiguous()?,
            &TiledAttention {
                budget,
                heads,
                scale: (d as f32).powf(-0.5),
            },
        );
    }
    let split =
        |t: &Tensor, len: usize| t.reshape((b, len, heads, d))?.transpose(1, 2)?.contiguous();
    let q = (split(q, n)? * (d as f64).powf(-0.5))?;
    let k = split(k, m)?;
    let v = split(v, m)?;
    // Bound the score matrix: (batch, head) groups in slices when it would be large, and the
    // queries of one head in chunks of rows when even one head's would be (a 1024 px VAE's
    // mid block: 16384 x 16384 scores). Each row's softmax is whole, so the result is exact.
    let per = n * m * 4;
    let out = if b * heads * per <= budget {
        super::fused::softmax_last_dim(&q.matmul(&k.t()?)?)?.matmul(&v)?
    } else {
        let q = q.reshape((b * heads, n, d))?;
        let k = k.reshape((b * heads, m, d))?;
        let v = v.reshape((b * heads, m, d))?;
        let step = (budget / per).max(1);
        let rows = (budget / (m * 4).max(1)).clamp(1, n);
        let mut parts = Vec::new();
        for s in (0..b * heads).step_by(step) {
            let len = step.min(b * heads - s);
            let (ks, vs) = (k.narrow(0, s, len)?, v.narrow(0, s, len)?);
            let kt = ks.t()?;
            let mut chunks = Vec::new();
            for r in (0..n).step_by(rows) {
                let qs = q.narrow(0, s, len)?.narrow(1, r, rows.min(n - r))?;
                chunks.push(super::fused::softmax_last_dim(&qs.matmul(&kt)?)?.matmul(&vs)?);
            }
            parts.push(if chunks.len() == 1 {
                chunks.remove(0)
            } else {
                Tensor::cat(&chunks, 1)?
            });
        }
        Tensor::cat(&parts, 0)?.reshape((b, heads, n, d))?
    };
    out.transpose(1, 2)?.reshape((b, n, c))
}

/// diffusers `ResnetBlock2D` (silu, optional time embedding, 1x1 shortcut when widths differ).
#[derive(Clone, Debug)]
pub struct ResnetBlock {
    norm1: GroupNorm,
    conv1: Conv2d,
    time_emb_proj: Option<Linear>,
    norm2: GroupNorm,
    conv2: Conv2d,
    shortcut: Option<Conv2d>,
    output_scale: f64,
}

impl ResnetBlock {
    pub fn new(
        vb: VarBuilder,
        cin: usize,
        cout: usize,
        temb: Option<usize>,
        groups: usize,
        eps: f64,
        output_scale: f64,
    ) -> Result<Self> {
        Ok(Self {
            norm1: group_norm(groups, cin, eps, vb.pp("norm1"))?,
            conv1: Conv2d::same(vb.pp("conv1"), cin, cout)?,
            time_emb_proj: match temb {
                Some(t) => Some(linear(t, cout, vb.pp("time_emb_proj"))?),
                None => None,
            },
            norm2: group_norm(groups, cout, eps, vb.pp("norm2"))?,
            conv2: Conv2d::same(vb.pp("conv2"), cout, cout)?,
            shortcut: if cin != cout {
                Some(Conv2d::pointwise(vb.pp("conv_shortcut"), cin, cout)?)
            } else {
                None
            },
            output_scale,
        })
    }

    pub fn forward(&self, x: &Tensor, temb: Option<&Tensor>) -> Result<Tensor> {
        let mut h = self.conv1.forward(&self.norm1.forward_silu(x)?)?;
        if let (Some(proj), Some(t)) = (&self.time_emb_proj, temb) {
            let t = proj
                .forward(&silu(t)?)?
                .unsqueeze(D::Minus1)?
                .unsqueeze(D::Minus1)?;
            h = h.broadcast_add(&t)?;
        }
        let h = self.conv2.forward(&self.norm2.forward_silu(&h)?)?;
        let out = match &self.shortcut {
            Some(s) => add_into(h, &s.forward(x)?)?,
            None => add_into(h, x)?,
        };
        if self.output_scale == 1.0 {
            Ok(out)
        } else {
            out / self.output_scale
        }
    }
}

#[derive(Clone, Debug)]
struct Attn {
    to_q: Linear,
    to_k: Linear,
    to_v: Linear,
    to_out: Linear,
    heads: usize,
}

impl Attn {
    fn new(vb: VarBuilder, dim: usize, context_dim: usize, heads: usize) -> Result<Self> {
        Ok(Self {
            to_q: linear_no_bias(dim, dim, vb.pp("to_q"))?,
            to_k: linear_no_bias(context_dim, dim, vb.pp("to_k"))?,
            to_v: linear_no_bias(context_dim, dim, vb.pp("to_v"))?,
            to_out: linear(dim, dim, vb.pp("to_out").pp("0"))?,
            heads,
        })
    }

    fn forward(&self, x: &Tensor, context: &Tensor) -> Result<Tensor> {
        let out = attention(
            &self.to_q.forward(x)?,
            &self.to_k.forward(context)?,
            &self.to_v.forward(context)?,
            self.heads,
        )?;
        self.to_out.forward(&out)
    }
}

/// diffusers `BasicTransformerBlock`: self-attention, cross-attention, GEGLU feed-forward.
#[derive(Clone, Debug)]
struct TransformerBlock {
    norm1: LayerNorm,
    attn1: Attn,
    norm2: LayerNorm,
    attn2: Attn,
    norm3: LayerNorm,
    ff_in: Linear,
    ff_out: Linear,
}

impl TransformerBlock {
    fn new(vb: VarBuilder, dim: usize, context_dim: usize, heads: usize) -> Result<Self> {
        let inner = dim * 4;
        Ok(Self {
            norm1: layer_norm(dim, 1e-5, vb.pp("norm1"))?,
            attn1: Attn::new(vb.pp("attn1"), dim, dim, heads)?,
            norm2: layer_norm(dim, 1e-5, vb.pp("norm2"))?,
            attn2: Attn::new(vb.pp("attn2"), dim, context_dim, heads)?,
            norm3: layer_norm(dim, 1e-5, vb.pp("norm3"))?,
            ff_in: linear(dim, inner * 2, vb.pp("ff").pp("net").pp("0").pp("proj"))?,
            ff_out: linear(inner, dim, vb.pp("ff").pp("net").pp("2"))?,
        })
    }

    fn forward(&self, x: &Tensor, context: &Tensor) -> Result<Tensor> {
        // Each residual is added into the sublayer's fresh output (in place for inference).
        let h = self.norm1.forward(x)?;
        let x = add_into(self.attn1.forward(&h, &h)?, x)?;
        let x = add_into(self.attn2.forward(&self.norm2.forward(&x)?, context)?, &x)?;
        let gated = geglu(&self.ff_in.forward(&self.norm3.forward(&x)?)?)?;
        add_into(self.ff_out.forward(&gated)?, &x)
    }
}

#[derive(Clone, Debug)]
enum Proj {
    Conv(Conv2d),
    Linear(Linear),
}

/// diffusers `Transformer2DModel` (a.k.a. spatial transformer).
#[derive(Clone, Debug)]
pub struct SpatialTransformer {
    norm: GroupNorm,
    proj_in: Proj,
    blocks: Vec<TransformerBlock>,
    proj_out: Proj,
}

impl SpatialTransformer {
    pub fn new(
        vb: VarBuilder,
        ch: usize,
        heads: usize,
        depth: usize,
        context_dim: usize,
        groups: usize,
        linear_proj: bool,
    ) -> Result<Self> {
        let proj = |name: &str| -> Result<Proj> {
            Ok(if linear_proj {
                Proj::Linear(linear(ch, ch, vb.pp(name))?)
            } else {
                Proj::Conv(Conv2d::pointwise(vb.pp(name), ch, ch)?)
            })
        };
        Ok(Self {
            norm: group_norm(groups, ch, 1e-6, vb.pp("norm"))?,
            proj_in: proj("proj_in")?,
            blocks: (0..depth)
                .map(|i| {
                    TransformerBlock::new(
                        vb.pp("transformer_blocks").pp(i.to_string()),
                        ch,
                        context_dim,
                        heads,
                    )
                })
                .collect::<Result<_>>()?,
            proj_out: proj("proj_out")?,
        })
    }

    pub fn forward(&self, x: &Tensor, context: &Tensor) -> Result<Tensor> {
        let (b, c, h, w) = x.dims4()?;
        let n = self.norm.forward(x)?;
        // Contiguous: candle's batched Linear gives wrong results on transposed views.
        let tokens = |t: &Tensor| t.reshape((b, c, h * w))?.transpose(1, 2)?.contiguous();
        let mut t = match &self.proj_in {
            Proj::Conv(conv) => tokens(&conv.forward(&n)?)?,
            Proj::Linear(lin) => lin.forward(&tokens(&n)?)?,
        };
        for block in &self.blocks {
            t = block.forward(&t, context)?;
        }
        let back = |t: &Tensor| t.transpose(1, 2)?.reshape((b, c, h, w));
        let out = match &self.proj_out {
            Proj::Conv(conv) => conv.forward(&back(&t)?)?,
            Proj::Linear(lin) => back(&lin.forward(&t)?)?,
        };
        // `out` is fresh either way (a convolution's output, or the reshape's copy).
        add_into(out, x)
    }
}

/// The VAE's single-head self-attention over pixels (new `to_q` or old `query` names).
#[derive(Clone, Debug)]
pub struct AttentionBlock {
    norm: GroupNorm,
    q: Linear,
    k: Linear,
    v: Linear,
    out: Linear,
}

impl AttentionBlock {
    pub fn new(vb: VarBuilder, ch: usize, groups: usize, eps: f64) -> Result<Self> {
        let names = if vb.contains_tensor("query.weight") {
            ["query", "key", "value", "proj_attn"]
        } else {
            ["to_q", "to_k", "to_v", "to_out.0"]
        };
        let lin = |name: &str| -> Result<Linear> {
            let vb = vb.pp(name);
            // Old checkpoints store these as 1x1 convolutions.
            if vb.contains_tensor("weight") && vb.get_unchecked("weight")?.rank() == 4 {
                let w = vb.get((ch, ch, 1, 1), "weight")?.reshape((ch, ch))?;
                Ok(Linear::new(w, Some(vb.get(ch, "bias")?)))
            } else {
                linear(ch, ch, vb)
            }
        };
        Ok(Self {
            norm: group_norm(groups, ch, eps, vb.pp("group_norm"))?,
            q: lin(names[0])?,
            k: lin(names[1])?,
            v: lin(names[2])?,
            out: lin(names[3])?,
        })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (b, c, h, w) = x.dims4()?;
        let t = self
            .norm
            .forward(x)?
            .reshape((b, c, h * w))?
            .transpose(1, 2)?
            .contiguous()?;
        let a = attention(
            &self.q.forward(&t)?,
            &self.k.forward(&t)?,
            &self.v.forward(&t)?,
            1,
        )?;
        let out = self
            .out
            .forward(&a)?
            .transpose(1, 2)?
            .reshape((b, c, h, w))?;
        // `out` is fresh: the reshape copied the transposed projection.
        add_into(out, x)
    }
}

/// Sinusoidal timestep features (diffusers `Timesteps`).
pub fn timestep_features(
    t: &Tensor,
    dim: usize,
    flip_sin_to_cos: bool,
    shift: f64,
) -> Result<Tensor> {
    let half = dim / 2;
    let exponent: Vec<f32> = (0..half)
        .map(|i| (-(10000f64.ln()) * i as f64 / (half as f64 - shift)).exp() as f32)
        .collect();
    let freqs = Tensor::from_vec(exponent, (1, half), t.device())?;
    let args = t
        .to_dtype(DType::F32)?
        .unsqueeze(1)?
        .broadcast_mul(&freqs)?;
    let (sin, cos) = (args.sin()?, args.cos()?);
    let emb = if flip_sin_to_cos {
        Tensor::cat(&[cos, sin], 1)?
    } else {
        Tensor::cat(&[sin, cos], 1)?
    };
    let emb = if dim % 2 == 1 {
        emb.pad_with_zeros(1, 0, 1)?
    } else {
        emb
    };
    emb.to_dtype(t.dtype())
}

/// diffusers `TimestepEmbedding`: linear, silu, linear.
#[derive(Clone, Debug)]
pub struct TimestepEmbedding {
    /// LCM-distilled UNets (diffusers' `time_cond_proj_dim`): the projection of a condition
    /// (the guidance-scale embedding) added to the input.
    cond_proj: Option<Linear>,
    linear_1: Linear,
    linear_2: Linear,
}

impl TimestepEmbedding {
    pub fn new(vb: VarBuilder, cin: usize, dim: usize) -> Result<Self> {
        Self::with_condition(vb, cin, dim, None)
    }

    /// With `cond_dim`, a `cond_proj` (no bias) from a condition of that width.
    pub fn with_condition(
        vb: VarBuilder,
        cin: usize,
        dim: usize,
        cond_dim: Option<usize>,
    ) -> Result<Self> {
        Ok(Self {
            cond_proj: cond_dim
                .map(|d| linear_no_bias(d, cin, vb.pp("cond_proj")))
                .transpose()?,
            linear_1: linear(cin, dim, vb.pp("linear_1"))?,
            linear_2: linear(dim, dim, vb.pp("linear_2"))?,
        })
    }

    /// The embedding of `x`, with the condition where this embedding takes one (and only
    /// there).
    pub fn forward_with_condition(&self, x: &Tensor, condition: Option<&Tensor>) -> Result<Tensor> {
        let x = match (&self.cond_proj, condition) {
            (Some(proj), Some(c)) => (x + proj.forward(c)?)?,
            (None, None) => x.clone(),
            (Some(_), None) => candle_core::bail!(
                "this UNet needs a guidance-scale embedding (an LCM-distilled UNet)"
            ),
            (None, Some(_)) => candle_core::bail!("this UNet takes no guidance-scale embedding"),
        };
        self.linear_2.forward(&silu(&self.linear_1.forward(&x)?)?)
    }
}

impl Module for TimestepEmbedding {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.forward_with_condition(x, None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;
    use candle_nn::VarMap;

    /// A pool of `threads` threads, for kernels' one-thread and parallel paths alike.
    /// The largest magnitude in `t` (a result's scale, for tolerances relative to it).
    fn max_abs(t: &Tensor) -> f32 {
        t.abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
    }

    fn pool(threads: usize) -> rayon::ThreadPool {
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap()
    }

    #[test]
    fn attention_in_slices_row_chunks_and_tiles_equals_the_whole_score_matrix() {
        let dev = Device::Cpu;
        let q = Tensor::randn(0f32, 1.0, (2, 37, 16), &dev).unwrap();
        let k = Tensor::randn(0f32, 1.0, (2, 29, 16), &dev).unwrap();
        let v = Tensor::randn(0f32, 1.0, (2, 29, 16), &dev).unwrap();
        // Tracked inputs (training) take the composed path: the whole score matrix.
        let tracked = candle_core::Var::from_tensor(&q).unwrap();
        let whole = attention_within(tracked.as_tensor(), &k, &v, 4, usize::MAX).unwrap();
        let max_diff = |a: &Tensor| super::super::max_abs_diff(a, &whole);
        // One head's 37 x 29 scores are 4292 bytes: 1000 bytes forces 8-row chunks (blocks),
        // 1 byte single rows, 10000 bytes two heads per slice.
        for budget in [1, 1000, 10_000, usize::MAX] {
            let composed = attention_within(tracked.as_tensor(), &k, &v, 4, budget).unwrap();
            assert!(max_diff(&composed) < 1e-5, "composed, budget {budget}");
            let tiled = attention_within(&q, &k, &v, 4, budget).unwrap();
            assert!(max_diff(&tiled) < 1e-5, "tiled, budget {budget}");
        }
        // On a pool of one thread too.
        let single = pool(1).install(|| attention_within(&q, &k, &v, 4, 1000).unwrap());
        assert!(max_diff(&single) < 1e-5);
    }

    #[test]
    fn tiled_convolution_matches_candles_conv2d_across_tile_sizes_and_pools() {
        let dev = Device::Cpu;
        // Wide enough for several 256-column tiles, with a batch of two and both strides.
        let x = Tensor::randn(0f32, 1.0, (2, 6, 37, 300), &dev).unwrap();
        let w = Tensor::randn(0f32, 0.3, (5, 6, 3, 3), &dev).unwrap();
        let bias = Tensor::randn(0f32, 1.0, 5, &dev).unwrap();
        for (stride, pad) in [(1, (1, 1)), (2, (0, 1)), (2, (1, 1))] {
            let xp = x
                .pad_with_zeros(2, pad.0, pad.1)
                .unwrap()
                .pad_with_zeros(3, pad.0, pad.1)
                .unwrap();
            let want = xp
                .conv2d(&w, 0, stride, 1, 1)
                .unwrap()
                .broadcast_add(&bias.reshape((1, 5, 1, 1)).unwrap())
                .unwrap();
            // One tile per row, the default, and the whole picture at once; on a pool of one
            // thread (tiles in turn) and of three (tiles in parallel).
            for tile_floats in [1, CONV_TILE_FLOATS, usize::MAX] {
                for threads in [1, 3] {
                    let ours = pool(threads)
                        .install(|| conv2d_tiled(&x, &w, Some(&bias), stride, pad, tile_floats))
                        .unwrap();
                    assert_eq!(ours.dims(), want.dims());
                    let err = super::super::max_abs_diff(&ours, &want);
                    assert!(
                        err < 1e-4,
                        "stride {stride} pad {pad:?} tile {tile_floats} threads {threads}: {err}"
                    );
                }
            }
        }
    }

    #[test]
    fn winograd_convolution_matches_candles_conv2d() {
        let dev = Device::Cpu;
        // Sides that are and are not multiples of the tiles, a batch of two, bands of one
        // tile row (wide pictures) and of many, on a pool of one thread and of three; both
        // tile sizes.
        for (b, c, cout, h, w) in [
            (2, 8, 12, 33, 35),
            (1, 16, 8, 32, 32),
            (1, 8, 8, 7, 150),
            (1, 64, 64, 40, 40),
            (2, 24, 16, 41, 702),
        ] {
            assert!(c >= 8 && cout >= 8 && h * w >= 1024, "{c} {cout} {h}x{w}");
            let x = Tensor::randn(0f32, 1.0, (b, c, h, w), &dev).unwrap();
            let wt = Tensor::randn(0f32, 0.2, (cout, c, 3, 3), &dev).unwrap();
            let bias = Tensor::randn(0f32, 1.0, cout, &dev).unwrap();
            let xp = x
                .pad_with_zeros(2, 1, 1)
                .unwrap()
                .pad_with_zeros(3, 1, 1)
                .unwrap();
            let plain = xp.conv2d(&wt, 0, 1, 1, 1).unwrap();
            let want = plain
                .broadcast_add(&bias.reshape((1, cout, 1, 1)).unwrap())
                .unwrap();
            let scale = max_abs(&plain);
            for (name, tiles) in [("F2", &WINOGRAD_F2), ("F4", &WINOGRAD_F4)] {
                for threads in [1, 3] {
                    let pool = pool(threads);
                    let ours = pool
                        .install(|| conv2d_winograd(&x, &wt, Some(&bias), tiles))
                        .unwrap();
                    assert_eq!(ours.dims(), want.dims());
                    let err = super::super::max_abs_diff(&ours, &want);
                    // Float rounding through the transforms: well under a thousandth of the
                    // outputs' range.
                    assert!(
                        err < 1e-5 * scale.max(1.0) * 20.0,
                        "{name} {b}x{c}->{cout} {h}x{w}, {threads} threads: {err} (scale {scale})"
                    );
                    let none = pool
                        .install(|| conv2d_winograd(&x, &wt, None, tiles))
                        .unwrap();
                    assert!(
                        super::super::max_abs_diff(&none, &plain) < 1e-5 * scale.max(1.0) * 20.0
                    );
                }
            }
        }
        // The model's layers' choice by size.
        let tiles = |c, cout, h, w| winograd_tiles(c, cout, h, w).map(|f| f.m);
        assert_eq!(tiles(4, 8, 256, 256), None);
        assert_eq!(tiles(64, 64, 4, 4), None);
        assert_eq!(tiles(1280, 1280, 16, 16), None);
        assert_eq!(tiles(640, 640, 32, 32), None);
        assert_eq!(tiles(320, 320, 64, 64), Some(2));
        assert_eq!(tiles(128, 128, 512, 512), Some(4));
    }

    /// A 2x nearest upsample read inside the Winograd transform equals the upsample written
    /// out and the convolution: F(2x2) and F(4x4) sizes, odd stored sides, a batch of two,
    /// with and without bias, pools of one and two threads; below Winograd's sizes and with
    /// a tracked input the layer takes the two steps.
    #[test]
    fn upsampled_convolution_equals_upsample_then_convolution() {
        let dev = Device::Cpu;
        let vm = candle_nn::VarMap::new();
        let vb = VarBuilder::from_varmap(&vm, DType::F32, &dev);
        for (b, c, cout, h, w, bias) in [
            (2, 8, 12, 23, 33, true),
            (1, 16, 8, 64, 67, false),
            (1, 8, 8, 3, 5, true),
        ] {
            let conv = if bias {
                Conv2d::same(vb.pp(format!("b{c}x{h}")), c, cout).unwrap()
            } else {
                Conv2d::without_bias(vb.pp(format!("n{c}x{h}")), c, cout, 3, 1, (1, 1)).unwrap()
            };
            let x = Tensor::randn(0f32, 1.0, (b, c, h, w), &dev).unwrap();
            let want = conv.forward(&upsample_nearest(&x, None).unwrap()).unwrap();
            let scale = max_abs(&want);
            for threads in [1, 2] {
                let ours = pool(threads)
                    .install(|| conv.forward_upsampled(&x, None))
                    .unwrap();
                assert_eq!(ours.dims(), [b, cout, 2 * h, 2 * w]);
                let err = super::super::max_abs_diff(&ours, &want);
                assert!(
                    err < 1e-5 * scale.max(1.0) * 20.0,
                    "{b}x{c}->{cout} {h}x{w}, {threads} threads: {err} (scale {scale})"
                );
            }
        }
        // An upsample to another size than twice (the UNet's odd sides) takes the two steps.
        let x = Tensor::randn(0f32, 1.0, (1, 8, 23, 33), &dev).unwrap();
        let conv = Conv2d::same(vb.pp("odd"), 8, 8).unwrap();
        let want = conv
            .forward(&upsample_nearest(&x, Some((47, 66))).unwrap())
            .unwrap();
        let ours = conv.forward_upsampled(&x, Some((47, 66))).unwrap();
        assert_eq!(super::super::max_abs_diff(&ours, &want), 0.0);
        let x = candle_core::Var::randn(0f32, 1.0, (1, 8, 4, 4), &dev).unwrap();
        let conv = Conv2d::same(vb.pp("tracked"), 8, 8).unwrap();
        let y = conv.forward_upsampled(x.as_tensor(), None).unwrap();
        let grads = y.sum_all().unwrap().backward().unwrap();
        assert!(grads.get(&x).is_some());
    }

    #[test]
    fn convolution_matches_candles_conv2d_with_padding_and_stride() {
        let dev = Device::Cpu;
        let vm = VarMap::new();
        let vb = VarBuilder::from_varmap(&vm, DType::F32, &dev);
        let shapes = [(2, 5, 9, 7), (1, 5, 1, 1), (1, 5, 2, 3), (3, 5, 4, 1)];
        let cases = [
            (3, 1, (1, 1)),
            (3, 2, (1, 1)),
            (3, 2, (0, 1)),
            (1, 1, (0, 0)),
        ];
        for (shape, (kernel, stride, pad)) in shapes
            .into_iter()
            .flat_map(|s| cases.into_iter().map(move |c| (s, c)))
        {
            if shape.2 + pad.0 + pad.1 < kernel || shape.3 + pad.0 + pad.1 < kernel {
                continue;
            }
            let x = Tensor::randn(0f32, 1.0, shape, &dev).unwrap();
            let conv = Conv2d::new(
                vb.pp(format!("c{kernel}{stride}{}{shape:?}", pad.0)),
                5,
                4,
                kernel,
                stride,
                pad,
            )
            .unwrap();
            let ours = conv.forward(&x).unwrap();
            let xp = x
                .pad_with_zeros(2, pad.0, pad.1)
                .unwrap()
                .pad_with_zeros(3, pad.0, pad.1)
                .unwrap();
            let want = xp
                .conv2d(&conv.weight, 0, stride, 1, 1)
                .unwrap()
                .broadcast_add(&conv.bias.as_ref().unwrap().reshape((1, 4, 1, 1)).unwrap())
                .unwrap();
            assert_eq!(ours.dims(), want.dims(), "k{kernel} s{stride}");
            let err: f32 = (ours - want)
                .unwrap()
                .abs()
                .unwrap()
                .max_all()
                .unwrap()
                .to_scalar()
                .unwrap();
            assert!(
                err < 1e-4,
                "{shape:?} k{kernel} s{stride} pad{pad:?}: {err}"
            );
        }
    }

    #[test]
    fn convolution_gradients_match_candles_autograd() {
        let dev = Device::Cpu;
        let vm = VarMap::new();
        let vb = VarBuilder::from_varmap(&vm, DType::F32, &dev);
        for (stride, pad, h, w) in [
            (1, (1, 1), 9, 7),
            (2, (1, 1), 9, 7),
            (2, (0, 1), 8, 8),
            (2, (1, 1), 8, 6),
        ] {
            let conv = Conv2d::new(
                vb.pp(format!("g{stride}{}{h}{w}", pad.0)),
                3,
                4,
                3,
                stride,
                pad,
            )
            .unwrap();
            let x = candle_core::Var::randn(0f32, 1.0, (2, 3, h, w), &dev).unwrap();
            let target = |y: &Tensor| y.sqr().unwrap().sum_all().unwrap();
            let ours = target(&conv.forward(x.as_tensor()).unwrap())
                .backward()
                .unwrap();
            let xp = x
                .as_tensor()
                .pad_with_zeros(2, pad.0, pad.1)
                .unwrap()
                .pad_with_zeros(3, pad.0, pad.1)
                .unwrap();
            let y = xp
                .conv2d(&conv.weight, 0, stride, 1, 1)
                .unwrap()
                .broadcast_add(&conv.bias.as_ref().unwrap().reshape((1, 4, 1, 1)).unwrap())
                .unwrap();
            let theirs = target(&y).backward().unwrap();
            for (name, t) in [
                ("x", x.as_tensor()),
                ("w", &conv.weight),
                ("b", conv.bias.as_ref().unwrap()),
            ] {
                let a = ours.get(t).unwrap();
                let b = theirs.get(t).unwrap();
                let err: f32 = (a - b)
                    .unwrap()
                    .abs()
                    .unwrap()
                    .max_all()
                    .unwrap()
                    .to_scalar()
                    .unwrap();
                assert!(
                    err < 1e-3,
                    "stride {stride} pad {pad:?} {h}x{w}: d{name} off by {err}"
                );
            }
        }
    }

    #[test]
    fn other_dtypes_use_candles_convolution() {
        let dev = Device::Cpu;
        let vm = VarMap::new();
        let vb = VarBuilder::from_varmap(&vm, DType::F32, &dev);
        let conv = Conv2d::new(vb.pp("f"), 3, 4, 3, 2, (1, 1)).unwrap();
        let x = Tensor::randn(0f32, 1.0, (1, 3, 8, 8), &dev).unwrap();
        let want = conv.forward(&x).unwrap();
        let half = Conv2d {
            weight: conv.weight.to_dtype(DType::F16).unwrap(),
            bias: conv.bias.as_ref().map(|b| b.to_dtype(DType::F16).unwrap()),
            ..conv.clone()
        };
        let got = half.forward(&x.to_dtype(DType::F16).unwrap()).unwrap();
        assert_eq!(got.dtype(), DType::F16);
        let err: f32 = (got.to_dtype(DType::F32).unwrap() - want)
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar()
            .unwrap();
        assert!(err < 0.05, "{err}");
    }

    #[test]
    fn upsampling_repeats_each_pixel() {
        let x = Tensor::new(&[[[[1f32, 2.], [3., 4.]]]], &Device::Cpu).unwrap();
        let up = upsample_nearest(&x, None).unwrap();
        let rows = up
            .squeeze(0)
            .unwrap()
            .squeeze(0)
            .unwrap()
            .to_vec2::<f32>()
            .unwrap();
        assert_eq!(rows[0], vec![1., 1., 2., 2.]);
        assert_eq!(rows[3], vec![3., 3., 4., 4.]);
    }
}
