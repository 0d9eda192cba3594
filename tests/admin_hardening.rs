//! Hardening (issue 6, item 10): who cannot reach the approvers' API (no
//! credentials, a certificate from another CA, TLS below 1.2), and a Redis
//! user limited to countersign's keys and commands, as docs/redis-acl.md
//! documents it, is enough to run the whole approval story.

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::stack::answer_of;
use common::tls::Pki;
use common::{Redis, eventually, token, token_with};
use countersign::admin::AdminService;
use countersign::admin::auth::Authenticator;
use countersign::admin::pb::{self, approvals_client::ApprovalsClient};
use countersign::approval::store::{AuditCursor, CheckRef, Consumed, ListFilter};
use countersign::approval::{ApprovalParams, RedisStore, Status, StoreConfig};
use countersign::approval::{ApprovalStore, Ruling as Verdict};
use countersign::config::{AdminConfig, ApproverConfig, Config};
use countersign::policy::PolicyStore;
use redis::aio::MultiplexedConnection;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use serde_json::{Value, json};
use tonic::Code;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

// ---------------------------------------------------------------------------
// The admin API, in process, over TLS with client certificates.
// ---------------------------------------------------------------------------

struct Admin {
    pki: Pki,
    port: u16,
    store: Arc<RedisStore>,
    _redis: Redis,
}

/// What the service answers a caller that brings neither a certificate nor
/// a token.
const NO_CREDENTIALS: &str =
    "no client certificate and no bearer token: authenticate with --cert/--key or --token";

async fn start_admin() -> Admin {
    let redis = Redis::start().await;
    let pki = Pki::new();
    let store = Arc::new(
        RedisStore::new(StoreConfig {
            url: redis.url(),
            cluster: false,
            replica_acks: 0,
            prefix: "hardening:".into(),
            timeout: Duration::from_secs(2),
            retention: Duration::from_secs(3600),
            audit_max_len: 10_000,
            audit_max_age: None,
        })
        .unwrap(),
    );
    let config = Config::load(None, &std::collections::HashMap::new()).unwrap();
    let policies = Arc::new(
        PolicyStore::open(
            &common::repo().join("policies"),
            config.mapper.probes().unwrap(),
        )
        .unwrap(),
    );
    let approvers = vec![ApproverConfig {
        name: "dora".into(),
        groups: vec!["data-owners".into()],
        token_sha256: None,
    }];
    let (cert, key) = pki.server();
    let cfg = AdminConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        cert_pem: std::fs::read(cert).unwrap(),
        key_pem: std::fs::read(key).unwrap(),
        client_ca_pem: Some(std::fs::read(pki.ca()).unwrap()),
        approvers: approvers.clone(),
    };
    let tls = countersign::server::admin_tls(&cfg).unwrap();
    let approvals = common::lifecycle(&config, policies, store.clone(), Default::default());
    let service = AdminService::new(approvals, Authenticator::new(approvers));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(countersign::server::serve_admin(
        listener,
        service,
        tls,
        std::future::pending(),
    ));
    Admin {
        pki,
        port,
        store,
        _redis: redis,
    }
}

impl Admin {
    fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }

    /// An agent's export, acting for alice, that a data owner may approve.
    async fn open(&self) -> String {
        let new = common::export_request("fp", &["data-owners"], ApprovalParams::default());
        self.store
            .open(&new, CheckRef::default())
            .await
            .unwrap()
            .approval
            .id
    }

    /// A tonic client trusting the admin API's CA, presenting `identity`
    /// (certificate and key files) if given. Connection errors come back as
    /// the error of the first call.
    async fn client(
        &self,
        identity: Option<(PathBuf, PathBuf)>,
    ) -> Result<ApprovalsClient<Channel>, String> {
        let mut tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(std::fs::read(self.pki.ca()).unwrap()));
        if let Some((c, k)) = identity {
            tls = tls.identity(Identity::from_pem(
                std::fs::read(c).unwrap(),
                std::fs::read(k).unwrap(),
            ));
        }
        let channel = Channel::from_shared(self.url())
            .unwrap()
            .tls_config(tls)
            .unwrap()
            .connect()
            .await
            .map_err(|e| format!("connect: {e:?}"))?;
        Ok(ApprovalsClient::new(channel))
    }

    /// `countersign approvals ARGS` against this admin API, trusting its CA,
    /// with `identity` as `--cert`/`--key` if given; (exit code, stderr).
    async fn cli(&self, identity: Option<(PathBuf, PathBuf)>, args: &[&str]) -> (i32, String) {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_countersign"));
        cmd.arg("approvals")
            .args(args)
            .args(["--admin", &self.url()])
            .arg("--ca")
            .arg(self.pki.ca());
        for k in [
            "COUNTERSIGN_ADMIN_CERT",
            "COUNTERSIGN_ADMIN_KEY",
            "COUNTERSIGN_ADMIN_TOKEN",
        ] {
            cmd.env_remove(k);
        }
        if let Some((c, k)) = identity {
            cmd.arg("--cert").arg(c).arg("--key").arg(k);
        }
        // The server runs on this test's runtime: wait for the client
        // elsewhere.
        let out = tokio::task::spawn_blocking(move || cmd.output().unwrap())
            .await
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// The request as the store has it: still pending, and nobody voted.
    async fn assert_untouched(&self, id: &str) {
        let a = self.store.get(id).await.unwrap().unwrap();
        assert_eq!(a.status, Status::Pending);
        assert!(a.votes.is_empty(), "{:?}", a.votes);
    }
}

