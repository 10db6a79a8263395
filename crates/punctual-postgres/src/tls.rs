//! TLS to PostgreSQL (issue 8, item 2), with libpq's `sslmode` semantics, over rustls.
//!
//! Owns: reading the TLS parameters out of a connection URL (`sslmode`, `sslrootcert`,
//! `sslcert`, `sslkey`: the driver only knows `disable`, `prefer` and `require`, so these are
//! taken out before it parses the rest) and building the one rustls configuration every
//! connection of a store uses, pooled or LISTEN. Must not: fall back to plaintext when the mode
//! says TLS, or accept a certificate the mode says to check.
//!
//! The modes, as libpq defines them (<https://www.postgresql.org/docs/current/libpq-ssl.html>):
//!
//! | `sslmode`         | encrypted            | certificate checked                        |
//! |-------------------|----------------------|--------------------------------------------|
//! | `disable`         | never                | -                                          |
//! | `prefer` (default)| if the server offers | no                                         |
//! | `require`         | always               | no; the chain, when `sslrootcert` is given |
//! | `verify-ca`       | always               | the chain, against `sslrootcert`           |
//! | `verify-full`     | always               | the chain and the host name                |
//!
//! `sslrootcert` names a PEM file of trusted certificate authorities, or `system` for the
//! operating system's; without it the verifying modes read `~/.postgresql/root.crt`, as libpq
//! does, and refuse to connect when that file is missing. `sslcert` and `sslkey` (PEM files,
//! given together) present a client certificate. `allow` (plaintext first) is refused.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use punctual_core::StoreError;
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};
use tokio_postgres::config::SslMode as DriverMode;
use tokio_postgres_rustls::MakeRustlsConnect;

/// How a store's connections use TLS: libpq's `sslmode`, less `allow`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SslMode {
    Disable,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl SslMode {
    fn parse(value: &str) -> Result<SslMode, StoreError> {
        Ok(match value {
            "disable" => SslMode::Disable,
            "prefer" => SslMode::Prefer,
            "require" => SslMode::Require,
            "verify-ca" => SslMode::VerifyCa,
            "verify-full" => SslMode::VerifyFull,
            "allow" => {
                return Err(setting(
                    "sslmode=allow is not supported: it tries a plaintext connection first; use \
                     prefer, or disable",
                ));
            }
            other => {
                return Err(setting(&format!(
                    "invalid sslmode `{other}`: expected disable, prefer, require, verify-ca or \
                     verify-full"
                )));
            }
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        }
    }

    fn driver(self) -> DriverMode {
        match self {
            SslMode::Disable => DriverMode::Disable,
            SslMode::Prefer => DriverMode::Prefer,
            SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => DriverMode::Require,
        }
    }
}

/// The TLS parameters a URL carried.
#[derive(Debug, Default, PartialEq, Eq)]
struct Parameters {
    mode: Option<SslMode>,
    root_cert: Option<String>,
    client_cert: Option<PathBuf>,
    client_key: Option<PathBuf>,
}

const TAKEN: [&str; 4] = ["sslmode", "sslrootcert", "sslcert", "sslkey"];

/// Takes the TLS parameters out of a `postgres://` URL's query and returns the rest of the URL
/// for the driver. A string in the key-value form is returned as it is: the driver reads its
/// `sslmode` (`disable`, `prefer` or `require`) itself.
fn split(url: &str) -> Result<(String, Parameters), StoreError> {
    let is_url = url.starts_with("postgres://") || url.starts_with("postgresql://");
    let Some((base, query)) = url.split_once('?').filter(|_| is_url) else {
        return Ok((url.to_owned(), Parameters::default()));
    };
    let mut parameters = Parameters::default();
    let mut kept = Vec::new();
    for pair in query.split('&').filter(|pair| !pair.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        if !TAKEN.contains(&key) {
            kept.push(pair);
            continue;
        }
        let value = percent_encoding::percent_decode_str(value)
            .decode_utf8()
            .map_err(|_| setting(&format!("the URL's {key} is not UTF-8")))?
            .into_owned();
        match key {
            "sslmode" => parameters.mode = Some(SslMode::parse(&value)?),
            "sslrootcert" => parameters.root_cert = Some(value),
            "sslcert" => parameters.client_cert = Some(PathBuf::from(value)),
            _ => parameters.client_key = Some(PathBuf::from(value)),
        }
    }
    let rest = if kept.is_empty() {
        base.to_owned()
    } else {
        format!("{base}?{}", kept.join("&"))
    };
    Ok((rest, parameters))
}

/// What every connection of one store negotiates.
#[derive(Clone)]
pub(crate) struct Tls {
    pub(crate) mode: SslMode,
    pub(crate) connector: MakeRustlsConnect,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls")
            .field("mode", &self.mode)
            .finish_non_exhaustive()
    }
}

