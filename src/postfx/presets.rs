//! The adjustment presets shipped in `assets/presets/` (stored [`Stack`] JSON), built into
//! the binary so the studio can offer them without finding the assets folder.

use super::{PostfxError, Stack};

/// Every shipped preset: (name, the file's JSON). The name is the file's stem.
pub const SHIPPED: [(&str, &str); 3] = [
    (
        "crisp-sharpen",
        include_str!("../../assets/presets/crisp-sharpen.json"),
    ),
    (
        "warm-film",
        include_str!("../../assets/presets/warm-film.json"),
    ),
    (
        "clean-denoise",
        include_str!("../../assets/presets/clean-denoise.json"),
    ),
];

/// The shipped presets, parsed.
pub fn shipped() -> Vec<(&'static str, Result<Stack, PostfxError>)> {
    SHIPPED
        .iter()
        .map(|(name, json)| (*name, Stack::from_json(json)))
        .collect()
}
