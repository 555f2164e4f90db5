//! The web console end to end in a real Chromium: a fresh appliance taken
//! through the first sign-in, the licence, spec §5's recommended setup and a
//! protected host fetching its key, and the refusals an operator must see.
//! Every page visited is saved under `target/screenshots/`.

use tests::browser::Browser;
use tests::{
    ADMIN_PW, Appliance, DOM_PW, DOMAIN, SEC_PW, SHARED_SECRET, SYS_PW, console_client,
    dev_licence, fetch_key, register_host,
};

const SECURITY_ROLES: [&str; 5] = ["audit", "key", "policy", "host", "challenge_response"];

fn sign_in(b: &Browser, login: &str, password: &str) {
    b.open("/login");
    b.fill("login", login);
    b.fill("password", password);
    b.press("Log In");
}

/// Signs in for the first time and completes the forced password change.
fn first_sign_in(b: &mut Browser, login: &str, first: &str, new: &str) {
    sign_in(b, login, first);
    assert_eq!(
        b.path(),
        "/password",
        "a first sign-in must force a new password: {}",
        b.body()
    );
    b.fill("old", first);
    b.fill("new", new);
    b.fill("confirm", new);
    b.press("Change Password");
    assert_eq!(b.path(), "/dashboard", "{}", b.body());
}

fn sign_out(b: &Browser) {
    b.press("Log Out");
    assert_eq!(b.path(), "/login", "{}", b.body());
}

fn menu(b: &Browser) -> Vec<String> {
    b.texts("nav.menu a")
}

/// The message shown next to a field, if any.
fn field_error(b: &Browser, field: &str) -> Option<String> {
    b.text(&format!("#{field}-error"))
}

fn add_admin(b: &Browser, login: &str, password: &str, user_type: &str, read_only: bool) {
    b.open("/administrators/add");
    b.fill("login", login);
    b.fill("description", &format!("{login} of the recommended setup"));
    b.fill("password", password);
    b.fill("confirm_password", password);
    b.choose("user_type", user_type);
    if read_only {
        b.click("#read_only");
    }
    b.press("OK");
    assert_eq!(b.path(), "/administrators", "{}", b.body());
    assert!(b.body().contains(&format!("Administrator {login} added")));
}

fn switch_to(b: &Browser, domain: &str) {
    b.open("/domains/switch");
    b.click(&format!("button[aria-label='Switch to {domain}']"));
    assert!(
        b.body().contains(&format!("Domain: {domain}")),
        "{}",
        b.body()
    );
}

/// A request made outside the browser with a console session's cookie, as a
/// forged form would be; redirects are not followed.
fn console_post(app: &Appliance, cookie: &str, path: &str, form: &[(&str, &str)]) -> (u16, String) {
    let client = console_client(app);
    let body = form
        .iter()
        .map(|(k, v)| format!("{k}={}", v.replace(' ', "+")))
        .collect::<Vec<_>>()
        .join("&");
    let resp = client
        .post(format!("{}{path}", app.url("web")))
        .header("Cookie", format!("__Host-custos_session={cookie}"))
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body(body)
        .send()
        .expect("POST");
    let status = resp.status().as_u16();
    (status, resp.text().unwrap_or_default())
}

fn console_get(app: &Appliance, cookie: &str, path: &str) -> (u16, String, String) {
    let client = console_client(app);
    let resp = client
        .get(format!("{}{path}", app.url("web")))
        .header("Cookie", format!("__Host-custos_session={cookie}"))
        .send()
        .expect("GET");
    let status = resp.status().as_u16();
    let ctype = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    (status, ctype, resp.text().unwrap_or_default())
}

