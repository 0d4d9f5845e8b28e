//! The adjustment stack as data: [`Op`] (one adjustment and its parameters), [`OpEntry`]
//! (an op plus its on/off switch) and [`Stack`] (the ordered, versioned list that is stored
//! with an image, copied between images and saved as presets).
//!
//! Stored format: JSON, `{"version": 1, "ops": [{"op": "exposure", "enabled": true, "ev": 0.5}, ...]}`.
//! Each op's parameters sit next to its `"op"` name; a missing parameter takes its identity
//! value, extra fields are ignored. An op name this build does not know is kept verbatim as
//! [`Op::Unknown`] (listed by [`Stack::unknown_ops`], skipped when applying, written back
//! unchanged); a `version` above [`STACK_FORMAT_VERSION`] is an error.
//!
//! Every parameter struct documents its range; [`Op::sanitized`] clamps to it (non-finite
//! values become the identity value), and the `IDENTITY` / `Default` value of each is an exact
//! no-op.

use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value};

use super::PostfxError;

/// The most adjustments a stack may hold: a real one has a handful (one of each op is 11); a
/// stack of thousands is an attack on the preview (each op is a shader pass or a fused
/// line of one).
pub const MAX_OPS: usize = 256;

/// The stack format's major version written by this build. Readers accept 1..=this.
pub const STACK_FORMAT_VERSION: u32 = 1;

/// Clamps a parameter to its range; non-finite input becomes the identity value.
fn clamp_or(value: f32, lo: f32, hi: f32, identity: f32) -> f32 {
    if value.is_finite() {
        value.clamp(lo, hi)
    } else {
        identity
    }
}

macro_rules! identity_default {
    ($($t:ty),*) => {$(
        impl Default for $t {
            fn default() -> Self {
                Self::IDENTITY
            }
        }
    )*};
}

/// Exposure in stops, applied in linear light: every channel times `2^ev`.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Exposure {
    /// Stops, −10..=10; 0 is identity. +1 doubles linear values.
    pub ev: f32,
}
impl Exposure {
    /// The no-op value.
    pub const IDENTITY: Self = Self { ev: 0.0 };
    /// Clamped to the documented ranges; non-finite values become the identity value.
    pub fn sanitized(self) -> Self {
        Self {
            ev: clamp_or(self.ev, -10.0, 10.0, 0.0),
        }
    }
}

/// Contrast around perceptual mid grey (sRGB-encoded 0.5): `(v − 0.5)·(1 + amount) + 0.5`.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Contrast {
    /// −1..=1; 0 is identity, −1 flattens to mid grey, 1 doubles the slope.
    pub amount: f32,
}
impl Contrast {
    /// The no-op value.
    pub const IDENTITY: Self = Self { amount: 0.0 };
    /// Clamped to the documented ranges; non-finite values become the identity value.
    pub fn sanitized(self) -> Self {
        Self {
            amount: clamp_or(self.amount, -1.0, 1.0, 0.0),
        }
    }
}

/// Tone recovery on sRGB-encoded luma `L`: adds
/// `27/16·(shadows·L(1−L)² + highlights·L²(1−L))` to every channel (black and white stay put;
/// each term moves its tonal region by at most 0.25).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct HighlightsShadows {
    /// −1..=1; negative darkens (recovers) highlights, 0 is identity.
    pub highlights: f32,
    /// −1..=1; positive lifts shadows, 0 is identity.
    pub shadows: f32,
}
impl HighlightsShadows {
    /// The no-op value.
    pub const IDENTITY: Self = Self {
        highlights: 0.0,
        shadows: 0.0,
    };
    /// Clamped to the documented ranges; non-finite values become the identity value.
    pub fn sanitized(self) -> Self {
        Self {
            highlights: clamp_or(self.highlights, -1.0, 1.0, 0.0),
            shadows: clamp_or(self.shadows, -1.0, 1.0, 0.0),
        }
    }
}

