//! `countersign dev-certs DIR`: a throwaway CA, a server certificate for
//! the admin API on 127.0.0.1/localhost, and one client certificate per
//! approver. For trying countersign out, not for production.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Args;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, SanType};

#[derive(Debug, Args)]
#[command(after_help = "Examples:
  countersign dev-certs dev-certs --approver dora --approver sara
  eval \"$(countersign dev-certs /tmp/countersign-certs --approver dora --group dora=data-owners)\"

Writes ca.pem, server.pem, server-key.pem and <name>.pem, <name>-key.pem per approver,
then prints the environment that points `countersign serve` and `countersign approvals` at them
(with --group, also the approvers and their groups, COUNTERSIGN_ADMIN_APPROVERS).")]
pub struct DevCertsArgs {
    /// Directory to write into (created if missing).
    dir: PathBuf,
    /// An approver to issue a client certificate for (its CN); repeatable.
    #[arg(long = "approver", value_name = "NAME")]
    approvers: Vec<String>,
    /// An approver's groups, for `countersign serve`; repeatable.
    #[arg(long = "group", value_name = "NAME=GROUP[,GROUP]", value_parser = parse_group)]
    groups: Vec<(String, Vec<String>)>,
}

/// `dora=data-owners` or `sam=security,on-call` (`+` works as well, as in
/// COUNTERSIGN_ADMIN_APPROVERS).
fn parse_group(v: &str) -> Result<(String, Vec<String>), String> {
    let bad = || format!("expected `NAME=GROUP[,GROUP]` such as `dora=data-owners`, got `{v}`");
    let (name, groups) = v.split_once('=').ok_or_else(bad)?;
    // Characters that would split or end an entry of the variable.
    let plain =
        |s: &str| !s.is_empty() && !s.contains(|c: char| c.is_whitespace() || "=,+'".contains(c));
    let groups: Vec<String> = groups.split([',', '+']).map(str::to_owned).collect();
    if !plain(name) || !groups.iter().all(|g| plain(g)) {
        return Err(bad());
    }
    Ok((name.to_owned(), groups))
}

/// COUNTERSIGN_ADMIN_APPROVERS's value: `name=group+group,name=group`, in
/// the order given, an approver named twice keeping every group once.
fn approvers_value(
    approvers: &[String],
    groups: &[(String, Vec<String>)],
) -> Result<Option<String>, String> {
    let mut entries: Vec<(&str, Vec<&str>)> = Vec::new();
    for (name, gs) in groups {
        if !approvers.contains(name) {
            return Err(format!(
                "--group `{name}=...`: `{name}` gets no certificate; add `--approver {name}`"
            ));
        }
        let at = match entries.iter().position(|(n, _)| n == name) {
            Some(i) => i,
            None => {
                entries.push((name, Vec::new()));
                entries.len() - 1
            }
        };
        for g in gs {
            if !entries[at].1.contains(&g.as_str()) {
                entries[at].1.push(g);
            }
        }
    }
    Ok((!entries.is_empty()).then(|| {
        entries
            .iter()
            .map(|(n, gs)| format!("{n}={}", gs.join("+")))
            .collect::<Vec<_>>()
            .join(",")
    }))
}

/// `v` as one shell word: as is when that is safe, else single-quoted.
fn sh(v: &str) -> String {
    let safe = |c: char| c.is_ascii_alphanumeric() || "/._-=,+:@%".contains(c);
    if !v.is_empty() && v.chars().all(safe) {
        v.to_owned()
    } else {
        format!("'{}'", v.replace('\'', r"'\''"))
    }
}

pub fn run(args: DevCertsArgs) -> ExitCode {
    let approvers = match approvers_value(&args.approvers, &args.groups) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("countersign: dev-certs: {e}");
            return ExitCode::from(2);
        }
    };
    if let Err(e) = write_all(&args.dir, &args.approvers) {
        eprintln!("countersign: dev-certs: {e}");
        return ExitCode::FAILURE;
    }
    let f = |name: &str| sh(&args.dir.join(name).display().to_string());
    println!("# for `countersign serve`:");
    println!(
        "export COUNTERSIGN_ADMIN_TLS_CERT={} COUNTERSIGN_ADMIN_TLS_KEY={} COUNTERSIGN_ADMIN_CLIENT_CA={}",
        f("server.pem"),
        f("server-key.pem"),
        f("ca.pem")
    );
    match approvers {
        Some(a) => println!("export COUNTERSIGN_ADMIN_APPROVERS={}", sh(&a)),
        None if !args.approvers.is_empty() => println!(
            "# (approvers' groups: give --group NAME=GROUP for each, or set them in [[admin.approvers]])"
        ),
        None => {}
    }
    println!(
        "# for `countersign approvals` (as {}):",
        args.approvers.first().map_or("<name>", String::as_str)
    );
    if let Some(first) = args.approvers.first() {
        println!(
            "export COUNTERSIGN_ADMIN_CA={} COUNTERSIGN_ADMIN_CERT={} COUNTERSIGN_ADMIN_KEY={}",
            f("ca.pem"),
            f(&format!("{first}.pem")),
            f(&format!("{first}-key.pem"))
        );
    }
    ExitCode::SUCCESS
}

pub fn write_all(dir: &Path, approvers: &[String]) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| {
        format!(
            "cannot create `{}`: {e} (give a directory you can write to)",
            dir.display()
        )
    })?;
    let err = |e: rcgen::Error| e.to_string();
    let mut params = CertificateParams::new(Vec::<String>::new()).map_err(err)?;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(DnType::CommonName, "countersign dev CA");
    let ca =
        CertifiedIssuer::self_signed(params, KeyPair::generate().map_err(err)?).map_err(err)?;
    write(dir, "ca.pem", &ca.pem())?;
    let issue = |name: &str, server: bool| -> Result<(), String> {
        let dns = if server {
            vec!["localhost".to_owned()]
        } else {
            vec![]
        };
        let mut params = CertificateParams::new(dns).map_err(err)?;
        params.distinguished_name.push(DnType::CommonName, name);
        if server {
            params
                .subject_alt_names
                .push(SanType::IpAddress([127, 0, 0, 1].into()));
        }
        let key = KeyPair::generate().map_err(err)?;
        let cert = params.signed_by(&key, &ca).map_err(err)?;
        write(dir, &format!("{name}.pem"), &cert.pem())?;
        write(dir, &format!("{name}-key.pem"), &key.serialize_pem())
    };
    issue("server", true)?;
    for a in approvers {
        issue(a, false)?;
    }
    Ok(())
}

fn write(dir: &Path, name: &str, pem: &str) -> Result<(), String> {
    let path = dir.join(name);
    std::fs::write(&path, pem).map_err(|e| {
        format!(
            "cannot write `{}`: {e} (give a directory you can write to)",
            path.display()
        )
    })
}