#[test]
fn operator_workflow_from_a_fresh_appliance_to_a_host_fetching_its_key() {
    let app = Appliance::start();
    let mut b = Browser::start(app.url("web"), "workflow");

    // First sign-in: a wrong password is refused on the page, then the
    // built-in admin must change its password before anything else.
    b.open("/");
    assert_eq!(b.path(), "/login");
    b.screenshot("login");
    sign_in(&b, "admin", "wrong-password");
    assert!(
        b.body().contains("login or password is wrong"),
        "{}",
        b.body()
    );
    sign_in(&b, "admin", "admin123");
    assert_eq!(b.path(), "/password");
    b.open("/administrators");
    assert_eq!(
        b.path(),
        "/password",
        "nothing is reachable before the change"
    );
    b.fill("old", "admin123");
    b.fill("new", "weakpass");
    b.fill("confirm", "weakpass");
    b.press("Change Password");
    assert!(
        field_error(&b, "new").is_some(),
        "the password rule is shown next to New Password"
    );
    b.screenshot("password-forced");
    b.fill("old", "admin123");
    b.fill("new", ADMIN_PW);
    b.fill("confirm", ADMIN_PW);
    b.press("Change Password");
    assert_eq!(b.path(), "/dashboard");

    // No licence: only Dashboard and System.
    assert!(b.body().contains("License not found"));
    assert_eq!(menu(&b), ["Dashboard", "System"]);
    b.screenshot("dashboard-no-licence");
    b.open("/administrators");
    assert_eq!(b.text("h1").as_deref(), Some("License not found"));

    // Licence upload.
    let lic = tempfile::NamedTempFile::new().expect("temp file");
    std::fs::write(lic.path(), dev_licence(10, 5, "2099-12-31")).expect("licence file");
    b.open("/system/license");
    b.attach("licence_file", lic.path());
    b.press("Upload");
    assert!(b.body().contains("installed"), "{}", b.body());
    assert!(b.body().contains("0 of 10 registered"));
    b.screenshot("licence");
    b.open("/dashboard");
    assert_eq!(
        menu(&b),
        [
            "Dashboard",
            "Domains",
            "Administrators",
            "Reports",
            "Log",
            "System"
        ]
    );
    assert!(!b.body().contains("License not found"));
    b.screenshot("dashboard");

    // The three administrators; a refused form keeps what was typed and says
    // what is wrong next to the field.
    b.open("/administrators/add");
    b.screenshot("administrator-add");
    b.fill("login", "SystemAdministrator");
    b.fill("password", "Sys!Tmp0pw");
    b.fill("confirm_password", "Different!1");
    b.press("OK");
    assert!(
        field_error(&b, "confirm_password").is_some(),
        "{}",
        b.body()
    );
    assert_eq!(
        b.attr("#login", "value").as_deref(),
        Some("SystemAdministrator")
    );
    b.screenshot("administrator-add-error");
    add_admin(&b, "SystemAdministrator", "Sys!Tmp0pw", "system", false);
    add_admin(&b, "DomainAdministrator", "Dom!Tmp0pw", "domain", false);
    add_admin(&b, "SecurityAdministrator", "Sec!Tmp0pw", "security", false);
    b.screenshot("administrators");
    sign_out(&b);

    // The System Administrator adds RecorderDomain and assigns its first
    // Domain Administrator.
    first_sign_in(&mut b, "SystemAdministrator", "Sys!Tmp0pw", SYS_PW);
    b.open("/domains/add");
    b.press("OK");
    assert!(
        field_error(&b, "name").is_some(),
        "an empty name is refused next to Name"
    );
    b.fill("name", DOMAIN);
    b.fill("description", "Call recordings");
    b.choose("domain_administrator", "DomainAdministrator");
    b.screenshot("domain-add");
    b.press("OK");
    assert_eq!(b.path(), "/domains", "{}", b.body());
    assert!(b.body().contains("DomainAdministrator"));
    b.screenshot("domains");
    sign_out(&b);

    // The Domain Administrator gives the Security Administrator every role.
    first_sign_in(&mut b, "DomainAdministrator", "Dom!Tmp0pw", DOM_PW);
    assert!(!menu(&b).contains(&"System".to_owned()));
    b.screenshot("switch-domains-before");
    switch_to(&b, DOMAIN);
    b.open("/domain/administrators");
    b.choose("login", "SecurityAdministrator");
    for r in SECURITY_ROLES {
        b.click(&format!("#role-{r}"));
    }
    b.press("Add");
    assert!(
        b.body().contains("SecurityAdministrator added"),
        "{}",
        b.body()
    );
    assert!(
        b.body()
            .contains("Audit, Key, Policy, Host, Challenge & Response")
    );
    b.screenshot("domain-administrators");
    sign_out(&b);

    // The Security Administrator adds the key `recorder` and the shared secret.
    first_sign_in(&mut b, "SecurityAdministrator", "Sec!Tmp0pw", SEC_PW);
    switch_to(&b, DOMAIN);
    assert_eq!(
        menu(&b),
        ["Dashboard", "Domains", "Hosts", "Keys", "Log"],
        "a Security Administrator with every role, inside the domain"
    );
    b.open("/keys/add");
    assert_eq!(
        b.attr("#template", "value").as_deref(),
        Some("Default_SQL_Symmetric_Key_Template"),
        "§7 defaults"
    );
    b.fill("name", "recorder");
    b.click("#automatic_key_rotation");
    b.fill("key_version_life_span", "7");
    b.fill("key_refresh_period", "0");
    b.press("OK");
    let err =
        field_error(&b, "key_refresh_period").expect("refresh period refused next to its field");
    assert!(err.contains("44640"), "{err}");
    assert_eq!(b.attr("#name", "value").as_deref(), Some("recorder"));
    b.screenshot("key-add-error");
    b.fill("key_refresh_period", "5");
    b.press("OK");
    assert_eq!(b.path(), "/keys", "{}", b.body());
    assert!(b.body().contains("Key recorder created (version 1)"));
    b.screenshot("keys");
    b.follow("recorder");
    b.screenshot("key-recorder");

    b.open("/hosts/secret");
    assert!(
        b.has("#require_hosts_first_added:checked"),
        "new secrets require hosts to be added first by default"
    );
    b.fill("shared_secret", "aa");
    b.press("Apply");
    assert!(field_error(&b, "shared_secret").is_some(), "{}", b.body());
    b.fill("shared_secret", SHARED_SECRET);
    b.press("Apply");
    assert!(b.body().contains("was set"), "{}", b.body());
    assert!(!b.body().contains(SHARED_SECRET), "hidden until Show");
    b.follow("Show");
    assert_eq!(b.text("#shared-secret").as_deref(), Some(SHARED_SECRET));
    b.screenshot("shared-secret");

    // The host is added first (the secret's default), then registers with
    // the secret and fetches the key.
    b.open("/hosts");
    b.fill("host_name", "rec1.example.com");
    b.press("Add");
    assert!(
        b.body().contains("Host rec1.example.com added."),
        "{}",
        b.body()
    );
    let host = tempfile::tempdir().expect("host dir");
    register_host(
        &app,
        "enrol",
        "rec1.example.com",
        SHARED_SECRET,
        host.path(),
    )
    .ok();
    let (key, version) = fetch_key(&app, host.path(), "recorder", None);
    assert_eq!((key.len(), version), (64, 1));
    b.open("/hosts");
    assert!(b.body().contains("rec1.example.com"));
    assert!(b.body().contains("registered"));
    b.screenshot("hosts");

    // A Security Administrator has no System menu and cannot open its pages.
    b.open("/system/preferences");
    assert_eq!(b.text("h1").as_deref(), Some("Not permitted"));
    b.screenshot("security-admin-system-refused");
    b.open("/log");
    assert!(
        b.body().contains("registered host rec1.example.com")
            || b.body().contains("rec1.example.com")
    );
    b.screenshot("domain-log");
    sign_out(&b);

    // The audit log as the System Administrator: filter, page, export.
    sign_in(&b, "SystemAdministrator", SYS_PW);
    b.open("/log?view=10");
    assert!(b.body().contains("Page 1 of"));
    b.choose("severity", "WARN");
    b.press("Filter");
    let rows = b.texts("table.log tbody td:nth-child(2)");
    assert!(
        !rows.is_empty()
            && rows
                .iter()
                .all(|s| s == "WARN" || s == "ERROR" || s == "FATAL"),
        "{rows:?}"
    );
    b.screenshot("log-warn");
    let cookie = b.cookie("__Host-custos_session");
    let (status, ctype, csv) = console_get(&app, &cookie, "/log/export.csv?text=rec1");
    assert_eq!(status, 200);
    assert!(ctype.starts_with("text/csv"));
    assert!(csv.starts_with("time,severity,administrator,source,via,domain,message"));
    assert!(csv.contains("rec1.example.com"), "{csv}");
    b.open("/reports");
    assert!(b.body().contains("Entries by Severity"));
    b.screenshot("reports");
    b.open("/system/preferences");
    b.fill("session_timeout", "0");
    b.press("Apply");
    assert!(field_error(&b, "session_timeout").is_some(), "{}", b.body());
    b.screenshot("preferences-error");
}

