//! The page shell (header, menus following §4 and §5), and the pieces every
//! page is built from: labelled fields with their error next to them, tables
//! with paging and search, and forms that carry the CSRF token.

use maud::{DOCTYPE, Markup, html};

use super::form::{Errors, Form};
use super::{Ctx, Page};

pub fn page_title(page: Page) -> &'static str {
    match page {
        Page::Dashboard => "Dashboard",
        Page::ManageDomains => "Manage Domains",
        Page::SwitchDomains => "Switch Domains",
        Page::Administrators => "Administrators",
        Page::DomainAdministrators => "Administrators → Domain",
        Page::Keys => "Keys → Agent Keys",
        Page::Hosts => "Hosts",
        Page::Reports => "Reports",
        Page::Log => "Log",
        Page::System => "System",
    }
}

/// The top menu: (label, link, page it opens, section it highlights).
fn top_menu(ctx: &Ctx) -> Vec<(&'static str, &'static str, Page)> {
    let domains_link = if ctx.may_open(Page::ManageDomains) {
        ("Domains", "/domains", Page::ManageDomains)
    } else {
        ("Domains", "/domains/switch", Page::SwitchDomains)
    };
    let candidates = if ctx.domain().is_some() {
        vec![
            ("Dashboard", "/dashboard", Page::Dashboard),
            domains_link,
            (
                "Administrators",
                "/domain/administrators",
                Page::DomainAdministrators,
            ),
            ("Hosts", "/hosts", Page::Hosts),
            ("Keys", "/keys", Page::Keys),
            ("Log", "/log", Page::Log),
            ("System", "/system/preferences", Page::System),
        ]
    } else {
        vec![
            ("Dashboard", "/dashboard", Page::Dashboard),
            domains_link,
            ("Administrators", "/administrators", Page::Administrators),
            ("Reports", "/reports", Page::Reports),
            ("Log", "/log", Page::Log),
            ("System", "/system/preferences", Page::System),
        ]
    };
    candidates
        .into_iter()
        .filter(|(_, _, p)| ctx.may_open(*p))
        .filter(|(_, _, p)| ctx.licensed || matches!(p, Page::Dashboard | Page::System))
        .collect()
}

/// A page of the console for a signed-in administrator.
pub fn page(ctx: &Ctx, active: Page, title: &str, sub: Markup, body: Markup) -> Markup {
    let menu = top_menu(ctx);
    let section = |p: Page| match p {
        Page::ManageDomains | Page::SwitchDomains => 1,
        Page::Reports => 2,
        _ => 0,
    };
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · Custos" }
                link rel="stylesheet" href="/static/custos.css";
                script src="/static/custos.js" defer {}
            }
            body {
                a.skip href="#main" { "Skip to content" }
                header.top {
                    div.brand {
                        span.logo aria-hidden="true" { "◆" }
                        span.product { "Custos Key Manager" }
                        span.server { (ctx.st.host_name) }
                    }
                    div.who {
                        span { "Signed in as " strong { (ctx.actor.login) } " (" (ctx.actor.user_type.title()) ")" }
                        @if ctx.actor.read_only { span.badge { "read-only" } }
                        @if let Some(d) = ctx.domain() {
                            span.badge.domain { "Domain: " (d) }
                        }
                        form.inline method="post" action="/logout" {
                            input type="hidden" name="csrf" value=(ctx.session.csrf);
                            button.link type="submit" { "Log Out" }
                        }
                    }
                }
                nav.menu aria-label="Main menu" {
                    ul {
                        @for (label, link, p) in &menu {
                            @let current = *p == active || (section(*p) != 0 && section(*p) == section(active));
                            li { a href=(link) aria-current=[current.then_some("page")] { (label) } }
                        }
                    }
                }
                (sub)
                main #main {
                    h1 { (title) }
                    @if !ctx.licensed {
                        p.notice.warn role="status" {
                            "License not found. Only the Dashboard and System menus are usable until a licence file is uploaded under System → License."
                        }
                    }
                    @match ctx.st.web_sessions.take_flash(&ctx.token) {
                        Some((true, m)) => p.notice.error role="alert" { (m) },
                        Some((false, m)) => p.notice.ok role="status" { (m) },
                        None => {},
                    }
                    (body)
                }
                footer { "Custos " (appliance::VERSION) }
            }
        }
    }
}

/// The second-level menu of a section.
pub fn submenu(items: &[(&str, &str, bool)]) -> Markup {
    html! {
        nav.submenu aria-label="Section menu" {
            ul {
                @for (label, link, current) in items {
                    li { a href=(link) aria-current=[current.then_some("page")] { (label) } }
                }
            }
        }
    }
}

/// A page without menus: sign-in, errors.
pub fn bare_page(title: &str, message: &str) -> Markup {
    bare(
        title,
        html! {
            p.notice.error role="alert" { (message) }
            p { a href="/dashboard" { "Back to the Dashboard" } " · " a href="/login" { "Sign in" } }
        },
    )
}

