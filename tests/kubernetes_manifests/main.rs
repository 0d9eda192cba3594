//! The Kubernetes examples in `deploy/kubernetes/`: every manifest parses and
//! names what it refers to; countersign's configuration loads with
//! countersign's own loader from the files the pod mounts (the Secrets and
//! the policies ConfigMap made as the README's commands make them); Envoy's
//! configuration passes `envoy --mode validate` with the container's own
//! arguments and matches `envoy/envoy.yaml` but for what a pod must change;
//! probes, Services and Envoy's clusters point at the ports countersign
//! listens on. No cluster and no kubectl are needed.
//!
//! Layout: `yaml` (documents, pointers, differences), `variant` (an example
//! directory with its ConfigMaps, Secrets and pods), `readme` (the objects
//! the README's kubectl commands create), and the checks: `references`,
//! `countersign_config`, `envoy_config`.

#[path = "../common/mod.rs"]
mod common;

mod countersign_config;
mod envoy_config;
mod readme;
mod references;
mod variant;
mod yaml;

use std::path::PathBuf;

use common::repo;

const VARIANTS: [&str; 2] = ["sidecar", "shared"];

fn k8s_dir() -> PathBuf {
    repo().join("deploy/kubernetes")
}