/// White balance as per-channel gains in linear light. In log2 terms the gains are
/// `(temperature, −tint, −temperature)` minus their Rec.709-weighted mean (so the overall
/// brightness of neutral tones stays about the same).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct WhiteBalance {
    /// −1..=1; positive warms (red up, blue down by up to one stop each), 0 is identity.
    pub temperature: f32,
    /// −1..=1; positive towards magenta (green down), negative towards green, 0 is identity.
    pub tint: f32,
}
impl WhiteBalance {
    /// The no-op value.
    pub const IDENTITY: Self = Self {
        temperature: 0.0,
        tint: 0.0,
    };
    /// Clamped to the documented ranges; non-finite values become the identity value.
    pub fn sanitized(self) -> Self {
        Self {
            temperature: clamp_or(self.temperature, -1.0, 1.0, 0.0),
            tint: clamp_or(self.tint, -1.0, 1.0, 0.0),
        }
    }
}

/// Saturation and vibrance in linear light around the pixel's Rec.709 luminance `Y`:
/// `Y + (rgb − Y)·saturation·(1 + vibrance·(1 − s))`, `s` = the pixel's own saturation
/// `(max − min)/max`, so vibrance acts mostly on muted colours. Luminance is preserved.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Saturation {
    /// Factor 0..=2; 1 is identity, 0 is grey.
    pub saturation: f32,
    /// −1..=1; 0 is identity.
    pub vibrance: f32,
}
impl Saturation {
    /// The no-op value.
    pub const IDENTITY: Self = Self {
        saturation: 1.0,
        vibrance: 0.0,
    };
    /// Clamped to the documented ranges; non-finite values become the identity value.
    pub fn sanitized(self) -> Self {
        Self {
            saturation: clamp_or(self.saturation, 0.0, 2.0, 1.0),
            vibrance: clamp_or(self.vibrance, -1.0, 1.0, 0.0),
        }
    }
}

/// Hue rotation: a rotation of linear RGB about the grey axis (120° maps red to green,
/// green to blue). Keeps the grey component and the chroma magnitude.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct HueShift {
    /// Any finite angle, taken modulo 360; 0 (and 360) is identity.
    pub degrees: f32,
}
impl HueShift {
    /// The no-op value.
    pub const IDENTITY: Self = Self { degrees: 0.0 };
    /// Clamped to the documented ranges; non-finite values become the identity value.
    pub fn sanitized(self) -> Self {
        Self {
            degrees: if self.degrees.is_finite() {
                self.degrees.rem_euclid(360.0)
            } else {
                0.0
            },
        }
    }
}

/// Black point, white point and gamma for one channel (or all), on sRGB-encoded values:
/// `((v − black)/(white − black))^(1/gamma)` (sign-symmetric, no clamping).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct LevelsChannel {
    /// Input black point, 0..1 (encoded units); 0 is identity.
    pub black: f32,
    /// Input white point, 0..=1, at least 1/1024 above `black`; 1 is identity.
    pub white: f32,
    /// Midtone gamma, 0.1..=10; above 1 brightens, 1 is identity.
    pub gamma: f32,
}
impl LevelsChannel {
    /// The no-op value.
    pub const IDENTITY: Self = Self {
        black: 0.0,
        white: 1.0,
        gamma: 1.0,
    };
    /// The smallest allowed `white − black`.
    pub const MIN_SPAN: f32 = 1.0 / 1024.0;
    /// Clamped to the documented ranges; non-finite values become the identity value.
    pub fn sanitized(self) -> Self {
        let black = clamp_or(self.black, 0.0, 1.0 - Self::MIN_SPAN, 0.0);
        let white = clamp_or(self.white, 0.0, 1.0, 1.0).max(black + Self::MIN_SPAN);
        Self {
            black,
            white,
            gamma: clamp_or(self.gamma, 0.1, 10.0, 1.0),
        }
    }
    /// True when this is an exact no-op.
    pub fn is_identity(&self) -> bool {
        *self == Self::IDENTITY
    }
}

