//! A realistic, deterministic history of the product for benchmarks and tests: MSPs sign up,
//! add technicians, make admins, create customers, delegate and revoke; customers get a master
//! key, desktop login, branding and directory users whose passwords change and who log in at
//! workstations every day; now and then a customer is deleted. Every history it makes is one
//! the domain would accept.

use chrono::{DateTime, Duration, TimeZone, Utc};
use domain::crypto::Sealed;
use domain::event::*;
use domain::ids::{DeviceId, TenantId, UserId};
use eventlog::{Commit, Expected, NewEvent, StreamAppend, StreamId};
use uuid::Uuid;

use crate::codec;

/// One action: what a single command would commit.
pub struct Action {
    pub appends: Vec<(TenantId, Vec<Event>)>,
    /// A customer deleted with this action.
    pub delete: Option<TenantId>,
}

struct Msp {
    id: TenantId,
    name: String,
    technicians: Vec<UserId>,
    /// Parallel to `technicians`: whether each is an admin.
    admins: Vec<bool>,
    customers: Vec<Customer>,
    next_customer: u32,
}

struct Customer {
    id: TenantId,
    users: Vec<(UserId, String, u32, bool)>,
    next_user: u32,
    delegated: Vec<UserId>,
    branding: u32,
}

/// A deterministic generator of actions.
pub struct Workload {
    state: u64,
    msps: Vec<Msp>,
    next_msp: u32,
    /// In every name, so that histories of different seeds can share a log.
    tag: u64,
    clock: DateTime<Utc>,
}

