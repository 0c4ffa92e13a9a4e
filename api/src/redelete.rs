//! Deleting again, as idemd starts, the customer tenants a restore brought back.
//!
//! A backup taken before a customer was deleted holds the customer's stream, and its MSP's
//! stream without the deletion. The key mirror remembers every deletion (`crate::key_mirror`),
//! so when the log holds a tenant the mirror knows as deleted, idemd deletes it again through
//! the same command as `DELETE /api/v1/customers/{name}`, before it serves anyone: the MSP's
//! log records the deletion again (by `operator:restore`), the stream, its reservations and
//! read models go, and the tenant's name becomes free again.

use domain::event::Event;
use domain::ids::TenantId;
use eventlog::{EventLog, StreamId};
use projections::codec;

use crate::app::AppState;

/// The actor of a deletion made again after a restore.
pub const ACTOR: &str = "operator:restore";

/// A tenant deleted again.
#[derive(Debug, PartialEq, Eq)]
pub struct DeletedAgain {
    pub customer: TenantId,
    pub msp: TenantId,
    pub name: String,
}

/// Why a tenant could not be deleted again: idemd does not start, as it would serve a tenant
/// that was deleted.
#[derive(Debug, thiserror::Error)]
#[error("tenant {tenant} was deleted, and the restored log holds it again: {reason}")]
pub struct RedeleteError {
    pub tenant: uuid::Uuid,
    pub reason: String,
}

/// Deletes each of `tenants` (streams the key mirror knows as deleted and the log holds)
/// again, in its MSP's stream.
pub async fn delete_again(
    state: &AppState,
    tenants: &[StreamId],
) -> Result<Vec<DeletedAgain>, RedeleteError> {
    let mut deleted = Vec::with_capacity(tenants.len());
    for stream in tenants {
        let failed = |reason: String| RedeleteError {
            tenant: stream.0,
            reason,
        };
        let first = state
            .log
            .read_stream(*stream, 1, 1)
            .await
            .map_err(|e| failed(e.to_string()))?;
        let Some(first) = first.first() else {
            // Gone meanwhile: nothing to do.
            continue;
        };
        let opened = match codec::decode(first).map_err(|e| failed(e.to_string()))? {
            Event::CustomerTenantOpened(opened) => opened,
            other => {
                return Err(failed(format!(
                    "its stream starts with {}, not CustomerTenantOpened: only customer \
                     tenants are deleted",
                    other.type_name()
                )));
            }
        };
        crate::routes::msp::delete_customer_tenant(state, opened.msp_id, opened.tenant_id, ACTOR)
            .await
            .map_err(|problem| failed(problem.detail))?;
        tracing::warn!(
            tenant = %opened.tenant_id.0,
            msp = %opened.msp_id.0,
            name = %opened.name,
            "deleted again: the restored log held a customer tenant deleted after its backup"
        );
        deleted.push(DeletedAgain {
            customer: opened.tenant_id,
            msp: opened.msp_id,
            name: opened.name,
        });
    }
    Ok(deleted)
}
