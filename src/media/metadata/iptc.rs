//! IPTC-IIM records in their containers: Photoshop image resources (JPEG APP13, the TIFF
//! Photoshop tag), the TIFF IPTC tag, and the hex "raw profile" text chunk PNG files use.
//! Only the IPTC resource (0x0404) is carried: other Photoshop resources hold thumbnails and
//! a resolution that would be wrong for the result.

/// TIFF tags holding IPTC-IIM records and Photoshop image resources.
pub(super) const TIFF_IPTC_TAG: u16 = 33723;
pub(super) const TIFF_PHOTOSHOP_TAG: u16 = 34377;

const APP13_PREFIX: &[u8] = b"Photoshop 3.0\0";
const RESOURCE: &[u8] = b"8BIM";
const IPTC_RESOURCE: u16 = 0x0404;

/// The IPTC records in a JPEG APP13 segment's body.
pub(super) fn from_app13(body: &[u8]) -> Option<Vec<u8>> {
    from_resources(body.strip_prefix(APP13_PREFIX)?)
}

/// The IPTC resource's data among Photoshop image resources.
pub(super) fn from_resources(mut data: &[u8]) -> Option<Vec<u8>> {
    while data.len() >= 12 && data.starts_with(RESOURCE) {
        let id = u16::from_be_bytes([data[4], data[5]]);
        // A Pascal-string name, padded so that length byte plus name is even.
        let name_len = data[6] as usize;
        let after_name = 6 + (1 + name_len).next_multiple_of(2);
        let size_bytes = data.get(after_name..after_name + 4)?;
        let size = u32::from_be_bytes(size_bytes.try_into().ok()?) as usize;
        let start = after_name + 4;
        let body = data.get(start..start.checked_add(size)?)?;
        if id == IPTC_RESOURCE {
            return (!body.is_empty()).then(|| body.to_vec());
        }
        data = data.get(start + size.next_multiple_of(2)..)?;
    }
    None
}

/// A JPEG APP13 body holding just `iptc` as Photoshop resource 0x0404.
pub(super) fn app13(iptc: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(iptc.len() + 32);
    out.extend_from_slice(APP13_PREFIX);
    out.extend_from_slice(RESOURCE);
    out.extend_from_slice(&IPTC_RESOURCE.to_be_bytes());
    out.extend_from_slice(&[0, 0]); // empty name, padded
    out.extend_from_slice(&(iptc.len() as u32).to_be_bytes());
    out.extend_from_slice(iptc);
    if iptc.len() % 2 == 1 {
        out.push(0);
    }
    out
}

/// The IPTC records in a PNG raw-profile text: `\niptc\n  <length>\n<hex digits>`.
pub(super) fn from_raw_profile(text: &[u8]) -> Option<Vec<u8>> {
    let text = std::str::from_utf8(text).ok()?;
    let mut words = text.split_whitespace();
    let _name = words.next()?;
    let len: usize = words.next()?.parse().ok()?;
    let digits: Vec<u8> = words.flat_map(|w| w.bytes()).collect();
    let data = hex::decode(digits.get(..len.checked_mul(2)?)?).ok()?;
    if data.starts_with(RESOURCE) {
        return from_resources(&data);
    }
    (!data.is_empty()).then_some(data)
}

/// `iptc` as a PNG raw-profile text (72 hex digits a line).
pub(super) fn raw_profile(iptc: &[u8]) -> Vec<u8> {
    let hex = hex::encode(iptc);
    let mut out = format!("\niptc\n{:8}\n", iptc.len()).into_bytes();
    for line in hex.as_bytes().chunks(72) {
        out.extend_from_slice(line);
        out.push(b'\n');
    }
    out
}
