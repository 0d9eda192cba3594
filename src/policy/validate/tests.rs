use std::fmt::Write as _;
use std::str::FromStr;

use cedar_policy::{PolicyId, SchemaFragment};

use super::*;

/// Action groups, actions with different principals, resources and
/// contexts, a second namespace, and enough actions for several batches.
fn schema_texts(name_type: &str) -> Vec<String> {
    let mut main = format!(
        r#"
entity Group;
entity User in [Group] {{ level?: Long, name: {name_type} }};
entity Workload {{ team: String }};
entity Doc {{ owner: User, public: Bool }};
entity Other;
action read, list appliesTo {{ principal: [User, Workload], resource: [Doc], context: {{ n?: Long }} }};
action write appliesTo {{ principal: [User], resource: [Doc], context: {{ size: Long }} }};
action "writes";
action delete in ["writes"] appliesTo {{ principal: [User], resource: [Doc, Other], context: {{ size: Long }} }};
action update in ["writes"] appliesTo {{ principal: [Workload], resource: [Doc], context: {{}} }};
"#
    );
    for i in 0..40 {
        let context = if i % 2 == 0 { "{ n: Long }" } else { "{}" };
        let principals = if i % 3 == 0 { "User" } else { "User, Workload" };
        let _ = writeln!(
            main,
            "action \"op{i}\" appliesTo {{ principal: [{principals}], resource: [Doc], context: {context} }};"
        );
    }
    let ops = r#"
namespace Ops {
  entity Job;
  action run in [Action::"writes"] appliesTo { principal: [User], resource: [Job], context: { urgent: Bool } };
}
"#;
    vec![main, ops.to_owned()]
}

struct Built {
    schema: Schema,
    json: Vec<serde_json::Value>,
    texts: Vec<String>,
}

impl Built {
    fn new(texts: Vec<String>) -> Self {
        let fragments: Vec<SchemaFragment> = texts
            .iter()
            .map(|t| SchemaFragment::from_cedarschema_str(t).unwrap().0)
            .collect();
        let json = fragments
            .iter()
            .map(|f| f.clone().to_json_value().unwrap())
            .collect();
        let schema = Schema::from_schema_fragments(fragments).unwrap();
        Self {
            schema,
            json,
            texts,
        }
    }

    fn against(&self) -> Against<'_> {
        Against {
            schema: &self.schema,
            fragments: &self.json,
            texts: self.texts.clone(),
        }
    }
}

/// Every combination of scope forms and conditions: valid ones, ones that
/// fail only under some of the actions a group reaches, names the schema
/// does not declare, impossible ones and confusable strings; and a policy
/// on each action.
fn combinations() -> Vec<Policy> {
    let principals = [
        "principal",
        r#"principal == User::"u""#,
        r#"principal == Workload::"w""#,
        r#"principal in Group::"g""#,
        "principal is Workload",
        r#"principal is User in Group::"g""#,
        r#"principal == Nope::"x""#,
    ];
    let actions = [
        "action",
        r#"action == Action::"read""#,
        r#"action == Action::"write""#,
        r#"action in Action::"writes""#,
        r#"action in [Action::"read", Action::"update"]"#,
        r#"action == Action::"nope""#,
        r#"action == Ops::Action::"run""#,
        r#"action == Action::"op7""#,
        r#"action in [Action::"op2", Action::"op3", Action::"op30"]"#,
    ];
    let resources = ["resource", "resource is Doc", r#"resource == Other::"o""#];
    let conditions = [
        "",
        "when { context.size > 1 }",
        r#"when { principal.name == "x" }"#,
        "when { principal.level > 1 }",
        "when { resource.owner == principal }",
        "when { context has n && context.n > 2 }",
        r#"when { action in Action::"writes" && context.size > 3 }"#,
        r#"unless { principal in Group::"g" }"#,
        r#"when { 1 + "a" }"#,
        r#"when { principal.team == "pаyments" }"#,
    ];
    let mut out = Vec::new();
    for p in principals {
        for a in actions {
            for r in resources {
                for c in conditions {
                    let n = out.len();
                    let text = format!("@id(\"c{n}\")\npermit ({p}, {a}, {r}) {c};");
                    let policy = Policy::parse(Some(PolicyId::new(format!("c{n}"))), &text)
                        .unwrap_or_else(|e| panic!("{text}: {e}"));
                    out.push(policy);
                }
            }
        }
    }
    // One action each, over every action: several batches. `n` is in half
    // of the contexts.
    for i in 0..40 {
        let text = format!(
            "permit (principal in Group::\"g\", action == Action::\"op{i}\", resource) when {{ context.n > 1 }};"
        );
        out.push(Policy::parse(Some(PolicyId::new(format!("op{i}"))), &text).unwrap());
    }
    out.push(names_another());
    out
}

/// Valid (and impossible), though it names an action its scope excludes.
fn names_another() -> Policy {
    let text = r#"permit (principal, action == Action::"op5", resource) when { action == Action::"op39" };"#;
    Policy::parse(Some(PolicyId::new("names-another")), text).unwrap()
}

/// Cedar's own validation of the whole set: errors by policy and message,
/// and warnings, each sorted.
fn cedar(schema: &Schema, policies: &[Policy]) -> (Vec<String>, Vec<String>) {
    let result = Validator::new(schema.clone()).validate(&set_of(policies), ValidationMode::Strict);
    described(result.validation_errors(), result.validation_warnings())
}

fn described<'a>(
    errors: impl Iterator<Item = &'a ValidationError>,
    warnings: impl Iterator<Item = impl ToString>,
) -> (Vec<String>, Vec<String>) {
    let mut errors: Vec<String> = errors
        .map(|e| {
            let at: Vec<_> = miette::Diagnostic::labels(e)
                .into_iter()
                .flatten()
                .map(|l| l.offset())
                .collect();
            format!("{}: {e} at {at:?}", e.policy_id())
        })
        .collect();
    let mut warnings: Vec<String> = warnings.map(|w| w.to_string()).collect();
    errors.sort();
    warnings.sort();
    (errors, warnings)
}

