use std::io::Cursor;
use std::time::{Duration, SystemTime};

use exif::Tag;

use super::geometry::{Density, DensityUnit, Geometry};
use super::sample::{self, Seen};
use super::*;

fn opts(strip_gps: bool) -> Options {
    Options {
        strip_gps,
        software: "hili 0.1.0 (sr (super-resolution))".into(),
        provenance: Provenance {
            source_name: "lake & <1952>.jpg".into(),
            source_sha256: "ab".repeat(32),
            action: "sr (super-resolution)".into(),
            agent: "hili 0.1.0 with Hili PhotoEnhance at http://127.0.0.1:1".into(),
            when: SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000),
        },
    }
}

fn decoded(bytes: &[u8]) -> Vec<u8> {
    image::load_from_memory(bytes).unwrap().to_rgb8().into_raw()
}

/// The checks every carried result passes (`result` from a 40×30 sample, upscaled 2×).
fn assert_carried(out: &[u8], strip_gps: bool) {
    let seen = Seen::of(out);
    assert_eq!(seen.tag(Tag::Make).as_deref(), Some("\"Hilicam\""));
    assert_eq!(
        seen.tag(Tag::DateTimeOriginal).as_deref(),
        Some("1952-07-14 10:30:00")
    );
    // Not upright (same layout as the source): the viewer still has to turn it.
    assert_eq!(
        seen.tag(Tag::Orientation).as_deref(),
        Some("row 0 at right and column 0 at top")
    );
    assert_eq!(seen.tag(Tag::XResolution).as_deref(), Some("1200"));
    assert_eq!(seen.tag(Tag::YResolution).as_deref(), Some("1200"));
    assert_eq!(seen.tag(Tag::PixelXDimension).as_deref(), Some("80"));
    assert_eq!(seen.tag(Tag::PixelYDimension).as_deref(), Some("60"));
    assert!(seen.tag(Tag::Software).unwrap().contains("hili 0.1.0"));
    assert_eq!(seen.thumbnail_fields(), 0, "the thumbnail is dropped");
    assert_eq!(seen.has_gps(), !strip_gps);
    assert!(seen.xmp.contains(sample::CAPTION), "{}", seen.xmp);
    assert!(
        seen.xmp
            .contains("<hili:DerivedFrom>lake &amp; &lt;1952&gt;.jpg</hili:DerivedFrom>")
    );
    assert!(
        seen.xmp
            .contains(&format!("<hili:DerivedFromSHA256>{}<", "ab".repeat(32)))
    );
    assert!(
        seen.xmp
            .contains("<hili:When>2023-11-14T22:13:20Z</hili:When>")
    );
    assert!(
        seen.xmp
            .contains("<hili:Agent>hili 0.1.0 with Hili PhotoEnhance")
    );
    assert!(seen.xmp.contains("tiff:Orientation=\"6\""));
    assert_eq!(seen.carried.iptc, Some(sample::iptc_records()));
    assert_eq!(seen.carried.icc, Some(sample::icc_profile()));
    let (x, y) = seen.carried.density.unwrap().dpi();
    assert!(
        (x - 1200.0).abs() < 0.5 && (y - 1200.0).abs() < 0.5,
        "{x} {y}"
    );
    assert_eq!(seen.carried.dims, (80, 60));
}

#[test]
fn a_jpeg_source_s_metadata_is_carried_into_its_result_fixed() {
    let result = sample::plain_jpeg(80, 60);
    assert!(Seen::of(&result).exif.is_none());
    let (out, report) = carry_over(&sample::tagged_jpeg(40, 30), &result, &opts(false)).unwrap();
    assert_carried(&out, false);
    assert_eq!(report.written, ["exif", "xmp", "iptc", "icc", "density"]);
    assert!(!report.orientation_reset);
    assert!(report.warnings.is_empty(), "{:?}", report.warnings);
    assert_eq!(decoded(&out), decoded(&result), "pixels untouched");
}

