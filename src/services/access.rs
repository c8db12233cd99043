//! What a request's credential may do. A session (a person signed in) may do anything its user
//! may; an API key only what its scopes allow, and never manage keys or the account. Every
//! check goes through [`Access::require`].

use sea_orm::ConnectionTrait;
use uuid::Uuid;

use crate::error::{AppError, AppResult};

/// A scope of an API key. Every key may read (queries, subscriptions); `Generate` also starts
/// and steers builds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scope {
    Read,
    Generate,
}

impl Scope {
    pub const ALL: [Scope; 2] = [Scope::Read, Scope::Generate];

    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Read => "READ",
            Scope::Generate => "GENERATE",
        }
    }

    fn bit(self) -> u8 {
        match self {
            Scope::Read => 1,
            Scope::Generate => 2,
        }
    }
}

/// The scopes of one key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ScopeSet(u8);

impl ScopeSet {
    pub fn contains(self, scope: Scope) -> bool {
        self.0 & scope.bit() != 0
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The scopes in a fixed order.
    pub fn scopes(self) -> Vec<Scope> {
        Scope::ALL
            .into_iter()
            .filter(|scope| self.contains(*scope))
            .collect()
    }

    /// How the set is stored: `READ,GENERATE`.
    pub fn to_stored(self) -> String {
        self.scopes()
            .iter()
            .map(|scope| scope.as_str())
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Reads a stored set; unknown names (none are ever written) grant nothing.
    pub fn from_stored(stored: &str) -> Self {
        stored
            .split(',')
            .filter_map(|name| Scope::ALL.into_iter().find(|s| s.as_str() == name))
            .collect()
    }
}

impl FromIterator<Scope> for ScopeSet {
    fn from_iter<I: IntoIterator<Item = Scope>>(scopes: I) -> Self {
        Self(scopes.into_iter().fold(0, |bits, scope| bits | scope.bit()))
    }
}

/// What an operation needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Permission {
    /// Queries and subscriptions: any credential.
    Read,
    /// Starting, steering and undoing builds: sessions and `GENERATE` keys.
    Generate,
    /// Everything else (keys, the account, signing out, renaming and deleting projects):
    /// sessions only.
    Account,
}

/// What the credential of a request may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// A session token (built-in or of the identity provider): all scopes.
    Session,
    ApiKey(ScopeSet),
}

impl Access {
    /// FORBIDDEN when the credential may not do what `needed` names.
    pub fn require(self, needed: Permission) -> AppResult<()> {
        let allowed = match (self, needed) {
            (Access::Session, _) | (Access::ApiKey(_), Permission::Read) => true,
            (Access::ApiKey(scopes), Permission::Generate) => scopes.contains(Scope::Generate),
            (Access::ApiKey(_), Permission::Account) => false,
        };
        if allowed {
            return Ok(());
        }
        Err(AppError::Forbidden(match needed {
            Permission::Generate => "this API key lacks the GENERATE scope".to_owned(),
            _ => "API keys cannot do this; sign in".to_owned(),
        }))
    }
}

/// A credential that can be revoked before it expires: what closes its sockets and streams.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Credential {
    /// A built-in token's session (its `sid`).
    Session(Uuid),
    ApiKey(Uuid),
}

/// Whether a session or API key still works (not revoked, not expired).
pub async fn is_credential_live(
    db: &impl ConnectionTrait,
    credential: Credential,
) -> AppResult<bool> {
    match credential {
        Credential::Session(id) => super::session::is_live(db, id).await,
        Credential::ApiKey(id) => super::api_key::is_key_live(db, id).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_may_do_anything_keys_only_their_scopes() {
        let read: ScopeSet = [Scope::Read].into_iter().collect();
        let generate: ScopeSet = [Scope::Generate].into_iter().collect();
        for needed in [Permission::Read, Permission::Generate, Permission::Account] {
            assert!(Access::Session.require(needed).is_ok());
        }
        assert!(Access::ApiKey(read).require(Permission::Read).is_ok());
        assert!(Access::ApiKey(generate).require(Permission::Read).is_ok());
        assert!(Access::ApiKey(generate)
            .require(Permission::Generate)
            .is_ok());
        assert!(matches!(
            Access::ApiKey(read).require(Permission::Generate),
            Err(AppError::Forbidden(_))
        ));
        let all: ScopeSet = Scope::ALL.into_iter().collect();
        assert!(matches!(
            Access::ApiKey(all).require(Permission::Account),
            Err(AppError::Forbidden(_))
        ));
    }

    #[test]
    fn scope_sets_round_trip_through_storage() {
        let all: ScopeSet = Scope::ALL.into_iter().collect();
        assert_eq!(all.to_stored(), "READ,GENERATE");
        assert_eq!(ScopeSet::from_stored("GENERATE,READ"), all);
        assert_eq!(ScopeSet::from_stored("ADMIN"), ScopeSet::default());
    }
}
