//! Certificates for the admin API, made by `countersign dev-certs`' code: a
//! throwaway CA, a server certificate for 127.0.0.1, and client certificates
//! for the approvers the tests use.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

/// Everyone a test may connect as.
const NAMES: &[&str] = &[
    "dora", "sara", "sid", "omar", "agent-7", "alice", "ivan", "stranger", "sam",
];

pub struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    pub fn new() -> Pki {
        let dir = tempfile::tempdir().unwrap();
        let names: Vec<String> = NAMES.iter().map(|n| n.to_string()).collect();
        countersign::cli::devcerts::write_all(dir.path(), &names).unwrap();
        Pki { dir }
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn ca(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// `(cert, key)` paths for the admin API's server certificate.
    pub fn server(&self) -> (PathBuf, PathBuf) {
        self.client("server")
    }

    /// `(cert, key)` paths for the client certificate with CN `name`.
    pub fn client(&self, name: &str) -> (PathBuf, PathBuf) {
        let cert = self.dir.path().join(format!("{name}.pem"));
        assert!(
            cert.exists(),
            "no certificate for `{name}`: add it to NAMES"
        );
        (cert, self.dir.path().join(format!("{name}-key.pem")))
    }
}
