//! Certificates, keys and the pinned-certificate verifiers.
//!
//! LLMPack has no certificate authority: each end holds a self-signed
//! certificate (made by [`generate`]) and the other end pins it. The pin is
//! the whole trust decision, so the verifiers ignore names and validity dates
//! and only compare the DER of the presented certificate with the pinned one;
//! they still check the TLS 1.3 handshake signature, which proves the peer
//! holds the private key.

use std::fmt;
use std::io::BufReader;
use std::path::Path;
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use sha2::{Digest, Sha256};

mod pin;

pub(crate) use pin::{PinnedClientVerifier, PinnedServerVerifier};

/// ALPN protocol id both ends offer; a peer without it cannot connect.
pub const ALPN: &[u8] = b"llmpack/1";

/// Errors from loading or generating certificates and keys.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// A certificate or key file could not be read.
    #[error("cannot read {path}")]
    Read {
        /// The file.
        path: String,
        /// Why reading failed.
        source: std::io::Error,
    },
    /// The PEM text is damaged (bad base64, unterminated block).
    #[error("{origin}: malformed PEM")]
    Pem {
        /// The file or text the PEM came from.
        origin: String,
        /// What the PEM parser reported.
        source: std::io::Error,
    },
    /// The PEM text holds no certificate.
    #[error(
        "no certificate in {origin}; expected a `BEGIN CERTIFICATE` block (make one with `llmpack keygen`)"
    )]
    NoCertificate {
        /// The file or text searched.
        origin: String,
    },
    /// The PEM text holds no private key.
    #[error(
        "no private key in {origin}; expected a `BEGIN PRIVATE KEY` block (make one with `llmpack keygen`)"
    )]
    NoKey {
        /// The file or text searched.
        origin: String,
    },
    /// The private key cannot be used, or does not belong to the certificate.
    #[error(
        "private key in {key} does not fit the certificate in {cert} (use the pair written by `llmpack keygen`)"
    )]
    Key {
        /// Where the key came from.
        key: String,
        /// Where the certificate came from.
        cert: String,
        /// What rustls reported.
        source: rustls::Error,
    },
    /// Certificate generation failed.
    #[error("cannot generate a certificate for {name:?}")]
    Generate {
        /// The subject alternative name asked for.
        name: String,
        /// What rcgen reported.
        source: rcgen::Error,
    },
}

/// The crypto provider every config in this crate is built with.
pub(crate) fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Generates a self-signed ECDSA P-256 certificate whose subject alternative
/// name is `name`, and returns (certificate PEM, private-key PEM).
pub fn generate(name: &str) -> Result<(String, String), TlsError> {
    let certified =
        rcgen::generate_simple_self_signed(vec![name.to_owned()]).map_err(|source| {
            TlsError::Generate {
                name: name.to_owned(),
                source,
            }
        })?;
    Ok((certified.cert.pem(), certified.signing_key.serialize_pem()))
}

/// A certificate and its private key: what this end presents to its peer.
pub struct Identity {
    cert: CertificateDer<'static>,
    key: PrivateKeyDer<'static>,
}

impl Identity {
    /// Loads a PEM certificate and a PEM private key from two files.
    ///
    /// The first certificate in `cert_path` is used. Fails if either file is
    /// unreadable or empty of the expected item, or if the key does not
    /// belong to the certificate.
    pub fn load(
        cert_path: impl AsRef<Path>,
        key_path: impl AsRef<Path>,
    ) -> Result<Identity, TlsError> {
        let (cert_path, key_path) = (cert_path.as_ref(), key_path.as_ref());
        let cert_pem = read(cert_path)?;
        let key_pem = read(key_path)?;
        let origin = |p: &Path| p.display().to_string();
        Identity::parse(&cert_pem, &origin(cert_path), &key_pem, &origin(key_path))
    }

    /// Builds an identity from PEM text (see [`Identity::load`]).
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Identity, TlsError> {
        Identity::parse(
            cert_pem.as_bytes(),
            "the certificate PEM",
            key_pem.as_bytes(),
            "the key PEM",
        )
    }

