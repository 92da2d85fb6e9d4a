//! Sending one message to one channel: the HTTP POST of a webhook or a chat robot, or an e-mail
//! over SMTP. Blocking (ureq; an SMTP conversation on a `TcpStream`, in TLS as the channel says),
//! so callers run it on a blocking thread; every call is bounded by the channel's time limit,
//! connecting and the TLS handshake included. Servers are verified as [`crate::tls`] says:
//! Mozilla's roots, or the channel's `ca_file`.
//!
//! The SMTP client is written here rather than taken from lettre: lettre 0.11 parses addresses
//! with nom 8, and Rota already builds nom 7 (for `cron`), so it would add a second nom; and its
//! time limits are per read and write, where a delivery needs one limit for the whole attempt.
//!
//! Must never: follow a redirect (it would carry the signature elsewhere), read an unbounded
//! answer, quote a channel's secret in an error, or go on in plain text when TLS was asked for.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::{accepted, dingtalk_sign, feishu_sign, signature, ChannelKind, Message, SmtpTls};

/// The longest answer kept from a receiver.
const MAX_ANSWER_BYTES: u64 = 64 * 1024;
/// What of an answer is shown (`rota channel test`, a delivery's `last_error`).
const SHOWN_BYTES: usize = 512;

/// What the receiver answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// HTTP status, or the SMTP server's last reply code. None when nothing answered.
    pub status: Option<u16>,
    /// The start of its body (or the SMTP server's last reply).
    pub body: String,
    /// Why the message does not count as delivered; None when it does.
    pub error: Option<String>,
}

/// The time limit of one attempt on a channel: its `timeout_ms`, else `default`.
pub fn timeout_of(config: &Value, default: Duration) -> Duration {
    config.get("timeout_ms").and_then(Value::as_u64).map_or(default, Duration::from_millis)
}

/// Send `m` to a channel of `kind` with `config`, within `timeout`. `now_ms` is the wall clock
/// (Unix ms) for the robots' signatures.
pub fn send(kind: ChannelKind, config: &Value, m: &Message, timeout: Duration, now_ms: i64) -> Answer {
    match kind {
        ChannelKind::Email => email(config, m, timeout),
        _ => http(kind, config, m, timeout, now_ms),
    }
}

fn cut(text: &str) -> String {
    let mut end = text.len().min(SHOWN_BYTES);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_string()
}

fn failed(error: String) -> Answer {
    Answer { status: None, body: String::new(), error: Some(error) }
}

fn http(kind: ChannelKind, config: &Value, m: &Message, timeout: Duration, now_ms: i64) -> Answer {
    let Some(url) = config.get("url").and_then(Value::as_str) else {
        return failed("the channel has no `url`".into());
    };
    let secret = config.get("secret").and_then(Value::as_str).filter(|s| !s.is_empty());
    let mut url = url.to_string();
    let body = match kind {
        ChannelKind::Webhook => m.webhook_body(),
        ChannelKind::Dingtalk => {
            if let Some(s) = secret {
                let sign: String = url::form_urlencoded::byte_serialize(dingtalk_sign(s, now_ms).as_bytes()).collect();
                url.push(if url.contains('?') { '&' } else { '?' });
                url.push_str(&format!("timestamp={now_ms}&sign={sign}"));
            }
            m.robot_body(kind, None)
        }
        ChannelKind::Feishu => {
            let now_s = now_ms / 1000;
            m.robot_body(kind, secret.map(|s| (now_s, feishu_sign(s, now_s))))
        }
        _ => m.robot_body(kind, None),
    };
    let bytes = body.to_string().into_bytes();
    let ca = match crate::tls::ca_file(config.get("ca_file").and_then(Value::as_str)) {
        Ok(ca) => ca,
        Err(e) => return failed(format!("config.ca_file: {e}")),
    };
    let config = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .max_redirects(0)
        .timeout_global(Some(timeout))
        .tls_config(crate::tls::ureq_config(ca.as_ref()))
        .build();
    let agent = ureq::Agent::new_with_config(config);
    let mut request = agent
        .post(&url)
        .header("Content-Type", "application/json")
        .header("User-Agent", concat!("rota/", env!("CARGO_PKG_VERSION")))
        .header("X-Rota-Delivery", m.delivery_id.to_string())
        .header("X-Rota-Event", m.event.kind.as_str());
    if kind == ChannelKind::Webhook {
        if let Some(s) = secret {
            request = request.header("X-Rota-Signature", signature(s, &bytes));
        }
    }
    let shown = crate::drivers::secret::redact_url(&url);
    let mut response = match request.send(&bytes[..]) {
        Ok(r) => r,
        Err(ureq::Error::Timeout(_)) => return failed(format!("no answer within {} ms", timeout.as_millis())),
        Err(ureq::Error::Io(e)) if e.kind() == std::io::ErrorKind::TimedOut => {
            return failed(format!("no answer within {} ms", timeout.as_millis()))
        }
        Err(e) => return failed(format!("POST {shown}: {e}")),
    };
    let status = response.status().as_u16();
    let text = response.body_mut().with_config().limit(MAX_ANSWER_BYTES).read_to_string().unwrap_or_default();
    let error = accepted(kind, status, &text).err();
    Answer { status: Some(status), body: cut(&text), error }
}

