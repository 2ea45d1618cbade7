//! The value a button carries: which process (host, group, process) and which action,
//! signed with an HMAC-SHA256 whose key only this listener's state database holds. A
//! click whose value was forged, edited, copied from another button or signed by
//! another host's listener is refused before anything runs.

use std::fmt;

use ring::hmac;
use serde::{Deserialize, Serialize};

use super::Action;
use crate::supervisord::event::ThreadKey;

/// Bytes of an HMAC-SHA256 tag.
const SIG_BYTES: usize = 32;

/// A button's value, as it travels: `{"v":1,"h":…,"g":…,"p":…,"a":…,"s":…}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ButtonValue {
    v: u8,
    #[serde(rename = "h")]
    pub host: String,
    #[serde(rename = "g")]
    pub group: String,
    #[serde(rename = "p")]
    pub process: String,
    #[serde(rename = "a")]
    pub action: String,
    #[serde(rename = "s")]
    sig: String,
}

/// Why a value is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ValueError {
    /// Not a value this program writes.
    Malformed(String),
    /// The signature does not match: forged or edited, or signed by another listener.
    BadSignature,
    /// The button's `action_id` is not the action its value was signed for.
    WrongAction { signed: String, clicked: String },
}

impl fmt::Display for ValueError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ValueError::Malformed(why) => write!(f, "the button's value is not one this listener writes ({why})"),
            ValueError::BadSignature => f.write_str("the button's value is not signed by this listener (forged, edited, or from another listener's state)"),
            ValueError::WrongAction { signed, clicked } => write!(f, "the button asks {clicked:?} but its value was signed for {signed:?}"),
        }
    }
}

impl ButtonValue {
    /// Reads a value without checking it (see [`Signer::verify`]); enough to tell
    /// which host a click is about.
    pub fn parse(s: &str) -> Result<ButtonValue, ValueError> {
        let v: ButtonValue =
            serde_json::from_str(s).map_err(|e| ValueError::Malformed(e.to_string()))?;
        if v.v != 1 {
            return Err(ValueError::Malformed(format!("version {}", v.v)));
        }
        Ok(v)
    }

    /// The process it is about.
    pub fn key(&self) -> ThreadKey {
        ThreadKey {
            host: self.host.clone(),
            group: self.group.clone(),
            process: self.process.clone(),
        }
    }
}

/// Signs and checks button values with one key.
#[derive(Clone)]
pub struct Signer {
    key: hmac::Key,
}

impl fmt::Debug for Signer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Signer([key])")
    }
}

impl Signer {
    pub fn new(key: &[u8]) -> Signer {
        Signer {
            key: hmac::Key::new(hmac::HMAC_SHA256, key),
        }
    }

    /// 32 bytes from the system's random source, for a new key.
    pub fn generate_key() -> Result<[u8; 32], ring::error::Unspecified> {
        use ring::rand::SecureRandom;
        let mut key = [0u8; 32];
        ring::rand::SystemRandom::new().fill(&mut key)?;
        Ok(key)
    }

    fn message(key: &ThreadKey, action: &str) -> Vec<u8> {
        // A JSON array: no separator inside a name can shift the fields.
        serde_json::to_vec(&("supervisor-slack/1", &key.host, &key.group, &key.process, action))
            .expect("strings serialise")
    }

    fn sig(&self, key: &ThreadKey, action: &str) -> String {
        hex::encode(hmac::sign(&self.key, &Self::message(key, action)))
    }

    /// The value of `action`'s button on `key`'s cards.
    pub fn value(&self, key: &ThreadKey, action: Action) -> String {
        serde_json::to_string(&ButtonValue {
            v: 1,
            host: key.host.clone(),
            group: key.group.clone(),
            process: key.process.clone(),
            action: action.name().to_string(),
            sig: self.sig(key, action.name()),
        })
        .expect("strings serialise")
    }

    /// Checks that `value` was signed with this key for the action `clicked` (the
    /// button's `action_id`), and returns the action.
    pub fn verify(&self, value: &ButtonValue, clicked: &str) -> Result<Action, ValueError> {
        let bytes = hex::decode(&value.sig)
            .ok()
            .filter(|b| b.len() == SIG_BYTES)
            .ok_or(ValueError::BadSignature)?;
        // In constant time.
        hmac::verify(&self.key, &Self::message(&value.key(), &value.action), &bytes)
            .map_err(|_| ValueError::BadSignature)?;
        if value.action != clicked {
            return Err(ValueError::WrongAction {
                signed: value.action.clone(),
                clicked: clicked.to_string(),
            });
        }
        value
            .action
            .parse()
            .map_err(|e: super::UnknownAction| ValueError::Malformed(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> ThreadKey {
        ThreadKey {
            host: "web-1".into(),
            group: "app".into(),
            process: "worker".into(),
        }
    }

    #[test]
    fn a_signed_value_verifies_and_every_edit_is_refused() {
        let signer = Signer::new(b"0123456789abcdef0123456789abcdef");
        let v = signer.value(&key(), Action::Restart);
        let parsed = ButtonValue::parse(&v).unwrap();
        assert_eq!(parsed.key(), key());
        assert_eq!(signer.verify(&parsed, "restart"), Ok(Action::Restart));
        // Another process, same signature.
        let forged = v.replace("\"worker\"", "\"db\"");
        assert_eq!(
            signer.verify(&ButtonValue::parse(&forged).unwrap(), "restart"),
            Err(ValueError::BadSignature)
        );
        // The Stderr button's value sent with action_id "stop".
        let stderr = ButtonValue::parse(&signer.value(&key(), Action::Stderr)).unwrap();
        assert!(matches!(signer.verify(&stderr, "stop"), Err(ValueError::WrongAction { .. })));
        // Another listener's key.
        let other = Signer::new(b"another key, another host.......");
        assert_eq!(other.verify(&parsed, "restart"), Err(ValueError::BadSignature));
        // Not JSON, or JSON of another shape.
        assert!(matches!(ButtonValue::parse("restart worker"), Err(ValueError::Malformed(_))));
        assert!(matches!(ButtonValue::parse("{\"v\":1}"), Err(ValueError::Malformed(_))));
    }

    #[test]
    fn generated_keys_differ() {
        assert_ne!(Signer::generate_key().unwrap(), Signer::generate_key().unwrap());
    }
}
