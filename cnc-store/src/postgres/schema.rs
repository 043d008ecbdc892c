//! Schema creation and versioned migrations.

use cnc_model::store::{SCHEMA_VERSION, StoreError, StoreErrorKind, StoreResult};

use super::error::pg;
use deadpool_postgres::GenericClient;

use super::{Conn, PostgresStore};

/// The migrations, index = version - 1. `@TRGM@` is replaced by the
/// (quoted) schema of the pg_trgm extension.
const MIGRATIONS: [&str; 4] = [
    include_str!("migrations/v1.sql"),
    include_str!("migrations/v2.sql"),
    include_str!("migrations/v3.sql"),
    include_str!("migrations/v4.sql"),
];

/// The version stored in `schema` (0 when it has no `schema_version` table).
pub(crate) async fn read_version<C: GenericClient>(conn: &C, schema: &str) -> StoreResult<u32> {
    let exists: bool = conn
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_tables \
             WHERE schemaname = $1 AND tablename = 'schema_version')",
            &[&schema],
        )
        .await
        .map_err(|e| pg("reading the schema version", e))?
        .get(0);
    if !exists {
        return Ok(0);
    }
    let sql = format!("SELECT coalesce(max(version), 0) FROM \"{schema}\".schema_version");
    let v: i32 = conn
        .query_one(&sql, &[])
        .await
        .map_err(|e| pg("reading the schema version", e))?
        .get(0);
    u32::try_from(v).map_err(|_| {
        StoreError::new(
            StoreErrorKind::Corrupt,
            format!("postgres: negative schema version {v}"),
        )
    })
}

/// Make sure the schema and pg_trgm exist; returns the quoted schema of pg_trgm.
async fn prepare(conn: &Conn, schema: &str, custom: bool) -> StoreResult<String> {
    if custom {
        conn.batch_execute(&format!("CREATE SCHEMA IF NOT EXISTS \"{schema}\""))
            .await
            .or_else(|e| ignore_race(e, "creating the schema"))?;
    }
    let find = "SELECT n.nspname::text FROM pg_catalog.pg_extension e \
                JOIN pg_catalog.pg_namespace n ON n.oid = e.extnamespace \
                WHERE e.extname = 'pg_trgm'";
    let found = conn
        .query_opt(find, &[])
        .await
        .map_err(|e| pg("looking for pg_trgm", e))?;
    let ext_schema: String = match found {
        Some(row) => row.get(0),
        None => {
            // Install it beside the default schema, not in ours: dropping one
            // installation's schema must not take the extension with it.
            conn.batch_execute("CREATE EXTENSION IF NOT EXISTS pg_trgm SCHEMA public")
                .await
                .or_else(|e| ignore_race(e, "creating the pg_trgm extension"))?;
            conn.query_one(find, &[])
                .await
                .map_err(|e| pg("looking for pg_trgm", e))?
                .get(0)
        }
    };
    Ok(format!("\"{}\"", ext_schema.replace('"', "\"\"")))
}

/// Concurrent `CREATE ... IF NOT EXISTS` can still fail with a unique
/// violation when two sessions race; the object exists then, which is fine.
fn ignore_race(e: tokio_postgres::Error, what: &str) -> StoreResult<()> {
    use tokio_postgres::error::SqlState;
    match e.code() {
        Some(c) if *c == SqlState::UNIQUE_VIOLATION || *c == SqlState::DUPLICATE_OBJECT => Ok(()),
        _ => Err(pg(what, e)),
    }
}

async fn run_steps(
    tx: &deadpool_postgres::Transaction<'_>,
    trgm: &str,
    from: u32,
    to: u32,
) -> StoreResult<()> {
    for version in from + 1..=to {
        let Some(sql) = usize::try_from(version - 1)
            .ok()
            .and_then(|i| MIGRATIONS.get(i))
        else {
            return Err(StoreError::new(
                StoreErrorKind::Migration,
                format!("postgres: no migration to version {version}"),
            ));
        };
        tx.batch_execute(&sql.replace("@TRGM@", trgm))
            .await
            .map_err(|e| {
                StoreError::new(
                    StoreErrorKind::Migration,
                    format!("postgres: migration to schema version {version} failed"),
                )
                .with_source(e)
            })?;
        tx.execute(
            "INSERT INTO schema_version (version, applied_at) VALUES ($1, $2)",
            &[&(version as i32), &cnc_model::now()],
        )
        .await
        .map_err(|e| pg("recording the schema version", e))?;
    }
    Ok(())
}

fn too_new(found: u32) -> StoreError {
    StoreError::new(
        StoreErrorKind::SchemaTooNew,
        format!(
            "postgres: the database schema is version {found}, newer than this build of \
             celery-cnc understands (version {SCHEMA_VERSION}); upgrade celery-cnc or use \
             another schema"
        ),
    )
}

/// Serialise migrations of one schema between instances.
async fn lock(tx: &deadpool_postgres::Transaction<'_>, schema: &str) -> StoreResult<()> {
    tx.execute(
        "SELECT pg_advisory_xact_lock(hashtextextended('celery-cnc migrate ' || $1, 0))",
        &[&schema],
    )
    .await
    .map_err(|e| pg("locking for migration", e))?;
    Ok(())
}

/// Create the schema or migrate it to [`SCHEMA_VERSION`].
pub(crate) async fn initialize(store: &PostgresStore) -> StoreResult<()> {
    let mut conn = store.conn().await?;
    let trgm = prepare(&conn, &store.schema, store.custom_schema).await?;
    let tx = conn
        .transaction()
        .await
        .map_err(|e| pg("starting the migration", e))?;
    lock(&tx, &store.schema).await?;
    let current = read_version(&tx, &store.schema).await?;
    if current > SCHEMA_VERSION {
        return Err(too_new(current));
    }
    if current < SCHEMA_VERSION {
        run_steps(&tx, &trgm, current, SCHEMA_VERSION).await?;
    }
    tx.commit()
        .await
        .map_err(|e| pg("committing the migration", e))
}

/// Run migrations `from -> to` in one transaction.
pub(crate) async fn migrate(store: &PostgresStore, from: u32, to: u32) -> StoreResult<()> {
    if from >= to || to > SCHEMA_VERSION {
        return Err(StoreError::invalid(format!(
            "postgres: cannot migrate from {from} to {to} (this build knows up to {SCHEMA_VERSION})"
        )));
    }
    let mut conn = store.conn().await?;
    let trgm = prepare(&conn, &store.schema, store.custom_schema).await?;
    let tx = conn
        .transaction()
        .await
        .map_err(|e| pg("starting the migration", e))?;
    lock(&tx, &store.schema).await?;
    let current = read_version(&tx, &store.schema).await?;
    if current > SCHEMA_VERSION {
        return Err(too_new(current));
    }
    if current != from {
        return Err(StoreError::new(
            StoreErrorKind::Migration,
            format!("postgres: cannot migrate from {from}: the database is at version {current}"),
        ));
    }
    run_steps(&tx, &trgm, from, to).await?;
    tx.commit()
        .await
        .map_err(|e| pg("committing the migration", e))
}
