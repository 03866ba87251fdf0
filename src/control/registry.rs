//! The registry of users' UEs (seed step 4): which UE(s) a private call is delivered to, and the
//! called client's commencement mode setting.
//!
//! A user may be authorized on several UEs (TS 23.281 §7.13). When one of them is designated for
//! private calls, the call goes only to it; otherwise to every registered UE. Designating a UE
//! clears the designation of the user's other UEs (the latest designation wins).

use super::CommencementMode;
use std::collections::HashMap;

/// UEs one user may register at most.
pub const MAX_UES_PER_USER: usize = 32;
/// Longest MCVideo ID or UE ID accepted (an ID travels in 8-bit-length fields).
pub const MAX_ID_LEN: usize = 255;

/// One registered UE.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UeEntry {
    /// The UE's identifier.
    pub ue_id: String,
    /// Designated for private calls.
    pub designated_for_private_calls: bool,
    /// The called client's commencement mode setting on this UE.
    pub commencement_mode: Option<CommencementMode>,
}

/// Why a registration was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RegistryError {
    /// An ID is empty or longer than [`MAX_ID_LEN`].
    BadId(&'static str),
    /// The user already has [`MAX_UES_PER_USER`] UEs.
    TooManyUes,
}

impl core::fmt::Display for RegistryError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            RegistryError::BadId(which) => {
                write!(f, "{which} must be 1 to {MAX_ID_LEN} octets long")
            }
            RegistryError::TooManyUes => {
                write!(f, "a user may register at most {MAX_UES_PER_USER} UEs")
            }
        }
    }
}

impl std::error::Error for RegistryError {}

/// Where a call goes.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Delivery {
    /// The UEs to deliver the call to (empty when the user registered none).
    pub ue_ids: Vec<String>,
    /// The called client's commencement mode setting, if the registry knows one.
    pub commencement_mode: Option<CommencementMode>,
}

/// Users' UEs.
#[derive(Debug, Clone, Default)]
pub struct UeRegistry {
    users: HashMap<String, Vec<UeEntry>>,
}

fn valid_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= MAX_ID_LEN
}

impl UeRegistry {
    /// Registers or updates `ue` for `user`. Returns `true` when the UE is new.
    pub fn register(&mut self, user: &str, ue: UeEntry) -> Result<bool, RegistryError> {
        if !valid_id(user) {
            return Err(RegistryError::BadId("mcvideo_id"));
        }
        if !valid_id(&ue.ue_id) {
            return Err(RegistryError::BadId("ue_id"));
        }
        let ues = self.users.entry(user.to_owned()).or_default();
        let existing = ues.iter().position(|u| u.ue_id == ue.ue_id);
        if existing.is_none() && ues.len() >= MAX_UES_PER_USER {
            return Err(RegistryError::TooManyUes);
        }
        if ue.designated_for_private_calls {
            for u in ues.iter_mut() {
                u.designated_for_private_calls = false;
            }
        }
        Ok(match existing.and_then(|i| ues.get_mut(i)) {
            Some(slot) => {
                *slot = ue;
                false
            }
            None => {
                ues.push(ue);
                true
            }
        })
    }

    /// Removes a UE. Returns whether it was registered.
    pub fn unregister(&mut self, user: &str, ue_id: &str) -> bool {
        let Some(ues) = self.users.get_mut(user) else {
            return false;
        };
        let before = ues.len();
        ues.retain(|u| u.ue_id != ue_id);
        let removed = ues.len() != before;
        if ues.is_empty() {
            self.users.remove(user);
        }
        removed
    }

    /// The UEs of `user`, in registration order.
    pub fn ues(&self, user: &str) -> &[UeEntry] {
        self.users.get(user).map_or(&[], Vec::as_slice)
    }

    /// Number of users with at least one UE.
    pub fn user_count(&self) -> usize {
        self.users.len()
    }

    /// Where a private call to `user` goes: the designated UE if there is one, else all UEs.
    /// The commencement mode setting comes from the designated UE, else from the first UE
    /// that has one.
    pub fn delivery(&self, user: &str) -> Delivery {
        let ues = self.ues(user);
        if let Some(d) = ues.iter().find(|u| u.designated_for_private_calls) {
            return Delivery {
                ue_ids: vec![d.ue_id.clone()],
                commencement_mode: d.commencement_mode,
            };
        }
        Delivery {
            ue_ids: ues.iter().map(|u| u.ue_id.clone()).collect(),
            commencement_mode: ues.iter().find_map(|u| u.commencement_mode),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ue(id: &str, designated: bool, mode: Option<CommencementMode>) -> UeEntry {
        UeEntry {
            ue_id: id.into(),
            designated_for_private_calls: designated,
            commencement_mode: mode,
        }
    }

    #[test]
    fn latest_designation_wins_and_limits_hold() {
        let mut r = UeRegistry::default();
        assert!(r.register("bob", ue("phone", true, None)).unwrap());
        assert!(r
            .register("bob", ue("tablet", true, Some(CommencementMode::Automatic)))
            .unwrap());
        assert_eq!(r.delivery("bob").ue_ids, ["tablet"]);
        assert!(!r.ues("bob")[0].designated_for_private_calls);
        assert!(!r.register("bob", ue("tablet", false, None)).unwrap());
        assert_eq!(r.delivery("bob").ue_ids, ["phone", "tablet"]);
        assert!(r.unregister("bob", "phone"));
        assert!(!r.unregister("bob", "phone"));
        assert!(r.register("", ue("x", false, None)).is_err());
        assert!(r.register("u", ue(&"x".repeat(256), false, None)).is_err());
        for i in 0..MAX_UES_PER_USER {
            r.register("many", ue(&i.to_string(), false, None)).unwrap();
        }
        assert_eq!(
            r.register("many", ue("one-more", false, None)),
            Err(RegistryError::TooManyUes)
        );
        assert!(r.delivery("nobody").ue_ids.is_empty());
    }
}
