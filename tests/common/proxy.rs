//! A TCP proxy on a free loopback port in front of a real server, that a test can freeze: while
//! frozen it keeps every connection open and forwards nothing, as a hung server or a stuck
//! network path does (the operating system still acknowledges what was sent, so no TCP timeout
//! fires: only the application can notice).

use std::io::{ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

pub struct Proxy {
    pub port: u16,
    frozen: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
}

impl Proxy {
    /// Forward 127.0.0.1:`port` (a free port) to `upstream` (`host:port`).
    pub fn start(upstream: &str) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        listener.set_nonblocking(true).unwrap();
        let (frozen, stop) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicBool::new(false)));
        let (f, s, up) = (frozen.clone(), stop.clone(), upstream.to_string());
        std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((client, _)) => {
                        let Ok(server) = TcpStream::connect(&up) else { continue };
                        for (from, to) in [(client.try_clone().unwrap(), server.try_clone().unwrap()), (server, client)]
                        {
                            let (f, s) = (f.clone(), s.clone());
                            std::thread::spawn(move || pump(from, to, &f, &s));
                        }
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => std::thread::park_timeout(Duration::from_millis(10)),
                    Err(_) => return,
                }
            }
        });
        Proxy { port, frozen, stop }
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

fn pump(mut from: TcpStream, mut to: TcpStream, frozen: &AtomicBool, stop: &AtomicBool) {
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
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => break,
        }
    }
    let _ = to.shutdown(std::net::Shutdown::Both);
}