fn decide(id: &str) -> pb::DecideRequest {
    pb::DecideRequest {
        id: id.into(),
        reason: "quarterly report".into(),
    }
}

#[tokio::test]
async fn without_credentials_every_admin_call_is_refused_and_the_cli_says_how_to_authenticate() {
    let admin = start_admin().await;
    let id = admin.open().await;
    let mut anonymous = admin.client(None).await.unwrap();

    let refusals = [
        (
            "List",
            anonymous
                .list(pb::ListRequest::default())
                .await
                .map(drop)
                .unwrap_err(),
        ),
        (
            "Get",
            anonymous
                .get(pb::GetRequest { id: id.clone() })
                .await
                .map(drop)
                .unwrap_err(),
        ),
        (
            "Approve",
            anonymous.approve(decide(&id)).await.map(drop).unwrap_err(),
        ),
        (
            "Deny",
            anonymous.deny(decide(&id)).await.map(drop).unwrap_err(),
        ),
        (
            "Revoke",
            anonymous.revoke(decide(&id)).await.map(drop).unwrap_err(),
        ),
        (
            "Watch",
            anonymous
                .watch(pb::WatchRequest::default())
                .await
                .map(drop)
                .unwrap_err(),
        ),
    ];
    for (call, err) in refusals {
        assert_eq!(
            (err.code(), err.message()),
            (Code::Unauthenticated, NO_CREDENTIALS),
            "{call}"
        );
    }

    // What an approver who forgot --cert sees: one sentence, exit code 1.
    for args in [
        &["list"][..],
        &["show", &id],
        &["approve", &id, "--reason", "quarterly report"],
        &["deny", &id, "--reason", "no"],
    ] {
        let (code, stderr) = admin.cli(None, args).await;
        assert_eq!(
            (code, stderr.as_str()),
            (
                1,
                format!("countersign: not authenticated: {NO_CREDENTIALS}\n").as_str()
            ),
            "approvals {args:?}"
        );
    }
    admin.assert_untouched(&id).await;

    // The same approver with her certificate may decide: the refusals above
    // were about the missing credentials, not the request.
    let (code, stderr) = admin
        .cli(
            Some(admin.pki.client("dora")),
            &["approve", &id, "--reason", "quarterly report"],
        )
        .await;
    assert_eq!(code, 0, "{stderr}");
    let a = admin.store.get(&id).await.unwrap().unwrap();
    assert_eq!(a.status, Status::Approved);
}

// Blocking TLS probes below: the server needs a thread of its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_from_another_ca_is_refused_even_when_it_names_a_configured_approver() {
    let admin = start_admin().await;
    let id = admin.open().await;
    // Certificates with CN `dora`, the name of a data owner, from two CAs
    // that are not the admin API's: one that copies its CA's name (the
    // signature gives it away) and one named otherwise (unknown issuer).
    let copycat = Pki::new();
    let stranger = tempfile::tempdir().unwrap();
    let forgeries = [
        (
            copycat.client("dora"),
            rustls::AlertDescription::DecryptError,
        ),
        (
            foreign_certificate(stranger.path(), "dora"),
            rustls::AlertDescription::UnknownCA,
        ),
    ];

    for (forged, alert) in forgeries {
        // The handshake is refused, whatever the version, with an alert
        // that names the problem.
        for version in [&rustls::version::TLS12, &rustls::version::TLS13] {
            let config = pinned_client(&admin.pki, Some(forged.clone()), version);
            let err = speak_h2(admin.port, config).unwrap_err();
            assert_eq!(
                err,
                rustls::Error::AlertReceived(alert),
                "{version:?} {forged:?}"
            );
        }

        // Through tonic (as `countersign approvals` connects): no call gets
        // through, whether the failure shows at connect or at the first call.
        let outcome = match admin.client(Some(forged.clone())).await {
            Err(e) => Err(e),
            Ok(mut c) => c.approve(decide(&id)).await.map_err(|s| format!("{s:?}")),
        };
        assert!(outcome.is_err(), "{outcome:?}");

        // What the holder of such a certificate sees.
        let (code, stderr) = admin
            .cli(
                Some(forged),
                &["approve", &id, "--reason", "quarterly report"],
            )
            .await;
        assert_eq!(code, 1, "{stderr}");
        // Where to look, not only "transport error".
        assert!(
            stderr.starts_with("countersign: ") && stderr.contains("admin.client_ca"),
            "{stderr}"
        );
        admin.assert_untouched(&id).await;
    }

    // The same name with the right CA's certificate gets through the same
    // probe, and approves.
    for version in [&rustls::version::TLS12, &rustls::version::TLS13] {
        let config = pinned_client(&admin.pki, Some(admin.pki.client("dora")), version);
        assert_eq!(speak_h2(admin.port, config), Ok(()), "{version:?}");
    }
    let a = admin
        .client(Some(admin.pki.client("dora")))
        .await
        .unwrap()
        .approve(decide(&id))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(a.status, "approved");
}

/// A client certificate for `name` from a CA of its own (as
/// `countersign dev-certs` makes them, under another CA name), written to
/// `dir`; (certificate, key) files.
fn foreign_certificate(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(DnType::CommonName, "some other CA");
    let ca = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.distinguished_name.push(DnType::CommonName, name);
    let key = KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, &ca).unwrap();
    let (cert_path, key_path) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert_path, cert.pem()).unwrap();
    std::fs::write(&key_path, key.serialize_pem()).unwrap();
    (cert_path, key_path)
}

