//! Where read models live, and their generations.
//!
//! Each projection has its own database: an SQLite file `{projection}.g{N}.sqlite` in a
//! directory, or a PostgreSQL schema `{prefix}{projection}_g{N}`. `N` is the generation: a
//! rebuild fills generation `N + 1` beside the one being served, marks it active once it has
//! caught up, and removes the old one. At start the highest active generation is served and
//! every other one (an interrupted rebuild, an old generation not yet removed) is removed.
//!
//! All SQL goes through sqlx's `Any` driver with `$1` placeholders, which both databases
//! accept, so every query is written once; the schemas are sqlx migrations, one set per
//! database.

use std::path::{Path, PathBuf};
use std::time::Duration;

use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::migrate::Migrator;
use sqlx::{AnyConnection, AnyPool, ConnectOptions, Connection, Executor, Row};

use crate::error::{Error, Result};
use crate::projection::Projection;

static SQLITE_DIRECTORY: Migrator = sqlx::migrate!("migrations/sqlite/directory");
static SQLITE_AUDIT: Migrator = sqlx::migrate!("migrations/sqlite/audit");
static POSTGRES_DIRECTORY: Migrator = sqlx::migrate!("migrations/postgres/directory");
static POSTGRES_AUDIT: Migrator = sqlx::migrate!("migrations/postgres/audit");

/// Where the read models are kept.
#[derive(Clone, Debug)]
pub enum Backend {
    /// SQLite files in `dir` (the embedded default: `$IDEM_DATA_DIR/readmodels`).
    Sqlite { dir: PathBuf },
    /// PostgreSQL at `url`, in schemas whose names start with `schema_prefix` (lowercase
    /// letters, digits and `_`; `idem_` by default), so that several deployments or tests can
    /// share one database.
    Postgres { url: String, schema_prefix: String },
}

/// One generation of one projection's database, with its connection pool.
#[derive(Debug)]
pub(crate) struct Generation {
    pub(crate) number: u64,
    pub(crate) pool: AnyPool,
}

impl Backend {
    /// SQLite in `dir`, or PostgreSQL if `database_url` is given.
    pub fn from_config(dir: &Path, database_url: Option<&str>) -> Result<Backend> {
        match database_url {
            None => Ok(Backend::Sqlite {
                dir: dir.to_path_buf(),
            }),
            Some(url) if url.starts_with("postgres://") || url.starts_with("postgresql://") => {
                Ok(Backend::Postgres {
                    url: url.to_owned(),
                    schema_prefix: "idem_".to_owned(),
                })
            }
            Some(_) => Err(Error::Config(
                "the database URL must start with postgres:// or postgresql://".into(),
            )),
        }
    }

    /// Checks the settings and prepares the location (creates the SQLite directory).
    pub(crate) fn prepare(&self) -> Result<()> {
        sqlx::any::install_default_drivers();
        match self {
            Backend::Sqlite { dir } => {
                std::fs::create_dir_all(dir)?;
                if dir.to_str().is_none() {
                    return Err(Error::Config(format!(
                        "the read-model directory {} is not valid UTF-8",
                        dir.display()
                    )));
                }
                Ok(())
            }
            Backend::Postgres { schema_prefix, .. } => {
                let valid = !schema_prefix.is_empty()
                    && schema_prefix.len() <= 40
                    && schema_prefix
                        .bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
                    && !schema_prefix.as_bytes()[0].is_ascii_digit();
                if valid {
                    Ok(())
                } else {
                    Err(Error::Config(format!(
                        "schema prefix {schema_prefix:?} must be 1 to 40 of a-z, 0-9 and _, not starting with a digit"
                    )))
                }
            }
        }
    }

    /// The generations of `projection` that exist, with whether each is active, by number.
    pub(crate) async fn generations(&self, projection: Projection) -> Result<Vec<(u64, bool)>> {
        let numbers = match self {
            Backend::Sqlite { dir } => {
                let mut numbers = Vec::new();
                for entry in std::fs::read_dir(dir)? {
                    let name = entry?.file_name();
                    let Some(name) = name.to_str() else { continue };
                    if let Some(n) = name
                        .strip_prefix(&format!("{}.g", projection.name()))
                        .and_then(|rest| rest.strip_suffix(".sqlite"))
                        .and_then(|n| n.parse::<u64>().ok())
                    {
                        numbers.push(n);
                    }
                }
                numbers
            }
            Backend::Postgres { url, schema_prefix } => {
                let mut conn = AnyConnection::connect(url).await?;
                let rows = sqlx::query(
                    "SELECT CAST(schema_name AS TEXT) FROM information_schema.schemata",
                )
                .fetch_all(&mut conn)
                .await?;
                conn.close().await?;
                let stem = format!("{schema_prefix}{}_g", projection.name());
                rows.iter()
                    .filter_map(|row| row.try_get::<String, _>(0).ok())
                    .filter_map(|name| name.strip_prefix(&stem).and_then(|n| n.parse().ok()))
                    .collect()
            }
        };
        let mut generations = Vec::new();
        for number in numbers {
            let generation = self.open(projection, number).await?;
            let active = sqlx::query("SELECT active FROM projector_state WHERE singleton = 1")
                .fetch_optional(&generation.pool)
                .await?
                .map(|row| row.try_get::<i64, _>(0))
                .transpose()?
                == Some(1);
            generation.pool.close().await;
            generations.push((number, active));
        }
        generations.sort_unstable();
        Ok(generations)
    }

