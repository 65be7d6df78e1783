//! Node selector requirements (`key`, `operator`, `values`, `minValues`) and their evaluation
//! against label values.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// Kubernetes and Karpenter node selector operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Operator {
    In,
    NotIn,
    Exists,
    DoesNotExist,
    Gt,
    Lt,
    Gte,
    Lte,
}

impl Operator {
    pub fn parse(s: &str) -> Option<Operator> {
        Some(match s {
            "In" => Operator::In,
            "NotIn" => Operator::NotIn,
            "Exists" => Operator::Exists,
            "DoesNotExist" => Operator::DoesNotExist,
            "Gt" => Operator::Gt,
            "Lt" => Operator::Lt,
            "Gte" => Operator::Gte,
            "Lte" => Operator::Lte,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Operator::In => "In",
            Operator::NotIn => "NotIn",
            Operator::Exists => "Exists",
            Operator::DoesNotExist => "DoesNotExist",
            Operator::Gt => "Gt",
            Operator::Lt => "Lt",
            Operator::Gte => "Gte",
            Operator::Lte => "Lte",
        }
    }

    fn is_numeric(self) -> bool {
        matches!(self, Operator::Gt | Operator::Lt | Operator::Gte | Operator::Lte)
    }
}

/// One requirement on a label.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Requirement {
    pub key: String,
    pub operator: Operator,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub values: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_values: Option<u32>,
}

impl Requirement {
    pub fn new(key: &str, operator: Operator, values: &[&str]) -> Self {
        Requirement {
            key: key.to_string(),
            operator,
            values: values.iter().map(|v| v.to_string()).collect(),
            min_values: None,
        }
    }

    /// Checks the operator/values combination; `path` prefixes the error.
    pub fn validate(&self, path: &str) -> Result<()> {
        let bad = |reason: String| Err(Error::invalid(path, reason));
        match self.operator {
            Operator::In | Operator::NotIn if self.values.is_empty() && self.operator == Operator::In => {
                bad("operator In needs at least one value".into())
            }
            Operator::Exists | Operator::DoesNotExist if !self.values.is_empty() => {
                bad(format!("operator {} takes no values", self.operator.as_str()))
            }
            op if op.is_numeric() => {
                if self.values.len() != 1 {
                    return bad(format!("operator {} takes exactly one value", op.as_str()));
                }
                if self.values[0].parse::<i64>().is_err() {
                    return bad(format!(
                        "operator {} needs an integer value, got {:?}",
                        op.as_str(),
                        self.values[0]
                    ));
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }

    /// Whether a label value (None: the label is absent) satisfies the requirement.
    #[inline]
    pub fn matches(&self, value: Option<&str>) -> bool {
        match self.operator {
            Operator::In => value.is_some_and(|v| self.values.iter().any(|x| x == v)),
            Operator::NotIn => value.is_none_or(|v| !self.values.iter().any(|x| x == v)),
            Operator::Exists => value.is_some(),
            Operator::DoesNotExist => value.is_none(),
            Operator::Gt | Operator::Lt | Operator::Gte | Operator::Lte => {
                let (Some(v), Some(bound)) = (
                    value.and_then(|v| v.parse::<i64>().ok()),
                    self.values.first().and_then(|b| b.parse::<i64>().ok()),
                ) else {
                    return false;
                };
                match self.operator {
                    Operator::Gt => v > bound,
                    Operator::Lt => v < bound,
                    Operator::Gte => v >= bound,
                    _ => v <= bound,
                }
            }
        }
    }
}

impl fmt::Display for Requirement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.key, self.operator.as_str())?;
        if !self.values.is_empty() {
            write!(f, " [{}]", self.values.join(","))?;
        }
        if let Some(m) = self.min_values {
            write!(f, " minValues={m}")?;
        }
        Ok(())
    }
}

/// Where label values come from during evaluation.
pub trait LabelSource {
    fn label(&self, key: &str) -> Option<&str>;
}

impl LabelSource for BTreeMap<String, String> {
    fn label(&self, key: &str) -> Option<&str> {
        self.get(key).map(String::as_str)
    }
}

/// Two label sources layered: the first wins.
pub struct Layered<'a, A: ?Sized, B: ?Sized>(pub &'a A, pub &'a B);

impl<A: LabelSource + ?Sized, B: LabelSource + ?Sized> LabelSource for Layered<'_, A, B> {
    fn label(&self, key: &str) -> Option<&str> {
        self.0.label(key).or_else(|| self.1.label(key))
    }
}

/// All requirements hold (an ANDed list).
pub fn all_match(reqs: &[Requirement], labels: &(impl LabelSource + ?Sized)) -> bool {
    reqs.iter().all(|r| r.matches(labels.label(&r.key)))
}

/// The first requirement that fails, for explanations.
pub fn first_mismatch<'r>(reqs: &'r [Requirement], labels: &(impl LabelSource + ?Sized)) -> Option<&'r Requirement> {
    reqs.iter().find(|r| !r.matches(labels.label(&r.key)))
}

/// Whether two ANDed requirement lists can both hold for some value of every shared key.
///
/// Used to decide early whether a pod's requirement on a key that is not an instance-type property
/// (zone, capacity type, custom pool labels) can be met by a pool.
pub fn values_allowed(reqs: &[Requirement], key: &str, candidates: &[String]) -> Vec<String> {
    candidates
        .iter()
        .filter(|v| reqs.iter().filter(|r| r.key == key).all(|r| r.matches(Some(v))))
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operators() {
        let r = |op, vals: &[&str]| Requirement::new("k", op, vals);
        assert!(r(Operator::In, &["a", "b"]).matches(Some("b")));
        assert!(!r(Operator::In, &["a"]).matches(None));
        assert!(r(Operator::NotIn, &["a"]).matches(None));
        assert!(!r(Operator::NotIn, &["a"]).matches(Some("a")));
        assert!(r(Operator::Exists, &[]).matches(Some("")));
        assert!(r(Operator::DoesNotExist, &[]).matches(None));
        assert!(r(Operator::Gt, &["4"]).matches(Some("8")));
        assert!(!r(Operator::Gt, &["4"]).matches(Some("4")));
        assert!(r(Operator::Gte, &["4"]).matches(Some("4")));
        assert!(r(Operator::Lt, &["4"]).matches(Some("2")));
        assert!(r(Operator::Lte, &["4"]).matches(Some("4")));
        assert!(
            !r(Operator::Lt, &["4"]).matches(Some("x")),
            "non-numeric never matches Gt/Lt"
        );
        assert!(!r(Operator::Lt, &["4"]).matches(None));
    }

    #[test]
    fn validation_names_the_problem() {
        let e = Requirement::new("k", Operator::Gt, &["x"])
            .validate("spec.requirements[0]")
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "spec.requirements[0]: operator Gt needs an integer value, got \"x\""
        );
        assert!(Requirement::new("k", Operator::In, &[]).validate("p").is_err());
        assert!(Requirement::new("k", Operator::Exists, &["a"]).validate("p").is_err());
        assert!(Requirement::new("k", Operator::NotIn, &[]).validate("p").is_ok());
    }
}