// Blocking TLS probes below: the server needs a thread of its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_below_1_2_is_refused_and_1_2_and_1_3_clients_work() {
    let admin = start_admin().await;
    let id = admin.open().await;

    // TLS 1.0 and 1.1 ClientHellos (rustls cannot send them, so by hand)
    // are answered with a fatal alert, never a ServerHello: a bare one as
    // old clients send it, and one that differs from the TLS 1.2 hello
    // below only in its version, which gets `protocol_version`.
    let tls12_hello = |version| client_hello(version, &SUITES, &tls12_extensions());
    for version in [[3, 1], [3, 2]] {
        let bare = first_record(admin.port, &client_hello(version, &CLASSIC_SUITES, &[]));
        assert!(
            matches!(&bare, Some(Record { content_type: ALERT, fragment }) if fragment[0] == FATAL),
            "bare ClientHello {version:?}: {bare:?}"
        );
        assert_eq!(
            first_record(admin.port, &tls12_hello(version)),
            Some(Record {
                content_type: ALERT,
                fragment: vec![FATAL, PROTOCOL_VERSION],
            }),
            "ClientHello {version:?}"
        );
    }
    let answer = first_record(admin.port, &tls12_hello([3, 3])).expect("an answer");
    assert_eq!(answer.content_type, HANDSHAKE, "{answer:?}");
    assert_eq!(answer.fragment.first(), Some(&2), "a ServerHello");

    // An approver whose client speaks only TLS 1.2, or only TLS 1.3, lists
    // requests.
    for version in [&rustls::version::TLS12, &rustls::version::TLS13] {
        let config = pinned_client(&admin.pki, Some(admin.pki.client("dora")), version);
        let (port, negotiated) = pinned_tls_relay(admin.port, config);
        let channel = Channel::from_shared(format!("http://127.0.0.1:{port}"))
            .unwrap()
            .connect()
            .await
            .unwrap();
        let listed = ApprovalsClient::new(channel)
            .list(pb::ListRequest::default())
            .await
            .unwrap()
            .into_inner()
            .approvals;
        assert_eq!(
            listed.iter().map(|a| a.id.as_str()).collect::<Vec<_>>(),
            [id.as_str()]
        );
        assert_eq!(*negotiated.lock().unwrap(), [version.version]);
    }
}

// --- TLS by hand -----------------------------------------------------------

const HANDSHAKE: u8 = 22;
const ALERT: u8 = 21;
const FATAL: u8 = 2;
const PROTOCOL_VERSION: u8 = 70;

/// ECDHE and RSA CBC suites, as a TLS 1.0/1.1 client offers them.
const CLASSIC_SUITES: [u16; 5] = [0xc009, 0xc013, 0xc014, 0x002f, 0x0035];
/// The classic suites, then ECDHE AES-GCM ones that rustls speaks in 1.2.
const SUITES: [u16; 7] = [0xc009, 0xc013, 0xc014, 0x002f, 0x0035, 0xc02b, 0xc02f];

/// A ClientHello record for `version` ([3, 1] is TLS 1.0, [3, 2] 1.1,
/// [3, 3] 1.2) in both the record header and the hello.
fn client_hello(version: [u8; 2], suites: &[u16], extensions: &[u8]) -> Vec<u8> {
    let mut body = version.to_vec();
    body.extend_from_slice(&[0x5a; 32]); // random
    body.push(0); // no session id
    body.extend_from_slice(&((suites.len() * 2) as u16).to_be_bytes());
    for s in suites {
        body.extend_from_slice(&s.to_be_bytes());
    }
    body.extend_from_slice(&[1, 0]); // compression: null only
    if !extensions.is_empty() {
        body.extend_from_slice(&(extensions.len() as u16).to_be_bytes());
        body.extend_from_slice(extensions);
    }
    let mut handshake = vec![1]; // client_hello
    handshake.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
    handshake.extend(body);
    let mut record = vec![HANDSHAKE];
    record.extend_from_slice(&version);
    record.extend_from_slice(&(handshake.len() as u16).to_be_bytes());
    record.extend(handshake);
    record
}

/// What a TLS 1.2 ClientHello needs for an ECDSA server: groups, point
/// formats, signature algorithms.
fn tls12_extensions() -> Vec<u8> {
    [
        &[0x00, 0x0a, 0, 6, 0, 4, 0x00, 0x1d, 0x00, 0x17][..], // x25519, P-256
        &[0x00, 0x0b, 0, 2, 1, 0],                             // uncompressed points
        &[0x00, 0x0d, 0, 8, 0, 6, 0x04, 0x03, 0x08, 0x04, 0x04, 0x01],
    ]
    .concat()
}

#[derive(Debug, PartialEq, Eq)]
struct Record {
    content_type: u8,
    fragment: Vec<u8>,
}

/// Sends `hello` to the admin port; the first TLS record of the answer, or
/// `None` when the server closes without one.
fn first_record(port: u16, hello: &[u8]) -> Option<Record> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(hello).unwrap();
    let mut header = [0u8; 5];
    match s.read_exact(&mut header) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return None,
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return None,
        Err(e) => panic!("no answer from the admin port: {e}"),
    }
    let len = u16::from_be_bytes([header[3], header[4]]) as usize;
    let mut fragment = vec![0; len];
    s.read_exact(&mut fragment).unwrap();
    Some(Record {
        content_type: header[0],
        fragment,
    })
}

