//! A real Chromium driven over WebDriver (Debian's `chromium` and
//! `chromium-driver`), for the web console's end-to-end tests. Each browser
//! has its own chromedriver on a free loopback port and an empty profile;
//! the calls are synchronous so tests read like the steps an operator takes.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::json;

/// Where the screenshots of a test run go: `target/screenshots/`.
pub fn screenshot_dir() -> PathBuf {
    let target = crate::bin_dir()
        .parent()
        .expect("the target directory")
        .to_path_buf();
    target.join("screenshots")
}

pub struct Browser {
    rt: tokio::runtime::Runtime,
    client: Option<Client>,
    driver: Child,
    base: String,
    _profile: tempfile::TempDir,
    shots: usize,
    prefix: String,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

impl Browser {
    /// Starts chromedriver and a headless Chromium that trusts the
    /// appliance's self-signed certificate for this session only.
    /// `prefix` names this test's screenshots.
    pub fn start(base: &str, prefix: &str) -> Browser {
        let port = free_port();
        let profile = tempfile::tempdir().expect("profile dir");
        let driver = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .arg("--allowed-ips=127.0.0.1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver (Debian package chromium-driver; cargo xtask test installs it)");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("tokio runtime");
        let caps = json!({
            "acceptInsecureCerts": true,
            "goog:chromeOptions": {
                "binary": "/usr/bin/chromium",
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    "--disable-quic", "--no-first-run", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync", "--window-size=1366,900",
                    format!("--user-data-dir={}", profile.path().display()),
                ],
            }
        });
        let caps = match caps {
            serde_json::Value::Object(m) => m,
            _ => unreachable!("a JSON object literal"),
        };
        let url = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(30);
        let client = loop {
            let attempt = rt.block_on(async {
                let connector = hyper_util::client::legacy::connect::HttpConnector::new();
                ClientBuilder::new(connector)
                    .capabilities(caps.clone())
                    .connect(&url)
                    .await
            });
            match attempt {
                Ok(c) => break c,
                Err(e) if Instant::now() > deadline => panic!("could not start Chromium: {e}"),
                Err(_) => std::thread::sleep(Duration::from_millis(200)),
            }
        };
        Browser {
            rt,
            client: Some(client),
            driver,
            base: base.trim_end_matches('/').to_owned(),
            _profile: profile,
            shots: 0,
            prefix: prefix.to_owned(),
        }
    }

    fn c(&self) -> &Client {
        self.client.as_ref().expect("browser open")
    }

    /// Opens a console path (`/login`).
    pub fn open(&self, path: &str) {
        let url = format!("{}{path}", self.base);
        self.rt
            .block_on(self.c().goto(&url))
            .unwrap_or_else(|e| panic!("open {url}: {e}"));
    }

    /// The path of the page shown.
    pub fn path(&self) -> String {
        self.rt
            .block_on(self.c().current_url())
            .expect("current url")
            .path()
            .to_owned()
    }

    /// Types into the input with this id (clearing it first).
    pub fn fill(&self, id: &str, value: &str) {
        self.rt.block_on(async {
            let e = self
                .c()
                .find(Locator::Id(id))
                .await
                .unwrap_or_else(|e| panic!("no field #{id}: {e}"));
            e.clear().await.expect("clear");
            e.send_keys(value).await.expect("type");
        })
    }

    /// Chooses an option of the drop-down list with this id by its value.
    pub fn choose(&self, id: &str, value: &str) {
        self.rt.block_on(async {
            let e = self
                .c()
                .find(Locator::Id(id))
                .await
                .unwrap_or_else(|e| panic!("no list #{id}: {e}"));
            e.select_by_value(value)
                .await
                .unwrap_or_else(|e| panic!("#{id} has no option {value}: {e}"));
        })
    }

    /// Clicks the element matched by a CSS selector.
    pub fn click(&self, css: &str) {
        self.rt.block_on(async {
            self.c()
                .find(Locator::Css(css))
                .await
                .unwrap_or_else(|e| panic!("nothing matches {css}: {e}"))
                .click()
                .await
                .unwrap_or_else(|e| panic!("click {css}: {e}"));
        })
    }

    /// Clicks the button (or link styled as one) whose text is `label`.
    pub fn press(&self, label: &str) {
        let xpath = format!(
            "//button[normalize-space()='{label}'] | //a[contains(@class,'button') and normalize-space()='{label}']"
        );
        let here = self.path();
        self.navigating(|| {
            self.rt.block_on(async {
                self.c()
                    .find(Locator::XPath(&xpath))
                    .await
                    .unwrap_or_else(|e| panic!("no button '{label}' on {here}: {e}"))
                    .click()
                    .await
                    .unwrap_or_else(|e| panic!("press '{label}': {e}"));
            })
        })
    }

