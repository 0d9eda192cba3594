//! A real Redis Cluster on loopback ports: three primaries with a replica
//! each, from Debian's `redis-server` and `redis-cli --cluster create`.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::{eventually, free_port};

pub struct Cluster {
    nodes: Vec<Node>,
    dir: tempfile::TempDir,
}

struct Node {
    port: u16,
    child: Option<Child>,
}

/// Fails a node fast: a second without its primary and a replica takes over
/// (whatever its replication lag, so that a paused replica can too).
const NODE_TIMEOUT_MS: &str = "1000";

impl Cluster {
    /// Starts a cluster, on other ports if one node could not have its
    /// own (a port can be taken between choosing and binding it).
    pub async fn start() -> Cluster {
        let mut last = String::new();
        for attempt in 1..=3 {
            match Cluster::try_start().await {
                Ok(cluster) => return cluster,
                Err(e) => {
                    eprintln!("cluster start, attempt {attempt}: {e}");
                    last = e;
                }
            }
        }
        panic!("the cluster did not start: {last}");
    }

    async fn try_start() -> Result<Cluster, String> {
        let dir = tempfile::tempdir().unwrap();
        let mut cluster = Cluster {
            nodes: Vec::new(),
            dir,
        };
        for port in node_ports(6) {
            let child = cluster.spawn(port);
            cluster.nodes.push(Node {
                port,
                child: Some(child),
            });
        }
        for n in &mut cluster.nodes {
            if !listening(n.port).await {
                return Err(format!("node did not start on {}", n.port));
            }
            // Another process on the port answers too: only a node that is
            // still running owns it.
            if let Some(status) = n.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                return Err(format!("node on {} exited: {status}", n.port));
            }
        }
        let mut ids: Vec<String> = cluster
            .nodes
            .iter()
            .map(|n| cli(n.port, &["CLUSTER", "MYID"]))
            .collect();
        ids.sort();
        ids.dedup();
        if ids.len() != cluster.nodes.len() || ids.iter().any(|id| id.trim().is_empty()) {
            return Err(format!("nodes do not answer as six: {ids:?}"));
        }
        let addrs: Vec<String> = cluster
            .nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        let out = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(&addrs)
            .args(["--cluster-replicas", "1", "--cluster-yes"])
            .output()
            .expect("redis-cli not found: install the redis-server package");
        if !out.status.success() {
            return Err(format!(
                "redis-cli --cluster create: {}",
                String::from_utf8_lossy(&out.stdout)
            ));
        }
        if !cluster.settled().await {
            return Err(format!(
                "the cluster did not settle: {}",
                cluster.nodes_text()
            ));
        }
        Ok(cluster)
    }

    fn node_dir(&self, port: u16) -> PathBuf {
        let d = self.dir.path().join(port.to_string());
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn spawn(&self, port: u16) -> Child {
        let dir = self.node_dir(port);
        Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--cluster-enabled", "yes"])
            .args(["--cluster-node-timeout", NODE_TIMEOUT_MS])
            .args(["--cluster-replica-validity-factor", "0"])
            .args(["--save", "", "--appendonly", "no"])
            // A new replica syncs at once instead of after Redis' default
            // 5 s wait for more replicas.
            .args(["--repl-diskless-sync-delay", "0"])
            // As docs/SCALING.md recommends: the other primaries keep
            // serving their slots while one fails over.
            .args(["--cluster-require-full-coverage", "no"])
            .arg("--dir")
            .arg(&dir)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("redis-server not found: install the redis-server package")
    }

    /// Waits until every live node says the cluster is ok, every primary
    /// has its replica and every replica has finished its initial sync (a
    /// primary reports a replica "online" before the replica holds the data).
    pub async fn settle(&self) {
        assert!(
            self.settled().await,
            "the cluster did not settle: {}",
            self.nodes_text()
        );
    }

    async fn settled(&self) -> bool {
        eventually(
            Duration::from_secs(30),
            Duration::from_millis(100),
            || async {
                self.live()
                    .all(|p| cli(p, &["CLUSTER", "INFO"]).contains("cluster_state:ok"))
                    && self.primaries().iter().all(|p| {
                        let info = cli(*p, &["INFO", "replication"]);
                        info.contains("connected_slaves:1") && info.contains("state=online")
                    })
                    && self.live().all(|p| {
                        let info = cli(p, &["INFO", "replication"]);
                        info.contains("role:master")
                            || (info.contains("master_link_status:up")
                                && info.contains("master_sync_in_progress:0"))
                    })
            },
        )
        .await
    }

    /// Waits until `primary`'s replica has acknowledged everything written
    /// so far. (`WAIT` from another client cannot tell: it waits only for
    /// that client's own writes.)
    pub async fn caught_up(&self, primary: u16) {
        let ok = eventually(
            Duration::from_secs(10),
            Duration::from_millis(50),
            || async {
                let info = cli(primary, &["INFO", "replication"]);
                let field = |name: &str| {
                    info.split([',', '\r', '\n'])
                        .find_map(|f| f.strip_prefix(name))
                        .map(str::to_owned)
                };
                matches!(
                    (field("master_repl_offset:"), field("offset=")),
                    (Some(a), Some(b)) if a == b
                )
            },
        )
        .await;
        assert!(
            ok,
            "{primary}'s replica did not catch up: {}",
            cli(primary, &["INFO", "replication"])
        );
    }

    /// Seed URLs: every node, as a deployment would list them.
    pub fn url(&self) -> String {
        self.nodes
            .iter()
            .map(|n| format!("redis://127.0.0.1:{}", n.port))
            .collect::<Vec<_>>()
            .join(",")
    }

    fn live(&self) -> impl Iterator<Item = u16> + '_ {
        self.nodes
            .iter()
            .filter(|n| n.child.is_some())
            .map(|n| n.port)
    }

    fn nodes_text(&self) -> String {
        self.live()
            .next()
            .map_or_else(String::new, |p| cli(p, &["CLUSTER", "NODES"]))
    }

    /// Ports of the live primaries.
    pub fn primaries(&self) -> Vec<u16> {
        self.nodes_text()
            .lines()
            .filter(|l| l.contains("master") && !l.contains("fail"))
            .filter_map(port_of)
            .collect()
    }

    /// The port of the primary serving `key`.
    pub fn primary_of(&self, key: &str) -> u16 {
        let any = self.live().next().expect("a live node");
        let slot: u16 = cli(any, &["CLUSTER", "KEYSLOT", key])
            .trim()
            .parse()
            .unwrap();
        self.nodes_text()
            .lines()
            .filter(|l| l.contains("master") && !l.contains("fail"))
            .find(|l| {
                l.split(' ').skip(8).any(|range| {
                    let (a, b) = range.split_once('-').unwrap_or((range, range));
                    matches!((a.parse::<u16>(), b.parse::<u16>()), (Ok(a), Ok(b)) if (a..=b).contains(&slot))
                })
            })
            .and_then(port_of)
            .unwrap_or_else(|| panic!("no primary serves slot {slot}: {}", self.nodes_text()))
    }

    /// The port of `primary`'s replica.
    pub fn replica_of(&self, primary: u16) -> u16 {
        let text = self.nodes_text();
        let id = text
            .lines()
            .find(|l| port_of(l) == Some(primary))
            .and_then(|l| l.split(' ').next())
            .expect("primary in CLUSTER NODES")
            .to_owned();
        text.lines()
            .find(|l| l.split(' ').nth(3) == Some(id.as_str()) && l.contains("slave"))
            .and_then(port_of)
            .unwrap_or_else(|| panic!("{primary} has no replica: {text}"))
    }

    /// Kills the node on `port` (SIGKILL: no goodbye to the cluster).
    pub fn kill(&mut self, port: u16) {
        let node = self.nodes.iter_mut().find(|n| n.port == port).unwrap();
        if let Some(mut c) = node.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Replaces a killed node with a new, empty one on its port, added as a
    /// replica of `primary`: what an operator does after losing a node of
    /// a cluster that keeps nothing on disk. (Restarting it with its old
    /// cluster state instead could, with no data, claim its slots back.)
    pub async fn replace(&mut self, port: u16, primary: u16) {
        let _ = std::fs::remove_dir_all(self.node_dir(port));
        let child = self.spawn(port);
        self.nodes
            .iter_mut()
            .find(|n| n.port == port)
            .unwrap()
            .child = Some(child);
        assert!(
            listening(port).await,
            "the new node did not start on {port}"
        );
        let id = cli(primary, &["CLUSTER", "MYID"]);
        let out = Command::new("redis-cli")
            .args(["--cluster", "add-node"])
            .arg(format!("127.0.0.1:{port}"))
            .arg(format!("127.0.0.1:{primary}"))
            .args(["--cluster-slave", "--cluster-master-id", id.trim()])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "redis-cli --cluster add-node: {}",
            String::from_utf8_lossy(&out.stdout)
        );
    }

    /// Freezes (SIGSTOP) or thaws (SIGCONT) the node on `port`.
    pub fn signal(&self, port: u16, sig: &str) {
        let node = self.nodes.iter().find(|n| n.port == port).unwrap();
        super::signal(node.child.as_ref().expect("running"), sig);
    }

    /// Whether `port` has taken over as a primary.
    pub fn is_primary(&self, port: u16) -> bool {
        cli(port, &["ROLE"]).starts_with("master")
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for n in &mut self.nodes {
            if let Some(mut c) = n.child.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
}

/// `count` free ports for cluster nodes, each at most 55535 because a node
/// also listens on its port + 10000 (the cluster bus); no node's port is
/// another's, nor another's bus port.
fn node_ports(count: usize) -> Vec<u16> {
    let mut taken: Vec<u16> = Vec::new();
    let mut ports = Vec::new();
    while ports.len() < count {
        let port = free_port();
        if port <= 55535
            && !taken.contains(&port)
            && !taken.contains(&(port + 10000))
            && std::net::TcpListener::bind(("127.0.0.1", port + 10000)).is_ok()
        {
            taken.extend([port, port + 10000]);
            ports.push(port);
        }
    }
    ports
}

/// Whether a node accepts connections on `port` within 10 s.
async fn listening(port: u16) -> bool {
    eventually(
        Duration::from_secs(10),
        Duration::from_millis(50),
        || async move { std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() },
    )
    .await
}

/// `redis-cli -p PORT ARGS`; its output ("" if the node does not answer).
pub fn cli(port: u16, args: &[&str]) -> String {
    Command::new("redis-cli")
        .args(["-p", &port.to_string()])
        .args(args)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}

/// The port of a `CLUSTER NODES` line (`<id> 127.0.0.1:PORT@BUS ...`).
fn port_of(line: &str) -> Option<u16> {
    let addr = line.split(' ').nth(1)?;
    addr.split(['@', ','])
        .next()?
        .rsplit(':')
        .next()?
        .parse()
        .ok()
}
