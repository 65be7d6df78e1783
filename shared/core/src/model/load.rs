//! Reading pod and node files: Kubernetes YAML/JSON (multi-document), the compact pod form, and CSV
//! (`name,cpu_milli,memory_mib,num_gpu`, extra columns ignored). Input is text; the caller does I/O.

use serde_json::Value;

use crate::model::k8s::pods_from_workload_value;
use crate::model::{Node, Pod};
use crate::resources::Resource;
use crate::{Error, Result};

/// Inputs larger than this are refused before parsing.
pub const MAX_INPUT_BYTES: usize = 64 << 20;

/// What a pods file holds: pending pods, and daemonset templates (per-node overhead).
#[derive(Debug, Default, Clone)]
pub struct PodFile {
    pub pods: Vec<Pod>,
    pub daemonsets: Vec<Pod>,
}

fn check_size(text: &str, source: &str) -> Result<()> {
    if text.len() > MAX_INPUT_BYTES {
        return Err(Error::Parse {
            source_name: source.into(),
            reason: format!("{} bytes is over the {} byte limit", text.len(), MAX_INPUT_BYTES),
        });
    }
    Ok(())
}

/// Parses a pods file. `source` (usually the file name) prefixes errors and picks CSV by extension.
pub fn load_pods(text: &str, source: &str) -> Result<PodFile> {
    check_size(text, source)?;
    let first_line = text.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
    let mut file = if source.ends_with(".csv") || first_line.trim_start().starts_with("name,") {
        PodFile {
            pods: load_csv(text, source)?,
            daemonsets: Vec::new(),
        }
    } else {
        let mut file = PodFile::default();
        for (i, doc) in documents(text, source)?.into_iter().enumerate() {
            let path = format!("{source}: document {i}");
            collect(&doc, &path, &mut file)?;
        }
        file
    };
    for (i, p) in file.pods.iter_mut().enumerate() {
        p.normalize();
        p.validate(&format!("{source}: pod {i}"))?;
    }
    let mut seen = std::collections::BTreeSet::new();
    for p in &file.pods {
        if !seen.insert(p.uid.as_str()) {
            return Err(Error::Parse {
                source_name: source.into(),
                reason: format!("pod uid {:?} appears twice", p.uid),
            });
        }
    }
    Ok(file)
}

fn collect(v: &Value, path: &str, file: &mut PodFile) -> Result<()> {
    match v {
        Value::Null => Ok(()),
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                collect(item, &format!("{path}[{i}]"), file)?;
            }
            Ok(())
        }
        Value::Object(o) if o.contains_key("kind") => {
            for p in pods_from_workload_value(v, path)? {
                if p.is_daemonset() {
                    file.daemonsets.push(p);
                } else {
                    file.pods.push(p);
                }
            }
            Ok(())
        }
        Value::Object(_) => {
            let p: Pod = serde_json::from_value(v.clone()).map_err(|e| Error::Parse {
                source_name: path.into(),
                reason: format!("not a compact pod: {e}"),
            })?;
            file.pods.push(p);
            Ok(())
        }
        other => Err(Error::Parse {
            source_name: path.into(),
            reason: format!("expected a pod, workload or list, got {}", kind_of(other)),
        }),
    }
}

fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a mapping",
    }
}

/// Splits YAML (or JSON) text into documents as JSON values.
pub fn documents(text: &str, source: &str) -> Result<Vec<Value>> {
    let trimmed = text.trim_start();
    if (trimmed.starts_with('{') || trimmed.starts_with('['))
        && let Ok(v) = serde_json::from_str::<Value>(text)
    {
        return Ok(vec![v]);
    }
    let mut out = Vec::new();
    for (i, de) in serde_norway::Deserializer::from_str(text).enumerate() {
        let v = <Value as serde::Deserialize>::deserialize(de).map_err(|e| Error::Parse {
            source_name: source.into(),
            reason: format!("document {i}: {e}"),
        })?;
        out.push(v);
    }
    Ok(out)
}

#[derive(serde::Deserialize)]
struct CsvRow {
    name: String,
    cpu_milli: String,
    memory_mib: String,
    #[serde(default)]
    num_gpu: Option<String>,
}

