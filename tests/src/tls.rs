//! The test certificate authority. Every TLS endpoint the suite starts (the
//! worker under `wrangler dev`, the TLS terminator in front of Kafka)
//! presents a certificate this CA signed, and every client (the suite's own,
//! the bridge via `--ca-file`, librdkafka via `ssl.ca.location`) trusts this
//! CA and nothing else: the tests exercise real certificate verification, as
//! in production, rather than "accept any certificate".
//!
//! One CA per test process, generated on first use into a temp directory:
//! no key is checked in and none outlives the run.

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose, SanType,
};
use rustls::{ClientConfig, RootCertStore};
use rustls_pki_types::CertificateDer;

use crate::fresh_dir;

/// The CA and the one server certificate it issued, as files.
struct TestCa {
    ca_file: PathBuf,
    ca_der: CertificateDer<'static>,
    server: ServerCert,
}

/// A server certificate for `127.0.0.1` and `localhost`, signed by the test CA.
pub struct ServerCert {
    /// The certificate (PEM), as `wrangler dev --https-cert-path` wants it.
    pub cert: PathBuf,
    /// Its private key (PEM), as `wrangler dev --https-key-path` wants it.
    pub key: PathBuf,
    /// Certificate and key in one PEM file, as socat's `cert=` wants them.
    pub combined: PathBuf,
}

fn test_ca() -> &'static TestCa {
    static CA: OnceLock<TestCa> = OnceLock::new();
    CA.get_or_init(TestCa::generate)
}

impl TestCa {
    fn generate() -> TestCa {
        let dir = fresh_dir("tls");
        let write = |name: &str, text: &str| {
            let path = dir.join(name);
            std::fs::write(&path, text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            path
        };

        let ca_key = KeyPair::generate().expect("a CA key");
        let mut params = CertificateParams::default();
        params
            .distinguished_name
            .push(DnType::CommonName, "roomcast e2e test CA");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca = params.self_signed(&ca_key).expect("a self-signed CA");

        // Clients dial 127.0.0.1 (the worker, the Kafka advertised listener);
        // `localhost` is there for whoever types it by hand.
        let key = KeyPair::generate().expect("a server key");
        let mut params = CertificateParams::default();
        params
            .distinguished_name
            .push(DnType::CommonName, "roomcast e2e server");
        params.subject_alt_names = vec![
            SanType::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST)),
            SanType::DnsName("localhost".try_into().expect("a DNS name")),
        ];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let server = params
            .signed_by(&key, &ca, &ca_key)
            .expect("a server certificate");

        TestCa {
            ca_file: write("ca.pem", &ca.pem()),
            ca_der: ca.der().clone(),
            server: ServerCert {
                cert: write("server.pem", &server.pem()),
                key: write("server.key", &key.serialize_pem()),
                combined: write(
                    "server+key.pem",
                    &format!("{}{}", server.pem(), key.serialize_pem()),
                ),
            },
        }
    }
}

/// The test CA's certificate (PEM): what the bridge gets as `--ca-file` and
/// librdkafka as `ssl.ca.location`.
pub fn ca_file() -> &'static Path {
    &test_ca().ca_file
}

/// The server certificate every TLS endpoint of the suite presents.
pub fn server_cert() -> &'static ServerCert {
    &test_ca().server
}

/// A rustls client configuration that trusts the test CA only, with the ring
/// provider chosen here rather than whatever the process default is.
pub fn client_config() -> ClientConfig {
    let mut roots = RootCertStore::empty();
    roots
        .add(test_ca().ca_der.clone())
        .expect("the test CA is a valid trust anchor");
    ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .expect("ring supports the default TLS versions")
        .with_root_certificates(roots)
        .with_no_client_auth()
}

/// An HTTP client builder that speaks TLS with [`client_config`]; callers
/// add their own timeouts.
pub fn http_client() -> reqwest::ClientBuilder {
    reqwest::Client::builder().use_preconfigured_tls(client_config())
}
