//! One example directory as kustomize and the kubelet would see it: its
//! resources, the ConfigMaps and Secrets its pods can mount, the pods, and
//! the files a container finds through its volume mounts.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use serde_json::Value;

use crate::k8s_dir;
use crate::readme::{Data, readme_objects};
use crate::yaml::{array, labels_match, read, str_at, yaml, yaml_documents};

/// One of `deploy/kubernetes/<variant>/`, with every ConfigMap and Secret its
/// pods can mount: those its kustomization generates and those the README
/// creates.
pub struct Variant {
    pub name: &'static str,
    pub namespace: Option<String>,
    /// (file, document) for every resource the kustomization lists.
    pub docs: Vec<(String, Value)>,
    pub configmaps: BTreeMap<String, Data>,
    /// name -> (type, data).
    pub secrets: BTreeMap<String, (Option<String>, Data)>,
}

impl Variant {
    pub fn load(name: &'static str) -> Variant {
        let dir = k8s_dir().join(name);
        let kustomization = yaml(&dir.join("kustomization.yaml"));
        let origin = format!("{name}/kustomization.yaml");
        assert_eq!(
            str_at(&kustomization, "/kind", &origin),
            "Kustomization",
            "{origin}"
        );
        let namespace = kustomization
            .get("namespace")
            .and_then(Value::as_str)
            .map(str::to_owned);

        let mut docs = Vec::new();
        let mut listed = BTreeSet::from(["kustomization.yaml".to_owned()]);
        for r in array(&kustomization, "/resources") {
            let file = r.as_str().expect("resources are file names");
            assert!(
                dir.join(file).is_file(),
                "{origin}: resource `{file}` is not a file in {name}/"
            );
            listed.insert(file.to_owned());
            for doc in yaml_documents(&read(&dir.join(file)), &format!("{name}/{file}")) {
                docs.push((file.to_owned(), doc));
            }
        }

        let mut configmaps = BTreeMap::new();
        let mut secrets = BTreeMap::new();
        for g in array(&kustomization, "/configMapGenerator") {
            let cm = str_at(g, "/name", &origin).to_owned();
            let mut data = Data::new();
            for f in array(g, "/files") {
                let f = f.as_str().expect("generator files are strings");
                let (key, path) = f
                    .split_once('=')
                    .unwrap_or((Path::new(f).file_name().unwrap().to_str().unwrap(), f));
                let full = dir.join(path);
                assert!(
                    full.starts_with(&dir) && !path.contains(".."),
                    "{origin}: `{f}`: kustomize reads only files below the kustomization"
                );
                data.insert(key.to_owned(), read(&full).into_bytes());
                listed.insert(path.to_owned());
            }
            assert!(!data.is_empty(), "{origin}: generator `{cm}` has no files");
            assert!(
                configmaps.insert(cm.clone(), data).is_none(),
                "{origin}: ConfigMap `{cm}` is defined twice"
            );
        }

        // Nothing in the directory that the kustomization ignores.
        for entry in std::fs::read_dir(&dir).unwrap() {
            let f = entry.unwrap().file_name().to_string_lossy().into_owned();
            assert!(
                listed.contains(&f),
                "{name}/{f} is neither a resource nor a generated ConfigMap's file in {origin}"
            );
        }

        let work = tempfile::tempdir().unwrap();
        for (obj, created) in readme_objects(work.path()) {
            match created.kind {
                "configmap" => {
                    assert!(
                        configmaps.insert(obj.clone(), created.data).is_none(),
                        "ConfigMap `{obj}` is both generated in {name}/ and created by the README"
                    );
                }
                _ => {
                    let t = created.secret_type.map(str::to_owned);
                    secrets.insert(obj, (t, created.data));
                }
            }
        }
        Variant {
            name,
            namespace,
            docs,
            configmaps,
            secrets,
        }
    }

