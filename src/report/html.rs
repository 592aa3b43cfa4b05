//! The report's HTML, as text: the page's head (its style and the few lines of script, both
//! inline), the totals at the top, one `<section class="job">` per job with its before/after
//! comparison and facts, and the end. Every string that comes from a file name, the queue or
//! the service goes through [`escape`]; pictures are `data:` URIs, so the page names no other
//! resource at all.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
use std::time::{Duration, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

use super::ReportJob;
use super::thumbs::{LONG_SIDE, Picture};
use crate::store::{JobId, State};

const STYLE: &str = include_str!("style.css");
const SCRIPT: &str = include_str!("page.js");
/// At most this many links to failed and held jobs at the top.
const ATTENTION_LINKS: usize = 100;

/// `s` safe in HTML text and in a quoted attribute.
pub(crate) fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn path_text(p: &Path) -> String {
    escape(&p.to_string_lossy())
}

fn file_name(p: &Path) -> String {
    escape(&p.file_name().unwrap_or(p.as_os_str()).to_string_lossy())
}

/// Unix milliseconds as `2026-11-30 08:15:02 UTC`.
pub fn when(ms: i64) -> String {
    let t = UNIX_EPOCH + Duration::from_millis(u64::try_from(ms).unwrap_or(0));
    humantime::format_rfc3339_seconds(t)
        .to_string()
        .replacen('T', " ", 1)
        .replace('Z', " UTC")
}

/// `1234567` as `1,234,567 bytes (1.2 MB)`.
fn bytes_text(n: u64) -> String {
    let digits = n.to_string();
    let mut grouped = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            grouped.push(',');
        }
        grouped.push(c);
    }
    match n {
        0..1_000 => format!("{grouped} bytes"),
        1_000..1_000_000 => format!("{grouped} bytes ({:.1} kB)", n as f64 / 1e3),
        _ => format!("{grouped} bytes ({:.1} MB)", n as f64 / 1e6),
    }
}

/// What the whole report covers, shown at its top.
#[derive(Debug, Clone, Default)]
pub(crate) struct Totals {
    pub jobs: u64,
    pub by_state: BTreeMap<State, u64>,
    pub credits: u64,
    /// The earliest queueing and the latest change among the jobs.
    pub span: Option<(i64, i64)>,
    /// Failed and held jobs, in order.
    pub attention: Vec<(JobId, State)>,
}

impl Totals {
    pub(crate) fn of(jobs: &[ReportJob]) -> Totals {
        let mut t = Totals::default();
        for r in jobs {
            let j = &r.job;
            t.jobs += 1;
            *t.by_state.entry(j.state()).or_default() += 1;
            t.credits += u64::from(j.charges);
            let (a, b) = t.span.unwrap_or((j.created_at_ms, j.updated_at_ms));
            t.span = Some((a.min(j.created_at_ms), b.max(j.updated_at_ms)));
            if matches!(j.state(), State::Failed | State::Held) {
                t.attention.push((j.id, j.state()));
            }
        }
        t
    }
}

/// The page up to the first job: head, style, title, scope and totals.
pub(crate) fn start(scope: &str, totals: &Totals, generated_ms: i64) -> String {
    let mut h = String::with_capacity(STYLE.len() + 2048);
    let _ = write!(
        h,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>hili report: {} job(s)</title>\n<style>\n{STYLE}</style>\n</head>\n<body>\n\
         <header>\n<h1>hili report</h1>\n<p class=\"scope\">{} · made {}</p>\n<ul class=\"totals\">\n",
        totals.jobs,
        escape(scope),
        when(generated_ms)
    );
    let _ = writeln!(h, "<li><b>{}</b>jobs</li>", totals.jobs);
    for (state, n) in &totals.by_state {
        let _ = writeln!(h, "<li><b>{n}</b>{}</li>", state.as_str());
    }
    let _ = writeln!(h, "<li><b>{}</b>credits spent</li>", totals.credits);
    if let Some((a, b)) = totals.span {
        let _ = writeln!(h, "<li><b>{}</b>to {}</li>", when(a), when(b));
    }
    h.push_str("</ul>\n");
    if !totals.attention.is_empty() {
        h.push_str("<p class=\"attention\">Need you (see the reason under each): ");
        for (id, state) in totals.attention.iter().take(ATTENTION_LINKS) {
            let _ = write!(h, "<a href=\"#job-{id}\">{id} ({})</a>", state.as_str());
        }
        if totals.attention.len() > ATTENTION_LINKS {
            let _ = write!(h, "and {} more", totals.attention.len() - ATTENTION_LINKS);
        }
        h.push_str("</p>\n");
    }
    h.push_str(
        "<p class=\"hint\">Drag across a picture to compare the original (left of the line) \
         with the result (right).</p>\n</header>\n<main>\n",
    );
    h
}

