//! The store's two database engines behind one small interface: SQLite (the
//! embedded default) and PostgreSQL 15 (the engine of an HA group, whose
//! streaming replication carries the store to the failovers).
//!
//! The store's SQL is written once, in the dialect both engines share
//! (`INSERT … ON CONFLICT`, `RETURNING`, `COALESCE`, integers for flags).
//! What still differs is translated here for PostgreSQL, once per statement
//! text and cached: SQLite's `?N` placeholders become `$N`, `instr(` becomes
//! `strpos(`, and `LIKE` (case-insensitive for ASCII in SQLite) becomes
//! `ILIKE`. Every value crosses as [`Value`], SQLite's five storage classes;
//! PostgreSQL booleans read as integers 0/1, as SQLite stores them.
//!
//! A write transaction holds the store's exclusive write lock from its first
//! statement: SQLite's `BEGIN IMMEDIATE`, or on PostgreSQL a transaction-level
//! advisory lock taken first, so writers from every process (keyd, the CLI)
//! run one at a time on either engine, as the store's rules assume. A read
//! transaction is a consistent snapshot (`REPEATABLE READ` on PostgreSQL).

use std::cell::RefCell;
use std::collections::HashMap;

use postgres::types::{IsNull, ToSql, Type, to_sql_checked};

/// The advisory-lock key every PostgreSQL write transaction takes first
/// ("CUSTOS" in ASCII): the single-writer rule of the store.
const WRITE_LOCK: i64 = 0x4355_5354_4F53;

/// A failure of the database engine, or of reading what it returned.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("query returned no rows")]
    NoRows,
    #[error("{0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("{}", pg_text(.0))]
    Postgres(#[from] postgres::Error),
    #[error("column {column}: expected {wanted}, found {found}")]
    Type {
        column: usize,
        wanted: &'static str,
        found: &'static str,
    },
    #[error("{0}")]
    Unsupported(String),
    /// A write transaction asked of a PostgreSQL standby (an HA failover).
    #[error("the database is a read-only standby")]
    Standby,
}

/// PostgreSQL's own message (the driver's Display says only "db error").
fn pg_text(e: &postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{}: {}", db.code().code(), db.message()),
        None => e.to_string(),
    }
}

impl DbError {
    /// The database refused the write for lack of space (SQLite's
    /// SQLITE_FULL, PostgreSQL's class 53 "insufficient resources").
    pub fn is_disk_full(&self) -> bool {
        match self {
            DbError::Sqlite(rusqlite::Error::SqliteFailure(e, _)) => {
                e.code == rusqlite::ErrorCode::DiskFull
            }
            DbError::Postgres(e) => e
                .as_db_error()
                .is_some_and(|d| d.code().code().starts_with("53")),
            _ => false,
        }
    }

    /// PostgreSQL refused a write because the server is a read-only standby
    /// (SQLSTATE 25006, or found so when the transaction began).
    pub fn is_read_only(&self) -> bool {
        match self {
            DbError::Standby => true,
            DbError::Postgres(e) => e
                .as_db_error()
                .is_some_and(|d| d.code() == &postgres::error::SqlState::READ_ONLY_SQL_TRANSACTION),
            _ => false,
        }
    }
}

pub type DbResult<T> = std::result::Result<T, DbError>;

/// `query_row(..).optional()`: no row is `None`, not an error.
pub trait OptionalExtension<T> {
    fn optional(self) -> DbResult<Option<T>>;
}

impl<T> OptionalExtension<T> for DbResult<T> {
    fn optional(self) -> DbResult<Option<T>> {
        match self {
            Ok(v) => Ok(Some(v)),
            Err(DbError::NoRows) => Ok(None),
            Err(e) => Err(e),
        }
    }
}

/// One value, in SQLite's storage classes.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Int(i64),
    Real(f64),
    Text(String),
    Blob(Vec<u8>),
}

impl Value {
    fn kind(&self) -> &'static str {
        match self {
            Value::Null => "NULL",
            Value::Int(_) => "an integer",
            Value::Real(_) => "a real",
            Value::Text(_) => "text",
            Value::Blob(_) => "a blob",
        }
    }
}

