//! Backups and crypto-shredding, end to end: a backup holds no tenant key, the key mirror
//! loses a deleted tenant's key at once and remembers the deletion, and a restore brings the
//! other tenants back with their sealed data while the deleted one, back in the backup's log
//! without its key, is deleted again before idemd serves anyone. A backup is refused without
//! a key mirror, and idemd refuses to run on a backup that was not restored.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};

use api::{Settings, StartError};
use harness::{Platform, Stopped};
use reqwest::Method;
use serde_json::json;

const PASSWORD: &str = "correct horse battery staple";

fn config(data: &Path, mirror: Option<&Path>) -> api::Config {
    Settings {
        data_dir: Some(data.to_path_buf()),
        key_mirror: mirror.map(Path::to_path_buf),
        ..Settings::default()
    }
    .resolve()
    .unwrap()
}

/// The operator log of the data directory `data`, as `idemd export operator` writes it (from
/// the running service if there is one), each line checked against the audit line's schema;
/// and whether `idemd verify operator` finds its chain sound.
async fn operator_log(data: &Path) -> (Vec<serde_json::Value>, bool) {
    let config = config(data, None);
    let mut out = Vec::new();
    let count = api::operator::export(&config, "operator", &mut out)
        .await
        .unwrap();
    let text = String::from_utf8(out).unwrap();
    harness::contract::check_lines(
        &Method::GET,
        "/api/v1/audit/events",
        200,
        "application/x-ndjson",
        &text,
    );
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_eq!(lines.len() as u64, count);
    let checks = api::operator::verify(&config, Some("operator"))
        .await
        .unwrap();
    assert_eq!(checks.len(), 1);
    assert_eq!(checks[0].tenant, uuid::Uuid::nil());
    assert_eq!(checks[0].events, count);
    (lines, checks[0].is_valid())
}

/// An exported event's time, as Unix seconds.
fn unix_seconds(event: &serde_json::Value) -> u64 {
    let at = chrono::DateTime::parse_from_rfc3339(event["occurred_at"].as_str().unwrap()).unwrap();
    u64::try_from(at.timestamp()).unwrap()
}

fn files(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect()
}

