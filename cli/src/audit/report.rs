//! What the audit found, and how `ovation audit` prints it.

/// What the audit found: each check passed, each violation, and notes that judge nothing.
#[derive(Debug, Default)]
pub struct Report {
    pub checks: Vec<String>,
    pub violations: Vec<String>,
    pub notes: Vec<String>,
}

impl Report {
    /// Records `what` as passed if `ok`, else the violation.
    pub fn check(&mut self, ok: bool, what: String, violation: impl FnOnce() -> String) {
        if ok {
            self.checks.push(what);
        } else {
            self.violations.push(violation());
        }
    }

    pub fn is_clean(&self) -> bool {
        self.violations.is_empty()
    }

    /// Prints the checks, then the notes, then the violations, then the verdict.
    pub fn print(&self) {
        for c in &self.checks {
            println!("ok    {c}");
        }
        for n in &self.notes {
            println!("note  {n}");
        }
        for v in &self.violations {
            println!("FAIL  {v}");
        }
        if self.is_clean() {
            println!("audit: no violation");
        } else {
            println!("audit: {} violations", self.violations.len());
        }
    }
}