/// The end of the page: the script and the closing tags.
pub(crate) fn end() -> String {
    format!("</main>\n<script>\n{SCRIPT}</script>\n</body>\n</html>\n")
}

/// An `<img>` of a thumbnail; `small` ones are drawn with square pixels when stretched, so a
/// little original looks as coarse as it is beside its larger result.
fn img(class: &str, alt: &str, pic: &Picture) -> String {
    let Ok(t) = &pic.thumb else {
        return String::new();
    };
    let small = if t.width.max(t.height) < LONG_SIDE {
        " small"
    } else {
        ""
    };
    format!(
        "<img class=\"{class}{small}\" alt=\"{alt}\" width=\"{}\" height=\"{}\" decoding=\"async\" \
         src=\"data:image/jpeg;base64,{}\">",
        t.width,
        t.height,
        STANDARD.encode(&t.jpeg)
    )
}

/// The picture area: a comparison with a slider when both pictures can be shown, else the
/// one that can, else why neither can.
fn pictures(name: &str, before: &Picture, after: Option<&Picture>) -> String {
    let shown = |p: &Picture| p.thumb.as_ref().ok().map(|t| (t.width, t.height));
    let ratio = |(w, h): (u32, u32)| format!("aspect-ratio: {} / {}", w.max(1), h.max(1));
    match (shown(before), after.and_then(shown)) {
        (Some(_), Some(dims)) => format!(
            "<div class=\"cmp\" style=\"{}\">{}{}<input type=\"range\" min=\"0\" max=\"100\" \
             value=\"50\" aria-label=\"move the line between the original and the result of \
             {name}\"><span class=\"label l\">before</span><span class=\"label r\">after</span></div>",
            ratio(dims),
            img(
                "after",
                &format!("result of {name}"),
                after.unwrap_or(before)
            ),
            img("before", &format!("original {name}"), before)
        ),
        (b, a) => {
            let (pic, label, dims) = match (b, a, after) {
                (_, Some(d), Some(p)) => (p, "result", d),
                (Some(d), _, _) => (before, "original", d),
                _ => return missing(before, after),
            };
            format!(
                "<div class=\"single\" style=\"{}\">{}<span class=\"label l\">{label} only</span></div>\n{}",
                ratio(dims),
                img(label, &format!("{label} {name}"), pic),
                missing(before, after)
            )
        }
    }
}

/// Why a picture is not shown, for each that is not.
fn missing(before: &Picture, after: Option<&Picture>) -> String {
    let mut s = String::new();
    for (label, p) in [("original", Some(before)), ("result", after)] {
        if let Some(Err(why)) = p.map(|p| &p.thumb) {
            let _ = writeln!(s, "<p class=\"missing\">The {label}: {}</p>", escape(why));
        }
    }
    s
}

/// A file's facts: its path, size in bytes and pixels.
fn file_facts(path: &Path, pic: &Picture) -> String {
    let mut s = path_text(path);
    if let Some(n) = pic.bytes {
        let _ = write!(s, " · {}", bytes_text(n));
    }
    if let Some((w, h)) = pic.pixels {
        let _ = write!(s, " · {w}×{h} px");
    }
    s
}