pub trait ToValue {
    fn to_value(&self) -> Value;
}

macro_rules! int_to_value {
    ($($t:ty),*) => {$(
        impl ToValue for $t {
            fn to_value(&self) -> Value {
                Value::Int(i64::from(*self))
            }
        }
    )*};
}
int_to_value!(i64, i32, i16, i8, u32, u16, u8);

impl ToValue for u64 {
    fn to_value(&self) -> Value {
        Value::Int(i64::try_from(*self).unwrap_or(i64::MAX))
    }
}
impl ToValue for usize {
    fn to_value(&self) -> Value {
        Value::Int(i64::try_from(*self).unwrap_or(i64::MAX))
    }
}
impl ToValue for bool {
    fn to_value(&self) -> Value {
        Value::Int(i64::from(*self))
    }
}
impl ToValue for f64 {
    fn to_value(&self) -> Value {
        Value::Real(*self)
    }
}
impl ToValue for str {
    fn to_value(&self) -> Value {
        Value::Text(self.to_owned())
    }
}
impl ToValue for String {
    fn to_value(&self) -> Value {
        Value::Text(self.clone())
    }
}
impl ToValue for [u8] {
    fn to_value(&self) -> Value {
        Value::Blob(self.to_vec())
    }
}
impl<const N: usize> ToValue for [u8; N] {
    fn to_value(&self) -> Value {
        Value::Blob(self.to_vec())
    }
}
impl ToValue for Vec<u8> {
    fn to_value(&self) -> Value {
        Value::Blob(self.clone())
    }
}
impl ToValue for Value {
    fn to_value(&self) -> Value {
        self.clone()
    }
}
impl<T: ToValue + ?Sized> ToValue for &T {
    fn to_value(&self) -> Value {
        (**self).to_value()
    }
}
impl<T: ToValue> ToValue for Option<T> {
    fn to_value(&self) -> Value {
        match self {
            Some(v) => v.to_value(),
            None => Value::Null,
        }
    }
}

/// The parameters of one statement.
pub trait Params {
    fn into_values(self) -> Vec<Value>;
}
impl<T: ToValue, const N: usize> Params for [T; N] {
    fn into_values(self) -> Vec<Value> {
        self.iter().map(ToValue::to_value).collect()
    }
}
impl Params for Vec<Value> {
    fn into_values(self) -> Vec<Value> {
        self
    }
}
impl Params for &[Value] {
    fn into_values(self) -> Vec<Value> {
        self.to_vec()
    }
}
impl Params for &Vec<Value> {
    fn into_values(self) -> Vec<Value> {
        self.clone()
    }
}

/// `params![a, b, c]`: each argument through [`ToValue`].
#[macro_export]
macro_rules! store_params {
    () => { [] as [$crate::store::db::Value; 0] };
    ($($p:expr),+ $(,)?) => { [$($crate::store::db::ToValue::to_value(&$p)),+] };
}
pub use crate::store_params as params;

/// `params_from_iter(values)`: any iterator of values, e.g. a built-up
/// argument list.
pub fn params_from_iter<I>(it: I) -> Vec<Value>
where
    I: IntoIterator,
    I::Item: ToValue,
{
    it.into_iter().map(|v| v.to_value()).collect()
}

/// What a value may be read as.
pub trait FromValue: Sized {
    fn from_value(v: &Value, column: usize) -> DbResult<Self>;
}

fn wrong<T>(column: usize, wanted: &'static str, v: &Value) -> DbResult<T> {
    Err(DbError::Type {
        column,
        wanted,
        found: v.kind(),
    })
}

impl FromValue for i64 {
    fn from_value(v: &Value, column: usize) -> DbResult<Self> {
        match v {
            Value::Int(i) => Ok(*i),
            _ => wrong(column, "an integer", v),
        }
    }
}