/// A rustls client that trusts `pki`'s CA, speaks only `version`, offers h2
/// and presents `identity` (certificate and key files) if given.
fn pinned_client(
    pki: &Pki,
    identity: Option<(PathBuf, PathBuf)>,
    version: &'static rustls::SupportedProtocolVersion,
) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_file(pki.ca()).unwrap())
        .unwrap();
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(&[version])
    .unwrap()
    .with_root_certificates(roots);
    let mut config = match identity {
        Some((cert, key)) => builder
            .with_client_auth_cert(
                vec![CertificateDer::from_pem_file(cert).unwrap()],
                PrivateKeyDer::from_pem_file(key).unwrap(),
            )
            .unwrap(),
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"h2".to_vec()];
    Arc::new(config)
}

/// Handshakes with the admin port, sends the HTTP/2 preface and reads the
/// server's first frame: Ok only if the server speaks HTTP/2 on the
/// connection; the TLS error otherwise.
fn speak_h2(port: u16, config: Arc<rustls::ClientConfig>) -> Result<(), rustls::Error> {
    let mut tcp = TcpStream::connect(("127.0.0.1", port)).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut conn =
        rustls::ClientConnection::new(config, ServerName::try_from("127.0.0.1").unwrap()).unwrap();
    let mut tls = rustls::Stream::new(&mut conn, &mut tcp);
    let tls_error =
        |e: std::io::Error| match e.get_ref().and_then(|e| e.downcast_ref::<rustls::Error>()) {
            Some(e @ rustls::Error::AlertReceived(_)) => e.clone(),
            _ => panic!("not a TLS refusal: {e}"),
        };
    // Preface, then an empty SETTINGS frame.
    tls.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0")
        .map_err(tls_error)?;
    let mut frame = [0u8; 9];
    tls.read_exact(&mut frame).map_err(tls_error)?;
    assert_eq!(frame[3], 4, "the server's first frame is SETTINGS");
    Ok(())
}

/// tonic offers TLS 1.2 and 1.3 and picks 1.3: to call the admin API over
/// one version only, tonic speaks plaintext HTTP/2 to a local port, and
/// each connection there is carried to the admin API by a rustls client
/// limited to `config`'s versions. Returns the port and the versions the
/// connections negotiated.
fn pinned_tls_relay(
    admin_port: u16,
    config: Arc<rustls::ClientConfig>,
) -> (u16, Arc<Mutex<Vec<rustls::ProtocolVersion>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let negotiated = Arc::new(Mutex::new(Vec::new()));
    let seen = negotiated.clone();
    std::thread::spawn(move || {
        for plain in listener.incoming().map_while(Result::ok) {
            let (config, seen) = (config.clone(), seen.clone());
            std::thread::spawn(move || relay(plain, admin_port, config, seen));
        }
    });
    (port, negotiated)
}