/// Levels: the optional per-channel levels (R, G, B) first, then the master levels.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Levels {
    /// Master input black point, see [`LevelsChannel::black`].
    pub black: f32,
    /// Master input white point, see [`LevelsChannel::white`].
    pub white: f32,
    /// Master gamma, see [`LevelsChannel::gamma`].
    pub gamma: f32,
    /// Per-channel levels for R, G, B, applied before the master levels.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub per_channel: Option<[LevelsChannel; 3]>,
}
impl Levels {
    /// The no-op value.
    pub const IDENTITY: Self = Self {
        black: 0.0,
        white: 1.0,
        gamma: 1.0,
        per_channel: None,
    };
    /// The master levels as a [`LevelsChannel`].
    pub fn master(&self) -> LevelsChannel {
        LevelsChannel {
            black: self.black,
            white: self.white,
            gamma: self.gamma,
        }
    }
    /// Clamped to the documented ranges; non-finite values become the identity value.
    pub fn sanitized(self) -> Self {
        let m = self.master().sanitized();
        Self {
            black: m.black,
            white: m.white,
            gamma: m.gamma,
            per_channel: self.per_channel.map(|pc| pc.map(LevelsChannel::sanitized)),
        }
    }
}

/// One curve point: (input, output), both sRGB-encoded 0..=1.
pub type CurvePoint = (f32, f32);

/// Tone curves on sRGB-encoded values: optional per-channel curves first, then the master
/// (`rgb`) curve. Each is a monotone cubic through its points (see [`super::curve`]); fewer
/// than two points, or points all on the diagonal, is identity.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Curves {
    /// Master curve points.
    pub rgb: Vec<CurvePoint>,
    /// Red curve points.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub r: Option<Vec<CurvePoint>>,
    /// Green curve points.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub g: Option<Vec<CurvePoint>>,
    /// Blue curve points.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub b: Option<Vec<CurvePoint>>,
}
impl Curves {
    /// The no-op value: the diagonal from (0, 0) to (1, 1).
    pub fn identity() -> Self {
        Self {
            rgb: vec![(0.0, 0.0), (1.0, 1.0)],
            r: None,
            g: None,
            b: None,
        }
    }
    /// Curves have at most this many points each; extra points are dropped.
    pub const MAX_POINTS: usize = 64;
    /// At most [`Curves::MAX_POINTS`] points per curve (the spline sanitises the rest).
    pub fn sanitized(&self) -> Self {
        let cap =
            |v: &Vec<CurvePoint>| v.iter().copied().take(Self::MAX_POINTS).collect::<Vec<_>>();
        Self {
            rgb: cap(&self.rgb),
            r: self.r.as_ref().map(cap),
            g: self.g.as_ref().map(cap),
            b: self.b.as_ref().map(cap),
        }
    }
    fn is_identity(&self) -> bool {
        use super::curve::Spline;
        let id = |pts: &[CurvePoint]| Spline::new(pts).is_identity();
        id(&self.rgb)
            && [&self.r, &self.g, &self.b]
                .iter()
                .all(|c| c.as_deref().is_none_or(id))
    }
}
impl Default for Curves {
    fn default() -> Self {
        Self::identity()
    }
}

/// Unsharp mask on linear luminance: `d = Y − gaussian(Y)`, soft-thresholded
/// (`sign(d)·max(|d| − threshold, 0)`), then `amount·d` is added to every channel.
/// Edges clamp to the border pixel.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct UnsharpMask {
    /// Gaussian sigma in pixels, 0..=32 (the kernel reaches 3 sigma).
    pub radius_px: f32,
    /// 0..=5; 0 is identity.
    pub amount: f32,
    /// Detail below this (linear luminance, 0..=1) is left alone.
    pub threshold: f32,
}
impl UnsharpMask {
    /// The no-op value.
    pub const IDENTITY: Self = Self {
        radius_px: 1.0,
        amount: 0.0,
        threshold: 0.0,
    };
    /// Clamped to the documented ranges; non-finite values become the identity value.
    pub fn sanitized(self) -> Self {
        Self {
            radius_px: clamp_or(self.radius_px, 0.0, 32.0, 1.0),
            amount: clamp_or(self.amount, 0.0, 5.0, 0.0),
            threshold: clamp_or(self.threshold, 0.0, 1.0, 0.0),
        }
    }
}

