//! The admin API's TLS: a certificate from another CA is refused even when
//! it names a configured approver; TLS below 1.2 is refused, 1.2 and 1.3
//! work.

use std::path::{Path, PathBuf};

use countersign::admin::pb::{self, approvals_client::ApprovalsClient};
use tonic::transport::Channel;

use crate::common::admin::decide;
use crate::common::tls::Pki;
use crate::tls_wire::{
    ALERT, CLASSIC_SUITES, FATAL, HANDSHAKE, PROTOCOL_VERSION, Record, SUITES, client_hello,
    first_record, pinned_client, pinned_tls_relay, speak_h2, tls12_extensions,
};
use crate::{assert_untouched, start_admin};

// Blocking TLS probes below: the server needs a thread of its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_from_another_ca_is_refused_even_when_it_names_a_configured_approver() {
    let (admin, id) = start_admin().await;
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
        let outcome = match admin.connect(Some(forged.clone())).await {
            Err(e) => Err(e),
            Ok(mut c) => c
                .approve(decide(&id, "quarterly report"))
                .await
                .map_err(|s| format!("{s:?}")),
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
        assert_untouched(&admin, &id).await;
    }

    // The same name with the right CA's certificate gets through the same
    // probe, and approves.
    for version in [&rustls::version::TLS12, &rustls::version::TLS13] {
        let config = pinned_client(&admin.pki, Some(admin.pki.client("dora")), version);
        assert_eq!(speak_h2(admin.port, config), Ok(()), "{version:?}");
    }
    let a = admin
        .client(Some("dora"))
        .await
        .approve(decide(&id, "quarterly report"))
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
    let (admin, id) = start_admin().await;

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