#[test]
fn a_png_source_s_metadata_is_carried_into_its_result_fixed() {
    let result = sample::plain_png(80, 60);
    let (out, report) = carry_over(&sample::tagged_png(40, 30), &result, &opts(false)).unwrap();
    assert_carried(&out, false);
    assert!(report.warnings.is_empty(), "{:?}", report.warnings);
    assert_eq!(decoded(&out), decoded(&result));
}

#[test]
fn strip_gps_drops_exif_and_xmp_locations() {
    let src = sample::tagged_jpeg(40, 30);
    assert!(Seen::of(&src).has_gps());
    let (out, _) = carry_over(&src, &sample::plain_jpeg(80, 60), &opts(true)).unwrap();
    assert_carried(&out, true);
    assert!(!Seen::of(&out).xmp.contains("GPSLongitude"));
}

#[test]
fn a_result_already_upright_gets_orientation_1_and_turned_resolution() {
    // Source stored 40×30 with orientation 6; a result of 60×80 was turned by the service.
    let (out, report) = carry_over(
        &sample::tagged_jpeg(40, 30),
        &sample::plain_jpeg(60, 80),
        &opts(false),
    )
    .unwrap();
    assert!(report.orientation_reset);
    let seen = Seen::of(&out);
    assert_eq!(
        seen.tag(Tag::Orientation).as_deref(),
        Some("row 0 at top and column 0 at left")
    );
    assert!(seen.xmp.contains("tiff:Orientation=\"1\""));
    assert!(!seen.xmp.contains("tiff:Orientation=\"6\""));
    assert_eq!(seen.tag(Tag::XResolution).as_deref(), Some("1200"));
    assert_eq!(seen.tag(Tag::PixelXDimension).as_deref(), Some("60"));
}

#[test]
fn the_orientation_rule() {
    let g = |orientation, result| Geometry {
        source: (400, 300),
        result,
        orientation,
    };
    assert!(g(6, (600, 800)).upright());
    assert!(g(8, (300, 400)).upright());
    assert!(!g(6, (800, 600)).upright(), "layout kept");
    assert!(!g(3, (600, 800)).upright(), "half turns cannot be seen");
    assert!(!g(1, (600, 800)).upright());
    let square = Geometry {
        source: (300, 300),
        result: (600, 600),
        orientation: 6,
    };
    assert!(!square.upright(), "a square cannot tell");
    assert_eq!(g(1, (800, 600)).scale_rational((300, 1), true), (600, 1));
    assert_eq!(g(1, (600, 450)).scale_rational((72, 1), false), (108, 1));
    let d = Density::from_jfif(2, 100, 50)
        .unwrap()
        .scaled(&g(6, (600, 800)));
    assert_eq!((d.unit, d.x, d.y), (DensityUnit::Cm, 100.0, 200.0));
    assert_eq!(Density::from_jfif(0, 1, 1), None, "aspect ratio only");
    assert_eq!(d.to_phys(), (10_000, 20_000));
}

#[test]
fn an_unreadable_source_is_an_error_and_broken_parts_are_warnings() {
    let result = sample::plain_jpeg(80, 60);
    assert!(matches!(
        carry_over(b"not an image at all", &result, &opts(false)),
        Err(MetadataError::UnknownSource)
    ));
    assert!(carry_over(b"\xFF\xD8\xFF\xE1\xFF", &result, &opts(false)).is_err());
    // A source whose XMP is broken XML: the rest is carried, hili's record stands alone.
    let mut src = sample::tagged_jpeg(40, 30);
    let at = src.windows(9).position(|w| w == b"</rdf:RDF").unwrap();
    src[at..at + 9].copy_from_slice(b"</rdf:XXX");
    let (out, report) = carry_over(&src, &result, &opts(false)).unwrap();
    assert_eq!(report.warnings.len(), 1, "{:?}", report.warnings);
    let seen = Seen::of(&out);
    assert!(seen.xmp.contains("<hili:DerivedFrom>"));
    assert_eq!(seen.tag(Tag::Make).as_deref(), Some("\"Hilicam\""));
}

