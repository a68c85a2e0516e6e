//! Fuzz: seeded random and mutated SQL and URLs through `Database::open`, `execute`,
//! `fetch_all` and `execute_batch`.
//!
//! What must hold for every input: no panic, no hang (each call has a timeout), no error that
//! says litemux blocked itself (busy, lost connection, pool timeout) although nothing outside
//! the process touches the file, no write ever executed on a reader (SQLite's own hooks on
//! the readers count what they changed: [`litemux::Status::reader_writes`]), and the same
//! answer to a read inside and outside a write transaction (both see the writer's session).
//!
//! - CI: `cargo test -p litemux-tests --test reliability fuzz` runs [`CI_INPUTS`] inputs.
//! - Soak: `LITEMUX_FUZZ_INPUTS=200000 cargo test -p litemux-tests --test reliability fuzz --
//!   --ignored`.
//! - Replay: `LITEMUX_FUZZ_SEED=<seed>` (every failure prints its seed and the statements
//!   that led to it).

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::path::Path;
use std::time::{Duration, Instant};

use litemux::{Database, Error, Options, Value};

/// Inputs of the CI run: SQL statements and URLs together.
const CI_INPUTS: usize = 20_000;

/// Inputs of the soak run unless `LITEMUX_FUZZ_INPUTS` says otherwise.
const SOAK_INPUTS: usize = 200_000;

/// Statements run on one database before the next round starts a fresh one, so a state
/// reached by chance (a long table, a temp object, an attachment) does not last forever.
const STATEMENTS_PER_ROUND: usize = 1_000;

/// One URL among this many inputs: opening a database costs threads and files.
const URL_EVERY: usize = 10;

/// Far past anything a statement of the mix needs, even on a loaded machine: a call that
/// takes longer is hanging.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// Stops a statement that would run for ever (a mutated recursive CTE can); the mix's own
/// statements take microseconds.
const STATEMENT_TIMEOUT: Duration = Duration::from_secs(1);

/// The busy timeout of fuzzed databases: a self-inflicted lock shows as an error after this.
const BUSY_TIMEOUT_MS: u64 = 3_000;

/// splitmix64: small, seedable, good enough to pick statements.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        usize::try_from(self.next() % n.max(1) as u64).unwrap_or(0)
    }

    fn chance(&mut self, percent: usize) -> bool {
        self.below(100) < percent
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }

    fn small(&mut self) -> i64 {
        i64::try_from(self.below(20)).unwrap_or(0)
    }
}

/// PRAGMAs of the mix: settings (set in both forms, read bare) and queries with an argument.
const PRAGMAS: &[(&str, &[&str])] = &[
    ("query_only", &["0", "1", "off", "true"]),
    ("user_version", &["0", "7", "-1"]),
    ("cache_size", &["-2000", "100"]),
    ("foreign_keys", &["on", "off"]),
    ("recursive_triggers", &["1", "0"]),
    ("busy_timeout", &["3000", "100"]),
    ("synchronous", &["normal", "full"]),
    ("temp_store", &["memory", "default"]),
    ("automatic_index", &["0", "1"]),
    ("reverse_unordered_selects", &["1", "0"]),
    ("defer_foreign_keys", &["1", "0"]),
    ("locking_mode", &["exclusive", "normal"]),
    ("journal_mode", &["delete", "wal", "truncate"]),
    ("table_info", &["t", "'a'"]),
    ("index_list", &["t"]),
    ("integrity_check", &["1", "t"]),
    ("data_version", &[]),
    ("wal_checkpoint", &["passive", "truncate"]),
    ("optimize", &["0x10002"]),
];

/// Schemas a PRAGMA may name.
const SCHEMAS: &[&str] = &["", "main.", "aux.", "temp."];