/// Edge-preserving noise reduction: a self-guided filter (He et al.) per channel on
/// sRGB-encoded values with a `(2·radius_px + 1)²` box window and
/// `eps = (0.1·strength)²`: noise well below `0.1·strength` (encoded units) is smoothed,
/// edges well above it are kept. Edges clamp to the border pixel.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Denoise {
    /// Window radius in pixels, 1..=16.
    pub radius_px: u32,
    /// 0..=1; 0 is identity.
    pub strength: f32,
}
impl Denoise {
    /// The no-op value.
    pub const IDENTITY: Self = Self {
        radius_px: 2,
        strength: 0.0,
    };
    /// Clamped to the documented ranges; non-finite values become the identity value.
    pub fn sanitized(self) -> Self {
        Self {
            radius_px: self.radius_px.clamp(1, 16),
            strength: clamp_or(self.strength, 0.0, 1.0, 0.0),
        }
    }
}

/// Radial vignette in linear light: each pixel times `1 + amount·t`, with
/// `t = smoothstep(midpoint − feather/2, midpoint + feather/2, d)` and `d` the pixel centre's
/// elliptical distance from the image centre (0 at the centre, 1 at the corners).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Vignette {
    /// −1..=1; negative darkens the edges (−1 to black), positive lightens, 0 is identity.
    pub amount: f32,
    /// 0..=1; distance where the falloff is half way.
    pub midpoint: f32,
    /// 0..=1; width of the falloff (0 is a hard edge).
    pub feather: f32,
}
impl Vignette {
    /// The no-op value.
    pub const IDENTITY: Self = Self {
        amount: 0.0,
        midpoint: 0.5,
        feather: 0.5,
    };
    /// Clamped to the documented ranges; non-finite values become the identity value.
    pub fn sanitized(self) -> Self {
        Self {
            amount: clamp_or(self.amount, -1.0, 1.0, 0.0),
            midpoint: clamp_or(self.midpoint, 0.0, 1.0, 0.5),
            feather: clamp_or(self.feather, 0.0, 1.0, 0.5),
        }
    }
}

identity_default!(
    Exposure,
    Contrast,
    HighlightsShadows,
    WhiteBalance,
    Saturation,
    HueShift,
    LevelsChannel,
    Levels,
    UnsharpMask,
    Denoise,
    Vignette
);

/// One adjustment with its parameters. Stored as an object tagged by `"op"` with the
/// snake_case names below.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Op {
    /// See [`Exposure`].
    Exposure(Exposure),
    /// See [`Contrast`].
    Contrast(Contrast),
    /// See [`HighlightsShadows`].
    HighlightsShadows(HighlightsShadows),
    /// See [`WhiteBalance`].
    WhiteBalance(WhiteBalance),
    /// See [`Saturation`].
    Saturation(Saturation),
    /// See [`HueShift`].
    HueShift(HueShift),
    /// See [`Levels`].
    Levels(Levels),
    /// See [`Curves`].
    Curves(Curves),
    /// See [`UnsharpMask`].
    UnsharpMask(UnsharpMask),
    /// See [`Denoise`].
    Denoise(Denoise),
    /// See [`Vignette`].
    Vignette(Vignette),
    /// An op this build does not know (from a newer Atelier): kept verbatim so saving the
    /// stack again loses nothing, skipped when applying.
    #[serde(skip)]
    Unknown {
        /// The stored `"op"` name.
        name: String,
        /// The stored object (including `"op"`, without `"enabled"`).
        raw: Value,
    },
}

