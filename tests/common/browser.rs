//! A headless Chromium driven over WebDriver, for the console's tests (tests/console.rs).
//!
//! Why a few lines of our own instead of a WebDriver crate: the W3C protocol is JSON over HTTP,
//! ureq is already a dependency, and the crates (thirtyfour, fantoccini) would bring a second HTTP
//! stack. Debian's `chromium` and `chromium-driver` (scripts/prereqs.sh test) run it.
//!
//! Every wait polls with a deadline. The browser's console log is kept: a test ends with
//! [`Browser::assert_clean`], which fails on any error a page logged.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::free_port;

const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// One browser session and its chromedriver.
pub struct Browser {
    driver: Child,
    base: String,
    session: String,
    /// Log entries read so far (each read empties the browser's buffer).
    log: Vec<Value>,
    shots: PathBuf,
    name: String,
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(60)))
        .build()
        .into()
}

/// Where screenshots go: target/console-screenshots/ (CI keeps target/).
pub fn screenshot_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/console-screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

impl Browser {
    /// Start chromedriver on a free loopback port and open a headless Chromium session. `name`
    /// prefixes the screenshots.
    pub fn start(name: &str) -> Browser {
        let port = free_port();
        let driver = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .arg("--allowed-ips=127.0.0.1")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("chromedriver did not start ({e}): install Debian's chromium and chromium-driver (scripts/prereqs.sh test)")
            });
        let base = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let ready = agent()
                .get(&format!("{base}/status"))
                .call()
                .ok()
                .and_then(|mut r| r.body_mut().read_json::<Value>().ok())
                .is_some_and(|v| v["value"]["ready"] == json!(true));
            if ready {
                break;
            }
            assert!(Instant::now() < deadline, "chromedriver on port {port} did not become ready");
            std::thread::sleep(Duration::from_millis(50));
        }
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": "/usr/bin/chromium",
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                         "--window-size=1360,1000", "--no-first-run", "--disable-extensions", "--lang=en-US"],
            },
            "goog:loggingPrefs": {"browser": "ALL"},
            "timeouts": {"script": 30000, "pageLoad": 30000, "implicit": 0},
        }}});
        let mut b = Browser {
            driver,
            base,
            session: String::new(),
            log: Vec::new(),
            shots: screenshot_dir(),
            name: name.to_string(),
        };
        let v = b.call("POST", "/session", Some(caps));
        b.session = v["sessionId"].as_str().unwrap_or_else(|| panic!("no session: {v}")).to_string();
        b
    }

    /// A WebDriver command; panics on a WebDriver error. Returns `value`.
    fn call(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let (status, v) = self.try_call(method, path, body);
        assert!(status < 400, "WebDriver {method} {path}: {status} {v}");
        v
    }

    fn try_call(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let url = format!("{}{}", self.base, path);
        let req = ureq::http::Request::builder().method(method).uri(&url).header("Content-Type", "application/json");
        let res = match body {
            Some(b) => agent().run(req.body(b.to_string()).unwrap()),
            None if method == "POST" => agent().run(req.body("{}".to_string()).unwrap()),
            None => agent().run(req.body(()).unwrap()),
        };
        let mut res = res.unwrap_or_else(|e| panic!("WebDriver {method} {path}: {e}"));
        let status = res.status().as_u16();
        let v: Value = res.body_mut().read_json().unwrap_or(Value::Null);
        (status, v["value"].clone())
    }

    fn s(&self, rest: &str) -> String {
        format!("/session/{}{}", self.session, rest)
    }

    /// Open `url` (waits for the page's load event).
    pub fn goto(&mut self, url: &str) {
        self.call("POST", &self.s("/url"), Some(json!({"url": url})));
    }

    pub fn refresh(&mut self) {
        self.call("POST", &self.s("/refresh"), None);
    }

    pub fn url(&self) -> String {
        self.call("GET", &self.s("/url"), None).as_str().unwrap_or_default().to_string()
    }

    /// Run `script` in the page (`return …`), with `args`.
    pub fn js(&self, script: &str, args: Value) -> Value {
        self.call("POST", &self.s("/execute/sync"), Some(json!({"script": script, "args": args})))
    }

    /// Element ids matching a CSS selector (none: empty).
    pub fn find_all(&self, css: &str) -> Vec<String> {
        let v = self.call("POST", &self.s("/elements"), Some(json!({"using": "css selector", "value": css})));
        v.as_array().into_iter().flatten().filter_map(|e| e[ELEMENT].as_str().map(str::to_string)).collect()
    }

    pub fn exists(&self, css: &str) -> bool {
        !self.find_all(css).is_empty()
    }

    /// The first element matching `css`, waited for.
    pub fn wait(&self, css: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(e) = self.find_all(css).into_iter().next() {
                return e;
            }
            assert!(Instant::now() < deadline, "{}: no `{css}` after {timeout:?} on {}", self.name, self.url());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Wait until the text of the page's body (innerText) contains `needle`.
    pub fn wait_text(&self, css: &str, needle: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let text = self.text(css);
            if text.contains(needle) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{}: `{css}` never contained {needle:?} within {timeout:?} on {}; it reads: {text}",
                self.name,
                self.url()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The visible text of every element matching `css`, joined by newlines.
    pub fn text(&self, css: &str) -> String {
        self.js(
            "return Array.from(document.querySelectorAll(arguments[0])).map(e => e.innerText).join('\\n')",
            json!([css]),
        )
        .as_str()
        .unwrap_or_default()
        .to_string()
    }

    /// Click the first element matching `css` (waited for).
    pub fn click(&self, css: &str) {
        let e = self.wait(css, Duration::from_secs(10));
        self.call("POST", &self.s(&format!("/element/{e}/click")), None);
    }

    /// Replace the value of the input matching `css` by typing `text`.
    pub fn fill(&self, css: &str, text: &str) {
        let e = self.wait(css, Duration::from_secs(10));
        self.call("POST", &self.s(&format!("/element/{e}/clear")), None);
        self.call("POST", &self.s(&format!("/element/{e}/value")), Some(json!({"text": text})));
    }

    /// Press keys in the focused element (`\u{E007}` is Enter).
    pub fn keys(&self, css: &str, text: &str) {
        let e = self.wait(css, Duration::from_secs(10));
        self.call("POST", &self.s(&format!("/element/{e}/value")), Some(json!({"text": text})));
    }

    /// Save a PNG of the window as target/console-screenshots/{name}-{what}.png; returns its path.
    pub fn screenshot(&self, what: &str) -> PathBuf {
        let v = self.call("GET", &self.s("/screenshot"), None);
        let png = base64_decode(v.as_str().unwrap_or_default());
        let path = self.shots.join(format!("{}-{what}.png", self.name));
        std::fs::write(&path, png).unwrap();
        path
    }

    /// Read the browser's console log since the last read, keeping every entry.
    pub fn read_log(&mut self) -> Vec<Value> {
        let (_, v) = self.try_call("POST", &self.s("/se/log"), Some(json!({"type": "browser"})));
        let entries: Vec<Value> = v.as_array().cloned().unwrap_or_default();
        self.log.extend(entries.iter().cloned());
        entries
    }

    /// Fail on any error the pages logged (script errors, `console.error`, failed loads), except
    /// failed API answers whose status the test caused on purpose (`expected`, e.g. `"422"`).
    pub fn assert_clean(&mut self, expected: &[&str]) {
        self.read_log();
        let bad: Vec<&Value> = self
            .log
            .iter()
            .filter(|e| e["level"] == json!("SEVERE"))
            .filter(|e| {
                let msg = e["message"].as_str().unwrap_or_default();
                let expected_status =
                    msg.contains("/api/v1/") && expected.iter().any(|s| msg.contains(&format!("status of {s} ")));
                !expected_status
            })
            .collect();
        assert!(bad.is_empty(), "{}: the browser logged errors: {bad:#?}", self.name);
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            let _ = self.try_call("DELETE", &self.s(""), None);
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// Standard base64 (what WebDriver's screenshot returns).
fn base64_decode(text: &str) -> Vec<u8> {
    let value = |c: u8| -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    };
    let digits: Vec<u32> = text.bytes().filter_map(value).collect();
    let mut out = Vec::with_capacity(digits.len() * 3 / 4);
    for chunk in digits.chunks(4) {
        let n = chunk.iter().enumerate().fold(0u32, |acc, (i, d)| acc | (d << (18 - 6 * i)));
        let bytes = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
        out.extend_from_slice(&bytes[..chunk.len().saturating_sub(1)]);
    }
    out
}
