//! `approvals.webhooks`: signing secrets from a file or an environment
//! variable, refused with the field named and the secret never quoted, and
//! never shown by `Debug`.

use std::collections::HashMap;

use super::*;
use crate::notifications::signing::SigningKey;

/// Loads `text` as `countersign.toml` beside a `hook.secret` holding
/// `file_secret`, with `vars` as the environment.
fn load(text: &str, file_secret: &str, vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
    let d = tempfile::tempdir().unwrap();
    std::fs::write(d.path().join("hook.secret"), file_secret).unwrap();
    let p = d.path().join("countersign.toml");
    std::fs::write(&p, text).unwrap();
    let env: HashMap<String, String> = vars
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    Config::load(Some(&p), &env)
}

/// One `[[approvals.webhooks]]` table per entry, each with `fields`.
fn hooks(each: &[&str]) -> String {
    each.iter()
        .map(|fields| {
            format!("[[approvals.webhooks]]\nurl = \"https://hooks.example/in\"\n{fields}\n")
        })
        .collect()
}

#[test]
fn a_webhook_is_signed_with_each_secret_of_its_file_or_variable_which_never_appears_in_debug() {
    let (old, new) = (SigningKey::generate(), SigningKey::generate());
    let text = hooks(&[
        "name = \"rotating\"\nsecret_file = \"hook.secret\"",
        "name = \"current\"\nsecret_env = \"HOOK_SECRET\"",
        "name = \"plain\"",
    ]);
    let c = load(&text, &format!("{old}\n{new}\n"), &[("HOOK_SECRET", &new)]).unwrap();
    for (w, keys) in c.webhooks.iter().zip([2, 1, 0]) {
        assert!(
            format!("{w:?}").ends_with(&format!("signing_keys: {keys} }}")),
            "{w:?}"
        );
    }
    let shown = format!("{c:?}");
    for secret in [&old, &new] {
        assert!(
            !shown.contains(secret.trim_start_matches("whsec_")),
            "a secret in {shown}"
        );
    }
}

#[test]
fn a_bad_webhook_secret_is_refused_naming_the_field_and_never_quoted() {
    let good = SigningKey::generate();
    let short = "whsec_c2hvcnQtc2VjcmV0LTEy"; // 15 bytes
    let field = "field `approvals.webhooks[0].";
    for (fields, file_secret, vars, expected) in [
        (
            format!("secret = \"{good}\""),
            "",
            vec![],
            format!("{field}secret`: a secret is not written in the config file"),
        ),
        (
            "secret_file = \"hook.secret\"\nsecret_env = \"HOOK_SECRET\"".into(),
            &*good,
            vec![("HOOK_SECRET", &*good)],
            format!("{field}secret_env`: expected `secret_file` or `secret_env`, not both"),
        ),
        (
            "secret_env = \"HOOK_SECRET\"".into(),
            "",
            vec![],
            format!("{field}secret_env`: environment variable `HOOK_SECRET` is not set"),
        ),
        (
            "secret_file = \"missing.secret\"".into(),
            "",
            vec![],
            format!("{field}secret_file`: cannot read `"),
        ),
        (
            "secret_file = \"hook.secret\"".into(),
            "  \n",
            vec![],
            "expected one secret in `".into(),
        ),
        (
            "secret_env = \"HOOK_SECRET\"".into(),
            "",
            vec![("HOOK_SECRET", "s3cret-without-prefix")],
            "secret 1 of 1 in environment variable `HOOK_SECRET`: expected a secret starting with `whsec_`".into(),
        ),
        (
            "secret_env = \"HOOK_SECRET\"".into(),
            "",
            vec![("HOOK_SECRET", &format!("{good} whsec_s3cret!"))],
            "secret 2 of 2 in environment variable `HOOK_SECRET`: expected base64 after `whsec_`".into(),
        ),
        (
            "secret_file = \"hook.secret\"".into(),
            short,
            vec![],
            "expected a key of 24 to 64 bytes after `whsec_`, got 15 bytes".into(),
        ),
        (
            "secret_env = \"HOOK_SECRET\"".into(),
            "",
            vec![("HOOK_SECRET", &format!("{good} {good}"))],
            "the same secret twice in environment variable `HOOK_SECRET`".into(),
        ),
        (
            "secret_env = \"HOOK_SECRET\"".into(),
            "",
            vec![("HOOK_SECRET", &format!("{good} {good} {good}"))],
            "or two while rotating (separated by a space or a line break), got 3".into(),
        ),
        (
            "format = \"teams\"\nsecret_env = \"HOOK_SECRET\"".into(),
            "",
            vec![("HOOK_SECRET", &*good)],
            format!("{field}secret_env`: expected no secret for format `teams`"),
        ),
    ] {
        let e = load(&hooks(&[&fields]), file_secret, &vars).unwrap_err().to_string();
        assert!(e.contains(&expected), "`{expected}` not in: {e}");
        for secret in [&*good, "s3cret", short] {
            assert!(!e.contains(secret), "a secret in: {e}");
        }
    }
}
