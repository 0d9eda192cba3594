//! Validation of `[slack]`: approvals in Slack. The app's bot token and
//! signing secret (from files or environment variables, never from the
//! file itself), the workspace and app every payload must come from, where
//! requests are posted, and which Slack user is which approver.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Deserialize;

use super::env::{Env, Origins};
use super::schema::RawApprover;
use super::{ConfigError, Secret};

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawSlack {
    pub listen: String,
    pub path: String,
    pub api_url: String,
    pub team_id: String,
    pub api_app_id: String,
    pub bot_token_file: Option<PathBuf>,
    pub bot_token_env: Option<String>,
    pub signing_secret_file: Option<PathBuf>,
    pub signing_secret_env: Option<String>,
    pub default_channel: Option<String>,
    /// Approver group -> channel.
    pub channels: BTreeMap<String, String>,
    /// Slack user id -> approver name in `[[admin.approvers]]`.
    pub users: BTreeMap<String, String>,
}

impl Default for RawSlack {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:9195".into(),
            path: "/slack/interactivity".into(),
            api_url: "https://slack.com/api/".into(),
            team_id: String::new(),
            api_app_id: String::new(),
            bot_token_file: None,
            bot_token_env: None,
            signing_secret_file: None,
            signing_secret_env: None,
            default_channel: None,
            channels: BTreeMap::new(),
            users: BTreeMap::new(),
        }
    }
}

/// Approvals in Slack. `Debug` shows neither the token nor the secret.
#[derive(Debug, Clone)]
pub struct SlackConfig {
    /// The interactivity endpoint's listener (plain HTTP: TLS ends at the
    /// ingress Slack calls).
    pub listen: SocketAddr,
    /// Its path, as the app's Request URL ends.
    pub path: String,
    /// The Web API's base, ending in `/`.
    pub api_url: String,
    /// The workspace (`team.id`) and the app (`api_app_id`) every payload
    /// must name.
    pub team_id: String,
    pub api_app_id: String,
    /// `xoxb-…`: posts and updates messages, opens modals.
    pub bot_token: Secret,
    /// Signs Slack's requests (`X-Slack-Signature`).
    pub signing_secret: Secret,
    /// Where a request goes when none of its approver groups has a channel.
    pub default_channel: Option<String>,
    /// Approver group -> channel.
    pub channels: BTreeMap<String, String>,
    /// Slack user id -> the approver that user is.
    pub users: BTreeMap<String, SlackApprover>,
}

/// An approver as a Slack user is mapped to them: a name of
/// `[[admin.approvers]]` and the groups given there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlackApprover {
    pub name: String,
    pub groups: Vec<String>,
}