/// One statement of the mix of issue 10, defect 15: SELECT, INSERT, WITH, comments, PRAGMA
/// in both forms, ATTACH of a non-WAL file, savepoints, ANALYZE, TEMP objects. `aux` is the
/// path of the file ATTACH names.
fn statement(rng: &mut Rng, aux: &str) -> String {
    let n = rng.small();
    let body = match rng.below(18) {
        0 => "SELECT count(*) FROM t".to_owned(),
        1 => format!("SELECT id, x, s FROM t WHERE id > {n} ORDER BY id LIMIT 3"),
        2 => format!("INSERT INTO t(x, s) VALUES ({n}, 'v{n}')"),
        3 => format!("INSERT INTO t(x) VALUES ({n}) RETURNING id"),
        4 => format!("WITH v(n) AS (SELECT {n}) INSERT INTO t(x) SELECT n FROM v"),
        5 => format!(
            "WITH RECURSIVE c(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM c WHERE n < {n}) \
             SELECT count(*) FROM c"
        ),
        6 => format!("UPDATE t SET x = x + 1 WHERE id = {n}"),
        7 => format!("DELETE FROM t WHERE id = {n}"),
        8 | 9 => pragma(rng),
        10 => format!("ATTACH '{aux}' AS aux"),
        11 => rng.pick(&["DETACH aux", "DETACH DATABASE aux"]).to_string(),
        12 => rng
            .pick(&[
                "CREATE TABLE IF NOT EXISTS aux.a(y)",
                "INSERT INTO aux.a(y) VALUES (1)",
                "SELECT count(*) FROM aux.a",
                "SELECT count(*) FROM a",
            ])
            .to_string(),
        13 => rng
            .pick(&[
                "SAVEPOINT s",
                "RELEASE s",
                "ROLLBACK TO s",
                "BEGIN",
                "COMMIT",
            ])
            .to_string(),
        14 => rng
            .pick(&["ANALYZE", "ANALYZE t", "ANALYZE aux"])
            .to_string(),
        15 => rng
            .pick(&[
                "CREATE TEMP TABLE IF NOT EXISTS t(id INTEGER PRIMARY KEY, x INTEGER, s TEXT)",
                "CREATE TEMP TABLE IF NOT EXISTS scratch(z)",
                "CREATE TEMP VIEW IF NOT EXISTS tv AS SELECT count(*) AS c FROM t",
                "SELECT c FROM tv",
                "DROP TABLE IF EXISTS temp.t",
                "DROP VIEW IF EXISTS temp.tv",
            ])
            .to_string(),
        16 => rng
            .pick(&[
                "CREATE INDEX IF NOT EXISTS t_x ON t(x)",
                "DROP INDEX IF EXISTS t_x",
                "SELECT name FROM sqlite_schema ORDER BY name",
                "SELECT name FROM sqlite_temp_schema ORDER BY name",
            ])
            .to_string(),
        _ => format!("SELECT {n}, 'text', x'00ff', NULL"),
    };
    match rng.below(6) {
        0 => format!("/* c */ {body}"),
        1 => format!("-- lead\n{body}"),
        2 => format!("{body} -- tail"),
        3 => format!("  {body};"),
        _ => body,
    }
}

fn pragma(rng: &mut Rng) -> String {
    let (name, values) = rng.pick(PRAGMAS);
    let schema = if rng.chance(25) {
        *rng.pick(SCHEMAS)
    } else {
        ""
    };
    if values.is_empty() || rng.chance(25) {
        return format!("PRAGMA {schema}{name}");
    }
    let value = rng.pick(values);
    if rng.chance(50) {
        format!("PRAGMA {schema}{name} = {value}")
    } else {
        format!("PRAGMA {schema}{name}({value})")
    }
}

/// Pieces a mutation splices in: SQL's special characters and words, parameters, text SQLite
/// and Rust handle differently (NUL, multi-byte characters).
const SPLICES: &[&str] = &[
    "'",
    "\"",
    "`",
    "[",
    "]",
    "(",
    ")",
    ";",
    "--",
    "/*",
    "*/",
    "?",
    "?2",
    "?999999",
    ":a",
    "@b",
    "$c",
    "\0",
    "é",
    "💥",
    "=",
    ",",
    " ",
    "\n",
    "0",
    "-1",
    "9223372036854775808",
    "1e999",
    " SELECT ",
    " PRAGMA ",
    " RETURNING * ",
    " WITH ",
    " UNION ALL SELECT 1",
    " x",
    " t",
    " NULL",
    " OR ",
    " TEMP ",
    " main.",
    " aux.",
    " temp.",
];

/// `text` after one to three random edits.
fn mutate(rng: &mut Rng, text: &str) -> String {
    let mut chars: Vec<char> = text.chars().collect();
    for _ in 0..=rng.below(3) {
        let at = rng.below(chars.len() + 1);
        match rng.below(5) {
            0 => {
                let piece = rng.pick(SPLICES);
                chars.splice(at..at, piece.chars());
            }
            1 if at < chars.len() => {
                let end = (at + 1 + rng.below(6)).min(chars.len());
                chars.drain(at..end);
            }
            2 if at < chars.len() => {
                let end = (at + 1 + rng.below(8)).min(chars.len());
                let copy: Vec<char> = chars[at..end].to_vec();
                chars.splice(at..at, copy);
            }
            3 => chars.truncate(at),
            _ if at < chars.len() => chars[at] = rng.pick(SPLICES).chars().next().unwrap_or('x'),
            _ => {}
        }
    }
    chars.into_iter().collect()
}

