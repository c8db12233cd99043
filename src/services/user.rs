//! Users: built-in accounts (email + password) and users provisioned from external tokens.

use chrono::Utc;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, Set, TransactionTrait,
};
use uuid::Uuid;

use super::access::{Access, Credential, ScopeSet};
use super::limit::SignInLimiter;
use super::{api_key, credits};
use crate::auth::PasswordHashing;
use crate::entity::user::{self, Plan};
use crate::error::{AppError, AppResult};

const MAX_EMAIL: usize = 320;
const MIN_PASSWORD: usize = 8;
const MAX_PASSWORD: usize = 256;

fn normalise_email(email: &str) -> AppResult<String> {
    let email = email.trim().to_lowercase();
    let valid = email.len() <= MAX_EMAIL
        && email
            .split_once('@')
            .is_some_and(|(local, domain)| !local.is_empty() && domain.contains('.'));
    if valid {
        Ok(email)
    } else {
        Err(AppError::bad_input("a valid email address is required"))
    }
}

fn check_password(password: &str) -> AppResult<()> {
    if (MIN_PASSWORD..=MAX_PASSWORD).contains(&password.chars().count()) {
        Ok(())
    } else {
        Err(AppError::bad_input(format!(
            "the password must have {MIN_PASSWORD} to {MAX_PASSWORD} characters"
        )))
    }
}

async fn insert_user<C: ConnectionTrait>(
    db: &C,
    subject: String,
    email: Option<String>,
    password_hash: Option<String>,
    plan: Plan,
) -> AppResult<user::Model> {
    let id = Uuid::now_v7();
    let user = user::ActiveModel {
        id: Set(id),
        auth_subject: Set(subject),
        email: Set(email),
        password_hash: Set(password_hash),
        plan: Set(plan),
        created_at: Set(Utc::now()),
    }
    .insert(db)
    .await?;
    credits::open_usage(db, id).await?;
    Ok(user)
}

/// Creates a built-in account. Its auth subject is its own id, which its tokens carry as `sub`.
pub async fn sign_up<C: TransactionTrait>(
    db: &C,
    hashing: &PasswordHashing,
    email: &str,
    password: &str,
) -> AppResult<user::Model> {
    let email = normalise_email(email)?;
    check_password(password)?;
    let hash = hashing.hash(password.to_owned()).await?;
    let txn = db.begin().await?;
    let taken = user::Entity::find()
        .filter(user::Column::Email.eq(email.clone()))
        .filter(user::Column::PasswordHash.is_not_null())
        .one(&txn)
        .await?
        .is_some();
    if taken {
        return Err(AppError::Conflict(
            "an account with that email exists".to_owned(),
        ));
    }
    let subject = format!("local:{email}");
    let user = insert_user(&txn, subject, Some(email), Some(hash), Plan::Free).await?;
    txn.commit().await?;
    Ok(user)
}

/// Checks a built-in account's password. Unknown email and wrong password are the same error,
/// take the same time (a decoy hash is checked for unknown emails), and count against the
/// email's failed attempts.
pub async fn sign_in(
    db: &impl ConnectionTrait,
    limiter: &SignInLimiter,
    hashing: &PasswordHashing,
    email: &str,
    password: &str,
) -> AppResult<user::Model> {
    let refused = || AppError::BadUserInput("wrong email or password".to_owned());
    let email = normalise_email(email).map_err(|_| refused())?;
    limiter.begin_attempt(db, &email).await?;
    let user = user::Entity::find()
        .filter(user::Column::Email.eq(email.clone()))
        .filter(user::Column::PasswordHash.is_not_null())
        .one(db)
        .await?;
    let hash = match user.as_ref().and_then(|user| user.password_hash.clone()) {
        Some(hash) => hash,
        None => decoy_hash(hashing).await?,
    };
    let matches = hashing.verify(password.to_owned(), hash).await?;
    match user {
        Some(user) if matches => {
            limiter.reset(db, &email).await?;
            Ok(user)
        }
        _ => Err(refused()),
    }
}

/// A hash no password is checked against successfully (the user does not exist anyway).
async fn decoy_hash(hashing: &PasswordHashing) -> AppResult<String> {
    static DECOY: tokio::sync::OnceCell<String> = tokio::sync::OnceCell::const_new();
    Ok(DECOY
        .get_or_try_init(|| hashing.hash(uuid::Uuid::new_v4().to_string()))
        .await?
        .clone())
}

