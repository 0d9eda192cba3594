//! The principals a worker thread resolved last, with their Cedar entities.
//! Agents and users send many calls with one token, and turning its claims
//! into a Cedar entity (then Cedar's transitive closure over it) was a
//! tenth of a check's CPU. An entry is served only for exactly the inputs
//! it was made from (the claims compared whole, not by hash) and the same
//! identity settings; the principal's entity depends on nothing else (the
//! entity directory is merged later, per check).

use std::cell::RefCell;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::rc::Rc;

use cedar_policy::{Entities, EntityUid};
use serde_json::{Map, Value};

use super::identity::{IdentityError, IdentitySettings, Input};

/// Who is asking, with the entities that describe them.
#[derive(Debug, Clone)]
pub struct Principal {
    pub uid: EntityUid,
    /// The human behind an agent, from a verified JWT only.
    pub on_behalf_of: Option<EntityUid>,
    /// The principal's entity alone (its groups as parents).
    pub entities: Entities,
}

impl Input<'_> {
    fn owned(&self) -> Key {
        match self {
            Input::Claims(c) => Key::Claims((*c).clone()),
            Input::Peer(p) => Key::Peer((*p).to_owned()),
            Input::Header(_, _, h) => Key::Header((*h).to_owned()),
            Input::Anonymous => Key::Anonymous,
        }
    }

    fn is(&self, key: &Key) -> bool {
        match (self, key) {
            (Input::Claims(a), Key::Claims(b)) => *a == b,
            (Input::Peer(a), Key::Peer(b)) | (Input::Header(_, _, a), Key::Header(b)) => *a == b,
            (Input::Anonymous, Key::Anonymous) => true,
            _ => false,
        }
    }

    /// The input's hash, and about how many bytes remembering it takes.
    fn hash(&self) -> (u64, usize) {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        let size = match self {
            Input::Claims(c) => {
                0u8.hash(&mut h);
                hash_object(c, &mut h)
            }
            Input::Peer(p) => {
                (1u8, p).hash(&mut h);
                p.len()
            }
            Input::Header(_, _, v) => {
                (2u8, v).hash(&mut h);
                v.len()
            }
            Input::Anonymous => {
                3u8.hash(&mut h);
                0
            }
        };
        (h.finish(), size)
    }
}

enum Key {
    Claims(Map<String, Value>),
    Peer(String),
    Header(String),
    Anonymous,
}

thread_local! {
    /// Per worker thread, so that checks take no lock.
    static SEEN: RefCell<Seen> = RefCell::new(Seen::default());
}

#[derive(Default)]
struct Seen {
    /// The settings the entries were resolved with.
    settings: Option<IdentitySettings>,
    entries: HashMap<u64, (Key, Rc<Principal>)>,
    /// The inputs' sizes, summed (see [`Input::hash`]).
    bytes: usize,
}

/// Entries kept per worker thread: a claims set is a few hundred bytes.
const KEEP: usize = 256;
/// Input bytes kept per worker thread, so that large valid tokens cannot
/// hold more than a few MB in all (the entities hold about as much again).
const BUDGET: usize = 512 * 1024;
/// An input larger than this is resolved every time, never remembered.
const LARGEST: usize = BUDGET / 32;

impl IdentitySettings {
    /// As [`Self::resolve`], with the principal's entities; the same inputs
    /// again are answered from this thread's memory of them.
    pub fn principal(
        &self,
        claims: Option<&Map<String, Value>>,
        peer_principal: &str,
        headers: &HashMap<String, String>,
    ) -> Result<Principal, IdentityError> {
        let input = self.input(claims, peer_principal, headers);
        let (hash, size) = input.hash();
        let known = SEEN.with_borrow(|seen| {
            let same_settings = seen.settings.as_ref() == Some(self);
            seen.entries
                .get(&hash)
                .filter(|(key, _)| same_settings && input.is(key))
                .map(|(_, p)| Principal::clone(p))
        });
        if let Some(p) = known {
            return Ok(p);
        }
        let identity = self.resolve_input(input)?;
        // INVARIANT: one entity, so no duplicate; no schema, so no schema error.
        let entities = Entities::from_entities([identity.entity], None).map_err(|e| {
            IdentityError::BadClaim {
                claim: "*".into(),
                reason: e.to_string(),
            }
        })?;
        let principal = Principal {
            uid: identity.uid,
            on_behalf_of: identity.on_behalf_of,
            entities,
        };
        if size > LARGEST {
            return Ok(principal);
        }
        SEEN.with_borrow_mut(|seen| {
            if seen.settings.as_ref() != Some(self)
                || seen.entries.len() >= KEEP
                || seen.bytes + size > BUDGET
            {
                seen.entries.clear();
                seen.bytes = 0;
                seen.settings = Some(self.clone());
            }
            seen.bytes += size;
            seen.entries
                .insert(hash, (input.owned(), Rc::new(principal.clone())));
        });
        Ok(principal)
    }
}

/// Each value is counted at [`VALUE`] bytes plus its text.
const VALUE: usize = 32;

/// Hashes `map` and returns about how many bytes a copy of it takes.
fn hash_object(map: &Map<String, Value>, h: &mut impl Hasher) -> usize {
    map.len().hash(h);
    let mut size = VALUE;
    for (k, v) in map {
        k.hash(h);
        size += k.len() + hash_value(v, h);
    }
    size
}

fn hash_value(v: &Value, h: &mut impl Hasher) -> usize {
    match v {
        Value::Null => 0u8.hash(h),
        Value::Bool(b) => (1u8, b).hash(h),
        // serde_json compares numbers by kind, then value.
        Value::Number(n) => match (n.as_u64(), n.as_i64()) {
            (Some(u), _) => (2u8, u).hash(h),
            (None, Some(i)) => (3u8, i).hash(h),
            _ => (4u8, n.as_f64().map(f64::to_bits)).hash(h),
        },
        Value::String(s) => {
            (5u8, s).hash(h);
            return VALUE + s.len();
        }
        Value::Array(items) => {
            (6u8, items.len()).hash(h);
            return VALUE + items.iter().map(|item| hash_value(item, h)).sum::<usize>();
        }
        Value::Object(map) => {
            7u8.hash(h);
            return hash_object(map, h);
        }
    }
    VALUE
}

/// This thread's remembered entries and their counted bytes.
#[cfg(test)]
fn remembered() -> (usize, usize) {
    SEEN.with_borrow(|seen| (seen.entries.len(), seen.bytes))
}

#[cfg(test)]
mod tests;
