//! The OpenAPI 3.1 document of the admin REST API, served at
//! `/api/openapi.json`. A test checks that every operation listed here is
//! routed.

use axum::Json;
use serde_json::{Map, Value, json};

/// (method, path, summary, who may call it, request schema)
pub const OPERATIONS: &[(&str, &str, &str, &str, Option<&str>)] = &[
    (
        "post",
        "/api/v1/login",
        "Sign in; returns a bearer token",
        "anyone",
        Some("Login"),
    ),
    (
        "post",
        "/api/v1/logout",
        "End this session",
        "signed in",
        None,
    ),
    (
        "post",
        "/api/v1/password",
        "Change your own password (required first for new accounts)",
        "signed in, read-only too",
        Some("PasswordChange"),
    ),
    (
        "get",
        "/api/v1/system",
        "Version, security mode, CA fingerprints, ports",
        "signed in",
        None,
    ),
    (
        "get",
        "/api/v1/administrators",
        "List administrators",
        "System and Domain Administrators",
        None,
    ),
    (
        "post",
        "/api/v1/administrators",
        "Add an administrator",
        "System Administrator",
        Some("AdministratorCreate"),
    ),
    (
        "get",
        "/api/v1/administrators/{login}",
        "Show an administrator",
        "System and Domain Administrators, or yourself",
        None,
    ),
    (
        "patch",
        "/api/v1/administrators/{login}",
        "Change description, read-only flag, reset password, unlock",
        "System Administrator",
        Some("AdministratorUpdate"),
    ),
    (
        "delete",
        "/api/v1/administrators/{login}",
        "Delete an administrator",
        "System Administrator",
        None,
    ),
    (
        "get",
        "/api/v1/domains",
        "List domains (your own, or all for System Administrators)",
        "signed in",
        None,
    ),
    (
        "post",
        "/api/v1/domains",
        "Add a domain, optionally with its first Domain Administrator",
        "System Administrator",
        Some("DomainCreate"),
    ),
    (
        "get",
        "/api/v1/domains/{domain}",
        "Show a domain",
        "System Administrator or member",
        None,
    ),
    (
        "delete",
        "/api/v1/domains/{domain}",
        "Delete a domain without keys or hosts",
        "System Administrator",
        None,
    ),
    (
        "get",
        "/api/v1/domains/{domain}/administrators",
        "List the domain's administrators and roles",
        "System Administrator or the domain's Domain Administrator",
        None,
    ),
    (
        "post",
        "/api/v1/domains/{domain}/administrators",
        "Add an administrator to the domain (System Administrators: the first Domain Administrator only)",
        "Domain Administrator of the domain",
        Some("MemberAdd"),
    ),
    (
        "patch",
        "/api/v1/domains/{domain}/administrators/{login}",
        "Change roles, enable or disable",
        "Domain Administrator of the domain",
        Some("MemberUpdate"),
    ),
    (
        "delete",
        "/api/v1/domains/{domain}/administrators/{login}",
        "Remove from the domain",
        "Domain Administrator of the domain",
        None,
    ),
    (
        "get",
        "/api/v1/domains/{domain}/keys",
        "List agent keys",
        "Security Administrator with the Key role",
        None,
    ),
    (
        "post",
        "/api/v1/domains/{domain}/keys",
        "Add a symmetric agent key",
        "Security Administrator with the Key role",
        Some("KeyCreate"),
    ),
    (
        "get",
        "/api/v1/domains/{domain}/keys/{name}",
        "Show a key's metadata and versions (never its material)",
        "Security Administrator with the Key role",
        None,
    ),
    (
        "delete",
        "/api/v1/domains/{domain}/keys/{name}",
        "Delete a key and all its versions",
        "Security Administrator with the Key role",
        None,
    ),
    (
        "post",
        "/api/v1/domains/{domain}/keys/{name}/rotate",
        "Create a new current version; older versions stay readable",
        "Security Administrator with the Key role",
        None,
    ),
    (
        "get",
        "/api/v1/domains/{domain}/registration-secret",
        "Show the registration shared secret's settings (the secret itself with ?show=yes)",
        "Security Administrator with the Host role",
        None,
    ),
    (
        "put",
        "/api/v1/domains/{domain}/registration-secret",
        "Set a manual or generated shared secret",
        "Security Administrator with the Host role",
        Some("SecretSet"),
    ),
    (
        "post",
        "/api/v1/domains/{domain}/registration-secret/expire",
        "Expire the shared secret",
        "Security Administrator with the Host role",
        None,
    ),
    (
        "get",
        "/api/v1/domains/{domain}/hosts",
        "List protected hosts",
        "Security Administrator with the Host role",
        None,
    ),
    (
        "post",
        "/api/v1/domains/{domain}/hosts",
        "Add a host before it registers",
        "Security Administrator with the Host role",
        Some("HostAdd"),
    ),
    (
        "get",
        "/api/v1/domains/{domain}/hosts/{host}",
        "Show a host",
        "Security Administrator with the Host role",
        None,
    ),
    (
        "patch",
        "/api/v1/domains/{domain}/hosts/{host}",
        "Allow or stop the host's (re-)registration",
        "Security Administrator with the Host role",
        Some("HostUpdate"),
    ),
    (
        "delete",
        "/api/v1/domains/{domain}/hosts/{host}",
        "Delete a host; its certificate stops working",
        "Security Administrator with the Host role",
        None,
    ),
    (
        "get",
        "/api/v1/preferences",
        "General preferences",
        "signed in",
        None,
    ),
    (
        "patch",
        "/api/v1/preferences",
        "Change preferences (security mode applies at the next start)",
        "System Administrator",
        Some("PreferencesUpdate"),
    ),
    (
        "put",
        "/api/v1/preferences",
        "Same as PATCH",
        "System Administrator",
        Some("PreferencesUpdate"),
    ),
    (
        "get",
        "/api/v1/licence",
        "The installed licence (§10) with agents and domains in use, or {\"installed\": false, \"status\": \"License not found\"}",
        "signed in",
        None,
    ),
    (
        "put",
        "/api/v1/licence",
        "Install a vendor-signed licence file, replacing the installed one; refused when its limits are below what is in use",
        "System Administrator",
        Some("LicenceInstall"),
    ),
    (
        "get",
        "/api/v1/audit",
        "The audit log, newest first; filters severity (at or above), source, text, domain; limit, offset",
        "System Administrators; Domain Administrators and Security Administrators with the Audit role for their domains",
        None,
    ),
];