    /// Runs `act`, which loads a new page, and waits until that page has
    /// loaded (a marker left in the old page is gone).
    fn navigating(&self, act: impl FnOnce()) {
        self.rt
            .block_on(self.c().execute("window.__custosOld = true;", vec![]))
            .expect("mark the page");
        act();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let done = self.rt.block_on(self.c().execute(
                "return window.__custosOld === undefined && document.readyState === 'complete';",
                vec![],
            ));
            if matches!(done, Ok(serde_json::Value::Bool(true))) {
                return;
            }
            assert!(Instant::now() < deadline, "the next page did not load");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Follows the link whose text is `text`.
    pub fn follow(&self, text: &str) {
        self.navigating(|| {
            self.rt.block_on(async {
                self.c()
                    .find(Locator::LinkText(text))
                    .await
                    .unwrap_or_else(|e| panic!("no link '{text}': {e}"))
                    .click()
                    .await
                    .expect("click link");
            })
        })
    }

    /// The visible text of the first element matching `css`, if any.
    /// An element found a moment ago can be replaced by a page that was
    /// still loading; such reads are tried again.
    pub fn text(&self, css: &str) -> Option<String> {
        for attempt in 0.. {
            let got = self.rt.block_on(async {
                match self.c().find(Locator::Css(css)).await {
                    Ok(e) => e.text().await.map(Some),
                    Err(_) => Ok(None),
                }
            });
            match got {
                Ok(v) => return v,
                Err(e) if attempt >= 20 => panic!("reading {css}: {e}"),
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        }
        unreachable!("the loop returns or panics")
    }

    /// The texts of every element matching `css`.
    pub fn texts(&self, css: &str) -> Vec<String> {
        for attempt in 0.. {
            let got = self.rt.block_on(async {
                let mut out = Vec::new();
                for e in self.c().find_all(Locator::Css(css)).await? {
                    out.push(e.text().await?);
                }
                Ok::<_, fantoccini::error::CmdError>(out)
            });
            match got {
                Ok(v) => return v,
                Err(e) if attempt >= 20 => panic!("reading {css}: {e}"),
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        }
        unreachable!("the loop returns or panics")
    }

    /// The whole page's visible text.
    pub fn body(&self) -> String {
        self.text("body").unwrap_or_default()
    }

    /// The value of an attribute of the first element matching `css`.
    pub fn attr(&self, css: &str, name: &str) -> Option<String> {
        for attempt in 0.. {
            let got = self.rt.block_on(async {
                match self.c().find(Locator::Css(css)).await {
                    Ok(e) => e.attr(name).await,
                    Err(_) => Ok(None),
                }
            });
            match got {
                Ok(v) => return v,
                Err(e) if attempt >= 20 => panic!("reading {css}[{name}]: {e}"),
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        }
        unreachable!("the loop returns or panics")
    }

    /// Whether anything matches `css`.
    pub fn has(&self, css: &str) -> bool {
        self.rt
            .block_on(self.c().find_all(Locator::Css(css)))
            .map(|v| !v.is_empty())
            .unwrap_or(false)
    }

    /// Gives a file input a local file (an upload).
    pub fn attach(&self, id: &str, file: &Path) {
        self.rt.block_on(async {
            self.c()
                .find(Locator::Id(id))
                .await
                .unwrap_or_else(|e| panic!("no file input #{id}: {e}"))
                .send_keys(&file.display().to_string())
                .await
                .expect("attach file");
        })
    }

    /// The value of a cookie of the console (for requests made outside the
    /// browser with the same session).
    pub fn cookie(&self, name: &str) -> String {
        self.rt
            .block_on(self.c().get_named_cookie(name))
            .unwrap_or_else(|e| panic!("no cookie {name}: {e}"))
            .value()
            .to_owned()
    }

    /// Saves a PNG of the page as `target/screenshots/<prefix>-NN-<name>.png`.
    pub fn screenshot(&mut self, name: &str) -> PathBuf {
        let png = self.rt.block_on(self.c().screenshot()).expect("screenshot");
        let dir = screenshot_dir();
        std::fs::create_dir_all(&dir).expect("screenshot dir");
        self.shots += 1;
        let path = dir.join(format!("{}-{:02}-{name}.png", self.prefix, self.shots));
        std::fs::write(&path, png).expect("write screenshot");
        path
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if let Some(c) = self.client.take() {
            let _ = self.rt.block_on(c.close());
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}
