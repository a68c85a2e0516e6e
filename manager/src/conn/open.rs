//! Opening a connection: the `file:` URI diesel opens, and every PRAGMA litemux applies, in
//! the order it applies them (see [`Connection::open`]).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use super::record::Record;
use super::run::Limit;
use super::{Connection, Context};
use crate::options::OpenMode;
use crate::options::check::check_pragma_known;
use crate::raw::{Access, RawConnection};
use crate::telemetry::Run;
use crate::{Error, Options, Result, Role};

/// Counts the temp objects and attached databases of a connection.
const SESSION_OBJECTS: &str = "SELECT (SELECT count(*) FROM temp.sqlite_schema) \
     + (SELECT count(*) FROM pragma_database_list WHERE name NOT IN ('main', 'temp'))";

impl Connection {
    /// Opens a connection and applies, in order: busy timeout (so every later step waits on
    /// locks instead of failing), journal mode (writer only, before any reader exists),
    /// `synchronous`, `foreign_keys`, the user's PRAGMAs (the writer first refuses one SQLite
    /// does not know), `query_only` (readers), the hook.
    pub(crate) fn open(options: &Options, role: Role, context: Arc<Context>) -> Result<Self> {
        let open_error = |source: Error| Error::Open {
            path: options.path.clone(),
            source: Box::new(source),
        };
        let url = connection_url(options).map_err(open_error)?;
        let raw = RawConnection::establish(&url).map_err(|e| open_error(Error::Connect(e)))?;
        let mut conn = Connection {
            raw,
            role,
            context,
            budget_mark: None,
            last_took: Duration::ZERO,
            run: Run::default(),
            proofs: Default::default(),
        };
        conn.configure(options, role).map_err(|e| match e {
            // Says what failed, with the path: no need for another layer.
            Error::WrongKey { .. } => e,
            // Names the option at fault, as the checks of the options before opening do.
            Error::InvalidOption { ref key, .. } if key == "pragma" => e,
            e => open_error(e),
        })?;
        Ok(conn)
    }

    fn configure(&mut self, options: &Options, role: Role) -> Result<()> {
        // SQLCipher reads nothing of the file before the key, and a statement run before it
        // would take the file for plaintext.
        if let Some(key) = &options.key {
            // Not `setup`'s error, whose SQL text would carry the key into logs.
            self.setup(&format!("PRAGMA key = '{}'", key.replace('\'', "''")))
                .map_err(|_| Error::invalid("key", "SQLCipher refused the key"))?;
        }
        self.setup(&format!(
            "PRAGMA busy_timeout = {}",
            options.busy_timeout.as_millis()
        ))?;
        if options.key.is_some() {
            // With a wrong key every page decrypts to noise: SQLite calls that "not a
            // database", here it means the key.
            self.fetch(
                "SELECT count(*) FROM sqlite_schema",
                &[],
                Limit::First,
                Record::No,
            )
            .map_err(|e| match e {
                Error::Sql { code, .. } if code & 0xff == libsqlite3_sys::SQLITE_NOTADB => {
                    Error::WrongKey {
                        path: options.path.clone(),
                    }
                }
                e => e,
            })?;
        }
        let file = !options.is_memory();
        if file && role == Role::Writer && options.mode != OpenMode::ReadOnly {
            let mode = options.journal_mode.as_str();
            let sql = format!("PRAGMA journal_mode = {mode}");
            let now = self.fetch(&sql, &[], Limit::First, Record::No)?;
            let applied = now.first().and_then(|r| r.get::<String>(0).ok());
            if !applied.is_some_and(|m| m.eq_ignore_ascii_case(mode)) {
                tracing::warn!(target: "litemux", path = %options.path.display(), mode, "journal mode not applied");
            }
            self.setup(&format!(
                "PRAGMA journal_size_limit = {}",
                options.journal_size_limit
            ))?;
        }
        // Fails here, at open, on a file that is not a database, not at the first query.
        self.fetch(
            "SELECT 1 FROM sqlite_schema LIMIT 1",
            &[],
            Limit::First,
            Record::No,
        )?;
        self.setup(&format!(
            "PRAGMA synchronous = {}",
            options.synchronous.as_str()
        ))?;
        let foreign_keys = if options.foreign_keys { "ON" } else { "OFF" };
        self.setup(&format!("PRAGMA foreign_keys = {foreign_keys}"))?;
        if role == Role::Writer {
            // Once per database: its readers run the same PRAGMAs on the same library.
            self.check_pragma_names(options)?;
        }
        for (name, value) in &options.pragmas {
            self.setup(&format!("PRAGMA {name} = {value}"))?;
        }
        if let Some(hook) = &options.init {
            hook(self.raw.diesel()).map_err(|e| self.diesel_error("<on_connect hook>", e))?;
        }
        // From here on litemux waits for other connections' locks itself, as long as the
        // busy timeout says (which a PRAGMA above or the hook may have changed).
        let timeout = self.fetch("PRAGMA busy_timeout", &[], Limit::First, Record::No)?;
        let millis = timeout.first().and_then(|r| r.get::<i64>(0).ok());
        let millis = millis.and_then(|ms| u64::try_from(ms).ok()).unwrap_or(0);
        self.raw.wait_for_locks(Duration::from_millis(millis));
        // Last, so the hook may still create temporary objects on readers.
        match role {
            Role::Reader => {
                self.setup("PRAGMA query_only = ON")?;
                self.raw.guard(Access::Reader {
                    witness: Arc::clone(&self.context.reader_writes),
                });
            }
            Role::Writer => {
                // The hook may have made the writer's session differ from the readers' before
                // the authorizer watched for it.
                let session = self.fetch(SESSION_OBJECTS, &[], Limit::First, Record::No)?;
                if session
                    .first()
                    .is_some_and(|row| row.get::<i64>(0).is_ok_and(|n| n > 0))
                {
                    self.context.classified.namespace_changed();
                }
                self.raw.guard(Access::Writer {
                    namespace: self.context.classified.namespace(),
                });
            }
        }
        Ok(())
    }

