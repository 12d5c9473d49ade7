//! The TLS client for outbound `sips:`/`transport=tls` connections: the system's trust
//! store plus `ca_file`, the gateway's own certificate as a client certificate when
//! configured (mutual TLS between federating gateways), and the server's certificate
//! checked against the SIP *domain* the request was for (RFC 5922 §7.2: a `sip:` URI or
//! dNSName subjectAltName naming it, no wildcards), not against the SRV target's name.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, Error, RootCertStore, SignatureScheme};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::PrivateKeyDer;

use crate::certname;
use crate::transport::TlsConnector;

/// What the TLS client trusts and presents.
#[derive(Debug, Clone, Default)]
pub struct TlsClientSettings {
    /// PEM CA certificates trusted besides the system's (`ca_file`).
    pub ca_pem: Option<Vec<u8>>,
    /// Whether the system's trust store is used (`/etc/ssl/certs`).
    pub system_roots: bool,
    /// PEM certificate chain and private key presented to servers that ask.
    pub identity: Option<(Vec<u8>, Vec<u8>)>,
}

fn io(what: &str, e: &dyn std::fmt::Display) -> std::io::Error {
    std::io::Error::other(format!("{what}: {e}"))
}

/// The trust anchors of `settings` (the system's and `ca_file`), `None` when there are
/// none. Also what the TLS listener accepts client certificates from.
pub fn roots(settings: &TlsClientSettings) -> std::io::Result<Option<RootCertStore>> {
    let mut roots = RootCertStore::empty();
    if settings.system_roots {
        let found = rustls_native_certs::load_native_certs();
        let (added, _) = roots.add_parsable_certificates(found.certs);
        tracing::debug!(added, "system trust store loaded for SIP TLS");
    }
    if let Some(pem) = &settings.ca_pem {
        let mut any = false;
        for cert in CertificateDer::pem_slice_iter(pem) {
            let cert = cert.map_err(|e| io("ca_file", &e))?;
            roots.add(cert).map_err(|e| io("ca_file", &e))?;
            any = true;
        }
        if !any {
            return Err(std::io::Error::other("ca_file: no PEM certificate in it"));
        }
    }
    Ok((!roots.is_empty()).then_some(roots))
}

/// The connector for `settings`.
pub fn client(settings: &TlsClientSettings) -> std::io::Result<TlsConnector> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier: Arc<dyn ServerCertVerifier> = match roots(settings)? {
        None => Arc::new(NoRoots),
        Some(roots) => {
            let webpki =
                WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                    .build()
                    .map_err(|e| io("trust store", &e))?;
            Arc::new(Rfc5922 { webpki })
        }
    };
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| io("TLS", &e))?
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    let config = match &settings.identity {
        Some((cert, key)) => {
            let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert)
                .collect::<Result<_, _>>()
                .map_err(|e| io("certificate", &e))?;
            let key = PrivateKeyDer::from_pem_slice(key).map_err(|e| io("private_key", &e))?;
            builder
                .with_client_auth_cert(certs, key)
                .map_err(|e| io("certificate", &e))?
        }
        None => builder.with_no_client_auth(),
    };
    Ok(TlsConnector::from(Arc::new(config)))
}

/// webpki for the chain, validity and signatures; RFC 5922 for the name when it is a
/// domain (an IP address, e.g. an outbound proxy's, is checked by webpki as usual).
#[derive(Debug)]
struct Rfc5922 {
    webpki: Arc<WebPkiServerVerifier>,
}

impl ServerCertVerifier for Rfc5922 {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        let checked = self.webpki.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        );
        let ServerName::DnsName(domain) = server_name else {
            return checked;
        };
        match checked {
            // webpki checks the chain before the name: a name it does not take (a `sip:`
            // URI, which it does not read) is for RFC 5922 to judge.
            Ok(_)
            | Err(Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => {}
            Err(e) => return Err(e),
        }
        let names = certname::subject_names(end_entity.as_ref())
            .map_err(|_| Error::InvalidCertificate(CertificateError::BadEncoding))?;
        if names.names(domain.as_ref()) {
            Ok(ServerCertVerified::assertion())
        } else {
            tracing::info!(domain = domain.as_ref(), names = ?names.all(), "TLS: the certificate does not name the domain (RFC 5922)");
            Err(Error::InvalidCertificate(CertificateError::NotValidForName))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.webpki.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.webpki.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.webpki.supported_verify_schemes()
    }
}

/// No trust anchor at all (no system store, no `ca_file`): every server is refused.
#[derive(Debug)]
struct NoRoots;

impl NoRoots {
    fn refuse<T>() -> Result<T, Error> {
        Err(Error::InvalidCertificate(CertificateError::UnknownIssuer))
    }
}

impl ServerCertVerifier for NoRoots {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        NoRoots::refuse()
    }

    fn verify_tls12_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        NoRoots::refuse()
    }

    fn verify_tls13_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        NoRoots::refuse()
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        rustls::crypto::ring::default_provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}