macro_rules! int_from_value {
    ($($t:ty),*) => {$(
        impl FromValue for $t {
            fn from_value(v: &Value, column: usize) -> DbResult<Self> {
                let i = i64::from_value(v, column)?;
                <$t>::try_from(i).map_err(|_| DbError::Type {
                    column,
                    wanted: stringify!($t),
                    found: "an integer out of its range",
                })
            }
        }
    )*};
}
int_from_value!(i32, i16, u8, u16, u32, u64, usize);

impl FromValue for bool {
    fn from_value(v: &Value, column: usize) -> DbResult<Self> {
        Ok(i64::from_value(v, column)? != 0)
    }
}
impl FromValue for f64 {
    fn from_value(v: &Value, column: usize) -> DbResult<Self> {
        match v {
            Value::Real(f) => Ok(*f),
            // SQLite hands an integral REAL back as an integer.
            #[allow(clippy::cast_precision_loss)]
            Value::Int(i) => Ok(*i as f64),
            _ => wrong(column, "a real", v),
        }
    }
}
impl FromValue for String {
    fn from_value(v: &Value, column: usize) -> DbResult<Self> {
        match v {
            Value::Text(s) => Ok(s.clone()),
            _ => wrong(column, "text", v),
        }
    }
}
impl FromValue for Vec<u8> {
    fn from_value(v: &Value, column: usize) -> DbResult<Self> {
        match v {
            Value::Blob(b) => Ok(b.clone()),
            _ => wrong(column, "a blob", v),
        }
    }
}
impl FromValue for Value {
    fn from_value(v: &Value, _: usize) -> DbResult<Self> {
        Ok(v.clone())
    }
}
impl<T: FromValue> FromValue for Option<T> {
    fn from_value(v: &Value, column: usize) -> DbResult<Self> {
        match v {
            Value::Null => Ok(None),
            _ => T::from_value(v, column).map(Some),
        }
    }
}

/// A column index (the store reads columns by position only).
pub trait RowIndex {
    fn index(self) -> usize;
}
impl RowIndex for usize {
    fn index(self) -> usize {
        self
    }
}

/// One row, its values already read out of the engine.
#[derive(Debug, Clone)]
pub struct Row {
    vals: Vec<Value>,
}

impl Row {
    pub fn get<I: RowIndex, T: FromValue>(&self, i: I) -> DbResult<T> {
        let i = i.index();
        match self.vals.get(i) {
            Some(v) => T::from_value(v, i),
            None => Err(DbError::Unsupported(format!("no column {i}"))),
        }
    }

    pub fn get_ref(&self, i: usize) -> DbResult<&Value> {
        self.vals
            .get(i)
            .ok_or_else(|| DbError::Unsupported(format!("no column {i}")))
    }

    pub fn len(&self) -> usize {
        self.vals.len()
    }

    pub fn is_empty(&self) -> bool {
        self.vals.is_empty()
    }

    pub fn into_values(self) -> Vec<Value> {
        self.vals
    }
}

fn lite_row(r: &rusqlite::Row<'_>, n: usize) -> DbResult<Row> {
    use rusqlite::types::ValueRef;
    let mut vals = Vec::with_capacity(n);
    for i in 0..n {
        vals.push(match r.get_ref(i)? {
            ValueRef::Null => Value::Null,
            ValueRef::Integer(v) => Value::Int(v),
            ValueRef::Real(v) => Value::Real(v),
            ValueRef::Text(t) => Value::Text(String::from_utf8_lossy(t).into_owned()),
            ValueRef::Blob(b) => Value::Blob(b.to_vec()),
        });
    }
    Ok(Row { vals })
}

fn lite_params(vals: &[Value]) -> Vec<rusqlite::types::Value> {
    use rusqlite::types::Value as L;
    vals.iter()
        .map(|v| match v {
            Value::Null => L::Null,
            Value::Int(i) => L::Integer(*i),
            Value::Real(f) => L::Real(*f),
            Value::Text(s) => L::Text(s.clone()),
            Value::Blob(b) => L::Blob(b.clone()),
        })
        .collect()
}