pub(super) fn validate_slack(
    r: &RawSlack,
    approvers: &[RawApprover],
    o: &Origins,
    env: &dyn Env,
) -> Result<SlackConfig, ConfigError> {
    let f = |n: &str| format!("slack.{n}");
    let listen = r.listen.parse::<SocketAddr>().map_err(|_| {
        o.invalid(
            &f("listen"),
            &format!(
                "expected an IP address and port such as `127.0.0.1:9195`, got `{}`",
                r.listen
            ),
        )
    })?;
    if !r.path.starts_with('/') || r.path.contains(['?', '#', '{', '}', '*', ' ']) {
        return Err(o.invalid(
            &f("path"),
            &format!(
                "expected a literal path such as `/slack/interactivity`, got `{}`",
                r.path
            ),
        ));
    }
    let api_url = api_url(o, &r.api_url)?;
    let team_id = slack_id(
        o,
        &f("team_id"),
        &r.team_id,
        "the workspace's id, such as `T0123ABCD`",
    )?;
    let api_app_id = slack_id(
        o,
        &f("api_app_id"),
        &r.api_app_id,
        "the app's id, such as `A0123ABCD`",
    )?;
    let bot_token = secret(o, env, "bot_token", &r.bot_token_file, &r.bot_token_env)?;
    if !bot_token.expose().starts_with("xoxb-") {
        // Said without the value.
        return Err(o.invalid(
            &f(if r.bot_token_file.is_some() {
                "bot_token_file"
            } else {
                "bot_token_env"
            }),
            "expected a bot token (`xoxb-…`, under OAuth & Permissions in the app's settings)",
        ));
    }
    let signing_secret = secret(
        o,
        env,
        "signing_secret",
        &r.signing_secret_file,
        &r.signing_secret_env,
    )?;
    let channel = |field: &str, v: &str| {
        let v = v.trim();
        if v.is_empty() || v.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(o.invalid(
                field,
                &format!("expected a channel id such as `C0123ABCD`, got `{v}`"),
            ));
        }
        Ok(v.to_owned())
    };
    let default_channel = r
        .default_channel
        .as_deref()
        .map(|c| channel(&f("default_channel"), c))
        .transpose()?;
    let mut channels = BTreeMap::new();
    for (group, c) in &r.channels {
        channels.insert(group.clone(), channel(&f(&format!("channels.{group}")), c)?);
    }
    if default_channel.is_none() && channels.is_empty() {
        return Err(o.invalid(
            &f("default_channel"),
            "expected a channel for requests, here or per approver group in [slack.channels]: otherwise nothing is posted",
        ));
    }
    let mut users = BTreeMap::new();
    for (user, name) in &r.users {
        let field = f(&format!("users.{user}"));
        slack_id(
            o,
            &field,
            user,
            "a Slack user id, such as `U0123ABCD`, as the key",
        )?;
        // Groups come from every entry of the name (a certificate's and a
        // token's): the operator named this person here on purpose.
        let entries: Vec<&RawApprover> = approvers.iter().filter(|a| a.name == *name).collect();
        if entries.is_empty() {
            return Err(o.invalid(
                &field,
                &format!(
                    "`{name}` is not the name of an approver in [[admin.approvers]]: a Slack user is mapped to one, and gets its groups"
                ),
            ));
        }
        let mut groups: Vec<String> = Vec::new();
        for g in entries.iter().flat_map(|a| &a.groups) {
            if !groups.contains(g) {
                groups.push(g.clone());
            }
        }
        if groups.is_empty() {
            return Err(o.invalid(
                &field,
                &format!(
                    "`{name}` is in no group in [[admin.approvers]]: it could approve nothing"
                ),
            ));
        }
        users.insert(
            user.clone(),
            SlackApprover {
                name: name.clone(),
                groups,
            },
        );
    }
    if users.is_empty() {
        return Err(o.invalid(
            &f("users"),
            "expected at least one Slack user id mapped to an approver name of [[admin.approvers]] (`U0123ABCD = \"dora\"`): otherwise nobody can approve in Slack",
        ));
    }
    Ok(SlackConfig {
        listen,
        path: r.path.clone(),
        api_url,
        team_id,
        api_app_id,
        bot_token,
        signing_secret,
        default_channel,
        channels,
        users,
    })
}

/// The Web API's base with a trailing `/`: https, or plain http to this
/// host only (the bot token goes with every call).
fn api_url(o: &Origins, v: &str) -> Result<String, ConfigError> {
    let field = "slack.api_url";
    let parsed = reqwest::Url::parse(v.trim()).map_err(|_| {
        o.invalid(
            field,
            &format!("expected a URL such as `https://slack.com/api/`, got `{v}`"),
        )
    })?;
    if !crate::idp::discovery::is_tls_or_loopback(&parsed)
        || parsed.query().is_some()
        || parsed.fragment().is_some()
    {
        return Err(o.invalid(
            field,
            &format!(
                "expected an https URL without a query (plain http only to 127.0.0.1 or localhost): the bot token goes with every call, got `{v}`"
            ),
        ));
    }
    let mut url = parsed.to_string();
    if !url.ends_with('/') {
        url.push('/');
    }
    Ok(url)
}

