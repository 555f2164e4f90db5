//! Log and Reports (§4, §16): the audit log filtered by severity, source and
//! text, paged, and exported as CSV; Reports sums it up by severity.

use appliance::model::Severity;
use appliance::store::{AuditEntry, AuditQuery};
use axum::extract::Query;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use maud::{Markup, html};

use super::form::Form;
use super::layout::{self, Listing, VIEWS};
use super::{Ctx, Page, WebResult};

const SEVERITIES: [Severity; 4] = [
    Severity::Info,
    Severity::Warn,
    Severity::Error,
    Severity::Fatal,
];

/// The filter of the log page, from its query string.
struct Filter {
    severity: Option<Severity>,
    source: String,
    text: String,
}

impl Filter {
    fn from(q: &Form) -> Result<Filter, appliance::Error> {
        Ok(Filter {
            severity: q.opt("severity").map(|s| Severity::parse(&s)).transpose()?,
            source: q.get("source").trim().to_owned(),
            text: q.get("text").trim().to_owned(),
        })
    }

    fn query(&self, ctx: &Ctx, limit: i64, offset: i64) -> AuditQuery {
        AuditQuery {
            severity: self.severity,
            source: Some(self.source.clone()).filter(|s| !s.is_empty()),
            text: Some(self.text.clone()).filter(|s| !s.is_empty()),
            domain: ctx.domain().map(str::to_owned),
            limit: Some(limit),
            offset: Some(offset),
        }
    }

    fn pairs(&self) -> Vec<(&'static str, String)> {
        let mut v = Vec::new();
        if let Some(s) = self.severity {
            v.push(("severity", s.as_str().to_owned()));
        }
        if !self.source.is_empty() {
            v.push(("source", self.source.clone()));
        }
        if !self.text.is_empty() {
            v.push(("text", self.text.clone()));
        }
        v
    }
}

fn filter_form(action: &str, f: &Filter, listing: Option<&Listing>) -> Markup {
    html! {
        form.list-controls method="get" action=(action) role="search" {
            div.field.inline {
                label for="severity" { "Severity (at or above)" }
                select id="severity" name="severity" {
                    option value="" selected[f.severity.is_none()] { "All" }
                    @for s in SEVERITIES { option value=(s.as_str()) selected[f.severity == Some(s)] { (s.as_str()) } }
                }
            }
            div.field.inline {
                label for="source" { "Source" }
                input type="text" id="source" name="source" value=(f.source) placeholder="address, web, api, cli";
            }
            div.field.inline {
                label for="text" { "Text" }
                input type="search" id="text" name="text" value=(f.text);
            }
            @if let Some(l) = listing {
                div.field.inline {
                    label for="view" { "View" }
                    select id="view" name="view" { @for v in VIEWS { option value=(v) selected[v == l.view] { (v) } } }
                }
            }
            button type="submit" { "Filter" }
        }
    }
}

fn export_link(f: &Filter) -> String {
    let mut s = form_urlencoded::Serializer::new(String::new());
    for (k, v) in f.pairs() {
        s.append_pair(k, &v);
    }
    format!("/log/export.csv?{}", s.finish())
}

fn access(ctx: &Ctx, page: Page) -> WebResult<()> {
    ctx.require(page)
}

pub async fn log_page(ctx: Ctx, Query(q): Query<Vec<(String, String)>>) -> WebResult<Response> {
    access(&ctx, Page::Log)?;
    let q = Form::from_pairs(q);
    let listing = Listing::from_query(&q);
    let f = Filter::from(&q)?;
    let offset = ((listing.page - 1) * listing.view) as i64;
    let query = f.query(&ctx, listing.view as i64, offset);
    let page = ctx.store(move |s, a| s.audit_log(a, &query)).await?;
    let pairs = f.pairs();
    let extra: Vec<(&str, &str)> = pairs.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let body = html! {
        (filter_form("/log", &f, Some(&listing)))
        p { a.button href=(export_link(&f)) download { "Export CSV" } }
        table.list.log {
            caption.visually-hidden { "Audit log" }
            thead { tr {
                th scope="col" { "Time (UTC)" } th scope="col" { "Severity" } th scope="col" { "Administrator" }
                th scope="col" { "Source" } th scope="col" { "Via" } th scope="col" { "Domain" } th scope="col" { "Message" }
            } }
            tbody {
                @for e in &page.entries { (entry_row(e)) }
                @if page.entries.is_empty() { tr { td colspan="7" .muted { "No entries match." } } }
            }
        }
        (listing.pager("/log", page.total as usize, &extra))
    };
    let title = match ctx.domain() {
        Some(d) => format!("Log of {d}"),
        None => "Log".into(),
    };
    Ok(layout::page(&ctx, Page::Log, &title, html! {}, body).into_response())
}

