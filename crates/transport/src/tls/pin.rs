//! Verifiers that trust exactly one pinned certificate.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, SignatureScheme};

use super::fingerprint;

/// The presented certificate is not the pinned one. The message travels to
/// the peer as the TLS close reason, so it names only what the peer itself
/// presented, never the certificate this end expects.
#[derive(Debug, thiserror::Error)]
#[error("{role} certificate {got} is not the pinned certificate")]
struct PinMismatch {
    role: &'static str,
    got: String,
}

fn check_pin(
    role: &'static str,
    pinned: &CertificateDer<'_>,
    presented: &CertificateDer<'_>,
) -> Result<(), rustls::Error> {
    if presented.as_ref() == pinned.as_ref() {
        return Ok(());
    }
    let mismatch = PinMismatch {
        role,
        got: fingerprint(presented),
    };
    Err(rustls::Error::InvalidCertificate(CertificateError::Other(
        rustls::OtherError(Arc::new(mismatch)),
    )))
}

fn tls12_refused() -> rustls::Error {
    rustls::Error::PeerIncompatible(rustls::PeerIncompatible::Tls13RequiredForQuic)
}

/// Client side: accepts the server only if it presents the pinned certificate.
#[derive(Debug)]
pub(crate) struct PinnedServerVerifier {
    pinned: CertificateDer<'static>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl PinnedServerVerifier {
    pub(crate) fn new(pinned: CertificateDer<'static>, provider: &CryptoProvider) -> Self {
        PinnedServerVerifier {
            pinned,
            algorithms: provider.signature_verification_algorithms,
        }
    }
}

impl ServerCertVerifier for PinnedServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        check_pin("server", &self.pinned, end_entity)?;
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(tls12_refused())
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// Server side: demands a client certificate and accepts only the pinned one.
#[derive(Debug)]
pub(crate) struct PinnedClientVerifier {
    pinned: CertificateDer<'static>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl PinnedClientVerifier {
    pub(crate) fn new(pinned: CertificateDer<'static>, provider: &CryptoProvider) -> Self {
        PinnedClientVerifier {
            pinned,
            algorithms: provider.signature_verification_algorithms,
        }
    }
}

impl ClientCertVerifier for PinnedClientVerifier {
    fn client_auth_mandatory(&self) -> bool {
        true
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        check_pin("client", &self.pinned, end_entity)?;
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(tls12_refused())
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls::{generate, parse_certificate};

    #[test]
    fn pin_compares_der() {
        let (a, _) = generate("a").unwrap();
        let (b, _) = generate("a").unwrap();
        let a = parse_certificate(a.as_bytes(), "a").unwrap();
        let b = parse_certificate(b.as_bytes(), "b").unwrap();
        assert!(check_pin("server", &a, &a).is_ok());
        let err = check_pin("server", &a, &b).unwrap_err().to_string();
        // The message goes to the peer: it names what the peer presented,
        // never the pinned certificate.
        assert!(err.contains(&fingerprint(&b)), "{err}");
        assert!(!err.contains(&fingerprint(&a)), "{err}");
    }
}