fn pg_row(r: &postgres::Row) -> DbResult<Row> {
    let mut vals = Vec::with_capacity(r.len());
    for (i, c) in r.columns().iter().enumerate() {
        let t = c.type_();
        let v = if *t == Type::INT8 {
            r.try_get::<_, Option<i64>>(i)?.map(Value::Int)
        } else if *t == Type::INT4 {
            r.try_get::<_, Option<i32>>(i)?
                .map(|v| Value::Int(v.into()))
        } else if *t == Type::INT2 {
            r.try_get::<_, Option<i16>>(i)?
                .map(|v| Value::Int(v.into()))
        } else if *t == Type::BOOL {
            r.try_get::<_, Option<bool>>(i)?
                .map(|v| Value::Int(v.into()))
        } else if *t == Type::FLOAT8 {
            r.try_get::<_, Option<f64>>(i)?.map(Value::Real)
        } else if *t == Type::FLOAT4 {
            r.try_get::<_, Option<f32>>(i)?
                .map(|v| Value::Real(v.into()))
        } else if *t == Type::BYTEA {
            r.try_get::<_, Option<Vec<u8>>>(i)?.map(Value::Blob)
        } else if [
            Type::TEXT,
            Type::VARCHAR,
            Type::BPCHAR,
            Type::NAME,
            Type::UNKNOWN,
        ]
        .contains(t)
        {
            r.try_get::<_, Option<String>>(i)?.map(Value::Text)
        } else {
            return Err(DbError::Unsupported(format!(
                "column {} of type {t} (cast it to BIGINT, TEXT or BYTEA)",
                c.name()
            )));
        };
        vals.push(v.unwrap_or(Value::Null));
    }
    Ok(Row { vals })
}

impl ToSql for Value {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut bytes::BytesMut,
    ) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        match self {
            Value::Null => Ok(IsNull::Yes),
            Value::Int(i) => {
                if *ty == Type::INT8 {
                    i.to_sql(ty, out)
                } else if *ty == Type::INT4 {
                    i32::try_from(*i)?.to_sql(ty, out)
                } else if *ty == Type::INT2 {
                    i16::try_from(*i)?.to_sql(ty, out)
                } else if *ty == Type::BOOL {
                    (*i != 0).to_sql(ty, out)
                } else if *ty == Type::FLOAT8 {
                    #[allow(clippy::cast_precision_loss)]
                    (*i as f64).to_sql(ty, out)
                } else if [Type::TEXT, Type::VARCHAR, Type::UNKNOWN].contains(ty) {
                    i.to_string().as_str().to_sql(ty, out)
                } else {
                    Err(format!("an integer given for a parameter of type {ty}").into())
                }
            }
            Value::Real(f) => {
                if *ty == Type::FLOAT8 {
                    f.to_sql(ty, out)
                } else {
                    Err(format!("a real given for a parameter of type {ty}").into())
                }
            }
            Value::Text(s) => s.as_str().to_sql(ty, out),
            Value::Blob(b) => b.as_slice().to_sql(ty, out),
        }
    }

    fn accepts(_: &Type) -> bool {
        true
    }

    to_sql_checked!();
}

/// SQLite's SQL as PostgreSQL reads it (see the module's comment): outside
/// string literals and quoted names, `?N` → `$N`, `?` → the next `$N`,
/// `instr(` → `strpos(`, `LIKE` → `ILIKE`.
pub fn to_postgres(sql: &str) -> String {
    let b = sql.as_bytes();
    let mut out = String::with_capacity(sql.len() + 8);
    let mut i = 0;
    let mut highest = 0u32;
    let word_at = |i: usize, w: &str| {
        let end = i + w.len();
        end <= b.len()
            && b[i..end].eq_ignore_ascii_case(w.as_bytes())
            && (i == 0 || !is_word(b[i - 1]))
            && (end == b.len() || !is_word(b[end]))
    };
    while i < b.len() {
        let c = b[i];
        match c {
            b'\'' | b'"' => {
                let start = i;
                i += 1;
                while i < b.len() && b[i] != c {
                    i += 1;
                }
                i = (i + 1).min(b.len());
                out.push_str(&sql[start..i]);
            }
            b'-' if b.get(i + 1) == Some(&b'-') => {
                let start = i;
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
                out.push_str(&sql[start..i]);
            }
            b'?' => {
                let start = i + 1;
                let mut j = start;
                while j < b.len() && b[j].is_ascii_digit() {
                    j += 1;
                }
                let n = if j > start {
                    sql[start..j].parse().unwrap_or(0)
                } else {
                    highest + 1
                };
                highest = highest.max(n);
                out.push('$');
                out.push_str(&n.to_string());
                i = j;
            }
            _ if word_at(i, "instr") && b.get(i + 5) == Some(&b'(') => {
                out.push_str("strpos");
                i += 5;
            }
            _ if word_at(i, "like") => {
                out.push_str("ILIKE");
                i += 4;
            }
            _ => {
                let ch = sql[i..].chars().next().unwrap_or(' ');
                out.push(ch);
                i += ch.len_utf8();
            }
        }
    }
    out
}