/// The kinds of adjustment this build knows. Each carries its stored name, its title and its
/// identity here, in one place each (the compiler checks every match), so a new op is one
/// variant, one parameter struct and these arms.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum OpKind {
    Exposure,
    Contrast,
    HighlightsShadows,
    WhiteBalance,
    Saturation,
    HueShift,
    Levels,
    Curves,
    UnsharpMask,
    Denoise,
    Vignette,
}

impl OpKind {
    /// Every kind, in the order the panel shows them and a stack applies them by default.
    pub const ALL: [OpKind; 11] = [
        OpKind::Exposure,
        OpKind::Contrast,
        OpKind::HighlightsShadows,
        OpKind::WhiteBalance,
        OpKind::Saturation,
        OpKind::HueShift,
        OpKind::Levels,
        OpKind::Curves,
        OpKind::UnsharpMask,
        OpKind::Denoise,
        OpKind::Vignette,
    ];

    /// The stored name (the `"op"` tag; also the shader file's and entry point's name).
    pub fn name(self) -> &'static str {
        match self {
            OpKind::Exposure => "exposure",
            OpKind::Contrast => "contrast",
            OpKind::HighlightsShadows => "highlights_shadows",
            OpKind::WhiteBalance => "white_balance",
            OpKind::Saturation => "saturation",
            OpKind::HueShift => "hue_shift",
            OpKind::Levels => "levels",
            OpKind::Curves => "curves",
            OpKind::UnsharpMask => "unsharp_mask",
            OpKind::Denoise => "denoise",
            OpKind::Vignette => "vignette",
        }
    }

    /// The title the Adjustments panel shows.
    pub fn title(self) -> &'static str {
        match self {
            OpKind::Exposure => "Exposure",
            OpKind::Contrast => "Contrast",
            OpKind::HighlightsShadows => "Highlights / shadows",
            OpKind::WhiteBalance => "White balance",
            OpKind::Saturation => "Saturation",
            OpKind::HueShift => "Hue shift",
            OpKind::Levels => "Levels",
            OpKind::Curves => "Curves",
            OpKind::UnsharpMask => "Sharpen (unsharp mask)",
            OpKind::Denoise => "Denoise",
            OpKind::Vignette => "Vignette",
        }
    }

    /// This kind of op at its identity parameters.
    pub fn identity(self) -> Op {
        match self {
            OpKind::Exposure => Op::Exposure(Exposure::IDENTITY),
            OpKind::Contrast => Op::Contrast(Contrast::IDENTITY),
            OpKind::HighlightsShadows => Op::HighlightsShadows(HighlightsShadows::IDENTITY),
            OpKind::WhiteBalance => Op::WhiteBalance(WhiteBalance::IDENTITY),
            OpKind::Saturation => Op::Saturation(Saturation::IDENTITY),
            OpKind::HueShift => Op::HueShift(HueShift::IDENTITY),
            OpKind::Levels => Op::Levels(Levels::IDENTITY),
            OpKind::Curves => Op::Curves(Curves::identity()),
            OpKind::UnsharpMask => Op::UnsharpMask(UnsharpMask::IDENTITY),
            OpKind::Denoise => Op::Denoise(Denoise::IDENTITY),
            OpKind::Vignette => Op::Vignette(Vignette::IDENTITY),
        }
    }

    /// The kind stored under `name`, if this build knows it.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.name() == name)
    }
}

impl Op {
    /// Every known op at its identity parameters, in [`OpKind::ALL`] order (for menus and
    /// tests).
    pub fn all_identity() -> Vec<Op> {
        OpKind::ALL.into_iter().map(OpKind::identity).collect()
    }

    /// Its kind; `None` for an op from a newer Atelier.
    pub fn kind(&self) -> Option<OpKind> {
        Some(match self {
            Op::Exposure(_) => OpKind::Exposure,
            Op::Contrast(_) => OpKind::Contrast,
            Op::HighlightsShadows(_) => OpKind::HighlightsShadows,
            Op::WhiteBalance(_) => OpKind::WhiteBalance,
            Op::Saturation(_) => OpKind::Saturation,
            Op::HueShift(_) => OpKind::HueShift,
            Op::Levels(_) => OpKind::Levels,
            Op::Curves(_) => OpKind::Curves,
            Op::UnsharpMask(_) => OpKind::UnsharpMask,
            Op::Denoise(_) => OpKind::Denoise,
            Op::Vignette(_) => OpKind::Vignette,
            Op::Unknown { .. } => return None,
        })
    }

