//! A real OpenID Provider for the tests: `tests/oidc/provider.mjs`
//! (oidc-provider on Node.js, installed by `scripts/install-oidc.sh`) on
//! 127.0.0.1 over plain HTTP, and `tests/oidc/browser.mjs` to play the person
//! at the browser. See `tests/idp_harness.rs` for every flow driven end to end.
//!
//! The provider knows one public client, [`CLIENT_ID`]: PKCE (S256) required,
//! redirect URI `http://127.0.0.1/callback` on any port, grants
//! authorization_code, refresh_token and device_code. ID tokens carry `email`,
//! `preferred_username` and `groups` for the scopes `email`, `profile` and
//! `groups`; a refresh token comes with every code or device grant.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::{Value, json};

use super::{free_port, repo};

/// The public client the provider registers (no secret).
pub const CLIENT_ID: &str = "countersign-cli";

/// The sidecar's `[admin.oidc]` table for `issuer` (appended to a
/// configuration): the provider's groups as they are, callers and approvers
/// compared by `sub`, keys refreshed at most every second.
pub fn admin_oidc_table(issuer: &str) -> String {
    format!(
        "\n[admin.oidc]\nissuer = \"{issuer}\"\nclient_id = \"{CLIENT_ID}\"\nrequester_claim = \"sub\"\nscopes = [\"openid\", \"email\", \"profile\", \"groups\", \"offline_access\"]\njwks_min_refresh = \"1s\"\n"
    )
}

/// ID token lifetime unless a test asks for another.
const DEFAULT_ID_TOKEN_TTL: u64 = 300;

/// `node tests/oidc/provider.mjs`; killed on drop.
///
/// Users are JSON: `{"dora": {"email": "dora@example.com", "groups":
/// ["data-owners"], "password": "..."}}`; the key is the `sub`. `password` is
/// optional, and `browser.mjs` types the one in this file.
pub struct Idp {
    child: Option<Child>,
    pub issuer: String,
    pub port: u16,
    id_token_ttl: u64,
    users_file: PathBuf,
    log_file: PathBuf,
    // Holds the users file and the provider's log.
    dir: tempfile::TempDir,
    http: reqwest::Client,
}

/// Where `browser.mjs authorize` delivered the provider's answer: the client's
/// loopback redirect URI, with `code` or `error`, and what the client replied.
#[derive(Debug, Clone)]
pub struct Callback {
    pub status: u16,
    pub url: String,
}

impl Callback {
    /// A query parameter of the redirect (`code`, `state`, `iss`, `error`).
    pub fn param(&self, name: &str) -> Option<String> {
        reqwest::Url::parse(&self.url)
            .ok()?
            .query_pairs()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.into_owned())
    }
}

impl Idp {
    /// A provider on a free port with these users.
    pub fn start(users: Value) -> Idp {
        Idp::launch(free_port(), users, DEFAULT_ID_TOKEN_TTL)
    }

    /// A provider on `port`: to bring one back where a stopped one was. It is a
    /// new provider: new signing keys, no sessions, no tokens.
    pub fn start_on(port: u16, users: Value) -> Idp {
        Idp::launch(port, users, DEFAULT_ID_TOKEN_TTL)
    }

    /// A provider whose ID tokens live `secs` seconds.
    pub fn start_with_id_token_ttl(users: Value, secs: u64) -> Idp {
        Idp::launch(free_port(), users, secs)
    }

    fn launch(port: u16, users: Value, id_token_ttl: u64) -> Idp {
        let dir = tempfile::tempdir().unwrap();
        let mut idp = Idp {
            child: None,
            issuer: format!("http://127.0.0.1:{port}"),
            port,
            id_token_ttl,
            users_file: dir.path().join("users.json"),
            log_file: dir.path().join("provider.log"),
            dir,
            http: reqwest::Client::new(),
        };
        idp.set_users(users);
        idp.restart();
        idp
    }