fn is_word(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_'
}

/// The PostgreSQL connection with its cache of prepared statements.
///
/// The synchronous client drives its connection with a runtime of its own,
/// so it must not be used, or dropped, on a thread that runs async tasks:
/// keyd calls the store on blocking threads, and a connection whose last
/// owner goes away on an async thread is closed on a thread of its own.
pub struct PgConn {
    client: Option<postgres::Client>,
    cache: HashMap<String, postgres::Statement>,
    conninfo: String,
}

impl PgConn {
    pub fn connect(conninfo: &str) -> DbResult<PgConn> {
        let client = postgres::Client::connect(conninfo, postgres::NoTls)?;
        Ok(PgConn {
            client: Some(client),
            cache: HashMap::new(),
            conninfo: conninfo.to_owned(),
        })
    }

    /// Connects again when the server closed the connection (it was
    /// restarted, or promoted with a restart): between transactions only,
    /// so no statement is ever run twice.
    fn reconnect_if_closed(&mut self) -> DbResult<()> {
        if self
            .client
            .as_ref()
            .is_some_and(postgres::Client::is_closed)
        {
            tracing::warn!("the PostgreSQL connection was closed; connecting again");
            self.cache.clear();
            self.client = Some(postgres::Client::connect(&self.conninfo, postgres::NoTls)?);
        }
        Ok(())
    }

    pub fn client(&mut self) -> &mut postgres::Client {
        self.client
            .as_mut()
            .expect("a connection is only taken when dropped")
    }
}

impl Drop for PgConn {
    fn drop(&mut self) {
        if let Some(client) = self.client.take()
            && tokio::runtime::Handle::try_current().is_ok()
        {
            let _ = std::thread::Builder::new()
                .name("pg-close".into())
                .spawn(move || drop(client));
        }
    }
}

/// One open connection of either engine.
pub enum Conn {
    Lite(rusqlite::Connection),
    Pg(Box<PgConn>),
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Conn::Lite(_) => "Conn::Lite",
            Conn::Pg(_) => "Conn::Pg",
        })
    }
}

/// What kind of transaction to open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Holds the store's write lock from the start.
    Write,
    /// A consistent snapshot.
    Read,
}

