//! Faults injected on demand: what a call suffers ([`Fault`]), which calls and how
//! many ([`FaultRule`]), and the list the stand-in takes them from, first match first.

use std::time::Duration;

/// A failure to inject into API calls.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// No fault; `set_fault(Fault::None)` clears every rule.
    None,
    /// Answer with this HTTP status (body `{"ok":false,...}`); 429 also sends
    /// `Retry-After` and counts as an announced wait.
    Status(u16),
    /// Wait this long, then handle the call normally. The call takes effect even if
    /// the client gave up waiting (as with a slow Slack).
    Slow(Duration),
    /// Close the connection without answering; the call has no effect.
    Drop,
    /// Answer HTTP 200 `{"ok":false,"error":CODE}`; the call has no effect.
    ApiError(String),
}

impl Fault {
    /// `Fault::ApiError(code)`.
    pub fn api_error(code: impl Into<String>) -> Fault {
        Fault::ApiError(code.into())
    }
    /// Applies this fault only to calls of one API method, e.g. `"chat.update"`.
    pub fn on(self, method: impl Into<String>) -> FaultRule {
        FaultRule::from(self).on(method)
    }
    /// Applies this fault only to the next `n` (matching) calls.
    pub fn times(self, n: u32) -> FaultRule {
        FaultRule::from(self).times(n)
    }
}

/// A [`Fault`] with a scope: which API method it hits (all by default) and for how
/// many calls (forever by default). Build it with [`Fault::on`] / [`Fault::times`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FaultRule {
    /// What happens to a matching call.
    pub fault: Fault,
    /// Only calls of this method match; `None`: every API method.
    pub method: Option<String>,
    /// How many more calls this rule hits; `None`: until replaced.
    pub remaining: Option<u32>,
}

impl FaultRule {
    /// Restricts the rule to one API method.
    pub fn on(mut self, method: impl Into<String>) -> FaultRule {
        self.method = Some(method.into());
        self
    }
    /// Restricts the rule to the next `n` matching calls.
    pub fn times(mut self, n: u32) -> FaultRule {
        self.remaining = Some(n);
        self
    }
    fn matches(&self, method: &str) -> bool {
        self.method.as_deref().is_none_or(|m| m == method) && self.remaining != Some(0)
    }
}

impl From<Fault> for FaultRule {
    fn from(fault: Fault) -> Self {
        FaultRule {
            fault,
            method: None,
            remaining: None,
        }
    }
}

/// The rules in force, in the order they were added.
#[derive(Debug, Default)]
pub(super) struct Faults {
    rules: Vec<FaultRule>,
}

impl Faults {
    /// Replaces every rule with `rule` (none if it is `Fault::None`).
    pub fn set(&mut self, rule: FaultRule) {
        self.rules.clear();
        self.add(rule);
    }

    /// Adds a rule after the others (`Fault::None` adds nothing).
    pub fn add(&mut self, rule: FaultRule) {
        if rule.fault != Fault::None {
            self.rules.push(rule);
        }
    }

    /// Takes the first rule matching `method`, counting it down; a rule with no calls
    /// left is gone.
    pub fn take(&mut self, method: &str) -> Option<Fault> {
        let i = self.rules.iter().position(|r| r.matches(method))?;
        let rule = &mut self.rules[i];
        let fault = rule.fault.clone();
        if let Some(n) = rule.remaining.as_mut() {
            *n -= 1;
            if *n == 0 {
                self.rules.remove(i);
            }
        }
        Some(fault)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_matching_rule_applies_and_counts_down() {
        let mut faults = Faults::default();
        faults.set(Fault::Status(500).on("auth.test").times(1));
        faults.add(Fault::Drop.into());
        assert_eq!(faults.take("chat.update"), Some(Fault::Drop));
        assert_eq!(faults.take("auth.test"), Some(Fault::Status(500)));
        assert_eq!(
            faults.take("auth.test"),
            Some(Fault::Drop),
            "the first rule is used up"
        );
        faults.set(Fault::None.into());
        assert_eq!(faults.take("auth.test"), None);
    }
}