/// One job: its heading, pictures and facts.
pub(crate) fn section(r: &ReportJob, before: &Picture, after: Option<&Picture>) -> String {
    let j = &r.job;
    let state = j.state().as_str();
    let name = file_name(&j.source_path);
    let mut s = String::with_capacity(1024);
    let _ = writeln!(
        s,
        "<section class=\"job {state}\" id=\"job-{}\" data-state=\"{state}\">\n\
         <h2><span class=\"state\">{state}</span>{name} <small>(job {})</small></h2>",
        j.id, j.id
    );
    s.push_str(&pictures(&name, before, after));
    let _ = write!(
        s,
        "\n<dl>\n<dt>repair</dt><dd>{} — {}</dd>\n<dt>original</dt><dd>{}</dd>\n",
        j.repair,
        escape(&j.repair.in_words(j.rgb)),
        file_facts(&j.source_path, before)
    );
    if let (Some(path), Some(pic)) = (&j.output_path, after) {
        let _ = writeln!(s, "<dt>result</dt><dd>{}</dd>", file_facts(path, pic));
    }
    if let Some(why) = &j.reason
        && j.state() != State::Done
    {
        let _ = writeln!(
            s,
            "<dt>reason</dt><dd class=\"reason\">{}</dd>",
            escape(why)
        );
    }
    let _ = writeln!(s, "<dt>credits spent</dt><dd>{}</dd>", j.charges);
    let (input, others): (Vec<&String>, Vec<&String>) =
        r.notes.iter().partition(|n| n.starts_with("input: "));
    if let Some(conv) = input.last() {
        let conv = conv.trim_start_matches("input: ");
        let _ = writeln!(s, "<dt>conversion</dt><dd>{}</dd>", escape(conv));
    }
    if !others.is_empty() {
        s.push_str("<dt>notes</dt><dd><ul>");
        for n in others {
            let _ = write!(s, "<li>{}</li>", escape(n));
        }
        s.push_str("</ul></dd>\n");
    }
    let _ = write!(
        s,
        "<dt>times</dt><dd>queued {}, last change {}</dd>\n</dl>\n</section>\n",
        when(j.created_at_ms),
        when(j.updated_at_ms)
    );
    s
}

#[cfg(test)]
mod tests {
    use super::super::thumbs::Thumb;
    use super::*;

    #[test]
    fn escape_covers_the_five_characters_of_html() {
        assert_eq!(
            escape("<b>&\"x\"'s.jpg"),
            "&lt;b&gt;&amp;&quot;x&quot;&#39;s.jpg"
        );
        assert_eq!(escape("plain-name_1.jpg"), "plain-name_1.jpg");
    }

    #[test]
    fn sizes_and_times_read_as_a_person_writes_them() {
        assert_eq!(bytes_text(999), "999 bytes");
        assert_eq!(bytes_text(1_234), "1,234 bytes (1.2 kB)");
        assert_eq!(bytes_text(12_345_678), "12,345,678 bytes (12.3 MB)");
        assert_eq!(when(1_764_490_502_125), "2025-11-30 08:15:02 UTC");
    }

    fn pic(thumb: Result<(u32, u32), &str>) -> Picture {
        Picture {
            bytes: Some(10),
            pixels: Some((4, 3)),
            thumb: thumb
                .map(|(width, height)| Thumb {
                    jpeg: vec![0xFF, 0xD8],
                    width,
                    height,
                })
                .map_err(String::from),
            made: false,
        }
    }

    #[test]
    fn two_pictures_make_a_slider_one_a_single_view_and_none_say_why() {
        let both = pictures("a&b", &pic(Ok((240, 180))), Some(&pic(Ok((480, 360)))));
        assert!(both.starts_with("<div class=\"cmp\" style=\"aspect-ratio: 480 / 360\">"));
        assert_eq!(both.matches("<img").count(), 2);
        assert!(both.contains("type=\"range\"") && both.contains("a&b"));
        // The smaller original is drawn with square pixels; the full-size result is not.
        assert!(both.contains("class=\"before small\"") && both.contains("class=\"after\""));

        let failed = pictures("x", &pic(Ok((40, 30))), None);
        assert!(failed.starts_with("<div class=\"single\""));
        assert_eq!(failed.matches("<img").count(), 1);
        assert!(!failed.contains("range"));

        let lost = pictures("x", &pic(Ok((40, 30))), Some(&pic(Err("no longer <here>"))));
        assert!(lost.contains("original only"));
        assert!(lost.contains("The result: no longer &lt;here&gt;"));

        let none = pictures("x", &pic(Err("gone")), None);
        assert!(!none.contains("<img") && none.contains("The original: gone"));
    }

    #[test]
    fn the_page_has_no_external_reference() {
        let page = format!("{}{}", start("every job", &Totals::default(), 0), end());
        for bad in ["http:", "https:", "src=\"/", "href=\"/", "@import", "url("] {
            assert!(!page.contains(bad), "{bad}");
        }
        assert!(page.starts_with("<!DOCTYPE html>") && page.ends_with("</html>\n"));
    }
}