impl Conn {
    /// Opens a transaction on this connection.
    pub fn begin(&mut self, mode: Mode) -> DbResult<Tx<'_>> {
        match self {
            Conn::Lite(c) => {
                let behaviour = match mode {
                    Mode::Write => rusqlite::TransactionBehavior::Immediate,
                    Mode::Read => rusqlite::TransactionBehavior::Deferred,
                };
                Ok(Tx {
                    inner: Inner::Lite(c.transaction_with_behavior(behaviour)?),
                })
            }
            Conn::Pg(pg) => {
                pg.reconnect_if_closed()?;
                let PgConn { client, cache, .. } = &mut **pg;
                let client = client
                    .as_mut()
                    .expect("a connection is only taken when dropped");
                let mut b = client.build_transaction();
                if mode == Mode::Read {
                    b = b
                        .isolation_level(postgres::IsolationLevel::RepeatableRead)
                        .read_only(true);
                }
                let mut t = b.start()?;
                if mode == Mode::Write {
                    // A standby (an HA failover) takes no write: said at
                    // once, before anything the caller reads or checks.
                    let standby: bool = t.query_one("SELECT pg_is_in_recovery()", &[])?.get(0);
                    if standby {
                        return Err(DbError::Standby);
                    }
                    t.execute("SELECT pg_advisory_xact_lock($1)", &[&WRITE_LOCK])?;
                }
                Ok(Tx {
                    inner: Inner::Pg(RefCell::new(PgTx { t, cache })),
                })
            }
        }
    }

    pub fn is_postgres(&self) -> bool {
        matches!(self, Conn::Pg(_))
    }

    /// One statement in a write transaction of its own.
    pub fn execute(&mut self, sql: &str, p: impl Params) -> DbResult<usize> {
        let tx = self.begin(Mode::Write)?;
        let n = tx.execute(sql, p)?;
        tx.commit()?;
        Ok(n)
    }

    /// Statements without parameters in a write transaction of their own.
    pub fn execute_batch(&mut self, sql: &str) -> DbResult<()> {
        let tx = self.begin(Mode::Write)?;
        tx.execute_batch(sql)?;
        tx.commit()
    }

    /// The first row of a query, in a read transaction of its own.
    pub fn query_row<T>(
        &mut self,
        sql: &str,
        p: impl Params,
        f: impl FnOnce(&Row) -> DbResult<T>,
    ) -> DbResult<T> {
        let tx = self.begin(Mode::Read)?;
        let out = tx.query_row(sql, p, f)?;
        tx.finish()?;
        Ok(out)
    }

    /// Every row of a query, with the column names, in a read transaction
    /// of its own.
    pub fn query_all(&mut self, sql: &str, p: impl Params) -> DbResult<(Vec<String>, Vec<Row>)> {
        let tx = self.begin(Mode::Read)?;
        let cols = tx.column_names(sql)?;
        let rows = tx.query_all(sql, p)?;
        tx.finish()?;
        Ok((cols, rows))
    }
}

struct PgTx<'c> {
    t: postgres::Transaction<'c>,
    cache: &'c mut HashMap<String, postgres::Statement>,
}

impl PgTx<'_> {
    fn statement(&mut self, sql: &str) -> DbResult<postgres::Statement> {
        if let Some(s) = self.cache.get(sql) {
            return Ok(s.clone());
        }
        let s = self.t.prepare(&to_postgres(sql))?;
        // A dynamic statement (a search with its own filters) is prepared
        // each time rather than kept: the cache holds the fixed texts.
        if self.cache.len() < 1024 {
            self.cache.insert(sql.to_owned(), s.clone());
        }
        Ok(s)
    }
}

fn pg_args(vals: &[Value]) -> Vec<&(dyn ToSql + Sync)> {
    vals.iter().map(|v| v as &(dyn ToSql + Sync)).collect()
}

enum Inner<'c> {
    Lite(rusqlite::Transaction<'c>),
    Pg(RefCell<PgTx<'c>>),
}

/// One transaction, of either engine.
pub struct Tx<'c> {
    inner: Inner<'c>,
}

impl<'c> Tx<'c> {
    pub fn is_postgres(&self) -> bool {
        matches!(self.inner, Inner::Pg(_))
    }

    pub fn commit(self) -> DbResult<()> {
        match self.inner {
            Inner::Lite(t) => Ok(t.commit()?),
            Inner::Pg(t) => Ok(t.into_inner().t.commit()?),
        }
    }

    /// Ends a read transaction (nothing to keep).
    pub fn finish(self) -> DbResult<()> {
        match self.inner {
            Inner::Lite(t) => Ok(t.finish()?),
            Inner::Pg(t) => Ok(t.into_inner().t.rollback()?),
        }
    }