fn ours(
    against: &Against,
    policies: &[Policy],
    cache: &mut Validated,
) -> (Vec<String>, Vec<String>, usize) {
    let refs: Vec<&Policy> = policies.iter().collect();
    let out = validate(against, &refs, cache);
    let (errors, warnings) = described(out.errors.iter(), out.warnings.iter());
    (errors, warnings, out.checked)
}

/// What validating `policies` once leaves to reuse.
fn cached(built: &Built, policies: &[Policy]) -> Validated {
    let mut cache = Validated::default();
    ours(&built.against(), policies, &mut cache);
    cache
}

#[test]
fn per_policy_validation_reports_what_cedar_reports_for_the_whole_set() {
    let built = Built::new(schema_texts("String"));
    let policies = combinations();
    let (errors, warnings) = cedar(&built.schema, &policies);
    // The combinations cover both outcomes, and warnings.
    assert!(errors.len() > 100 && warnings.len() > 100, "{errors:?}");
    let (got_errors, got_warnings, checked) =
        ours(&built.against(), &policies, &mut Validated::default());
    assert_eq!(checked, policies.len());
    assert_eq!(got_errors, errors);
    assert_eq!(got_warnings, warnings);
}

#[test]
fn a_policy_that_fails_against_the_whole_schema_fails_against_its_actions() {
    // What the result rests on: a policy that passes narrowed passes.
    let built = Built::new(schema_texts("String"));
    let policies = combinations();
    let refs: Vec<&Policy> = policies.iter().collect();
    let whole = Validator::new(built.schema.clone())
        .validate(&set_of(refs.iter().copied()), ValidationMode::Strict);
    let failing: HashSet<String> = whole
        .validation_errors()
        .map(|e| e.policy_id().to_string())
        .collect();
    let found = validate_fresh(&built.against(), &refs);
    assert!(found.failed.is_superset(&failing));
    // ...and they were narrowed: several batches, each narrowed.
    let hierarchy = Hierarchy::of(&built.schema).unwrap();
    let narrow = Narrow::new(&built.schema, &built.json, &hierarchy).unwrap();
    let batches = batches(&hierarchy, &refs);
    let whole = built.schema.request_envs().count();
    let narrowed = batches
        .iter()
        .filter_map(|(keep, _)| narrow.to(keep.as_ref()?))
        .filter(|s| s.request_envs().count() < whole / 2)
        .count();
    assert!(batches.len() >= 4, "{} batches", batches.len());
    // All but the batch of policies on any action.
    assert_eq!(narrowed, batches.len() - 1);
}

#[test]
fn a_policy_naming_an_action_its_scope_excludes_is_validated_on_the_whole_schema() {
    let built = Built::new(schema_texts("String"));
    let policy = names_another();
    let hierarchy = Hierarchy::of(&built.schema).unwrap();
    let narrow = Narrow::new(&built.schema, &built.json, &hierarchy).unwrap();
    let keep: HashSet<EntityUid> = hierarchy.actions_of(&policy).unwrap().into_iter().collect();
    let passes = |schema: Schema| {
        Validator::new(schema)
            .validate(&set_of([&policy]), ValidationMode::Strict)
            .validation_passed()
    };
    assert!(!passes(narrow.to(&keep).unwrap()));
    assert!(passes(built.schema.clone()));
    let policies = [policy];
    let mut cache = Validated::default();
    let (errors, warnings, _) = ours(&built.against(), &policies, &mut cache);
    assert!(errors.is_empty(), "{errors:?}");
    // (An impossible policy: `op5` is never `op39`.)
    assert_eq!((errors, warnings.clone()), cedar(&built.schema, &policies));
    // Clean, it is kept, with its warning.
    assert_eq!(
        ours(&built.against(), &policies, &mut cache),
        (vec![], warnings, 0)
    );
}