    /// The stored name (`"exposure"`, ...; an unknown op's own name).
    pub fn name(&self) -> &str {
        match (self.kind(), self) {
            (Some(kind), _) => kind.name(),
            (None, Op::Unknown { name, .. }) => name,
            (None, _) => unreachable!("only unknown ops have no kind"),
        }
    }

    /// This op at its identity parameters (an unknown op stays as it is).
    pub fn to_identity(&self) -> Op {
        match self.kind() {
            Some(kind) => kind.identity(),
            None => self.clone(),
        }
    }

    /// True when applying this op changes nothing (unknown ops are never applied, so they
    /// count as identity here).
    pub fn is_identity(&self) -> bool {
        match self.sanitized() {
            Op::Exposure(p) => p.ev == 0.0,
            Op::Contrast(p) => p.amount == 0.0,
            Op::HighlightsShadows(p) => p.highlights == 0.0 && p.shadows == 0.0,
            Op::WhiteBalance(p) => p.temperature == 0.0 && p.tint == 0.0,
            Op::Saturation(p) => p.saturation == 1.0 && p.vibrance == 0.0,
            Op::HueShift(p) => p.degrees == 0.0,
            Op::Levels(p) => {
                p.master().is_identity()
                    && p.per_channel
                        .is_none_or(|pc| pc.iter().all(LevelsChannel::is_identity))
            }
            Op::Curves(p) => p.is_identity(),
            Op::UnsharpMask(p) => p.amount == 0.0 || p.radius_px == 0.0,
            Op::Denoise(p) => p.strength == 0.0,
            Op::Vignette(p) => p.amount == 0.0,
            Op::Unknown { .. } => true,
        }
    }

    /// The op with every parameter clamped to its documented range (non-finite values become
    /// the identity value). Applying always uses this.
    pub fn sanitized(&self) -> Op {
        match self {
            Op::Exposure(p) => Op::Exposure(p.sanitized()),
            Op::Contrast(p) => Op::Contrast(p.sanitized()),
            Op::HighlightsShadows(p) => Op::HighlightsShadows(p.sanitized()),
            Op::WhiteBalance(p) => Op::WhiteBalance(p.sanitized()),
            Op::Saturation(p) => Op::Saturation(p.sanitized()),
            Op::HueShift(p) => Op::HueShift(p.sanitized()),
            Op::Levels(p) => Op::Levels(p.sanitized()),
            Op::Curves(p) => Op::Curves(p.sanitized()),
            Op::UnsharpMask(p) => Op::UnsharpMask(p.sanitized()),
            Op::Denoise(p) => Op::Denoise(p.sanitized()),
            Op::Vignette(p) => Op::Vignette(p.sanitized()),
            Op::Unknown { .. } => self.clone(),
        }
    }
}

/// One entry of a stack: an op and whether it is switched on. Stored as the op's object with
/// an `"enabled"` field (missing means `true`).
#[derive(Clone, Debug, PartialEq)]
pub struct OpEntry {
    /// Off entries stay in the stack but are skipped when applying.
    pub enabled: bool,
    /// The adjustment.
    pub op: Op,
}

impl OpEntry {
    /// An enabled entry.
    pub fn new(op: Op) -> Self {
        Self { enabled: true, op }
    }
}

impl Serialize for OpEntry {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct Known<'a> {
            #[serde(flatten)]
            op: &'a Op,
            enabled: bool,
        }
        match &self.op {
            Op::Unknown { name, raw } => {
                let mut map = match raw {
                    Value::Object(map) => map.clone(),
                    other => {
                        let mut map = Map::new();
                        map.insert("raw".to_owned(), other.clone());
                        map
                    }
                };
                map.insert("op".to_owned(), Value::String(name.clone()));
                map.insert("enabled".to_owned(), Value::Bool(self.enabled));
                map.serialize(serializer)
            }
            op => Known {
                op,
                enabled: self.enabled,
            }
            .serialize(serializer),
        }
    }
}