fn load_csv(text: &str, source: &str) -> Result<Vec<Pod>> {
    let mut rdr = csv::ReaderBuilder::new().flexible(true).from_reader(text.as_bytes());
    let mut out = Vec::new();
    for (i, row) in rdr.deserialize::<CsvRow>().enumerate() {
        let line = i + 2;
        let row = row.map_err(|e| Error::Parse {
            source_name: format!("{source}:{line}"),
            reason: e.to_string(),
        })?;
        let num = |field: &str, v: &str| -> Result<u64> {
            v.trim().parse::<u64>().map_err(|_| Error::Parse {
                source_name: format!("{source}:{line}"),
                reason: format!("column {field}: {v:?} is not a non-negative integer"),
            })
        };
        let cpu = num("cpu_milli", &row.cpu_milli)?;
        let mem = num("memory_mib", &row.memory_mib)?;
        let gpu = match row.num_gpu.as_deref().map(str::trim) {
            None | Some("") => 0,
            Some(g) => num("num_gpu", g)?,
        };
        if row.name.trim().is_empty() {
            return Err(Error::Parse {
                source_name: format!("{source}:{line}"),
                reason: "column name is empty".into(),
            });
        }
        let mut p = Pod::new(row.name.trim(), cpu, mem << 20);
        p.requests.set(Resource::NvidiaGpu, gpu);
        out.push(p);
    }
    Ok(out)
}

/// Parses an existing-nodes file (YAML or JSON list of nodes in the compact form).
pub fn load_nodes(text: &str, source: &str) -> Result<Vec<Node>> {
    check_size(text, source)?;
    let mut out = Vec::new();
    for (i, doc) in documents(text, source)?.into_iter().enumerate() {
        let items = match doc {
            Value::Null => continue,
            Value::Array(items) => items,
            other => vec![other],
        };
        for (j, item) in items.into_iter().enumerate() {
            let mut n: Node = serde_json::from_value(item).map_err(|e| Error::Parse {
                source_name: format!("{source}: document {i} node {j}"),
                reason: e.to_string(),
            })?;
            for p in &mut n.pods {
                p.normalize();
                p.node_name = Some(n.name.clone());
            }
            out.push(n);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_with_extra_columns() {
        let f = load_pods(
            "name,cpu_milli,memory_mib,num_gpu,gpu_milli\np0,12000,16384,1,1000\np1,500,512,0,0\n",
            "t.csv",
        )
        .unwrap();
        assert_eq!(f.pods.len(), 2);
        assert_eq!(f.pods[0].requests.get(Resource::NvidiaGpu), 1);
        assert_eq!(f.pods[1].requests.memory(), 512 << 20);
    }

    #[test]
    fn csv_errors_name_line_and_column() {
        let e = load_pods("name,cpu_milli,memory_mib\np0,12x,5\n", "t.csv")
            .unwrap_err()
            .to_string();
        assert_eq!(e, "t.csv:2: column cpu_milli: \"12x\" is not a non-negative integer");
        let e = load_pods("name,cpu_milli\np0,1\n", "t.csv").unwrap_err().to_string();
        assert!(e.starts_with("t.csv:2:") && e.contains("memory_mib"), "{e}");
    }

    #[test]
    fn compact_and_k8s_documents_mix() {
        let text = "- name: a\n  requests: {cpu: 250m, memory: 1Gi}\n---\nkind: DaemonSet\nmetadata: {name: ds}\nspec:\n  template:\n    spec:\n      containers: [{name: c, image: x, resources: {requests: {cpu: 100m}}}]\n";
        let f = load_pods(text, "p.yaml").unwrap();
        assert_eq!(f.pods.len(), 1);
        assert_eq!(f.pods[0].uid, "default/a");
        assert_eq!(f.daemonsets.len(), 1);
        let e = load_pods("- name: a\n  requests: {cpu: x}\n", "p.yaml")
            .unwrap_err()
            .to_string();
        assert!(e.contains("\"x\""), "{e}");
        let e = load_pods("- name: a\n  requests: {cpu: 1\n", "p.yaml")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("p.yaml: document 0"), "{e}");
        let e = load_pods("- 5\n", "p.yaml").unwrap_err().to_string();
        assert!(e.contains("got a number"), "{e}");
    }
}