    /// Runs a statement; the number of rows it changed.
    pub fn execute(&self, sql: &str, p: impl Params) -> DbResult<usize> {
        let vals = p.into_values();
        match &self.inner {
            Inner::Lite(t) => Ok(t
                .prepare_cached(sql)?
                .execute(rusqlite::params_from_iter(lite_params(&vals)))?),
            Inner::Pg(t) => {
                let mut t = t.borrow_mut();
                let s = t.statement(sql)?;
                let n = t.t.execute(&s, &pg_args(&vals))?;
                Ok(usize::try_from(n).unwrap_or(usize::MAX))
            }
        }
    }

    /// Runs several statements without parameters (migrations).
    pub fn execute_batch(&self, sql: &str) -> DbResult<()> {
        match &self.inner {
            Inner::Lite(t) => Ok(t.execute_batch(sql)?),
            Inner::Pg(t) => Ok(t.borrow_mut().t.batch_execute(sql)?),
        }
    }

    /// Every row of a query.
    pub fn query_all(&self, sql: &str, p: impl Params) -> DbResult<Vec<Row>> {
        let mut rows = vec![];
        self.for_each(sql, p, |r| {
            rows.push(r);
            Ok::<(), DbError>(())
        })?;
        Ok(rows)
    }

    /// Hands each row of a query to `f` as it is read (a table dump that
    /// must not hold the whole table in memory). `f` must not use this
    /// transaction: on PostgreSQL the rows are still arriving on it.
    pub fn for_each<E: From<DbError>>(
        &self,
        sql: &str,
        p: impl Params,
        mut f: impl FnMut(Row) -> Result<(), E>,
    ) -> Result<(), E> {
        let vals = p.into_values();
        match &self.inner {
            Inner::Lite(t) => {
                let mut st = t.prepare_cached(sql).map_err(DbError::from)?;
                let n = st.column_count();
                let mut rows = st
                    .query(rusqlite::params_from_iter(lite_params(&vals)))
                    .map_err(DbError::from)?;
                while let Some(r) = rows.next().map_err(DbError::from)? {
                    f(lite_row(r, n)?)?;
                }
                Ok(())
            }
            Inner::Pg(t) => {
                use postgres::fallible_iterator::FallibleIterator;
                let mut t = t.borrow_mut();
                let s = t.statement(sql)?;
                let mut it =
                    t.t.query_raw(&s, vals.iter().map(|v| v as &(dyn ToSql + Sync)))
                        .map_err(DbError::from)?;
                while let Some(r) = it.next().map_err(DbError::from)? {
                    f(pg_row(&r)?)?;
                }
                Ok(())
            }
        }
    }

    /// The first row of a query through `f`; [`DbError::NoRows`] if none.
    pub fn query_row<T>(
        &self,
        sql: &str,
        p: impl Params,
        f: impl FnOnce(&Row) -> DbResult<T>,
    ) -> DbResult<T> {
        let vals = p.into_values();
        let row = match &self.inner {
            Inner::Lite(t) => {
                let mut st = t.prepare_cached(sql)?;
                let n = st.column_count();
                let mut rows = st.query(rusqlite::params_from_iter(lite_params(&vals)))?;
                match rows.next()? {
                    Some(r) => lite_row(r, n)?,
                    None => return Err(DbError::NoRows),
                }
            }
            Inner::Pg(t) => {
                let mut t = t.borrow_mut();
                let s = t.statement(sql)?;
                // The first row, as SQLite's query_row gives it (more rows
                // are not an error there either).
                match t.t.query(&s, &pg_args(&vals))?.first() {
                    Some(r) => pg_row(r)?,
                    None => return Err(DbError::NoRows),
                }
            }
        };
        f(&row)
    }

    /// The names of a query's columns, in order.
    pub fn column_names(&self, sql: &str) -> DbResult<Vec<String>> {
        match &self.inner {
            Inner::Lite(t) => Ok(t
                .prepare_cached(sql)?
                .column_names()
                .map(str::to_owned)
                .collect()),
            Inner::Pg(t) => {
                let mut t = t.borrow_mut();
                let s = t.statement(sql)?;
                Ok(s.columns().iter().map(|c| c.name().to_owned()).collect())
            }
        }
    }