impl<'de> Deserialize<'de> for OpEntry {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let mut map = Map::deserialize(deserializer)?;
        let enabled = match map.remove("enabled") {
            None => true,
            Some(Value::Bool(enabled)) => enabled,
            Some(other) => {
                return Err(D::Error::custom(format!(
                    "\"enabled\" must be true or false, found {other}"
                )))
            }
        };
        let name = match map.get("op") {
            Some(Value::String(name)) => name.clone(),
            Some(other) => {
                return Err(D::Error::custom(format!(
                    "\"op\" must be a name, found {other}"
                )))
            }
            None => return Err(D::Error::custom("an adjustment has no \"op\" name")),
        };
        let op = if OpKind::from_name(&name).is_some() {
            serde_json::from_value::<Op>(Value::Object(map))
                .map_err(|e| D::Error::custom(format!("adjustment \"{name}\": {e}")))?
        } else {
            Op::Unknown {
                name,
                raw: Value::Object(map),
            }
        };
        Ok(OpEntry { enabled, op })
    }
}

/// An ordered, versioned list of adjustments, applied first to last.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Stack {
    /// The format's major version ([`STACK_FORMAT_VERSION`] for stacks made by this build).
    pub version: u32,
    /// The adjustments, applied in order.
    #[serde(default)]
    pub ops: Vec<OpEntry>,
}

impl Default for Stack {
    fn default() -> Self {
        Self {
            version: STACK_FORMAT_VERSION,
            ops: Vec::new(),
        }
    }
}

impl Stack {
    /// A stack of enabled ops.
    pub fn from_ops(ops: impl IntoIterator<Item = Op>) -> Self {
        Self {
            version: STACK_FORMAT_VERSION,
            ops: ops.into_iter().map(OpEntry::new).collect(),
        }
    }

    /// Appends an enabled op.
    pub fn push(&mut self, op: Op) {
        self.ops.push(OpEntry::new(op));
    }

    /// The ops that will actually run: enabled, known and not identity, sanitised.
    pub fn effective_ops(&self) -> Vec<Op> {
        self.ops
            .iter()
            .filter(|e| e.enabled && !e.op.is_identity())
            .map(|e| e.op.sanitized())
            .collect()
    }

    /// True when applying the stack changes nothing.
    pub fn is_identity(&self) -> bool {
        self.effective_ops().is_empty()
    }

    /// Names of the ops this build does not know (kept, but skipped when applying), in
    /// stack order: show them to the user.
    pub fn unknown_ops(&self) -> Vec<&str> {
        self.ops
            .iter()
            .filter_map(|e| match &e.op {
                Op::Unknown { name, .. } => Some(name.as_str()),
                _ => None,
            })
            .collect()
    }

    /// The stored form (pretty JSON).
    pub fn to_json(&self) -> Result<String, PostfxError> {
        // serde_json writes NaN/inf as null, which would not read back: refuse instead.
        for entry in &self.ops {
            if matches!(entry.op, Op::Unknown { .. }) {
                continue;
            }
            let value = serde_json::to_value(OpEntry::new(entry.op.clone()))?;
            if contains_null(&value) {
                return Err(PostfxError::NonFinite {
                    op: entry.op.name().to_owned(),
                });
            }
        }
        Ok(serde_json::to_string_pretty(self)?)
    }

