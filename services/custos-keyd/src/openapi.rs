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
        "/api/v1/snmp",
        "The SNMP agent's settings (§13): enabled, access list, sysContact, sysLocation; never the community string, only community_is_default",
        "System Administrator",
        None,
    ),
    (
        "put",
        "/api/v1/snmp",
        "Change the SNMP agent's settings; each field given replaces the stored one (send the community only to change it)",
        "System Administrator",
        Some("SnmpUpdate"),
    ),
    (
        "get",
        "/api/v1/wrapper-key",
        "Whether a wrapper key exists, its id, M of N and custodians (§12); never the key",
        "System Administrator",
        None,
    ),
    (
        "post",
        "/api/v1/wrapper-key",
        "Create the wrapper key; {\"replace\": true} replaces an existing one",
        "System Administrator",
        Some("WrapperKeyCreate"),
    ),
    (
        "post",
        "/api/v1/wrapper-key/export",
        "Split the wrapper key into M-of-N shares, one per custodian (System Administrators, not admin)",
        "System Administrator",
        Some("WrapperKeyExport"),
    ),
    (
        "post",
        "/api/v1/wrapper-key/import",
        "Rebuild the wrapper key from at least M shares",
        "System Administrator",
        Some("WrapperKeyImport"),
    ),
    (
        "get",
        "/api/v1/wrapper-key/share",
        "Your own wrapper-key share, if you are a custodian (audited)",
        "signed in (custodians)",
        None,
    ),
    (
        "post",
        "/api/v1/backups",
        "Make a system-level backup now; answers the file backup_config_<fqdn>_yyyy_mm_dd_hhmm.tar",
        "System Administrator",
        None,
    ),
    (
        "post",
        "/api/v1/backups/restore",
        "Restore a backup file (the request body, application/x-tar); ?include_users=true replaces the administrators too; ends all sessions and restarts the service",
        "System Administrator",
        None,
    ),
    (
        "get",
        "/api/v1/backups/automatic",
        "The automatic backup (§12): schedule (24-hour time in UTC, English weekday), SCP target, pinned host-key fingerprint, next run",
        "System Administrator",
        None,
    ),
    (
        "put",
        "/api/v1/backups/automatic",
        "Set the schedule and/or the SCP target (a part left out stays as it is); forget_host_key unpins the target's host key after a deliberate change",
        "System Administrator",
        Some("AutomaticBackupSet"),
    ),
    (
        "delete",
        "/api/v1/backups/automatic",
        "Remove Schedule and Settings: the schedule, the target and its pinned host key (the appliance's SSH key stays)",
        "System Administrator",
        None,
    ),
    (
        "get",
        "/api/v1/backups/ssh-public-key",
        "The appliance's SSH public key (text/plain, one authorized_keys line) for the target's ~/.ssh/authorized_keys",
        "System Administrator",
        None,
    ),
    (
        "post",
        "/api/v1/backups/now",
        "Backup Now: custos-backupd pushes a backup to the target within a few seconds (202)",
        "System Administrator",
        None,
    ),
    (
        "get",
        "/api/v1/backups/history",
        "The automatic backup's pushes, newest first (time, file, size, result, error, retry); ?limit=1..1000, default 50",
        "System Administrator",
        None,
    ),
    (
        "get",
        "/api/v1/email/smtp",
        "The SMTP server of email notifications (§14), never its password (password_set says whether one is stored), or {\"configured\": false, \"status\": \"SMTP server not set\"}",
        "System Administrator",
        None,
    ),
    (
        "put",
        "/api/v1/email/smtp",
        "Set the SMTP server: host, port, none/starttls/tls, optional user name and password (left out: kept), sender, optional own CA certificate",
        "System Administrator",
        Some("SmtpSet"),
    ),
    (
        "post",
        "/api/v1/email/test",
        "Send test mail now through the stored SMTP server; 502 with the server's answer when it is not accepted",
        "System Administrator",
        Some("TestMail"),
    ),
    (
        "get",
        "/api/v1/email/groups",
        "Email notification groups with their delivery counts (sent, pending, failed, last error)",
        "System Administrator",
        None,
    ),
    (
        "post",
        "/api/v1/email/groups",
        "Add a notification group: Generic (log messages at or above ERROR or FATAL matching a filter), Key Expiration or Certificate Expiration (90, 60, 15 days before and 7 after), system-wide or for one domain",
        "System Administrator",
        Some("EmailGroupCreate"),
    ),
    (
        "get",
        "/api/v1/email/groups/{name}",
        "Show a notification group",
        "System Administrator",
        None,
    ),
    (
        "patch",
        "/api/v1/email/groups/{name}",
        "Change a notification group, enable or disable it (disabling drops its waiting notices)",
        "System Administrator",
        Some("EmailGroupUpdate"),
    ),
    (
        "delete",
        "/api/v1/email/groups/{name}",
        "Delete a notification group",
        "System Administrator",
        None,
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
        "WrapperKeyCreate": object(&[], &[("replace", s("boolean"))]),
        "WrapperKeyExport": object(&["minimum_custodians", "total_custodians", "custodians"], &[
            ("minimum_custodians", json!({"type": "integer", "minimum": 1, "maximum": 16})),
            ("total_custodians", json!({"type": "integer", "minimum": 1, "maximum": 16})),
            ("custodians", json!({"type": "array", "items": s("string")}))]),
        "WrapperKeyImport": object(&["shares"], &[("shares", json!({"type": "array", "items": s("string")}))]),
        "AutomaticBackupSet": object(&[], &[
            ("schedule", object(&["frequency", "time"], &[
                ("frequency", enumeration(&["daily", "weekly"])),
                ("time", json!({"type": "string", "pattern": "^[0-9]{1,2}:[0-5][0-9]$", "description": "24-hour HH:MM in UTC"})),
                ("weekday", json!({"type": "string", "description": "weekly only: monday … sunday (English)"}))])),
            ("target", object(&["host", "directory", "user"], &[
                ("host", json!({"type": "string", "description": "IPv4 or IPv6 address or host name"})),
                ("port", json!({"type": "integer", "minimum": 1, "maximum": 65535, "default": 22})),
                ("directory", json!({"type": "string", "description": "absolute path, no quotes"})),
                ("user", json!({"type": "string", "maxLength": 32}))])),
            ("forget_host_key", s("boolean"))]),
        "LicenceInstall": object(&["licence"], &[("licence", json!({"type": "string",
            "description": "the licence file's text, -----BEGIN CUSTOS LICENSE----- to -----END CUSTOS LICENSE SIGNATURE-----"}))]),
        "SnmpUpdate": object(&[], &[
            ("enabled", s("boolean")),
            ("community", json!({"type": "string", "minLength": 1, "maxLength": 64,
                "description": "printable ASCII without spaces; never returned by GET"})),
            ("acl", json!({"type": "array", "maxItems": 256, "items": {"type": "string",
                "description": "an IPv4 address whose fourth octet may be *, e.g. 10.1.2.*; host names are refused"}})),
            ("sys_contact", json!({"type": "string", "maxLength": 256})),
            ("sys_location", json!({"type": "string", "maxLength": 256}))]),
        "SmtpSet": object(&["host", "sender"], &[
            ("host", json!({"type": "string", "description": "host name or IP address"})),
            ("port", json!({"type": "integer", "minimum": 1, "maximum": 65535, "description": "default 25, 587 or 465 by security"})),
            ("security", json!({"type": "string", "enum": ["none", "starttls", "tls"], "default": "starttls"})),
            ("username", s("string")),
            ("password", json!({"type": "string", "description": "left out: the stored one is kept; never returned"})),
            ("sender", json!({"type": "string", "description": "the From address"})),
            ("ca_certificate", json!({"type": "string", "description": "PEM root certificate trusted for this server besides the system's"}))]),
        "TestMail": object(&["to"], &[("to", json!({"type": "string", "description": "an email address"}))]),
        "EmailGroupCreate": object(&["name", "recipients"], &[
            ("name", json!({"type": "string", "maxLength": 64})),
            ("recipients", json!({"type": "string", "description": "comma separated email addresses, at most 50"})),
            ("subject", json!({"type": "string", "maxLength": 200})),
            ("type", json!({"type": "string", "enum": ["generic", "key_expiration", "certificate_expiration"], "default": "generic"})),
            ("threshold", json!({"type": "string", "enum": ["ERROR", "FATAL"], "default": "ERROR"})),
            ("message_contains", json!({"type": "string", "maxLength": 256, "description": "empty: every message"})),
            ("enabled", s("boolean")),
            ("domain", json!({"type": "string", "description": "left out: system-wide"}))]),
        "EmailGroupUpdate": object(&[], &[
            ("recipients", s("string")), ("subject", s("string")),
            ("type", enumeration(&["generic", "key_expiration", "certificate_expiration"])),
            ("threshold", enumeration(&["ERROR", "FATAL"])),
            ("message_contains", s("string")), ("enabled", s("boolean")),
            ("domain", json!({"type": "string", "description": "empty: system-wide"}))]),
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
            guard: Default::default(),
            restart: Default::default(),
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
