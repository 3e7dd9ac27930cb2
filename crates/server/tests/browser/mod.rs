//! A real browser for the console's tests: Debian's Chromium, headless, driven
//! through WebDriver (Debian's chromedriver, started by the test on a free port) with
//! `fantoccini`. `.ci/test` installs both; without them the tests fail saying so —
//! they never pass by skipping. `FERRY_CHROMIUM` and `FERRY_CHROMEDRIVER` name other
//! binaries.
//!
//! Screenshots go to `target/console-screenshots/NAME.png`, for a person to look at.

#![allow(dead_code, reason = "each test uses a part of the harness")]

use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context as _, anyhow, bail};
use fantoccini::elements::Element;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};

/// How long a page is given to show what a test waits for.
pub const PATIENCE: Duration = Duration::from_secs(60);

/// Browser tests share two cores with the server under test: one at a time.
pub static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn binary(env: &str, default: &str) -> PathBuf {
    let path = std::env::var_os(env)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(default));
    assert!(
        path.exists(),
        "{} is missing: the console's browser tests need Debian's `chromium` and \
         `chromium-driver`. Run the tests with `bash .ci/test`, which installs them \
         (apt-get install chromium chromium-driver), or set {env} to the binary",
        path.display()
    );
    path
}

/// Where screenshots are written: `target/console-screenshots`.
pub fn screenshot_dir() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .expect("the target directory")
        .join("console-screenshots")
}

/// A headless Chromium with its chromedriver, both killed on drop.
pub struct Browser {
    pub client: Client,
    driver: Child,
    /// Where the browser saves downloads.
    pub downloads: tempfile::TempDir,
    _profile: tempfile::TempDir,
}

impl Drop for Browser {
    fn drop(&mut self) {
        // chromedriver leads a process group of its own, with the browser in it.
        if let Some(pid) = rustix::process::Pid::from_raw(self.driver.id() as i32) {
            let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
        }
        let _ = self.driver.wait();
    }
}

