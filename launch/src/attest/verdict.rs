//! A verdict: every check by name, with pass/fail/skip and the reason.

use std::fmt;

/// Outcome of one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// The evidence meets the expectation.
    Pass,
    /// It does not: the verdict fails.
    Fail,
    /// Not asked for (no expectation given) or not applicable to this evidence.
    Skip,
}

/// One named check.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Check {
    /// Stable name (`report_signature`, `measurement`, ...), used by scripts and tests.
    pub name: &'static str,
    /// Outcome.
    pub status: Status,
    /// What was compared or why it failed.
    pub detail: String,
}

/// All checks of one piece of evidence.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Verdict {
    /// What was verified ("SEV-SNP report v2", "TDX quote v4").
    pub evidence: String,
    /// True when no check failed.
    pub passed: bool,
    /// The checks in the order run.
    pub checks: Vec<Check>,
    /// Facts read from the evidence (name, value), for the human and the JSON output (an object).
    #[serde(serialize_with = "facts_as_object")]
    pub facts: Vec<(String, String)>,
}

fn facts_as_object<S: serde::Serializer>(
    facts: &[(String, String)],
    s: S,
) -> Result<S::Ok, S::Error> {
    use serde::ser::SerializeMap;
    let mut m = s.serialize_map(Some(facts.len()))?;
    for (k, v) in facts {
        m.serialize_entry(k, v)?;
    }
    m.end()
}

impl Verdict {
    /// An empty verdict for `evidence`.
    pub fn new(evidence: impl Into<String>) -> Self {
        Verdict {
            evidence: evidence.into(),
            passed: true,
            checks: Vec::new(),
            facts: Vec::new(),
        }
    }

    /// Records a check.
    pub fn push(&mut self, name: &'static str, status: Status, detail: impl Into<String>) {
        if status == Status::Fail {
            self.passed = false;
        }
        self.checks.push(Check {
            name,
            status,
            detail: detail.into(),
        });
    }

    /// Records a pass or a fail.
    pub fn check(&mut self, name: &'static str, ok: bool, detail: impl Into<String>) {
        let status = if ok { Status::Pass } else { Status::Fail };
        self.push(name, status, detail);
    }

    /// Records a fact.
    pub fn fact(&mut self, name: &str, value: impl Into<String>) {
        self.facts.push((name.to_string(), value.into()));
    }

    /// The check called `name`, if run.
    pub fn get(&self, name: &str) -> Option<&Check> {
        self.checks.iter().find(|c| c.name == name)
    }

    /// Names of the failed checks.
    pub fn failed(&self) -> Vec<&'static str> {
        self.checks
            .iter()
            .filter(|c| c.status == Status::Fail)
            .map(|c| c.name)
            .collect()
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let word = if self.passed { "PASS" } else { "FAIL" };
        writeln!(f, "{}: {word}", self.evidence)?;
        for (name, value) in &self.facts {
            writeln!(f, "  {name}: {value}")?;
        }
        for c in &self.checks {
            let s = match c.status {
                Status::Pass => "pass",
                Status::Fail => "FAIL",
                Status::Skip => "skip",
            };
            writeln!(f, "  [{s}] {}: {}", c.name, c.detail)?;
        }
        if !self.passed {
            writeln!(f, "failed checks: {}", self.failed().join(", "))?;
        }
        Ok(())
    }
}
