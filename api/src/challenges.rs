//! Short-lived login material, kept in memory: QR challenges waiting for an authenticator's
//! approval, and SSO hand-offs waiting to be opened on a customer host. Both live for minutes
//! at most and are single-use; what outlives them (the session) is an event in the log. A
//! restart forgets them, and the client simply asks for a new one.
//!
//! A portal challenge's poll needs nothing but its id (the contract's), and the id is in the
//! QR code: anyone who sees the screen could poll too and race the browser for the session
//! token. So a portal challenge also has a *poll secret*, given only to its creator (the
//! portal keeps it in the login page's cookie; an API client sends it as `Idem-Poll-Secret`).
//! A poll without it, while any other poll of the challenge waits or once a poll with it was
//! seen, or a poll with it while one without it waits, means a second party: the challenge is
//! *withdrawn*. Every poll of it answers `denied`, no approval is taken and no token is handed
//! out; the person asks for a new code. Polls with the secret may overlap (two tabs of one
//! browser share the cookie), and a lone poll without it from a client that never sends the
//! secret (the contract's) works as before. An agent's challenge is polled with the agent's
//! credential and has no such rule.

use std::collections::HashMap;
use std::sync::Mutex;

use chrono::{DateTime, Utc};
use subtle::ConstantTimeEq;
use tokio::sync::watch;
use uuid::Uuid;

/// Challenges and hand-offs kept at most; beyond it, new ones are refused until old ones
/// expire (the per-address rate limits make this a last line of defence).
const CAPACITY: usize = 100_000;

/// Where a challenge stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ChallengeState {
    Pending,
    /// An approval is being checked and recorded; a second one is refused.
    Approving,
    /// Approved: the session token, until the waiting client takes it.
    Approved {
        token: Option<String>,
    },
    /// Polled by two parties at once: no approval, no token.
    Withdrawn,
}

/// A QR challenge, bound to the host it was created on.
pub struct Challenge {
    pub tenant: Uuid,
    pub host: String,
    pub nonce: String,
    /// `portal`, `desktop` or `elevate`.
    pub purpose: &'static str,
    /// The desktop agent that asked, for `desktop` and `elevate`.
    pub agent: Option<Uuid>,
    pub expires_at: DateTime<Utc>,
    state: watch::Sender<ChallengeState>,
    /// A portal challenge's poll secret (see the module's documentation).
    poll_secret: Option<String>,
    /// Polls waiting on it now: without the poll secret, and with it.
    polls: [usize; 2],
    /// Whether a poll with the poll secret was seen: its creator sends it.
    secret_seen: bool,
}

/// What the waiting client learns.
#[derive(Debug, PartialEq, Eq)]
pub enum Poll {
    Pending,
    Expired,
    /// The token, the first time only.
    Approved(Option<String>),
    /// Withdrawn: two parties polled it at once.
    Denied,
}

/// An SSO hand-off onto a customer host.
#[derive(Clone, Debug)]
pub struct Handoff {
    pub customer: Uuid,
    pub msp: Uuid,
    pub user: Uuid,
    pub expires_at: DateTime<Utc>,
}

/// A challenge being approved: what the approval must sign, and what it is for.
#[derive(Debug, PartialEq, Eq)]
pub struct Approving {
    pub host: String,
    pub nonce: String,
    pub purpose: &'static str,
    pub agent: Option<Uuid>,
}

/// Why a challenge cannot be approved.
#[derive(Debug, PartialEq, Eq)]
pub enum Refusal {
    /// No such challenge on this host.
    Unknown,
    Expired,
    /// Already approved, or being approved.
    Used,
    /// Withdrawn: two parties polled it at once.
    Withdrawn,
}

#[derive(Default)]
pub struct Store {
    challenges: Mutex<HashMap<Uuid, Challenge>>,
    /// By the digest of the hand-off token.
    handoffs: Mutex<HashMap<String, Handoff>>,
}

/// A poisoned lock only means another request panicked mid-update; the maps stay usable.
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

