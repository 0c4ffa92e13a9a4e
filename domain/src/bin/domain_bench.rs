//! The domain benchmark: prints argon2id hash and verify times with the default (OWASP)
//! parameters, and how many typical commands per second `decide` + `apply` handle.
//!
//! ```text
//! cargo run --release -p idem-domain --bin domain-bench
//! ```

use std::hint::black_box;
use std::time::{Duration, Instant};

use domain::crypto::{Argon2Params, PasswordVerifier};
use domain::customer::{self, CustomerCommand, CustomerTenant};
use domain::event::Event;
use domain::ids::{TenantId, UserId};
use domain::msp::{self, MspCommand, MspTenant};
use uuid::Uuid;

type AnyError = Box<dyn std::error::Error>;

fn percentile(samples: &mut [Duration], p: f64) -> Duration {
    samples.sort_unstable();
    let i = ((samples.len() as f64 - 1.0) * p).round() as usize;
    samples.get(i).copied().unwrap_or_default()
}

fn argon2(rounds: usize) -> Result<(), AnyError> {
    let params = Argon2Params::default();
    let mut hashes = Vec::with_capacity(rounds);
    let mut verifies = Vec::with_capacity(rounds);
    black_box(PasswordVerifier::create("warm up", [0; 16], params)?);
    for i in 0..rounds {
        let start = Instant::now();
        let verifier = PasswordVerifier::create("correct horse battery", [i as u8; 16], params)?;
        hashes.push(start.elapsed());
        let start = Instant::now();
        black_box(verifier.verify("correct horse battery")?);
        verifies.push(start.elapsed());
    }
    println!(
        "argon2id m={} KiB t={} p={}: hash p50 {:?} p99 {:?}; verify p50 {:?} p99 {:?} ({rounds} rounds)",
        params.memory_kib,
        params.iterations,
        params.parallelism,
        percentile(&mut hashes, 0.5),
        percentile(&mut hashes, 0.99),
        percentile(&mut verifies, 0.5),
        percentile(&mut verifies, 0.99),
    );
    Ok(())
}

/// An MSP with 50 technicians and 100 customers, as a mid-sized MSP has.
fn msp_tenant() -> Result<(MspTenant, Vec<UserId>, Vec<TenantId>), AnyError> {
    let id = TenantId(Uuid::from_u128(1));
    let admin = UserId(Uuid::from_u128(2));
    let mut state = MspTenant::replay(
        &msp::decide(
            None,
            MspCommand::SignUp {
                tenant_id: id,
                name: "acme".into(),
                display_name: "Acme".into(),
                admin_user_id: admin,
                admin_email: "admin@acme.example".into(),
            },
        )?
        .events,
    )?
    .ok_or("no tenant")?;
    let run = |state: &mut MspTenant, command| -> Result<(), AnyError> {
        for event in msp::decide(Some(state), command)?.events {
            state.apply(&event)?;
        }
        Ok(())
    };
    let users: Vec<_> = (0..50).map(|n| UserId(Uuid::from_u128(100 + n))).collect();
    let customers: Vec<_> = (0..100)
        .map(|n| TenantId(Uuid::from_u128(1000 + n)))
        .collect();
    for (n, user) in users.iter().enumerate() {
        run(
            &mut state,
            MspCommand::AddUser {
                user_id: *user,
                email: format!("t{n}@acme.example"),
                first_name: None,
                last_name: None,
            },
        )?;
    }
    for customer in &customers {
        run(
            &mut state,
            MspCommand::CreateCustomer {
                customer_id: *customer,
            },
        )?;
    }
    Ok((state, users, customers))
}

fn commands(seconds: f64) -> Result<(), AnyError> {
    let (mut state, users, customers) = msp_tenant()?;
    let start = Instant::now();
    let mut done = 0u64;
    while start.elapsed().as_secs_f64() < seconds {
        for i in 0..1000 {
            let user_id = users[i % users.len()];
            let customer_id = customers[i % customers.len()];
            let command = if state.users[&user_id].delegations.contains(&customer_id) {
                MspCommand::RevokeDelegation {
                    user_id,
                    customer_id,
                }
            } else {
                MspCommand::Delegate {
                    user_id,
                    customer_id,
                }
            };
            for event in msp::decide(Some(&state), command)?.events {
                state.apply(&event)?;
            }
        }
        done += 1000;
    }
    println!(
        "MSP delegate/revoke (50 users, 100 customers): {:>10.0} commands/s (decide + apply)",
        done as f64 / start.elapsed().as_secs_f64()
    );

    let tenant = TenantId(Uuid::from_u128(5));
    let mut state = CustomerTenant::replay(
        &customer::decide(
            None,
            CustomerCommand::Open {
                tenant_id: tenant,
                msp_id: TenantId(Uuid::from_u128(1)),
                msp_name: "acme".into(),
                name: "globex".into(),
                display_name: "Globex".into(),
            },
        )?
        .events,
    )?
    .ok_or("no tenant")?;
    let users: Vec<_> = (0..500)
        .map(|n| UserId(Uuid::from_u128(10_000 + n)))
        .collect();
    for (n, user) in users.iter().enumerate() {
        let events: Vec<Event> = customer::decide(
            Some(&state),
            CustomerCommand::CreateUser {
                user_id: *user,
                first_name: "Billy".into(),
                last_name: "Jones".into(),
                username: format!("user{n}"),
                email: format!("user{n}@globex.example"),
                password: None,
                must_change_password: false,
                personal_email: None,
            },
        )?
        .events;
        for event in events {
            state.apply(&event)?;
        }
    }
    let start = Instant::now();
    let mut done = 0u64;
    while start.elapsed().as_secs_f64() < seconds {
        for i in 0..1000 {
            let user_id = users[i % users.len()];
            let enabled = !state.users[&user_id].enabled;
            let command = CustomerCommand::UpdateUser {
                user_id,
                first_name: None,
                last_name: None,
                email: None,
                personal_email: None,
                enabled: Some(enabled),
            };
            for event in customer::decide(Some(&state), command)?.events {
                state.apply(&event)?;
            }
        }
        done += 1000;
    }
    println!(
        "customer disable/enable user (500 users):       {:>10.0} commands/s (decide + apply)",
        done as f64 / start.elapsed().as_secs_f64()
    );
    Ok(())
}

fn main() -> Result<(), AnyError> {
    argon2(20)?;
    commands(2.0)?;
    Ok(())
}