fn s(t: &str) -> Value {
    json!({ "type": t })
}

fn object(required: &[&str], props: &[(&str, Value)]) -> Value {
    let mut p = Map::new();
    for (k, v) in props {
        p.insert((*k).into(), v.clone());
    }
    json!({ "type": "object", "additionalProperties": false, "required": required, "properties": p })
}

fn enumeration(values: &[&str]) -> Value {
    json!({ "type": "string", "enum": values })
}

fn schemas() -> Value {
    json!({
        "Login": object(&["login", "password"], &[("login", s("string")), ("password", s("string"))]),
        "PasswordChange": object(&["old", "new"], &[("old", s("string")), ("new", s("string"))]),
        "AdministratorCreate": object(&["login", "password"], &[
            ("login", json!({"type": "string", "maxLength": 64})),
            ("description", json!({"type": "string", "maxLength": 256})),
            ("rsa_user_id", s("string")),
            ("password", s("string")), ("confirm_password", s("string")),
            ("user_type", enumeration(&["system", "domain", "security"])),
            ("restrict_to_domain", s("string")), ("read_only", s("boolean"))]),
        "AdministratorUpdate": object(&[], &[("description", s("string")), ("rsa_user_id", s("string")),
            ("read_only", s("boolean")), ("password", s("string")), ("unlock", s("boolean"))]),
        "DomainCreate": object(&["name"], &[
            ("name", json!({"type": "string", "maxLength": 64})),
            ("kind", enumeration(&["global", "restricted"])),
            ("organization", s("string")), ("description", json!({"type": "string", "maxLength": 256})),
            ("help_desk_information", s("string")), ("domain_administrator", s("string"))]),
        "MemberAdd": object(&["login"], &[("login", s("string")),
            ("roles", json!({"type": "array", "items": enumeration(&["audit", "key", "policy", "host", "challenge_response"])}))]),
        "MemberUpdate": object(&[], &[("roles", json!({"type": "array", "items": s("string")})), ("enabled", s("boolean"))]),
        "KeyCreate": object(&["name"], &[
            ("name", json!({"type": "string", "maxLength": 64})),
            ("description", json!({"type": "string", "maxLength": 256})),
            ("template", s("string")),
            ("expiration_date", json!({"type": "string", "description": "YYYY-MM-DD or RFC 3339"})),
            ("algorithm", enumeration(&["AES256", "AES128", "ARIA256"])),
            ("key_type", enumeration(&["stored_on_server", "cached_on_host"])),
            ("unique_to_host", s("boolean")),
            ("key_creation_method", enumeration(&["generate", "manual"])),
            ("key_material", json!({"type": "string", "description": "base64, manual input only"})),
            ("key_refresh_period", json!({"type": "integer", "minimum": 1, "maximum": 44640})),
            ("automatic_key_rotation", s("boolean")),
            ("key_version_life_span", json!({"type": "integer", "minimum": 1, "description": "days"}))]),
        "SecretSet": object(&[], &[("creation_method", enumeration(&["manual", "generate"])),
            ("shared_secret", s("string")), ("valid_until", s("string")), ("require_hosts_first_added", s("boolean"))]),
        "HostAdd": object(&["host_name"], &[("host_name", s("string")), ("registration_allowed", s("boolean"))]),
        "HostUpdate": object(&["registration_allowed"], &[("registration_allowed", s("boolean"))]),
        "PreferencesUpdate": object(&[], &[
            ("key_refresh_period", json!({"type": "integer", "minimum": 1, "maximum": 44640})),
            ("session_timeout", json!({"type": "integer", "minimum": 1, "maximum": 1440})),
            ("max_failed_logins", json!({"type": "integer", "minimum": 1, "maximum": 100})),
            ("lockout_minutes", json!({"type": "integer", "minimum": 1, "maximum": 1440})),
            ("security_mode", enumeration(&["compatible", "suite_b"]))]),
        "LicenceInstall": object(&["licence"], &[("licence", json!({"type": "string",
            "description": "the licence file's text, -----BEGIN CUSTOS LICENSE----- to -----END CUSTOS LICENSE SIGNATURE-----"}))]),
        "Error": object(&["error", "message"], &[("error", s("string")), ("message", s("string")), ("field", s("string"))]),
    })
}

