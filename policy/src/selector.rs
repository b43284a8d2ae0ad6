//! Label selectors (`matchLabels` and `matchExpressions`), compiled once and matched
//! against label maps, with the API server's semantics (apimachinery
//! `labels.Selector`): every requirement must hold; `NotIn` and `DoesNotExist` hold for
//! an object without the key; an empty selector selects everything.

use crate::model::Labels;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use std::collections::BTreeSet;
use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Requirement {
    Equals(String, String),
    In(String, BTreeSet<String>),
    NotIn(String, BTreeSet<String>),
    Exists(String),
    DoesNotExist(String),
}

impl Requirement {
    fn holds(&self, labels: &Labels) -> bool {
        match self {
            Requirement::Equals(k, v) => labels.get(k) == Some(v),
            Requirement::In(k, vs) => labels.get(k).is_some_and(|v| vs.contains(v)),
            Requirement::NotIn(k, vs) => labels.get(k).is_none_or(|v| !vs.contains(v)),
            Requirement::Exists(k) => labels.contains_key(k),
            Requirement::DoesNotExist(k) => !labels.contains_key(k),
        }
    }
}

/// A compiled label selector.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Selector {
    requirements: Vec<Requirement>,
}

impl Selector {
    /// Selects everything (`{}`).
    pub fn everything() -> Selector {
        Selector::default()
    }

    /// Compiles an API selector; an unknown operator, or values where the operator takes
    /// none (or none where it needs some), is an error in words.
    pub fn compile(selector: &LabelSelector) -> Result<Selector, String> {
        let mut requirements = Vec::new();
        for (k, v) in selector.match_labels.iter().flatten() {
            requirements.push(Requirement::Equals(k.clone(), v.clone()));
        }
        for expr in selector.match_expressions.iter().flatten() {
            let values: BTreeSet<String> = expr.values.iter().flatten().cloned().collect();
            let key = expr.key.clone();
            let requirement = match expr.operator.as_str() {
                "In" | "NotIn" if values.is_empty() => {
                    return Err(format!(
                        "matchExpressions key {key:?}: operator {} needs at least one value",
                        expr.operator
                    ))
                }
                "Exists" | "DoesNotExist" if !values.is_empty() => {
                    return Err(format!(
                        "matchExpressions key {key:?}: operator {} takes no values",
                        expr.operator
                    ))
                }
                "In" => Requirement::In(key, values),
                "NotIn" => Requirement::NotIn(key, values),
                "Exists" => Requirement::Exists(key),
                "DoesNotExist" => Requirement::DoesNotExist(key),
                other => {
                    return Err(format!(
                        "matchExpressions key {key:?}: unknown operator {other:?} \
                         (In, NotIn, Exists, DoesNotExist)"
                    ))
                }
            };
            requirements.push(requirement);
        }
        Ok(Selector { requirements })
    }

    pub fn matches(&self, labels: &Labels) -> bool {
        self.requirements.iter().all(|r| r.holds(labels))
    }

    pub fn is_everything(&self) -> bool {
        self.requirements.is_empty()
    }
}

/// kubectl's spelling: `app=web,tier in (a,b),!legacy`; `{}` for everything.
impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.requirements.is_empty() {
            return f.write_str("{}");
        }
        let join = |vs: &BTreeSet<String>| vs.iter().cloned().collect::<Vec<_>>().join(",");
        let parts: Vec<String> = self
            .requirements
            .iter()
            .map(|r| match r {
                Requirement::Equals(k, v) => format!("{k}={v}"),
                Requirement::In(k, vs) => format!("{k} in ({})", join(vs)),
                Requirement::NotIn(k, vs) => format!("{k} notin ({})", join(vs)),
                Requirement::Exists(k) => k.clone(),
                Requirement::DoesNotExist(k) => format!("!{k}"),
            })
            .collect();
        f.write_str(&parts.join(","))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn expr(key: &str, op: &str, values: &[&str]) -> LabelSelectorRequirement {
        LabelSelectorRequirement {
            key: key.into(),
            operator: op.into(),
            values: (!values.is_empty()).then(|| values.iter().map(|v| v.to_string()).collect()),
        }
    }

    fn selector(exprs: Vec<LabelSelectorRequirement>) -> Selector {
        Selector::compile(&LabelSelector {
            match_expressions: Some(exprs),
            match_labels: None,
        })
        .unwrap()
    }

    #[test]
    fn empty_selector_selects_everything() {
        let s = Selector::compile(&LabelSelector::default()).unwrap();
        assert!(s.is_everything());
        assert!(s.matches(&labels(&[])));
        assert!(s.matches(&labels(&[("a", "b")])));
    }

    #[test]
    fn match_labels_and_expressions_must_all_hold() {
        let s = Selector::compile(&LabelSelector {
            match_labels: Some([("pod".to_string(), "a".to_string())].into()),
            match_expressions: Some(vec![expr("tier", "In", &["web", "db"])]),
        })
        .unwrap();
        assert!(s.matches(&labels(&[("pod", "a"), ("tier", "web")])));
        assert!(!s.matches(&labels(&[("pod", "a"), ("tier", "cache")])));
        assert!(!s.matches(&labels(&[("pod", "b"), ("tier", "web")])));
        assert!(!s.matches(&labels(&[("pod", "a")])));
    }

    #[test]
    fn not_in_and_does_not_exist_hold_without_the_key() {
        let s = selector(vec![expr("pod", "NotIn", &["a"])]);
        assert!(s.matches(&labels(&[])));
        assert!(s.matches(&labels(&[("pod", "b")])));
        assert!(!s.matches(&labels(&[("pod", "a")])));
        let s = selector(vec![expr("pod", "DoesNotExist", &[])]);
        assert!(s.matches(&labels(&[("x", "y")])));
        assert!(!s.matches(&labels(&[("pod", "")])));
        let s = selector(vec![expr("pod", "Exists", &[])]);
        assert!(s.matches(&labels(&[("pod", "")])));
        assert!(!s.matches(&labels(&[])));
    }

    #[test]
    fn bad_expressions_are_errors_in_words() {
        let bad = |e: LabelSelectorRequirement| {
            Selector::compile(&LabelSelector {
                match_expressions: Some(vec![e]),
                match_labels: None,
            })
            .unwrap_err()
        };
        assert!(bad(expr("pod", "Equals", &["a"])).contains("unknown operator \"Equals\""));
        assert!(bad(expr("pod", "In", &[])).contains("needs at least one value"));
        assert!(bad(expr("pod", "Exists", &["a"])).contains("takes no values"));
    }

    #[test]
    fn displays_as_kubectl_writes_selectors() {
        let s = Selector::compile(&LabelSelector {
            match_labels: Some([("app".to_string(), "web".to_string())].into()),
            match_expressions: Some(vec![
                expr("tier", "In", &["b", "a"]),
                expr("legacy", "DoesNotExist", &[]),
            ]),
        })
        .unwrap();
        assert_eq!(s.to_string(), "app=web,tier in (a,b),!legacy");
    }
}