/// The user a verified token speaks for; a first valid token provisions the row. A plan carried
/// by the token wins over the stored one and is remembered.
pub async fn find_or_provision<C: TransactionTrait + ConnectionTrait>(
    db: &C,
    subject: &str,
    email: Option<&str>,
    plan: Option<Plan>,
) -> AppResult<user::Model> {
    let existing = user::Entity::find()
        .filter(user::Column::AuthSubject.eq(subject))
        .one(db)
        .await?;
    match existing {
        Some(user) => match plan {
            Some(plan) if plan != user.plan => {
                let mut active: user::ActiveModel = user.into();
                active.plan = Set(plan);
                Ok(active.update(db).await?)
            }
            _ => Ok(user),
        },
        None => {
            let txn = db.begin().await?;
            let created = insert_user(
                &txn,
                subject.to_owned(),
                email.map(str::to_owned),
                None,
                plan.unwrap_or(Plan::Free),
            )
            .await;
            match created {
                Ok(user) => {
                    txn.commit().await?;
                    Ok(user)
                }
                // Two first requests raced: the other one provisioned the row.
                Err(AppError::Conflict(_)) => {
                    drop(txn);
                    user::Entity::find()
                        .filter(user::Column::AuthSubject.eq(subject))
                        .one(db)
                        .await?
                        .ok_or(AppError::NotFound("user"))
                }
                Err(err) => Err(err),
            }
        }
    }
}

pub async fn find_user(db: &impl ConnectionTrait, user_id: Uuid) -> AppResult<user::Model> {
    user::Entity::find_by_id(user_id)
        .one(db)
        .await?
        .ok_or(AppError::NotFound("user"))
}

/// Who a verified token or API key speaks for, what it may do, and what ends its authority.
#[derive(Debug, Clone, Copy)]
pub struct Authenticated {
    pub viewer: super::Viewer,
    pub access: Access,
    /// The credential that can be revoked: a built-in token's session, an API key.
    pub credential: Option<Credential>,
    /// When the token or key expires, in seconds since the Unix epoch (`None`: never).
    pub expires_at: Option<u64>,
}

/// Whom an `Authorization` header speaks for: `None` without a header, an error for a bad,
/// expired or revoked token or API key. A first valid token provisions the user.
pub async fn authenticate_header<C: TransactionTrait + ConnectionTrait>(
    db: &C,
    authenticator: &crate::auth::Authenticator,
    header: Option<&str>,
) -> AppResult<Option<Authenticated>> {
    let Some(header) = header.filter(|value| !value.trim().is_empty()) else {
        return Ok(None);
    };
    let token = crate::auth::parse_bearer(header).map_err(|_| AppError::Unauthenticated)?;
    if token.starts_with(api_key::SECRET_PREFIX) {
        return authenticated_by_key(db, token).await.map(Some);
    }
    let verified = authenticator.verify(token).await.map_err(|err| {
        tracing::debug!(%err, "token refused");
        AppError::Unauthenticated
    })?;
    let session_id = match &verified.session_id {
        Some(sid) => {
            let sid = Uuid::parse_str(sid).map_err(|_| AppError::Unauthenticated)?;
            if !super::session::is_live(db, sid).await? {
                return Err(AppError::Unauthenticated);
            }
            Some(sid)
        }
        None => None,
    };
    let plan = verified.plan.map(|plan| match plan {
        crate::auth::Plan::Free => Plan::Free,
        crate::auth::Plan::Pro => Plan::Pro,
    });
    let user = find_or_provision(db, &verified.subject, verified.email.as_deref(), plan).await?;
    Ok(Some(Authenticated {
        viewer: super::Viewer {
            user_id: user.id,
            plan: user.plan,
        },
        access: Access::Session,
        credential: session_id.map(Credential::Session),
        expires_at: Some(verified.expires_at),
    }))
}

async fn authenticated_by_key(db: &impl ConnectionTrait, secret: &str) -> AppResult<Authenticated> {
    let key = api_key::authenticate_api_key(db, secret).await?;
    // The key's rows cascade with its user: a live key has one.
    let user = find_user(db, key.user_id).await?;
    Ok(Authenticated {
        viewer: super::Viewer {
            user_id: user.id,
            plan: user.plan,
        },
        access: Access::ApiKey(ScopeSet::from_stored(&key.scopes)),
        credential: Some(Credential::ApiKey(key.id)),
        expires_at: key
            .expires_at
            .map(|at| u64::try_from(at.timestamp()).unwrap_or_default()),
    })
}