/// How one input is run.
#[derive(Debug, Clone, Copy)]
enum Call {
    Execute,
    FetchAll,
    FetchOptional,
    Batch,
}

/// The outcome of one call, reduced to what the checks look at.
type Outcome = Result<Vec<Vec<Value>>, Error>;

async fn call(db: &Database, how: Call, sql: &str) -> Outcome {
    let rows = |rows: Vec<litemux::Row>| rows.iter().map(litemux::Row::to_values).collect();
    match how {
        Call::Execute => db.execute(sql, ()).await.map(|done| {
            vec![vec![Value::Integer(
                i64::try_from(done.rows_affected).unwrap_or(i64::MAX),
            )]]
        }),
        Call::FetchAll => db.fetch_all(sql, ()).await.map(rows),
        Call::FetchOptional => db
            .fetch_optional(sql, ())
            .await
            .map(|row| row.iter().map(litemux::Row::to_values).collect()),
        Call::Batch => db.execute_batch(sql).await.map(|()| Vec::new()),
    }
}

/// Why an error means litemux failed, not the input: it blocked itself or lost a connection.
fn self_inflicted(error: &Error) -> Option<&'static str> {
    match error {
        e if e.is_busy() => Some("busy although nothing outside the process uses the file"),
        Error::ConnectionLost { .. } => Some("a connection thread died"),
        Error::Timeout { .. } => Some("waited for a connection nothing else uses"),
        Error::Closed => Some("the database closed by itself"),
        _ => None,
    }
}

/// Reads compared inside and outside a write transaction: the answers must agree, since both
/// must see the writer's session (its TEMP objects and attachments).
const PROBES: &[&str] = &[
    "SELECT count(*) FROM t",
    "SELECT id, x FROM t ORDER BY id DESC LIMIT 2",
    "SELECT count(*) FROM aux.a",
    "SELECT c FROM tv",
    "SELECT count(*) FROM scratch",
];

/// What a fuzz run did, for the report.
#[derive(Debug, Default)]
struct Figures {
    statements: usize,
    mutated: usize,
    urls: usize,
    opened: usize,
    errors: usize,
    probes: usize,
}

/// A failure: the seed, what broke, and the statements that led to it.
fn failure(seed: u64, what: &str, recent: &VecDeque<String>) -> String {
    let mut text = format!("fuzz failure (replay with LITEMUX_FUZZ_SEED={seed}): {what}\n");
    for sql in recent {
        let _ = writeln!(text, "  {sql:?}");
    }
    text
}

fn env_number(key: &str) -> Option<u64> {
    std::env::var(key).ok().and_then(|v| v.trim().parse().ok())
}

fn seed() -> u64 {
    env_number("LITEMUX_FUZZ_SEED").unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64)
    })
}

/// The names in the working directory, to check the fuzz created nothing outside its own.
fn working_directory() -> Vec<std::ffi::OsString> {
    let mut names: Vec<_> = std::fs::read_dir(".")
        .map(|dir| dir.filter_map(|e| e.ok().map(|e| e.file_name())).collect())
        .unwrap_or_default();
    names.sort();
    names
}

/// Runs `inputs` inputs from `seed`; the error names the seed and the recent statements.
async fn run(seed: u64, inputs: usize) -> Result<Figures, String> {
    let before = working_directory();
    let figures = run_rounds(seed, inputs).await?;
    let after = working_directory();
    if before != after {
        return Err(format!(
            "fuzz (seed {seed}) created files outside its directory: {:?}",
            after
                .iter()
                .filter(|n| !before.contains(n))
                .collect::<Vec<_>>()
        ));
    }
    Ok(figures)
}

async fn run_rounds(seed: u64, inputs: usize) -> Result<Figures, String> {
    let mut rng = Rng(seed);
    let mut figures = Figures::default();
    let mut done = 0;
    while done < inputs {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let statements = STATEMENTS_PER_ROUND.min(inputs - done);
        let urls = statements / URL_EVERY;
        sql_round(seed, &mut rng, dir.path(), statements - urls, &mut figures).await?;
        url_round(seed, &mut rng, dir.path(), urls, &mut figures).await?;
        done += statements;
    }
    Ok(figures)
}

