//! An approver with only an account at the identity provider, end to end:
//! `countersign login` against a real OpenID Provider (`oidc-provider`),
//! the browser played over plain HTTP, by the authorization code flow with
//! PKCE and by the device flow; the cached sign-in used by `approvals` and
//! `whoami`, renewed with its refresh token, forgotten by `logout`; an
//! agent's export through the real Envoy approved that way; a group added
//! at the provider counting without restarting countersign.

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use common::idp::{Idp, admin_oidc_table};
use common::stack::{Stack, stack_with};
use common::{audit_export, policy_copy, token_with};
use serde_json::{Value, json};

const EXPORT: &str = "/v1/datasets/sales/export";

fn users(dora_groups: Value) -> Value {
    json!({
        "dora": {"email": "dora@example.com", "groups": dora_groups},
        "alice": {"email": "alice@example.com", "groups": ["data-owners"]}
    })
}

/// An approver's terminal: `countersign` with the admin API's address and
/// CA, sign-ins cached in a directory of its own.
struct Terminal {
    admin: String,
    ca: PathBuf,
    cache: tempfile::TempDir,
}

impl Terminal {
    fn new(s: &Stack) -> Terminal {
        Terminal {
            admin: format!("https://{}", s.sidecar.admin_addr.clone().unwrap()),
            ca: s.pki.ca(),
            cache: tempfile::tempdir().unwrap(),
        }
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = common::client_command(args);
        cmd.env("COUNTERSIGN_CACHE_DIR", self.cache.path())
            .env("COUNTERSIGN_ADMIN_ADDR", &self.admin)
            .env("COUNTERSIGN_ADMIN_CA", &self.ca);
        cmd
    }

    /// (exit code, stdout, stderr).
    async fn run(&self, args: &[&str]) -> (i32, String, String) {
        common::run_off_runtime(self.command(args)).await
    }

    /// `countersign login ARGS`, the person at the browser played by
    /// `at_browser` with what login prints; (exit code, stdout, stderr).
    async fn login<F, Fut>(&self, args: &[&str], at_browser: F) -> (i32, String, String)
    where
        F: FnOnce(Vec<String>) -> Fut,
        Fut: std::future::Future<Output = ()>,
    {
        let mut all = vec!["login", "--no-browser"];
        all.extend_from_slice(args);
        let mut child = self
            .command(&all)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let (tx, rx) = mpsc::channel();
        let stderr = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        // Until login waits for the browser: its prompt, in full.
        let prompt = tokio::task::spawn_blocking(move || {
            let mut lines = Vec::new();
            while let Ok(line) = rx.recv_timeout(Duration::from_secs(20)) {
                let done = line.starts_with("Waiting for the sign-in")
                    || lines
                        .last()
                        .is_some_and(|l: &String| l.starts_with("Open this URL"));
                lines.push(line);
                if done {
                    break;
                }
            }
            (lines, rx)
        })
        .await
        .unwrap();
        let (lines, rx) = prompt;
        at_browser(lines.clone()).await;
        let out = tokio::task::spawn_blocking(move || child.wait_with_output().unwrap())
            .await
            .unwrap();
        let rest: Vec<String> = rx.try_iter().collect();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            [lines, rest].concat().join("\n"),
        )
    }

    /// Signs `user` in by the authorization code flow.
    async fn login_in_browser(&self, idp: &Idp, user: &str) -> String {
        let (code, out, err) = self
            .login(&[], |lines| async move {
                let url = lines.last().expect("the authorization URL").clone();
                assert!(url.starts_with(&idp.issuer), "{lines:?}");
                idp.authorize_as(&url, user).await;
            })
            .await;
        assert_eq!(code, 0, "{out}\n{err}");
        out
    }

    /// Signs `user` in by the device flow.
    async fn login_on_device(&self, idp: &Idp, user: &str) -> String {
        let (code, out, err) = self
            .login(&["--device"], |lines| async move {
                let line = lines
                    .iter()
                    .find(|l| l.starts_with("To sign in, open "))
                    .unwrap_or_else(|| panic!("{lines:?}"));
                let rest = line.trim_start_matches("To sign in, open ");
                let (uri, code) = rest.split_once(" and enter the code ").unwrap();
                idp.device_as(uri, code.trim(), user).await;
            })
            .await;
        assert_eq!(code, 0, "{out}\n{err}");
        out
    }

    /// The one cached sign-in.
    fn cached(&self) -> PathBuf {
        let dir = self.cache.path().join("tokens");
        let files: Vec<_> = std::fs::read_dir(&dir)
            .map(|d| d.map(|e| e.unwrap().path()).collect())
            .unwrap_or_default();
        assert_eq!(files.len(), 1, "{files:?}");
        files[0].clone()
    }
}