    /// Whether the store has a table of this name.
    pub fn table_exists(&self, table: &str) -> DbResult<bool> {
        let sql = if self.is_postgres() {
            "SELECT to_regclass(?1) IS NOT NULL"
        } else {
            "SELECT EXISTS(SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?1)"
        };
        self.query_row(sql, [table], |r| r.get(0))
    }

    /// Defers the checks of references to the commit (`true`), or checks
    /// them now and again after each statement (`false`).
    pub fn defer_foreign_keys(&self, on: bool) -> DbResult<()> {
        self.execute_batch(match (self.is_postgres(), on) {
            (false, true) => "PRAGMA defer_foreign_keys = ON",
            (false, false) => "PRAGMA defer_foreign_keys = OFF",
            (true, true) => "SET CONSTRAINTS ALL DEFERRED",
            (true, false) => "SET CONSTRAINTS ALL IMMEDIATE",
        })
    }

    /// After rows were written with explicit ids: the table's next id
    /// follows the highest ever used (PostgreSQL's identity sequence; for
    /// `domains` the ids the audit log names too, as migration 8 does for
    /// SQLite), and at least `floor`. SQLite's AUTOINCREMENT does this by
    /// itself.
    pub fn advance_identity(&self, table: &str, floor: i64) -> DbResult<()> {
        if !self.is_postgres() {
            return Ok(());
        }
        let also = if table == "domains" {
            "(SELECT MAX(domain_id) FROM audit)"
        } else {
            "0"
        };
        self.query_row(
            &format!(
                "SELECT setval(pg_get_serial_sequence('{table}', 'id'),
                    GREATEST(COALESCE((SELECT MAX(id) FROM {table}), 0), COALESCE({also}, 0), {floor},
                             COALESCE(pg_sequence_last_value(pg_get_serial_sequence('{table}', 'id')::regclass), 0), 1))"
            ),
            params![],
            |_| Ok(()),
        )
    }

    /// A statement to run with several parameter sets, in rusqlite's shape.
    pub fn prepare<'t>(&'t self, sql: &str) -> DbResult<Stmt<'t, 'c>> {
        Ok(Stmt {
            tx: self,
            sql: sql.to_owned(),
        })
    }

    pub fn prepare_cached<'t>(&'t self, sql: &str) -> DbResult<Stmt<'t, 'c>> {
        self.prepare(sql)
    }
}

/// A statement of one transaction.
pub struct Stmt<'t, 'c> {
    tx: &'t Tx<'c>,
    sql: String,
}

impl Stmt<'_, '_> {
    pub fn query_map<T>(
        &mut self,
        p: impl Params,
        f: impl FnMut(&Row) -> DbResult<T>,
    ) -> DbResult<std::vec::IntoIter<DbResult<T>>> {
        let rows = self.tx.query_all(&self.sql, p)?;
        Ok(rows.iter().map(f).collect::<Vec<_>>().into_iter())
    }

    pub fn execute(&mut self, p: impl Params) -> DbResult<usize> {
        self.tx.execute(&self.sql, p)
    }

    pub fn column_names(&self) -> DbResult<Vec<String>> {
        self.tx.column_names(&self.sql)
    }
}

#[cfg(test)]
mod tests {
    use super::to_postgres;

    #[test]
    fn placeholders_and_sqlite_words_are_translated_outside_literals() {
        assert_eq!(
            to_postgres(
                "SELECT a FROM t WHERE b = ?1 AND c LIKE ?2 AND d = '?3 like' AND instr(e, ?1) > 0"
            ),
            "SELECT a FROM t WHERE b = $1 AND c ILIKE $2 AND d = '?3 like' AND strpos(e, $1) > 0"
        );
        assert_eq!(to_postgres("LIMIT ? OFFSET ?"), "LIMIT $1 OFFSET $2");
        assert_eq!(to_postgres("x = ?2 AND y = ?"), "x = $2 AND y = $3");
        assert_eq!(
            to_postgres("SELECT liked, instrument(x) FROM t"),
            "SELECT liked, instrument(x) FROM t"
        );
    }
}