/// An SMTP conversation (RFC 5321): EHLO; STARTTLS and EHLO again when `tls` is `starttls` (or
/// TLS from the start when it is `tls`); AUTH when a user is set, PLAIN or LOGIN as the server
/// offers; MAIL, RCPT, DATA.
fn email(config: &Value, m: &Message, timeout: Duration) -> Answer {
    let started = Instant::now();
    match smtp(config, m, timeout, started) {
        Ok(reply) => Answer { status: Some(250), body: cut(&reply), error: None },
        Err((code, reply)) => Answer { status: code, body: cut(&reply), error: Some(reply) },
    }
}

type SmtpError = (Option<u16>, String);

/// The connection: plain, or in TLS (after STARTTLS, or from the start).
enum Conn {
    Plain(TcpStream),
    Tls(Box<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>),
}

impl Conn {
    fn tcp(&self) -> &TcpStream {
        match self {
            Conn::Plain(s) => s,
            Conn::Tls(s) => &s.sock,
        }
    }
}

impl Read for Conn {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Conn::Plain(s) => s.read(buf),
            Conn::Tls(s) => s.read(buf),
        }
    }
}

impl Write for Conn {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Conn::Plain(s) => s.write(buf),
            Conn::Tls(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Conn::Plain(s) => s.flush(),
            Conn::Tls(s) => s.flush(),
        }
    }
}

/// One SMTP session, bounded by one time limit for the whole attempt.
struct Session {
    r: BufReader<Conn>,
    server: String,
    started: Instant,
    timeout: Duration,
}

