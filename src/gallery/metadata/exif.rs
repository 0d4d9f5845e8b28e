//! EXIF `UserComment` (UTF-16, as A1111 writes it) and XMP inside JPEG and WebP containers.

/// A little-endian TIFF/EXIF block with Software and an Exif IFD holding `UserComment`
/// (the `UNICODE\0` prefix and UTF-16BE text, as A1111 writes it).
pub fn exif_user_comment(comment: &str, software: &str) -> Vec<u8> {
    let mut sw: Vec<u8> = software.bytes().filter(|b| *b != 0).collect();
    sw.push(0);
    let mut uc = b"UNICODE\0".to_vec();
    for u in comment.encode_utf16() {
        uc.extend_from_slice(&u.to_be_bytes());
    }
    // Layout: header(8) | IFD0: 2 entries (2 + 24 + 4) | Exif IFD: 1 entry (2 + 12 + 4) | data
    let ifd0_at = 8u32;
    let exif_at = ifd0_at + 2 + 2 * 12 + 4;
    let data_at = exif_at + 2 + 12 + 4;
    let sw_at = data_at;
    let uc_at = sw_at + sw.len() as u32 + (sw.len() as u32 & 1);
    let mut b = Vec::new();
    b.extend_from_slice(b"II");
    b.extend_from_slice(&42u16.to_le_bytes());
    b.extend_from_slice(&ifd0_at.to_le_bytes());
    let entry = |b: &mut Vec<u8>, tag: u16, typ: u16, count: u32, value: u32| {
        b.extend_from_slice(&tag.to_le_bytes());
        b.extend_from_slice(&typ.to_le_bytes());
        b.extend_from_slice(&count.to_le_bytes());
        b.extend_from_slice(&value.to_le_bytes());
    };
    b.extend_from_slice(&2u16.to_le_bytes());
    entry(&mut b, 0x0131, 2, sw.len() as u32, sw_at); // Software (ASCII)
    entry(&mut b, 0x8769, 4, 1, exif_at); // Exif IFD pointer
    b.extend_from_slice(&0u32.to_le_bytes());
    b.extend_from_slice(&1u16.to_le_bytes());
    entry(&mut b, 0x9286, 7, uc.len() as u32, uc_at); // UserComment (UNDEFINED)
    b.extend_from_slice(&0u32.to_le_bytes());
    b.extend_from_slice(&sw);
    if sw.len() & 1 == 1 {
        b.push(0);
    }
    b.extend_from_slice(&uc);
    b
}

/// Finds `UserComment` in a TIFF/EXIF block (either byte order; ASCII or UNICODE prefix).
pub fn read_exif_user_comment(tiff: &[u8]) -> Option<String> {
    let le = match tiff.get(..2)? {
        b"II" => true,
        b"MM" => false,
        _ => return None,
    };
    let u16_at = |o: usize| -> Option<u16> {
        let s: [u8; 2] = tiff.get(o..o + 2)?.try_into().ok()?;
        Some(if le {
            u16::from_le_bytes(s)
        } else {
            u16::from_be_bytes(s)
        })
    };
    let u32_at = |o: usize| -> Option<u32> {
        let s: [u8; 4] = tiff.get(o..o + 4)?.try_into().ok()?;
        Some(if le {
            u32::from_le_bytes(s)
        } else {
            u32::from_be_bytes(s)
        })
    };
    let find = |ifd: usize, tag: u16| -> Option<(u32, u32)> {
        let n = u16_at(ifd)? as usize;
        (0..n.min(512)).find_map(|i| {
            let e = ifd + 2 + i * 12;
            (u16_at(e)? == tag).then(|| Some((u32_at(e + 4)?, u32_at(e + 8)?)))?
        })
    };
    let ifd0 = u32_at(4)? as usize;
    let (_, exif) = find(ifd0, 0x8769)?;
    let (count, at) = find(exif as usize, 0x9286)?;
    let data = tiff.get(at as usize..(at as usize).checked_add(count as usize)?)?;
    let (prefix, text) = data.split_at(8.min(data.len()));
    if prefix == b"UNICODE\0" {
        // A1111 writes big-endian; some tools little-endian: pick the one that decodes sanely.
        let units = |be: bool| -> Vec<u16> {
            text.chunks_exact(2)
                .map(|c| {
                    if be {
                        u16::from_be_bytes([c[0], c[1]])
                    } else {
                        u16::from_le_bytes([c[0], c[1]])
                    }
                })
                .collect()
        };
        let be = String::from_utf16_lossy(&units(true));
        let le_s = String::from_utf16_lossy(&units(false));
        let score = |s: &str| s.chars().filter(|c| c.is_ascii()).count();
        let s = if score(&be) >= score(&le_s) { be } else { le_s };
        Some(s.trim_end_matches('\0').to_string())
    } else {
        Some(
            String::from_utf8_lossy(text)
                .trim_end_matches('\0')
                .to_string(),
        )
    }
}

