//! A real browser for the portal tests: headless Chromium (Debian's `chromium`) driven over
//! WebDriver by its `chromedriver`, one private profile per browser, so each person in a test
//! has their own cookies. Screenshots go to `artifacts/screenshots/` at the workspace root
//! (or `$IDEM_SCREENSHOTS`).

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use fantoccini::elements::Element;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::json;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// How long a page may take to show what a test waits for.
const PAGE_WAIT: Duration = Duration::from_secs(30);

/// One person's browser.
pub struct Browser {
    pub client: Client,
    driver: Child,
    _profile: tempfile::TempDir,
    shots: PathBuf,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Where screenshots are saved.
pub fn screenshot_dir() -> PathBuf {
    std::env::var_os("IDEM_SCREENSHOTS").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../artifacts/screenshots"),
        PathBuf::from,
    )
}

impl Browser {
    /// Starts chromedriver on a free loopback port (waiting for the line that says it is
    /// listening) and opens a headless Chromium session with a fresh profile.
    pub async fn start() -> Browser {
        Browser::launch(true).await
    }

    /// The same with JavaScript switched off, as some people browse.
    pub async fn start_without_javascript() -> Browser {
        Browser::launch(false).await
    }

    async fn launch(javascript: bool) -> Browser {
        let port = free_port();
        let mut driver = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("chromedriver (Debian package chromium-driver) must be installed");
        let stdout = driver.stdout.take().unwrap();
        let mut lines = BufReader::new(stdout).lines();
        tokio::time::timeout(Duration::from_secs(30), async {
            while let Some(line) = lines.next_line().await.unwrap() {
                if line.contains("started successfully") {
                    return;
                }
            }
            panic!("chromedriver stopped before it was ready");
        })
        .await
        .expect("chromedriver did not start");
        // Keep draining its output so it never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });

        let profile = tempfile::tempdir().unwrap();
        let capabilities = json!({
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": "/usr/bin/chromium",
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    "--disable-quic", "--no-first-run", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync", "--window-size=1280,900",
                    format!("--user-data-dir={}", profile.path().display()),
                ],
                // 1 allows, 2 blocks.
                "prefs": {
                    "profile.managed_default_content_settings.javascript":
                        if javascript { 1 } else { 2 },
                },
            },
        });
        let serde_json::Value::Object(capabilities) = capabilities else {
            unreachable!()
        };
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        let client = ClientBuilder::new(connector)
            .capabilities(capabilities)
            .connect(&format!("http://127.0.0.1:{port}"))
            .await
            .expect("a Chromium session through chromedriver");
        let shots = screenshot_dir();
        std::fs::create_dir_all(&shots).unwrap();
        Browser {
            client,
            driver,
            _profile: profile,
            shots,
        }
    }

    pub async fn goto(&self, url: &str) {
        self.client.goto(url).await.unwrap();
    }

    /// Waits for an element to be on the page.
    pub async fn wait(&self, css: &str) -> Element {
        match self
            .client
            .wait()
            .at_most(PAGE_WAIT)
            .for_element(Locator::Css(css))
            .await
        {
            Ok(element) => element,
            Err(e) => self.fail(&format!("no {css} on the page: {e}")).await,
        }
    }

    /// Fails the test with what the page shows (and a screenshot of it).
    async fn fail(&self, what: &str) -> ! {
        let url = self.path().await;
        let _ = self.screenshot("failure").await;
        let text = self.client.find(Locator::Css("body")).await;
        let text = match text {
            Ok(body) => body.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        };
        panic!("{what}\nat {url}, the page says:\n{text}")
    }

    /// Whether an element is on the page now.
    pub async fn has(&self, css: &str) -> bool {
        !self
            .client
            .find_all(Locator::Css(css))
            .await
            .unwrap()
            .is_empty()
    }

    /// Types `text` into a field (emptied first).
    pub async fn fill(&self, css: &str, text: &str) {
        let field = self.wait(css).await;
        field.clear().await.unwrap();
        field.send_keys(text).await.unwrap();
    }

    /// Clicks something that stays on the page (a disclosure, a checkbox).
    pub async fn click(&self, css: &str) {
        self.wait(css).await.click().await.unwrap();
    }

    /// Clicks a link or button that loads another page, and waits for that page.
    pub async fn follow(&self, css: &str) {
        let target = self.wait(css).await;
        self.navigating(target).await;
    }

    /// Clicks `target` and waits until a new document has replaced the current one: the old
    /// document's root goes stale (checked through WebDriver, so it works with JavaScript off).
    async fn navigating(&self, target: Element) {
        let old = self.wait("html").await;
        target.click().await.unwrap();
        let deadline = tokio::time::Instant::now() + PAGE_WAIT;
        while old.tag_name().await.is_ok() {
            if tokio::time::Instant::now() >= deadline {
                self.fail("no new page after the click").await;
            }
            // WebDriver has no "page replaced" event: ask again shortly.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.wait("body").await;
    }

    /// Clicks the button whose text is `label` (inside `scope`, a CSS selector), and waits for
    /// the page it loads.
    pub async fn click_button(&self, scope: &str, label: &str) {
        let xpath = format!(
            "{}//button[normalize-space(.)='{label}']",
            css_to_xpath(scope)
        );
        self.click_and_follow(&xpath, &format!("button {label:?} in {scope}"))
            .await;
    }

    /// Clicks the button or link `label` in the table row that mentions `row_text`, and waits
    /// for the page it loads.
    pub async fn click_in_row(&self, row_text: &str, label: &str) {
        let xpath = format!(
            "//tr[contains(., '{row_text}')]//*[(self::button or self::a) and normalize-space(.)='{label}']"
        );
        self.click_and_follow(&xpath, &format!("{label:?} in the row of {row_text}"))
            .await;
    }

    /// Waits for the element at `xpath` (failing with "no `what`"), clicks it and waits for the
    /// page it loads.
    async fn click_and_follow(&self, xpath: &str, what: &str) {
        let target = match self
            .client
            .wait()
            .at_most(PAGE_WAIT)
            .for_element(Locator::XPath(xpath))
            .await
        {
            Ok(target) => target,
            Err(e) => self.fail(&format!("no {what}: {e}")).await,
        };
        self.navigating(target).await;
    }

    /// Chooses the option labelled `label` of a select.
    pub async fn choose(&self, css: &str, label: &str) {
        self.wait(css).await.select_by_label(label).await.unwrap();
    }

    /// The page's visible text.
    pub async fn page_text(&self) -> String {
        self.text("body").await
    }

    /// The visible text of an element.
    pub async fn text(&self, css: &str) -> String {
        self.wait(css).await.text().await.unwrap()
    }

    /// The current URL's path (and query).
    pub async fn path(&self) -> String {
        let url = self.client.current_url().await.unwrap();
        match url.query() {
            Some(query) => format!("{}?{query}", url.path()),
            None => url.path().to_owned(),
        }
    }

    /// The current URL.
    pub async fn url(&self) -> url::Url {
        self.client.current_url().await.unwrap()
    }

    /// Waits until the browser is at a path starting with `prefix` (navigation can be a
    /// redirect chain or the login page's own script). `"/"` means the root page itself, not
    /// any path.
    pub async fn wait_path(&self, prefix: &str) {
        let deadline = tokio::time::Instant::now() + PAGE_WAIT;
        loop {
            let path = self.path().await;
            let arrived = if prefix == "/" {
                path == "/" || path.starts_with("/?")
            } else {
                path.starts_with(prefix)
            };
            if arrived {
                self.wait("body").await;
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the browser stayed at {path}, not {prefix}…"
            );
            // WebDriver has no "URL changed" event: ask again shortly.
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Saves a screenshot of the page as `{name}.png`.
    ///
    /// Every main page passes through here, so it also checks what every page owes keyboard
    /// and screen-reader users: each visible field has a label, and the first Tab reaches the
    /// "skip to content" link (portal pages) or a control.
    pub async fn screenshot(&self, name: &str) {
        let png = self.client.screenshot().await.unwrap();
        std::fs::write(self.shots.join(format!("{name}.png")), png).unwrap();
        let unlabelled = self
            .client
            .execute(
                "return [...document.querySelectorAll('input:not([type=hidden]), select, textarea')]
                    .filter(e => e.labels.length === 0).map(e => e.name);",
                vec![],
            )
            .await
            .unwrap();
        assert_eq!(unlabelled, json!([]), "{name}: fields without a label");
    }

    /// Presses keys in whatever has the focus (`Key::Tab`, `Key::Enter` as `char`s).
    pub async fn keys(&self, keys: &str) {
        self.client
            .active_element()
            .await
            .unwrap()
            .send_keys(keys)
            .await
            .unwrap();
    }

    /// The focused element's `name` attribute, or its text.
    pub async fn focused(&self) -> String {
        let value = self
            .client
            .execute(
                "const e = document.activeElement; return e.name || e.textContent.trim();",
                vec![],
            )
            .await
            .unwrap();
        value.as_str().unwrap_or_default().to_owned()
    }

    pub async fn close(mut self) {
        let _ = self.client.clone().close().await;
        let _ = self.driver.kill().await;
    }
}

impl Drop for Browser {
    /// chromedriver dies with its `Child` (kill on drop), but Chromium, its child, would
    /// outlive it, still running the last page's script, whenever a test fails before
    /// `close`. Every process of this browser carries its private profile's path.
    fn drop(&mut self) {
        let _ = std::process::Command::new("pkill")
            .arg("-KILL")
            .arg("-f")
            .arg(self._profile.path())
            .status();
    }
}

/// `#id`, `.class` or a tag name as an XPath step (enough for the tests' scopes).
fn css_to_xpath(css: &str) -> String {
    if let Some(id) = css.strip_prefix('#') {
        format!("//*[@id='{id}']")
    } else if let Some(class) = css.strip_prefix('.') {
        format!("//*[contains(concat(' ', normalize-space(@class), ' '), ' {class} ')]")
    } else {
        format!("//{css}")
    }
}