#[test]
fn a_group_scope_reaches_every_action_below_the_group() {
    let built = Built::new(schema_texts("String"));
    let hierarchy = Hierarchy::of(&built.schema).unwrap();
    let policy = Policy::from_str(
        r#"permit (principal, action in [Action::"writes", Action::"read"], resource);"#,
    )
    .unwrap();
    let names: Vec<String> = hierarchy
        .actions_of(&policy)
        .unwrap()
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(
        names,
        [
            r#"Action::"delete""#,
            r#"Action::"read""#,
            r#"Action::"update""#,
            r#"Action::"writes""#,
            r#"Ops::Action::"run""#,
        ]
    );
    let any = Policy::from_str("permit (principal, action, resource);").unwrap();
    assert_eq!(hierarchy.actions_of(&any), None);
}

#[test]
fn a_policy_validated_against_the_same_schema_is_not_validated_again() {
    let built = Built::new(schema_texts("String"));
    let mut policies = combinations();
    let mut cache = Validated::default();
    let first = ours(&built.against(), &policies, &mut cache);
    let again = ours(&built.against(), &policies, &mut cache);
    assert_eq!((&again.0, &again.1), (&first.0, &first.1));
    // Only the failing policies are validated again (their errors are
    // located afresh each time).
    let failing: HashSet<&str> = first
        .0
        .iter()
        .map(|e| e.split(':').next().unwrap())
        .collect();
    assert_eq!(again.2, failing.len());

    // One policy edited: it, and the failing ones, are validated.
    let edited = r#"@id("c0")
permit (principal, action, resource) when { principal.level > 1 };"#;
    policies[0] = Policy::parse(Some(PolicyId::new("c0")), edited).unwrap();
    let after = ours(&built.against(), &policies, &mut cache);
    assert_eq!(after.2, failing.len() + 1);
    assert_eq!(
        (after.0.clone(), after.1.clone()),
        cedar(&built.schema, &policies)
    );
    assert!(
        after.0.iter().any(|e| e.starts_with("c0: ")),
        "{:?}",
        after.0
    );

    // An annotation is part of the text: changed, the policy is validated.
    let annotated = r#"@id("c1")
@shadow
permit (principal, action, resource);"#;
    let plain = r#"@id("c1")
permit (principal, action, resource);"#;
    let one = |text| [Policy::parse(Some(PolicyId::new("c1")), text).unwrap()];
    assert_eq!(ours(&built.against(), &one(plain), &mut cache).2, 1);
    assert_eq!(ours(&built.against(), &one(plain), &mut cache).2, 0);
    assert_eq!(ours(&built.against(), &one(annotated), &mut cache).2, 1);
}

#[test]
fn another_schema_invalidates_every_policy_validated_before() {
    let strings = Built::new(schema_texts("String"));
    let policies = combinations();
    let mut cache = cached(&strings, &policies);
    // `name` becomes a Long: `principal.name == "x"`, clean before, fails.
    let longs = Built::new(schema_texts("Long"));
    let (errors, warnings, checked) = ours(&longs.against(), &policies, &mut cache);
    assert_eq!(checked, policies.len());
    assert_eq!((errors, warnings), cedar(&longs.schema, &policies));
    let named = r#"@id("n")
permit (principal == User::"u", action == Action::"read", resource) when { principal.name == "x" };"#;
    let named = [Policy::parse(Some(PolicyId::new("n")), named).unwrap()];
    let mut cache = Validated::default();
    assert!(ours(&strings.against(), &named, &mut cache).0.is_empty());
    let (errors, ..) = ours(&longs.against(), &named, &mut cache);
    assert_eq!(errors.len(), 1, "{errors:?}");
}

#[test]
fn only_the_policies_of_the_last_set_are_kept() {
    let built = Built::new(schema_texts("String"));
    let policies = combinations();
    let mut cache = cached(&built, &policies);
    let kept = cache.clean.len();
    assert!(kept > 0 && kept < policies.len());
    ours(&built.against(), &policies[..10], &mut cache);
    assert!(cache.clean.len() <= 10);
    assert!(
        cache
            .clean
            .keys()
            .all(|(id, _)| policies[..10].iter().any(|p| p.id().to_string() == *id))
    );
}

#[test]
fn a_schema_that_cannot_be_narrowed_is_validated_whole() {
    let built = Built::new(schema_texts("String"));
    let policies = combinations();
    // Without the JSON form of each file, nothing is narrowed.
    let against = Against {
        schema: &built.schema,
        fragments: &built.json[..1],
        texts: built.texts.clone(),
    };
    assert!(!narrowable(&against));
    let (errors, warnings, _) = ours(&against, &policies, &mut Validated::default());
    assert_eq!((errors, warnings), cedar(&built.schema, &policies));
}
