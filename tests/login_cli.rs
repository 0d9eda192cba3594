//! `countersign login`, `logout`, `whoami`, and `approvals` with a cached
//! sign-in, where no identity provider is needed: an admin API without
//! `[admin.oidc]`, an empty cache, a sign-in written into the cache.
//! The flows against a real provider are in the identity-provider tests.

mod common;

use std::path::Path;
use std::process::Command;

use base64::Engine as _;
use common::admin::Admin;
use common::services::approver;
use sha2::{Digest, Sha256};

/// `countersign ARGS` with none of the tester's client settings, its
/// sign-ins cached under `cache`.
fn cli(cache: &Path, args: &[&str]) -> Command {
    let mut cmd = common::client_command(args);
    cmd.env("COUNTERSIGN_CACHE_DIR", cache);
    cmd
}

use common::run_off_runtime as run;

/// Where `countersign login` caches the sign-in for `admin`.
fn cached(cache: &Path, admin: &str) -> std::path::PathBuf {
    let hash = hex::encode(Sha256::digest(admin.as_bytes()));
    cache.join("tokens").join(format!("{}.json", &hash[..32]))
}

/// A JWT-shaped token expiring at `exp` (not signed by anyone).
fn unsigned_jwt(exp: u64) -> String {
    let part = |v: serde_json::Value| {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
    };
    format!(
        "{}.{}.c2lnbmF0dXJl",
        part(serde_json::json!({"alg": "RS256", "kid": "k1"})),
        part(serde_json::json!({"iss": "https://login.example.com", "sub": "dora", "exp": exp}))
    )
}

fn write_sign_in(cache: &Path, admin: &str, exp: u64) {
    let path = cached(cache, admin);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let s = serde_json::json!({
        "admin": admin,
        "issuer": "https://login.example.com",
        "client_id": "countersign",
        "id_token": unsigned_jwt(exp),
        "expires_at": exp,
    });
    std::fs::write(path, s.to_string()).unwrap();
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

#[tokio::test]
async fn login_to_an_admin_api_without_an_identity_provider_says_so() {
    let admin = Admin::start("login-cli:", vec![approver("dora", &["data-owners"], None)]).await;
    let cache = tempfile::tempdir().unwrap();
    let ca = admin.pki.ca();
    let mut cmd = cli(cache.path(), &["login", "--no-browser", "--timeout", "5s"]);
    cmd.args(["--admin", &admin.url()]).arg("--ca").arg(&ca);
    let (code, out, err) = run(cmd).await;
    assert_eq!(code, 1, "{out}{err}");
    assert_eq!(
        err.trim_end(),
        format!(
            "countersign: cannot sign in to `{}` with an identity provider: this admin API has no identity provider ([admin.oidc] is not set): sign in with a client certificate (--cert/--key) or a configured token (--token)",
            admin.url()
        )
    );
    assert!(out.is_empty(), "{out}");
    assert!(!cache.path().join("tokens").exists());
}

#[tokio::test]
async fn logout_when_not_signed_in_says_so_and_succeeds() {
    let cache = tempfile::tempdir().unwrap();
    let (code, out, err) = run(cli(
        cache.path(),
        &[
            "logout",
            "--admin",
            "127.0.0.1:9",
            "--ca",
            "/nonexistent/ca.pem",
        ],
    ))
    .await;
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(out, "Not signed in to https://127.0.0.1:9: nothing to do\n");
    assert!(err.is_empty(), "{err}");
}

#[tokio::test]
async fn approvals_and_whoami_without_credentials_or_sign_in_say_run_login() {
    let cache = tempfile::tempdir().unwrap();
    let pki = common::tls::Pki::new();
    let admin = format!("https://127.0.0.1:{}", common::free_port());
    for args in [&["approvals", "list"][..], &["whoami"]] {
        let mut cmd = cli(cache.path(), args);
        cmd.args(["--admin", &admin]).arg("--ca").arg(pki.ca());
        let (code, out, err) = run(cmd).await;
        assert_eq!(code, 1, "{args:?}: {out}{err}");
        assert_eq!(
            err.trim_end(),
            format!(
                "countersign: not signed in to `{admin}`: run `countersign login` (or give --cert/--key or --token)"
            ),
            "{args:?}"
        );
    }
    // Expired, and no refresh token to renew it with.
    write_sign_in(cache.path(), &admin, now() - 60);
    let mut cmd = cli(cache.path(), &["approvals", "list"]);
    cmd.args(["--admin", &admin]).arg("--ca").arg(pki.ca());
    let (code, _, err) = run(cmd).await;
    assert_eq!(code, 1);
    assert!(
        err.contains(&format!(
            "not signed in to `{admin}` (the sign-in has expired): run `countersign login`"
        )),
        "{err}"
    );
}

#[tokio::test]
async fn a_cached_sign_in_is_presented_and_logout_removes_it() {
    let admin = Admin::start(
        "login-cli-cached:",
        vec![approver("dora", &["data-owners"], None)],
    )
    .await;
    let cache = tempfile::tempdir().unwrap();
    let with = |args: &[&str]| {
        let mut cmd = cli(cache.path(), args);
        cmd.args(["--admin", &admin.url()])
            .arg("--ca")
            .arg(admin.pki.ca());
        cmd
    };
    write_sign_in(cache.path(), &admin.url(), now() + 3600);
    // The cached token is sent: this admin API has no identity provider,
    // so it is a bearer token it does not know.
    let (code, _, err) = run(with(&["approvals", "list"])).await;
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("unknown bearer token"), "{err}");
    // A certificate comes first: the cache is not consulted.
    let (cert, key) = admin.pki.client("dora");
    let whoami = |extra: &[&str]| {
        let mut cmd = with(&["whoami"]);
        cmd.arg("--cert")
            .arg(&cert)
            .arg("--key")
            .arg(&key)
            .args(extra);
        run(cmd)
    };
    let (code, out, err) = whoami(&[]).await;
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(
        out,
        "name     dora\ngroups   data-owners\nmethod   certificate\n"
    );
    let (code, out, err) = whoami(&["--output", "json"]).await;
    assert_eq!(code, 0, "{out}{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        v,
        serde_json::json!({"name": "dora", "groups": ["data-owners"], "method": "certificate",
            "issuer": null, "subject": null})
    );

    let path = cached(cache.path(), &admin.url());
    let (code, out, err) = run(with(&["logout"])).await;
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(
        out,
        format!(
            "Signed out of {}: removed {}\n",
            admin.url(),
            path.display()
        )
    );
    assert!(!path.exists());
}
