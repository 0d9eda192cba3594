use std::collections::HashMap;

use super::*;

fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn file(text: &str) -> (tempfile::TempDir, PathBuf) {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("countersign.toml");
    std::fs::write(&p, text).unwrap();
    (d, p)
}

fn err(text: &str) -> String {
    let (_d, p) = file(text);
    Config::load(Some(&p), &env(&[])).unwrap_err().to_string()
}

#[test]
fn the_embedded_default_listens_on_9191_with_policies_from_cwd() {
    let c = Config::load(None, &env(&[])).unwrap();
    assert_eq!(c.listen.to_string(), "127.0.0.1:9191");
    assert_eq!(c.policy_dir, PathBuf::from("policies"));
    assert_eq!(c.origin, "embedded default config");
    assert_eq!(
        c.principal_header.as_deref(),
        Some("x-countersign-principal")
    );
    assert!(c.watch_policies);
}

#[test]
fn environment_overrides_listen_policy_dir_log_and_config() {
    let (_d, p) = file("[server]\nlisten = \"127.0.0.1:7000\"\n");
    let c = Config::load(
        None,
        &env(&[
            ("COUNTERSIGN_CONFIG", p.to_str().unwrap()),
            ("COUNTERSIGN_LISTEN", "127.0.0.1:0"),
            ("COUNTERSIGN_POLICY_DIR", "/srv/policies"),
            ("COUNTERSIGN_LOG", "countersign=debug"),
        ]),
    )
    .unwrap();
    assert_eq!(c.origin, p.display().to_string());
    assert_eq!(c.listen.to_string(), "127.0.0.1:0");
    assert_eq!(c.policy_dir, PathBuf::from("/srv/policies"));
    assert_eq!(c.log, "countersign=debug");
}

#[test]
fn a_file_policy_dir_is_relative_to_the_file_and_omitted_fields_take_defaults() {
    let (d, p) = file("[policy]\ndir = \"rules\"\n");
    let c = Config::load(Some(&p), &env(&[])).unwrap();
    assert_eq!(c.policy_dir, d.path().join("rules"));
    assert_eq!(c.listen.to_string(), "127.0.0.1:9191");
    assert_eq!(
        c.mapper.routes.specs().count(),
        0,
        "a file replaces the example routes"
    );
}

#[test]
fn errors_name_the_file_the_field_and_what_was_expected() {
    let e = err("[server]\nlisten = \"nowhere\"\n");
    assert!(e.ends_with("countersign.toml: field `server.listen`: expected an IP address and port such as `127.0.0.1:9191`, got `nowhere`"), "{e}");

    let e = err("[server]\nlisten = 9191\n");
    assert!(e.contains("countersign.toml:2:10: invalid type: integer `9191`, expected a string (in `listen = …`)"), "{e}");

    let e = err("[server]\nlisen = \"x\"\n");
    assert!(
        e.contains("countersign.toml:2:1: unknown field `lisen`, expected one of `listen`"),
        "{e}"
    );

    let e = err("[request]\nheaders = [\"authorization\"]\n");
    assert!(
        e.contains("field `request.headers[0]`: `authorization` carries credentials"),
        "{e}"
    );

    let e =
        err("[[routes]]\npath = \"/a/{id}\"\naction = \"read\"\nresource = 'Doc::\"{name}\"'\n");
    assert!(e.contains("field `routes[0]`: resource id `{name}` uses `{name}`, which path template `/a/{id}` does not define"), "{e}");

    let e = err("[[routes]]\npath = \"/a\"\naction = \"read\"\nresource = \"Doc\"\n");
    assert!(
        e.contains("field `routes[0].resource`: expected `Type::\"id template\"`"),
        "{e}"
    );

    let e = err(
        "[[routes]]\nmethod = \"GET /\"\npath = \"/a\"\naction = \"read\"\nresource = 'Doc::\"a\"'\n",
    );
    assert!(e.contains("field `routes[0].method`"), "{e}");

    let e = err("[identity]\ntrusted_header = { name = \"x user\", entity_type = \"User\" }\n");
    assert!(e.contains("field `identity.trusted_header.name`"), "{e}");

    let e = err("[server]\nlog = \"[[[\"\n");
    assert!(
        e.contains("field `server.log`: expected a tracing filter"),
        "{e}"
    );
}

