//! Typed identifiers. All are UUIDs (v7 in the product), made by the caller: the domain makes
//! no ids of its own.

use std::fmt;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

macro_rules! id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub Uuid);

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }
    };
}

id!(
    /// A tenant, MSP or customer; also the name of its event stream.
    TenantId
);
id!(
    /// A user of a tenant: an MSP's technician or admin, or a customer's directory user.
    UserId
);
id!(
    /// An enrolled authenticator device (a phone) or desktop agent.
    DeviceId
);