impl Store {
    /// Records a new challenge; `None` when the store is full. A portal challenge (no `agent`)
    /// takes `poll_secret`.
    #[allow(clippy::too_many_arguments)]
    pub fn create(
        &self,
        id: Uuid,
        tenant: Uuid,
        host: String,
        nonce: String,
        purpose: &'static str,
        agent: Option<Uuid>,
        poll_secret: Option<String>,
        expires_at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Option<()> {
        let mut challenges = lock(&self.challenges);
        if challenges.len() >= CAPACITY {
            challenges.retain(|_, c| c.expires_at > now);
            if challenges.len() >= CAPACITY {
                return None;
            }
        }
        let (state, _) = watch::channel(ChallengeState::Pending);
        challenges.insert(
            id,
            Challenge {
                tenant,
                host,
                nonce,
                purpose,
                agent,
                expires_at,
                state,
                poll_secret,
                polls: [0; 2],
                secret_seen: false,
            },
        );
        Some(())
    }

    /// Starts approving challenge `id` of `tenant`: answers its host and nonce, and holds it
    /// so that no second approval can race this one. Follow with [`Store::approved`] or
    /// [`Store::release`].
    pub fn begin_approval(
        &self,
        id: Uuid,
        tenant: Uuid,
        now: DateTime<Utc>,
    ) -> Result<Approving, Refusal> {
        let challenges = lock(&self.challenges);
        let challenge = challenges
            .get(&id)
            .filter(|c| c.tenant == tenant)
            .ok_or(Refusal::Unknown)?;
        if challenge.expires_at <= now {
            return Err(Refusal::Expired);
        }
        let mut refusal = None;
        challenge.state.send_if_modified(|state| {
            match state {
                ChallengeState::Pending => *state = ChallengeState::Approving,
                ChallengeState::Withdrawn => refusal = Some(Refusal::Withdrawn),
                _ => refusal = Some(Refusal::Used),
            }
            false
        });
        if let Some(refusal) = refusal {
            return Err(refusal);
        }
        Ok(Approving {
            host: challenge.host.clone(),
            nonce: challenge.nonce.clone(),
            purpose: challenge.purpose,
            agent: challenge.agent,
        })
    }

    /// The approval failed its checks: the challenge waits for a genuine one (unless it was
    /// withdrawn meanwhile).
    pub fn release(&self, id: Uuid) {
        self.end_approval(id, ChallengeState::Pending);
    }

    /// The session is recorded: the waiting client may take its token. `false` if the
    /// challenge was withdrawn (or forgotten) while the approval was being recorded: nobody
    /// gets the token.
    pub fn approved(&self, id: Uuid, token: String) -> bool {
        self.end_approval(id, ChallengeState::Approved { token: Some(token) })
    }

    /// Moves challenge `id` from approving to `next`; `false` if it was not approving.
    fn end_approval(&self, id: Uuid, next: ChallengeState) -> bool {
        let challenges = lock(&self.challenges);
        let Some(challenge) = challenges.get(&id) else {
            return false;
        };
        challenge.state.send_if_modified(|state| {
            let approving = *state == ChallengeState::Approving;
            if approving {
                *state = next;
            }
            approving
        })
    }

    /// Where challenge `id` of `tenant` stands; takes the token if it is there.
    fn poll_now(&self, id: Uuid, tenant: Uuid, now: DateTime<Utc>) -> Option<Poll> {
        let challenges = lock(&self.challenges);
        let challenge = challenges.get(&id).filter(|c| c.tenant == tenant)?;
        let mut answer = Poll::Pending;
        challenge.state.send_if_modified(|state| match state {
            ChallengeState::Approved { token } => {
                answer = Poll::Approved(token.take());
                false
            }
            ChallengeState::Withdrawn => {
                answer = Poll::Denied;
                false
            }
            _ if challenge.expires_at <= now => {
                answer = Poll::Expired;
                false
            }
            _ => false,
        });
        Some(answer)
    }

    /// Waits until challenge `id` of `tenant` is approved or expires, or `until`; `None` if
    /// there is no such challenge on this host. `secret` is the poll secret the caller sent;
    /// a second party's poll of a portal challenge withdraws it, and every poll of it answers
    /// [`Poll::Denied`].
    pub async fn poll(
        &self,
        id: Uuid,
        tenant: Uuid,
        secret: Option<&str>,
        until: DateTime<Utc>,
    ) -> Option<Poll> {
        let (mut changes, _waiting) = {
            let mut challenges = lock(&self.challenges);
            let challenge = challenges.get_mut(&id).filter(|c| c.tenant == tenant)?;
            let owner = usize::from(match (&challenge.poll_secret, secret) {
                (Some(expected), Some(given)) => {
                    bool::from(expected.as_bytes().ct_eq(given.as_bytes()))
                }
                _ => false,
            });
            let [others, owners] = challenge.polls;
            let second_party = if owner == 1 {
                others > 0
            } else {
                others + owners > 0 || challenge.secret_seen
            };
            if challenge.poll_secret.is_some() && second_party {
                challenge.state.send_replace(ChallengeState::Withdrawn);
                tracing::warn!(challenge = %id, "polled by a second party: challenge withdrawn");
                return Some(Poll::Denied);
            }
            challenge.polls[owner] += 1;
            challenge.secret_seen |= owner == 1;
            let waiting = Waiting {
                store: self,
                id,
                owner,
            };
            (challenge.state.subscribe(), waiting)
        };
        loop {
            // Marked seen before the check, so a change after it wakes the wait below.
            changes.borrow_and_update();
            let now = Utc::now();
            let answer = self.poll_now(id, tenant, now)?;
            if answer != Poll::Pending {
                return Some(answer);
            }
            let expires_at = lock(&self.challenges).get(&id)?.expires_at;
            let deadline = until.min(expires_at);
            let Ok(wait) = (deadline - now).to_std() else {
                return Some(if now >= expires_at {
                    Poll::Expired
                } else {
                    Poll::Pending
                });
            };
            if tokio::time::timeout(wait, changes.changed()).await.is_err() {
                // Timed out: one last look (it may have expired meanwhile).
                continue;
            }
        }
    }

    /// The purpose and the asking agent of challenge `id` of `tenant`.
    pub fn owner(&self, id: Uuid, tenant: Uuid) -> Option<(&'static str, Option<Uuid>)> {
        lock(&self.challenges)
            .get(&id)
            .filter(|c| c.tenant == tenant)
            .map(|c| (c.purpose, c.agent))
    }

    /// Forgets challenges that expired more than a minute ago.
    pub fn purge(&self, now: DateTime<Utc>) {
        let grace = chrono::Duration::minutes(1);
        lock(&self.challenges).retain(|_, c| c.expires_at + grace > now);
        lock(&self.handoffs).retain(|_, h| h.expires_at > now);
    }

    /// Records a hand-off under its token's digest; `None` when the store is full.
    pub fn hand_off(&self, digest: String, handoff: Handoff, now: DateTime<Utc>) -> Option<()> {
        let mut handoffs = lock(&self.handoffs);
        if handoffs.len() >= CAPACITY {
            handoffs.retain(|_, h| h.expires_at > now);
            if handoffs.len() >= CAPACITY {
                return None;
            }
        }
        handoffs.insert(digest, handoff);
        Some(())
    }

    /// Takes the hand-off with this digest for `customer`, once; `None` if unknown, already
    /// used, for another host, or expired.
    pub fn redeem(&self, digest: &str, customer: Uuid, now: DateTime<Utc>) -> Option<Handoff> {
        let mut handoffs = lock(&self.handoffs);
        if handoffs.get(digest)?.customer != customer {
            // Not consumed: opening it on the wrong host must not burn it for the right one.
            return None;
        }
        handoffs.remove(digest).filter(|h| h.expires_at > now)
    }
}

/// A poll waiting on a challenge (`owner`: 1 with the poll secret, 0 without); it stops
/// counting when the poll ends or is dropped (its client went away).
struct Waiting<'a> {
    store: &'a Store,
    id: Uuid,
    owner: usize,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        if let Some(challenge) = lock(&self.store.challenges).get_mut(&self.id) {
            challenge.polls[self.owner] = challenge.polls[self.owner].saturating_sub(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seconds: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + seconds, 0).unwrap()
    }

