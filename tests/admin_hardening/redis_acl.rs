//! A Redis user limited to countersign's keys and commands, as
//! docs/redis-acl.md documents it: enough for every store operation, and
//! each of its commands needed.

use std::time::Duration;

use redis::aio::MultiplexedConnection;

use crate::common::{self, Redis};
use crate::store_operations::exercise_store;

/// The rules in docs/redis-acl.md, as written there.
pub struct DocumentedAcl {
    /// The arguments of `ACL SETUSER` in the first block: the user's name,
    /// then its rules.
    pub rules: Vec<String>,
    /// The second block's rules, for Redis 7.2 and later.
    pub since_7_2: Vec<String>,
    pub password: String,
}

fn documented_acl() -> DocumentedAcl {
    let doc = std::fs::read_to_string(common::repo().join("docs/redis-acl.md")).unwrap();
    let blocks: Vec<&str> = doc
        .split("```redis\n")
        .skip(1)
        .map(|b| b.split("```").next().unwrap().trim())
        .collect();
    // The base rules, then the additions for replica_acks and for a
    // cluster (checked by hand, see the doc), then the one for Redis 7.2.
    assert_eq!(blocks.len(), 4, "docs/redis-acl.md: four `redis` blocks");
    let setuser = |block: &str| -> Vec<String> {
        assert!(!block.contains('\n'), "one line per block: {block}");
        let args = block
            .strip_prefix("ACL SETUSER countersign ")
            .unwrap_or_else(|| panic!("not an `ACL SETUSER countersign` line: {block}"));
        std::iter::once("countersign")
            .chain(args.split_whitespace())
            .map(str::to_owned)
            .collect()
    };
    let rules = setuser(blocks[0]);
    let password = rules
        .iter()
        .find_map(|r| r.strip_prefix('>'))
        .expect("a password rule")
        .to_owned();
    assert!(
        password
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-'),
        "the example password goes into a URL as it is"
    );
    assert!(
        doc.contains(&format!("url = \"redis://countersign:{password}@")),
        "the documented URL logs in as the documented user"
    );
    DocumentedAcl {
        rules,
        since_7_2: setuser(blocks[3]),
        password,
    }
}

/// The password the test gives Redis' `default` user, its administrator.
const ADMIN_PASSWORD: &str = "hardening-admin";