impl Session {
    fn io(&self) -> impl Fn(std::io::Error) -> SmtpError + '_ {
        move |e| {
            let timed_out = matches!(e.kind(), std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock);
            if timed_out || self.started.elapsed() >= self.timeout {
                (None, format!("SMTP {}: no answer within {} ms", self.server, self.timeout.as_millis()))
            } else {
                (None, format!("SMTP {}: {e}", self.server))
            }
        }
    }

    /// Read and write timeouts set to what is left of the attempt's limit.
    fn bound(&self) -> Result<(), SmtpError> {
        let left = self.timeout.saturating_sub(self.started.elapsed());
        if left.is_zero() {
            return Err((None, format!("SMTP {}: no answer within {} ms", self.server, self.timeout.as_millis())));
        }
        let tcp = self.r.get_ref().tcp();
        tcp.set_read_timeout(Some(left)).and_then(|()| tcp.set_write_timeout(Some(left))).map_err(self.io())
    }

    /// Send `line` (if any), read the reply, and require code `want` (251 passes for 250).
    fn command(&mut self, line: Option<&str>, want: u16) -> Result<String, SmtpError> {
        self.bound()?;
        if let Some(line) = line {
            let w = self.r.get_mut();
            let sent = w.write_all(line.as_bytes()).and_then(|()| w.write_all(b"\r\n")).and_then(|()| w.flush());
            sent.map_err(self.io())?;
        }
        let mut reply = String::new();
        loop {
            let mut l = String::new();
            let n = self.r.read_line(&mut l).map_err(self.io())?;
            if n == 0 {
                return Err((None, format!("SMTP {} closed the connection", self.server)));
            }
            reply.push_str(&l);
            // A multi-line reply continues while the fourth character is `-`.
            if l.as_bytes().get(3) != Some(&b'-') {
                break;
            }
        }
        let code = reply.get(..3).and_then(|c| c.parse::<u16>().ok());
        if code != Some(want) && !(want == 250 && code == Some(251)) {
            return Err((code, format!("SMTP answered `{}`", reply.trim_end())));
        }
        Ok(reply)
    }

    /// The TLS handshake on the plain connection, done at once so that a certificate problem is
    /// reported as one (and within the time limit).
    fn into_tls(self, host: &str, tls: Arc<rustls::ClientConfig>) -> Result<Session, SmtpError> {
        // Anything the server sent after its answer to STARTTLS was sent in plain text and could
        // have been injected by anyone on the path (CVE-2011-0411): refuse it.
        if !self.r.buffer().is_empty() {
            return Err((None, format!("SMTP {}: the server sent more after its STARTTLS answer", self.server)));
        }
        self.bound()?;
        let Session { r, server, started, timeout } = self;
        let Conn::Plain(tcp) = r.into_inner() else {
            return Err((None, format!("SMTP {server}: already in TLS")));
        };
        let name = rustls::pki_types::ServerName::try_from(host.to_string())
            .map_err(|e| (None, format!("SMTP {server}: `{host}` cannot be checked against a certificate: {e}")))?;
        let conn = rustls::ClientConnection::new(tls, name).map_err(|e| (None, format!("TLS with {server}: {e}")))?;
        let mut stream = rustls::StreamOwned::new(conn, tcp);
        while stream.conn.is_handshaking() {
            if let Err(e) = stream.conn.complete_io(&mut stream.sock) {
                let timed_out = matches!(e.kind(), std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock);
                return Err(if timed_out {
                    (None, format!("TLS with {server}: no answer within {} ms", timeout.as_millis()))
                } else {
                    (None, format!("TLS with {server}: {e}"))
                });
            }
        }
        Ok(Session { r: BufReader::new(Conn::Tls(Box::new(stream))), server, started, timeout })
    }
}

/// What a server's EHLO reply offers.
#[derive(Debug, Default, PartialEq, Eq)]
struct Offers {
    starttls: bool,
    /// The AUTH mechanisms, upper case.
    auth: Vec<String>,
}

fn offers(ehlo: &str) -> Offers {
    let mut o = Offers::default();
    for line in ehlo.lines() {
        let words: Vec<String> = line.get(4..).unwrap_or("").split([' ', '=']).map(str::to_ascii_uppercase).collect();
        match words.first().map(String::as_str) {
            Some("STARTTLS") => o.starttls = true,
            Some("AUTH") => o.auth.extend(words[1..].iter().filter(|w| !w.is_empty()).cloned()),
            _ => {}
        }
    }
    o
}