    #[test]
    fn a_challenge_is_approved_once_on_its_own_host_and_its_token_taken_once() {
        let store = Store::default();
        let (id, tenant, other) = (Uuid::from_u128(1), Uuid::from_u128(10), Uuid::from_u128(11));
        store
            .create(
                id,
                tenant,
                "acme.localhost".into(),
                "n".into(),
                "portal",
                None,
                Some("secret".into()),
                at(120),
                at(0),
            )
            .unwrap();
        assert_eq!(
            store.begin_approval(id, other, at(1)),
            Err(Refusal::Unknown)
        );
        assert_eq!(
            store.begin_approval(Uuid::from_u128(2), tenant, at(1)),
            Err(Refusal::Unknown)
        );
        assert_eq!(
            store.begin_approval(id, tenant, at(1)),
            Ok(Approving {
                host: "acme.localhost".into(),
                nonce: "n".into(),
                purpose: "portal",
                agent: None,
            })
        );
        assert_eq!(store.begin_approval(id, tenant, at(1)), Err(Refusal::Used));
        store.release(id);
        assert!(store.begin_approval(id, tenant, at(2)).is_ok());
        assert!(store.approved(id, "tok".into()));
        assert_eq!(store.begin_approval(id, tenant, at(3)), Err(Refusal::Used));
        assert_eq!(store.poll_now(id, other, at(3)), None);
        assert_eq!(
            store.poll_now(id, tenant, at(3)),
            Some(Poll::Approved(Some("tok".into())))
        );
        assert_eq!(
            store.poll_now(id, tenant, at(4)),
            Some(Poll::Approved(None))
        );
    }

