//! `scripts/demo.sh`, the guided demo README.md sends newcomers to, runs to
//! the end with the binary under test, tells the story it promises, and
//! leaves nothing running.

mod common;

use std::net::TcpStream;
use std::process::Command;

#[test]
fn the_guided_demo_runs_to_the_end_and_stops_what_it_started() {
    let out = Command::new("bash")
        .arg(common::repo().join("scripts/demo.sh"))
        .env("COUNTERSIGN_BIN", env!("CARGO_BIN_EXE_countersign"))
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    let text = common::output_text(&out);
    assert!(out.status.success(), "{text}");
    // Each step's answer, in order: allow, deny, approval request, the
    // approver's view and approval, the retry, the replay, the audit trail.
    let story = [
        "HTTP 200  hello from the upstream",
        "\"policies\":[\"audit-logging-stays-on\"]",
        "\"decision\":\"approval_required\"",
        "$ countersign approvals list",
        "parameter       body.rows = 5000",
        "decision        approve by dora",
        "HTTP 200  hello from the upstream",
        "is consumed",
        "event=\"approved\"",
        "approver=\"dora\"",
        "demo complete",
    ];
    let mut rest = text.as_str();
    for line in story {
        let at = rest
            .find(line)
            .unwrap_or_else(|| panic!("`{line}` missing or out of order:\n{text}"));
        rest = &rest[at + line.len()..];
    }
    assert!(
        !text.contains("\u{1b}["),
        "colour despite NO_COLOR:\n{text}"
    );
    // Nothing it started still listens.
    let ports: String = text
        .lines()
        .filter(|l| l.starts_with("countersign demo:") || l.starts_with("(admin API"))
        .collect();
    assert!(ports.contains("Redis"), "the ports lines:\n{text}");
    let listening: Vec<&str> = ports
        .split(|c: char| !c.is_ascii_digit())
        .filter(|p| p.len() >= 4)
        .filter(|p| TcpStream::connect(("127.0.0.1", p.parse::<u16>().unwrap())).is_ok())
        .collect();
    assert!(listening.is_empty(), "still listening: {listening:?}");
}