impl Browser {
    /// Starts chromedriver and a headless Chromium whose window is `width`×`height`.
    pub async fn start(width: u32, height: u32) -> anyhow::Result<Browser> {
        let chromium = binary("FERRY_CHROMIUM", "/usr/bin/chromium");
        let chromedriver = binary("FERRY_CHROMEDRIVER", "/usr/bin/chromedriver");
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let mut driver = Command::new(&chromedriver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .with_context(|| format!("starting {}", chromedriver.display()))?;
        let url = format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = driver.try_wait()? {
                bail!("chromedriver exited at once ({status})");
            }
            let ready = http
                .get(format!("{url}/status"))
                .send()
                .await
                .ok()
                .map(|r| r.status().is_success())
                .unwrap_or(false);
            if ready {
                break;
            }
            if tokio::time::Instant::now() > deadline {
                let _ = driver.kill();
                bail!("chromedriver did not answer on {url} within 30 s");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let downloads = tempfile::tempdir()?;
        let profile = tempfile::tempdir()?;
        let capabilities = json!({
            "goog:chromeOptions": {
                "binary": chromium,
                "args": [
                    "--headless=new",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-dev-shm-usage",
                    "--no-first-run",
                    "--no-default-browser-check",
                    "--disable-extensions",
                    "--disable-background-networking",
                    "--force-device-scale-factor=1",
                    "--hide-scrollbars",
                    "--lang=en-US",
                    format!("--user-data-dir={}", profile.path().display()),
                    format!("--window-size={width},{height}"),
                ],
                "prefs": {
                    "download.default_directory": downloads.path(),
                    "download.prompt_for_download": false,
                    "download.directory_upgrade": true,
                },
            },
        });
        let Value::Object(capabilities) = capabilities else {
            unreachable!("an object")
        };
        let client = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(capabilities)
            .connect(&url)
            .await
            .map_err(|e| anyhow!("cannot start Chromium through chromedriver: {e}"))?;
        let browser = Browser {
            client,
            driver,
            downloads,
            _profile: profile,
        };
        browser.resize(width, height).await?;
        Ok(browser)
    }

    /// Makes the page's viewport `width`×`height` CSS pixels.
    pub async fn resize(&self, width: u32, height: u32) -> anyhow::Result<()> {
        // The window's outer size includes whatever the browser draws around the page:
        // measure it once and add it.
        self.client.set_window_size(width, height).await?;
        let inner = self
            .eval("return [window.innerWidth, window.innerHeight];")
            .await?;
        let (w, h) = (
            inner[0].as_u64().unwrap_or(width as u64) as u32,
            inner[1].as_u64().unwrap_or(height as u64) as u32,
        );
        if (w, h) != (width, height) {
            self.client
                .set_window_size(
                    width + (width - w.min(width)),
                    height + (height - h.min(height)),
                )
                .await?;
        }
        Ok(())
    }

    pub async fn goto(&self, url: &str) -> anyhow::Result<()> {
        self.client.goto(url).await?;
        Ok(())
    }

    pub async fn url(&self) -> anyhow::Result<String> {
        Ok(self.client.current_url().await?.to_string())
    }

    pub async fn eval(&self, script: &str) -> anyhow::Result<Value> {
        Ok(self.client.execute(script, Vec::new()).await?)
    }

    pub async fn find(&self, css: &str) -> anyhow::Result<Element> {
        match self.client.find(Locator::Css(css)).await {
            Ok(e) => Ok(e),
            Err(e) => Err(anyhow!(
                "no `{css}` on {}: {e}",
                self.url_or_unknown().await
            )),
        }
    }

    pub async fn count(&self, css: &str) -> anyhow::Result<usize> {
        Ok(self.client.find_all(Locator::Css(css)).await?.len())
    }

    pub async fn text(&self, css: &str) -> anyhow::Result<String> {
        Ok(self.find(css).await?.text().await?)
    }

    async fn url_or_unknown(&self) -> String {
        self.url().await.unwrap_or_else(|_| "the page".into())
    }

    /// Waits until `css` matches an element whose text contains `text` (any text when
    /// empty), for up to [`PATIENCE`].
    pub async fn wait_for(&self, css: &str, text: &str) -> anyhow::Result<Element> {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            if let Ok(found) = self.client.find_all(Locator::Css(css)).await {
                for e in found {
                    if text.is_empty() || e.text().await.is_ok_and(|t| t.contains(text)) {
                        return Ok(e);
                    }
                }
            }
            if tokio::time::Instant::now() > deadline {
                let body = self.text("body").await.unwrap_or_default();
                bail!(
                    "`{css}`{} did not appear on {} within {} s; the page says:\n{body}",
                    if text.is_empty() {
                        String::new()
                    } else {
                        format!(" with `{text}`")
                    },
                    self.url_or_unknown().await,
                    PATIENCE.as_secs()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Clicks the element `css` matches.
    pub async fn click(&self, css: &str) -> anyhow::Result<()> {
        self.find(css).await?.click().await?;
        Ok(())
    }

    /// Writes what the viewport shows to `target/console-screenshots/NAME.png`.
    pub async fn shot(&self, name: &str) -> anyhow::Result<PathBuf> {
        let png = self.client.screenshot().await?;
        let dir = screenshot_dir();
        std::fs::create_dir_all(&dir)?;
        let path = dir.join(format!("{name}.png"));
        std::fs::write(&path, png)?;
        Ok(path)
    }

    /// Like [`Browser::shot`], of the whole page: the viewport is made as tall as the
    /// page for the picture, then put back.
    pub async fn full_shot(&self, name: &str) -> anyhow::Result<PathBuf> {
        let size = self
            .eval("return [window.innerWidth, window.innerHeight, document.documentElement.scrollHeight];")
            .await?;
        let (w, h, page) = (
            size[0].as_u64().unwrap_or(1280) as u32,
            size[1].as_u64().unwrap_or(800) as u32,
            size[2].as_u64().unwrap_or(800) as u32,
        );
        if page > h {
            self.resize(w, page.min(4000)).await?;
        }
        let path = self.shot(name).await;
        if page > h {
            self.resize(w, h).await?;
        }
        path
    }

    /// Whether the page is wider than the window (something would need a sideways
    /// scroll), with what sticks out.
    pub async fn overflow(&self) -> anyhow::Result<Option<String>> {
        let found = self
            .eval(
                "const w = document.documentElement.clientWidth;\
                 if (document.documentElement.scrollWidth <= w) { return null; }\
                 const out = [];\
                 for (const e of document.querySelectorAll('body *')) {\
                   const r = e.getBoundingClientRect();\
                   if (r.right > w + 1 && out.length < 5) { out.push(e.tagName + '.' + e.className + ' ' + Math.round(r.right)); }\
                 }\
                 return document.documentElement.scrollWidth + ' > ' + w + ': ' + out.join(', ');",
            )
            .await?;
        Ok(found.as_str().map(str::to_string))
    }

    /// What on the page cannot be used with a keyboard and a screen reader: form
    /// controls without a label, buttons and links without a name, images without an
    /// alternative.
    pub async fn unlabelled(&self) -> anyhow::Result<Vec<String>> {
        let found = self
            .eval(
                "const out = [];\
                 for (const e of document.querySelectorAll('input:not([type=hidden]), select, textarea')) {\
                   if (!e.labels || e.labels.length === 0) { out.push('control ' + (e.name || e.id)); }\
                 }\
                 for (const e of document.querySelectorAll('a[href], button')) {\
                   if (!e.textContent.trim() && !e.getAttribute('aria-label')) { out.push(e.tagName + ' ' + e.outerHTML.slice(0, 80)); }\
                 }\
                 for (const e of document.querySelectorAll('img')) {\
                   if (!e.hasAttribute('alt')) { out.push('img ' + e.src); }\
                 }\
                 if (!document.documentElement.lang) { out.push('no lang'); }\
                 if (!document.title) { out.push('no title'); }\
                 return out;",
            )
            .await?;
        Ok(found
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default())
    }

    /// The value of the session cookie, as a test needs it to fetch with the browser's
    /// session.
    pub async fn session_cookie(&self) -> anyhow::Result<String> {
        let cookie = self.client.get_named_cookie("ferry_session").await?;
        Ok(cookie.value().to_string())
    }

    pub async fn close(self) -> anyhow::Result<()> {
        self.client.clone().close().await?;
        Ok(())
    }
}
