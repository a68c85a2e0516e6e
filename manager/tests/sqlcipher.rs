//! Encryption at rest (feature `sqlcipher`): the key runs first on every connection, the file
//! holds no plaintext, a wrong or missing key fails at open, and the key is never printed.

use litemux::{Database, Error, Options};

use crate::TempDb;

const MARKER: &str = "plaintext-marker-7f3a9c";

/// Counts the rows `write_marker` writes (200).
const SECRETS: &str = "SELECT count(*) FROM secrets";

/// Writes the marker in 200 rows through an encrypted database and closes it (which
/// checkpoints the WAL into the file).
async fn write_marker(options: Options) {
    let db = Database::open_with(options).await.unwrap();
    db.execute_batch("CREATE TABLE secrets(id INTEGER PRIMARY KEY, body TEXT NOT NULL)")
        .await
        .unwrap();
    for i in 0..200 {
        db.execute(
            "INSERT INTO secrets(body) VALUES (?)",
            (format!("{MARKER}-{i}"),),
        )
        .await
        .unwrap();
    }
    db.close().await.unwrap();
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Every file the database left in its directory, concatenated (the WAL too, if any).
fn all_bytes(t: &TempDb) -> Vec<u8> {
    let mut bytes = Vec::new();
    for entry in std::fs::read_dir(t.dir.path()).unwrap() {
        bytes.extend(std::fs::read(entry.unwrap().path()).unwrap());
    }
    bytes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_file_holds_no_plaintext_and_reads_back_with_the_key() {
    let t = TempDb::new();
    write_marker(t.options().readers(2).key("correct horse")).await;
    let bytes = all_bytes(&t);
    assert!(bytes.len() > 4096, "{} bytes", bytes.len());
    assert!(
        !contains(&bytes, MARKER.as_bytes()),
        "plaintext in the file"
    );
    assert!(!contains(&bytes, b"SQLite format 3"), "a plaintext header");
    assert!(
        !contains(&bytes, b"CREATE TABLE secrets"),
        "plaintext schema"
    );

    // The same key reads it back on readers (many at once) and on the writer.
    let db = Database::open_with(t.options().readers(2).key("correct horse"))
        .await
        .unwrap();
    let reads = (0..16).map(|i| {
        let db = db.clone();
        tokio::spawn(async move {
            db.fetch_one("SELECT body FROM secrets WHERE id = ?", (i + 1,))
                .await
                .unwrap()
                .get::<String>(0)
                .unwrap()
        })
    });
    for (i, read) in reads.enumerate() {
        assert_eq!(read.await.unwrap(), format!("{MARKER}-{i}"));
    }
    let on_writer = db
        .transaction(async |tx| tx.fetch_one(SECRETS, ()).await?.get::<i64>(0))
        .await
        .unwrap();
    assert_eq!(on_writer, 200);
    db.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_key_is_wrong_key_and_no_key_cannot_open() {
    let t = TempDb::new();
    write_marker(t.options().key("right")).await;
    match Database::open_with(t.options().key("wrong")).await {
        Err(Error::WrongKey { path }) => assert_eq!(path, t.path),
        other => panic!("{other:?}"),
    }
    match Database::open_with(t.options()).await {
        Err(Error::Open { path, source }) => {
            assert_eq!(path, t.path);
            assert!(source.to_string().contains("not a database"), "{source}");
        }
        other => panic!("{other:?}"),
    }
    // Neither failed attempt damaged the file.
    let db = Database::open_with(t.options().key("right")).await.unwrap();
    assert_eq!(crate::ints(&db, SECRETS).await, [200]);
    db.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plaintext_file_opened_with_a_key_is_wrong_key() {
    let t = TempDb::new();
    write_marker(t.options()).await;
    assert!(contains(&all_bytes(&t), MARKER.as_bytes()));
    assert!(matches!(
        Database::open_with(t.options().key("k")).await,
        Err(Error::WrongKey { .. })
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn url_keys_quotes_and_raw_keys_work() {
    // A quote must not end the key early; `&`, `=` and `%` must survive the URL.
    let t = TempDb::new();
    let options = t.options().key("it's a 100% & = key");
    write_marker(options.clone()).await;
    let url = options.to_url_revealing_key();
    assert_eq!(url.parse::<Options>().unwrap(), options);
    let db = Database::open(&url).await.unwrap();
    assert_eq!(crate::ints(&db, SECRETS).await, [200]);
    db.close().await.unwrap();

    // A raw 256-bit key in SQLCipher's x'..' syntax.
    let raw = TempDb::new();
    let key = format!(
        "x'{}'",
        "2DD29CA851E7B56E4697B0E1F08507293D761A05CE4D1B628663F411A8086D99"
    );
    write_marker(raw.options().key(&key)).await;
    assert!(!contains(&all_bytes(&raw), MARKER.as_bytes()));
    assert!(Database::open_with(raw.options().key(key)).await.is_ok());
}

#[test]
fn the_key_is_never_printed_and_its_placeholder_is_refused() {
    let secret = "hunter2-secret";
    let options = Options::new("a.db").key(secret).readers(2);
    let shown = options.to_string();
    assert_eq!(shown, "sqlite://a.db?key=***&readers=2");
    assert!(!format!("{options:?}").contains(secret));
    // The printed form is refused rather than taken for a key named `***`.
    match shown.parse::<Options>() {
        Err(Error::InvalidOption { key, .. }) => assert_eq!(key, "key"),
        other => panic!("{other:?}"),
    }
    for bad in ["", "a\0b"] {
        assert!(matches!(
            format!("sqlite://a.db?key={}", bad.replace('\0', "%00")).parse::<Options>(),
            Err(Error::InvalidOption { key, .. }) if key == "key"
        ));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_open_with_another_key_conflicts_without_showing_either() {
    let t = TempDb::new();
    let db = Database::open_with(t.options().key("first-secret"))
        .await
        .unwrap();
    match Database::open_with(t.options().key("second-secret")).await {
        Err(e @ Error::OptionConflict { .. }) => {
            let message = e.to_string();
            assert!(message.contains("key="), "{message}");
            assert!(!message.contains("secret"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    let again = Database::open_with(t.options().key("first-secret")).await;
    assert!(again.is_ok());
    db.close().await.unwrap();
}

#[cfg(feature = "serde")]
#[test]
fn serde_writes_the_key_so_the_config_reopens_the_file() {
    let options = Options::new("a.db").key("s3cret");
    let json = serde_json::to_string(&options).unwrap();
    assert!(json.contains("s3cret"), "{json}");
    assert_eq!(serde_json::from_str::<Options>(&json).unwrap(), options);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lock_anchor_opens_with_the_key_too() {
    // An anchor connection without the key could not read the file, so it would never hold.
    let t = TempDb::new();
    let options = t
        .options()
        .readers(2)
        .key("anchor key")
        .lock_anchor(std::time::Duration::from_secs(1));
    write_marker(options.clone()).await;
    let db = Database::open_with(options).await.unwrap();
    let reading = async {
        while !db.status().lock_anchor_held {
            db.fetch_one(SECRETS, ()).await.unwrap();
            tokio::task::yield_now().await;
        }
    };
    tokio::time::timeout(std::time::Duration::from_secs(20), reading)
        .await
        .expect("the anchor never held on the encrypted file");
    db.close().await.unwrap();
}

/// SQLCipher's own PRAGMAs are missing from `PRAGMA pragma_list`, yet SQLCipher knows them:
/// the check that refuses unknown PRAGMAs lets them through, and still refuses a misspelt one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlciphers_own_pragmas_are_not_refused_as_unknown() {
    let t = TempDb::new();
    let db = Database::open_with(t.options().key("k").pragma("cipher_memory_security", "ON"))
        .await
        .unwrap();
    let on: String = db
        .fetch_one("PRAGMA cipher_memory_security", ())
        .await
        .unwrap()
        .get(0)
        .unwrap();
    assert_eq!(on, "1");
    db.close().await.unwrap();
    let misspelt = Database::open_with(t.options().key("k").pragma("kdf_iters", "1")).await;
    assert!(
        matches!(&misspelt, Err(Error::InvalidOption { key, .. }) if key == "pragma"),
        "{misspelt:?}"
    );
}

/// A URL refused by the parser is quoted in its error, and errors end up in logs: the key's
/// value must not be in them, however the URL is wrong (a `%` or `#` left unescaped in the
/// key, a missing path or scheme, a host).
#[test]
fn a_url_refused_by_the_parser_never_shows_its_key_in_the_error() {
    let secret = "hunter2";
    for url in [
        "sqlite://a.db?key=hunter2-100%sure",
        "sqlite://a.db?key=%FFhunter2",
        "sqlite://a.db?key=hunter2#1",
        "sqlite://a.db?readers=2&KEY=hunter2#1",
        "sqlite://?key=hunter2",
        "a.db?key=hunter2",
        "file://host/a.db?key=hunter2",
    ] {
        match url.parse::<Options>() {
            Err(e @ Error::InvalidOption { .. }) => {
                let shown = format!("{e} {e:?}");
                assert!(!shown.contains(secret), "{url}: {shown}");
            }
            other => panic!("{url}: {other:?}"),
        }
    }
}

/// `PRAGMA rekey` (or `key`) sent as SQL would change the key of the writer alone: readers
/// opened with the old key then read garbage ("no such table"), and every connection opened
/// later, by the health task or at the next open, uses the `key` option's. It is refused,
/// and the database goes on with its key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn setting_the_key_through_sql_is_refused_and_readers_keep_reading() {
    let t = TempDb::new();
    let options = t.options().readers(2).key("old key");
    write_marker(options.clone()).await;
    let db = Database::open_with(options.clone()).await.unwrap();
    for sql in [
        "PRAGMA rekey = 'new key'",
        "PRAGMA main.rekey = 'new key'",
        "PRAGMA key = 'new key'",
        "PRAGMA hexrekey = '00112233'",
    ] {
        let refused = db.execute(sql, ()).await;
        assert!(
            matches!(refused, Err(Error::Refused { .. })),
            "{sql}: {refused:?}"
        );
        let in_tx = db.transaction(async |tx| tx.execute_batch(sql).await).await;
        assert!(
            matches!(in_tx, Err(Error::Refused { .. })),
            "{sql}: {in_tx:?}"
        );
    }
    for _ in 0..4 {
        assert_eq!(crate::ints(&db, SECRETS).await, [200]);
    }
    db.close().await.unwrap();
    let again = Database::open_with(options).await.unwrap();
    again.close().await.unwrap();
}