/// Sets up customer `host` as its `admin`: the local user source, the master key on (its
/// first version), password desktop login, and Billy with a password sealed by the key.
/// Answers Billy's id.
async fn billy_with_a_sealed_password(platform: &Platform, admin: &str, host: &str) -> String {
    let call = |method, path: &str, body| platform.call_as(admin, method, host, path, body);
    for (path, body) in [
        ("/api/v1/settings/user-source", json!({"source": "local"})),
        ("/api/v1/settings/master-key", json!({"enabled": true})),
        (
            "/api/v1/settings/desktop-login",
            json!({"enabled": true, "method": "password"}),
        ),
    ] {
        let (status, answer) = call(Method::PUT, path, Some(body)).await;
        assert_eq!(status, 200, "{path}: {answer}");
        if path.ends_with("master-key") {
            assert_eq!(answer["key_version"], 1, "{answer}");
        }
    }
    let (status, billy) = call(
        Method::POST,
        "/api/v1/users",
        Some(
            json!({"first_name": "Billy", "last_name": "Jones", "username": "billy",
                     "email": "billy@example.com", "password": PASSWORD}),
        ),
    )
    .await;
    assert_eq!(status, 201, "{billy}");
    billy["id"].as_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_tenant_deleted_after_a_backup_is_deleted_again_when_it_is_restored() {
    let apart = tempfile::tempdir().unwrap();
    let mirror = apart.path().join("keys.json");
    let backup = apart.path().join("backups").join("monday");
    let with_mirror = mirror.clone();
    let platform = Platform::start_with(|s| s.key_mirror = Some(with_mirror)).await;
    let (phone, msp) = platform.acme_with_contoso("alice@acme.example").await;
    platform.add_customer(&msp, "fabrikam", "Fabrikam").await;

    // Each customer: the master key on, and Billy with a password sealed by it.
    let mut customers = Vec::new();
    for host in ["contoso-acme", "fabrikam-acme"] {
        let admin = platform.login(&phone, host).await;
        let billy = billy_with_a_sealed_password(&platform, &admin, host).await;
        let (_, me) = platform
            .call_as(&admin, Method::GET, host, "/api/v1/me", None)
            .await;
        let tenant: uuid::Uuid = me["tenant"]["id"].as_str().unwrap().parse().unwrap();
        customers.push((host, tenant, billy));
    }
    let (contoso, fabrikam) = (customers[0].1, customers[1].1);

    assert_eq!(
        platform.gauge("idem_last_backup_timestamp_seconds").await,
        Some(0),
        "no backup yet"
    );
    // The backup, through the running service: no key in it, both in the mirror.
    let done = api::operator::backup(&config(&platform.dir, Some(&mirror)), &backup)
        .await
        .unwrap();
    assert_eq!((done.keys_left_out, done.mirrored_keys), (2, 2));
    // The operator log records it, after the copy's head (the copy does not hold it).
    let (recorded, sound) = operator_log(&platform.dir).await;
    assert!(sound);
    assert_eq!(recorded.len(), 1, "{recorded:?}");
    assert_eq!(recorded[0]["type"], "BackupWritten");
    assert_eq!(
        recorded[0]["actor"],
        api::operator_identity::OperatorIdentity::of_this_process().actor()
    );
    assert_eq!(
        recorded[0]["data"],
        json!({"directory": backup.display().to_string(), "head_position": done.head,
               "events": done.events})
    );
    assert!(recorded[0]["position"].as_u64().unwrap() > done.head);
    assert_eq!(
        platform.gauge("idem_last_backup_timestamp_seconds").await,
        Some(unix_seconds(&recorded[0]))
    );
    let mirrored = api::key_mirror::read(&mirror).unwrap().keys;
    assert_eq!(mirrored.len(), 2);
    for file in files(&backup) {
        let bytes = std::fs::read(&file).unwrap();
        for (tenant, key) in &mirrored {
            assert!(
                !bytes.windows(key.wrapped.len()).any(|w| w == key.wrapped),
                "{} holds tenant {tenant}'s key",
                file.display()
            );
        }
    }

    // Fabrikam is deleted after the backup: its key leaves the key store and the mirror.
    let (status, _) = platform
        .call_as(
            &msp,
            Method::DELETE,
            "acme",
            "/api/v1/customers/fabrikam",
            None,
        )
        .await;
    assert_eq!(status, 204);
    let mirrored = api::key_mirror::read(&mirror).unwrap();
    let keys: Vec<uuid::Uuid> = mirrored.keys.iter().map(|(tenant, _)| tenant.0).collect();
    assert_eq!(keys, vec![contoso]);
    let deleted: Vec<uuid::Uuid> = mirrored.deleted.iter().map(|tenant| tenant.0).collect();
    assert_eq!(deleted, vec![fabrikam]);
    let old = platform.stop().await;

    // The machine is lost; the backup, the mirror and the root key restore it elsewhere.
    let fresh = tempfile::tempdir().unwrap();
    std::fs::copy(old.dir.join("root.key"), fresh.path().join("root.key")).unwrap();
    // Read models left in the way would show what the restored log does not hold.
    std::fs::create_dir(fresh.path().join("readmodels")).unwrap();
    let err = api::operator::restore(&config(fresh.path(), Some(&mirror)), &backup)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("readmodels"), "{err}");
    assert!(!fresh.path().join("log").exists());
    std::fs::remove_dir(fresh.path().join("readmodels")).unwrap();
    let restored = api::operator::restore(&config(fresh.path(), Some(&mirror)), &backup)
        .await
        .unwrap();
    assert_eq!(restored.report.restored, 1);
    let missing: Vec<(uuid::Uuid, u32)> = restored
        .report
        .missing
        .iter()
        .map(|(t, v)| (t.0, *v))
        .collect();
    assert_eq!(missing, vec![(fabrikam, 1)]);
    let to_delete: Vec<uuid::Uuid> = restored.to_delete_again.iter().map(|t| t.0).collect();
    assert_eq!(to_delete, vec![fabrikam]);
    assert_eq!(restored.key_mirror, mirror);
    // The restored log's operator log begins where the backup's ended (it held nothing of
    // the operator's yet) with the restore.
    let (recorded, sound) = operator_log(fresh.path()).await;
    assert!(sound);
    let types: Vec<&str> = recorded
        .iter()
        .map(|e| e["type"].as_str().unwrap())
        .collect();
    assert_eq!(types, vec!["BackupRestored"]);
    assert_eq!(
        recorded[0]["data"],
        json!({"backup": backup.display().to_string(), "head_position": done.head,
               "keys_restored": 1, "keys_missing": 1})
    );
    assert_eq!(recorded[0]["position"], done.head + 1);
    // Once there, a log is not restored over.
    let again = api::operator::restore(&config(fresh.path(), Some(&mirror)), &backup)
        .await
        .unwrap_err();
    assert!(again.to_string().contains("already exists"), "{again}");

    let back_mirror = mirror.clone();
    let platform = Stopped::in_dir(fresh.path().to_path_buf())
        .start_with(|s| s.key_mirror = Some(back_mirror))
        .await
        .map_err(|(e, _)| e)
        .unwrap();
    // Contoso is back with its sealed data.
    let (host, _, billy) = &customers[0];
    let admin = platform.login(&phone, host).await;
    let (status, answer) = platform
        .call_as(
            &admin,
            Method::PUT,
            host,
            &format!("/api/v1/users/{billy}/password"),
            Some(json!({"password": "a new password for billy"})),
        )
        .await;
    assert_eq!(status, 204, "{answer}");

    // Fabrikam was deleted again before the service answered anyone: gone from the MSP's
    // customers, its host unknown, its name free, and the MSP's log says who deleted it.
    let msp = platform.login(&phone, "acme").await;
    let (status, list) = platform
        .call_as(&msp, Method::GET, "acme", "/api/v1/customers", None)
        .await;
    assert_eq!(status, 200, "{list}");
    let names: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, vec!["contoso"]);
    let (status, _) =
        Platform::call(platform.request(Method::POST, "fabrikam-acme", "/api/v1/login/challenges"))
            .await;
    assert_eq!(status, 404);
    let msp_log = platform.audit_events(&msp, "acme").await;
    assert!(
        msp_log
            .iter()
            .all(|e| !domain::operator::OPERATOR_EVENTS.contains(&e["type"].as_str().unwrap())),
        "the operator's actions are in no tenant's log"
    );
    let deletions: Vec<serde_json::Value> = msp_log
        .into_iter()
        .filter(|e| e["type"] == "CustomerTenantDeleted")
        .collect();
    assert_eq!(deletions.len(), 1, "{deletions:?}");
    assert_eq!(deletions[0]["actor"], api::redelete::ACTOR);
    assert_eq!(deletions[0]["data"]["customer_id"], fabrikam.to_string());
    let (status, body) = platform
        .call_as(
            &msp,
            Method::POST,
            "acme",
            "/api/v1/customers",
            Some(json!({"name": "fabrikam", "display_name": "Fabrikam again"})),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    // The mirror kept Contoso's key and the deletion; a restart deletes nothing more.
    let kept = api::key_mirror::read(&mirror).unwrap();
    assert_eq!(kept.keys.len(), 1);
    assert_eq!(kept.deleted.len(), 1);
    let again_mirror = mirror.clone();
    let platform = platform
        .stop()
        .await
        .start_with(|s| s.key_mirror = Some(again_mirror))
        .await
        .map_err(|(e, _)| e)
        .unwrap();
    let msp = platform.login(&phone, "acme").await;
    let (_, list) = platform
        .call_as(&msp, Method::GET, "acme", "/api/v1/customers", None)
        .await;
    assert_eq!(list.as_array().unwrap().len(), 2, "{list}");
    platform.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_backup_without_a_key_mirror_and_no_service_on_an_unrestored_backup() {
    let platform = Platform::start().await;
    platform.signup("acme", "Acme", "alice@acme.example").await;
    let apart = tempfile::tempdir().unwrap();
    let refused = apart.path().join("refused");
    let err = api::operator::backup(&config(&platform.dir, None), &refused)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("IDEM_KEY_MIRROR"), "{err}");
    assert!(!refused.exists());
    let stopped = platform.stop().await;

    // Offline, with a mirror; then the backup put in place as a log, not restored.
    let mirror = apart.path().join("keys.json");
    let backup = apart.path().join("backup");
    let done = api::operator::backup(&config(&stopped.dir, Some(&mirror)), &backup)
        .await
        .unwrap();
    assert_eq!(done.keys_left_out, 0);
    let copied = tempfile::tempdir().unwrap();
    std::fs::rename(&backup, copied.path().join("log")).unwrap();
    std::fs::copy(stopped.dir.join("root.key"), copied.path().join("root.key")).unwrap();
    let (err, _) = Stopped::in_dir(copied.path().to_path_buf())
        .start_with(|_| {})
        .await
        .err()
        .unwrap();
    assert!(matches!(err, StartError::UnrestoredBackup(..)), "{err}");
    assert!(err.to_string().contains("idemd restore"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idemd_does_not_start_while_a_tenant_it_must_delete_again_cannot_be() {
    let platform = Platform::start().await;
    let signed_up = platform.signup("acme", "Acme", "alice@acme.example").await;
    let acme = signed_up["tenant"]["id"].as_str().unwrap().to_owned();
    let stopped = platform.stop().await;

    // A mirror that says the MSP itself was deleted (no command deletes an MSP): idemd
    // cannot delete it again the way it deletes customers, and must not serve it either.
    let apart = tempfile::tempdir().unwrap();
    let mirror = apart.path().join("keys.json");
    std::fs::write(
        &mirror,
        format!(
            r#"{{"format": "idem-key-mirror", "version": 2, "keys": [], "deleted": ["{acme}"]}}"#
        ),
    )
    .unwrap();
    let refused_with = mirror.clone();
    let (err, stopped) = stopped
        .start_with(|s| s.key_mirror = Some(refused_with))
        .await
        .err()
        .unwrap();
    assert!(matches!(err, StartError::Redelete(_)), "{err}");
    let message = err.to_string();
    assert!(message.contains(&acme), "{message}");
    assert!(message.contains("only customer tenants"), "{message}");

    // Without that mirror, the MSP is served as before: nothing of it was deleted.
    let platform = stopped
        .start_with(|_| {})
        .await
        .map_err(|(e, _)| e)
        .unwrap();
    let (status, _) = Platform::call(
        platform
            .request(Method::POST, "acme", "/api/v1/login/challenges")
            .json(&json!({"purpose": "portal"})),
    )
    .await;
    assert_eq!(status, 201);
    platform.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deletion_the_mirror_missed_is_reported_and_caught_up() {
    let apart = tempfile::tempdir().unwrap();
    let folder = apart.path().join("mirror");
    std::fs::create_dir(&folder).unwrap();
    let mirror = folder.join("keys.json");
    let with_mirror = mirror.clone();
    let platform = Platform::start_with(|s| s.key_mirror = Some(with_mirror)).await;
    let (_, msp) = platform.acme_with_contoso("alice@acme.example").await;
    let ready = || async {
        let (status, body) = Platform::call(platform.request(Method::GET, "", "/readyz")).await;
        assert_eq!(
            status, 200,
            "a mirror behind does not make the service unready: {body}"
        );
        body["key_mirror_current"].clone()
    };
    let gauge = || platform.gauge("idem_key_mirror_current");
    assert_eq!(ready().await, json!(true));
    assert_eq!(gauge().await, Some(1));

    // The mirror's storage goes away; Contoso's deletion cannot reach it.
    let away = apart.path().join("away");
    std::fs::rename(&folder, &away).unwrap();
    std::fs::write(&folder, b"not a directory").unwrap();
    let delete = |name: &str| {
        platform.call_as(
            &msp,
            Method::DELETE,
            "acme",
            &format!("/api/v1/customers/{name}"),
            None,
        )
    };
    assert_eq!(delete("contoso").await.0, 204);
    assert_eq!(ready().await, json!(false));
    assert_eq!(gauge().await, Some(0));

    // Back: the next refresh (here another deletion) records both deletions.
    std::fs::remove_file(&folder).unwrap();
    std::fs::rename(&away, &folder).unwrap();
    platform.add_customer(&msp, "fabrikam", "Fabrikam").await;
    assert_eq!(delete("fabrikam").await.0, 204);
    assert_eq!(ready().await, json!(true));
    assert_eq!(gauge().await, Some(1));
    assert_eq!(api::key_mirror::read(&mirror).unwrap().deleted.len(), 2);
    platform.stop().await;
}

/// The root key is replaced while idemd serves (`idemd rotate-root-key` through the control
/// socket): the tenant's data key is wrapped again by the new key, in the key store and in the
/// key mirror, so what it sealed before (Billy's password) still opens, now and after a
/// restart, a new master key is wrapped by the new root key, and the old root key no longer
/// starts idemd.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_root_key_is_rotated_while_idemd_serves() {
    let apart = tempfile::tempdir().unwrap();
    let mirror = apart.path().join("keys.json");
    let with_mirror = mirror.clone();
    let platform = Platform::start_with(|s| s.key_mirror = Some(with_mirror)).await;
    let (phone, msp) = platform.acme_with_contoso("alice@acme.example").await;
    let host = "contoso-acme";
    let admin = platform.login(&phone, host).await;
    billy_with_a_sealed_password(&platform, &admin, host).await;
    let (_, token) = platform
        .call_as(
            &admin,
            Method::POST,
            host,
            "/api/v1/agent/enrollment-tokens",
            None,
        )
        .await;
    let (status, device) = Platform::call(
        platform
            .request(Method::POST, host, "/api/v1/agent/enroll")
            .json(&json!({"enrollment_token": token["token"], "hostname": "WS-01"})),
    )
    .await;
    assert_eq!(status, 201, "{device}");
    let device_token = device["device_token"].as_str().unwrap().to_owned();
    let agent_login = |platform: &Platform| {
        Platform::call(
            platform
                .request(Method::POST, host, "/api/v1/agent/login")
                .bearer_auth(&device_token)
                .json(&json!({"username": "billy", "password": PASSWORD,
                              "local_account_exists": false})),
        )
    };

    let key_file = platform.dir.join("root.key");
    let old = api::root_key::read_file(&key_file).unwrap().unwrap();
    // Readiness names the key in use; the gauge says no rotation is unfinished.
    let key_in_use = || async {
        let (_, ready) = Platform::call(platform.request(Method::GET, "", "/readyz")).await;
        let rotating = platform.gauge("idem_root_key_rotating").await;
        (
            ready["root_key_id"].clone(),
            ready["root_key_rotating"].clone(),
            rotating,
        )
    };
    assert_eq!(key_in_use().await, (json!(old.id()), json!(false), Some(0)));
    let rotated_at = "idem_last_root_key_rotation_timestamp_seconds";
    assert_eq!(platform.gauge(rotated_at).await, Some(0), "never rotated");
    let done = api::operator::rotate_root_key(&config(&platform.dir, Some(&mirror)))
        .await
        .unwrap();
    let new = api::root_key::read_file(&key_file).unwrap().unwrap();
    assert_eq!(done.rotated.previous_key_id, old.id());
    assert_eq!(done.rotated.key_id, new.id());
    assert_ne!(new.id(), old.id());
    assert_eq!(key_in_use().await, (json!(new.id()), json!(false), Some(0)));
    assert_eq!(done.rotated.rewrapped, 1);
    assert_eq!(done.key_mirror.as_deref(), Some(mirror.as_path()));
    assert!(done.key_mirror_current);
    let mirrored = api::key_mirror::read(&mirror).unwrap().keys;
    assert_eq!(mirrored.len(), 1);
    assert!(mirrored.iter().all(|(_, key)| new.wrapped(&key.wrapped)));
    // The operator log records the rotation by the keys' public ids, and nothing secret.
    let (recorded, sound) = operator_log(&platform.dir).await;
    assert!(sound);
    assert_eq!(recorded.len(), 1, "{recorded:?}");
    assert_eq!(recorded[0]["type"], "RootKeyRotated");
    assert_eq!(
        recorded[0]["actor"],
        api::operator_identity::OperatorIdentity::of_this_process().actor()
    );
    assert_eq!(
        recorded[0]["data"],
        json!({"previous_key_id": old.id(), "key_id": new.id()})
    );
    assert_eq!(
        platform.gauge(rotated_at).await,
        Some(unix_seconds(&recorded[0]))
    );

    // Billy's password, sealed before, still checks; a new customer's master key is wrapped
    // by the new root key and seals a password.
    let (status, answer) = agent_login(&platform).await;
    assert_eq!(status, 200, "{answer}");
    platform.add_customer(&msp, "fabrikam", "Fabrikam").await;
    let other = platform.login(&phone, "fabrikam-acme").await;
    let (status, _) = platform
        .call_as(
            &other,
            Method::PUT,
            "fabrikam-acme",
            "/api/v1/settings/master-key",
            Some(json!({"enabled": true})),
        )
        .await;
    assert_eq!(status, 200);
    let (status, answer) = platform
        .call_as(
            &other,
            Method::POST,
            "fabrikam-acme",
            "/api/v1/users",
            Some(
                json!({"first_name": "Ann", "last_name": "Lee", "username": "ann",
                         "email": "ann@example.com", "password": PASSWORD}),
            ),
        )
        .await;
    assert_eq!(status, 201, "{answer}");

    // After a restart, the same, and the mirror (refreshed at start) holds both keys as the
    // new root key wrapped them; with the old key back in the file, idemd does not start.
    let stopped = platform.stop().await;
    let again_mirror = mirror.clone();
    let platform = stopped
        .start_with(|s| s.key_mirror = Some(again_mirror))
        .await
        .map_err(|(e, _)| e)
        .unwrap();
    let (status, answer) = agent_login(&platform).await;
    assert_eq!(status, 200, "{answer}");
    let mirrored = api::key_mirror::read(&mirror).unwrap().keys;
    assert_eq!(mirrored.len(), 2);
    assert!(mirrored.iter().all(|(_, key)| new.wrapped(&key.wrapped)));
    let stopped = platform.stop().await;
    api::root_key::write_private_file(&key_file, old.to_file_contents().as_bytes()).unwrap();
    let (refused, _) = stopped.start_with(|_| {}).await.err().unwrap();
    assert!(
        refused
            .to_string()
            .contains("does not open the tenant keys"),
        "{refused}"
    );
}
