//! Sending one message to one channel: the HTTP POST of a webhook or a chat robot, or an e-mail
//! over SMTP. Blocking (ureq; a plain SMTP conversation on a `TcpStream`), so callers run it on a
//! blocking thread; every call is bounded by the channel's time limit, connecting included.
//!
//! Must never: follow a redirect (it would carry the signature elsewhere), read an unbounded
//! answer, or quote a channel's secret in an error.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::{accepted, dingtalk_sign, feishu_sign, signature, ChannelKind, Message};

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
    let config = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .max_redirects(0)
        .timeout_global(Some(timeout))
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

/// A plain SMTP conversation (RFC 5321): EHLO, AUTH PLAIN when a user is set, MAIL, RCPT,
/// DATA. Plain text only: this build has no TLS (`tls` must be `none`), so use a relay on a
/// trusted network.
fn email(config: &Value, m: &Message, timeout: Duration) -> Answer {
    let started = Instant::now();
    match smtp(config, m, timeout, started) {
        Ok(reply) => Answer { status: Some(250), body: cut(&reply), error: None },
        Err((code, reply)) => Answer { status: code, body: cut(&reply), error: Some(reply) },
    }
}

type SmtpError = (Option<u16>, String);

fn smtp(config: &Value, m: &Message, timeout: Duration, started: Instant) -> Result<String, SmtpError> {
    let s = |k: &str| config.get(k).and_then(Value::as_str).unwrap_or_default().to_string();
    let (host, from) = (s("host"), s("from"));
    let port = config.get("port").and_then(Value::as_u64).unwrap_or(25) as u16;
    let to: Vec<String> = config
        .get("to")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|v| v.as_str().map(String::from))
        .collect();
    let io = |e: std::io::Error| (None, format!("SMTP {host}:{port}: {e}"));
    let addr =
        (host.as_str(), port).to_socket_addrs().map_err(io)?.next().ok_or((None, format!("{host}: no address")))?;
    let stream = TcpStream::connect_timeout(&addr, timeout).map_err(io)?;
    let left = || timeout.saturating_sub(started.elapsed()).max(Duration::from_millis(1));
    stream.set_read_timeout(Some(left())).map_err(io)?;
    stream.set_write_timeout(Some(left())).map_err(io)?;
    let mut reader = BufReader::new(stream.try_clone().map_err(io)?);
    let mut w = stream;
    let mut expect = |w: &mut TcpStream, send: Option<&str>, want: u16| -> Result<String, SmtpError> {
        if let Some(line) = send {
            w.write_all(line.as_bytes()).and_then(|()| w.write_all(b"\r\n")).map_err(io)?;
        }
        if started.elapsed() >= timeout {
            return Err((None, format!("no answer within {} ms", timeout.as_millis())));
        }
        let mut reply = String::new();
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).map_err(io)? == 0 {
                return Err((None, format!("SMTP {host}:{port} closed the connection")));
            }
            reply.push_str(&line);
            // A multi-line reply continues while the fourth character is `-`.
            if line.as_bytes().get(3) != Some(&b'-') {
                break;
            }
        }
        let code = reply.get(..3).and_then(|c| c.parse::<u16>().ok());
        if code != Some(want) && !(want == 250 && code == Some(251)) {
            return Err((code, format!("SMTP answered `{}`", reply.trim_end())));
        }
        Ok(reply)
    };
    expect(&mut w, None, 220)?;
    expect(&mut w, Some("EHLO rota"), 250)?;
    let user = s("username");
    if !user.is_empty() {
        use base64::Engine;
        let token = base64::engine::general_purpose::STANDARD.encode(format!("\0{user}\0{}", s("password")));
        expect(&mut w, Some(&format!("AUTH PLAIN {token}")), 235)?;
    }
    expect(&mut w, Some(&format!("MAIL FROM:<{from}>")), 250)?;
    for rcpt in &to {
        expect(&mut w, Some(&format!("RCPT TO:<{rcpt}>")), 250)?;
    }
    expect(&mut w, Some("DATA"), 354)?;
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
    let reply = expect(&mut w, Some(&mail), 250)?;
    let _ = expect(&mut w, Some("QUIT"), 221);
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
