//! Authorization of a video push (seed step 2): may the caller push, may the callee receive a
//! push?
//!
//! The library takes any [`AuthorizationPolicy`]; [`AllowAll`] trusts the controlling server,
//! and [`RulePolicy`] holds allow/deny lists of MCVideo ID patterns with `*` wildcards (the
//! sidecar loads one from its policy file).

/// Decides who may push and who may receive a push. A refusal carries a human-readable reason.
pub trait AuthorizationPolicy: Send + Sync + core::fmt::Debug {
    /// May `caller` start a one-to-one video push?
    fn may_push(&self, caller: &str) -> Result<(), String>;
    /// May `callee` receive a one-to-one video push?
    fn may_receive_push(&self, callee: &str) -> Result<(), String>;
}

/// Trusts the controlling server: everyone may push and receive.
#[derive(Debug, Clone, Copy, Default)]
pub struct AllowAll;

impl AuthorizationPolicy for AllowAll {
    fn may_push(&self, _caller: &str) -> Result<(), String> {
        Ok(())
    }
    fn may_receive_push(&self, _callee: &str) -> Result<(), String> {
        Ok(())
    }
}

/// Allow and deny lists of patterns (`*` matches any run of characters, e.g.
/// `sip:*@police.example`). Deny wins over allow; an ID that matches no allow pattern is refused.
/// The sidecar reads one from its policy file (`PolicyFile`, the same type).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[cfg_attr(
    feature = "sidecar",
    derive(serde::Deserialize),
    serde(default, deny_unknown_fields)
)]
pub struct RulePolicy {
    /// Who may push.
    pub push_allow: Vec<String>,
    /// Who may never push.
    pub push_deny: Vec<String>,
    /// Who may receive a push.
    pub receive_allow: Vec<String>,
    /// Who may never receive a push.
    pub receive_deny: Vec<String>,
}

fn check(id: &str, allow: &[String], deny: &[String], what: &str) -> Result<(), String> {
    if let Some(p) = deny.iter().find(|p| wildcard_match(p, id)) {
        return Err(format!("{id} is denied to {what} by rule `{p}`"));
    }
    if allow.iter().any(|p| wildcard_match(p, id)) {
        Ok(())
    } else {
        Err(format!("{id} matches no rule allowing it to {what}"))
    }
}

impl AuthorizationPolicy for RulePolicy {
    fn may_push(&self, caller: &str) -> Result<(), String> {
        check(caller, &self.push_allow, &self.push_deny, "push video")
    }
    fn may_receive_push(&self, callee: &str) -> Result<(), String> {
        check(
            callee,
            &self.receive_allow,
            &self.receive_deny,
            "receive a video push",
        )
    }
}

/// Glob match with `*` only, linear time (greedy with one backtrack point).
pub fn wildcard_match(pattern: &str, text: &str) -> bool {
    let (p, t) = (pattern.as_bytes(), text.as_bytes());
    let (mut pi, mut ti) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        match p.get(pi) {
            Some(b'*') => {
                star = Some((pi, ti));
                pi += 1;
            }
            Some(c) if Some(c) == t.get(ti) => {
                pi += 1;
                ti += 1;
            }
            _ => match star {
                Some((sp, st)) => {
                    pi = sp + 1;
                    ti = st + 1;
                    star = Some((sp, st + 1));
                }
                None => return false,
            },
        }
    }
    p.get(pi..)
        .is_some_and(|rest| rest.iter().all(|&c| c == b'*'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards() {
        assert!(wildcard_match("*", ""));
        assert!(wildcard_match("*", "sip:a@b"));
        assert!(wildcard_match(
            "sip:*@police.example",
            "sip:alice@police.example"
        ));
        assert!(!wildcard_match(
            "sip:*@police.example",
            "sip:alice@fire.example"
        ));
        assert!(wildcard_match("sip:a*c*e", "sip:abcde"));
        assert!(!wildcard_match("sip:a*c*e", "sip:abcdf"));
        assert!(wildcard_match("exact", "exact"));
        assert!(!wildcard_match("exact", "exactly"));
        assert!(!wildcard_match("", "x"));
        // Pathological pattern stays fast.
        let long = "a".repeat(10_000);
        assert!(!wildcard_match("*a*a*a*a*a*b", &long));
    }

    #[test]
    fn deny_wins_and_unlisted_is_refused() {
        let p = RulePolicy {
            push_allow: vec!["sip:*@police.example".into()],
            push_deny: vec!["sip:cadet*@police.example".into()],
            receive_allow: vec!["*".into()],
            receive_deny: vec![],
        };
        assert!(p.may_push("sip:alice@police.example").is_ok());
        let e = p.may_push("sip:cadet7@police.example").unwrap_err();
        assert!(e.contains("denied"), "{e}");
        assert!(p.may_push("sip:bob@fire.example").is_err());
        assert!(p.may_receive_push("sip:anyone").is_ok());
        assert!(AllowAll.may_push("x").is_ok());
    }
}
