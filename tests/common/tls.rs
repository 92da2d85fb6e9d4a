//! TLS receivers for tests: a private CA and a server certificate made with `openssl` at test
//! time, and Python servers that speak TLS through OpenSSL (Python's `ssl`), so Rota's rustls
//! client is checked against another implementation: an HTTPS receiver (`http.server`) and an
//! SMTP server with STARTTLS and AUTH (`aiosmtpd`, pinned in scripts/test.sh's venv).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;

/// A private CA and a certificate it signed for `127.0.0.1` and `localhost`.
pub struct TestCa {
    pub dir: tempfile::TempDir,
    /// The CA's certificate (PEM): what a `ca_file` names.
    pub ca_pem: PathBuf,
    /// The server's certificate and key (PEM).
    pub cert: PathBuf,
    pub key: PathBuf,
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl").args(args).current_dir(dir).output().expect("openssl must be installed");
    assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

impl TestCa {
    pub fn new() -> TestCa {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        openssl(
            d,
            &[
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-keyout",
                "ca.key",
                "-out",
                "ca.pem",
                "-days",
                "2",
                "-subj",
                "/CN=Rota test CA",
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign,cRLSign",
            ],
        );
        openssl(
            d,
            &[
                "req",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-keyout",
                "server.key",
                "-out",
                "server.csr",
                "-subj",
                "/CN=localhost",
            ],
        );
        std::fs::write(
            d.join("server.ext"),
            "basicConstraints=CA:FALSE\nsubjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n",
        )
        .unwrap();
        openssl(
            d,
            &[
                "x509",
                "-req",
                "-in",
                "server.csr",
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                "server.pem",
                "-days",
                "2",
                "-extfile",
                "server.ext",
            ],
        );
        TestCa { ca_pem: d.join("ca.pem"), cert: d.join("server.pem"), key: d.join("server.key"), dir }
    }
}

/// The Python to run receivers with: `ROTA_TEST_PYTHON` (scripts/test.sh's venv, which has
/// aiosmtpd), else None.
pub fn venv_python() -> Option<PathBuf> {
    std::env::var_os("ROTA_TEST_PYTHON").map(PathBuf::from)
}

/// A Python receiver: prints `PORT n`, then one JSON line per request it took.
pub struct PyServer {
    child: Child,
    pub port: u16,
    seen: Arc<Mutex<Vec<Value>>>,
    _script: tempfile::TempDir,
}

impl PyServer {
    fn start(python: &Path, source: &str, args: &[&Path]) -> PyServer {
        let script = tempfile::tempdir().unwrap();
        let file = script.path().join("receiver.py");
        std::fs::write(&file, source).unwrap();
        let mut child = Command::new(python)
            .arg(&file)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("{}: {e}", python.display()));
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let first = lines.next().expect("the receiver said nothing").unwrap();
        let port: u16 = first.strip_prefix("PORT ").and_then(|p| p.trim().parse().ok()).expect(&first);
        let seen = Arc::new(Mutex::new(Vec::new()));
        let sink = seen.clone();
        std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                sink.lock().unwrap().push(serde_json::from_str(&line).unwrap_or(Value::String(line)));
            }
        });
        PyServer { child, port, seen, _script: script }
    }

    /// An HTTPS receiver with `ca`'s server certificate, answering 200 `{"errcode": 0}`.
    pub fn https(ca: &TestCa) -> PyServer {
        let python = venv_python().unwrap_or_else(|| PathBuf::from("python3"));
        PyServer::start(&python, HTTPS_RECEIVER, &[&ca.cert, &ca.key])
    }

    /// An SMTP server with `ca`'s server certificate and one user (`rota`, password `pw`):
    /// `starttls` offers AUTH (PLAIN, LOGIN) only after STARTTLS; `tls` is TLS from the first
    /// byte and offers AUTH LOGIN only. None without `ROTA_TEST_PYTHON`.
    pub fn smtp(ca: &TestCa, mode: &str) -> Option<PyServer> {
        let python = venv_python()?;
        let port = super::free_port().to_string();
        Some(PyServer::start(&python, SMTP_RECEIVER, &[&ca.cert, &ca.key, Path::new(&port), Path::new(mode)]))
    }

    pub fn requests(&self) -> Vec<Value> {
        self.seen.lock().unwrap().clone()
    }

    pub fn wait_for(&self, n: usize, timeout: Duration) -> Vec<Value> {
        super::wait_until(timeout, &format!("{n} requests at the receiver"), || self.requests().len() >= n);
        self.requests()
    }
}

impl Drop for PyServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

const HTTPS_RECEIVER: &str = r#"
import json, ssl, sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

class Handler(BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        print(json.dumps({"path": self.path, "headers": {k.lower(): v for k, v in self.headers.items()},
                          "body": body.decode("utf-8", "replace")}), flush=True)
        answer = b'{"errcode": 0, "code": 0}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, *args):
        pass

server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(sys.argv[1], sys.argv[2])
server.socket = ctx.wrap_socket(server.socket, server_side=True)
print("PORT", server.server_address[1], flush=True)
server.serve_forever()
"#;

const SMTP_RECEIVER: &str = r#"
import json, ssl, sys, time
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

logins = {}

def authenticator(server, session, envelope, mechanism, auth_data):
    ok = isinstance(auth_data, LoginPassword) and auth_data.login == b"rota" and auth_data.password == b"pw"
    if ok:
        logins[id(session)] = (mechanism, auth_data.login.decode())
    return AuthResult(success=ok)

class Handler:
    async def handle_DATA(self, server, session, envelope):
        mechanism, login = logins.get(id(session), (None, None))
        tls = session.ssl is not None or server.transport.get_extra_info("ssl_object") is not None
        print(json.dumps({"tls": tls, "auth": mechanism, "login": login,
                          "from": envelope.mail_from, "to": envelope.rcpt_tos,
                          "content": envelope.content.decode("utf-8", "replace")}), flush=True)
        return "250 OK queued"

ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(sys.argv[1], sys.argv[2])
if sys.argv[4] == "starttls":
    controller = Controller(Handler(), hostname="127.0.0.1", port=int(sys.argv[3]), tls_context=ctx,
                            require_starttls=True, authenticator=authenticator, auth_require_tls=True)
else:
    controller = Controller(Handler(), hostname="127.0.0.1", port=int(sys.argv[3]), ssl_context=ctx,
                            authenticator=authenticator, auth_require_tls=False,
                            auth_exclude_mechanism=["PLAIN"])
controller.start()
print("PORT", controller.port, flush=True)
while True:
    time.sleep(3600)
"#;