pub fn build() -> Value {
    let mut paths = Map::new();
    for (method, path, summary, who, body) in OPERATIONS {
        let params: Vec<Value> = path
            .split('/')
            .filter_map(|seg| seg.strip_prefix('{')?.strip_suffix('}'))
            .map(|p| json!({ "name": p, "in": "path", "required": true, "schema": s("string") }))
            .collect();
        let mut op = json!({
            "summary": summary,
            "description": format!("Who may call it: {who}."),
            "parameters": params,
            "responses": {
                "200": { "description": "OK" },
                "4XX": { "description": "Refused; the body names the field and the rule",
                         "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Error" } } } }
            }
        });
        if *path != "/api/v1/login" {
            op["security"] = json!([{ "bearer": [] }]);
        }
        if let Some(b) = body {
            op["requestBody"] = json!({ "required": true, "content": { "application/json": {
                "schema": { "$ref": format!("#/components/schemas/{b}") } } } });
        }
        let entry = paths.entry(path.to_string()).or_insert_with(|| json!({}));
        entry[*method] = op;
    }
    json!({
        "openapi": "3.1.0",
        "info": { "title": "Custos admin REST API", "version": appliance::VERSION },
        "paths": paths,
        "components": {
            "schemas": schemas(),
            "securitySchemes": { "bearer": { "type": "http", "scheme": "bearer" } }
        }
    })
}

pub async fn document() -> Json<Value> {
    Json(build())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use axum::body::Body;
    use axum::http::{Request, StatusCode};
    use tower::ServiceExt;

    use crate::state::{AppState, Sessions};

    /// Every documented operation is routed: without a session it is refused
    /// for authentication or its body, never "no such route" or "method not
    /// allowed". No socket: the router is called directly.
    #[tokio::test]
    async fn every_documented_operation_is_routed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Arc::new(appliance::Store::open(dir.path()).expect("store"));
        let identities = store
            .ensure_identities("custos-test", &["custos-test".into()])
            .expect("identities");
        let state = Arc::new(AppState {
            store,
            sessions: Sessions::default(),
            web_sessions: Default::default(),
            identities,
            mode: appliance::model::SecurityMode::Compatible,
            ports: Default::default(),
            host_name: "custos-test".into(),
        });
        let app = crate::api::router(state);
        for (method, path, ..) in super::OPERATIONS {
            let uri = path.replace('{', "x").replace('}', "");
            let req = Request::builder()
                .method(method.to_uppercase().as_str())
                .uri(&uri)
                .header("content-type", "application/json")
                .body(Body::from("{}"))
                .expect("request");
            let status = app.clone().oneshot(req).await.expect("response").status();
            assert!(
                status != StatusCode::NOT_FOUND && status != StatusCode::METHOD_NOT_ALLOWED,
                "{method} {path} is documented but answers {status}"
            );
        }
        let doc = super::build();
        assert_eq!(doc["openapi"], "3.1.0");
    }
}