fn entry_row(e: &AuditEntry) -> Markup {
    let class = match e.severity {
        Severity::Info => "sev-info",
        Severity::Warn => "sev-warn",
        Severity::Error => "sev-error",
        Severity::Fatal => "sev-fatal",
    };
    html! {
        tr {
            td { (e.at) }
            td { span class=(format!("badge {class}")) { (e.severity.as_str()) } }
            td { (e.who) }
            td { (e.source) }
            td { (e.via) }
            td { (layout::or_dash(e.domain.as_deref())) }
            td { (e.what) }
        }
    }
}

/// One CSV field, quoted when it needs to be; a leading formula character
/// is neutralised so a spreadsheet does not run it.
fn csv(field: &str) -> String {
    let f = if field.starts_with(['=', '+', '-', '@']) {
        format!("'{field}")
    } else {
        field.to_owned()
    };
    if f.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", f.replace('"', "\"\""))
    } else {
        f
    }
}

/// Rows exported at most (the newest).
const EXPORT_MAX: i64 = 100_000;

pub async fn export_csv(ctx: Ctx, Query(q): Query<Vec<(String, String)>>) -> WebResult<Response> {
    if !ctx.may_open(Page::Log) && !ctx.may_open(Page::Reports) {
        access(&ctx, Page::Log)?;
    }
    if !ctx.licensed {
        return Err(super::WebError::LicenceRequired);
    }
    let f = Filter::from(&Form::from_pairs(q))?;
    let mut out = String::from("time,severity,administrator,source,via,domain,message\r\n");
    let mut offset = 0;
    loop {
        let query = f.query(&ctx, 1000, offset);
        let page = ctx.store(move |s, a| s.audit_log(a, &query)).await?;
        for e in &page.entries {
            let row = [
                e.at.as_str(),
                e.severity.as_str(),
                &e.who,
                &e.source,
                &e.via,
                e.domain.as_deref().unwrap_or(""),
                &e.what,
            ];
            out.push_str(&row.iter().map(|v| csv(v)).collect::<Vec<_>>().join(","));
            out.push_str("\r\n");
        }
        offset += page.entries.len() as i64;
        if page.entries.is_empty() || offset >= page.total || offset >= EXPORT_MAX {
            break;
        }
    }
    let name = format!(
        "custos_log_{}.csv",
        time::OffsetDateTime::now_utc()
            .format(time::macros::format_description!(
                "[year]_[month]_[day]_[hour][minute]"
            ))
            .unwrap_or_default()
    );
    Ok((
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8".to_owned()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{name}\""),
            ),
        ],
        out,
    )
        .into_response())
}

pub async fn reports_page(ctx: Ctx, Query(q): Query<Vec<(String, String)>>) -> WebResult<Response> {
    access(&ctx, Page::Reports)?;
    let f = Filter::from(&Form::from_pairs(q))?;
    // Counts at or above each severity; the difference is each one's own.
    let mut at_or_above = Vec::new();
    for s in SEVERITIES {
        let mut query = f.query(&ctx, 1, 0);
        query.severity = Some(s.max(f.severity.unwrap_or(Severity::Info)));
        let total = ctx.store(move |st, a| st.audit_log(a, &query)).await?.total;
        at_or_above.push((s, total));
    }
    let count = |i: usize| at_or_above[i].1 - at_or_above.get(i + 1).map_or(0, |x| x.1);
    let mut serious = f.query(&ctx, 10, 0);
    serious.severity = Some(Severity::Error.max(f.severity.unwrap_or(Severity::Info)));
    let recent = ctx.store(move |s, a| s.audit_log(a, &serious)).await?;
    let body = html! {
        (filter_form("/reports", &f, None))
        h2 { "Entries by Severity" }
        table.list.narrow-table {
            thead { tr { th scope="col" { "Severity" } th scope="col" { "Entries" } } }
            tbody {
                @for (i, (s, _)) in at_or_above.iter().enumerate() {
                    @if f.severity.is_none_or(|min| *s >= min) {
                        tr { td { (s.as_str()) } td { (count(i)) } }
                    }
                }
                tr.total { th scope="row" { "Total" } td { (at_or_above[0].1) } }
            }
        }
        p { a.button href=(export_link(&f)) download { "Export CSV" } " " a href="/log" { "Open the Log" } }
        h2 { "Latest ERROR and FATAL Entries" }
        table.list.log {
            thead { tr {
                th scope="col" { "Time (UTC)" } th scope="col" { "Severity" } th scope="col" { "Administrator" }
                th scope="col" { "Source" } th scope="col" { "Via" } th scope="col" { "Domain" } th scope="col" { "Message" }
            } }
            tbody {
                @for e in &recent.entries { (entry_row(e)) }
                @if recent.entries.is_empty() { tr { td colspan="7" .muted { "None." } } }
            }
        }
    };
    Ok(layout::page(&ctx, Page::Reports, "Reports", html! {}, body).into_response())
}

#[cfg(test)]
mod tests {
    use super::csv;

    #[test]
    fn csv_fields() {
        assert_eq!(csv("plain"), "plain");
        assert_eq!(csv("a,b"), "\"a,b\"");
        assert_eq!(csv("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(csv("=cmd()"), "'=cmd()");
    }
}