fn relay(
    mut plain: TcpStream,
    admin_port: u16,
    config: Arc<rustls::ClientConfig>,
    negotiated: Arc<Mutex<Vec<rustls::ProtocolVersion>>>,
) -> std::io::Result<()> {
    use std::io::ErrorKind::WouldBlock;
    let mut tcp = TcpStream::connect(("127.0.0.1", admin_port))?;
    let mut tls = rustls::ClientConnection::new(config, ServerName::try_from("127.0.0.1").unwrap())
        .map_err(std::io::Error::other)?;
    plain.set_nonblocking(true)?;
    tcp.set_nonblocking(true)?;
    let mut buf = vec![0u8; 16 * 1024];
    let mut recorded = false;
    loop {
        let mut busy = false;
        match plain.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => {
                tls.writer().write_all(&buf[..n])?;
                busy = true;
            }
            Err(e) if e.kind() == WouldBlock => {}
            Err(e) => return Err(e),
        }
        while tls.wants_write() {
            match tls.write_tls(&mut tcp) {
                Ok(_) => busy = true,
                Err(e) if e.kind() == WouldBlock => break,
                Err(e) => return Err(e),
            }
        }
        match tls.read_tls(&mut tcp) {
            Ok(0) => return Ok(()),
            Ok(_) => {
                tls.process_new_packets().map_err(std::io::Error::other)?;
                busy = true;
            }
            Err(e) if e.kind() == WouldBlock => {}
            Err(e) => return Err(e),
        }
        if !recorded
            && !tls.is_handshaking()
            && let Some(v) = tls.protocol_version()
        {
            negotiated.lock().unwrap().push(v);
            recorded = true;
        }
        loop {
            match tls.reader().read(&mut buf) {
                Ok(0) => return Ok(()),
                Ok(n) => {
                    write_all_nonblocking(&mut plain, &buf[..n])?;
                    busy = true;
                }
                Err(e) if e.kind() == WouldBlock => break,
                Err(e) => return Err(e),
            }
        }
        if !busy {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

fn write_all_nonblocking(s: &mut TcpStream, mut data: &[u8]) -> std::io::Result<()> {
    while !data.is_empty() {
        match s.write(data) {
            Ok(n) => data = &data[n..],
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(1));
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Redis: the user docs/redis-acl.md documents.
// ---------------------------------------------------------------------------

/// The rules in docs/redis-acl.md, as written there.
struct DocumentedAcl {
    /// The arguments of `ACL SETUSER` in the first block: the user's name,
    /// then its rules.
    rules: Vec<String>,
    /// The second block's rules, for Redis 7.2 and later.
    since_7_2: Vec<String>,
    password: String,
}

fn documented_acl() -> DocumentedAcl {
    let doc = std::fs::read_to_string(common::repo().join("docs/redis-acl.md")).unwrap();
    let blocks: Vec<&str> = doc
        .split("```redis\n")
        .skip(1)
        .map(|b| b.split("```").next().unwrap().trim())
        .collect();
    // The base rules, then the additions for replica_acks and for a
    // cluster (checked by hand, see the doc), then the one for Redis 7.2.
    assert_eq!(blocks.len(), 4, "docs/redis-acl.md: four `redis` blocks");
    let setuser = |block: &str| -> Vec<String> {
        assert!(!block.contains('\n'), "one line per block: {block}");
        let args = block
            .strip_prefix("ACL SETUSER countersign ")
            .unwrap_or_else(|| panic!("not an `ACL SETUSER countersign` line: {block}"));
        std::iter::once("countersign")
            .chain(args.split_whitespace())
            .map(str::to_owned)
            .collect()
    };
    let rules = setuser(blocks[0]);
    let password = rules
        .iter()
        .find_map(|r| r.strip_prefix('>'))
        .expect("a password rule")
        .to_owned();
    assert!(
        password
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-'),
        "the example password goes into a URL as it is"
    );
    assert!(
        doc.contains(&format!("url = \"redis://countersign:{password}@")),
        "the documented URL logs in as the documented user"
    );
    DocumentedAcl {
        rules,
        since_7_2: setuser(blocks[3]),
        password,
    }
}

/// The password the test gives Redis' `default` user, its administrator.
const ADMIN_PASSWORD: &str = "hardening-admin";

/// Gives the `default` user a password, so that a connection is someone
/// only once it authenticates; the administrator's connection.
async fn lock_default_user(redis: &Redis) -> MultiplexedConnection {
    let mut c = redis::Client::open(redis.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    redis::cmd("ACL")
        .arg("SETUSER")
        .arg("default")
        .arg("on")
        .arg("resetpass")
        .arg(format!(">{ADMIN_PASSWORD}"))
        .query_async::<()>(&mut c)
        .await
        .unwrap();
    admin_connection(redis).await
}

async fn admin_connection(redis: &Redis) -> MultiplexedConnection {
    redis::Client::open(format!(
        "redis://default:{ADMIN_PASSWORD}@127.0.0.1:{}",
        redis.port
    ))
    .unwrap()
    .get_multiplexed_async_connection()
    .await
    .unwrap()
}

/// `ACL SETUSER` with `rules`, plus the Redis 7.2 block on a server that
/// has `CLIENT SETINFO`.
async fn set_user(admin: &mut MultiplexedConnection, rules: &[String], acl: &DocumentedAcl) {
    redis::cmd("ACL")
        .arg("SETUSER")
        .arg(rules)
        .query_async::<()>(admin)
        .await
        .unwrap_or_else(|e| panic!("ACL SETUSER {}: {e}", rules.join(" ")));
    if redis_version(admin).await >= (7, 2) {
        redis::cmd("ACL")
            .arg("SETUSER")
            .arg(&acl.since_7_2)
            .query_async::<()>(admin)
            .await
            .unwrap();
    }
    redis::cmd("ACL")
        .arg("LOG")
        .arg("RESET")
        .query_async::<()>(admin)
        .await
        .unwrap();
}

async fn redis_version(admin: &mut MultiplexedConnection) -> (u32, u32) {
    let info: String = redis::cmd("INFO")
        .arg("server")
        .query_async(admin)
        .await
        .unwrap();
    let v = info
        .lines()
        .find_map(|l| l.strip_prefix("redis_version:"))
        .unwrap();
    let mut parts = v.trim().split('.').map(|p| p.parse().unwrap());
    (parts.next().unwrap(), parts.next().unwrap())
}

/// `ACL LOG`: every refused command, key, channel or login, one line each.
async fn acl_log(admin: &mut MultiplexedConnection) -> Vec<String> {
    // Without a count, ACL LOG shows only the latest 10.
    let entries: Vec<redis::Value> = redis::cmd("ACL")
        .arg("LOG")
        .arg(1000)
        .query_async(admin)
        .await
        .unwrap();
    let text = |v: &redis::Value| {
        redis::from_redis_value_ref::<String>(v).unwrap_or_else(|_| format!("{v:?}"))
    };
    entries
        .iter()
        .map(|e| {
            let pairs: Vec<(String, String)> = match e {
                redis::Value::Array(items) => items
                    .chunks(2)
                    .map(|kv| (text(&kv[0]), text(&kv[1])))
                    .collect(),
                redis::Value::Map(items) => items.iter().map(|(k, v)| (text(k), text(v))).collect(),
                other => vec![("entry".into(), format!("{other:?}"))],
            };
            ["username", "reason", "context", "object"]
                .iter()
                .filter_map(|k| {
                    pairs
                        .iter()
                        .find(|(pk, _)| pk == k)
                        .map(|(_, v)| format!("{k}={v}"))
                })
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect()
}

fn limited_url(redis: &Redis, acl: &DocumentedAcl) -> String {
    format!(
        "redis://countersign:{}@127.0.0.1:{}",
        acl.password, redis.port
    )
}

/// Every operation of the store, as the sidecar, the admin API and `audit`
/// use them, with the default prefix the documented ACL names: the first
/// that fails, if one does.
async fn exercise_store(url: &str, admin: &mut MultiplexedConnection) -> Result<(), String> {
    let store = RedisStore::new(StoreConfig {
        url: url.into(),
        cluster: false,
        replica_acks: 0,
        prefix: "countersign:".into(),
        timeout: Duration::from_secs(2),
        retention: Duration::from_secs(3600),
        audit_max_len: 1000,
        // So that the sweep also trims the stream by age.
        audit_max_age: Some(Duration::from_secs(3600)),
    })
    .unwrap();
    let fail = |what: &str| {
        let what = what.to_owned();
        move |e: countersign::approval::StoreError| format!("{what}: {e}")
    };

    // Events reach a subscriber (holds and `approvals watch` wait on them).
    let mut events = store.subscribe().await;
    let subscribed = eventually(Duration::from_secs(3), Duration::from_millis(50), || {
        let mut admin = admin.clone();
        let got = std::iter::from_fn(|| events.try_recv().ok()).any(|e| e.id == "probe");
        async move {
            let _: Result<i64, _> = redis::cmd("SPUBLISH")
                .arg(format!(
                    "countersign:{{{}}}:events",
                    countersign::approval::SHARD_TAGS[0].0
                ))
                .arg("requested probe")
                .query_async(&mut admin)
                .await;
            got
        }
    })
    .await;
    if !subscribed {
        return Err("no event reached the subscriber".into());
    }

    store.ping().await.map_err(fail("ping"))?;
    let new = common::export_request(
        "fp-1",
        &["data-owners"],
        ApprovalParams {
            uses: 2,
            ..Default::default()
        },
    );
    let opened = store
        .open(&new, CheckRef::default())
        .await
        .map_err(fail("open"))?;
    let id = opened.approval.id.clone();
    let token = opened.token.ok_or("open: no token")?;
    let again = store
        .open(&new, CheckRef::default())
        .await
        .map_err(fail("open again"))?;
    if again.created || again.approval.id != id {
        return Err(format!("open again: {again:?}"));
    }
    let listed = store
        .list(&ListFilter::default())
        .await
        .map_err(fail("list"))?;
    if listed.iter().map(|a| &a.id).ne([&id]) {
        return Err(format!("list: {listed:?}"));
    }
    if store.pending_count().await.map_err(fail("pending"))? != 1 {
        return Err("pending count".into());
    }
    let a = store
        .vote(&id, "dora", Verdict::Approve, "ok")
        .await
        .map_err(fail("approve"))?;
    if a.status != Status::Approved {
        return Err(format!("approve: {a:?}"));
    }
    let decision = [("event", "decision"), ("decision", "allow")];
    let check = CheckRef {
        request_id: "r-1",
        trace: "",
        decision: &decision,
    };
    match store
        .consume(Some(&token), None, "fp-1", check)
        .await
        .map_err(fail("consume"))?
    {
        Consumed::Used { uses_left: 1, .. } => {}
        other => return Err(format!("consume: {other:?}")),
    }
    store
        .vote(&id, "dora", Verdict::Revoke, "")
        .await
        .map_err(fail("revoke"))?;
    let other = common::export_request("fp-2", &["data-owners"], ApprovalParams::default());
    let other = store
        .open(&other, CheckRef::default())
        .await
        .map_err(fail("open"))?;
    store
        .vote(&other.approval.id, "dora", Verdict::Deny, "no")
        .await
        .map_err(fail("deny"))?;
    if let Some(e) = store.sweep().await.1.pop() {
        return Err(format!("sweep: {e}"));
    }
    store
        .append_audit(
            &other.approval.id,
            &[
                ("event", "decision"),
                ("decision", "deny"),
                ("approval_id", &other.approval.id),
            ],
        )
        .await
        .map_err(fail("audit append"))?;
    let entries = store
        .audit_range(&mut AuditCursor::from("-"), "+", 100)
        .await
        .map_err(fail("audit export"))?;
    // Each request's events in order (the shards' streams interleave by
    // time; events of two shards in the same millisecond may swap).
    let kinds = |id: &str| -> Vec<&str> {
        entries
            .iter()
            .filter(|e| e.fields.iter().any(|(k, v)| k == "approval_id" && v == id))
            .filter_map(|e| e.fields.iter().find(|(k, _)| k == "event"))
            .map(|(_, v)| v.as_str())
            .collect()
    };
    let expected: [(&str, &[&str]); 2] = [
        (
            &id,
            &["requested", "approved", "consumed", "decision", "revoked"],
        ),
        (&other.approval.id, &["requested", "denied", "decision"]),
    ];
    for (id, want) in expected {
        if kinds(id) != want {
            return Err(format!("audit stream for {id}: {:?}", kinds(id)));
        }
    }
    if entries.len() != 8 {
        return Err(format!("audit stream: {entries:?}"));
    }
    let mut end = store.audit_end().await.map_err(fail("audit tail start"))?;
    if !store
        .audit_follow(&mut end, Duration::from_millis(100))
        .await
        .map_err(fail("audit tail"))?
        .is_empty()
    {
        return Err("audit tail from the end saw old entries".into());
    }
    let followed = store
        .audit_follow(&mut AuditCursor::from("0"), Duration::from_millis(100))
        .await
        .map_err(fail("audit tail"))?;
    if followed.len() != entries.len() {
        return Err(format!("audit tail: {followed:?}"));
    }
    let mut kinds = Vec::new();
    while let Ok(e) = events.try_recv() {
        kinds.push(e.kind);
    }
    if !kinds.contains(&countersign::approval::EventKind::Consumed) {
        return Err(format!("events: {kinds:?}"));
    }
    Ok(())
}

#[tokio::test]
async fn the_documented_redis_user_runs_every_store_operation_and_nothing_else() {
    let acl = documented_acl();
    let redis = Redis::start().await;
    let mut admin = lock_default_user(&redis).await;
    set_user(&mut admin, &acl.rules, &acl).await;

    let mut limited = redis::Client::open(limited_url(&redis, &acl))
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    // What countersign has no business doing, and the user cannot.
    let forbidden: &[&[&str]] = &[
        &["KEYS", "*"],
        &["SCAN", "0"],
        &["FLUSHALL"],
        &["FLUSHDB"],
        &["CONFIG", "GET", "requirepass"],
        &["CONFIG", "SET", "appendonly", "no"],
        &["EVAL", "return 1", "0"],
        &["SCRIPT", "FLUSH"],
        &["DEL", "countersign:index"],
        &["SELECT", "1"],
        &["CLIENT", "LIST"],
        &["ACL", "LIST"],
        &["SHUTDOWN", "NOSAVE"],
        &["GET", "someone-else:key"],
        &["SPUBLISH", "someone-else:events", "x"],
    ];
    for args in forbidden {
        let err = redis::cmd(args[0])
            .arg(&args[1..])
            .query_async::<redis::Value>(&mut limited)
            .await
            .expect_err(&args.join(" "));
        assert_eq!(err.code(), Some("NOPERM"), "{}: {err}", args.join(" "));
    }
    // ACL LOG saw each refusal: it is the witness the other tests rely on.
    let log = acl_log(&mut admin).await;
    for object in ["keys", "flushall", "config|get", "eval", "someone-else:key"] {
        assert!(
            log.iter()
                .any(|l| l.contains("username=countersign")
                    && l.ends_with(&format!("object={object}"))),
            "{object} in {log:#?}"
        );
    }

    redis::cmd("ACL")
        .arg("LOG")
        .arg("RESET")
        .query_async::<()>(&mut admin)
        .await
        .unwrap();
    exercise_store(&limited_url(&redis, &acl), &mut admin)
        .await
        .unwrap();
    assert_eq!(
        acl_log(&mut admin).await,
        Vec::<String>::new(),
        "Redis refused the documented user"
    );
}

/// Each command on the documented list, taken away alone, breaks an
/// operation or shows up in `ACL LOG`: the list is what countersign uses,
/// no more. (Each round runs on its own runtime, so that the store's
/// background subscriber and connections end with it.)
#[test]
fn every_command_in_the_documented_redis_acl_is_needed() {
    let acl = documented_acl();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let redis = rt.block_on(Redis::start());
    drop(rt.block_on(lock_default_user(&redis)));
    let commands: Vec<&String> = acl.rules.iter().filter(|r| r.starts_with('+')).collect();
    assert!(
        commands.len() > 20,
        "docs/redis-acl.md grants too few commands to parse right: {commands:?}"
    );
    let mut unneeded = Vec::new();
    for command in commands {
        let rules: Vec<String> = acl
            .rules
            .iter()
            .filter(|r| *r != command)
            .cloned()
            .collect();
        let round = tokio::runtime::Runtime::new().unwrap();
        let noticed = round.block_on(async {
            let mut admin = admin_connection(&redis).await;
            for cmd in [["FLUSHALL", "SYNC"], ["SCRIPT", "FLUSH"]] {
                redis::cmd(cmd[0])
                    .arg(cmd[1])
                    .query_async::<()>(&mut admin)
                    .await
                    .unwrap();
            }
            set_user(&mut admin, &rules, &acl).await;
            let outcome = tokio::time::timeout(
                Duration::from_secs(20),
                exercise_store(&limited_url(&redis, &acl), &mut admin),
            )
            .await
            .unwrap_or_else(|_| Err("timed out".into()));
            outcome.is_err() || !acl_log(&mut admin).await.is_empty()
        });
        drop(round);
        if !noticed {
            unneeded.push(command.clone());
        }
    }
    assert!(
        unneeded.is_empty(),
        "countersign works without {unneeded:?}: take them out of docs/redis-acl.md"
    );
}

/// The approval story of the README, end to end (real Envoy, the real
/// binary, the `approvals` client, `audit export` and `audit tail`), with
/// countersign logged in to Redis as the documented user.
#[tokio::test]
async fn the_approval_story_runs_end_to_end_as_the_documented_redis_user() {
    let acl = documented_acl();
    let redis = Redis::start().await;
    let mut admin = lock_default_user(&redis).await;
    set_user(&mut admin, &acl.rules, &acl).await;
    let url = limited_url(&redis, &acl);

    // countersign's default key prefix: the one the documented ACL names.
    let s = common::stack::stack_on(redis, &url, None, None).await;
    let config = s.config.clone();
    // `audit tail` prints what is written after it starts: wait until it
    // polls the streams from their ends.
    let tail = AuditTail::start(&config);
    let following = eventually(Duration::from_secs(10), Duration::from_millis(50), || {
        let mut admin = admin.clone();
        async move {
            let clients: String = redis::cmd("CLIENT")
                .arg("LIST")
                .query_async(&mut admin)
                .await
                .unwrap();
            clients
                .lines()
                .any(|c| c.contains(" user=countersign ") && c.contains(" cmd=xrange "))
        }
    })
    .await;
    assert!(following, "audit tail is not reading");

    // An agent's export waits for a data owner, who approves it with the
    // `approvals` client; the retry with the token goes through, once.
    const EXPORT: &str = "/v1/datasets/sales/export";
    const BODY: &str = r#"{"format":"csv","rows":10}"#;
    let agent = token_with("agent-7", &["agents"], json!({"on_behalf_of": "alice"}));
    let r = s.post(EXPORT, &agent, BODY, None).await;
    assert_eq!(
        (r.status, r.body["decision"].as_str()),
        (403, Some("approval_required")),
        "{:?}\n{}",
        r.body,
        s.sidecar.log()
    );
    let id = r.body["approval_id"].as_str().unwrap().to_owned();
    let approval = r.body["approval_token"].as_str().unwrap().to_owned();
    let (code, out) = s.cli("dora", &["list"]);
    assert!(code == 0 && out.contains(&id), "{out}");
    let (code, out) = s.cli("dora", &["approve", &id, "--reason", "quarterly report"]);
    assert_eq!(code, 0, "{out}");
    let r = s.post(EXPORT, &agent, BODY, Some(&approval)).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let r = s.post(EXPORT, &agent, BODY, Some(&approval)).await;
    assert_eq!(
        (r.status, r.body["decision"].as_str()),
        (403, Some("deny")),
        "{:?}",
        r.body
    );

    // A held call answers when its approver decides (pub/sub).
    let held = s.held("/acme.iam.v1.Roles/GrantRole", &token("sam", &["security"]));
    let held_id = s.pending_id("sara").await;
    assert!(!held.is_finished(), "the call is held, not answered");
    for who in ["sara", "sid"] {
        let (code, out) = s.cli(who, &["approve", &held_id, "--reason", "onboarding"]);
        assert_eq!(code, 0, "{out}");
    }
    let (status, body) = answer_of(held).await;
    assert_eq!(status, 200, "{body}");

    // Probes: Redis answers, and no Redis operation failed.
    let base = format!("http://{}", s.sidecar.metrics_addr);
    let ready = reqwest::get(format!("{base}/readyz")).await.unwrap();
    assert_eq!(ready.status(), 200);
    let metrics = reqwest::get(format!("{base}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("\ncountersign_approvals_pending 0\n"),
        "{metrics}"
    );
    assert!(
        metrics.contains("\ncountersign_redis_errors_total 0\n"),
        "{metrics}"
    );

    // The audit trail, read as the same user.
    let out = Command::new(env!("CARGO_BIN_EXE_countersign"))
        .args(["audit", "export", "--config"])
        .arg(&config)
        .env_remove("COUNTERSIGN_REDIS_URL")
        .env_remove("COUNTERSIGN_CONFIG")
        .output()
        .unwrap();
    let exported = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{exported}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let story = |text: &str| -> Vec<String> {
        text.lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|e| e["approval_id"] == id.as_str())
            .map(|e| {
                format!(
                    "{} {}",
                    e["event"].as_str().unwrap_or_default(),
                    e["decision"].as_str().unwrap_or_default()
                )
            })
            .collect()
    };
    assert_eq!(
        story(&exported),
        [
            "requested ",
            "decision approval_required",
            "approved ",
            "consumed ",
            "decision allow",
            "decision deny"
        ],
        "{exported}"
    );
    let followed = tail.stop_when(|text| story(text).len() >= 6);
    assert_eq!(story(&followed), story(&exported), "{followed}");

    // Redis refused nothing: countersign used only the documented commands,
    // keys and channels (never KEYS, FLUSHALL, CONFIG, ...).
    assert_eq!(
        acl_log(&mut admin).await,
        Vec::<String>::new(),
        "Redis refused countersign a command"
    );
    let log = s.sidecar.log();
    assert!(!log.contains(&acl.password), "the Redis password is logged");
    assert!(!log.contains("NOPERM"), "{log}");
}

/// `countersign audit tail` (JSON lines) with `config`; killed when done.
struct AuditTail {
    child: std::process::Child,
    out: Arc<Mutex<String>>,
}

impl AuditTail {
    fn start(config: &Path) -> AuditTail {
        let mut child = Command::new(env!("CARGO_BIN_EXE_countersign"))
            .args(["audit", "tail", "--config"])
            .arg(config)
            .env_remove("COUNTERSIGN_REDIS_URL")
            .env_remove("COUNTERSIGN_CONFIG")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let out = Arc::new(Mutex::new(String::new()));
        let (mut stdout, sink) = (child.stdout.take().unwrap(), out.clone());
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = stdout.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        AuditTail { child, out }
    }

    /// Waits (10 s at most) until what it printed satisfies `done`; stops
    /// it and returns what it printed.
    fn stop_when(mut self, done: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !done(&self.out.lock().unwrap()) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.out.lock().unwrap().clone()
    }
}

impl Drop for AuditTail {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