    /// Opens generation `number` of `projection`, creating and migrating it as needed.
    pub(crate) async fn open(&self, projection: Projection, number: u64) -> Result<Generation> {
        match self {
            Backend::Sqlite { dir } => {
                let path = sqlite_path(dir, projection, number);
                let url = format!("sqlite://{}?mode=rwc", url_path(&path)?);
                let options: AnyConnectOptions = url.parse()?;
                let pool = AnyPoolOptions::new()
                    .max_connections(8)
                    .after_connect(|conn, _| {
                        Box::pin(async move {
                            // WAL: readers never block the projector. NORMAL sync keeps the
                            // file consistent; the last commits may be lost with power, and
                            // are replayed from the log, which is durable.
                            conn.execute("PRAGMA journal_mode = WAL").await?;
                            conn.execute("PRAGMA synchronous = NORMAL").await?;
                            conn.execute("PRAGMA busy_timeout = 10000").await?;
                            // 64 MiB of page cache: projecting touches rows all over the
                            // tables, and SQLite's default of 2 MiB rereads them constantly.
                            conn.execute("PRAGMA cache_size = -65536").await?;
                            // Reads through a memory map rather than copies, and checkpoints
                            // of the WAL every 16 MiB rather than 4.
                            conn.execute("PRAGMA mmap_size = 1073741824").await?;
                            conn.execute("PRAGMA wal_autocheckpoint = 4096").await?;
                            Ok(())
                        })
                    })
                    .connect_with(options.disable_statement_logging())
                    .await?;
                let migrator = match projection {
                    Projection::Directory => &SQLITE_DIRECTORY,
                    Projection::Audit => &SQLITE_AUDIT,
                };
                migrator.run(&pool).await?;
                Ok(Generation { number, pool })
            }
            Backend::Postgres { url, schema_prefix } => {
                let schema = format!("{schema_prefix}{}_g{number}", projection.name());
                let mut conn = AnyConnection::connect(url).await?;
                conn.execute(format!("CREATE SCHEMA IF NOT EXISTS {schema}").as_str())
                    .await?;
                conn.close().await?;
                let options: AnyConnectOptions = url.parse()?;
                let search_path = format!("SET search_path TO {schema}");
                let pool = AnyPoolOptions::new()
                    .max_connections(6)
                    .acquire_timeout(Duration::from_secs(10))
                    .after_connect(move |conn, _| {
                        let search_path = search_path.clone();
                        Box::pin(async move {
                            conn.execute(search_path.as_str()).await?;
                            Ok(())
                        })
                    })
                    .connect_with(options.disable_statement_logging())
                    .await?;
                let migrator = match projection {
                    Projection::Directory => &POSTGRES_DIRECTORY,
                    Projection::Audit => &POSTGRES_AUDIT,
                };
                migrator.run(&pool).await?;
                Ok(Generation { number, pool })
            }
        }
    }

    /// Removes generation `number` of `projection` and everything in it.
    pub(crate) async fn remove(&self, projection: Projection, number: u64) -> Result<()> {
        match self {
            Backend::Sqlite { dir } => {
                let path = sqlite_path(dir, projection, number);
                for suffix in ["", "-wal", "-shm"] {
                    let mut file = path.clone().into_os_string();
                    file.push(suffix);
                    match std::fs::remove_file(&file) {
                        Ok(()) => {}
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                        Err(e) => return Err(e.into()),
                    }
                }
                Ok(())
            }
            Backend::Postgres { url, schema_prefix } => {
                let schema = format!("{schema_prefix}{}_g{number}", projection.name());
                let mut conn = AnyConnection::connect(url).await?;
                conn.execute(format!("DROP SCHEMA IF EXISTS {schema} CASCADE").as_str())
                    .await?;
                conn.close().await?;
                Ok(())
            }
        }
    }

    /// Removes every generation of every projection (tests, and `--reset` of a deployment).
    pub async fn remove_all(&self) -> Result<()> {
        self.prepare()?;
        for projection in Projection::ALL {
            for (number, _) in self.generations(projection).await? {
                self.remove(projection, number).await?;
            }
        }
        Ok(())
    }
}

fn sqlite_path(dir: &Path, projection: Projection, number: u64) -> PathBuf {
    dir.join(format!("{}.g{number}.sqlite", projection.name()))
}

/// `path` for a `sqlite://` URL: percent-encodes what a URL would misread.
fn url_path(path: &Path) -> Result<String> {
    let text = path
        .to_str()
        .ok_or_else(|| Error::Config(format!("{} is not valid UTF-8", path.display())))?;
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '%' | '?' | '#' | ' ' => out.push_str(&format!("%{:02X}", c as u32)),
            c => out.push(c),
        }
    }
    Ok(out)
}