#[test]
fn a_result_of_a_result_keeps_one_provenance_record() {
    let (first, _) = carry_over(
        &sample::tagged_jpeg(40, 30),
        &sample::plain_jpeg(80, 60),
        &opts(false),
    )
    .unwrap();
    let (second, _) = carry_over(&first, &sample::plain_jpeg(160, 120), &opts(false)).unwrap();
    let seen = Seen::of(&second);
    assert_eq!(
        seen.xmp.matches("<hili:DerivedFrom>").count(),
        1,
        "{}",
        seen.xmp
    );
    assert_eq!(seen.tag(Tag::XResolution).as_deref(), Some("2400"));
}

#[test]
fn a_tiff_source_s_tags_become_the_result_s_metadata() {
    use tiff::encoder::{Rational, TiffEncoder, colortype};
    use tiff::tags::{ResolutionUnit, Tag as T};
    let (w, h) = (40u32, 30u32);
    let mut file = Cursor::new(Vec::new());
    let mut enc = TiffEncoder::new(&mut file).unwrap();
    let mut img = enc.new_image::<colortype::RGB8>(w, h).unwrap();
    img.resolution(ResolutionUnit::Inch, Rational { n: 600, d: 1 });
    let dir = img.encoder();
    dir.write_tag(T::Make, sample::CAMERA_MAKE).unwrap();
    dir.write_tag(T::Unknown(700), &sample::xmp_packet()[..])
        .unwrap();
    dir.write_tag(T::Unknown(33723), &sample::iptc_records()[..])
        .unwrap();
    dir.write_tag(T::Unknown(34675), &sample::icc_profile()[..])
        .unwrap();
    img.write_data(&vec![90u8; (w * h * 3) as usize]).unwrap();
    let tiff = file.into_inner();

    let c = source::read(&tiff).unwrap();
    assert_eq!(c.dims, (40, 30));
    assert!(c.warnings.is_empty(), "{:?}", c.warnings);
    let (out, _) = carry_over(&tiff, &sample::plain_jpeg(80, 60), &opts(false)).unwrap();
    let seen = Seen::of(&out);
    assert_eq!(seen.tag(Tag::Make).as_deref(), Some("\"Hilicam\""));
    assert_eq!(seen.tag(Tag::XResolution).as_deref(), Some("1200"));
    for structure in [
        Tag::StripOffsets,
        Tag::BitsPerSample,
        Tag::ImageWidth,
        Tag::Compression,
    ] {
        assert_eq!(seen.tag(structure), None, "{structure}");
    }
    assert!(seen.xmp.contains(sample::CAPTION));
    assert_eq!(seen.carried.iptc, Some(sample::iptc_records()));
    assert_eq!(seen.carried.icc, Some(sample::icc_profile()));
}

#[test]
fn iptc_raw_profiles_and_photoshop_resources_round_trip() {
    let records = sample::iptc_records();
    assert_eq!(
        iptc::from_raw_profile(&iptc::raw_profile(&records)),
        Some(records.clone())
    );
    assert_eq!(
        iptc::from_app13(&iptc::app13(&records)),
        Some(records.clone())
    );
    // A resource before the IPTC one, with an odd-length name, is skipped over.
    let mut res = b"Photoshop 3.0\08BIM\x03\xED\x03abc\0\0\0\x03xyz\0".to_vec();
    res.extend_from_slice(&iptc::app13(&records)[14..]);
    assert_eq!(iptc::from_app13(&res), Some(records));
    assert_eq!(
        iptc::from_app13(b"Photoshop 3.0\08BIM\x04\x04\0\0\xff\xff\xff\xff"),
        None
    );
}
