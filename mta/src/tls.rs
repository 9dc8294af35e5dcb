//! TLS for SMTP (rustls, with ring as the crypto provider): the server's certificate from
//! `control/servercert.pem`, a self-signed pair for a fresh installation, and the client
//! configurations remote delivery uses. Everything here works over any byte stream, so the
//! simulator's network carries TLS as a real host's does.

use std::path::Path;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, ServerConfig, SignatureScheme};

use crate::env::Fs;

/// The control file holding the server's certificate chain and private key (PEM, both in one
/// file, as netqmail's TLS patch keeps them).
pub const SERVERCERT: &str = "control/servercert.pem";

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{file}: {why}")]
    Cert { file: String, why: String },
    #[error("cannot read {file}: {source}")]
    Read {
        file: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot make a certificate: {0}")]
    Generate(String),
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A server configuration from PEM text holding the chain (leaf first) and the key.
pub fn server_config(pem: &[u8], file: &str) -> Result<Arc<ServerConfig>, TlsError> {
    let bad = |why: String| TlsError::Cert {
        file: file.to_string(),
        why,
    };
    let chain = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(format!("bad certificate: {e}")))?;
    if chain.is_empty() {
        return Err(bad("no CERTIFICATE block".into()));
    }
    let key =
        PrivateKeyDer::from_pem_slice(pem).map_err(|e| bad(format!("no private key: {e}")))?;
    let cfg = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| bad(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| bad(format!("certificate and key do not go together: {e}")))?;
    Ok(Arc::new(cfg))
}

/// The server configuration from `control/servercert.pem`; `None` when the file is missing
/// (no STARTTLS offered, no implicit TLS).
pub fn load_server<F: Fs>(fs: &F, root: &Path) -> Result<Option<Arc<ServerConfig>>, TlsError> {
    match fs.read(&root.join(SERVERCERT)) {
        Ok(pem) => server_config(&pem, SERVERCERT).map(Some),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(TlsError::Read {
            file: SERVERCERT.into(),
            source,
        }),
    }
}

/// A self-signed certificate for `host` and its key, as one PEM text (key first, the order
/// Postfix's `smtpd_tls_chain_files` wants too).
pub fn self_signed(host: &str) -> Result<String, TlsError> {
    let key = rcgen::KeyPair::generate().map_err(|e| TlsError::Generate(e.to_string()))?;
    let params = rcgen::CertificateParams::new(vec![host.to_string()])
        .map_err(|e| TlsError::Generate(e.to_string()))?;
    let cert = params
        .self_signed(&key)
        .map_err(|e| TlsError::Generate(e.to_string()))?;
    Ok(format!("{}{}", key.serialize_pem(), cert.pem()))
}

/// How remote delivery treats TLS toward one destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientTls {
    /// STARTTLS when the server offers it, without checking its certificate; a failed
    /// handshake is retried without TLS.
    Opportunistic,
    /// TLS or no delivery (deferred); with `verify`, the certificate must name the host and
    /// chain to a root in the system's store.
    Required { verify: bool },
}

/// The client configuration: checking certificates against `roots`, or accepting any
/// certificate (opportunistic TLS protects against passive eavesdroppers only, as every MTA's
/// does: unverified is still better than plain text).
pub fn client_config(roots: Option<rustls::RootCertStore>) -> Arc<ClientConfig> {
    let b = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("ring supports the default versions");
    let cfg = match roots {
        Some(r) => b.with_root_certificates(r).with_no_client_auth(),
        None => b
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyCert(provider())))
            .with_no_client_auth(),
    };
    Arc::new(cfg)
}

/// The system's trusted roots (`/etc/ssl/certs/ca-certificates.crt` and its usual
/// alternatives), read through the environment's filesystem.
pub fn system_roots<F: Fs>(fs: &F) -> rustls::RootCertStore {
    let mut store = rustls::RootCertStore::empty();
    for f in [
        "/etc/ssl/certs/ca-certificates.crt",
        "/etc/pki/tls/certs/ca-bundle.crt",
        "/etc/ssl/cert.pem",
    ] {
        if let Ok(pem) = fs.read(Path::new(f)) {
            let certs = CertificateDer::pem_slice_iter(&pem).filter_map(Result::ok);
            store.add_parsable_certificates(certs);
            break;
        }
    }
    store
}

/// The name to present and check: a host name, or an address for `[ip]` relays.
pub fn server_name(host: &str) -> Option<ServerName<'static>> {
    let h = host.trim_start_matches('[').trim_end_matches(']');
    ServerName::try_from(h.to_string()).ok()
}

/// Accepts every certificate but still checks the handshake's signatures.
#[derive(Debug)]
struct AnyCert(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for AnyCert {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn self_signed_pair_loads() {
        let pem = self_signed("mail.example.org").unwrap();
        assert!(pem.contains("BEGIN CERTIFICATE") && pem.contains("PRIVATE KEY"));
        server_config(pem.as_bytes(), SERVERCERT).unwrap();
    }

    #[test]
    fn bad_files_are_named() {
        let e = server_config(b"junk", SERVERCERT).unwrap_err().to_string();
        assert!(
            e.starts_with("control/servercert.pem: no CERTIFICATE"),
            "{e}"
        );
        let pem = self_signed("a.example").unwrap();
        let cert_only = &pem[pem.find("-----BEGIN CERTIFICATE").unwrap()..];
        let e = server_config(cert_only.as_bytes(), SERVERCERT).unwrap_err();
        assert!(e.to_string().contains("no private key"), "{e}");
    }
}