    #[test]
    fn an_expired_challenge_cannot_be_approved() {
        let store = Store::default();
        let (id, tenant) = (Uuid::from_u128(1), Uuid::from_u128(10));
        store
            .create(
                id,
                tenant,
                "h".into(),
                "n".into(),
                "portal",
                None,
                Some("secret".into()),
                at(120),
                at(0),
            )
            .unwrap();
        assert_eq!(store.poll_now(id, tenant, at(119)), Some(Poll::Pending));
        assert_eq!(store.poll_now(id, tenant, at(120)), Some(Poll::Expired));
        assert_eq!(
            store.begin_approval(id, tenant, at(120)),
            Err(Refusal::Expired)
        );
        store.purge(at(200));
        assert_eq!(store.poll_now(id, tenant, at(200)), None);
    }

    #[tokio::test]
    async fn a_waiting_poll_wakes_on_approval() {
        let store = std::sync::Arc::new(Store::default());
        let (id, tenant) = (Uuid::from_u128(1), Uuid::from_u128(10));
        let expires = portal_challenge(&store, id, tenant);
        let waiter = {
            let store = store.clone();
            tokio::spawn(async move { store.poll(id, tenant, None, expires).await })
        };
        store.begin_approval(id, tenant, Utc::now()).unwrap();
        assert!(store.approved(id, "tok".into()));
        // The waiter would otherwise wait two minutes; the approval ends it.
        let answer = tokio::time::timeout(std::time::Duration::from_secs(30), waiter)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(answer, Some(Poll::Approved(Some("tok".into()))));
    }

    #[test]
    fn a_handoff_opens_once_on_its_customer_before_it_expires() {
        let store = Store::default();
        let (customer, other) = (Uuid::from_u128(5), Uuid::from_u128(6));
        let handoff = Handoff {
            customer,
            msp: Uuid::from_u128(1),
            user: Uuid::from_u128(2),
            expires_at: at(60),
        };
        store.hand_off("d".into(), handoff.clone(), at(0)).unwrap();
        assert!(store.redeem("d", other, at(1)).is_none());
        assert!(store.redeem("d", customer, at(1)).is_some());
        assert!(store.redeem("d", customer, at(1)).is_none(), "one use");
        store.hand_off("e".into(), handoff, at(0)).unwrap();
        assert!(store.redeem("e", customer, at(60)).is_none(), "expired");
    }

