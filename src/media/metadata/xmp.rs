//! The result's XMP packet: the source's, read and written back as XML events with a few
//! properties corrected or removed, plus hili's provenance record as one more
//! `rdf:Description`; or a fresh packet holding only the record.

use quick_xml::Reader;
use quick_xml::Writer;
use quick_xml::escape::escape;
use quick_xml::events::{BytesEnd, BytesStart, BytesText, Event};

use super::Provenance;

/// The namespace of hili's provenance properties (its own, so it never clashes with the
/// `xmpMM` history other software keeps).
pub(super) const HILI_NS: &str = "urn:hili:provenance:1.0/";

/// What to change in the source's packet.
#[derive(Debug, Default)]
pub(super) struct Edits {
    /// Remove `exif:GPS*` properties.
    pub strip_gps: bool,
    /// Simple properties given a new value, by qualified name (`tiff:Orientation`).
    pub set: Vec<(&'static str, String)>,
}

enum Act<'a> {
    Keep,
    Remove,
    Set(&'a str),
}

impl Edits {
    fn act(&self, name: &[u8]) -> Act<'_> {
        let gps = self.strip_gps && name.starts_with(b"exif:GPS");
        // Thumbnails are dropped; an earlier hili record is replaced by this one.
        if gps || name == b"xmp:Thumbnails" || name.starts_with(b"hili:") {
            return Act::Remove;
        }
        match self.set.iter().find(|(n, _)| n.as_bytes() == name) {
            Some((_, v)) => Act::Set(v),
            None => Act::Keep,
        }
    }

    /// `e` with its property attributes removed or changed; `None` when nothing changes.
    fn attributes(&self, e: &BytesStart<'_>) -> Result<Option<BytesStart<'static>>, String> {
        let acts = |a: &quick_xml::events::attributes::Attribute<'_>| self.act(a.key.as_ref());
        let attrs: Vec<_> = e
            .attributes()
            .collect::<Result<_, _>>()
            .map_err(|e| e.to_string())?;
        if attrs.iter().all(|a| matches!(acts(a), Act::Keep)) {
            return Ok(None);
        }
        let name = String::from_utf8_lossy(e.name().as_ref()).into_owned();
        let mut out = BytesStart::new(name);
        for a in &attrs {
            let key = String::from_utf8_lossy(a.key.as_ref()).into_owned();
            match acts(a) {
                Act::Remove => {}
                Act::Set(v) => out.push_attribute((key.as_str(), v)),
                Act::Keep => {
                    let v = a.unescape_value().map_err(|e| e.to_string())?;
                    out.push_attribute((key.as_str(), v.as_ref()));
                }
            }
        }
        Ok(Some(out))
    }
}

/// hili's provenance record: one `rdf:Description` in the hili namespace.
pub(super) fn record(p: &Provenance) -> String {
    let when = humantime::format_rfc3339_seconds(p.when);
    format!(
        "<rdf:Description rdf:about=\"\" xmlns:hili=\"{HILI_NS}\">\
         <hili:DerivedFrom>{}</hili:DerivedFrom>\
         <hili:DerivedFromSHA256>{}</hili:DerivedFromSHA256>\
         <hili:Action>{}</hili:Action>\
         <hili:Agent>{}</hili:Agent>\
         <hili:When>{when}</hili:When>\
         </rdf:Description>",
        escape(p.source_name.as_str()),
        escape(p.source_sha256.as_str()),
        escape(p.action.as_str()),
        escape(p.agent.as_str()),
    )
}

/// A packet holding only `record`.
pub(super) fn fresh(record: &str) -> Vec<u8> {
    format!(
        "<?xpacket begin=\"\u{feff}\" id=\"W5M0MpCehiHzreSzNTczkc9d\"?>\n\
         <x:xmpmeta xmlns:x=\"adobe:ns:meta/\">\
         <rdf:RDF xmlns:rdf=\"http://www.w3.org/1999/02/22-rdf-syntax-ns#\">{record}</rdf:RDF>\
         </x:xmpmeta>\n<?xpacket end=\"w\"?>"
    )
    .into_bytes()
}

/// The source's packet with `edits` applied and `record` added inside its `rdf:RDF`.
pub(super) fn edited(packet: &[u8], edits: &Edits, record: &str) -> Result<Vec<u8>, String> {
    let mut reader = Reader::from_reader(packet);
    let mut w = Writer::new(Vec::with_capacity(packet.len() + record.len()));
    let err = |e: &dyn std::fmt::Display| e.to_string();
    // Inside a removed or replaced element: its depth, and the end tag to write for a replaced one.
    let mut skip = 0usize;
    let mut end_after: Option<BytesEnd<'static>> = None;
    let mut inserted = false;
    loop {
        let ev = reader.read_event().map_err(|e| err(&e))?;
        if skip > 0 {
            match ev {
                Event::Start(_) => skip += 1,
                Event::End(_) => skip -= 1,
                Event::Eof => return Err("the packet ends inside an element".into()),
                _ => {}
            }
            if skip == 0
                && let Some(end) = end_after.take()
            {
                w.write_event(Event::End(end)).map_err(|e| err(&e))?;
            }
            continue;
        }
        let out = match ev {
            Event::Start(e) => match edits.act(e.name().as_ref()) {
                Act::Remove => {
                    skip = 1;
                    continue;
                }
                Act::Set(v) => {
                    let name = String::from_utf8_lossy(e.name().as_ref()).into_owned();
                    w.write_event(Event::Start(e)).map_err(|e| err(&e))?;
                    w.write_event(Event::Text(BytesText::new(v)))
                        .map_err(|e| err(&e))?;
                    end_after = Some(BytesEnd::new(name));
                    skip = 1;
                    continue;
                }
                Act::Keep => match edits.attributes(&e)? {
                    Some(changed) => Event::Start(changed),
                    None => Event::Start(e),
                },
            },
            Event::Empty(e) => match edits.act(e.name().as_ref()) {
                Act::Remove => continue,
                Act::Set(v) => {
                    let name = String::from_utf8_lossy(e.name().as_ref()).into_owned();
                    w.write_event(Event::Start(BytesStart::new(name.clone())))
                        .map_err(|e| err(&e))?;
                    w.write_event(Event::Text(BytesText::new(v)))
                        .map_err(|e| err(&e))?;
                    Event::End(BytesEnd::new(name))
                }
                Act::Keep => match edits.attributes(&e)? {
                    Some(changed) => Event::Empty(changed),
                    None => Event::Empty(e),
                },
            },
            Event::End(e) if e.name().as_ref() == b"rdf:RDF" && !inserted => {
                w.get_mut().extend_from_slice(record.as_bytes());
                inserted = true;
                Event::End(e)
            }
            Event::Eof => break,
            other => other,
        };
        w.write_event(out).map_err(|e| err(&e))?;
    }
    if !inserted {
        return Err("the packet has no rdf:RDF element".into());
    }
    Ok(w.into_inner())
}