pub fn bare(title: &str, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · Custos" }
                link rel="stylesheet" href="/static/custos.css";
            }
            body.bare {
                main #main .narrow {
                    div.brand.center { span.logo aria-hidden="true" { "◆" } span.product { "Custos Key Manager" } }
                    h1 { (title) }
                    (body)
                }
            }
        }
    }
}

/// A POST form carrying the session's CSRF token.
pub fn form(ctx: &Ctx, action: &str, body: Markup) -> Markup {
    html! {
        form method="post" action=(action) novalidate {
            input type="hidden" name="csrf" value=(ctx.session.csrf);
            (body)
        }
    }
}

/// Messages of a refused form that belong to no field of it.
pub fn general_errors(errors: &Errors, fields: &[&str]) -> Markup {
    let general = errors.general(fields);
    html! {
        @if !general.is_empty() {
            div.notice.error role="alert" {
                @for m in general { p { (m) } }
            }
        }
    }
}

/// The message of a refused field, linked to its input for screen readers.
fn field_error(errors: &Errors, name: &str) -> Markup {
    html! {
        @if let Some(m) = errors.field(name) {
            p.field-error id=(format!("{name}-error")) role="alert" { (m) }
        }
    }
}

fn described(errors: &Errors, name: &str, hint: Option<&str>) -> Option<String> {
    let mut ids = Vec::new();
    if hint.is_some() {
        ids.push(format!("{name}-hint"));
    }
    if errors.field(name).is_some() {
        ids.push(format!("{name}-error"));
    }
    (!ids.is_empty()).then(|| ids.join(" "))
}

/// The kinds of input the console uses.
#[derive(Clone, Copy)]
pub enum Input {
    Text,
    Password,
    Number,
    Date,
}

/// One labelled input with its hint and its error.
pub fn field(
    kind: Input,
    label: &str,
    name: &str,
    values: &Form,
    errors: &Errors,
    hint: Option<&str>,
    required: bool,
) -> Markup {
    let t = match kind {
        Input::Text => "text",
        Input::Password => "password",
        Input::Number => "number",
        Input::Date => "date",
    };
    let value = match kind {
        Input::Password => "",
        _ => values.get(name),
    };
    html! {
        div.field.invalid[errors.field(name).is_some()] {
            label for=(name) { (label) @if required { span.req aria-hidden="true" { " *" } } }
            input type=(t) id=(name) name=(name) value=(value)
                required[required]
                autocomplete=[matches!(kind, Input::Password).then_some("new-password")]
                aria-invalid=[errors.field(name).map(|_| "true")]
                aria-describedby=[described(errors, name, hint)];
            @if let Some(h) = hint { p.hint id=(format!("{name}-hint")) { (h) } }
            (field_error(errors, name))
        }
    }
}

/// A labelled multi-line text input.
pub fn textarea(
    label: &str,
    name: &str,
    values: &Form,
    errors: &Errors,
    hint: Option<&str>,
) -> Markup {
    html! {
        div.field.invalid[errors.field(name).is_some()] {
            label for=(name) { (label) }
            textarea id=(name) name=(name) rows="3"
                aria-invalid=[errors.field(name).map(|_| "true")]
                aria-describedby=[described(errors, name, hint)] { (values.get(name)) }
            @if let Some(h) = hint { p.hint id=(format!("{name}-hint")) { (h) } }
            (field_error(errors, name))
        }
    }
}

/// A labelled drop-down list: (value, text) options.
pub fn select(
    label: &str,
    name: &str,
    options: &[(String, String)],
    values: &Form,
    errors: &Errors,
    hint: Option<&str>,
) -> Markup {
    let current = values.get(name);
    html! {
        div.field.invalid[errors.field(name).is_some()] {
            label for=(name) { (label) }
            select id=(name) name=(name)
                aria-invalid=[errors.field(name).map(|_| "true")]
                aria-describedby=[described(errors, name, hint)] {
                @for (v, text) in options {
                    option value=(v) selected[v == current] { (text) }
                }
            }
            @if let Some(h) = hint { p.hint id=(format!("{name}-hint")) { (h) } }
            (field_error(errors, name))
        }
    }
}

/// A labelled check box.
pub fn checkbox(
    label: &str,
    name: &str,
    values: &Form,
    errors: &Errors,
    hint: Option<&str>,
) -> Markup {
    html! {
        div.field.check.invalid[errors.field(name).is_some()] {
            input type="checkbox" id=(name) name=(name) value="on" checked[values.checked(name)]
                aria-describedby=[described(errors, name, hint)];
            label for=(name) { (label) }
            @if let Some(h) = hint { p.hint id=(format!("{name}-hint")) { (h) } }
            (field_error(errors, name))
        }
    }
}

