//! The two ways to sign in: the authorization code with PKCE, the browser
//! redirected back to a listener on 127.0.0.1 (RFC 8252), and the device
//! authorization grant for a machine without a browser (RFC 8628). Prompts
//! go to stderr, each URL alone on its line so a script can pick it up.

use std::cell::Cell;
use std::io::IsTerminal;
use std::time::Duration;

use oauth2::{
    AuthorizationCode, CsrfToken, DeviceCodeErrorResponseType, PkceCodeChallenge, RedirectUrl,
    RequestTokenError, Scope, StandardDeviceAuthorizationResponse,
};
use tokio::net::TcpListener;

use super::LoginError;
use super::oauth::{Obtained, Provider, obtained, token_error};
use crate::text::{printable, shortened};

/// How the user proves who they are, and how long they may take.
#[derive(Debug, Clone, Copy)]
pub(super) struct Prompt {
    pub timeout: Duration,
    /// Whether to start a browser (never when stdout is not a terminal).
    pub browser: bool,
}

/// The authorization code flow with PKCE (S256) and a loopback redirect.
pub(super) async fn code(
    idp: &Provider,
    scopes: &[String],
    prompt: Prompt,
) -> Result<Obtained, LoginError> {
    idp.require("authorization_endpoint", &idp.meta.authorization_endpoint)?;
    idp.require("token_endpoint", &idp.meta.token_endpoint)?;
    // Any free port: RFC 8252 §7.3 has providers accept any port on the
    // loopback address for a native client.
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(LoginError::Listen)?;
    let port = listener.local_addr().map_err(LoginError::Listen)?.port();
    let redirect = RedirectUrl::new(format!("http://127.0.0.1:{port}/callback"))
        .map_err(|e| LoginError::Metadata(e.to_string()))?;
    let client = idp.client(Some(redirect))?;
    let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
    let mut request = client
        .authorize_url(CsrfToken::new_random)
        .map_err(|e| LoginError::Metadata(e.to_string()))?
        .add_scopes(scopes.iter().cloned().map(Scope::new))
        .set_pkce_challenge(challenge);
    // OpenID Connect Core §11: a refresh token for offline access is only
    // issued with the user's consent asked for.
    if scopes.iter().any(|s| s == "offline_access") {
        request = request.add_extra_param("prompt", "consent");
    }
    let (url, state) = request.url();
    eprintln!(
        "Open this URL in a browser to sign in (waiting up to {}):",
        humantime::format_duration(prompt.timeout)
    );
    eprintln!("{url}");
    if prompt.browser {
        open_browser(url.as_str());
    }
    let code = tokio::time::timeout(prompt.timeout, callback(listener, state.secret()))
        .await
        .map_err(|_| LoginError::Timeout {
            waited: humantime::format_duration(prompt.timeout).to_string(),
            device: false,
        })??;
    let tokens = client
        .exchange_code(code)
        .map_err(|e| LoginError::Metadata(e.to_string()))?
        .set_pkce_verifier(verifier)
        .request_async(&idp.http)
        .await
        .map_err(|e| token_error(idp.token_url(), e))?;
    obtained(tokens)
}