/// Gives the `default` user a password, so that a connection is someone
/// only once it authenticates; the administrator's connection.
async fn lock_default_user(redis: &Redis) -> MultiplexedConnection {
    let mut c = redis::Client::open(redis.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    redis::cmd("ACL")
        .arg("SETUSER")
        .arg("default")
        .arg("on")
        .arg("resetpass")
        .arg(format!(">{ADMIN_PASSWORD}"))
        .query_async::<()>(&mut c)
        .await
        .unwrap();
    admin_connection(redis).await
}

async fn admin_connection(redis: &Redis) -> MultiplexedConnection {
    redis::Client::open(format!(
        "redis://default:{ADMIN_PASSWORD}@127.0.0.1:{}",
        redis.port
    ))
    .unwrap()
    .get_multiplexed_async_connection()
    .await
    .unwrap()
}

/// `ACL SETUSER` with `rules`, plus the Redis 7.2 block on a server that
/// has `CLIENT SETINFO`.
async fn set_user(admin: &mut MultiplexedConnection, rules: &[String], acl: &DocumentedAcl) {
    redis::cmd("ACL")
        .arg("SETUSER")
        .arg(rules)
        .query_async::<()>(admin)
        .await
        .unwrap_or_else(|e| panic!("ACL SETUSER {}: {e}", rules.join(" ")));
    if redis_version(admin).await >= (7, 2) {
        redis::cmd("ACL")
            .arg("SETUSER")
            .arg(&acl.since_7_2)
            .query_async::<()>(admin)
            .await
            .unwrap();
    }
    redis::cmd("ACL")
        .arg("LOG")
        .arg("RESET")
        .query_async::<()>(admin)
        .await
        .unwrap();
}

async fn redis_version(admin: &mut MultiplexedConnection) -> (u32, u32) {
    let info: String = redis::cmd("INFO")
        .arg("server")
        .query_async(admin)
        .await
        .unwrap();
    let v = info
        .lines()
        .find_map(|l| l.strip_prefix("redis_version:"))
        .unwrap();
    let mut parts = v.trim().split('.').map(|p| p.parse().unwrap());
    (parts.next().unwrap(), parts.next().unwrap())
}

/// `ACL LOG`: every refused command, key, channel or login, one line each.
pub async fn acl_log(admin: &mut MultiplexedConnection) -> Vec<String> {
    // Without a count, ACL LOG shows only the latest 10.
    let entries: Vec<redis::Value> = redis::cmd("ACL")
        .arg("LOG")
        .arg(1000)
        .query_async(admin)
        .await
        .unwrap();
    let text = |v: &redis::Value| {
        redis::from_redis_value_ref::<String>(v).unwrap_or_else(|_| format!("{v:?}"))
    };
    entries
        .iter()
        .map(|e| {
            let pairs: Vec<(String, String)> = match e {
                redis::Value::Array(items) => items
                    .chunks(2)
                    .map(|kv| (text(&kv[0]), text(&kv[1])))
                    .collect(),
                redis::Value::Map(items) => items.iter().map(|(k, v)| (text(k), text(v))).collect(),
                other => vec![("entry".into(), format!("{other:?}"))],
            };
            ["username", "reason", "context", "object"]
                .iter()
                .filter_map(|k| {
                    pairs
                        .iter()
                        .find(|(pk, _)| pk == k)
                        .map(|(_, v)| format!("{k}={v}"))
                })
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect()
}

pub fn limited_url(redis: &Redis, acl: &DocumentedAcl) -> String {
    format!(
        "redis://countersign:{}@127.0.0.1:{}",
        acl.password, redis.port
    )
}

/// A redis-server of the test's own whose `default` user is locked and
/// whose `countersign` user has the documented rules: the rules, the
/// server, and its administrator's connection (`ACL LOG` reset).
pub async fn redis_with_documented_user() -> (DocumentedAcl, Redis, MultiplexedConnection) {
    let acl = documented_acl();
    let redis = Redis::start().await;
    let mut admin = lock_default_user(&redis).await;
    set_user(&mut admin, &acl.rules, &acl).await;
    (acl, redis, admin)
}

#[tokio::test]
async fn the_documented_redis_user_runs_every_store_operation_and_nothing_else() {
    let (acl, redis, mut admin) = redis_with_documented_user().await;

    let mut limited = redis::Client::open(limited_url(&redis, &acl))
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    // What countersign has no business doing, and the user cannot.
    let forbidden: &[&[&str]] = &[
        &["KEYS", "*"],
        &["SCAN", "0"],
        &["FLUSHALL"],
        &["FLUSHDB"],
        &["CONFIG", "GET", "requirepass"],
        &["CONFIG", "SET", "appendonly", "no"],
        &["EVAL", "return 1", "0"],
        &["SCRIPT", "FLUSH"],
        &["DEL", "countersign:index"],
        &["SELECT", "1"],
        &["CLIENT", "LIST"],
        &["ACL", "LIST"],
        &["SHUTDOWN", "NOSAVE"],
        &["GET", "someone-else:key"],
        &["SPUBLISH", "someone-else:events", "x"],
    ];
    for args in forbidden {
        let err = redis::cmd(args[0])
            .arg(&args[1..])
            .query_async::<redis::Value>(&mut limited)
            .await
            .expect_err(&args.join(" "));
        assert_eq!(err.code(), Some("NOPERM"), "{}: {err}", args.join(" "));
    }
    // ACL LOG saw each refusal: it is the witness the other tests rely on.
    let log = acl_log(&mut admin).await;
    for object in ["keys", "flushall", "config|get", "eval", "someone-else:key"] {
        assert!(
            log.iter()
                .any(|l| l.contains("username=countersign")
                    && l.ends_with(&format!("object={object}"))),
            "{object} in {log:#?}"
        );
    }

    redis::cmd("ACL")
        .arg("LOG")
        .arg("RESET")
        .query_async::<()>(&mut admin)
        .await
        .unwrap();
    exercise_store(&limited_url(&redis, &acl), &mut admin)
        .await
        .unwrap();
    assert_eq!(
        acl_log(&mut admin).await,
        Vec::<String>::new(),
        "Redis refused the documented user"
    );
}

/// Each command on the documented list, taken away alone, breaks an
/// operation or shows up in `ACL LOG`: the list is what countersign uses,
/// no more. (Each round runs on its own runtime, so that the store's
/// background subscriber and connections end with it.)
#[test]
fn every_command_in_the_documented_redis_acl_is_needed() {
    let acl = documented_acl();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let redis = rt.block_on(Redis::start());
    drop(rt.block_on(lock_default_user(&redis)));
    let commands: Vec<&String> = acl.rules.iter().filter(|r| r.starts_with('+')).collect();
    assert!(
        commands.len() > 20,
        "docs/redis-acl.md grants too few commands to parse right: {commands:?}"
    );
    let mut unneeded = Vec::new();
    for command in commands {
        let rules: Vec<String> = acl
            .rules
            .iter()
            .filter(|r| *r != command)
            .cloned()
            .collect();
        let round = tokio::runtime::Runtime::new().unwrap();
        let noticed = round.block_on(async {
            let mut admin = admin_connection(&redis).await;
            for cmd in [["FLUSHALL", "SYNC"], ["SCRIPT", "FLUSH"]] {
                redis::cmd(cmd[0])
                    .arg(cmd[1])
                    .query_async::<()>(&mut admin)
                    .await
                    .unwrap();
            }
            set_user(&mut admin, &rules, &acl).await;
            let outcome = tokio::time::timeout(
                Duration::from_secs(20),
                exercise_store(&limited_url(&redis, &acl), &mut admin),
            )
            .await
            .unwrap_or_else(|_| Err("timed out".into()));
            outcome.is_err() || !acl_log(&mut admin).await.is_empty()
        });
        drop(round);
        if !noticed {
            unneeded.push(command.clone());
        }
    }
    assert!(
        unneeded.is_empty(),
        "countersign works without {unneeded:?}: take them out of docs/redis-acl.md"
    );
}