    pub fn of_kind<'a>(&'a self, kind: &'a str) -> impl Iterator<Item = &'a Value> + 'a {
        self.docs
            .iter()
            .map(|(_, d)| d)
            .filter(move |d| d.get("kind").and_then(Value::as_str) == Some(kind))
    }

    pub fn pods(&self) -> Vec<Pod<'_>> {
        self.of_kind("Deployment")
            .map(|d| Pod {
                owner: format!(
                    "{}: Deployment `{}`",
                    self.name,
                    str_at(d, "/metadata/name", self.name)
                ),
                replicas: d
                    .pointer("/spec/replicas")
                    .and_then(Value::as_u64)
                    .unwrap_or(1),
                labels: d
                    .pointer("/spec/template/metadata/labels")
                    .unwrap_or(&Value::Null),
                spec: d
                    .pointer("/spec/template/spec")
                    .expect("a Deployment has a pod template"),
            })
            .collect()
    }

    /// The contents of a pod volume, as its files will be (key -> bytes).
    pub fn volume_data(&self, pod: &Pod, volume: &Value) -> Data {
        let vname = str_at(volume, "/name", &pod.owner);
        let what = format!("{}: volume `{vname}`", pod.owner);
        let (data, items) = if let Some(cm) = volume.get("configMap") {
            let n = str_at(cm, "/name", &what);
            let data = self.configmaps.get(n).unwrap_or_else(|| {
                panic!(
                    "{what}: ConfigMap `{n}` is neither generated by the kustomization nor created by the README"
                )
            });
            (data.clone(), cm.get("items"))
        } else if let Some(s) = volume.get("secret") {
            let n = str_at(s, "/secretName", &what);
            let (_, data) = self
                .secrets
                .get(n)
                .unwrap_or_else(|| panic!("{what}: Secret `{n}` is created by no README command"));
            (data.clone(), s.get("items"))
        } else {
            panic!("{what}: only configMap and secret volumes are expected here");
        };
        match items.and_then(Value::as_array) {
            None => data,
            Some(items) => items
                .iter()
                .map(|i| {
                    let key = str_at(i, "/key", &what);
                    let bytes = data
                        .get(key)
                        .unwrap_or_else(|| panic!("{what}: item key `{key}` is not in its source"));
                    (str_at(i, "/path", &what).to_owned(), bytes.clone())
                })
                .collect(),
        }
    }

    /// Writes what `container` sees through its volume mounts under `root`,
    /// directories laid out as the kubelet lays out ConfigMap and Secret
    /// volumes (files are symlinks through `..data`).
    pub fn materialize(&self, pod: &Pod, container: &Value, root: &Path) {
        for m in array(container, "/volumeMounts") {
            let what = format!("{}: volumeMount {m}", pod.owner);
            let volume = pod.volume(str_at(m, "/name", &what));
            let data = self.volume_data(pod, volume);
            let target = root.join(str_at(m, "/mountPath", &what).trim_start_matches('/'));
            if let Some(sub) = m.get("subPath").and_then(Value::as_str) {
                let bytes = data.get(sub).unwrap_or_else(|| {
                    panic!("{what}: subPath `{sub}` is not a key of its volume")
                });
                std::fs::create_dir_all(target.parent().unwrap()).unwrap();
                std::fs::write(&target, bytes).unwrap();
            } else {
                let stamp = target.join("..2026_01_01_00_00_00.000000001");
                std::fs::create_dir_all(&stamp).unwrap();
                std::os::unix::fs::symlink(stamp.file_name().unwrap(), target.join("..data"))
                    .unwrap();
                for (key, bytes) in &data {
                    std::fs::write(stamp.join(key), bytes).unwrap();
                    std::os::unix::fs::symlink(Path::new("..data").join(key), target.join(key))
                        .unwrap();
                }
            }
        }
    }

    /// The pod container a Service port sends to: (pod, container, port).
    pub fn service_target<'a>(
        &'a self,
        svc: &Value,
        port: &Value,
    ) -> Option<(Pod<'a>, &'a Value, u16)> {
        let selector = svc.pointer("/spec/selector")?;
        let target = port.get("targetPort").or_else(|| port.get("port"))?;
        self.pods()
            .into_iter()
            .filter(|p| labels_match(selector, p.labels))
            .find_map(|p| {
                p.containers()
                    .iter()
                    .find_map(|c| resolve_port(c, target).map(|n| (c, n)))
                    .map(|(c, n)| (p, c, n))
            })
    }
}

pub struct Pod<'a> {
    pub owner: String,
    /// The Deployment's `spec.replicas` (1 when unset).
    pub replicas: u64,
    pub labels: &'a Value,
    pub spec: &'a Value,
}

impl<'a> Pod<'a> {
    pub fn containers(&self) -> &'a [Value] {
        array(self.spec, "/containers")
    }

    pub fn container(&self, name: &str) -> Option<&'a Value> {
        self.containers()
            .iter()
            .find(|c| c.get("name").and_then(Value::as_str) == Some(name))
    }

    pub fn volume(&self, name: &str) -> &'a Value {
        array(self.spec, "/volumes")
            .iter()
            .find(|v| v.get("name").and_then(Value::as_str) == Some(name))
            .unwrap_or_else(|| panic!("{}: no volume `{name}`", self.owner))
    }
}

/// A probe's or Service's port (a number or a port name) as one of
/// `container`'s declared port numbers.
pub fn resolve_port(container: &Value, port: &Value) -> Option<u16> {
    let ports = array(container, "/ports");
    let found = match port {
        Value::String(name) => ports
            .iter()
            .find(|p| p.get("name").and_then(Value::as_str) == Some(name)),
        Value::Number(n) => ports
            .iter()
            .find(|p| p.get("containerPort").and_then(Value::as_u64) == n.as_u64()),
        _ => None,
    };
    found
        .and_then(|p| p.get("containerPort"))
        .and_then(Value::as_u64)
        .map(|n| u16::try_from(n).unwrap())
}

pub fn env_value(container: &Value, name: &str) -> Option<String> {
    array(container, "/env")
        .iter()
        .find(|e| e.get("name").and_then(Value::as_str) == Some(name))
        .and_then(|e| e.get("value"))
        .and_then(Value::as_str)
        .map(str::to_owned)
}

pub fn arg_after(container: &Value, flags: &[&str]) -> Option<String> {
    let args: Vec<&str> = array(container, "/command")
        .iter()
        .chain(array(container, "/args"))
        .filter_map(Value::as_str)
        .collect();
    args.windows(2)
        .find(|w| flags.contains(&w[0]))
        .map(|w| w[1].to_owned())
}

/// Seconds a container's preStop hook waits (`sleep N` or the sleep action).
pub fn pre_stop_seconds(container: &Value) -> u64 {
    if let Some(s) = container
        .pointer("/lifecycle/preStop/sleep/seconds")
        .and_then(Value::as_u64)
    {
        return s;
    }
    match array(container, "/lifecycle/preStop/exec/command") {
        [cmd, n] if cmd == "sleep" => n.as_str().and_then(|n| n.parse().ok()).unwrap_or(0),
        _ => 0,
    }
}