    /// A portal challenge with poll secret "secret", expiring in two minutes.
    fn portal_challenge(store: &Store, id: Uuid, tenant: Uuid) -> DateTime<Utc> {
        let expires = Utc::now() + chrono::Duration::minutes(2);
        store
            .create(
                id,
                tenant,
                "h".into(),
                "n".into(),
                "portal",
                None,
                Some("secret".into()),
                expires,
                Utc::now(),
            )
            .unwrap();
        expires
    }

    /// Starts a poll of `id` that waits, and lets it register before answering.
    async fn waiting_poll(
        store: &std::sync::Arc<Store>,
        id: Uuid,
        tenant: Uuid,
        secret: Option<&'static str>,
        until: DateTime<Utc>,
    ) -> tokio::task::JoinHandle<Option<Poll>> {
        let task = {
            let store = store.clone();
            tokio::spawn(async move { store.poll(id, tenant, secret, until).await })
        };
        while lock(&store.challenges)
            .get(&id)
            .unwrap()
            .polls
            .iter()
            .sum::<usize>()
            == 0
        {
            tokio::task::yield_now().await;
        }
        task
    }

    async fn answer(task: tokio::task::JoinHandle<Option<Poll>>) -> Option<Poll> {
        tokio::time::timeout(std::time::Duration::from_secs(30), task)
            .await
            .unwrap()
            .unwrap()
    }

    #[tokio::test]
    async fn a_second_party_polling_while_the_creator_waits_withdraws_the_challenge() {
        for (creator, second) in [(Some("secret"), None), (None, None), (None, Some("secret"))] {
            let store = std::sync::Arc::new(Store::default());
            let (id, tenant) = (Uuid::from_u128(1), Uuid::from_u128(10));
            let expires = portal_challenge(&store, id, tenant);
            let waiting = waiting_poll(&store, id, tenant, creator, expires).await;

            let now = Utc::now();
            assert_eq!(
                store.poll(id, tenant, second, now).await,
                Some(Poll::Denied),
                "{creator:?} then {second:?}"
            );
            assert_eq!(
                answer(waiting).await,
                Some(Poll::Denied),
                "the waiting poll too"
            );
            assert_eq!(
                store.begin_approval(id, tenant, Utc::now()),
                Err(Refusal::Withdrawn)
            );
            assert_eq!(
                store.poll(id, tenant, creator, now).await,
                Some(Poll::Denied)
            );
        }
    }

    #[tokio::test]
    async fn once_its_creator_polled_with_the_secret_a_poll_without_it_withdraws_the_challenge() {
        let store = std::sync::Arc::new(Store::default());
        let (id, tenant) = (Uuid::from_u128(1), Uuid::from_u128(10));
        portal_challenge(&store, id, tenant);
        // A poll with a wrong secret is one without it.
        assert_eq!(
            store.poll(id, tenant, Some("guess"), Utc::now()).await,
            Some(Poll::Pending)
        );
        assert_eq!(
            store.poll(id, tenant, Some("secret"), Utc::now()).await,
            Some(Poll::Pending)
        );
        // Nothing waits now, but the creator is known to send the secret.
        store.begin_approval(id, tenant, Utc::now()).unwrap();
        assert!(store.approved(id, "tok".into()));
        assert_eq!(
            store.poll(id, tenant, None, Utc::now()).await,
            Some(Poll::Denied)
        );
        assert_eq!(
            store.poll(id, tenant, Some("secret"), Utc::now()).await,
            Some(Poll::Denied),
            "the token is gone for everyone"
        );
    }