/// The device authorization grant: a code the user enters on any device.
pub(super) async fn device(
    idp: &Provider,
    scopes: &[String],
    prompt: Prompt,
) -> Result<Obtained, LoginError> {
    idp.require(
        "device_authorization_endpoint",
        &idp.meta.device_authorization_endpoint,
    )?;
    idp.require("token_endpoint", &idp.meta.token_endpoint)?;
    let client = idp.client(None)?;
    let device_url = idp
        .meta
        .device_authorization_endpoint
        .clone()
        .unwrap_or_default();
    let details: StandardDeviceAuthorizationResponse = client
        .exchange_device_code()
        .map_err(|e| LoginError::Metadata(e.to_string()))?
        .add_scopes(scopes.iter().cloned().map(Scope::new))
        .request_async(&idp.http)
        .await
        .map_err(|e| token_error(&device_url, e))?;
    eprintln!(
        "To sign in, open {} and enter the code {}",
        printable(details.verification_uri().as_str()),
        printable(details.user_code().secret())
    );
    if let Some(complete) = details.verification_uri_complete() {
        eprintln!("Or open this URL, which carries the code:");
        eprintln!("{}", printable(complete.secret()));
    }
    eprintln!(
        "Waiting for the sign-in (up to {})…",
        humantime::format_duration(prompt.timeout.min(details.expires_in()))
    );
    if prompt.browser {
        let url = details.verification_uri_complete().map_or_else(
            || details.verification_uri().to_string(),
            |c| c.secret().clone(),
        );
        open_browser(&url);
    }
    // oauth2 polls as RFC 8628 §3.5 says: every `interval`, 5 s more after
    // each `slow_down`, until `expires_in`. A longer interval than the last
    // is said once, so a long wait is not a silent one.
    let last = Cell::new(details.interval());
    let sleep = |interval: Duration| {
        if interval > last.get() {
            eprintln!(
                "The identity provider asks to poll less often: every {}",
                humantime::format_duration(interval)
            );
        }
        last.set(interval);
        tokio::time::sleep(interval)
    };
    let poll = client
        .exchange_device_access_token(&details)
        .map_err(|e| LoginError::Metadata(e.to_string()))?
        .request_async(&idp.http, sleep, None);
    let tokens = tokio::time::timeout(prompt.timeout, poll)
        .await
        .map_err(|_| LoginError::Timeout {
            waited: humantime::format_duration(prompt.timeout).to_string(),
            device: true,
        })?
        .map_err(|e| match &e {
            RequestTokenError::ServerResponse(r) => match r.error() {
                DeviceCodeErrorResponseType::AccessDenied => LoginError::Refused(
                    r.error_description()
                        .map_or_else(|| "access_denied".to_owned(), |d| shortened(d, 200)),
                ),
                DeviceCodeErrorResponseType::ExpiredToken => LoginError::Expired,
                _ => token_error(idp.token_url(), e),
            },
            _ => token_error(idp.token_url(), e),
        })?;
    obtained(tokens)
}

/// Starts the desktop's browser on `url`, if it has one; the URL is printed
/// anyway.
fn open_browser(url: &str) {
    if !std::io::stdout().is_terminal() {
        return;
    }
    let opener = if cfg!(target_os = "macos") {
        "open"
    } else {
        "xdg-open"
    };
    let _ = std::process::Command::new(opener)
        .arg(url)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn();
}

/// What one request to the listener was.
#[derive(Debug, PartialEq, Eq)]
enum Callback {
    /// The provider's redirect with the code.
    Code(String),
    /// The provider's redirect with an error (`error`, `error_description`).
    Error(String),
    /// A redirect for another sign-in (an old tab), or forged.
    WrongState,
    /// Not the redirect: `/favicon.ico`, a probe.
    Other,
}

/// Waits for the browser's redirect to `/callback` carrying `state` (an
/// HTTP server of axum's on `listener`), and answers it with a page that
/// says what happened.
async fn callback(listener: TcpListener, state: &str) -> Result<AuthorizationCode, LoginError> {
    use axum::extract::RawQuery;
    use axum::http::StatusCode;
    use axum::response::Html;

    let (tx, mut rx) = tokio::sync::mpsc::channel(1);
    let state = state.to_owned();
    let app = axum::Router::new()
        .route(
            "/callback",
            axum::routing::get(move |RawQuery(query): RawQuery| {
                let target = format!("/callback?{}", query.unwrap_or_default());
                let outcome = parse(&target, &state);
                let tx = tx.clone();
                async move {
                    let (status, body) = match &outcome {
                        Callback::Code(_) => (StatusCode::OK, PAGE_SIGNED_IN),
                        Callback::Error(_) => (StatusCode::OK, PAGE_FAILED),
                        Callback::WrongState => {
                            eprintln!(
                                "Ignored a redirect for another sign-in (an older browser tab?): still waiting"
                            );
                            (StatusCode::BAD_REQUEST, PAGE_WRONG_STATE)
                        }
                        Callback::Other => (StatusCode::NOT_FOUND, PAGE_NOT_FOUND),
                    };
                    let _ = tx.try_send(outcome);
                    (status, [("cache-control", "no-store")], Html(page(body)))
                }
            }),
        )
        .fallback(|| async { (StatusCode::NOT_FOUND, Html(page(PAGE_NOT_FOUND))) });
    let server = tokio::spawn(async move { axum::serve(listener, app).await });
    let result = loop {
        match rx.recv().await {
            Some(Callback::Code(code)) => break Ok(AuthorizationCode::new(code)),
            Some(Callback::Error(why)) => break Err(LoginError::Refused(why)),
            Some(_) => continue,
            None => break Err(LoginError::Refused("the redirect listener stopped".into())),
        }
    };
    // Time for the page to reach the browser; the sign-in goes on without it.
    tokio::time::sleep(Duration::from_millis(200)).await;
    server.abort();
    result
}