    fn parse(
        cert_pem: &[u8],
        cert_origin: &str,
        key_pem: &[u8],
        key_origin: &str,
    ) -> Result<Identity, TlsError> {
        let cert = parse_certificate(cert_pem, cert_origin)?;
        let key = rustls_pemfile::private_key(&mut BufReader::new(key_pem))
            .map_err(|source| TlsError::Pem {
                origin: key_origin.to_owned(),
                source,
            })?
            .ok_or_else(|| TlsError::NoKey {
                origin: key_origin.to_owned(),
            })?;
        rustls::sign::CertifiedKey::from_der(vec![cert.clone()], key.clone_key(), &provider())
            .map_err(|source| TlsError::Key {
                key: key_origin.to_owned(),
                cert: cert_origin.to_owned(),
                source,
            })?;
        Ok(Identity { cert, key })
    }

    /// The certificate this identity presents.
    pub fn certificate(&self) -> &CertificateDer<'static> {
        &self.cert
    }

    /// SHA-256 fingerprint of the certificate (see [`fingerprint`]).
    pub fn fingerprint(&self) -> String {
        fingerprint(&self.cert)
    }

    pub(crate) fn chain_and_key(&self) -> (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>) {
        (vec![self.cert.clone()], self.key.clone_key())
    }

    /// The private key's DER bytes (for keys derived from it).
    pub(crate) fn key_der(&self) -> &[u8] {
        self.key.secret_der()
    }
}

impl Clone for Identity {
    fn clone(&self) -> Self {
        Identity {
            cert: self.cert.clone(),
            key: self.key.clone_key(),
        }
    }
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Identity")
            .field("cert", &self.fingerprint())
            .field("key", &"***")
            .finish()
    }
}

/// Loads the first certificate of a PEM file: the peer certificate to pin.
pub fn load_certificate(path: impl AsRef<Path>) -> Result<CertificateDer<'static>, TlsError> {
    let path = path.as_ref();
    parse_certificate(&read(path)?, &path.display().to_string())
}

/// Lowercase hex SHA-256 of a certificate's DER, 64 characters.
pub fn fingerprint(cert: &CertificateDer<'_>) -> String {
    hex::encode(Sha256::digest(cert.as_ref()))
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.display().to_string(),
        source,
    })
}

pub(crate) fn parse_certificate(
    pem: &[u8],
    origin: &str,
) -> Result<CertificateDer<'static>, TlsError> {
    match rustls_pemfile::certs(&mut BufReader::new(pem)).next() {
        Some(Ok(cert)) => Ok(cert),
        Some(Err(source)) => Err(TlsError::Pem {
            origin: origin.to_owned(),
            source,
        }),
        None => Err(TlsError::NoCertificate {
            origin: origin.to_owned(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_pair_loads_and_fingerprints() {
        let (cert, key) = generate("llmpack").unwrap();
        let id = Identity::from_pem(&cert, &key).unwrap();
        assert_eq!(id.fingerprint().len(), 64);
        assert!(format!("{id:?}").contains("***"));
        assert!(!format!("{id:?}").contains("PRIVATE"));
    }

    #[test]
    fn key_of_another_certificate_is_rejected() {
        let (cert, _) = generate("a").unwrap();
        let (_, key) = generate("b").unwrap();
        let err = Identity::from_pem(&cert, &key).unwrap_err();
        assert!(matches!(err, TlsError::Key { .. }), "{err}");
    }

    #[test]
    fn errors_name_the_file() {
        let dir = std::env::temp_dir().join(format!("llmpack-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (cert, key) = generate("x").unwrap();
        let (cert_path, key_path) = (dir.join("sender.crt"), dir.join("sender.key"));
        std::fs::write(&cert_path, &key).unwrap(); // a key where the certificate belongs
        std::fs::write(&key_path, &cert).unwrap();
        let err = Identity::load(&cert_path, &key_path)
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("no certificate in ") && err.contains("sender.crt"),
            "{err}"
        );
        std::fs::write(&cert_path, &cert).unwrap();
        let err = Identity::load(&cert_path, &key_path)
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("no private key in ") && err.contains("sender.key"),
            "{err}"
        );
        std::fs::write(&key_path, &key).unwrap();
        Identity::load(&cert_path, &key_path).unwrap();
        let err = load_certificate(dir.join("missing.crt"))
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("cannot read ") && err.contains("missing.crt"),
            "{err}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
