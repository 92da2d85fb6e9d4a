//! Trust for the TLS connections Rota opens: the `http` driver's calls, alarm webhooks and chat
//! robots, and SMTP.
//!
//! Why it exists: every outgoing connection must verify the server the same way, and one place
//! says how. By default a server is trusted when its chain leads to one of Mozilla's roots
//! (`webpki-roots`, compiled in: the same on every node, whatever the host's store holds, so
//! Slack, DingTalk, Feishu, WeCom and public https endpoints work out of the box). A channel or
//! an `http` spec may name a `ca_file` (PEM): then the certificates in it are the roots, instead
//! of Mozilla's, which is how a private CA is trusted. The cryptography is rustls with the *ring*
//! provider (aws-lc-rs needs cmake and clang to build).
//!
//! Must never: turn verification off, or fall back to plain text when TLS fails.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use rustls::{ClientConfig, RootCertStore};

/// Why a `ca_file` cannot be used; each message names the file and what to do.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CaFileError {
    /// The file cannot be read.
    #[error("cannot read `{path}`: {reason} (give a PEM file readable by the node, on every node)")]
    Read {
        /// The path given.
        path: String,
        /// The operating system's reason.
        reason: String,
    },
    /// It is not PEM, or holds no certificate.
    #[error("`{path}` holds no PEM certificate (-----BEGIN CERTIFICATE-----): {reason}")]
    NoCertificate {
        /// The path given.
        path: String,
        /// What the parser saw.
        reason: String,
    },
    /// A certificate in it does not parse as X.509.
    #[error("certificate {index} of `{path}` is not a valid X.509 certificate: {reason}")]
    Invalid {
        /// The path given.
        path: String,
        /// Its position in the file, from 1.
        index: usize,
        /// The parser's reason.
        reason: String,
    },
}

/// The certificates of a `ca_file`: read, parsed, each checked as a trust anchor.
#[derive(Debug, Clone)]
pub struct CaFile {
    certs: Vec<CertificateDer<'static>>,
    roots: Arc<RootCertStore>,
}

impl CaFile {
    /// Read the PEM file at `path`. Errors name the file and the problem.
    pub fn read(path: &str) -> Result<CaFile, CaFileError> {
        let bytes = std::fs::read(Path::new(path))
            .map_err(|e| CaFileError::Read { path: path.to_string(), reason: e.to_string() })?;
        CaFile::parse(path, &bytes)
    }

    /// Parse PEM `bytes` (read from `path`, named in errors).
    pub fn parse(path: &str, bytes: &[u8]) -> Result<CaFile, CaFileError> {
        let certs = CertificateDer::pem_slice_iter(bytes)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| CaFileError::NoCertificate { path: path.to_string(), reason: e.to_string() })?;
        if certs.is_empty() {
            return Err(CaFileError::NoCertificate { path: path.to_string(), reason: "none found".into() });
        }
        let mut roots = RootCertStore::empty();
        for (i, cert) in certs.iter().enumerate() {
            roots.add(cert.clone()).map_err(|e| CaFileError::Invalid {
                path: path.to_string(),
                index: i + 1,
                reason: e.to_string(),
            })?;
        }
        Ok(CaFile { certs, roots: Arc::new(roots) })
    }

    /// How many certificates it holds.
    pub fn len(&self) -> usize {
        self.certs.len()
    }

    /// Always false: a `CaFile` holds at least one certificate.
    pub fn is_empty(&self) -> bool {
        self.certs.is_empty()
    }
}

/// Read the `ca_file` named by `path`, if any.
pub fn ca_file(path: Option<&str>) -> Result<Option<CaFile>, CaFileError> {
    path.map(CaFile::read).transpose()
}

/// ureq's TLS settings: Mozilla's roots, or the certificates of `ca` only.
pub fn ureq_config(ca: Option<&CaFile>) -> ureq::tls::TlsConfig {
    let builder = ureq::tls::TlsConfig::builder().provider(ureq::tls::TlsProvider::Rustls);
    let roots = match ca {
        Some(ca) => ureq::tls::RootCerts::from(ca.certs.iter().map(|c| ureq::tls::Certificate::from_der(c).to_owned())),
        None => ureq::tls::RootCerts::WebPki,
    };
    builder.root_certs(roots).build()
}

/// A rustls client config (for SMTP): Mozilla's roots, or the certificates of `ca` only; TLS 1.2
/// and 1.3 with the ring provider.
pub fn rustls_config(ca: Option<&CaFile>) -> Arc<ClientConfig> {
    let roots = match ca {
        Some(ca) => ca.roots.clone(),
        None => Arc::new(RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.to_vec() }),
    };
    // The process's provider: the one the crate features build, ring (as ureq's). The versions
    // are rustls' defaults, TLS 1.3 and 1.2.
    let config = ClientConfig::builder().with_root_certificates(roots).with_no_client_auth();
    Arc::new(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_file_names_the_path() {
        let e = CaFile::read("/nonexistent/ca.pem").unwrap_err();
        assert!(matches!(&e, CaFileError::Read { path, .. } if path == "/nonexistent/ca.pem"), "{e}");
    }

    #[test]
    fn a_file_without_a_certificate_is_refused() {
        let e = CaFile::parse("x.pem", b"hello\n").unwrap_err();
        assert!(matches!(e, CaFileError::NoCertificate { .. }), "{e}");
        let garbage = b"-----BEGIN CERTIFICATE-----\naGVsbG8=\n-----END CERTIFICATE-----\n";
        let e = CaFile::parse("x.pem", garbage).unwrap_err();
        assert!(matches!(e, CaFileError::Invalid { index: 1, .. }), "{e}");
    }

    #[test]
    fn mozilla_roots_make_a_config() {
        assert!(!rustls_config(None).crypto_provider().cipher_suites.is_empty());
        let c = ureq_config(None);
        assert!(matches!(c.root_certs(), ureq::tls::RootCerts::WebPki));
    }
}
