//! The compliance report as people read it: one self-contained HTML page (inline style,
//! no script, no external resource) and Markdown for the terminal. Every value is escaped
//! for where it lands; the page's Content-Security-Policy allows exactly its own style
//! (by hash) and nothing else.

use std::fmt::Write as _;
use std::sync::OnceLock;

use base64::Engine as _;
use kms_core::{ComplianceReport, Finding, FindingStatus};
use serde_json::Value;
use sha2::{Digest, Sha256};

/// The page's whole style sheet; the CSP names its hash.
const STYLE: &str = "body{font:15px/1.5 system-ui,-apple-system,'Segoe UI',sans-serif;\
color:#1f2328;background:#fff;margin:0}\
main{max-width:960px;margin:0 auto;padding:24px}\
h1{font-size:26px;margin:0 0 4px}h2{font-size:18px;margin:0 0 6px}\
.meta{color:#59636e;margin:0 0 20px}\
table{border-collapse:collapse;width:100%;margin:0 0 28px}\
th,td{text-align:left;padding:6px 10px;border-bottom:1px solid #d1d9e0}\
th{background:#f6f8fa}td.num{text-align:right;font-variant-numeric:tabular-nums}\
.status{display:inline-block;padding:0 8px;border-radius:10px;font-weight:600;\
font-size:13px;text-transform:uppercase}\
.status.pass{background:#dafbe1;color:#116329}.status.fail{background:#ffebe9;color:#a40e26}\
section.finding{border:1px solid #d1d9e0;border-left-width:6px;border-radius:6px;\
padding:12px 16px;margin:0 0 16px}\
section.finding.pass{border-left-color:#1a7f37}section.finding.fail{border-left-color:#cf222e}\
code{font:13px ui-monospace,SFMono-Regular,Menlo,monospace;background:#f6f8fa;\
padding:1px 4px;border-radius:4px}\
dl{display:grid;grid-template-columns:max-content 1fr;gap:2px 16px;margin:8px 0}\
dt{color:#59636e}dd{margin:0}\
ul.items{columns:2;margin:8px 0 0;padding-left:20px}\
.none{color:#59636e;font-style:italic}\
@media print{main{max-width:none}section.finding{break-inside:avoid}}";

/// The Content-Security-Policy of the HTML report: nothing may load or run; only the
/// page's own style sheet applies.
pub fn html_csp() -> &'static str {
    static CSP: OnceLock<String> = OnceLock::new();
    CSP.get_or_init(|| format!("{}; frame-ancestors 'none'", html_csp_meta()))
}

/// [`html_csp`] as the page's `<meta>` tag can carry it (a meta policy cannot set
/// `frame-ancestors`).
fn html_csp_meta() -> &'static str {
    static CSP: OnceLock<String> = OnceLock::new();
    CSP.get_or_init(|| {
        let hash = base64::engine::general_purpose::STANDARD.encode(Sha256::digest(STYLE));
        format!(
            "default-src 'none'; style-src 'sha256-{hash}'; base-uri 'none'; form-action 'none'"
        )
    })
}

/// `text` escaped for HTML text and attribute values.
fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c if c.is_control() => out.push('\u{fffd}'),
            c => out.push(c),
        }
    }
    out
}

