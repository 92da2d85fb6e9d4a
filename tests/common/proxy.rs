//! A TCP proxy on a free loopback port in front of a real server (etcd, PostgreSQL), that a
//! test can cut — every connection closed, new ones refused, as when a server or a network
//! path goes away — or freeze — every connection kept open and nothing forwarded, as a hung
//! server or a stuck network path does (the operating system still acknowledges what was sent,
//! so no TCP timeout fires: only the application can notice).

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub struct Proxy {
    pub port: u16,
    cut: Arc<AtomicBool>,
    frozen: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    conns: Arc<Mutex<Vec<TcpStream>>>,
    /// When the server last sent something to a client.
    replied: Arc<Mutex<Option<Instant>>>,
}

impl Proxy {
    /// Forward 127.0.0.1:`port` (a free port) to `upstream` (`host:port`).
    pub fn start(upstream: &str) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        listener.set_nonblocking(true).unwrap();
        let p = Proxy {
            port,
            cut: Arc::default(),
            frozen: Arc::default(),
            stop: Arc::default(),
            conns: Arc::default(),
            replied: Arc::default(),
        };
        let (cut, frozen, stop, conns, replied, up) =
            (p.cut.clone(), p.frozen.clone(), p.stop.clone(), p.conns.clone(), p.replied.clone(), upstream.to_string());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((client, _)) if cut.load(Ordering::SeqCst) => drop(client),
                    Ok((client, _)) => {
                        let Ok(server) = TcpStream::connect(&up) else { continue };
                        let mut kept = conns.lock().unwrap();
                        kept.push(client.try_clone().unwrap());
                        kept.push(server.try_clone().unwrap());
                        let directions = [
                            (client.try_clone().unwrap(), server.try_clone().unwrap(), None),
                            (server, client, Some(replied.clone())),
                        ];
                        for (from, to, sent) in directions {
                            let (frozen, stop) = (frozen.clone(), stop.clone());
                            std::thread::spawn(move || pump(from, to, &frozen, &stop, sent.as_deref()));
                        }
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => std::thread::park_timeout(Duration::from_millis(10)),
                    Err(_) => return,
                }
            }
        });
        p
    }

    /// Close every connection and refuse new ones.
    pub fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
        for s in self.conns.lock().unwrap().drain(..) {
            let _ = s.shutdown(Shutdown::Both);
        }
    }

    /// When the server last sent anything to a client through this proxy.
    pub fn last_reply(&self) -> Option<Instant> {
        *self.replied.lock().unwrap()
    }

    /// Accept connections again.
    pub fn restore(&self) {
        self.cut.store(false, Ordering::SeqCst);
    }

    /// Stop forwarding (connections stay open).
    pub fn freeze(&self) {
        self.frozen.store(true, Ordering::SeqCst);
    }

    /// Forward again.
    pub fn thaw(&self) {
        self.frozen.store(false, Ordering::SeqCst);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// Forward `from` to `to` until either closes; `sent`: where to note when something was sent.
fn pump(
    mut from: TcpStream,
    mut to: TcpStream,
    frozen: &AtomicBool,
    stop: &AtomicBool,
    sent: Option<&Mutex<Option<Instant>>>,
) {
    from.set_read_timeout(Some(Duration::from_millis(20))).unwrap();
    let mut buf = [0u8; 16 * 1024];
    while !stop.load(Ordering::Relaxed) {
        if frozen.load(Ordering::Relaxed) {
            // Read nothing: what the peer sends waits in the kernel's buffers.
            std::thread::park_timeout(Duration::from_millis(10));
            continue;
        }
        match from.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
                if let Some(sent) = sent {
                    *sent.lock().unwrap() = Some(Instant::now());
                }
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => break,
        }
    }
    let _ = to.shutdown(Shutdown::Both);
}