async fn sql_round(
    seed: u64,
    rng: &mut Rng,
    dir: &Path,
    statements: usize,
    figures: &mut Figures,
) -> Result<(), String> {
    let path = dir.join("fuzz.db");
    let aux = dir.join("aux.db").display().to_string();
    let options = Options::new(&path)
        .readers(2)
        .busy_timeout(Duration::from_millis(BUSY_TIMEOUT_MS))
        .statement_timeout(STATEMENT_TIMEOUT);
    let mut recent: VecDeque<String> = VecDeque::new();
    let fail = |what: String, recent: &VecDeque<String>| failure(seed, &what, recent);
    let db = Database::open_with(options)
        .await
        .map_err(|e| fail(format!("open: {e:?}"), &recent))?;
    db.execute_batch(
        "CREATE TABLE t(id INTEGER PRIMARY KEY, x INTEGER, s TEXT);
         INSERT INTO t(x, s) VALUES (1, 'a'), (2, 'b'), (3, 'c');",
    )
    .await
    .map_err(|e| fail(format!("schema: {e:?}"), &recent))?;
    for _ in 0..statements {
        let mut sql = statement(rng, &aux);
        // Statements naming a file are not mutated: a mutated path would create files
        // outside the test's directory. (A mutated recursive CTE may never end: the
        // statement timeout stops it.)
        if !sql.contains("ATTACH") && rng.chance(30) {
            sql = mutate(rng, &sql);
            figures.mutated += 1;
        }
        let how = *rng.pick(&[
            Call::Execute,
            Call::FetchAll,
            Call::FetchOptional,
            Call::Batch,
        ]);
        recent.push_back(format!("{how:?}: {sql}"));
        if recent.len() > 12 {
            recent.pop_front();
        }
        figures.statements += 1;
        let outcome = tokio::time::timeout(CALL_TIMEOUT, call(&db, how, &sql))
            .await
            .map_err(|_| fail(format!("hung past {CALL_TIMEOUT:?}"), &recent))?;
        if let Err(error) = &outcome {
            figures.errors += 1;
            if let Some(why) = self_inflicted(error) {
                return Err(fail(format!("{why}: {error}"), &recent));
            }
        }
        if rng.chance(10) {
            figures.probes += 1;
            probe(&db, rng).await.map_err(|what| fail(what, &recent))?;
        }
        let status = db.status();
        if status.reader_writes != 0 {
            return Err(fail(
                format!("a reader changed the database: {status:?}"),
                &recent,
            ));
        }
    }
    db.close()
        .await
        .map_err(|e| fail(format!("close: {e:?}"), &recent))
}

/// Compares one read outside and inside a write transaction.
async fn probe(db: &Database, rng: &mut Rng) -> Result<(), String> {
    let sql = *rng.pick(PROBES);
    let outside = tokio::time::timeout(CALL_TIMEOUT, call(db, Call::FetchAll, sql))
        .await
        .map_err(|_| format!("probe `{sql}` hung"))?;
    let inside = tokio::time::timeout(
        CALL_TIMEOUT,
        db.transaction(async |tx| {
            let rows = tx.fetch_all(sql, ()).await?;
            Ok::<_, Error>(rows.iter().map(litemux::Row::to_values).collect::<Vec<_>>())
        }),
    )
    .await
    .map_err(|_| format!("probe `{sql}` hung in a transaction"))?;
    match (&outside, &inside) {
        (Ok(a), Ok(b)) if a == b => Ok(()),
        (Err(a), Err(b)) if a.to_string() == b.to_string() => Ok(()),
        (Err(e), _) | (_, Err(e)) if self_inflicted(e).is_some() => {
            Err(format!("probe `{sql}`: {e}"))
        }
        // A transaction the mix left open refuses BEGIN: nothing to compare.
        (_, Err(Error::Sql { message, .. })) if message.contains("within a transaction") => Ok(()),
        _ => {
            let ran: Vec<String> = db
                .history()
                .iter()
                .filter(|e| e.sql == sql)
                .map(|e| format!("{:?} {:?}", e.role, e.error))
                .collect();
            Err(format!(
                "`{sql}` reads differently outside ({outside:?}) and inside ({inside:?}) a \
                 transaction; runs: {ran:?}"
            ))
        }
    }
}