/// What the request to `target` is, for a sign-in started with `state`.
fn parse(target: &str, state: &str) -> Callback {
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    if path != "/callback" {
        return Callback::Other;
    }
    let mut code = None;
    let mut got_state = None;
    let mut error = None;
    let mut description = None;
    for (k, v) in form_urlencoded::parse(query.as_bytes()) {
        match k.as_ref() {
            "code" => code = Some(v.into_owned()),
            "state" => got_state = Some(v.into_owned()),
            "error" => error = Some(v.into_owned()),
            "error_description" => description = Some(v.into_owned()),
            _ => {}
        }
    }
    // RFC 6749 §10.12: only the redirect of this sign-in counts.
    if got_state.as_deref() != Some(state) {
        return Callback::WrongState;
    }
    match (code, error) {
        (_, Some(e)) => Callback::Error(match description {
            Some(d) => format!("{}: {}", shortened(&e, 64), shortened(&d, 200)),
            None => shortened(&e, 64),
        }),
        (Some(c), None) => Callback::Code(c),
        (None, None) => Callback::Error("the redirect carries no code".to_owned()),
    }
}

/// Fixed pages: nothing from the request is echoed into them.
const PAGE_SIGNED_IN: &str =
    "<h1>Signed in</h1><p>countersign has your sign-in. You can close this tab.</p>";
const PAGE_FAILED: &str = "<h1>Sign-in failed</h1><p>The terminal running <code>countersign login</code> says why. You can close this tab.</p>";
const PAGE_WRONG_STATE: &str = "<h1>Not this sign-in</h1><p>This redirect belongs to another sign-in (an older tab?). Use the URL <code>countersign login</code> printed last.</p>";
const PAGE_NOT_FOUND: &str = "<h1>Not found</h1>";

/// A whole page around `body`.
fn page(body: &str) -> String {
    format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>countersign</title></head><body>{body}</body></html>"
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    #[test]
    fn only_this_sign_ins_redirect_to_callback_counts() {
        assert_eq!(
            parse("/callback?code=abc&state=s1", "s1"),
            Callback::Code("abc".into())
        );
        assert_eq!(
            parse("/callback?code=abc&state=s0", "s1"),
            Callback::WrongState
        );
        assert_eq!(parse("/callback?code=abc", "s1"), Callback::WrongState);
        assert_eq!(parse("/favicon.ico", "s1"), Callback::Other);
        assert_eq!(
            parse(
                "/callback?error=access_denied&error_description=no+thanks&state=s1",
                "s1"
            ),
            Callback::Error("access_denied: no thanks".into())
        );
        assert!(matches!(
            parse("/callback?state=s1", "s1"),
            Callback::Error(_)
        ));
    }

    #[tokio::test]
    async fn the_listener_answers_the_browser_and_returns_the_code() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let browser = tokio::spawn(async move {
            let get = |path: &'static str| async move {
                let mut s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
                s.write_all(
                    format!("GET {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
                        .as_bytes(),
                )
                .await
                .unwrap();
                let mut out = String::new();
                s.read_to_string(&mut out).await.unwrap();
                out
            };
            let stale = get("/callback?code=old&state=other").await;
            let page = get("/callback?code=the-code&state=s1").await;
            (stale, page)
        });
        let code = callback(listener, "s1").await.unwrap();
        assert_eq!(code.secret(), "the-code");
        let (stale, page) = browser.await.unwrap();
        assert!(stale.starts_with("HTTP/1.1 400"), "{stale}");
        assert!(
            page.starts_with("HTTP/1.1 200") && page.contains("close this tab"),
            "{page}"
        );
    }
}