/// Parses `url` into the driver's configuration and the store's TLS set-up, and sets the
/// driver's `sslmode` to match.
pub(crate) fn configure(url: &str) -> Result<(tokio_postgres::Config, Tls), StoreError> {
    let (rest, parameters) = split(url)?;
    let mut config: tokio_postgres::Config = rest.parse().map_err(|error| {
        // The core has no error for a bad setting; this is the closest that says "not now,
        // not like this". The driver's message does not echo a password.
        let hint = if url.contains("verify-") {
            " (verify-ca, verify-full and sslrootcert are read from a postgres:// URL's query)"
        } else {
            ""
        };
        setting(&format!("invalid PostgreSQL connection URL: {error}{hint}"))
    })?;
    let mode = parameters.mode.unwrap_or(match config.get_ssl_mode() {
        DriverMode::Disable => SslMode::Disable,
        DriverMode::Require => SslMode::Require,
        _ => SslMode::Prefer,
    });
    config.ssl_mode(mode.driver());
    let client = client_config(mode, &parameters)?;
    Ok((
        config,
        Tls {
            mode,
            connector: MakeRustlsConnect::new(client),
        },
    ))
}

fn client_config(mode: SslMode, parameters: &Parameters) -> Result<ClientConfig, StoreError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|error| setting(&format!("TLS set-up: {error}")))?;
    // libpq: `require` with a root certificate checks the chain like `verify-ca`.
    let check = match mode {
        SslMode::Disable | SslMode::Prefer => None,
        SslMode::Require => parameters.root_cert.as_ref().map(|_| SslMode::VerifyCa),
        SslMode::VerifyCa | SslMode::VerifyFull => Some(mode),
    };
    let verifier: Arc<dyn ServerCertVerifier> = match check {
        None => Arc::new(Unverified(Arc::clone(&provider))),
        Some(check) => {
            let roots = Arc::new(roots(check, parameters.root_cert.as_deref())?);
            let webpki = WebPkiServerVerifier::builder_with_provider(roots, Arc::clone(&provider))
                .build()
                .map_err(|error| setting(&format!("TLS set-up: {error}")))?;
            if check == SslMode::VerifyFull {
                webpki
            } else {
                Arc::new(ChainOnly(webpki))
            }
        }
    };
    let builder = builder
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    match (&parameters.client_cert, &parameters.client_key) {
        (None, None) => Ok(builder.with_no_client_auth()),
        (Some(cert), Some(key)) => {
            let chain = certificates(cert, "sslcert")?;
            let key = PrivateKeyDer::from_pem_file(key).map_err(|error| {
                setting(&format!("reading sslkey `{}`: {error}", key.display()))
            })?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|error| setting(&format!("sslcert and sslkey: {error}")))
        }
        _ => Err(setting("sslcert and sslkey must be given together")),
    }
}

/// The certificate authorities a verifying mode trusts.
fn roots(mode: SslMode, root_cert: Option<&str>) -> Result<RootCertStore, StoreError> {
    let mut store = RootCertStore::empty();
    if root_cert == Some("system") {
        let found = rustls_native_certs::load_native_certs();
        let (added, _) = store.add_parsable_certificates(found.certs);
        if added == 0 {
            return Err(setting(&format!(
                "sslrootcert=system, but no certificate authority was found on this system{}",
                found
                    .errors
                    .first()
                    .map(|error| format!(": {error}"))
                    .unwrap_or_default()
            )));
        }
        return Ok(store);
    }
    let path = match root_cert {
        Some(path) => PathBuf::from(path),
        None => match std::env::var_os("HOME")
            .map(|home| Path::new(&home).join(".postgresql/root.crt"))
        {
            Some(path) if path.exists() => path,
            _ => {
                return Err(setting(&format!(
                    "sslmode={} needs the certificate authorities to trust: add \
                     sslrootcert=<PEM file> to the URL (or sslrootcert=system for this \
                     system's), or put them in ~/.postgresql/root.crt",
                    mode.as_str()
                )));
            }
        },
    };
    for certificate in certificates(&path, "sslrootcert")? {
        store
            .add(certificate)
            .map_err(|error| setting(&format!("sslrootcert `{}`: {error}", path.display())))?;
    }
    Ok(store)
}