/// Inserts an XMP APP1 segment right after a JPEG's SOI (and APP0/APP1-EXIF if present).
pub fn jpeg_insert_xmp(jpeg: &[u8], xmp: &str) -> Vec<u8> {
    const NS: &[u8] = b"http://ns.adobe.com/xap/1.0/\0";
    let payload_len = NS.len() + xmp.len() + 2;
    if jpeg.len() < 2 || jpeg[..2] != [0xFF, 0xD8] || payload_len > 0xFFFF {
        return jpeg.to_vec();
    }
    // Skip SOI and the leading APPn segments so XMP follows JFIF/EXIF.
    let mut at = 2;
    while at + 4 <= jpeg.len() && jpeg[at] == 0xFF && (0xE0..=0xE1).contains(&jpeg[at + 1]) {
        let len = u16::from_be_bytes([jpeg[at + 2], jpeg[at + 3]]) as usize;
        at += 2 + len;
    }
    let at = at.min(jpeg.len());
    let mut out = Vec::with_capacity(jpeg.len() + payload_len + 2);
    out.extend_from_slice(&jpeg[..at]);
    out.extend_from_slice(&[0xFF, 0xE1]);
    out.extend_from_slice(&(payload_len as u16).to_be_bytes());
    out.extend_from_slice(NS);
    out.extend_from_slice(xmp.as_bytes());
    out.extend_from_slice(&jpeg[at..]);
    out
}

/// The EXIF (TIFF) block and XMP packet of a JPEG, if any.
pub fn jpeg_segments(jpeg: &[u8]) -> (Option<Vec<u8>>, Option<String>) {
    let (mut exif, mut xmp) = (None, None);
    let mut at = 2;
    if jpeg.get(..2) != Some(&[0xFF, 0xD8]) {
        return (None, None);
    }
    while at + 4 <= jpeg.len() && jpeg[at] == 0xFF {
        let marker = jpeg[at + 1];
        if marker == 0xDA || marker == 0xD9 {
            break; // start of scan: metadata segments come before it
        }
        let len = u16::from_be_bytes([jpeg[at + 2], jpeg[at + 3]]) as usize;
        let Some(seg) = jpeg.get(at + 4..at + 2 + len) else {
            break;
        };
        if marker == 0xE1 {
            if let Some(t) = seg.strip_prefix(b"Exif\0\0") {
                exif = Some(t.to_vec());
            } else if let Some(x) = seg.strip_prefix(b"http://ns.adobe.com/xap/1.0/\0") {
                xmp = Some(String::from_utf8_lossy(x).into_owned());
            }
        }
        at += 2 + len.max(2);
    }
    (exif, xmp)
}

/// Appends an `XMP ` chunk to an extended-format WebP (one with a VP8X header, as the
/// encoder writes when EXIF is set) and flags it in VP8X.
pub fn webp_insert_xmp(webp: &[u8], xmp: &str) -> Vec<u8> {
    if webp.len() < 30
        || &webp[..4] != b"RIFF"
        || &webp[8..12] != b"WEBP"
        || &webp[12..16] != b"VP8X"
    {
        return webp.to_vec();
    }
    let mut out = webp.to_vec();
    out[20] |= 0x04; // XMP metadata present
    out.extend_from_slice(b"XMP ");
    out.extend_from_slice(&(xmp.len() as u32).to_le_bytes());
    out.extend_from_slice(xmp.as_bytes());
    if xmp.len() & 1 == 1 {
        out.push(0);
    }
    let riff = (out.len() - 8) as u32;
    out[4..8].copy_from_slice(&riff.to_le_bytes());
    out
}

/// The `EXIF` and `XMP ` chunks of a WebP.
pub fn webp_chunks(webp: &[u8]) -> (Option<Vec<u8>>, Option<String>) {
    let (mut exif, mut xmp) = (None, None);
    if webp.len() < 12 || &webp[..4] != b"RIFF" || &webp[8..12] != b"WEBP" {
        return (None, None);
    }
    let mut at = 12;
    while at + 8 <= webp.len() {
        let id = &webp[at..at + 4];
        let len = u32::from_le_bytes(webp[at + 4..at + 8].try_into().unwrap_or([0; 4])) as usize;
        let Some(body) = webp.get(at + 8..(at + 8).saturating_add(len)) else {
            break;
        };
        match id {
            b"EXIF" => exif = Some(body.strip_prefix(b"Exif\0\0").unwrap_or(body).to_vec()),
            b"XMP " => xmp = Some(String::from_utf8_lossy(body).into_owned()),
            _ => {}
        }
        at += 8 + len + (len & 1);
    }
    (exif, xmp)
}
