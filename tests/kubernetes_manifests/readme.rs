//! The ConfigMaps and Secrets the README's `kubectl create` commands make,
//! and the image it says how to build.

use std::collections::BTreeMap;
use std::path::Path;

use crate::common::repo;
use crate::k8s_dir;
use crate::yaml::read;

/// What a ConfigMap or Secret holds: key -> bytes.
pub type Data = BTreeMap<String, Vec<u8>>;

/// A ConfigMap or Secret the README's commands create by hand.
#[derive(Debug)]
pub struct Created {
    pub kind: &'static str,
    /// `kubernetes.io/tls` for `kubectl create secret tls`.
    pub secret_type: Option<&'static str>,
    pub data: Data,
}

/// The objects the README's `kubectl create configmap|secret` commands make,
/// run from the repository root after `countersign dev-certs dev-certs`
/// (made here with countersign's own code, in `work`).
pub fn readme_objects(work: &Path) -> BTreeMap<String, Created> {
    countersign::cli::devcerts::write_all(&work.join("dev-certs"), &["dora".to_owned()]).unwrap();
    let readme = read(&k8s_dir().join("README.md"));
    // Shell lines of the fenced blocks, `\` continuations joined.
    let mut lines = Vec::new();
    let mut in_block = false;
    let mut pending = String::new();
    for line in readme.lines() {
        if line.trim_start().starts_with("```") {
            in_block = !in_block;
            continue;
        }
        if !in_block {
            continue;
        }
        match line.trim_end().strip_suffix('\\') {
            Some(head) => pending.push_str(head),
            None => {
                pending.push_str(line);
                lines.push(std::mem::take(&mut pending));
            }
        }
    }
    let resolve = |p: &str| {
        let in_work = work.join(p);
        if in_work.exists() {
            in_work
        } else {
            repo().join(p)
        }
    };
    let mut objects = BTreeMap::new();
    for line in lines {
        let words: Vec<String> = line
            .split_whitespace()
            .take_while(|w| *w != "|" && !w.starts_with('#'))
            .map(|w| w.trim_matches(|c| c == '\'' || c == '"').to_owned())
            .collect();
        if words.first().map(String::as_str) != Some("kubectl") {
            continue;
        }
        // Drop namespace flags, wherever they are.
        let mut rest = Vec::new();
        let mut it = words[1..].iter();
        while let Some(w) = it.next() {
            if w == "-n" || w == "--namespace" {
                it.next();
            } else if !w.starts_with("--namespace=") {
                rest.push(w.as_str());
            }
        }
        let (kind, secret_type, name, opts) = match rest.as_slice() {
            ["create", "secret", "tls", name, opts @ ..] => {
                ("secret", Some("kubernetes.io/tls"), *name, opts)
            }
            ["create", "secret", "generic", name, opts @ ..] => ("secret", None, *name, opts),
            ["create", "configmap", name, opts @ ..] => ("configmap", None, *name, opts),
            _ => continue,
        };
        let mut created = Created {
            kind,
            secret_type,
            data: Data::new(),
        };
        for o in opts {
            let read_bytes = |p: &str| {
                std::fs::read(resolve(p))
                    .unwrap_or_else(|e| panic!("README: `{line}`: cannot read `{p}`: {e}"))
            };
            if let Some(p) = o.strip_prefix("--cert=") {
                created.data.insert("tls.crt".into(), read_bytes(p));
            } else if let Some(p) = o.strip_prefix("--key=") {
                created.data.insert("tls.key".into(), read_bytes(p));
            } else if let Some(kv) = o.strip_prefix("--from-literal=") {
                let (k, v) = kv.split_once('=').expect("--from-literal=KEY=VALUE");
                created.data.insert(k.into(), v.as_bytes().to_vec());
            } else if let Some(spec) = o.strip_prefix("--from-file=") {
                let (key, p) = match spec.split_once('=') {
                    Some((k, p)) => (Some(k), p),
                    None => (None, spec),
                };
                let path = resolve(p);
                if path.is_dir() {
                    // kubectl takes the directory's regular files, by name.
                    for entry in std::fs::read_dir(&path).unwrap() {
                        let entry = entry.unwrap();
                        if entry.path().is_file() {
                            let k = entry.file_name().to_string_lossy().into_owned();
                            created.data.insert(k, std::fs::read(entry.path()).unwrap());
                        }
                    }
                } else {
                    let k = key.map_or_else(
                        || path.file_name().unwrap().to_string_lossy().into_owned(),
                        str::to_owned,
                    );
                    created.data.insert(k, read_bytes(p));
                }
            }
        }
        if let Some(old) = objects.insert(name.to_owned(), created) {
            // The same command for another variant's namespace must make the
            // same object.
            let new = &objects[name];
            assert_eq!(
                (old.kind, old.secret_type, &old.data),
                (new.kind, new.secret_type, &new.data),
                "README: `{name}` is created twice, differently"
            );
        }
    }
    objects
}

/// The README says how to build the image the manifests use.
#[test]
fn readme_builds_the_image() {
    let readme = read(&k8s_dir().join("README.md"));
    assert!(repo().join("Dockerfile").is_file());
    assert!(
        readme.contains("docker build -t countersign:dev ."),
        "README: how to build countersign:dev"
    );
}
