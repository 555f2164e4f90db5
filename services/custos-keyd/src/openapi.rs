//! The OpenAPI 3.1 document of the admin REST API, served at
//! `/api/openapi.json`. A test checks that every operation listed here is
//! routed.

use appliance::store::limits;
use appliance::{model, password, wrapper};
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
        "Version, security mode, CA fingerprints, how the master key is kept (`tpm`: sealed to the TPM, `disk`: unsealed on disk), ports",
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
        "Install a vendor-signed licence file, replacing the installed one; refused when its limits are below what is in use. The body is at most 64 KiB (413 otherwise, before it is read), and only a System Administrator with write access may send it (403 before the body is read)",
        "System Administrator",
        Some("LicenceInstall"),
    ),
    (
        "get",
        "/api/v1/ha/nodes",
        "The nodes of the HA group (§11), the primary (role primary, once it has a failover) and its failovers: name, role, whether registered and configured, the node certificate's fingerprint",
        "System Administrator",
        None,
    ),
    (
        "post",
        "/api/v1/ha/nodes",
        "High Availability → Add: a failover by the host name its `setinfo show` prints (case-sensitive, a fully qualified domain name, not this appliance's own)",
        "System Administrator",
        Some("HaNodeAdd"),
    ),
    (
        "delete",
        "/api/v1/ha/nodes/{name}",
        "High Availability → Delete: the node leaves the group; its certificate no longer opens the node-to-node channels",
        "System Administrator",
        None,
    ),
    (
        "post",
        "/api/v1/ha/nodes/{name}/registration",
        "A failover registers with the primary (its convert2failover): the node certificate signed from its CSR by the CA of the security mode in force, and that CA with its fingerprint to compare with the primary's dashboard. Only a node added first may register",
        "System Administrator",
        Some("HaRegistration"),
    ),
    (
        "post",
        "/api/v1/ha/nodes/{name}/replication",
        "High Availability → Config Replication (on the primary): its PostgreSQL made and its store moved there when needed, then the registered failover told over the HA control port to replace its store by a base backup of the primary's and stream from it. Answers the node when the failover replicates",
        "System Administrator",
        None,
    ),
    (
        "get",
        "/api/v1/ha/replication-mode",
        "The group's replication mode: asynchronous (the default) or synchronous",
        "System Administrator",
        None,
    ),
    (
        "put",
        "/api/v1/ha/replication-mode",
        "Sets the replication mode. Asynchronous: a change is acknowledged once durable on the primary and reaches the failovers within moments; a failover made primary after a crash may lack the last ones. Synchronous: a change is acknowledged only once a failover has it too, so none is lost when the primary dies, but while no failover is reachable the primary waits and acknowledges no change",
        "System Administrator",
        Some("HaReplicationMode"),
    ),
    (
        "post",
        "/api/v1/ha/notify-hosts",
        "High Availability → Notify All Hosts: every key answer from now on names the failovers that replicate (address and key port), and custos-agent keeps the first as its failover. Refused while no failover replicates",
        "System Administrator",
        None,
    ),
    (
        "post",
        "/api/v1/ha/promote",
        "On a failover, what convert2primary does (disaster recovery): it becomes the group's primary with the data of its last synchronisation and takes writes from then on; the former primary, when it comes back, finds it was replaced, refuses every write (fenced) and rejoins through Config Replication here. Refused on anything but a failover",
        "System Administrator",
        None,
    ),
    (
        "post",
        "/api/v1/ha/join",
        "On a standalone appliance, what convert2failover does: reach the primary, which must present the CA of the given fingerprint (checked before anything is sent), sign in there, register, receive the group's key over the HA control port, keep it, and restart; the primary's Config Replication then makes this appliance its failover",
        "System Administrator",
        Some("HaJoin"),
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
        "Create the wrapper key; {\"replace\": true} replaces an existing one, and once it was exported needs \"shares\": at least M of its shares (a quorum)",
        "System Administrator",
        Some("WrapperKeyCreate"),
    ),
    (
        "post",
        "/api/v1/wrapper-key/export",
        "Split the wrapper key into M-of-N shares (M at least 2; 2 of 3 recommended), one per custodian (distinct System Administrators, not admin); exporting again needs \"shares\": at least M shares of the current key",
        "System Administrator",
        Some("WrapperKeyExport"),
    ),
    (
        "post",
        "/api/v1/wrapper-key/import",
        "Rebuild the wrapper key from at least M shares; putting it in place of another key that was exported needs \"current_shares\": a quorum of that key's shares",
        "System Administrator",
        Some("WrapperKeyImport"),
    ),
    (
        "get",
        "/api/v1/wrapper-key/share",
        "Your own wrapper-key share, if you are a custodian and have not yet confirmed you stored it (audited)",
        "signed in (custodians)",
        None,
    ),
    (
        "post",
        "/api/v1/wrapper-key/share/stored",
        "Confirm you stored your own wrapper-key share (after seeing it): the appliance deletes its copy",
        "signed in (custodians)",
        None,
    ),
    (
        "post",
        "/api/v1/backups",
        "Make a system-level backup now; answers the file backup_config_<fqdn>_yyyy_mm_dd_hhmm.tar (a WARN audit entry names who downloaded it)",
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

/// Request bodies that may be left out (`POST /api/v1/wrapper-key`
/// without a body creates a key where none exists).
const OPTIONAL_BODIES: &[&str] = &["WrapperKeyCreate"];

/// One line of free text (`model::check_text`): at most `max` characters,
/// no control characters (Unicode category Cc).
fn text(max: usize) -> Value {
    json!({ "type": "string", "maxLength": max, "pattern": NO_CONTROL })
}

const NO_CONTROL: &str = "^[^\\u0000-\\u001f\\u007f-\\u009f]*$";

/// A name (`model::check_identifier`): letters, digits, `.`, `_`, `-` (and
/// `@` for logins), starting with a letter or digit.
fn identifier(max: usize, allow_at: bool) -> Value {
    let pattern = if allow_at {
        "^[A-Za-z0-9][A-Za-z0-9._@-]*$"
    } else {
        "^[A-Za-z0-9][A-Za-z0-9._-]*$"
    };
    json!({ "type": "string", "minLength": 1, "maxLength": max, "pattern": pattern })
}

/// `model::check_host_name`: dot-separated labels of 1-63 letters, digits
/// or `-`, not starting or ending with `-`.
fn host_name() -> Value {
    json!({ "type": "string", "minLength": 1, "maxLength": model::HOST_NAME_MAX,
        "pattern": "^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$" })
}

fn integer(min: i64, max: i64) -> Value {
    json!({ "type": "integer", "minimum": min, "maximum": max })
}

/// A new password (`password::check_policy`).
fn new_password() -> Value {
    json!({ "type": "string", "minLength": password::MIN_LEN, "maxLength": password::MAX_LEN,
        "description": "at least one upper-case and one lower-case letter, a digit and a special character; not the login" })
}

fn date_time(what: &str) -> Value {
    json!({ "type": "string", "minLength": 1,
        "description": format!("{what}: YYYY-MM-DD, YYYY-MM-DD HH:MM (UTC) or RFC 3339; in the future") })
}

fn email_address(what: &str) -> Value {
    json!({ "type": "string", "minLength": 1, "maxLength": limits::ADDRESS_MAX, "description": what })
}

fn strs<T: Copy>(all: &[T], f: impl Fn(T) -> &'static str) -> Vec<&'static str> {
    all.iter().map(|v| f(*v)).collect()
}

fn schemas() -> Value {
    use appliance::model::{
        Algorithm, CreationMethod, DomainKind, KeyType, SecurityMode, UserType,
    };
    use appliance::store::{NoticeType, SmtpSecurity, WEEKDAYS, weekday_name};
    let roles = strs(&model::Role::ALL, model::Role::as_str);
    let user_types = strs(
        &[UserType::System, UserType::Domain, UserType::Security],
        UserType::as_str,
    );
    let kinds = strs(
        &[DomainKind::Global, DomainKind::Restricted],
        DomainKind::as_str,
    );
    let algorithms = strs(
        &[Algorithm::Aes256, Algorithm::Aes128, Algorithm::Aria256],
        Algorithm::as_str,
    );
    let key_types = strs(
        &[KeyType::StoredOnServer, KeyType::CachedOnHost],
        KeyType::as_str,
    );
    let methods = strs(
        &[CreationMethod::Generate, CreationMethod::Manual],
        CreationMethod::as_str,
    );
    let modes = strs(
        &[SecurityMode::Compatible, SecurityMode::SuiteB],
        SecurityMode::as_str,
    );
    let security = strs(&SmtpSecurity::ALL, SmtpSecurity::as_str);
    let notices = strs(&NoticeType::ALL, NoticeType::as_str);
    let thresholds = ["ERROR", "FATAL"];
    let weekdays = strs(&WEEKDAYS, weekday_name);
    let refresh = integer(model::REFRESH_MIN, model::REFRESH_MAX);
    let custodians = i64::from(wrapper::MAX_CUSTODIANS);
    let min_custodians = i64::from(wrapper::MIN_CUSTODIANS);
    let quorum = json!({"type": "array", "maxItems": custodians, "items": {"type": "string", "minLength": 1},
        "description": "once the current key was exported: at least M of its shares"});
    json!({
        "Login": object(&["login", "password"], &[
            ("login", identifier(model::LOGIN_MAX, true)),
            ("password", json!({"type": "string", "minLength": 1}))]),
        "PasswordChange": object(&["old", "new"], &[
            ("old", json!({"type": "string", "minLength": 1})),
            ("new", new_password())]),
        "AdministratorCreate": object(&["login", "password"], &[
            ("login", identifier(model::LOGIN_MAX, true)),
            ("description", text(model::DESCRIPTION_MAX)),
            ("rsa_user_id", text(model::RSA_USER_ID_MAX)),
            ("password", new_password()),
            ("confirm_password", json!({"type": "string", "description": "must equal password"})),
            ("user_type", enumeration(&user_types)),
            ("restrict_to_domain", json!({"type": "string", "description": "an existing domain; empty: none"})),
            ("read_only", s("boolean"))]),
        "AdministratorUpdate": object(&[], &[
            ("description", text(model::DESCRIPTION_MAX)),
            ("rsa_user_id", json!({"type": "string", "maxLength": model::RSA_USER_ID_MAX,
                "pattern": NO_CONTROL, "description": "empty: removed"})),
            ("read_only", s("boolean")),
            ("password", new_password()),
            ("unlock", s("boolean"))]),
        "DomainCreate": object(&["name"], &[
            ("name", identifier(model::DOMAIN_NAME_MAX, false)),
            ("kind", enumeration(&kinds)),
            ("organization", text(model::ORGANIZATION_MAX)),
            ("description", text(model::DESCRIPTION_MAX)),
            ("help_desk_information", text(model::HELP_DESK_MAX)),
            ("domain_administrator", json!({"type": "string", "description": "login of an existing Domain Administrator; empty: none"}))]),
        "MemberAdd": object(&["login"], &[
            ("login", identifier(model::LOGIN_MAX, true)),
            ("roles", json!({"type": "array", "uniqueItems": true, "items": enumeration(&roles)}))]),
        "MemberUpdate": object(&[], &[
            ("roles", json!({"type": "array", "uniqueItems": true, "items": enumeration(&roles)})),
            ("enabled", s("boolean"))]),
        "KeyCreate": object(&["name"], &[
            ("name", identifier(model::KEY_NAME_MAX, false)),
            ("description", text(model::DESCRIPTION_MAX)),
            ("template", json!({"type": "string", "minLength": 1, "maxLength": model::TEMPLATE_MAX,
                "pattern": NO_CONTROL, "default": model::TEMPLATE_DEFAULT})),
            ("expiration_date", date_time("the key's expiry")),
            ("algorithm", enumeration(&algorithms)),
            ("key_type", enumeration(&key_types)),
            ("unique_to_host", s("boolean")),
            ("key_creation_method", enumeration(&methods)),
            ("key_material", json!({"type": "string", "description": "base64 of the key (16 bytes for AES128, else 32); manual input only"})),
            ("key_refresh_period", json!({"type": "integer", "minimum": model::REFRESH_MIN,
                "maximum": model::REFRESH_MAX, "description": "minutes"})),
            ("automatic_key_rotation", s("boolean")),
            ("key_version_life_span", json!({"type": "integer", "minimum": 1,
                "maximum": model::LIFE_SPAN_MAX_DAYS, "description": "days; required with automatic_key_rotation"}))]),
        "SecretSet": object(&[], &[
            ("creation_method", enumeration(&methods)),
            ("shared_secret", json!({"type": "string", "minLength": model::SHARED_SECRET_MIN,
                "maxLength": model::SHARED_SECRET_MAX,
                "description": "manual only: no spaces or control characters, no character twice in a row"})),
            ("valid_until", date_time("the secret's expiry")),
            ("require_hosts_first_added", json!({"type": "boolean", "default": true,
                "description": "On (the default): a host registers only after an administrator added it with registration allowed. Off: any host holding the shared secret registers itself."}))]),
        "HostAdd": object(&["host_name"], &[
            ("host_name", host_name()),
            ("registration_allowed", s("boolean"))]),
        "HostUpdate": object(&["registration_allowed"], &[("registration_allowed", s("boolean"))]),
        "PreferencesUpdate": object(&[], &[
            ("key_refresh_period", refresh),
            ("session_timeout", integer(1, limits::SESSION_TIMEOUT_MAX)),
            ("max_failed_logins", integer(1, limits::MAX_FAILED_LOGINS_MAX)),
            ("lockout_minutes", integer(1, limits::LOCKOUT_MINUTES_MAX)),
            ("security_mode", enumeration(&modes))]),
        "WrapperKeyCreate": object(&[], &[("replace", s("boolean")),
            ("shares", quorum.clone())]),
        "WrapperKeyExport": object(&["minimum_custodians", "total_custodians", "custodians"], &[
            ("minimum_custodians", json!({"type": "integer", "minimum": min_custodians, "maximum": custodians,
                "default": min_custodians, "description": "at most total_custodians; at least 2, so that no single administrator holds the wrapper key"})),
            ("total_custodians", json!({"type": "integer", "minimum": min_custodians, "maximum": custodians, "default": 3})),
            ("custodians", json!({"type": "array", "minItems": min_custodians, "maxItems": custodians,
                "uniqueItems": true, "items": identifier(model::LOGIN_MAX, true),
                "description": "logins of System Administrators (not admin), as many as total_custodians"})),
            ("shares", quorum.clone())]),
        "WrapperKeyImport": object(&["shares"], &[("shares", json!({"type": "array", "minItems": 1,
            "maxItems": custodians, "items": {"type": "string", "minLength": 1}})),
            ("current_shares", json!({"type": "array", "maxItems": custodians, "items": {"type": "string", "minLength": 1},
                "description": "to replace a different key that was exported: at least M of its shares"}))]),
        "AutomaticBackupSet": object(&[], &[
            ("schedule", object(&["frequency", "time"], &[
                ("frequency", enumeration(&["daily", "weekly"])),
                ("time", json!({"type": "string", "pattern": "^([01]?[0-9]|2[0-3]):[0-5][0-9]$",
                    "description": "24-hour HH:MM in UTC"})),
                ("weekday", json!({"type": "string", "enum": weekdays,
                    "description": "weekly only (English; three-letter forms and any case are read too)"}))])),
            ("target", object(&["host", "directory", "user"], &[
                ("host", json!({"type": "string", "minLength": 1, "description": "IPv4 or IPv6 address or host name"})),
                ("port", json!({"type": "integer", "minimum": 1, "maximum": 65535,
                    "default": appliance::store::DEFAULT_SSH_PORT})),
                ("directory", json!({"type": "string", "minLength": 1, "maxLength": limits::TARGET_DIRECTORY_MAX,
                    "pattern": "^/", "description": "absolute path, no quotes, no '..'"})),
                ("user", json!({"type": "string", "minLength": 1, "maxLength": limits::TARGET_USER_MAX,
                    "pattern": "^[A-Za-z0-9._-]+$"}))])),
            ("forget_host_key", s("boolean"))]),
        "LicenceInstall": object(&["licence"], &[("licence", json!({"type": "string", "minLength": 1,
            "description": "the licence file's text, -----BEGIN CUSTOS LICENSE----- to -----END CUSTOS LICENSE SIGNATURE-----"}))]),
        "SnmpUpdate": object(&[], &[
            ("enabled", s("boolean")),
            ("community", json!({"type": "string", "minLength": 1, "maxLength": limits::COMMUNITY_MAX,
                "pattern": "^[!-~]+$", "description": "printable ASCII without spaces; never returned by GET"})),
            ("acl", json!({"type": "array", "maxItems": limits::ACL_MAX, "items": {"type": "string", "minLength": 1,
                "description": "an IPv4 address whose fourth octet may be *, e.g. 10.1.2.*; host names are refused"}})),
            ("sys_contact", text(limits::SYS_TEXT_MAX)),
            ("sys_location", text(limits::SYS_TEXT_MAX))]),
        "SmtpSet": object(&["host", "sender"], &[
            ("host", json!({"type": "string", "minLength": 1, "maxLength": model::HOST_NAME_MAX,
                "description": "host name or IP address"})),
            ("port", json!({"type": "integer", "minimum": 1, "maximum": 65535, "description": "default 25, 587 or 465 by security"})),
            ("security", json!({"type": "string", "enum": security, "default": SmtpSecurity::Starttls.as_str()})),
            ("username", s("string")),
            ("password", json!({"type": "string", "description": "left out: the stored one is kept; never returned"})),
            ("sender", email_address("the From address")),
            ("ca_certificate", json!({"type": "string", "description": "PEM root certificate trusted for this server besides the system's"}))]),
        "TestMail": object(&["to"], &[("to", email_address("an email address"))]),
        "HaNodeAdd": object(&["name"], &[
            ("name", json!({"type": "string", "minLength": 1, "maxLength": 64,
                "description": "the failover's host name as its `setinfo show` prints it (case-sensitive FQDN)"})),
        ]),
        "HaRegistration": object(&["csr"], &[
            ("csr", json!({"type": "string", "minLength": 1,
                "description": "the node's certificate signing request (PEM); ECDSA P-384 in Suite B mode"})),
            ("ha_port", json!({"type": "integer", "minimum": 1, "maximum": 65535,
                "description": "the failover's HA control port (default 8080), reached at the address it registers from"})),
            ("keys_port", json!({"type": "integer", "minimum": 1, "maximum": 65535,
                "description": "the failover's key port in compatible mode (default 8444), told to hosts by Notify All Hosts"})),
            ("keys_ec_port", json!({"type": "integer", "minimum": 1, "maximum": 65535,
                "description": "the failover's key port in Suite B mode (default 8447)"})),
        ]),
        "HaReplicationMode": object(&["mode"], &[
            ("mode", json!({"type": "string", "enum": ["asynchronous", "synchronous"]})),
        ]),
        "HaJoin": object(&["primary", "ca_fingerprint", "login", "password"], &[
            ("primary", json!({"type": "string", "minLength": 1, "maxLength": 262,
                "description": "the primary's host name or address, optionally with :port (default 443)"})),
            ("ca_fingerprint", json!({"type": "string", "minLength": 64, "maxLength": 95,
                "description": "the SHA-256 fingerprint of the primary's CA, as its dashboard shows it"})),
            ("login", json!({"type": "string", "minLength": 1, "maxLength": 64,
                "description": "a System Administrator of the primary"})),
            ("password", json!({"type": "string", "minLength": 1, "maxLength": 256,
                "description": "that administrator's password; sent only to the pinned primary"})),
            ("ha_port", json!({"type": "integer", "minimum": 1, "maximum": 65535,
                "description": "the primary's HA control port (default 8080)"})),
        ]),
        "EmailGroupCreate": object(&["name", "recipients"], &[
            ("name", identifier(limits::GROUP_NAME_MAX, false)),
            ("recipients", json!({"type": "string", "minLength": 1,
                "description": format!("comma separated email addresses, at most {}", limits::MAX_RECIPIENTS)})),
            ("subject", text(limits::SUBJECT_MAX)),
            ("type", json!({"type": "string", "enum": notices, "default": NoticeType::Generic.as_str()})),
            ("threshold", json!({"type": "string", "enum": thresholds, "default": "ERROR"})),
            ("message_contains", json!({"type": "string", "maxLength": limits::FILTER_MAX,
                "pattern": NO_CONTROL, "description": "empty: every message"})),
            ("enabled", s("boolean")),
            ("domain", json!({"type": "string", "description": "an existing domain; left out or empty: system-wide"}))]),
        "EmailGroupUpdate": object(&[], &[
            ("recipients", json!({"type": "string", "minLength": 1,
                "description": format!("comma separated email addresses, at most {}", limits::MAX_RECIPIENTS)})),
            ("subject", text(limits::SUBJECT_MAX)),
            ("type", enumeration(&notices)),
            ("threshold", enumeration(&thresholds)),
            ("message_contains", json!({"type": "string", "maxLength": limits::FILTER_MAX, "pattern": NO_CONTROL})),
            ("enabled", s("boolean")),
            ("domain", json!({"type": "string", "description": "an existing domain; empty: system-wide"}))]),
        "Error": {
            "type": "object",
            "required": ["error", "message"],
            "properties": {
                "error": {"type": "string", "description": "invalid, not_found, conflict, forbidden, locked, licence, licence_required, bad_credentials, unauthenticated, password_change_required, throttled, smtp, failover (a change asked of an HA failover: make it on the primary the message names), …"},
                "message": {"type": "string", "description": "for invalid and conflict: the field, a colon and the rule"},
                "field": {"type": "string", "description": "the path of the refused field (body for the body itself)"}
            }
        },
    })
}

/// The query parameters of an operation: (name, schema, description).
fn query_parameters(method: &str, path: &str) -> Vec<Value> {
    let q = |name: &str, schema: Value, description: &str| json!({ "name": name, "in": "query", "required": false, "schema": schema, "description": description });
    match (method, path) {
        ("get", "/api/v1/domains/{domain}/registration-secret") => vec![q(
            "show",
            enumeration(&["yes", "no", "true", "false"]),
            "yes: the answer includes the secret itself",
        )],
        ("get", "/api/v1/audit") => vec![
            q(
                "severity",
                enumeration(&["INFO", "WARN", "ERROR", "FATAL"]),
                "at or above",
            ),
            q("source", s("string"), "empty: any"),
            q("text", s("string"), "contained in the message; empty: any"),
            q("domain", s("string"), "empty: any"),
            q("limit", integer(1, limits::AUDIT_PAGE_MAX), "default 100"),
            q(
                "offset",
                json!({"type": "integer", "minimum": 0}),
                "default 0",
            ),
        ],
        ("get", "/api/v1/backups/history") => {
            vec![q("limit", integer(1, limits::HISTORY_MAX), "default 50")]
        }
        ("post", "/api/v1/backups/restore") => vec![q(
            "include_users",
            s("boolean"),
            "true: the administrators are restored too",
        )],
        _ => vec![],
    }
}

/// The success answer of an operation: status and its content.
fn success(method: &str, path: &str) -> (&'static str, Value) {
    let json_of = |schema: Value| json!({ "application/json": { "schema": schema } });
    match (method, path) {
        ("post", "/api/v1/logout") | ("delete", _) => ("204", Value::Null),
        ("post", "/api/v1/administrators")
        | ("post", "/api/v1/domains")
        | ("post", "/api/v1/domains/{domain}/administrators")
        | ("post", "/api/v1/domains/{domain}/keys")
        | ("post", "/api/v1/domains/{domain}/hosts")
        | ("post", "/api/v1/email/groups")
        | ("post", "/api/v1/ha/nodes")
        | ("post", "/api/v1/wrapper-key") => ("201", json_of(s("object"))),
        ("post", "/api/v1/backups/now") => ("202", json_of(s("object"))),
        ("post", "/api/v1/backups") => (
            "200",
            json!({ "application/x-tar": { "schema": { "type": "string", "format": "binary" } } }),
        ),
        ("get", "/api/v1/backups/ssh-public-key") => {
            ("200", json!({ "text/plain": { "schema": s("string") } }))
        }
        ("get", "/api/v1/administrators")
        | ("get", "/api/v1/domains")
        | ("get", "/api/v1/domains/{domain}/administrators")
        | ("get", "/api/v1/domains/{domain}/keys")
        | ("get", "/api/v1/domains/{domain}/hosts")
        | ("get", "/api/v1/email/groups")
        | ("get", "/api/v1/ha/nodes")
        | ("get", "/api/v1/backups/history") => ("200", json_of(s("array"))),
        _ => ("200", json_of(s("object"))),
    }
}

/// The refusals an operation can answer, each with the [`Error`] body.
fn refusals(method: &str, path: &str, body: Option<&str>) -> Vec<(&'static str, &'static str)> {
    let mut out = vec![];
    let takes_input = body.is_some()
        || path.contains('{')
        || !query_parameters(method, path).is_empty()
        || method != "get";
    if takes_input {
        out.push((
            "400",
            "The body, a parameter or a field breaks a rule; `field` names it",
        ));
    }
    out.push((
        "401",
        if path == "/api/v1/login" {
            "Wrong login or password"
        } else {
            "No valid session: sign in first"
        },
    ));
    out.push(("403", "Not permitted: the administrator's type, roles or read-only flag, a locked account, a required password change or no licence"));
    if path != "/api/v1/login" && path != "/api/v1/logout" {
        out.push((
            "404",
            "The domain, key, host, administrator, group or failover named does not exist",
        ));
    }
    if method != "get" && path != "/api/v1/login" && path != "/api/v1/logout" {
        out.push(("409", "Conflicts with what is stored (a name in use, a limit of the licence, a domain still holding keys), or the appliance is an HA failover, which takes no changes (`failover`)"));
    }
    if body.is_some() || path == "/api/v1/backups/restore" {
        out.push(("413", "The body is too large"));
        out.push(("415", "The body is not sent as application/json"));
    }
    if path == "/api/v1/login" || path == "/api/v1/password" {
        out.push(("429", "Too many password checks at once or from this address; retry after Retry-After seconds"));
    }
    if path == "/api/v1/email/test" {
        out.push((
            "502",
            "The SMTP server did not accept the test mail; the message says why",
        ));
    }
    out
}

pub fn build() -> Value {
    let mut paths = Map::new();
    for (method, path, summary, who, body) in OPERATIONS {
        let mut params: Vec<Value> = path
            .split('/')
            .filter_map(|seg| seg.strip_prefix('{')?.strip_suffix('}'))
            .map(|p| json!({ "name": p, "in": "path", "required": true, "schema": {"type": "string", "minLength": 1} }))
            .collect();
        params.extend(query_parameters(method, path));
        let (status, content) = success(method, path);
        let mut ok = json!({ "description": "Done" });
        if !content.is_null() {
            ok["content"] = content;
        }
        let mut responses = Map::new();
        responses.insert(status.into(), ok);
        for (code, why) in refusals(method, path, *body) {
            responses.insert(
                code.into(),
                json!({ "description": why, "content": { "application/json": {
                    "schema": { "$ref": "#/components/schemas/Error" } } } }),
            );
        }
        let mut op = json!({
            "operationId": operation_id(method, path),
            "summary": summary,
            "description": format!("Who may call it: {who}."),
            "parameters": params,
            "responses": responses,
        });
        if *path != "/api/v1/login" {
            op["security"] = json!([{ "bearer": [] }]);
        }
        if let Some(b) = body {
            op["requestBody"] = json!({ "required": !OPTIONAL_BODIES.contains(b),
                "content": { "application/json": {
                "schema": { "$ref": format!("#/components/schemas/{b}") } } } });
        } else if *path == "/api/v1/backups/restore" {
            // Any Content-Type is read: the body is the backup file's bytes.
            op["requestBody"] = json!({ "required": true, "content": { "application/octet-stream": {
                "schema": { "type": "string", "format": "binary",
                    "description": "the backup file (backup_config_….tar)" } } } });
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

/// A unique name for generated clients: the method and the path's words,
/// e.g. `get_domains_domain_keys_name`.
fn operation_id(method: &str, path: &str) -> String {
    let words: Vec<&str> = path
        .trim_start_matches("/api/v1/")
        .split(['/', '-'])
        .map(|w| w.trim_start_matches('{').trim_end_matches('}'))
        .collect();
    format!("{method}_{}", words.join("_"))
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
            nodes: Default::default(),
            pg: appliance::pgnode::PgNode {
                bin: "/nonexistent".into(),
                dir: dir.path().join("pg"),
                run: dir.path().join("pg-run"),
                port: appliance::pgnode::REPLICATION_PORT,
                listen: "127.0.0.1".into(),
            },
            ha_port: 8080.into(),
            host_failovers: Default::default(),
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