#[test]
fn an_environment_override_error_names_the_variable() {
    let e = Config::load(None, &env(&[("COUNTERSIGN_LISTEN", "9191")]))
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with("environment variable COUNTERSIGN_LISTEN: field `server.listen`"),
        "{e}"
    );
    let e = Config::load(Some(Path::new("/nonexistent/c.toml")), &env(&[]))
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with("cannot read config file `/nonexistent/c.toml`"),
        "{e}"
    );
}

#[test]
fn actions_accept_a_bare_name_or_a_full_uid_and_methods_are_upper_cased() {
    let (_d, p) = file(
        "[[routes]]\nmethod = \"post\"\npath = \"/a/{id}\"\naction = 'Acme::Action::\"run\"'\nresource = 'Acme::Job::\"{id}\"'\n",
    );
    let c = Config::load(Some(&p), &env(&[])).unwrap();
    let r = c.mapper.routes.resolve("POST", "/a/7").unwrap();
    assert_eq!(r.action.to_string(), r#"Acme::Action::"run""#);
    assert_eq!(r.resource.to_string(), r#"Acme::Job::"7""#);
}

#[test]
fn the_admin_api_can_be_configured_from_the_environment() {
    let d = tempfile::tempdir().unwrap();
    for f in ["cert.pem", "key.pem", "ca.pem"] {
        std::fs::write(d.path().join(f), "-----BEGIN X-----\n").unwrap();
    }
    let p = |f: &str| d.path().join(f).display().to_string();
    let c = Config::load(
        None,
        &env(&[
            ("COUNTERSIGN_ADMIN_TLS_CERT", &p("cert.pem")),
            ("COUNTERSIGN_ADMIN_TLS_KEY", &p("key.pem")),
            ("COUNTERSIGN_ADMIN_CLIENT_CA", &p("ca.pem")),
            (
                "COUNTERSIGN_ADMIN_APPROVERS",
                "dora=data-owners, sara=security+sre",
            ),
            ("COUNTERSIGN_ADMIN_LISTEN", "127.0.0.1:0"),
        ]),
    )
    .unwrap();
    let admin = c.admin.unwrap();
    assert_eq!(admin.listen.to_string(), "127.0.0.1:0");
    assert_eq!(admin.approvers[1].name, "sara");
    assert_eq!(admin.approvers[1].groups, ["security", "sre"]);
    assert!(
        Config::load(None, &env(&[])).unwrap().admin.is_none(),
        "off unless configured"
    );

    let e = Config::load(
        None,
        &env(&[("COUNTERSIGN_ADMIN_TLS_CERT", &p("cert.pem"))]),
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("field `admin.tls_key`"), "{e}");
    let e = Config::load(None, &env(&[("COUNTERSIGN_REDIS_URL", "mysql://x")]))
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with("environment variable COUNTERSIGN_REDIS_URL: field `redis.url`"),
        "{e}"
    );
}

#[test]
fn several_redis_urls_need_cluster_and_one_nodes_url_is_taken_whole() {
    let e = err("[redis]\nurl = \"redis://10.0.0.1:6379,redis://10.0.0.2:6379\"\n");
    assert!(e.contains("set `redis.cluster = true`"), "{e}");

    let load = |text: &str| {
        let (_d, p) = file(text);
        Config::load(Some(&p), &env(&[])).map(|c| c.store)
    };
    // A comma in one node's password is the password's.
    let one = load("[redis]\nurl = \"redis://u:pa,ss@10.0.0.1:6379\"\n").unwrap();
    assert_eq!(one.url, "redis://u:pa,ss@10.0.0.1:6379");
    assert!(!one.cluster);
    assert_eq!(one.replica_acks, 0);
    let cluster =
        load("[redis]\nurl = \"redis://10.0.0.1:6379, redis://10.0.0.2:6379\"\ncluster = true\n")
            .unwrap();
    assert!(cluster.cluster);
    assert_eq!(
        cluster.replica_acks, 1,
        "a cluster waits for a replica by default"
    );

    let e = err("[redis]\nurl = \"redis://u:s3cret@host:port\"\n");
    assert!(
        !e.contains("s3cret"),
        "the password stays out of errors: {e}"
    );
    assert!(e.contains("…@host:port"), "{e}");

    let e = err("[redis]\nprefix = \"cs{x}:\"\n");
    assert!(e.contains("field `redis.prefix`"), "{e}");
}

#[test]
fn debug_shows_no_redis_password_webhook_url_key_or_token_hash() {
    let d = tempfile::tempdir().unwrap();
    for f in ["cert.pem", "key.pem"] {
        std::fs::write(
            d.path().join(f),
            "-----BEGIN PRIVATE KEY-----\nk3y-material\n",
        )
        .unwrap();
    }
    let hash = "ab".repeat(32);
    let p = d.path().join("countersign.toml");
    std::fs::write(
        &p,
        format!(
            r#"[redis]
url = "rediss://app:s3cret-pw@redis.internal:6380"

[approvals]
webhooks = [{{ url = "https://hooks.slack.com/services/T0000/B0000/XXXXslacksecret", format = "slack" }}]

[admin]
tls_cert = "cert.pem"
tls_key = "key.pem"
approvers = [{{ name = "dora", token_sha256 = "{hash}" }}]
"#
        ),
    )
    .unwrap();
    let c = Config::load(Some(&p), &env(&[])).unwrap();
    let shown = format!("{c:?}");
    for secret in [
        "s3cret-pw",
        "XXXXslacksecret",
        "/services/",
        "k3y-material",
        &hash,
    ] {
        assert!(!shown.contains(secret), "`{secret}` in {shown}");
    }
    assert!(
        shown.contains("rediss://app:***@redis.internal:6380"),
        "{shown}"
    );
    assert!(shown.contains("https://hooks.slack.com"), "{shown}");
    assert!(shown.contains("dora"), "{shown}");

    // Cluster seeds, each with its password.
    let (_d, p) = file(
        "[redis]\ncluster = true\nurl = \"redis://:pw-one@10.0.0.1:6379, redis://:pw-two@10.0.0.2:6379\"\n",
    );
    let shown = format!("{:?}", Config::load(Some(&p), &env(&[])).unwrap());
    assert!(
        !shown.contains("pw-one") && !shown.contains("pw-two"),
        "{shown}"
    );
}

#[test]
fn an_error_names_the_variable_only_for_the_field_it_set() {
    let (_d, p) = file("[redis]\nprefix = \"cs{x}:\"\n");
    let e = Config::load(
        Some(&p),
        &env(&[("COUNTERSIGN_REDIS_URL", "redis://127.0.0.1:6379")]),
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.ends_with("countersign.toml: field `redis.prefix`: expected no `{` or `}` (countersign adds its own hash tags), got `cs{x}:`"),
        "{e}"
    );

    let e = Config::load(
        None,
        &env(&[
            ("COUNTERSIGN_ADMIN_TLS_CERT", "/nonexistent/cert.pem"),
            ("COUNTERSIGN_ADMIN_TLS_KEY", "/nonexistent/key.pem"),
        ]),
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.starts_with("environment variable COUNTERSIGN_ADMIN_TLS_CERT: field `admin.tls_cert`: cannot read `/nonexistent/cert.pem`"),
        "{e}"
    );

    for (var, value, field) in [
        ("COUNTERSIGN_POLICY_DIR", "", "policy.dir"),
        ("COUNTERSIGN_ADMIN_APPROVERS", "=ops", "admin.approvers"),
        ("COUNTERSIGN_LOG_FORMAT", "yaml", "server.log_format"),
        (
            "COUNTERSIGN_METRICS_LISTEN",
            "nowhere",
            "server.metrics_listen",
        ),
        ("COUNTERSIGN_ADMIN_LISTEN", "nowhere", "admin.listen"),
        ("COUNTERSIGN_LOG", "[[[", "server.log"),
    ] {
        let e = match Config::load(None, &env(&[(var, value)])) {
            Err(e) => e.to_string(),
            Ok(_) => panic!("{var}={value} was accepted"),
        };
        assert!(
            e.starts_with(&format!("environment variable {var}: field `{field}`: ")),
            "{e}"
        );
    }
}

#[test]
fn mcp_endpoints_are_checked_field_by_field() {
    let mcp = |extra: &str| format!("[[mcp]]\npath = \"/mcp\"\nserver = \"datasets\"\n{extra}");
    for (text, words) in [
        (
            "[[mcp]]\npath = \"mcp\"\nserver = \"s\"\n".to_owned(),
            "field `mcp[0].path`: expected a literal path",
        ),
        (
            "[[mcp]]\npath = \"/mcp\"\nserver = \"\"\n".to_owned(),
            "field `mcp[0].server`: expected a non-empty string",
        ),
        (
            mcp("tool_action = \"mcp_tool\"\n"),
            "field `mcp[0].tool_action`: expected a template with `{tool}`",
        ),
        (
            mcp("[mcp.resources]\nexport = 'Dataset::\"{dataset}\"'\n"),
            "`Dataset::\"{dataset}\"`: `{dataset}` is not `{arguments.NAME}`",
        ),
        (
            mcp("[mcp.methods]\n\"tools/list\" = 'Action::\"unclosed'\n"),
            "field `mcp[0].methods.tools/list`",
        ),
        (
            "[[routes]]\npath = \"/mcp\"\naction = \"read\"\nresource = 'Dataset::\"x\"'\n\n[[mcp]]\npath = \"/mcp\"\nserver = \"s\"\n".to_owned(),
            "`/mcp` is also a route's path",
        ),
    ] {
        let e = err(&text);
        assert!(e.contains(words), "{text}\n=> {e}");
    }
    let (_d, p) = file(&mcp(
        "tool_action = \"mcp_{tool}\"\n[mcp.methods]\n\"tools/list\" = \"list_tools\"\n[mcp.resources]\nexport = 'Dataset::\"ds/{arguments.dataset}\"'\n",
    ));
    let c = Config::load(Some(&p), &env(&[])).unwrap();
    let e = &c.mapper.mcp[0];
    assert_eq!(e.tool_action, ("mcp_".to_owned(), String::new()));
    assert_eq!(e.server_resource.to_string(), r#"McpServer::"datasets""#);
    assert_eq!(
        e.methods["tools/list"].to_string(),
        r#"Action::"list_tools""#
    );
}

#[test]
fn approvers_from_the_environment_refuse_a_group_taken_for_an_approver() {
    let load = |v: &str| {
        Config::load(None, &env(&[("COUNTERSIGN_ADMIN_APPROVERS", v)]))
            .map(|_| ())
            .map_err(|e| e.to_string())
    };
    // `,` separates approvers: `on-call` would have been an approver.
    let e = load("sam=security,on-call").unwrap_err();
    assert!(
        e.starts_with("environment variable COUNTERSIGN_ADMIN_APPROVERS: field `admin.approvers`: expected `name=group+group,name=group`"),
        "{e}"
    );
    assert!(e.contains("got `on-call` without `=`"), "{e}");
    assert!(e.contains("join it to the one before with `+`"), "{e}");
    let e = load("dora=data-owners;sam=security").unwrap_err();
    assert!(e.contains("got `dora=data-owners;sam=security`"), "{e}");
    // No admin TLS: the approvers parse, and the admin API stays off.
    load("dora=data-owners, sam=security+on-call, ops=").unwrap();
}

#[test]
fn the_approval_token_header_cannot_reach_the_policy_context() {
    // The default name, in any case.
    let e = err("[request]\nheaders = [\"user-agent\", \"X-Countersign-Approval\"]\n");
    assert!(
        e.contains(
            "field `request.headers[1]`: `x-countersign-approval` is the approval token header \
             (`approvals.token_header`): a token is a credential and never reaches policies"
        ),
        "{e}"
    );
    // A configured name, whichever table comes first in the file.
    let e = err(
        "[request]\nheaders = [\"x-approval\"]\n\n[approvals]\ntoken_header = \"x-approval\"\n",
    );
    assert!(
        e.contains("field `request.headers[0]`: `x-approval` is the approval token header"),
        "{e}"
    );
    // Renamed, the default name is an ordinary header again.
    let (_d, p) = file(
        "[request]\nheaders = [\"x-countersign-approval\"]\n\n[approvals]\ntoken_header = \"x-approval\"\n",
    );
    assert!(Config::load(Some(&p), &env(&[])).is_ok());
}

#[test]
fn authzen_is_off_unless_configured_and_needs_a_way_to_authenticate() {
    assert!(Config::load(None, &env(&[])).unwrap().authzen.is_none());
    let hash = "a".repeat(64);
    let (d, p) = file(&format!(
        "[authzen]\n[[authzen.clients]]\nname = \"gateway\"\ntoken_sha256 = \"{hash}\"\n[authzen.types]\nuser = \"User\"\n"
    ));
    let c = Config::load(Some(&p), &env(&[])).unwrap();
    let a = c.authzen.unwrap();
    assert_eq!(a.listen.to_string(), "127.0.0.1:9194");
    assert_eq!(a.public_url, None);
    assert_eq!(a.types["user"].to_string(), "User");
    assert_eq!((a.max_batch, a.max_body_bytes), (1000, 1024 * 1024));
    assert_eq!(a.binding_key.len(), 32);
    assert!(!format!("{a:?}").contains(&hash), "{a:?}");
    drop(d);

    let e = err("[authzen]\n");
    assert!(
        e.contains("authzen.clients") && e.contains("nobody can call"),
        "{e}"
    );
    let e = err("[authzen]\nclient_ca = \"ca.pem\"\n");
    assert!(e.contains("authzen.client_ca"), "{e}");
    let e = err(&format!(
        "[authzen]\npublic_url = \"pdp.example.com\"\n[[authzen.clients]]\nname = \"g\"\ntoken_sha256 = \"{hash}\"\n"
    ));
    assert!(
        e.contains("authzen.public_url") && e.contains("https://"),
        "{e}"
    );
    let e = err("[authzen]\n[[authzen.clients]]\nname = \"g\"\ntoken_sha256 = \"abc\"\n");
    assert!(e.contains("authzen.clients[0].token_sha256"), "{e}");
    let e = err(&format!(
        "[authzen]\nmax_batch = 0\n[[authzen.clients]]\nname = \"g\"\ntoken_sha256 = \"{hash}\"\n"
    ));
    assert!(e.contains("authzen.max_batch"), "{e}");
    let (_d, p) = file(&format!(
        "[authzen]\nbinding_key_file = \"short.key\"\n[[authzen.clients]]\nname = \"g\"\ntoken_sha256 = \"{hash}\"\n"
    ));
    std::fs::write(p.parent().unwrap().join("short.key"), b"too short").unwrap();
    let e = Config::load(Some(&p), &env(&[])).unwrap_err().to_string();
    assert!(
        e.contains("authzen.binding_key_file") && e.contains("32 bytes"),
        "{e}"
    );
}

#[test]
fn an_identity_provider_alone_lets_approvers_in_and_its_settings_are_checked() {
    let d = tempfile::tempdir().unwrap();
    for f in ["cert.pem", "key.pem"] {
        std::fs::write(d.path().join(f), "-----BEGIN CERTIFICATE-----\nx\n").unwrap();
    }
    let load = |oidc: &str| {
        let p = d.path().join("countersign.toml");
        std::fs::write(
            &p,
            format!(
                "[admin]\ntls_cert = \"cert.pem\"\ntls_key = \"key.pem\"\n[admin.oidc]\n{oidc}"
            ),
        )
        .unwrap();
        Config::load(Some(&p), &env(&[])).map(|c| c.admin.unwrap().oidc.unwrap())
    };
    let o = load(
        "issuer = \"https://login.example.com/realms/corp\"\nclient_id = \"countersign-cli\"\nrequester_claim = \"sub\"\n",
    )
    .unwrap();
    assert_eq!(o.audience, "countersign-cli");
    assert_eq!(
        (
            o.approver_claim.as_str(),
            o.groups_claim.as_str(),
            o.requester_claim.as_str()
        ),
        ("email", "groups", "sub")
    );
    assert!(o.scopes.iter().any(|s| s == "openid"));
    assert_eq!(o.clock_skew, Duration::from_secs(60));

    for (oidc, field, says) in [
        (
            "issuer = \"https://i.example\"\nclient_id = \"c\"\n",
            "admin.oidc.requester_claim",
            "there is no default",
        ),
        (
            "issuer = \"https://i.example\"\nclient_id = \"c\"\nrequester_claim = \"sub\"\njwks_min_refresh = \"0s\"\n",
            "admin.oidc.jwks_min_refresh",
            "between 1s and 5m",
        ),
        ("client_id = \"c\"\n", "admin.oidc.issuer", "issuer URL"),
        (
            "issuer = \"http://login.example.com\"\nclient_id = \"c\"\n",
            "admin.oidc.issuer",
            "not an https URL",
        ),
        (
            "issuer = \"https://i.example\"\n",
            "admin.oidc.client_id",
            "public client",
        ),
        (
            "issuer = \"https://i.example\"\nclient_id = \"c\"\nrequester_claim = \"sub\"\nscopes = [\"email\"]\n",
            "admin.oidc.scopes",
            "`openid`",
        ),
        (
            "issuer = \"https://i.example\"\nclient_id = \"c\"\nrequester_claim = \"sub\"\nclock_skew = \"1h\"\n",
            "admin.oidc.clock_skew",
            "at most 5m",
        ),
        (
            "issuer = \"https://i.example\"\nclient_id = \"c\"\nrequester_claim = \"sub\"\napprover_claim = \"\"\n",
            "admin.oidc.approver_claim",
            "claim name",
        ),
    ] {
        let e = load(oidc).unwrap_err().to_string();
        assert!(
            e.contains(&format!("field `{field}`")) && e.contains(says),
            "{oidc}: {e}"
        );
    }
}
