//! TLS with libpq's `sslmode` semantics, against certificates the test makes.
//!
//! PostgreSQL negotiates TLS inside its own protocol (an `SSLRequest`, answered `S`), so a
//! front that answers `S`, completes the handshake with the test's certificate and then relays
//! the decrypted stream to the local server is, to the store, a PostgreSQL server with that
//! certificate. The front counts TLS sessions and refuses (and counts) plaintext, as a server
//! with only `hostssl` lines would. The last test goes to the local server itself, with its
//! own certificate.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use punctual_core::{ClaimRequest, JobOptions, Store, StoreError};
use punctual_postgres::{PgOptions, PgStore, tls_version};
use punctual_testkit::fixtures;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::{TestSchema, database_url, upstream};

/// PostgreSQL's `SSLRequest`: length 8, code 80877103.
const SSL_REQUEST: [u8; 8] = [0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f];

/// A certificate authority of the test's own, and the files the store reads.
struct Authority {
    issuer: CertifiedIssuer<'static, KeyPair>,
    directory: tempfile::TempDir,
}

/// A certificate and its key, signed by an `Authority`.
struct Leaf {
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    cert_file: PathBuf,
    key_file: PathBuf,
}

impl Authority {
    fn new(name: &str) -> Authority {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(
            rcgen::DnType::CommonName,
            format!("punctual test CA {name}"),
        );
        let key = KeyPair::generate().expect("a CA key");
        let issuer = CertifiedIssuer::self_signed(params, key).expect("a CA certificate");
        let directory = tempfile::tempdir().expect("a directory");
        std::fs::write(directory.path().join("ca.pem"), issuer.pem()).expect("write the CA");
        Authority { issuer, directory }
    }

    fn ca_file(&self) -> PathBuf {
        self.directory.path().join("ca.pem")
    }

    /// A certificate for `names` (DNS names or IP addresses).
    fn issue(&self, file: &str, names: &[&str]) -> Leaf {
        let params = CertificateParams::new(
            names
                .iter()
                .map(|name| (*name).to_owned())
                .collect::<Vec<_>>(),
        )
        .expect("leaf params");
        let key = KeyPair::generate().expect("a key");
        let certificate = params.signed_by(&key, &self.issuer).expect("a certificate");
        let cert_file = self.directory.path().join(format!("{file}.pem"));
        let key_file = self.directory.path().join(format!("{file}.key"));
        std::fs::write(&cert_file, certificate.pem()).expect("write the certificate");
        std::fs::write(&key_file, key.serialize_pem()).expect("write the key");
        Leaf {
            chain: vec![certificate.der().clone()],
            key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
            cert_file,
            key_file,
        }
    }
}

/// The TLS front before the local server.
struct Front {
    port: u16,
    tls_sessions: Arc<AtomicUsize>,
    plaintext: Arc<AtomicUsize>,
}

impl Front {
    /// Serves `leaf`; with `clients`, also asks for a client certificate from that authority.
    async fn start(leaf: &Leaf, clients: Option<&Authority>) -> Front {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .expect("protocol versions");
        let builder = match clients {
            None => builder.with_no_client_auth(),
            Some(authority) => {
                let mut roots = rustls::RootCertStore::empty();
                roots.add(authority.issuer.der().clone()).expect("a root");
                let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                    Arc::new(roots),
                    provider,
                )
                .build()
                .expect("a client verifier");
                builder.with_client_cert_verifier(verifier)
            }
        };
        let config = builder
            .with_single_cert(leaf.chain.clone(), leaf.key.clone_key())
            .expect("the server certificate");
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("a port");
        let port = listener.local_addr().expect("an address").port();
        let upstream = upstream();
        let (tls_sessions, plaintext): (Arc<AtomicUsize>, Arc<AtomicUsize>) =
            (Arc::default(), Arc::default());
        let (sessions, plain) = (Arc::clone(&tls_sessions), Arc::clone(&plaintext));
        tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                let (acceptor, upstream) = (acceptor.clone(), upstream.clone());
                let (sessions, plain) = (Arc::clone(&sessions), Arc::clone(&plain));
                tokio::spawn(async move {
                    let mut first = [0u8; 8];
                    if client.read_exact(&mut first).await.is_err() {
                        return;
                    }
                    if first != SSL_REQUEST {
                        // A startup message in the clear: refused, like a `hostssl`-only server.
                        plain.fetch_add(1, Ordering::SeqCst);
                        return;
                    }
                    if client.write_all(b"S").await.is_err() {
                        return;
                    }
                    let Ok(mut tls) = acceptor.accept(client).await else {
                        return;
                    };
                    sessions.fetch_add(1, Ordering::SeqCst);
                    let Ok(mut server) = TcpStream::connect(&upstream).await else {
                        return;
                    };
                    let _ = tokio::io::copy_bidirectional(&mut tls, &mut server).await;
                });
            }
        });
        Front {
            port,
            tls_sessions,
            plaintext,
        }
    }

    /// A URL for the front under the name `host` (resolved to 127.0.0.1 by `hostaddr`), with
    /// `query` appended.
    fn url(&self, host: &str, query: &str) -> String {
        let config: tokio_postgres::Config = database_url().parse().expect("a valid URL");
        let user = config.get_user().unwrap_or("postgres");
        let database = config.get_dbname().unwrap_or("test");
        format!(
            "postgres://{user}@{host}:{}/{database}?hostaddr=127.0.0.1&{query}",
            self.port
        )
    }
}

