//! What the binary tells a new user trying countersign out, checked as
//! that user meets it: by running it.

mod common;

use std::process::Command;

use common::{countersign, output_text as text};

#[test]
fn policy_dir_errors_name_the_absolute_directory() {
    let missing = common::repo().join("no-such-policies");
    let o = countersign(&["policy", "validate", "no-such-policies"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        text(&o).contains(&format!("`{}` does not exist", missing.display())),
        "{}",
        text(&o)
    );

    let o = Command::new(env!("CARGO_BIN_EXE_countersign"))
        .arg("serve")
        .env_remove("COUNTERSIGN_CONFIG")
        .env("COUNTERSIGN_POLICY_DIR", "no-such-policies")
        .env("COUNTERSIGN_LISTEN", "127.0.0.1:0")
        .env("COUNTERSIGN_METRICS_LISTEN", "off")
        .current_dir(common::repo())
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(64), "{}", text(&o));
    assert!(
        text(&o).contains(&format!("`{}` does not exist", missing.display())),
        "{}",
        text(&o)
    );
}