fn smtp(config: &Value, m: &Message, timeout: Duration, started: Instant) -> Result<String, SmtpError> {
    let s = |k: &str| config.get(k).and_then(Value::as_str).unwrap_or_default().to_string();
    let (host, from) = (s("host"), s("from"));
    let (mode, port) = SmtpTls::of(config);
    let to: Vec<String> = config
        .get("to")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|v| v.as_str().map(String::from))
        .collect();
    let server = format!("{host}:{port}");
    let tls = match mode {
        SmtpTls::None => None,
        _ => {
            let ca = crate::tls::ca_file(config.get("ca_file").and_then(Value::as_str))
                .map_err(|e| (None, format!("config.ca_file: {e}")))?;
            Some(crate::tls::rustls_config(ca.as_ref()))
        }
    };
    let io = |e: std::io::Error| (None, format!("SMTP {server}: {e}"));
    let addr =
        (host.as_str(), port).to_socket_addrs().map_err(io)?.next().ok_or((None, format!("{host}: no address")))?;
    let stream = TcpStream::connect_timeout(&addr, timeout).map_err(|e| {
        if e.kind() == std::io::ErrorKind::TimedOut {
            (None, format!("SMTP {server}: no answer within {} ms", timeout.as_millis()))
        } else {
            io(e)
        }
    })?;
    let mut w = Session { r: BufReader::new(Conn::Plain(stream)), server: server.clone(), started, timeout };
    if let (SmtpTls::Tls, Some(tls)) = (mode, &tls) {
        w = w.into_tls(&host, tls.clone())?;
    }
    w.command(None, 220)?;
    let mut ehlo = w.command(Some("EHLO rota"), 250)?;
    if let (SmtpTls::StartTls, Some(tls)) = (mode, &tls) {
        if !offers(&ehlo).starttls {
            return Err((None, format!("SMTP {server} does not offer STARTTLS (the channel's `tls` is `starttls`)")));
        }
        w.command(Some("STARTTLS"), 220)?;
        w = w.into_tls(&host, tls.clone())?;
        // The server forgets what was said before TLS (RFC 3207 4.2): greet it again.
        ehlo = w.command(Some("EHLO rota"), 250)?;
    }
    let user = s("username");
    if !user.is_empty() {
        use base64::Engine;
        let b64 = |t: &str| base64::engine::general_purpose::STANDARD.encode(t);
        let offered = offers(&ehlo).auth;
        if offered.iter().any(|a| a == "PLAIN") {
            w.command(Some(&format!("AUTH PLAIN {}", b64(&format!("\0{user}\0{}", s("password"))))), 235)?;
        } else if offered.iter().any(|a| a == "LOGIN") {
            w.command(Some("AUTH LOGIN"), 334)?;
            w.command(Some(&b64(&user)), 334)?;
            w.command(Some(&b64(&s("password"))), 235)?;
        } else {
            let shown = if offered.is_empty() { "none".to_string() } else { offered.join(" ") };
            return Err((
                None,
                format!("SMTP {server} offers no AUTH PLAIN or LOGIN (it offers: {shown}); a `username` needs one"),
            ));
        }
    }
    w.command(Some(&format!("MAIL FROM:<{from}>")), 250)?;
    for rcpt in &to {
        w.command(Some(&format!("RCPT TO:<{rcpt}>")), 250)?;
    }
    w.command(Some("DATA"), 354)?;
    let mut mail = String::new();
    let subject = header_text(&m.title());
    mail.push_str(&format!("From: {from}\r\nTo: {}\r\nSubject: {subject}\r\n", to.join(", ")));
    mail.push_str(&format!("Date: {}\r\n", chrono::Utc::now().to_rfc2822()));
    mail.push_str(&format!("Message-ID: <rota-delivery-{}@{host}>\r\n", m.delivery_id));
    mail.push_str(&format!("X-Rota-Delivery: {}\r\n", m.delivery_id));
    mail.push_str(
        "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n",
    );
    for line in m.text().lines() {
        // Dot-stuffing (RFC 5321 4.5.2): a line that starts with a dot gets one more.
        if line.starts_with('.') {
            mail.push('.');
        }
        mail.push_str(line);
        mail.push_str("\r\n");
    }
    mail.push('.');
    let reply = w.command(Some(&mail), 250)?;
    let _ = w.command(Some("QUIT"), 221);
    Ok(reply.trim_end().to_string())
}

/// A header value on one line: ASCII as it is, anything else as an RFC 2047 encoded word.
fn header_text(text: &str) -> String {
    let one_line: String = text.chars().map(|c| if c.is_control() { ' ' } else { c }).collect();
    if one_line.is_ascii() {
        return one_line;
    }
    use base64::Engine;
    format!("=?utf-8?B?{}?=", base64::engine::general_purpose::STANDARD.encode(one_line.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ehlo_offers_are_read_from_every_line() {
        let o = offers("250-mx.example\r\n250-STARTTLS\r\n250-AUTH LOGIN PLAIN\r\n250 SIZE 1000\r\n");
        assert_eq!(o, Offers { starttls: true, auth: vec!["LOGIN".into(), "PLAIN".into()] });
        assert_eq!(offers("250-x\r\n250 AUTH=login\r\n").auth, vec!["LOGIN".to_string()]);
        assert_eq!(offers("250 x\r\n"), Offers::default());
    }
}