fn file(path: &Path) -> String {
    path.display().to_string()
}

async fn connect(url: &str, schema: &TestSchema) -> Result<PgStore, StoreError> {
    PgStore::connect_with(
        url,
        PgOptions {
            connect_timeout: std::time::Duration::from_secs(5),
            ..schema.options()
        },
    )
    .await
}

fn refusal(result: Result<PgStore, StoreError>, what: &str) -> String {
    match result {
        Err(StoreError::Unavailable(message)) => message,
        Err(other) => panic!("{what}: expected Unavailable, got {other:?}"),
        Ok(_) => panic!("{what}: connected, but should have been refused"),
    }
}

/// The store does its work through the connection: insert, claim, and a LISTEN session.
async fn works(store: &PgStore) {
    let now = fixtures::NOW;
    let job = fixtures::new_job("k", now, JobOptions::default(), now);
    store.insert(vec![job], now).await.expect("insert over TLS");
    let claimed = store
        .claim(
            ClaimRequest {
                holder: fixtures::node("node-a"),
                queues: None,
                kinds: None,
                limit: 10,
                due_by: now,
                lease: std::time::Duration::from_secs(30),
            },
            now,
        )
        .await
        .expect("claim over TLS");
    assert_eq!(claimed.len(), 1);
    store.listen().await.expect("LISTEN over TLS");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_full_connects_to_a_server_with_a_certificate_the_test_made() {
    let Some(schema) = TestSchema::new().await else {
        return;
    };
    let authority = Authority::new("a");
    let front = Front::start(&authority.issue("server", &["localhost"]), None).await;
    let url = front.url(
        "localhost",
        &format!(
            "sslmode=verify-full&sslrootcert={}",
            file(&authority.ca_file())
        ),
    );
    let store = connect(&url, &schema).await.expect("verify-full connects");
    works(&store).await;
    assert!(
        front.tls_sessions.load(Ordering::SeqCst) >= 2,
        "the pool's and LISTEN's connections are TLS sessions"
    );
    assert_eq!(
        front.plaintext.load(Ordering::SeqCst),
        0,
        "nothing was sent in the clear"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_full_refuses_a_certificate_for_another_host_and_verify_ca_takes_it() {
    let Some(schema) = TestSchema::new().await else {
        return;
    };
    let authority = Authority::new("b");
    let front = Front::start(&authority.issue("server", &["db.example.internal"]), None).await;
    let ca = file(&authority.ca_file());
    let message = refusal(
        connect(
            &front.url(
                "localhost",
                &format!("sslmode=verify-full&sslrootcert={ca}"),
            ),
            &schema,
        )
        .await,
        "verify-full, certificate for another host",
    );
    assert!(
        message.contains("invalid peer certificate: certificate not valid for name"),
        "{message}"
    );
    let store = connect(
        &front.url("localhost", &format!("sslmode=verify-ca&sslrootcert={ca}")),
        &schema,
    )
    .await
    .expect("verify-ca checks the chain, not the name");
    works(&store).await;
    // And under the name the certificate is for, verify-full takes it.
    connect(
        &front.url(
            "db.example.internal",
            &format!("sslmode=verify-full&sslrootcert={ca}"),
        ),
        &schema,
    )
    .await
    .expect("verify-full under the certificate's own name");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_from_another_authority_is_refused_by_every_checking_mode() {
    let Some(schema) = TestSchema::new().await else {
        return;
    };
    let (real, other) = (Authority::new("c"), Authority::new("d"));
    let front = Front::start(&real.issue("server", &["localhost"]), None).await;
    let other_ca = file(&other.ca_file());
    for mode in ["verify-full", "verify-ca", "require"] {
        let message = refusal(
            connect(
                &front.url(
                    "localhost",
                    &format!("sslmode={mode}&sslrootcert={other_ca}"),
                ),
                &schema,
            )
            .await,
            mode,
        );
        assert!(
            message.contains("invalid peer certificate: UnknownIssuer"),
            "{mode}: {message}"
        );
    }
    // Without a root certificate, require and prefer encrypt but check nothing (libpq's rule).
    let before = front.tls_sessions.load(Ordering::SeqCst);
    for query in ["sslmode=require", "sslmode=prefer", ""] {
        connect(&front.url("localhost", query), &schema)
            .await
            .unwrap_or_else(|error| panic!("{query:?}: {error}"));
    }
    assert!(front.tls_sessions.load(Ordering::SeqCst) >= before + 3);
    assert_eq!(front.plaintext.load(Ordering::SeqCst), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sslmode_disable_speaks_plaintext_which_a_tls_only_server_refuses() {
    let Some(schema) = TestSchema::new().await else {
        return;
    };
    let authority = Authority::new("e");
    let front = Front::start(&authority.issue("server", &["localhost"]), None).await;
    refusal(
        connect(&front.url("localhost", "sslmode=disable"), &schema).await,
        "disable against a TLS-only server",
    );
    assert!(front.plaintext.load(Ordering::SeqCst) >= 1);
    assert_eq!(front.tls_sessions.load(Ordering::SeqCst), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_certificate_is_presented_when_the_server_asks_for_one() {
    let Some(schema) = TestSchema::new().await else {
        return;
    };
    let authority = Authority::new("f");
    let server = authority.issue("server", &["localhost"]);
    let client = authority.issue("client", &["punctual-client"]);
    let front = Front::start(&server, Some(&authority)).await;
    let ca = file(&authority.ca_file());
    refusal(
        connect(
            &front.url(
                "localhost",
                &format!("sslmode=verify-full&sslrootcert={ca}"),
            ),
            &schema,
        )
        .await,
        "no client certificate",
    );
    let store = connect(
        &front.url(
            "localhost",
            &format!(
                "sslmode=verify-full&sslrootcert={ca}&sslcert={}&sslkey={}",
                file(&client.cert_file),
                file(&client.key_file)
            ),
        ),
        &schema,
    )
    .await
    .expect("with the client certificate");
    works(&store).await;
}

/// The local server with its own certificate: `prefer` (the default) and `require` encrypt,
/// `disable` does not, as the server itself reports; a CA that did not sign its certificate is
/// refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_local_server_is_reached_over_tls_unless_disabled() {
    let Some(schema) = TestSchema::new().await else {
        return;
    };
    let probe = crate::raw_client(None).await;
    let ssl: String = probe
        .query_one("SHOW ssl", &[])
        .await
        .expect("SHOW ssl")
        .get(0);
    if ssl != "on" {
        use std::io::Write;
        let _ = writeln!(
            std::io::stderr(),
            "\nSKIPPED: the test server runs with ssl=off; TLS to it is not tested (the TLS \
             front's tests still ran)\n"
        );
        return;
    }
    let with = |query: &str| {
        let base = database_url();
        let separator = if base.contains('?') { '&' } else { '?' };
        if query.is_empty() {
            base
        } else {
            format!("{base}{separator}{query}")
        }
    };
    for (query, encrypted) in [
        ("", true),
        ("sslmode=require", true),
        ("sslmode=disable", false),
    ] {
        let store = connect(&with(query), &schema)
            .await
            .unwrap_or_else(|error| panic!("{query:?}: {error}"));
        let client = store.client().await.expect("a connection");
        let version = tls_version(&client).await.expect("pg_stat_ssl");
        assert_eq!(version.is_some(), encrypted, "{query:?}: {version:?}");
    }
    let stranger = Authority::new("g");
    refusal(
        connect(
            &with(&format!(
                "sslmode=verify-ca&sslrootcert={}",
                file(&stranger.ca_file())
            )),
            &schema,
        )
        .await,
        "the local server's certificate under a CA that did not sign it",
    );
}
