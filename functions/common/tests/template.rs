//! infra/template.yaml against the code: the tables (keys, indexes, TTL), the functions'
//! environment variables and binaries are defined once, in code; the template must match.

use std::collections::{BTreeMap, BTreeSet};

use nodewright_aws::state::tables::TABLES;
use nodewright_handlers::Function;
use nodewright_handlers::settings::ENV_VARS;
use serde_norway::Value;

fn template() -> Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../infra/template.yaml");
    let text = std::fs::read_to_string(path).expect("infra/template.yaml is readable");
    serde_norway::from_str(&text).expect("the template is YAML")
}

/// The value under a CloudFormation short-form tag (`!Sub x` -> x), or the value itself.
fn untag(v: &Value) -> &Value {
    match v {
        Value::Tagged(t) => &t.value,
        other => other,
    }
}

fn get<'a>(v: &'a Value, key: &str) -> &'a Value {
    untag(v).get(key).unwrap_or(&Value::Null)
}

fn str_of(v: &Value) -> &str {
    untag(v).as_str().unwrap_or("")
}

fn resources(t: &Value, kind: &str) -> BTreeMap<String, Value> {
    get(t, "Resources")
        .as_mapping()
        .expect("Resources is a mapping")
        .iter()
        .filter(|(_, r)| str_of(get(r, "Type")) == kind)
        .map(|(name, r)| (str_of(name).to_string(), r.clone()))
        .collect()
}

/// (HASH, RANGE) of a KeySchema.
fn keys(schema: &Value) -> (String, Option<String>) {
    let mut hash = String::new();
    let mut range = None;
    for k in schema.as_sequence().expect("KeySchema is a list") {
        let name = str_of(get(k, "AttributeName")).to_string();
        match str_of(get(k, "KeyType")) {
            "HASH" => hash = name,
            "RANGE" => range = Some(name),
            other => panic!("unknown KeyType {other}"),
        }
    }
    (hash, range)
}

#[test]
fn tables_match_the_code() {
    let t = template();
    let tables = resources(&t, "AWS::DynamoDB::Table");
    assert_eq!(tables.len(), TABLES.len(), "one template table per code table");
    for spec in TABLES {
        // `!Sub ["${Prefix}-claims", {Prefix: <TablePrefix, else the stack name>}]`: the same
        // prefix the functions get as NODEWRIGHT_TABLE_PREFIX.
        let want_name = format!("${{Prefix}}-{}", spec.suffix);
        let (id, table) = tables
            .iter()
            .find(|(_, r)| {
                let name = untag(get(get(r, "Properties"), "TableName"));
                name.as_sequence()
                    .and_then(|parts| parts.first())
                    .is_some_and(|first| str_of(first) == want_name)
            })
            .unwrap_or_else(|| panic!("no table named {want_name}"));
        let prefix = &untag(get(get(table, "Properties"), "TableName")).as_sequence().unwrap()[1];
        let env_prefix = get(
            get(get(get(get(&t, "Globals"), "Function"), "Environment"), "Variables"),
            "NODEWRIGHT_TABLE_PREFIX",
        );
        assert_eq!(get(prefix, "Prefix"), env_prefix, "{id}: the functions' table prefix");
        let props = get(table, "Properties");
        assert_eq!(
            keys(get(props, "KeySchema")),
            (spec.partition_key.to_string(), spec.sort_key.map(str::to_string)),
            "{id} keys"
        );
        assert_eq!(str_of(get(props, "BillingMode")), "PAY_PER_REQUEST", "{id}");
        assert_eq!(
            get(get(props, "SSESpecification"), "SSEEnabled").as_bool(),
            Some(true),
            "{id}"
        );
        assert_eq!(
            get(
                get(props, "PointInTimeRecoverySpecification"),
                "PointInTimeRecoveryEnabled"
            )
            .as_bool(),
            Some(true),
            "{id}"
        );
        let ttl = get(props, "TimeToLiveSpecification");
        match spec.ttl_attribute {
            Some(attr) => {
                assert_eq!(str_of(get(ttl, "AttributeName")), attr, "{id} TTL attribute");
                assert_eq!(get(ttl, "Enabled").as_bool(), Some(true), "{id} TTL enabled");
            }
            None => assert!(ttl.is_null(), "{id} has a TTL the code does not use"),
        }
        let want_indexes: BTreeMap<String, (String, Option<String>)> = spec
            .indexes
            .iter()
            .map(|i| {
                (
                    i.name.to_string(),
                    (i.partition_key.to_string(), i.sort_key.map(str::to_string)),
                )
            })
            .collect();
        let got_indexes: BTreeMap<String, (String, Option<String>)> = get(props, "GlobalSecondaryIndexes")
            .as_sequence()
            .map(|seq| {
                seq.iter()
                    .map(|i| {
                        assert_eq!(str_of(get(get(i, "Projection"), "ProjectionType")), "ALL");
                        (str_of(get(i, "IndexName")).to_string(), keys(get(i, "KeySchema")))
                    })
                    .collect()
            })
            .unwrap_or_default();
        assert_eq!(got_indexes, want_indexes, "{id} indexes");
        // Every key attribute is defined as a string, and nothing else is.
        let mut key_attrs: BTreeSet<String> = BTreeSet::from([spec.partition_key.to_string()]);
        key_attrs.extend(spec.sort_key.map(str::to_string));
        for i in spec.indexes {
            key_attrs.insert(i.partition_key.into());
            key_attrs.extend(i.sort_key.map(str::to_string));
        }
        let defined: BTreeSet<String> = get(props, "AttributeDefinitions")
            .as_sequence()
            .expect("AttributeDefinitions")
            .iter()
            .map(|a| {
                assert_eq!(str_of(get(a, "AttributeType")), "S");
                str_of(get(a, "AttributeName")).to_string()
            })
            .collect();
        assert_eq!(defined, key_attrs, "{id} attribute definitions");
    }
}