fn mode(p: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

/// The agent's export on behalf of alice, through Envoy: (approval id, its
/// token).
async fn export(s: &Stack, rows: u32) -> (String, String) {
    let agent = token_with("agent-7", &["agents"], json!({"on_behalf_of": "alice"}));
    let r = s
        .post(
            EXPORT,
            &agent,
            &format!(r#"{{"format":"csv","rows":{rows}}}"#),
            None,
        )
        .await;
    assert_eq!(r.body["decision"], "approval_required", "{:?}", r.body);
    (
        r.body["approval_id"].as_str().unwrap().to_owned(),
        r.body["approval_token"].as_str().unwrap().to_owned(),
    )
}

#[tokio::test]
async fn an_approver_with_only_a_provider_account_signs_in_and_approves_through_envoy() {
    let idp = Idp::start(users(json!([])));
    let issuer = idp.issuer.clone();
    let s = stack_with(policy_copy(), None, &|t| t + &admin_oidc_table(&issuer)).await;
    let (id, approval_token) = export(&s, 10).await;
    let dora = Terminal::new(&s);

    // Signed in by the browser, before anyone put dora in a group.
    let out = dora.login_in_browser(&idp, "dora").await;
    assert_eq!(
        out.trim(),
        format!(
            "Signed in to {} as dora@example.com (groups: none) via {issuer}",
            dora.admin
        )
    );
    let cached = dora.cached();
    assert_eq!(mode(&cached), 0o600);
    assert_eq!(mode(cached.parent().unwrap()), 0o700);
    let (code, _, err) = dora
        .run(&["approvals", "approve", &id, "--reason", "quarterly report"])
        .await;
    assert_eq!(code, 1);
    assert!(
        err.contains("`dora@example.com` is in no approver group"),
        "{err}"
    );

    // Added to data-owners at the provider: her next sign-in carries it;
    // countersign is neither edited nor restarted.
    idp.set_users(users(json!(["data-owners"])));
    let out = dora.login_on_device(&idp, "dora").await;
    assert!(
        out.contains("as dora@example.com (groups: data-owners)"),
        "{out}"
    );
    let (code, out, err) = dora.run(&["whoami", "--output", "json"]).await;
    assert_eq!(code, 0, "{err}");
    let me: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        me,
        json!({"name": "dora@example.com", "groups": ["data-owners"], "method": "oidc",
               "issuer": issuer, "subject": "dora"})
    );
    let (code, out, err) = dora
        .run(&["approvals", "approve", &id, "--reason", "quarterly report"])
        .await;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("status          approved"), "{out}");
    assert!(
        out.contains("approve by dora@example.com at ")
            && out.contains(&format!(
                " (signed in at {issuer} as dora): quarterly report"
            )),
        "{out}"
    );
    let (code, out, err) = dora
        .run(&["approvals", "show", &id, "--output", "json"])
        .await;
    assert_eq!(code, 0, "{err}");
    let shown: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        (
            &shown["votes"][0]["method"],
            &shown["votes"][0]["issuer"],
            &shown["votes"][0]["subject"]
        ),
        (&json!("oidc"), &json!(issuer), &json!("dora"))
    );

    // The agent's call goes through Envoy once, with the approval.
    let agent = token_with("agent-7", &["agents"], json!({"on_behalf_of": "alice"}));
    let r = s
        .post(
            EXPORT,
            &agent,
            r#"{"format":"csv","rows":10}"#,
            Some(&approval_token),
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);

    // The audit trail names the approver and how they signed in; never a token.
    let entries = audit_export(&s.config);
    let approved = entries
        .iter()
        .find(|e| e["event"] == "approved" && e["approval_id"] == id.as_str())
        .unwrap_or_else(|| panic!("{entries:?}"));
    assert_eq!(approved["approver"], "dora@example.com");
    assert_eq!(approved["approver_method"], "oidc");
    assert_eq!(approved["approver_issuer"], issuer.as_str());
    assert_eq!(approved["approver_subject"], "dora");
    let id_token = serde_json::from_str::<Value>(&std::fs::read_to_string(&cached).unwrap())
        .unwrap()["id_token"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(!serde_json::to_string(&entries).unwrap().contains(&id_token));

    // The human the agent acts for signs in too, and may not decide.
    let (second, _) = export(&s, 11).await;
    let alice = Terminal::new(&s);
    alice.login_in_browser(&idp, "alice").await;
    let (code, _, err) = alice
        .run(&["approvals", "approve", &second, "--reason", "mine"])
        .await;
    assert_eq!(code, 1);
    assert!(
        err.contains(
            "this call acts on behalf of `User::\"alice\"`, who cannot decide its approval"
        ),
        "{err}"
    );

    // Signed out: the cache is gone, and with it the way in.
    let (code, out, _) = dora.run(&["logout"]).await;
    assert_eq!(code, 0);
    assert!(
        out.contains("Signed out of") && out.contains("Revoked the refresh token"),
        "{out}"
    );
    assert!(!cached.exists());
    let (code, _, err) = dora.run(&["approvals", "list"]).await;
    assert_eq!(code, 1);
    assert!(
        err.contains("not signed in to") && err.contains("countersign login"),
        "{err}"
    );
}

#[tokio::test]
async fn a_short_lived_sign_in_is_renewed_and_a_dead_one_says_to_sign_in_again() {
    // ID tokens of 5 s: always within the 30 s in which the client renews.
    let mut idp = Idp::start_with_id_token_ttl(users(json!(["data-owners"])), 5);
    let issuer = idp.issuer.clone();
    let s = stack_with(policy_copy(), None, &|t| t + &admin_oidc_table(&issuer)).await;
    let dora = Terminal::new(&s);
    dora.login_in_browser(&idp, "dora").await;
    let read =
        |p: &Path| serde_json::from_str::<Value>(&std::fs::read_to_string(p).unwrap()).unwrap();
    let before = read(&dora.cached());
    tokio::time::sleep(Duration::from_secs(6)).await;

    // Expired: renewed with the refresh token, and the call goes through.
    let (code, out, err) = dora.run(&["whoami"]).await;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("dora@example.com"), "{out}");
    let after = read(&dora.cached());
    assert_ne!(after["id_token"], before["id_token"]);
    assert_eq!(mode(&dora.cached()), 0o600);

    // The provider forgot every grant (restarted): the refresh fails, and
    // the client says what to do.
    idp.restart();
    tokio::time::sleep(Duration::from_secs(6)).await;
    let (code, _, err) = dora.run(&["approvals", "list"]).await;
    assert_eq!(code, 1);
    assert!(
        err.contains("could not be renewed") && err.contains("run `countersign login`"),
        "{err}"
    );
}