    #[tokio::test]
    async fn polls_with_the_secret_may_overlap_and_one_of_them_gets_the_token() {
        let store = std::sync::Arc::new(Store::default());
        let (id, tenant) = (Uuid::from_u128(1), Uuid::from_u128(10));
        let expires = portal_challenge(&store, id, tenant);
        let first = waiting_poll(&store, id, tenant, Some("secret"), expires).await;
        let second = {
            let store = store.clone();
            tokio::spawn(async move { store.poll(id, tenant, Some("secret"), expires).await })
        };
        while lock(&store.challenges).get(&id).unwrap().polls[1] < 2 {
            tokio::task::yield_now().await;
        }
        store.begin_approval(id, tenant, Utc::now()).unwrap();
        assert!(store.approved(id, "tok".into()));
        let mut answers = vec![answer(first).await, answer(second).await];
        answers.sort_by_key(|a| format!("{a:?}"));
        assert_eq!(
            answers,
            vec![
                Some(Poll::Approved(None)),
                Some(Poll::Approved(Some("tok".into())))
            ]
        );
    }

    #[tokio::test]
    async fn polls_one_after_another_and_ended_polls_withdraw_nothing() {
        let store = std::sync::Arc::new(Store::default());
        let (id, tenant) = (Uuid::from_u128(1), Uuid::from_u128(10));
        let expires = portal_challenge(&store, id, tenant);
        // One after another, without the secret: the contract's client.
        for _ in 0..3 {
            assert_eq!(
                store.poll(id, tenant, None, Utc::now()).await,
                Some(Poll::Pending)
            );
        }
        // A waiting poll whose client went away (its future dropped) no longer counts.
        let gone = waiting_poll(&store, id, tenant, None, expires).await;
        gone.abort();
        let _ = gone.await;
        assert_eq!(lock(&store.challenges).get(&id).unwrap().polls, [0, 0]);
        let waiting = waiting_poll(&store, id, tenant, None, expires).await;
        store.begin_approval(id, tenant, Utc::now()).unwrap();
        assert!(store.approved(id, "tok".into()));
        assert_eq!(
            answer(waiting).await,
            Some(Poll::Approved(Some("tok".into())))
        );
    }

    #[tokio::test]
    async fn a_challenge_withdrawn_while_its_approval_is_recorded_hands_out_no_token() {
        let store = std::sync::Arc::new(Store::default());
        let (id, tenant) = (Uuid::from_u128(1), Uuid::from_u128(10));
        let expires = portal_challenge(&store, id, tenant);
        let waiting = waiting_poll(&store, id, tenant, Some("secret"), expires).await;
        store.begin_approval(id, tenant, Utc::now()).unwrap();
        assert_eq!(
            store.poll(id, tenant, None, Utc::now()).await,
            Some(Poll::Denied)
        );
        assert!(!store.approved(id, "tok".into()), "the grant is dropped");
        assert_eq!(answer(waiting).await, Some(Poll::Denied));
        store.release(id);
        assert_eq!(
            store.begin_approval(id, tenant, Utc::now()),
            Err(Refusal::Withdrawn),
            "a release does not bring it back"
        );
    }

    #[tokio::test]
    async fn an_agent_challenge_has_no_second_party_rule() {
        let store = std::sync::Arc::new(Store::default());
        let (id, tenant) = (Uuid::from_u128(1), Uuid::from_u128(10));
        let expires = Utc::now() + chrono::Duration::minutes(2);
        store
            .create(
                id,
                tenant,
                "h".into(),
                "n".into(),
                "elevate",
                Some(Uuid::from_u128(7)),
                None,
                expires,
                Utc::now(),
            )
            .unwrap();
        let waiting = waiting_poll(&store, id, tenant, None, expires).await;
        assert_eq!(
            store.poll(id, tenant, None, Utc::now()).await,
            Some(Poll::Pending)
        );
        store.begin_approval(id, tenant, Utc::now()).unwrap();
        assert!(store.approved(id, "grant".into()));
        assert_eq!(
            answer(waiting).await,
            Some(Poll::Approved(Some("grant".into())))
        );
    }
}
