//! How `policy test` reports: lines for people, JSON, or JUnit XML for CI
//! systems.

use std::collections::BTreeMap;
use std::path::PathBuf;

use clap::ValueEnum;
use quick_junit::{NonSuccessKind, Report, TestCase, TestCaseStatus, TestSuite};

use super::suite::CaseResult;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// A line per case, the differences under each failure.
    Text,
    /// One JSON document: every case with what it expected and got.
    Json,
    /// JUnit XML: a test suite per file, a test case per case.
    Junit,
}

pub fn render(output: Output, results: &[CaseResult], uncovered: &[String]) -> String {
    match output {
        Output::Text => text(results, uncovered),
        Output::Json => json(results, uncovered),
        Output::Junit => junit(results),
    }
}

fn text(results: &[CaseResult], uncovered: &[String]) -> String {
    let mut out = String::new();
    for r in results {
        let mark = if r.passed { "ok  " } else { "FAIL" };
        out.push_str(&format!(
            "{mark}  {}:{}  {}\n",
            r.file.display(),
            r.line,
            r.name
        ));
        if r.passed {
            continue;
        }
        out.push_str(&format!("      expected: {}\n", r.expected));
        match &r.got {
            Some(g) => out.push_str(&format!("      got:      {}\n", g.summary())),
            None => out.push_str("      got:      (not decided)\n"),
        }
        for f in &r.failures {
            out.push_str(&format!("      - {f}\n"));
        }
    }
    let failed = results.iter().filter(|r| !r.passed).count();
    out.push_str(&format!(
        "\n{} passed, {failed} failed\n",
        results.len() - failed
    ));
    if !uncovered.is_empty() {
        out.push_str(&format!(
            "{} policies decided no case: {}\n",
            uncovered.len(),
            uncovered.join(", ")
        ));
    }
    out
}

fn json(results: &[CaseResult], uncovered: &[String]) -> String {
    let failed = results.iter().filter(|r| !r.passed).count();
    let doc = serde_json::json!({
        "passed": results.len() - failed,
        "failed": failed,
        "cases": results,
        "uncovered_policies": uncovered,
    });
    let mut s = serde_json::to_string_pretty(&doc).unwrap_or_default();
    s.push('\n');
    s
}

fn junit(results: &[CaseResult]) -> String {
    let mut by_file: BTreeMap<&PathBuf, Vec<&CaseResult>> = BTreeMap::new();
    for r in results {
        by_file.entry(&r.file).or_default().push(r);
    }
    let mut report = Report::new("countersign policy test");
    for (file, cases) in by_file {
        let mut suite = TestSuite::new(file.display().to_string());
        for r in cases {
            let status = if r.passed {
                TestCaseStatus::success()
            } else {
                let mut s = TestCaseStatus::non_success(NonSuccessKind::Failure);
                s.set_message(r.failures.join("; "));
                s.set_type("decision");
                let got = r
                    .got
                    .as_ref()
                    .map_or("(not decided)".to_owned(), |g| g.summary());
                s.set_description(format!("expected: {}\ngot:      {got}", r.expected));
                s
            };
            let mut case = TestCase::new(r.name.clone(), status);
            case.set_classname(format!("{}:{}", file.display(), r.line));
            case.set_time(r.time);
            suite.add_test_case(case);
        }
        report.add_test_suite(suite);
    }
    report.to_string().unwrap_or_default()
}