/// A detail's value as text: strings as they are, `null` as a dash.
fn value_text(v: &Value) -> String {
    match v {
        Value::Null => "—".to_owned(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// A detail's name as text: `max_age_days` → `max age days`.
fn detail_name(key: &str) -> String {
    key.replace('_', " ")
}

/// The report as one self-contained HTML page.
pub fn html(report: &ComplianceReport) -> String {
    let mut h = String::with_capacity(8 * 1024);
    let generated = report.generated_at.to_rfc3339();
    let csp_meta = html_csp_meta();
    let _ = write!(
        h,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta http-equiv=\"Content-Security-Policy\" content=\"{}\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>kms compliance report {}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n<main>\n\
         <h1>Compliance report</h1>\n",
        esc(csp_meta),
        esc(&generated),
    );
    let _ = writeln!(
        h,
        "<p class=\"meta\">Generated <time>{}</time> · period <time>{}</time> to <time>{}</time> · \
         overall <span class=\"status {st}\" id=\"overall\">{st}</span> · \
         <span id=\"passed\">{}</span> passed, <span id=\"failed\">{}</span> failed</p>",
        esc(&generated),
        esc(&report.period.from.to_rfc3339()),
        esc(&report.period.to.to_rfc3339()),
        report.summary.passed,
        report.summary.failed,
        st = report.status.as_str(),
    );
    h.push_str(
        "<table class=\"summary\">\n<thead><tr><th>Finding</th><th>Status</th>\
         <th>Count</th><th>Limit</th></tr></thead>\n<tbody>\n",
    );
    for f in &report.findings {
        let _ = writeln!(
            h,
            "<tr><td><a href=\"#f-{id}\">{title}</a></td>\
             <td><span class=\"status {st}\">{st}</span></td>\
             <td class=\"num\">{}</td><td class=\"num\">{}</td></tr>",
            f.count,
            f.limit,
            id = esc(&f.id),
            title = esc(&f.title),
            st = f.status.as_str(),
        );
    }
    h.push_str("</tbody>\n</table>\n");
    for f in &report.findings {
        finding_html(&mut h, f);
    }
    h.push_str(
        "<p class=\"meta\">Counts and ids only: this report never holds a secret. \
         Produced by kms.</p>\n</main>\n</body>\n</html>\n",
    );
    h
}

fn finding_html(h: &mut String, f: &Finding) {
    let st = f.status.as_str();
    let _ = write!(
        h,
        "<section class=\"finding {st}\" id=\"f-{id}\" data-finding=\"{id}\">\n\
         <h2>{title} <span class=\"status {st}\">{st}</span></h2>\n<dl>\n\
         <dt>id</dt><dd><code>{id}</code></dd>\n\
         <dt>count</dt><dd class=\"count\">{}</dd>\n<dt>limit</dt><dd>{}</dd>\n",
        f.count,
        f.limit,
        id = esc(&f.id),
        title = esc(&f.title),
    );
    for (key, value) in &f.details {
        let _ = writeln!(
            h,
            "<dt>{}</dt><dd>{}</dd>",
            esc(&detail_name(key)),
            esc(&value_text(value))
        );
    }
    h.push_str("</dl>\n");
    if f.items.is_empty() {
        h.push_str("<p class=\"none\">Nothing to list.</p>\n");
    } else {
        h.push_str("<ul class=\"items\">\n");
        for item in &f.items {
            let _ = writeln!(h, "<li><code>{}</code></li>", esc(item));
        }
        h.push_str("</ul>\n");
        if f.items_truncated {
            let _ = writeln!(
                h,
                "<p class=\"none\">{} of {} listed.</p>",
                f.items.len(),
                f.count
            );
        }
    }
    h.push_str("</section>\n");
}

/// `text` with Markdown's special characters escaped, on one line.
fn md(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            // Parentheses only matter after `]`, which is escaped.
            '\\' | '`' | '*' | '_' | '[' | ']' | '<' | '>' | '|' | '#' | '~' | '&' => {
                out.push('\\');
                out.push(c);
            }
            '\n' | '\r' => out.push(' '),
            c if c.is_control() => out.push('\u{fffd}'),
            c => out.push(c),
        }
    }
    out
}

/// The report in Markdown: a summary table, then each finding with its details and ids.
pub fn markdown(report: &ComplianceReport) -> String {
    let mut m = String::with_capacity(4 * 1024);
    let upper = |s: FindingStatus| s.as_str().to_ascii_uppercase();
    let _ = write!(
        m,
        "# Compliance report\n\nGenerated {} · period {} to {} · overall **{}** \
         ({} passed, {} failed)\n\n| Finding | Id | Status | Count | Limit |\n\
         |---|---|---|---:|---:|\n",
        md(&report.generated_at.to_rfc3339()),
        md(&report.period.from.to_rfc3339()),
        md(&report.period.to.to_rfc3339()),
        upper(report.status),
        report.summary.passed,
        report.summary.failed,
    );
    for f in &report.findings {
        let _ = writeln!(
            m,
            "| {} | {} | {} | {} | {} |",
            md(&f.title),
            md(&f.id),
            upper(f.status),
            f.count,
            f.limit
        );
    }
    for f in &report.findings {
        let _ = write!(
            m,
            "\n## {} — {}\n\n- id: {}\n- count: {} (limit {})\n",
            md(&f.title),
            upper(f.status),
            md(&f.id),
            f.count,
            f.limit
        );
        for (key, value) in &f.details {
            let _ = writeln!(m, "- {}: {}", md(&detail_name(key)), md(&value_text(value)));
        }
        if !f.items.is_empty() {
            m.push_str("- items:\n");
            for item in &f.items {
                let _ = writeln!(m, "  - {}", md(item));
            }
            if f.items_truncated {
                let _ = writeln!(m, "  - … {} of {} listed", f.items.len(), f.count);
            }
        }
    }
    m.push_str("\nCounts and ids only: this report never holds a secret.\n");
    m
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]
mod tests {
    use super::*;
    use kms_core::{ComplianceSummary, ReportPeriod, Timestamp};

    fn crafted() -> ComplianceReport {
        let mut details = serde_json::Map::new();
        details.insert("note".into(), Value::String("<b>bold</b> & \"q\"".into()));
        details.insert("missing".into(), Value::Null);
        ComplianceReport {
            generated_at: Timestamp::from_unix(1_800_000_000),
            status: FindingStatus::Fail,
            period: ReportPeriod {
                from: Timestamp::from_unix(1_797_408_000),
                to: Timestamp::from_unix(1_800_000_000),
            },
            summary: ComplianceSummary {
                passed: 0,
                failed: 1,
            },
            findings: vec![Finding {
                id: "odd\"id".into(),
                title: "<script>alert(1)</script> | *x*".into(),
                status: FindingStatus::Fail,
                count: 2,
                limit: 0,
                items: vec!["tok_<img src=x onerror=alert(1)>".into(), "a`b".into()],
                items_truncated: false,
                details,
            }],
        }
    }

    #[test]
    fn html_escapes_every_value_and_carries_no_script() {
        let page = html(&crafted());
        assert!(!page.contains("<script"), "{page}");
        assert!(!page.contains("<img"), "{page}");
        assert!(!page.contains("<b>"), "{page}");
        assert!(page.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
        assert!(page.contains("tok_&lt;img src=x onerror=alert(1)&gt;"));
        assert!(page.contains("id=\"f-odd&quot;id\""));
        assert!(page.contains("&amp; &quot;q&quot;"));
    }

    #[test]
    fn the_csp_allows_exactly_the_pages_style() {
        let page = html(&crafted());
        let start = page.find("<style>").unwrap() + "<style>".len();
        let end = page.find("</style>").unwrap();
        let digest = Sha256::digest(&page[start..end]);
        let hash = base64::engine::general_purpose::STANDARD.encode(digest);
        let csp = html_csp();
        assert!(csp.starts_with("default-src 'none'; "), "{csp}");
        assert!(csp.contains(&format!("style-src 'sha256-{hash}'")), "{csp}");
        assert!(
            !csp.contains("script-src") && !csp.contains("unsafe"),
            "{csp}"
        );
        assert_eq!(page.matches("<style>").count(), 1);
    }

    #[test]
    fn markdown_escapes_what_markdown_would_interpret() {
        let text = markdown(&crafted());
        assert!(
            text.contains(r"\<script\>alert(1)\</script\> \| \*x\*"),
            "{text}"
        );
        assert!(text.contains(r"a\`b"), "{text}");
        assert!(text.contains("| FAIL | 2 | 0 |"), "{text}");
        assert!(text.contains("- missing: —"), "{text}");
    }
}
