//! How a picture came to be, as types: the kind of derivation ([`Lineage`]) and what its init
//! image or mask was ([`ImageRef`]). Both are stored as the short strings earlier versions
//! wrote (`img2img`, `gallery:<uid>`, ...), so files and catalogs read both ways.

use std::fmt;

use serde::{Deserialize, Serialize};

/// How a picture was made from its parent.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "String", into = "String")]
pub enum Lineage {
    /// Image-to-image from an init image.
    Img2Img,
    /// Inpainting: an init image and a mask.
    Inpaint,
    /// The parent's pixels with an adjustment stack applied (`atelier adjust`).
    Adjust,
    /// A kind another tool (or a newer Atelier) wrote, kept as it was.
    Other(String),
}

impl Lineage {
    pub fn as_str(&self) -> &str {
        match self {
            Lineage::Img2Img => "img2img",
            Lineage::Inpaint => "inpaint",
            Lineage::Adjust => "adjust",
            Lineage::Other(s) => s,
        }
    }
}

impl From<String> for Lineage {
    fn from(s: String) -> Self {
        match s.as_str() {
            "img2img" => Lineage::Img2Img,
            "inpaint" => Lineage::Inpaint,
            "adjust" => Lineage::Adjust,
            _ => Lineage::Other(s),
        }
    }
}

impl From<Lineage> for String {
    fn from(l: Lineage) -> Self {
        l.as_str().to_owned()
    }
}

impl fmt::Display for Lineage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What an init image or mask was.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "String", into = "String")]
pub enum ImageRef {
    /// A picture of the gallery, by uid (`gallery:<uid>`).
    Gallery(String),
    /// The studio's sketch (`sketch`).
    Sketch,
    /// The studio's sketch mask (`sketch mask`).
    SketchMask,
    /// A file, by name.
    File(String),
}

impl ImageRef {
    const GALLERY: &'static str = "gallery:";

    /// The gallery picture's uid, for a gallery reference.
    pub fn gallery_uid(&self) -> Option<&str> {
        match self {
            ImageRef::Gallery(uid) => Some(uid),
            _ => None,
        }
    }
}

impl From<String> for ImageRef {
    fn from(s: String) -> Self {
        match s.as_str() {
            "sketch" => ImageRef::Sketch,
            "sketch mask" => ImageRef::SketchMask,
            _ => match s.strip_prefix(Self::GALLERY) {
                Some(uid) => ImageRef::Gallery(uid.to_owned()),
                None => ImageRef::File(s),
            },
        }
    }
}

impl From<ImageRef> for String {
    fn from(r: ImageRef) -> Self {
        r.to_string()
    }
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ImageRef::Gallery(uid) => write!(f, "{}{uid}", Self::GALLERY),
            ImageRef::Sketch => f.write_str("sketch"),
            ImageRef::SketchMask => f.write_str("sketch mask"),
            ImageRef::File(name) => f.write_str(name),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_store_as_the_strings_earlier_versions_wrote() {
        for (text, lineage) in [
            ("img2img", Lineage::Img2Img),
            ("inpaint", Lineage::Inpaint),
            ("adjust", Lineage::Adjust),
            ("upscale", Lineage::Other("upscale".into())),
        ] {
            assert_eq!(Lineage::from(text.to_owned()), lineage);
            assert_eq!(
                serde_json::to_string(&lineage).unwrap(),
                format!("\"{text}\"")
            );
        }
        for (text, r) in [
            ("gallery:abc123", ImageRef::Gallery("abc123".into())),
            ("sketch", ImageRef::Sketch),
            ("sketch mask", ImageRef::SketchMask),
            ("photo.jpg", ImageRef::File("photo.jpg".into())),
        ] {
            assert_eq!(ImageRef::from(text.to_owned()), r);
            assert_eq!(r.to_string(), text);
            let json = serde_json::to_string(&r).unwrap();
            assert_eq!(serde_json::from_str::<ImageRef>(&json).unwrap(), r);
        }
    }
}