    /// Stops the provider (the port then refuses connections); `restart`
    /// brings it back.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the provider again on the same port with the same users: new
    /// signing keys, no sessions, no tokens (its state is in memory).
    pub fn restart(&mut self) {
        self.stop();
        let dir = oidc_dir();
        assert!(
            dir.join("node_modules/oidc-provider").is_dir(),
            "oidc-provider is not installed: run scripts/install-oidc.sh"
        );
        let log = std::fs::File::create(&self.log_file).unwrap();
        let mut child = Command::new("node")
            .arg(dir.join("provider.mjs"))
            .arg(self.port.to_string())
            .env("IDP_USERS", &self.users_file)
            .env("IDP_ID_TOKEN_TTL", self.id_token_ttl.to_string())
            // The provider exits when this stdin closes, even if we are killed.
            .env("IDP_EXIT_ON_EOF", "1")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .expect("run node (scripts/install-oidc.sh installs it)");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        // Reads the ready line, then keeps draining stdout so the provider
        // never blocks on a full pipe.
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let ready = format!("ready {}", self.issuer);
        loop {
            match rx.recv_timeout(Duration::from_secs(30)) {
                Ok(line) if line == ready => break,
                Ok(_) => continue,
                Err(_) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!("the OpenID Provider did not start:\n{}", self.log());
                }
            }
        }
        self.child = Some(child);
    }

    /// What the provider wrote to stderr: its errors and failed grants.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_file).unwrap_or_default()
    }

    pub fn users_file(&self) -> &Path {
        &self.users_file
    }

    /// Replaces the users; the provider reads the file at every lookup, so
    /// the next sign-in or refresh sees the change.
    pub fn set_users(&self, users: Value) {
        // Written whole then renamed, so a lookup never reads half a file.
        let tmp = self.dir.path().join("users.json.tmp");
        std::fs::write(&tmp, serde_json::to_vec_pretty(&users).unwrap()).unwrap();
        std::fs::rename(&tmp, &self.users_file).unwrap();
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.issuer)
    }

    /// `/.well-known/openid-configuration`.
    pub async fn discovery(&self) -> Value {
        self.get_json("/.well-known/openid-configuration").await
    }

    /// The published keys (`/jwks`); counts as a fetch in `jwks_hits`.
    pub async fn jwks(&self) -> Value {
        self.get_json("/jwks").await
    }

    /// The `kid`s in `/jwks`, the signing key's first.
    pub async fn kids(&self) -> Vec<String> {
        self.jwks().await["keys"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| k["kid"].as_str().unwrap().to_string())
            .collect()
    }

    /// A new signing key with a new `kid` signs from now on; the old public
    /// key stays in `/jwks` unless `drop_old`. Returns the new `kid`.
    pub async fn rotate(&self, drop_old: bool) -> String {
        let path = if drop_old {
            "/__test/rotate?drop_old=1"
        } else {
            "/__test/rotate"
        };
        let res = self.http.post(self.url(path)).send().await.unwrap();
        assert!(res.status().is_success(), "rotate: {}", res.status());
        let body: Value = res.json().await.unwrap();
        body["kid"].as_str().unwrap().to_string()
    }

    /// How many times `/jwks` was fetched since the provider started.
    pub async fn jwks_hits(&self) -> u64 {
        self.get_json("/__test/jwks-hits").await["hits"]
            .as_u64()
            .unwrap()
    }

    /// An ID-token-like JWT signed (RS256) with the current signing key:
    /// `iss` (the issuer), `sub`, `aud`, `iat` (now) and `exp` (now + `ttl_secs`,
    /// negative for one already expired), then `claims`, which override those
    /// (`{"iss": "..."}`) or remove them (`{"exp": null}`).
    pub async fn mint(&self, sub: &str, aud: &str, ttl_secs: i64, claims: Value) -> String {
        self.mint_body(json!({"sub": sub, "aud": aud, "ttl": ttl_secs, "claims": claims}))
            .await
    }

    /// As `mint`, with `kid` in the header: a published key's `kid` signs with
    /// that key; any other is put on a token signed with the current key.
    pub async fn mint_with_kid(
        &self,
        sub: &str,
        aud: &str,
        ttl_secs: i64,
        claims: Value,
        kid: &str,
    ) -> String {
        self.mint_body(
            json!({"sub": sub, "aud": aud, "ttl": ttl_secs, "claims": claims, "kid": kid}),
        )
        .await
    }

    async fn mint_body(&self, body: Value) -> String {
        let res = self
            .http
            .post(self.url("/__test/mint"))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert!(res.status().is_success(), "mint: {}", res.status());
        res.text().await.unwrap()
    }

    /// Plays the browser: opens the authorization `url`, signs in as `user`
    /// (consenting to all it asks), and GETs the client's loopback redirect
    /// URI as the browser would. Panics with the browser's output on failure.
    pub async fn authorize_as(&self, url: &str, user: &str) -> Callback {
        parse_callback(self.browser(&["authorize", url, user]).await)
    }

    /// As `authorize_as`, but `user` declines: the redirect carries
    /// `error=access_denied`.
    pub async fn authorize_declined(&self, url: &str, user: &str) -> Callback {
        parse_callback(self.browser(&["authorize", url, user, "--deny"]).await)
    }

    /// Plays the browser for the device flow: opens `verification_uri` (or
    /// `verification_uri_complete`), enters or confirms `user_code`, and signs
    /// in as `user`. The device's next token poll then gets the tokens.
    pub async fn device_as(&self, verification_uri: &str, user_code: &str, user: &str) {
        let out = self
            .browser(&["device", verification_uri, user_code, user])
            .await;
        assert_eq!(out.trim(), "device signed in");
    }

    /// As `device_as`, but `user` declines: the device's poll gets `access_denied`.
    pub async fn device_declined(&self, verification_uri: &str, user_code: &str, user: &str) {
        let out = self
            .browser(&["device", verification_uri, user_code, user, "--deny"])
            .await;
        assert!(out.starts_with("device denied"), "{out}");
    }

    /// Runs browser.mjs off the async threads, so a redirect listener in this
    /// same runtime can answer it.
    async fn browser(&self, args: &[&str]) -> String {
        let mut cmd = Command::new("node");
        cmd.arg(oidc_dir().join("browser.mjs"))
            .args(args)
            .env("IDP_USERS", &self.users_file);
        let out = tokio::task::spawn_blocking(move || cmd.output())
            .await
            .unwrap()
            .expect("run node");
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "browser.mjs {args:?} failed:\n{stdout}{}\nprovider log:\n{}",
            String::from_utf8_lossy(&out.stderr),
            self.log()
        );
        stdout
    }

    async fn get_json(&self, path: &str) -> Value {
        let res = self.http.get(self.url(path)).send().await.unwrap();
        assert!(res.status().is_success(), "GET {path}: {}", res.status());
        res.json().await.unwrap()
    }
}

impl Drop for Idp {
    fn drop(&mut self) {
        self.stop();
    }
}

/// browser.mjs's `callback <status> <url>`.
fn parse_callback(out: String) -> Callback {
    let mut words = out.split_whitespace().skip(1);
    let status = words.next().and_then(|s| s.parse().ok());
    let url = words.next();
    match (status, url) {
        (Some(status), Some(url)) => Callback {
            status,
            url: url.to_string(),
        },
        _ => panic!("browser.mjs printed `{out}`"),
    }
}

fn oidc_dir() -> PathBuf {
    repo().join("tests/oidc")
}
