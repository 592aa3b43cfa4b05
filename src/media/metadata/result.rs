//! Writing the corrected metadata into the result's container: JPEG APPn segments (EXIF APP1,
//! XMP APP1, ICC APP2, IPTC APP13, JFIF APP0 density) or PNG chunks (eXIf, iTXt, iCCP, tEXt,
//! pHYs). The entropy-coded JPEG data and the PNG IDAT chunks are copied byte for byte.

use bytes::Bytes;
use img_parts::jpeg::{Jpeg, JpegSegment};
use img_parts::png::{Png, PngChunk};
use img_parts::{ImageEXIF, ImageICC};

use super::geometry::{Density, Geometry};
use super::source::{
    self, Carried, IPTC_PNG_KEYWORD, SourceKind, XMP_JPEG_PREFIX, XMP_PNG_KEYWORD,
};
use super::{MetadataError, Options, Report, ifd, iptc, xmp};

/// Largest body of one JPEG segment.
const SEGMENT_MAX: usize = 65535 - 2;

/// The metadata to write, corrected for the result's pixels.
struct Plan {
    exif: Option<Vec<u8>>,
    xmp: Vec<u8>,
    /// hili's provenance record alone, for when the whole packet does not fit.
    record: String,
    iptc: Option<Vec<u8>>,
    icc: Option<Vec<u8>>,
    density: Option<Density>,
}

/// Writes `c` into `result` (a JPEG or PNG file's bytes).
pub fn write(
    c: &Carried,
    result: &[u8],
    opts: &Options,
) -> Result<(Vec<u8>, Report), MetadataError> {
    let bad = |e: &dyn std::fmt::Display| MetadataError::Result(e.to_string());
    let mut report = Report {
        warnings: c.warnings.clone(),
        ..Report::default()
    };
    match source::kind(result) {
        Some(SourceKind::Jpeg) => {
            let mut jpeg = Jpeg::from_bytes(Bytes::copy_from_slice(result)).map_err(|e| bad(&e))?;
            let (w, h) = jpeg.dimensions().ok_or_else(|| bad(&"no frame header"))?;
            let plan = plan(c, (w as u32, h as u32), opts, &mut report)?;
            into_jpeg(&mut jpeg, plan, &mut report);
            Ok((jpeg.encoder().bytes().to_vec(), report))
        }
        Some(SourceKind::Png) => {
            let mut png = Png::from_bytes(Bytes::copy_from_slice(result)).map_err(|e| bad(&e))?;
            let dims = png.dimensions().ok_or_else(|| bad(&"no IHDR chunk"))?;
            let plan = plan(c, dims, opts, &mut report)?;
            into_png(&mut png, plan, &mut report);
            Ok((png.encoder().bytes().to_vec(), report))
        }
        _ => Err(bad(&"not a JPEG or PNG")),
    }
}

/// Fixes the source's metadata for a result of `dims` pixels.
fn plan(
    c: &Carried,
    dims: (u32, u32),
    opts: &Options,
    report: &mut Report,
) -> Result<Plan, MetadataError> {
    let parsed = c.exif.as_ref().and_then(|b| match ifd::parse(b.clone()) {
        Ok(e) => Some(e),
        Err(e) => {
            report
                .warnings
                .push(format!("the source's EXIF cannot be read ({e})"));
            None
        }
    });
    let g = Geometry {
        source: c.dims,
        result: dims,
        orientation: parsed.as_ref().map_or(1, ifd::orientation),
    };
    report.orientation_reset = g.upright() && g.orientation != 1;
    let exif = match &parsed {
        Some(e) => Some(ifd::fixed(e, &g, opts).map_err(MetadataError::ExifWrite)?),
        None => None,
    };
    let mut edits = xmp::Edits {
        strip_gps: opts.strip_gps,
        set: vec![
            ("exif:PixelXDimension", dims.0.to_string()),
            ("exif:PixelYDimension", dims.1.to_string()),
            ("tiff:ImageWidth", dims.0.to_string()),
            ("tiff:ImageLength", dims.1.to_string()),
        ],
    };
    if report.orientation_reset {
        edits.set.push(("tiff:Orientation", "1".into()));
    }
    if let Some(((xn, xd), (yn, yd))) = parsed.as_ref().and_then(|e| ifd::resolution(e, &g)) {
        edits.set.push(("tiff:XResolution", format!("{xn}/{xd}")));
        edits.set.push(("tiff:YResolution", format!("{yn}/{yd}")));
    }
    let record = xmp::record(&opts.provenance);
    let xmp = match &c.xmp {
        Some(packet) => xmp::edited(packet, &edits, &record).unwrap_or_else(|e| {
            report.warnings.push(format!(
                "the source's XMP cannot be read ({e}); only hili's record is written"
            ));
            xmp::fresh(&record)
        }),
        None => xmp::fresh(&record),
    };
    let density = c
        .density
        .or_else(|| parsed.as_ref().and_then(ifd::density))
        .map(|d| d.scaled(&g));
    Ok(Plan {
        exif,
        xmp,
        record,
        iptc: c.iptc.clone(),
        icc: c.icc.clone(),
        density,
    })
}