/// URL keys litemux knows, with values worth trying, and some it does not.
const KEYS: &[(&str, &[&str])] = &[
    (
        "readers",
        &["0", "1", "2", "64", "-1", "99999999999999999999", "x"],
    ),
    (
        "busy_timeout",
        &["0", "100", "3000000000", "18446744073709551615", "-5", ""],
    ),
    (
        "journal_mode",
        &["wal", "WAL", "delete", "memory", "off", "truncate", "bogus"],
    ),
    (
        "synchronous",
        &["off", "normal", "FULL", "extra", "2", "bogus"],
    ),
    (
        "foreign_keys",
        &["on", "off", "true", "FALSE", "1", "maybe"],
    ),
    ("mode", &["rwc", "rw", "ro", "memory", "RO", "x"]),
    ("writer_timeout", &["1", "1000", "18446744073709551615"]),
    ("reader_timeout", &["1", "1000", "18446744073709551615"]),
    ("history", &["0", "10", "-3"]),
    ("force_rollback", &["true", "false", "yes"]),
    ("group_commit", &["true", "false"]),
    (
        "transaction",
        &["deferred", "immediate", "exclusive", "nested"],
    ),
    ("inline_budget_us", &["0", "50", "99999999999"]),
    ("lock_anchor_us", &["0", "100"]),
    ("nonsense", &["1"]),
    ("", &["1", ""]),
];

/// A URL of random parts: scheme, a file in `dir` (the one part mutations may touch, so no
/// file is created elsewhere), options.
fn url(rng: &mut Rng, dir: &Path) -> String {
    let names = [
        "u.db",
        "u 2.db",
        "ü.db",
        "u.db#frag",
        "u%20.db",
        "u?.db",
        "",
        ".",
        "u.db;x",
    ];
    let mut name = (*rng.pick(&names)).to_owned();
    let mut query = String::new();
    for i in 0..rng.below(4) {
        let (key, values) = rng.pick(KEYS);
        let value = rng.pick(values);
        query.push(if i == 0 { '?' } else { '&' });
        let _ = write!(query, "{key}={value}");
    }
    if rng.chance(5) {
        query.push_str("&&=");
    }
    let mut tail = format!("{name}{query}");
    if rng.chance(40) {
        tail = mutate(rng, &tail).replace('/', "_");
        name.clear();
    }
    let dir = dir.display();
    match rng.below(8) {
        0 => format!("sqlite://{dir}/{tail}"),
        1 => format!("SQLITE://{dir}/{tail}"),
        2 => format!("{dir}/{tail}"),
        3 => format!("file:{dir}/{tail}"),
        // A plain `:memory:` with anything after it is a relative file name: no such forms,
        // they would create files in the working directory.
        4 => ":memory:".to_owned(),
        // Only options may follow: `sqlite::memory:&&=` names a file in the working directory.
        5 if query.starts_with('?') => format!("sqlite::memory:{query}"),
        5 => "sqlite::memory:".to_owned(),
        6 => format!("sqlite:{dir}/{tail}"),
        _ => format!("sqlite://{dir}/{tail}"),
    }
}

async fn url_round(
    seed: u64,
    rng: &mut Rng,
    dir: &Path,
    urls: usize,
    figures: &mut Figures,
) -> Result<(), String> {
    for _ in 0..urls {
        let url = url(rng, dir);
        figures.urls += 1;
        let recent = VecDeque::from([url.clone()]);
        let fail = |what: String| failure(seed, &what, &recent);
        let opened = tokio::time::timeout(CALL_TIMEOUT, Database::open(&url))
            .await
            .map_err(|_| fail("open hung".into()))?;
        let Ok(db) = opened else { continue };
        figures.opened += 1;
        let used = tokio::time::timeout(CALL_TIMEOUT, async {
            let _ = db.execute("CREATE TABLE IF NOT EXISTS f(x)", ()).await;
            let _ = db.fetch_all("SELECT 1", ()).await;
            db.close().await
        })
        .await
        .map_err(|_| fail("using the opened database hung".into()))?;
        if let Err(error) = used
            && self_inflicted(&error).is_some()
        {
            return Err(fail(format!("{error:?}")));
        }
    }
    Ok(())
}

fn report(inputs: usize, seed: u64) {
    let started = Instant::now();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    match runtime.block_on(run(seed, inputs)) {
        Ok(figures) => eprintln!(
            "fuzz: seed {seed}, {inputs} inputs in {:.1?}: {figures:?}",
            started.elapsed()
        ),
        Err(failure) => panic!("{failure}"),
    }
}

#[test]
fn random_and_mutated_sql_and_urls_never_panic_hang_block_or_write_on_a_reader() {
    report(CI_INPUTS, seed());
}

#[test]
#[ignore = "soak: LITEMUX_FUZZ_INPUTS=200000 cargo test -p litemux-tests --test reliability fuzz -- --ignored"]
fn soak() {
    let inputs = env_number("LITEMUX_FUZZ_INPUTS").map_or(SOAK_INPUTS, |n| n as usize);
    report(inputs, seed());
}