/// Every certificate in a PEM file; at least one.
fn certificates(path: &Path, parameter: &str) -> Result<Vec<CertificateDer<'static>>, StoreError> {
    let read = |error: &dyn std::fmt::Display| {
        setting(&format!(
            "reading {parameter} `{}`: {error}",
            path.display()
        ))
    };
    let certificates = CertificateDer::pem_file_iter(path)
        .map_err(|error| read(&error))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| read(&error))?;
    if certificates.is_empty() {
        return Err(read(&"the file holds no PEM certificate"));
    }
    Ok(certificates)
}

fn setting(message: &str) -> StoreError {
    StoreError::Unavailable(message.to_owned())
}

/// `prefer` and `require` without a root certificate: encrypted, and the handshake's
/// signatures checked, but any certificate accepted (libpq's behaviour; channel binding, when
/// the server asks for SCRAM, still detects a man in the middle).
#[derive(Debug)]
struct Unverified(Arc<CryptoProvider>);

impl ServerCertVerifier for Unverified {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
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

/// `verify-ca`: the full check, except that a certificate for another host name is accepted.
/// The chain is checked before the name, so a name error means the chain was trusted.
#[derive(Debug)]
struct ChainOnly(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
        {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_parameters_are_taken_out_of_the_url_and_the_rest_kept() {
        let (rest, parameters) = split(
            "postgres://ada@db:5432/jobs?application_name=x&sslmode=verify-full&sslrootcert=%2Fetc%2Fca%20b.pem&connect_timeout=3",
        )
        .unwrap();
        assert_eq!(
            rest,
            "postgres://ada@db:5432/jobs?application_name=x&connect_timeout=3"
        );
        assert_eq!(parameters.mode, Some(SslMode::VerifyFull));
        assert_eq!(parameters.root_cert.as_deref(), Some("/etc/ca b.pem"));

        let (rest, parameters) = split("postgres://db/jobs?sslmode=disable").unwrap();
        assert_eq!(rest, "postgres://db/jobs");
        assert_eq!(parameters.mode, Some(SslMode::Disable));

        let kv = "host=db sslmode=require";
        assert_eq!(split(kv).unwrap(), (kv.to_owned(), Parameters::default()));
    }

    #[test]
    fn the_mode_comes_from_the_url_and_defaults_to_prefer() {
        let mode =
            |url: &str| configure(url).map(|(config, tls)| (tls.mode, config.get_ssl_mode()));
        assert_eq!(
            mode("postgres://db/x").unwrap(),
            (SslMode::Prefer, DriverMode::Prefer)
        );
        assert_eq!(
            mode("postgres://db/x?sslmode=disable").unwrap(),
            (SslMode::Disable, DriverMode::Disable)
        );
        assert_eq!(
            mode("postgres://db/x?sslmode=require").unwrap(),
            (SslMode::Require, DriverMode::Require)
        );
        assert_eq!(
            mode("host=db sslmode=require").unwrap(),
            (SslMode::Require, DriverMode::Require)
        );
    }

    #[test]
    fn bad_tls_settings_are_refused_with_a_reason() {
        let refused = |url: &str| match configure(url) {
            Err(StoreError::Unavailable(message)) => message,
            other => panic!("{url}: expected a refusal, got {other:?}"),
        };
        assert!(refused("postgres://db/x?sslmode=verify").contains("invalid sslmode `verify`"));
        assert!(refused("postgres://db/x?sslmode=allow").contains("plaintext"));
        assert!(
            refused("postgres://db/x?sslmode=verify-full&sslrootcert=/nonexistent/ca.pem")
                .contains("reading sslrootcert `/nonexistent/ca.pem`")
        );
        assert!(refused("postgres://db/x?sslcert=/tmp/a.pem").contains("together"));
        assert!(refused("host=db sslmode=verify-full").contains("postgres:// URL"));
        let empty = tempfile_with("");
        assert!(
            refused(&format!(
                "postgres://db/x?sslmode=verify-ca&sslrootcert={}",
                empty.display()
            ))
            .contains("holds no PEM certificate")
        );
    }

    fn tempfile_with(text: &str) -> PathBuf {
        let path = std::env::temp_dir().join(format!(
            "punctual-tls-{}-{}.pem",
            std::process::id(),
            text.len()
        ));
        std::fs::write(&path, text).unwrap();
        path
    }
}