#[test]
fn read_only_administrators_and_forged_forms_change_nothing() {
    let app = Appliance::start();
    let mut b = Browser::start(app.url("web"), "refusals");
    first_sign_in(&mut b, "admin", "admin123", ADMIN_PW);
    let lic = tempfile::NamedTempFile::new().expect("temp file");
    std::fs::write(lic.path(), dev_licence(10, 5, "2099-12-31")).expect("licence file");
    b.open("/system/license");
    b.attach("licence_file", lic.path());
    b.press("Upload");
    add_admin(&b, "Auditor", "Aud!t0rTmp", "system", true);
    let admin_cookie = b.cookie("__Host-custos_session");

    // A POST without the session's CSRF token is refused and changes nothing.
    let before = app.snapshot();
    let (status, body) = console_post(
        &app,
        &admin_cookie,
        "/domains/add",
        &[("name", "NoToken"), ("kind", "global")],
    );
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("CSRF"), "{body}");
    let (status, _) = console_post(
        &app,
        &admin_cookie,
        "/domains/add",
        &[
            ("name", "NoToken"),
            ("kind", "global"),
            ("csrf", "forged-token"),
        ],
    );
    assert_eq!(status, 403);
    assert_eq!(app.snapshot(), before, "a refused form changes nothing");
    sign_out(&b);

    // The read-only administrator sees the lists but no change buttons.
    first_sign_in(&mut b, "Auditor", "Aud!t0rTmp", "Aud!t0rNew1");
    b.open("/administrators");
    assert!(b.body().contains("SystemAdministrator") || b.body().contains("Auditor"));
    assert!(
        !b.has("button.danger"),
        "no Delete button for a read-only administrator"
    );
    assert!(
        !b.has("a.button[href='/administrators/add']"),
        "no Add button"
    );
    b.screenshot("read-only-administrators");
    b.open("/system/preferences");
    assert!(!b.has("button.primary"), "no Apply button");
    b.screenshot("read-only-preferences");

    // A forged POST with the read-only session's own valid token is refused
    // by the server, and nothing changes.
    let cookie = b.cookie("__Host-custos_session");
    b.open("/dashboard");
    let csrf = b
        .attr("header form input[name=csrf]", "value")
        .expect("the page carries the session's token");
    let before = app.snapshot();
    let (status, body) = console_post(
        &app,
        &cookie,
        "/administrators/add",
        &[
            ("csrf", &csrf),
            ("login", "Forged"),
            ("password", "F0rged!Pass"),
            ("confirm_password", "F0rged!Pass"),
            ("user_type", "system"),
        ],
    );
    assert_ne!(
        status, 303,
        "a read-only administrator's form is not accepted"
    );
    assert!(body.contains("read-only"), "{body}");
    let (status, _) = console_post(
        &app,
        &cookie,
        "/system/preferences",
        &[
            ("csrf", &csrf),
            ("key_refresh_period", "5"),
            ("session_timeout", "30"),
            ("max_failed_logins", "5"),
            ("lockout_minutes", "15"),
            ("security_mode", "compatible"),
        ],
    );
    assert_ne!(status, 303);
    assert_eq!(app.snapshot(), before, "nothing changed");
    let admin = app.api().login("admin", ADMIN_PW);
    let refused = admin.get("/api/v1/audit?text=CSRF&severity=WARN").ok();
    assert_eq!(
        refused["total"], 2,
        "each refused form is in the audit log: {refused}"
    );
    let admins = admin.get("/api/v1/administrators").ok();
    assert!(
        !admins.to_string().contains("Forged"),
        "the forged administrator does not exist"
    );
}

