//! Token buckets in memory (per server process): mutations per client address and per user, and
//! stricter ones for `signUp` / `signIn` per address. A document is charged for all its mutation
//! fields before any of them runs, so aliasing twenty mutations into one request costs twenty.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use uuid::Uuid;

use crate::config::Config;
use crate::error::{AppError, AppResult};

/// The mutation fields a document would run, counted before it runs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MutationCount {
    pub total: u32,
    pub sign_ups: u32,
    pub sign_ins: u32,
}

/// Who sends a document: the client address (unknown over WebSocket, whose connections are
/// signed in) and the signed-in user.
#[derive(Debug, Clone, Copy)]
pub struct Sender {
    pub address: Option<IpAddr>,
    pub user_id: Option<Uuid>,
}

pub struct RateLimits {
    mutations_per_address: DefaultKeyedRateLimiter<IpAddr>,
    mutations_per_user: DefaultKeyedRateLimiter<Uuid>,
    sign_ups_per_address: DefaultKeyedRateLimiter<IpAddr>,
    sign_ins_per_address: DefaultKeyedRateLimiter<IpAddr>,
    clock: DefaultClock,
}

fn per_minute(count: u32) -> Quota {
    Quota::per_minute(NonZeroU32::new(count).unwrap_or(NonZeroU32::MIN))
}

fn per_hour(count: u32) -> Quota {
    Quota::per_hour(NonZeroU32::new(count).unwrap_or(NonZeroU32::MIN))
}

/// Every IPv6 client holds a /64 at least: the whole prefix shares one bucket, or a client
/// would get a fresh bucket per address.
fn bucket_key(address: IpAddr) -> IpAddr {
    match address {
        IpAddr::V4(_) => address,
        IpAddr::V6(v6) => IpAddr::V6((u128::from(v6) & !((1u128 << 64) - 1)).into()),
    }
}

impl RateLimits {
    pub fn from_config(config: &Config) -> Self {
        Self {
            mutations_per_address: RateLimiter::keyed(per_minute(
                config.rate_limit_address_mutations_per_minute,
            )),
            mutations_per_user: RateLimiter::keyed(per_minute(
                config.rate_limit_user_mutations_per_minute,
            )),
            sign_ups_per_address: RateLimiter::keyed(per_hour(
                config.rate_limit_address_sign_ups_per_hour,
            )),
            sign_ins_per_address: RateLimiter::keyed(per_minute(
                config.rate_limit_address_sign_ins_per_minute,
            )),
            clock: DefaultClock::default(),
        }
    }

    /// Charges `sender` for a document's mutations, or refuses the whole document: more than
    /// one `signUp`/`signIn` in it (BAD_USER_INPUT), an empty bucket (RATE_LIMITED, with the wait
    /// until it holds enough), or sign-ups and sign-ins from an unknown address.
    pub fn charge(&self, sender: Sender, mutations: MutationCount) -> AppResult<()> {
        let Some(total) = NonZeroU32::new(mutations.total) else {
            return Ok(());
        };
        if mutations.sign_ups + mutations.sign_ins > 1 {
            return Err(AppError::bad_input(
                "a document may hold one signUp or signIn at most",
            ));
        }
        let address = sender.address.map(bucket_key);
        if let Some(address) = address {
            self.take(&self.mutations_per_address, &address, total)?;
        }
        if let Some(user_id) = sender.user_id {
            self.take(&self.mutations_per_user, &user_id, total)?;
        }
        let auth_bucket = if mutations.sign_ups > 0 {
            Some(&self.sign_ups_per_address)
        } else if mutations.sign_ins > 0 {
            Some(&self.sign_ins_per_address)
        } else {
            None
        };
        if let Some(bucket) = auth_bucket {
            let address = address.ok_or_else(|| {
                AppError::bad_input("signUp and signIn are served over HTTP only")
            })?;
            self.take(bucket, &address, NonZeroU32::MIN)?;
        }
        Ok(())
    }

    /// Forgets the buckets that are full again, so idle clients take no memory.
    pub fn forget_idle(&self) {
        for limiter in [
            &self.mutations_per_address,
            &self.sign_ups_per_address,
            &self.sign_ins_per_address,
        ] {
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
        self.mutations_per_user.retain_recent();
        self.mutations_per_user.shrink_to_fit();
    }

    fn take<K>(
        &self,
        limiter: &DefaultKeyedRateLimiter<K>,
        key: &K,
        count: NonZeroU32,
    ) -> AppResult<()>
    where
        K: std::hash::Hash + Eq + Clone,
    {
        match limiter.check_key_n(key, count) {
            Ok(Ok(())) => Ok(()),
            Ok(Err(not_until)) => Err(AppError::rate_limited(
                not_until.wait_time_from(self.clock.now()),
            )),
            Err(capacity) => Err(AppError::bad_input(format!(
                "a document may hold {} mutations at most",
                capacity.0
            ))),
        }
    }
}

/// How often [`RateLimits::forget_idle`] runs.
pub const FORGET_IDLE_EVERY: Duration = Duration::from_secs(60);

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(change: impl FnOnce(&mut Config)) -> RateLimits {
        let mut config = Config::defaults();
        change(&mut config);
        RateLimits::from_config(&config)
    }

    fn from(address: &str) -> Sender {
        Sender {
            address: Some(address.parse().unwrap()),
            user_id: None,
        }
    }

    const ONE_SIGN_UP: MutationCount = MutationCount {
        total: 1,
        sign_ups: 1,
        sign_ins: 0,
    };

    #[test]
    fn an_ipv6_prefix_shares_one_bucket() {
        let limits = limits(|config| config.rate_limit_address_sign_ups_per_hour = 1);
        limits.charge(from("2001:db8::1"), ONE_SIGN_UP).unwrap();
        let refused = limits.charge(from("2001:db8::2"), ONE_SIGN_UP).unwrap_err();
        assert!(
            matches!(refused, AppError::RateLimited { retry_after_secs } if retry_after_secs > 3000)
        );
        limits.charge(from("2001:db8:0:1::1"), ONE_SIGN_UP).unwrap();
        limits.charge(from("192.0.2.1"), ONE_SIGN_UP).unwrap();
    }

    #[test]
    fn more_mutations_than_a_bucket_holds_is_bad_input() {
        let limits = limits(|config| config.rate_limit_address_mutations_per_minute = 3);
        let many = MutationCount {
            total: 4,
            ..Default::default()
        };
        let refused = limits.charge(from("192.0.2.1"), many).unwrap_err();
        assert_eq!(refused.code(), "BAD_USER_INPUT");
    }

    #[test]
    fn sign_ins_need_an_address() {
        let limits = limits(|_| {});
        let sign_in = MutationCount {
            total: 1,
            sign_ups: 0,
            sign_ins: 1,
        };
        let sender = Sender {
            address: None,
            user_id: Some(Uuid::now_v7()),
        };
        assert_eq!(
            limits.charge(sender, sign_in).unwrap_err().code(),
            "BAD_USER_INPUT"
        );
    }
}