    /// Reads the stored form. Unknown ops are kept (see [`Stack::unknown_ops`]); a newer
    /// major version, a missing version or malformed parameters of a known op are errors.
    pub fn from_json(text: &str) -> Result<Stack, PostfxError> {
        let value: Value = serde_json::from_str(text)?;
        let supported = STACK_FORMAT_VERSION;
        let version = value
            .get("version")
            .and_then(Value::as_u64)
            .ok_or(PostfxError::MissingVersion { supported })?;
        if version == 0 || version > u64::from(supported) {
            return Err(PostfxError::UnsupportedVersion {
                found: version,
                supported,
            });
        }
        let ops = value
            .get("ops")
            .and_then(Value::as_array)
            .map_or(0, Vec::len);
        if ops > MAX_OPS {
            return Err(PostfxError::TooManyOps { found: ops });
        }
        Ok(serde_json::from_value(value)?)
    }
}

fn contains_null(value: &Value) -> bool {
    match value {
        Value::Null => true,
        Value::Array(items) => items.iter().any(contains_null),
        Value::Object(map) => map.values().any(contains_null),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_match_the_serialised_tags_and_round_trip() {
        let all = Op::all_identity();
        assert_eq!(all.len(), OpKind::ALL.len());
        for (op, kind) in all.iter().zip(OpKind::ALL) {
            let value = serde_json::to_value(OpEntry::new(op.clone())).expect("serialise");
            assert_eq!(value["op"], Value::String(kind.name().to_owned()));
            assert_eq!(op.name(), kind.name());
            assert_eq!(op.kind(), Some(kind));
            assert_eq!(OpKind::from_name(kind.name()), Some(kind));
            assert!(!kind.title().is_empty());
            assert!(op.is_identity(), "{}", kind.name());
            assert_eq!(&op.to_identity(), op);
        }
    }

    #[test]
    fn missing_parameters_take_identity_values() {
        let stack = Stack::from_json(
            r#"{"version":1,"ops":[{"op":"levels","gamma":2.0},{"op":"denoise"}]}"#,
        )
        .expect("parse");
        assert_eq!(
            stack.ops[0].op,
            Op::Levels(Levels {
                gamma: 2.0,
                ..Levels::IDENTITY
            })
        );
        assert!(stack.ops[0].enabled);
        assert_eq!(stack.ops[1].op, Op::Denoise(Denoise::IDENTITY));
    }

    #[test]
    fn sanitising_clamps_and_replaces_non_finite() {
        let op = Op::Exposure(Exposure { ev: f32::NAN }).sanitized();
        assert_eq!(op, Op::Exposure(Exposure::IDENTITY));
        let l = LevelsChannel {
            black: 0.8,
            white: 0.2,
            gamma: 100.0,
        }
        .sanitized();
        assert!(
            l.white - l.black >= LevelsChannel::MIN_SPAN * 0.99 && l.gamma == 10.0,
            "{l:?}"
        );
        let l = LevelsChannel {
            black: 1.0,
            white: 1.0,
            gamma: 1.0,
        }
        .sanitized();
        assert!(
            l.black >= 0.0 && l.white <= 1.0 && l.white > l.black,
            "{l:?}"
        );
        assert_eq!(
            Op::HueShift(HueShift { degrees: 360.0 }).sanitized(),
            Op::HueShift(HueShift::IDENTITY)
        );
    }

    #[test]
    fn non_finite_parameters_are_refused_when_storing() {
        let stack = Stack::from_ops([Op::Contrast(Contrast {
            amount: f32::INFINITY,
        })]);
        assert!(matches!(stack.to_json(), Err(PostfxError::NonFinite { op }) if op == "contrast"));
    }

    #[test]
    fn bad_parameter_types_name_the_op() {
        let err = Stack::from_json(r#"{"version":1,"ops":[{"op":"exposure","ev":"lots"}]}"#)
            .expect_err("bad");
        assert!(err.to_string().contains("exposure"), "{err}");
        let err = Stack::from_json(r#"{"version":1,"ops":[{"ev":1}]}"#).expect_err("no name");
        assert!(err.to_string().contains("\"op\""), "{err}");
        assert!(matches!(
            Stack::from_json(r#"{"ops":[]}"#),
            Err(PostfxError::MissingVersion { .. })
        ));
        assert!(matches!(
            Stack::from_json("[1,2"),
            Err(PostfxError::Json(_))
        ));
    }
}