    /// Refuses a PRAGMA of the user's that this SQLite does not know (see
    /// [`check_pragma_known`]). A build without `PRAGMA pragma_list`
    /// (`SQLITE_OMIT_INTROSPECTION_PRAGMAS`) lists nothing: then none is refused.
    fn check_pragma_names(&mut self, options: &Options) -> Result<()> {
        if options.pragmas.is_empty() {
            return Ok(());
        }
        let listed: Vec<String> = self
            .fetch("PRAGMA pragma_list", &[], Limit::All, Record::No)?
            .iter()
            .filter_map(|row| row.get::<String>(0).ok())
            .collect();
        if listed.is_empty() {
            return Ok(());
        }
        // Plain SQLite ignores it, so it returns nothing.
        let sqlcipher = !self
            .fetch("PRAGMA cipher_version", &[], Limit::First, Record::No)?
            .is_empty();
        for (name, _) in &options.pragmas {
            check_pragma_known(name, &listed, sqlcipher)?;
        }
        Ok(())
    }

    /// Runs a connection-setup statement; setup is not part of the query history.
    fn setup(&mut self, sql: &str) -> Result<()> {
        self.raw
            .run_once(sql)
            .map_err(|f| Error::from_sqlite(sql, f.code, f.message))
    }

    /// Runs `f` with lock waits failing at once, then puts the busy timeout back.
    pub(crate) fn without_lock_waits<R>(&mut self, f: impl FnOnce(&mut Self) -> R) -> R {
        self.with_lock_timeout(Duration::ZERO, f)
    }

    /// Runs `f` with lock waits bounded by `timeout` instead of the busy timeout.
    pub(crate) fn with_lock_timeout<R>(
        &mut self,
        timeout: Duration,
        f: impl FnOnce(&mut Self) -> R,
    ) -> R {
        let usual = self.raw.set_lock_timeout(timeout);
        let out = f(self);
        self.raw.set_lock_timeout(usual);
        out
    }

    /// Makes lock waits fail at once instead of waiting up to the busy timeout.
    pub(crate) fn never_wait(&mut self) {
        self.raw.wait_for_locks(Duration::ZERO);
    }
}

/// The URL diesel opens: `:memory:`, or a `file:` URI carrying the open mode.
fn connection_url(options: &Options) -> Result<String> {
    if options.is_memory() {
        return Ok(":memory:".into());
    }
    let path = &options.path;
    check_path(path, options.mode)?;
    let text = path
        .to_str()
        .ok_or_else(|| Error::invalid("path", format!("`{}` is not UTF-8", path.display())))?;
    let mut uri = String::from("file:");
    for c in text.chars() {
        match c {
            '%' => uri.push_str("%25"),
            '?' => uri.push_str("%3f"),
            '#' => uri.push_str("%23"),
            c => uri.push(c),
        }
    }
    uri.push_str("?mode=");
    uri.push_str(options.mode.as_str());
    Ok(uri)
}

/// Finds what SQLite would only call "unable to open database file", with a precise cause.
fn check_path(path: &Path, mode: OpenMode) -> Result<()> {
    match std::fs::metadata(path) {
        Ok(meta) if meta.is_dir() => Err(Error::Io(std::io::Error::new(
            std::io::ErrorKind::IsADirectory,
            "the path is a directory",
        ))),
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && mode == OpenMode::ReadWriteCreate => {
            let parent = path.parent().filter(|p| !p.as_os_str().is_empty());
            match parent.map(std::fs::metadata) {
                Some(Err(e)) => Err(Error::Io(e)),
                _ => Ok(()),
            }
        }
        Err(e) => Err(Error::Io(e)),
    }
}