/// An id as Slack writes them: capital letters and digits.
fn slack_id(o: &Origins, field: &str, v: &str, what: &str) -> Result<String, ConfigError> {
    let ok = !v.is_empty()
        && v.bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit());
    if !ok {
        return Err(o.invalid(field, &format!("expected {what}, got `{v}`")));
    }
    Ok(v.to_owned())
}

/// `<name>_file` or `<name>_env`, exactly one; the value trimmed, never
/// shown in an error.
fn secret(
    o: &Origins,
    env: &dyn Env,
    name: &str,
    file: &Option<PathBuf>,
    var: &Option<String>,
) -> Result<Secret, ConfigError> {
    let (file_field, env_field) = (format!("slack.{name}_file"), format!("slack.{name}_env"));
    let value = match (file, var) {
        (Some(_), Some(_)) | (None, None) => {
            return Err(o.invalid(
                &file_field,
                &format!(
                    "expected either {file_field} (a file holding it) or {env_field} (the name of an environment variable holding it), exactly one"
                ),
            ));
        }
        (Some(p), None) => std::fs::read_to_string(p)
            .map_err(|e| o.invalid(&file_field, &format!("cannot read `{}`: {e}", p.display())))?,
        (None, Some(v)) => env.var(v).ok_or_else(|| {
            o.invalid(
                &env_field,
                &format!("the environment variable `{v}` is not set"),
            )
        })?,
    };
    let value = value.trim();
    if value.is_empty() {
        let field = if file.is_some() {
            file_field
        } else {
            env_field
        };
        return Err(o.invalid(&field, "expected a secret, found it empty"));
    }
    Ok(Secret::new(value.to_owned()))
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use crate::config::Config;

    const SLACK: &str = r#"
[[admin.approvers]]
name = "dora"
groups = ["data-owners"]

[[admin.approvers]]
name = "dora"
groups = ["on-call"]
token_sha256 = "abababababababababababababababababababababababababababababababab"

[[admin.approvers]]
name = "nobody"

[slack]
team_id = "T0TEAM"
api_app_id = "A0APP"
bot_token_file = "bot-token"
signing_secret_env = "SLACK_SIGNING_SECRET"
default_channel = "C0DEFAULT"

[slack.channels]
data-owners = "C0DATA"

[slack.users]
U0DORA = "dora"
"#;

    /// `text` loaded from a directory holding the bot token, with the
    /// signing secret in the environment.
    fn load(text: &str) -> Result<Config, String> {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("bot-token"), "xoxb-b0t-t0ken\n").unwrap();
        let p = d.path().join("countersign.toml");
        std::fs::write(&p, text).unwrap();
        let env: HashMap<String, String> = [(
            "SLACK_SIGNING_SECRET".to_owned(),
            "s1gning-s3cret".to_owned(),
        )]
        .into();
        Config::load(Some(&p), &env).map_err(|e| e.to_string())
    }

    #[test]
    fn slack_reads_its_secrets_maps_users_to_approvers_and_shows_no_secret() {
        let c = load(SLACK).unwrap();
        let s = c.slack.as_ref().unwrap();
        assert_eq!(s.bot_token.expose(), "xoxb-b0t-t0ken");
        assert_eq!(s.signing_secret.expose(), "s1gning-s3cret");
        assert_eq!(s.api_url, "https://slack.com/api/");
        assert_eq!(s.listen.to_string(), "127.0.0.1:9195");
        assert_eq!(s.path, "/slack/interactivity");
        // The groups of every entry of the name.
        assert_eq!(s.users["U0DORA"].groups, ["data-owners", "on-call"]);
        let shown = format!("{c:?}");
        for secret in ["xoxb-b0t-t0ken", "s1gning-s3cret"] {
            assert!(!shown.contains(secret), "`{secret}` in {shown}");
        }
        assert!(
            shown.contains("T0TEAM") && shown.contains("U0DORA"),
            "{shown}"
        );
        assert!(load("").unwrap().slack.is_none());
    }

    #[test]
    fn a_secret_written_in_the_file_is_refused_without_being_shown() {
        for (line, secret) in [
            ("bot_token = \"xoxb-1nline-t0ken\"", "xoxb-1nline-t0ken"),
            ("signing_secret = \"1nline-s3cret\"", "1nline-s3cret"),
            // Misspelt: toml's own error would quote the line.
            ("signing_secrett = \"1nline-s3cret\"", "1nline-s3cret"),
        ] {
            let text = SLACK.replacen("[slack]\n", &format!("[slack]\n{line}\n"), 1);
            let e = load(&text).unwrap_err();
            assert!(!e.contains(secret), "{e}");
            let key = line.split(' ').next().unwrap();
            assert!(e.contains(&format!("unknown field `{key}`")), "{e}");
        }
    }

    #[test]
    fn every_slack_field_is_checked_and_named() {
        let with = |from: &str, to: &str| {
            assert!(SLACK.contains(from), "{from}");
            SLACK.replacen(from, to, 1)
        };
        for (text, words) in [
            (
                with("team_id = \"T0TEAM\"", "team_id = \"\""),
                "field `slack.team_id`: expected the workspace's id, such as `T0123ABCD`, got ``",
            ),
            (
                with("api_app_id = \"A0APP\"", "api_app_id = \"a0app\""),
                "field `slack.api_app_id`: expected the app's id",
            ),
            (
                with(
                    "[slack]\n",
                    "[slack]\napi_url = \"http://slack.example.com/api\"\n",
                ),
                "field `slack.api_url`: expected an https URL",
            ),
            (
                with("[slack]\n", "[slack]\nlisten = \"nowhere\"\n"),
                "field `slack.listen`: expected an IP address and port",
            ),
            (
                with("[slack]\n", "[slack]\npath = \"slack\"\n"),
                "field `slack.path`: expected a literal path",
            ),
            (
                with("[slack]\n", "[slack]\nbot_token_env = \"X\"\n"),
                "field `slack.bot_token_file`: expected either slack.bot_token_file",
            ),
            (
                with(
                    "signing_secret_env = \"SLACK_SIGNING_SECRET\"",
                    "signing_secret_env = \"UNSET\"",
                ),
                "field `slack.signing_secret_env`: the environment variable `UNSET` is not set",
            ),
            (
                with(
                    "bot_token_file = \"bot-token\"",
                    "bot_token_file = \"missing\"",
                ),
                "field `slack.bot_token_file`: cannot read",
            ),
            (
                with(
                    "bot_token_file = \"bot-token\"",
                    "bot_token_env = \"SLACK_SIGNING_SECRET\"",
                ),
                "field `slack.bot_token_env`: expected a bot token (`xoxb-…`",
            ),
            (
                with("U0DORA = \"dora\"", "U0DORA = \"erin\""),
                "field `slack.users.U0DORA`: `erin` is not the name of an approver in [[admin.approvers]]",
            ),
            (
                with("U0DORA = \"dora\"", "U0DORA = \"nobody\""),
                "field `slack.users.U0DORA`: `nobody` is in no group",
            ),
            (
                with("U0DORA = \"dora\"", "dora = \"dora\""),
                "field `slack.users.dora`: expected a Slack user id",
            ),
            (
                with("U0DORA = \"dora\"", ""),
                "field `slack.users`: expected at least one Slack user id",
            ),
            (
                with("data-owners = \"C0DATA\"", "data-owners = \"C0 DATA\""),
                "field `slack.channels.data-owners`: expected a channel id",
            ),
            (
                with("default_channel = \"C0DEFAULT\"", "").replace("data-owners = \"C0DATA\"", ""),
                "field `slack.default_channel`: expected a channel for requests",
            ),
            (
                with("[slack]\n", "[slack]\nbot_token = \"xoxb-inline\"\n"),
                "unknown field `bot_token`",
            ),
        ] {
            let e = load(&text).unwrap_err();
            assert!(e.contains(words), "{words}\n=> {e}");
            assert!(
                !e.contains("s1gning-s3cret") && !e.contains("xoxb-b0t"),
                "{e}"
            );
        }
    }
}