/// Position right after the leading APP0/APP1 segments (JFIF, EXIF) and before any other.
fn after_app01(jpeg: &Jpeg) -> usize {
    jpeg.segments()
        .iter()
        .position(|s| !matches!(s.marker(), 0xE0 | 0xE1))
        .unwrap_or(jpeg.segments().len())
}

fn into_jpeg(jpeg: &mut Jpeg, plan: Plan, report: &mut Report) {
    // What the service may have put there itself is replaced, not doubled.
    jpeg.segments_mut().retain(|s| {
        let body = s.contents();
        !(s.marker() == 0xE1 && body.starts_with(XMP_JPEG_PREFIX) || s.marker() == 0xED)
    });
    if let Some(exif) = plan.exif {
        if exif.len() + 6 <= SEGMENT_MAX {
            jpeg.set_exif(Some(exif.into()));
            report.written.push("exif");
        } else {
            report
                .warnings
                .push("the EXIF is larger than one JPEG segment; left out".into());
        }
    }
    let mut packet = plan.xmp;
    if packet.len() + XMP_JPEG_PREFIX.len() > SEGMENT_MAX {
        report
            .warnings
            .push("the XMP is larger than one JPEG segment; only hili's record is written".into());
        packet = xmp::fresh(&plan.record);
    }
    let mut body = XMP_JPEG_PREFIX.to_vec();
    body.extend_from_slice(&packet);
    let pos = after_app01(jpeg);
    jpeg.segments_mut()
        .insert(pos, JpegSegment::new_with_contents(0xE1, body.into()));
    report.written.push("xmp");
    if let Some(records) = plan.iptc {
        let body = iptc::app13(&records);
        if body.len() <= SEGMENT_MAX {
            jpeg.segments_mut()
                .insert(pos + 1, JpegSegment::new_with_contents(0xED, body.into()));
            report.written.push("iptc");
        } else {
            report
                .warnings
                .push("the IPTC records are larger than one JPEG segment; left out".into());
        }
    }
    if let Some(icc) = plan.icc {
        jpeg.set_icc_profile(Some(icc.into()));
        report.written.push("icc");
    }
    if let Some((units, x, y)) = plan.density.and_then(|d| d.to_jfif()) {
        set_jfif_density(jpeg, units, x, y);
        report.written.push("density");
    }
}

/// Sets the JFIF APP0 header's density, adding the header when the result has none.
fn set_jfif_density(jpeg: &mut Jpeg, units: u8, x: u16, y: u16) {
    let segs = jpeg.segments_mut();
    let found = segs.iter().position(|s| {
        s.marker() == 0xE0 && s.contents().starts_with(b"JFIF\0") && s.contents().len() >= 14
    });
    let mut body = match found {
        Some(i) => segs.remove(i).contents().to_vec(),
        None => b"JFIF\0\x01\x01\0\0\x01\0\x01\0\0".to_vec(),
    };
    body[7] = units;
    body[8..10].copy_from_slice(&x.to_be_bytes());
    body[10..12].copy_from_slice(&y.to_be_bytes());
    segs.insert(
        found.unwrap_or(0),
        JpegSegment::new_with_contents(0xE0, body.into()),
    );
}

/// Whether a PNG chunk is a text chunk with `keyword`.
fn is_text(chunk: &PngChunk, keyword: &[u8]) -> bool {
    matches!(&chunk.kind(), b"tEXt" | b"zTXt" | b"iTXt")
        && chunk.contents().starts_with(keyword)
        && chunk.contents().get(keyword.len()) == Some(&0)
}

fn into_png(png: &mut Png, plan: Plan, report: &mut Report) {
    let density = plan.density.is_some();
    png.chunks_mut().retain(|c| {
        !(is_text(c, XMP_PNG_KEYWORD)
            || is_text(c, IPTC_PNG_KEYWORD)
            || density && &c.kind() == b"pHYs")
    });
    // Right after IHDR: eXIf, iCCP and pHYs must come before the image data.
    let chunk = |kind: &[u8; 4], body: Vec<u8>| PngChunk::new(*kind, Bytes::from(body));
    let mut xmp_body = XMP_PNG_KEYWORD.to_vec();
    xmp_body.extend_from_slice(&[0, 0, 0, 0, 0]); // uncompressed, no language or translation
    xmp_body.extend_from_slice(&plan.xmp);
    png.chunks_mut().insert(1, chunk(b"iTXt", xmp_body));
    report.written.push("xmp");
    if let Some(records) = plan.iptc {
        let mut body = IPTC_PNG_KEYWORD.to_vec();
        body.push(0);
        body.extend_from_slice(&iptc::raw_profile(&records));
        png.chunks_mut().insert(1, chunk(b"tEXt", body));
        report.written.push("iptc");
    }
    if let Some(d) = plan.density {
        let (x, y) = d.to_phys();
        let mut body = x.to_be_bytes().to_vec();
        body.extend_from_slice(&y.to_be_bytes());
        body.push(1);
        png.chunks_mut().insert(1, chunk(b"pHYs", body));
        report.written.push("density");
    }
    if let Some(exif) = plan.exif {
        png.set_exif(Some(exif.into()));
        report.written.push("exif");
    }
    if let Some(icc) = plan.icc {
        png.set_icc_profile(Some(icc.into()));
        report.written.push("icc");
    }
}
