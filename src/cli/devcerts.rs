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
  eval \"$(countersign dev-certs /tmp/countersign-certs --approver dora)\"

Writes ca.pem, server.pem, server-key.pem and <name>.pem, <name>-key.pem per approver,
then prints the environment that points `countersign serve` and `countersign approvals` at them.")]
pub struct DevCertsArgs {
    /// Directory to write into (created if missing).
    dir: PathBuf,
    /// An approver to issue a client certificate for (its CN); repeatable.
    #[arg(long = "approver", value_name = "NAME")]
    approvers: Vec<String>,
}

pub fn run(args: DevCertsArgs) -> ExitCode {
    match write_all(&args.dir, &args.approvers) {
        Ok(()) => {
            let d = args.dir.display();
            println!("# for `countersign serve`:");
            println!(
                "export COUNTERSIGN_ADMIN_TLS_CERT={d}/server.pem COUNTERSIGN_ADMIN_TLS_KEY={d}/server-key.pem COUNTERSIGN_ADMIN_CLIENT_CA={d}/ca.pem"
            );
            println!(
                "# for `countersign approvals` (as {}):",
                args.approvers.first().map_or("<name>", String::as_str)
            );
            if let Some(first) = args.approvers.first() {
                println!(
                    "export COUNTERSIGN_ADMIN_CA={d}/ca.pem COUNTERSIGN_ADMIN_CERT={d}/{first}.pem COUNTERSIGN_ADMIN_KEY={d}/{first}-key.pem"
                );
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("countersign: dev-certs: {e}");
            ExitCode::FAILURE
        }
    }
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