#[test]
fn environment_matches_what_the_functions_read() {
    let t = template();
    let known: BTreeMap<&str, bool> = ENV_VARS.iter().map(|(n, required, _)| (*n, *required)).collect();
    let vars = get(get(get(get(&t, "Globals"), "Function"), "Environment"), "Variables")
        .as_mapping()
        .expect("Globals.Function.Environment.Variables");
    let set: BTreeSet<&str> = vars.keys().map(str_of).collect();
    for v in &set {
        assert!(known.contains_key(v), "the template sets {v}, which no function reads");
    }
    for (name, required) in &known {
        // Lambda itself sets AWS_REGION.
        if *required && *name != "AWS_REGION" {
            assert!(set.contains(name), "required {name} is not set by the template");
        }
    }
    // A function sets a variable of its own only where it alone reads it: pod-pending's launch
    // bus (the others launch inline). Nothing shadows a shared one.
    for (id, f) in resources(&t, "AWS::Serverless::Function") {
        let own = get(get(get(&f, "Properties"), "Environment"), "Variables");
        if id == "PodPendingFunction" {
            let own = own.as_mapping().expect("pod-pending's own environment");
            let names: Vec<&str> = own.keys().map(str_of).collect();
            assert_eq!(names, ["NODEWRIGHT_LAUNCH_BUS"], "{id}");
            assert!(known.contains_key("NODEWRIGHT_LAUNCH_BUS"));
            assert!(!set.contains("NODEWRIGHT_LAUNCH_BUS"), "the bus is pod-pending's alone");
            // `!Ref LaunchBus`: the tag is Ref, its value the bus resource.
            let bus = own.get("NODEWRIGHT_LAUNCH_BUS").expect("set");
            assert!(matches!(bus, Value::Tagged(t) if t.tag == "Ref"), "{bus:?}");
            assert_eq!(str_of(bus), "LaunchBus");
            assert!(resources(&t, "AWS::Events::EventBus").contains_key("LaunchBus"));
            continue;
        }
        assert!(own.is_null(), "{id} sets its own environment; keep it in Globals");
    }
    assert_eq!(str_of(vars.get("NODEWRIGHT_CLUSTER_ACCESS").expect("set")), "eks");
}

#[test]
fn functions_are_the_four_binaries() {
    let t = template();
    let functions = resources(&t, "AWS::Serverless::Function");
    let binaries: BTreeSet<String> = functions
        .values()
        .map(|f| {
            let meta = get(f, "Metadata");
            assert_eq!(str_of(get(meta, "BuildMethod")), "rust-cargolambda");
            str_of(get(get(meta, "BuildProperties"), "Binary")).to_string()
        })
        .collect();
    let want: BTreeSet<String> = Function::ALL.iter().map(|f| f.name().to_string()).collect();
    assert_eq!(binaries, want);
    for name in &want {
        let manifest = format!("{}/../{name}/Cargo.toml", env!("CARGO_MANIFEST_DIR"));
        assert!(std::path::Path::new(&manifest).exists(), "functions/{name} is a crate");
    }
    let globals = get(get(&t, "Globals"), "Function");
    assert_eq!(str_of(get(globals, "Runtime")), "provided.al2023");
    assert_eq!(
        get(globals, "Architectures")
            .as_sequence()
            .map(|a| str_of(&a[0]).to_string()),
        Some("arm64".into())
    );
    let by_binary = |b: &str| {
        functions
            .values()
            .find(|f| str_of(get(get(get(f, "Metadata"), "BuildProperties"), "Binary")) == b)
            .map(|f| get(f, "Properties").clone())
            .expect("function present")
    };
    let consolidation = by_binary("consolidation");
    assert_eq!(get(&consolidation, "ReservedConcurrentExecutions").as_u64(), Some(1));
    // The spot handler must finish inside the 2-minute notice.
    let spot = by_binary("spot-interruption");
    assert!(get(&spot, "Timeout").as_u64().is_some_and(|t| t < 120));
}