/// A labelled group of radio buttons.
pub fn radios(
    label: &str,
    name: &str,
    options: &[(&str, &str)],
    values: &Form,
    errors: &Errors,
) -> Markup {
    let current = values.get(name);
    html! {
        fieldset.field.radios.invalid[errors.field(name).is_some()]
            aria-describedby=[described(errors, name, None)] {
            legend { (label) }
            @for (v, text) in options {
                @let id = format!("{name}-{v}");
                span.radio {
                    input type="radio" id=(id) name=(name) value=(v) checked[*v == current];
                    label for=(id) { (text) }
                }
            }
            (field_error(errors, name))
        }
    }
}

/// Paging and search state of a list (§4: "View 20", total, page N of M).
pub struct Listing {
    pub q: String,
    pub view: usize,
    pub page: usize,
}

/// Page sizes offered by every list.
pub const VIEWS: [usize; 3] = [10, 20, 50];

impl Listing {
    pub fn from_query(q: &Form) -> Listing {
        let view = q
            .get("view")
            .parse()
            .ok()
            .filter(|v| VIEWS.contains(v))
            .unwrap_or(20);
        let page = q.get("page").parse().ok().filter(|p| *p >= 1).unwrap_or(1);
        Listing {
            q: q.get("q").trim().to_owned(),
            view,
            page,
        }
    }

    /// Whether `text` matches the search (case-insensitive substring).
    pub fn matches(&self, text: &str) -> bool {
        self.q.is_empty() || text.to_lowercase().contains(&self.q.to_lowercase())
    }

    pub fn pages(&self, total: usize) -> usize {
        total.div_ceil(self.view).max(1)
    }

    /// The slice of `items` on the current page.
    pub fn slice<'a, T>(&self, items: &'a [T]) -> &'a [T] {
        let page = self.page.min(self.pages(items.len()));
        let start = (page - 1) * self.view;
        &items[start.min(items.len())..(start + self.view).min(items.len())]
    }

    fn link(&self, base: &str, page: usize, extra: &[(&str, &str)]) -> String {
        let mut s = form_urlencoded::Serializer::new(String::new());
        if !self.q.is_empty() {
            s.append_pair("q", &self.q);
        }
        for (k, v) in extra {
            s.append_pair(k, v);
        }
        s.append_pair("view", &self.view.to_string());
        s.append_pair("page", &page.to_string());
        format!("{base}?{}", s.finish())
    }

    /// The search box and the page size chooser (a GET form).
    pub fn controls(&self, base: &str, search_label: &str, extra: &[(&str, &str)]) -> Markup {
        html! {
            form.list-controls method="get" action=(base) role="search" {
                @for (k, v) in extra { input type="hidden" name=(k) value=(v); }
                div.field.inline {
                    label for="q" { (search_label) }
                    input type="search" id="q" name="q" value=(self.q);
                }
                div.field.inline {
                    label for="view" { "View" }
                    select id="view" name="view" {
                        @for v in VIEWS { option value=(v) selected[v == self.view] { (v) } }
                    }
                }
                button type="submit" { "Go" }
            }
        }
    }

    /// "Total: N · Page x of y" with previous/next links.
    pub fn pager(&self, base: &str, total: usize, extra: &[(&str, &str)]) -> Markup {
        let pages = self.pages(total);
        let page = self.page.min(pages);
        html! {
            nav.pager aria-label="Pages" {
                span.total { "Total: " (total) }
                span { "Page " (page) " of " (pages) }
                @if page > 1 {
                    a href=(self.link(base, 1, extra)) { "« First" }
                    a href=(self.link(base, page - 1, extra)) rel="prev" { "‹ Previous" }
                }
                @if page < pages {
                    a href=(self.link(base, page + 1, extra)) rel="next" { "Next ›" }
                    a href=(self.link(base, pages, extra)) { "Last »" }
                }
            }
        }
    }
}

/// Where to go after a change, with a message shown once on the next page
/// (kept in the session, so a link cannot make the console say anything).
pub fn done(ctx: &Ctx, to: &str, message: &str) -> axum::response::Response {
    use axum::response::IntoResponse;
    ctx.st.web_sessions.set_flash(&ctx.token, false, message);
    axum::response::Redirect::to(to).into_response()
}

/// The same for a refused action on a list (shown as an error).
pub fn refused(ctx: &Ctx, to: &str, message: &str) -> axum::response::Response {
    use axum::response::IntoResponse;
    ctx.st.web_sessions.set_flash(&ctx.token, true, message);
    axum::response::Redirect::to(to).into_response()
}

/// Yes/No as the console shows booleans.
pub fn yes_no(b: bool) -> &'static str {
    if b { "Yes" } else { "No" }
}

/// A dash for a missing value.
pub fn or_dash(v: Option<&str>) -> Markup {
    html! { @match v { Some(v) => (v), None => span.muted { "—" } } }
}
