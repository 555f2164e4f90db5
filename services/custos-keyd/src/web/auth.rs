//! Sign-in, sign-out and the password change that a first sign-in forces
//! (§2, §6). Failed attempts and lock-out are the store's, as for the API.

use std::sync::Arc;

use appliance::model::Severity;
use axum::extract::{Query, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use maud::html;

use super::form::{Errors, Form, Posted, read_body};
use super::layout::{self, Input, field, general_errors};
use super::session::{self, COOKIE, LOGIN_COOKIE};
use super::{Ctx, Page, WebError, WebResult};
use crate::state::AppState;

fn login_form(csrf: &str, values: &Form, errors: &Errors, notice: Option<&str>) -> maud::Markup {
    layout::bare(
        "Sign in",
        html! {
            @if let Some(n) = notice { p.notice.warn role="status" { (n) } }
            (general_errors(errors, &["login", "password"]))
            form method="post" action="/login" novalidate {
                input type="hidden" name="csrf" value=(csrf);
                div.field {
                    label for="login" { "Login" }
                    input type="text" id="login" name="login" value=(values.get("login"))
                        autocomplete="username" autofocus required;
                }
                div.field {
                    label for="password" { "Password" }
                    input type="password" id="password" name="password" autocomplete="current-password" required;
                }
                div.actions { button.primary type="submit" { "Log In" } }
            }
        },
    )
}

/// The sign-in page. Its CSRF token lives in a cookie of its own until a
/// session exists (double submit).
pub async fn login_page(headers: HeaderMap, Query(q): Query<Vec<(String, String)>>) -> Response {
    let q = Form::from_pairs(q);
    let token = session::cookie(&headers, LOGIN_COOKIE)
        .map(str::to_owned)
        .unwrap_or_else(appliance::crypto::random_token);
    let notice = (q.get("expired") == "1")
        .then_some("Your session ended after a period of inactivity. Sign in again.");
    (
        [(
            header::SET_COOKIE,
            session::set_cookie(LOGIN_COOKIE, &token),
        )],
        login_form(&token, &Form::default(), &Errors::none(), notice),
    )
        .into_response()
}

pub async fn login(State(st): State<Arc<AppState>>, req: Request) -> WebResult {
    let (parts, form) = read_body(req).await?;
    let expected = session::cookie(&parts.headers, LOGIN_COOKIE).unwrap_or("");
    if expected.is_empty() || !session::csrf_matches(expected, Some(form.get("csrf"))) {
        return Err(WebError::Csrf);
    }
    let source = parts
        .extensions
        .get::<crate::serve::Peer>()
        .map(|p| p.addr.ip().to_string())
        .unwrap_or_else(|| "unknown".into());
    let login = form.get("login").trim().to_owned();
    let password = form.secret("password");
    let l2 = login.clone();
    match st
        .check_password(&source.clone(), move |s| {
            s.login(&l2, &password, &source, "web")
        })
        .await
    {
        Ok(out) => {
            let token = st.web_sessions.create(&login, out.previous_login);
            let to = if out.must_change_password {
                "/password"
            } else {
                "/dashboard"
            };
            let mut resp = Redirect::to(to).into_response();
            let h = resp.headers_mut();
            h.append(
                header::SET_COOKIE,
                session::set_cookie(COOKIE, &token)
                    .parse()
                    .expect("cookie header"),
            );
            h.append(
                header::SET_COOKIE,
                session::clear_cookie(LOGIN_COOKIE)
                    .parse()
                    .expect("cookie header"),
            );
            Ok(resp)
        }
        Err(e @ crate::error::ApiError::Busy { .. }) => Err(e.into()),
        Err(e) => {
            let errors = Errors::from_web(e.into())?;
            let values = Form::default().with("login", login);
            Ok((
                StatusCode::UNAUTHORIZED,
                login_form(expected, &values, &errors, None),
            )
                .into_response())
        }
    }
}

pub async fn logout(Posted(ctx, _): Posted) -> WebResult {
    ctx.st.web_sessions.end(&ctx.token);
    ctx.store(|s, a| s.log_action(a, Severity::Info, "signed out of the web console"))
        .await?;
    Ok((
        [(header::SET_COOKIE, session::clear_cookie(COOKIE))],
        Redirect::to("/login"),
    )
        .into_response())
}

fn password_form(ctx: &Ctx, errors: &Errors) -> maud::Markup {
    let forced = ctx.actor.must_change_password;
    let fields = ["old", "new", "confirm"];
    let body = html! {
        @if forced {
            p.notice.warn role="status" {
                "You must choose a new password before anything else is available."
            }
        }
        p.hint {
            "At least 8 characters, with upper and lower case letters, a digit and a special character; not the same as your login."
        }
        (general_errors(errors, &fields))
        (layout::form(ctx, "/password", html! {
            (field(Input::Password, "Current Password", "old", &Form::default(), errors, None, true))
            (field(Input::Password, "New Password", "new", &Form::default(), errors, None, true))
            (field(Input::Password, "Confirm New Password", "confirm", &Form::default(), errors, None, true))
            div.actions { button.primary type="submit" { "Change Password" } }
        }))
    };
    if forced {
        layout::bare(
            "Change Password",
            html! {
                p { "Signed in as " strong { (ctx.actor.login) } }
                (body)
                form.inline method="post" action="/logout" {
                    input type="hidden" name="csrf" value=(ctx.session.csrf);
                    button.link type="submit" { "Log Out" }
                }
            },
        )
    } else {
        layout::page(ctx, Page::Dashboard, "Change Password", html! {}, body)
    }
}

pub async fn password_page(ctx: Ctx) -> Response {
    password_form(&ctx, &Errors::none()).into_response()
}

pub async fn change_password(Posted(ctx, form): Posted) -> WebResult {
    let mut errors = Errors::none();
    if form.get("new") != form.get("confirm") {
        errors.add("confirm", "does not match the new password");
        return Ok((StatusCode::BAD_REQUEST, password_form(&ctx, &errors)).into_response());
    }
    let (old, new) = (form.secret("old"), form.secret("new"));
    let actor = ctx.actor.clone();
    match ctx
        .st
        .check_password(&ctx.actor.source, move |s| {
            s.change_password(&actor, &old, &new)
        })
        .await
        .map_err(WebError::from)
    {
        Ok(()) => {
            // Other sessions of this administrator were opened with the old
            // password: end them, keep this one.
            ctx.st.sessions.end_all_of(&ctx.actor.login);
            ctx.st
                .web_sessions
                .end_others_of(&ctx.actor.login, &ctx.token);
            Ok(layout::done(
                &ctx,
                "/dashboard",
                "Your password was changed.",
            ))
        }
        Err(e) => {
            let errors = Errors::from_web(e)?;
            Ok((StatusCode::BAD_REQUEST, password_form(&ctx, &errors)).into_response())
        }
    }
}