#[test]
fn wrapper_key_custodian_and_backup_pages() {
    let app = Appliance::start();
    let mut b = Browser::start(app.url("web"), "backup");
    first_sign_in(&mut b, "admin", "admin123", ADMIN_PW);
    let lic = tempfile::NamedTempFile::new().expect("temp file");
    std::fs::write(lic.path(), dev_licence(10, 5, "2099-12-31")).expect("licence file");
    b.open("/system/license");
    b.attach("licence_file", lic.path());
    b.press("Upload");
    add_admin(&b, "SystemAdministrator", "Sys!Tmp0pw", "system", false);
    add_admin(&b, "SecondCustodian", "Sys!Tmp0pw", "system", false);

    // Create the wrapper key; 1 of 1 is refused (no single administrator
    // may hold it), 2 of 2 to two System Administrators is exported.
    b.open("/system/wrapper-keys");
    assert!(b.body().contains("No wrapper key"));
    b.screenshot("wrapper-keys-none");
    b.press("Create");
    assert!(b.body().contains("created"), "{}", b.body());
    let key_id = b.text("#wrapper-key-id").expect("key id shown");
    b.fill("minimum_custodians", "1");
    b.fill("total_custodians", "1");
    b.click("#custodian-SystemAdministrator");
    b.press("Export");
    let err = field_error(&b, "minimum_custodians").expect("refused next to the field");
    assert!(
        err.contains(
            "at least 2 custodians are needed so that no single administrator holds the wrapper key"
        ),
        "{err}"
    );
    b.screenshot("wrapper-keys-export-error");
    b.fill("minimum_custodians", "2");
    b.fill("total_custodians", "2");
    b.click("#custodian-SecondCustodian");
    b.press("Export");
    assert!(
        b.body()
            .contains("2 of 2 custodians (SecondCustodian, SystemAdministrator)"),
        "{}",
        b.body()
    );
    b.screenshot("wrapper-keys");

    // Manual backup page; a file that is not a backup is refused next to
    // the file field and changes nothing.
    b.open("/system/backup");
    b.screenshot("backup-manual");
    let junk = tempfile::NamedTempFile::new().expect("temp file");
    std::fs::write(junk.path(), b"not a backup").expect("junk");
    let before = app.snapshot();
    b.attach("backup_file", junk.path());
    b.press("Restore");
    let err = field_error(&b, "backup_file").expect("refusal next to the file field");
    assert!(err.contains("not a Custos backup"), "{err}");
    assert_eq!(app.snapshot(), before);
    b.screenshot("backup-restore-refused");
    sign_out(&b);

    // The custodian sees their share on the dashboard behind Show.
    first_sign_in(&mut b, "SystemAdministrator", "Sys!Tmp0pw", SYS_PW);
    assert!(b.body().contains("Wrapper Key Share"));
    assert!(!b.has("#wrapper-share"), "hidden until Show");
    b.follow("Show");
    let share = b.text("#wrapper-share").expect("share shown");
    assert!(
        share.starts_with(&format!("custos-share-1.{key_id}.2.")),
        "{share}"
    );
    b.screenshot("dashboard-custodian-share");
    // Once stored, the appliance deletes its copy and says so.
    b.press("I Have Stored My Share");
    assert!(b.has("#share-collected"), "{}", b.body());
    assert!(!b.has("#wrapper-share"));
    assert!(!b.body().contains("share=show"), "{}", b.body());
    b.screenshot("dashboard-custodian-share-collected");
}