impl Workload {
    pub fn new(seed: u64) -> Workload {
        Workload {
            state: seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407)
                | 1,
            msps: Vec::new(),
            next_msp: 0,
            tag: seed,
            clock: Utc
                .timestamp_opt(1_790_000_000, 0)
                .single()
                .unwrap_or_default(),
        }
    }

    /// xorshift64*: fast, deterministic, good enough to pick actions.
    fn next(&mut self) -> u64 {
        self.state ^= self.state >> 12;
        self.state ^= self.state << 25;
        self.state ^= self.state >> 27;
        self.state.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }

    fn id(&mut self) -> Uuid {
        Uuid::from_u64_pair(self.next(), self.next())
    }

    /// The time the next action happens.
    pub fn now(&mut self) -> DateTime<Utc> {
        let step = 1 + self.below(2000) as i64;
        self.clock += Duration::milliseconds(step);
        self.clock
    }

    fn sealed(&mut self, len: usize) -> Sealed {
        let mut nonce = [0u8; 24];
        for byte in nonce.iter_mut() {
            *byte = self.next() as u8;
        }
        Sealed {
            key_version: 1,
            nonce,
            ciphertext: (0..len).map(|_| self.next() as u8).collect(),
        }
    }

    /// The next action, chosen by the mix.
    pub fn action(&mut self) -> Action {
        if self.msps.is_empty() || (self.msps.len() < 2000 && self.below(200) == 0) {
            return self.sign_up();
        }
        let m = self.below(self.msps.len());
        let roll = self.below(1000);
        if self.msps[m].customers.is_empty() || roll < 20 {
            return self.create_customer(m);
        }
        let c = self.below(self.msps[m].customers.len());
        match roll {
            20..=49 => self.delegate(m, c),
            50..=59 => self.add_technician(m),
            60..=64 => self.toggle_admin(m),
            65..=67 => self.brand(m, c),
            68 if self.msps[m].customers.len() > 3 => self.delete_customer(m, c),
            69..=299 => self.create_user(m, c),
            300..=449 => self.change_user(m, c),
            _ => self.login(m, c),
        }
    }

    fn sign_up(&mut self) -> Action {
        self.next_msp += 1;
        let id = TenantId(self.id());
        let admin = UserId(self.id());
        let name = format!("msp{}s{}", self.next_msp, self.tag);
        let mut events = vec![
            Event::MspTenantCreated(MspTenantCreated {
                tenant_id: id,
                name: name.clone(),
                display_name: format!("MSP number {}", self.next_msp),
                host_label: name.clone(),
                admin_user_id: admin,
                admin_email: format!("admin@{name}.example"),
            }),
            Event::UserSourceSet(UserSourceSet {
                source: UserSource::Local,
            }),
        ];
        events.push(Event::DeviceEnrolled(DeviceEnrolled {
            user_id: admin,
            device_id: DeviceId(self.id()),
            device_name: "admin phone".into(),
            public_key: "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo".into(),
        }));
        self.msps.push(Msp {
            id,
            name: name.clone(),
            technicians: vec![admin],
            admins: vec![true],
            customers: Vec::new(),
            next_customer: 0,
        });
        Action {
            appends: vec![(id, events)],
            delete: None,
        }
    }

    fn add_technician(&mut self, m: usize) -> Action {
        let user = UserId(self.id());
        let n = self.msps[m].technicians.len();
        let events = vec![
            Event::MspUserAdded(MspUserAdded {
                user_id: user,
                email: format!("tech{n}@msp.example"),
                first_name: Some("Tech".into()),
                last_name: Some(format!("Number {n}")),
            }),
            Event::DeviceEnrolled(DeviceEnrolled {
                user_id: user,
                device_id: DeviceId(self.id()),
                device_name: "phone".into(),
                public_key: "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo".into(),
            }),
        ];
        self.msps[m].technicians.push(user);
        self.msps[m].admins.push(false);
        Action {
            appends: vec![(self.msps[m].id, events)],
            delete: None,
        }
    }

    fn toggle_admin(&mut self, m: usize) -> Action {
        // The first user is the signing-up admin and stays one.
        let t = self.below(self.msps[m].technicians.len());
        let msp = &mut self.msps[m];
        let user = msp.technicians[t];
        let event = if t == 0 {
            Event::UserSourceSet(UserSourceSet {
                source: UserSource::Local,
            })
        } else if msp.admins[t] {
            msp.admins[t] = false;
            Event::AdminRevoked(AdminRevoked { user_id: user })
        } else {
            msp.admins[t] = true;
            Event::AdminGranted(AdminGranted { user_id: user })
        };
        Action {
            appends: vec![(msp.id, vec![event])],
            delete: None,
        }
    }

    fn create_customer(&mut self, m: usize) -> Action {
        self.msps[m].next_customer += 1;
        let id = TenantId(self.id());
        let msp = self.msps[m].id;
        let name = format!("cust{}", self.msps[m].next_customer);
        let host_label = format!("{name}-{}", self.msps[m].name);
        let display_name = format!("Customer {}", self.msps[m].next_customer);
        let created = Event::CustomerTenantCreated(CustomerTenantCreated { customer_id: id });
        let opened = vec![
            Event::CustomerTenantOpened(CustomerTenantOpened {
                tenant_id: id,
                msp_id: msp,
                name,
                display_name,
                host_label,
            }),
            Event::MasterKeyEnabled(MasterKeyEnabled { key_version: 1 }),
            Event::DesktopLoginConfigured(DesktopLoginConfigured {
                enabled: true,
                method: DesktopLoginMethod::Password,
            }),
            Event::SharedAccountConfigured(SharedAccountConfigured {
                username: "idem-admin".into(),
                elevation_minutes: domain::customer::DEFAULT_ELEVATION_MINUTES,
            }),
        ];
        self.msps[m].customers.push(Customer {
            id,
            users: Vec::new(),
            next_user: 0,
            delegated: Vec::new(),
            branding: 0,
        });
        Action {
            appends: vec![(msp, vec![created]), (id, opened)],
            delete: None,
        }
    }

    fn delete_customer(&mut self, m: usize, c: usize) -> Action {
        let customer = self.msps[m].customers.swap_remove(c);
        Action {
            appends: vec![(
                self.msps[m].id,
                vec![Event::CustomerTenantDeleted(CustomerTenantDeleted {
                    customer_id: customer.id,
                })],
            )],
            delete: Some(customer.id),
        }
    }

    fn delegate(&mut self, m: usize, c: usize) -> Action {
        let t = self.below(self.msps[m].technicians.len());
        let user = self.msps[m].technicians[t];
        let customer = self.msps[m].customers[c].id;
        let delegated = &mut self.msps[m].customers[c].delegated;
        let event = if let Some(i) = delegated.iter().position(|u| *u == user) {
            delegated.swap_remove(i);
            Event::DelegationRevoked(DelegationRevoked {
                user_id: user,
                customer_id: customer,
            })
        } else {
            delegated.push(user);
            Event::TechnicianDelegated(TechnicianDelegated {
                user_id: user,
                customer_id: customer,
            })
        };
        Action {
            appends: vec![(self.msps[m].id, vec![event])],
            delete: None,
        }
    }

    fn brand(&mut self, m: usize, c: usize) -> Action {
        let customer = &mut self.msps[m].customers[c];
        customer.branding += 1;
        let version = customer.branding;
        let id = customer.id;
        let blob = format!("{:064x}", self.next());
        Action {
            appends: vec![(
                id,
                vec![Event::BrandingUpdated(BrandingUpdated {
                    version,
                    background: Some(ImageRef {
                        blob,
                        media_type: "image/png".into(),
                        width: 1920,
                        height: 1080,
                    }),
                    logo: None,
                    text: Some(format!("Welcome, version {version}")),
                })],
            )],
            delete: None,
        }
    }

    fn create_user(&mut self, m: usize, c: usize) -> Action {
        let user = UserId(self.id());
        self.msps[m].customers[c].next_user += 1;
        let n = self.msps[m].customers[c].next_user;
        let username = format!("user{n}");
        let personal = if self.below(3) == 0 {
            Some(self.sealed(30))
        } else {
            None
        };
        let verifier = self.sealed(97);
        let events = vec![
            Event::DirectoryUserCreated(DirectoryUserCreated {
                user_id: user,
                first_name: "Billy".into(),
                last_name: format!("User {n}"),
                username: username.clone(),
                email: format!("{username}@customer.example"),
                personal_email: personal,
            }),
            Event::PasswordSet(PasswordSet {
                user_id: user,
                verifier,
                password_version: 1,
                must_change: false,
            }),
        ];
        let customer = &mut self.msps[m].customers[c];
        customer.users.push((user, username, 1, true));
        Action {
            appends: vec![(customer.id, events)],
            delete: None,
        }
    }

    fn change_user(&mut self, m: usize, c: usize) -> Action {
        if self.msps[m].customers[c].users.is_empty() {
            return self.create_user(m, c);
        }
        let u = self.below(self.msps[m].customers[c].users.len());
        let roll = self.below(10);
        let verifier = self.sealed(97);
        let customer = &mut self.msps[m].customers[c];
        let id = customer.id;
        let (user, username, version, enabled) = &mut customer.users[u];
        let event = match roll {
            0..=4 => {
                *version += 1;
                Event::PasswordSet(PasswordSet {
                    user_id: *user,
                    verifier,
                    password_version: *version,
                    must_change: false,
                })
            }
            5..=6 => Event::DirectoryUserUpdated(DirectoryUserUpdated {
                user_id: *user,
                first_name: "William".into(),
                last_name: "User".into(),
                email: format!("{username}@customer.example"),
                personal_email: None,
            }),
            7..=8 => {
                *enabled = !*enabled;
                if *enabled {
                    Event::DirectoryUserEnabled(DirectoryUserEnabled { user_id: *user })
                } else {
                    Event::DirectoryUserDisabled(DirectoryUserDisabled { user_id: *user })
                }
            }
            _ => {
                let user = *user;
                customer.users.swap_remove(u);
                Event::DirectoryUserDeleted(DirectoryUserDeleted { user_id: user })
            }
        };
        Action {
            appends: vec![(id, vec![event])],
            delete: None,
        }
    }

    fn login(&mut self, m: usize, c: usize) -> Action {
        let customer = &self.msps[m].customers[c];
        let id = customer.id;
        let (user, username) = match customer.users.first() {
            Some((user, username, _, _)) => (Some(*user), username.clone()),
            None => (None, "nobody".to_owned()),
        };
        let outcome = if user.is_some() {
            AttemptOutcome::Succeeded
        } else {
            AttemptOutcome::UnknownUser
        };
        Action {
            appends: vec![(
                id,
                vec![Event::DesktopLoginRecorded(DesktopLoginRecorded {
                    device_id: DeviceId(self.id()),
                    username,
                    user_id: user,
                    method: DesktopLoginMethod::Password,
                    outcome,
                    local_account: user.map(|_| LocalAccountAction::Takeover),
                })],
            )],
            delete: None,
        }
    }

    /// About `events` events as commits of up to `per_commit` events each (actions merged
    /// per stream; a deletion commits alone with its own action).
    pub fn commits(&mut self, events: usize, per_commit: usize) -> Vec<Commit> {
        let mut commits = Vec::new();
        let mut pending: Vec<(TenantId, Vec<NewEvent>)> = Vec::new();
        let mut pending_events = 0;
        let mut written = 0;
        while written < events {
            let action = self.action();
            let at = self.now();
            let appends: Vec<(TenantId, Vec<NewEvent>)> = action
                .appends
                .iter()
                .map(|(tenant, events)| {
                    let new = events
                        .iter()
                        .filter_map(|e| codec::encode(e, Uuid::now_v7(), at, "user:bench").ok())
                        .collect();
                    (*tenant, new)
                })
                .collect();
            let count: usize = appends.iter().map(|(_, e)| e.len()).sum();
            written += count;
            if let Some(deleted) = action.delete {
                // A stream deleted in this commit may not also be appended to in it.
                pending.retain(|(tenant, _)| *tenant != deleted);
                if !pending.is_empty() {
                    commits.push(to_commit(std::mem::take(&mut pending), None));
                }
                pending_events = 0;
                commits.push(to_commit(appends, Some(deleted)));
                continue;
            }
            for (tenant, events) in appends {
                match pending.iter_mut().find(|(t, _)| *t == tenant) {
                    Some((_, existing)) => existing.extend(events),
                    None => pending.push((tenant, events)),
                }
            }
            pending_events += count;
            if pending_events >= per_commit {
                commits.push(to_commit(std::mem::take(&mut pending), None));
                pending_events = 0;
            }
        }
        if !pending.is_empty() {
            commits.push(to_commit(pending, None));
        }
        commits
    }
}

fn to_commit(appends: Vec<(TenantId, Vec<NewEvent>)>, delete: Option<TenantId>) -> Commit {
    let mut commit = Commit::new();
    for (tenant, events) in appends {
        commit = commit.append(StreamAppend::new(StreamId(tenant.0), Expected::Any).events(events));
    }
    if let Some(tenant) = delete {
        commit = commit.delete(StreamId(tenant.0));
    }
    commit
}
