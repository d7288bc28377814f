//! Host patterns, case by case of nginx's `server_name` documentation
//! (<https://nginx.org/en/docs/http/server_names.html>): the exact name first, then the longest
//! wildcard starting with an asterisk, then the default entry `*`; `.example.org` covers both
//! `example.org` and `*.example.org`. The random counterpart is in `model.rs`.

use shm_layout::{Backend, Host, HostError, Lookup, Match, Table, TableWriter, WriterOptions};

/// A table of `entries` (host or pattern → backend), published in a fresh directory.
fn table(entries: &[(&str, &str)]) -> (tempfile::TempDir, TableWriter, Table) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("table");
    let entries: Vec<(Host, Backend)> = entries
        .iter()
        .flat_map(|(h, b)| {
            let b = Backend::parse(b).unwrap();
            Host::parse_keys(h)
                .unwrap()
                .into_iter()
                .map(move |h| (h, b.clone()))
        })
        .collect();
    let opts = WriterOptions {
        sync: false,
        ..WriterOptions::default()
    };
    let w = TableWriter::create(&path, entries, opts).unwrap();
    let t = Table::open(&path).unwrap();
    (dir, w, t)
}

/// The backend and the matching key for `host`, or `None` on a miss.
fn answer(t: &Table, host: &str) -> Option<(String, String)> {
    match t.lookup(host.as_bytes()) {
        Lookup::Hit(v) => Some((v.as_str().to_owned(), v.matched().key(host))),
        Lookup::Miss => None,
        other => panic!("{host}: {other:?}"),
    }
}

fn hit(backend: &str, key: &str) -> Option<(String, String)> {
    Some((backend.to_owned(), key.to_owned()))
}

#[test]
fn the_exact_name_beats_a_wildcard() {
    let (_d, _w, t) = table(&[
        ("*.example.org", "10.0.0.1:80"),
        ("www.example.org", "10.0.0.2:80"),
    ]);
    assert_eq!(
        answer(&t, "www.example.org"),
        hit("10.0.0.2:80", "www.example.org")
    );
    assert_eq!(
        answer(&t, "mail.example.org"),
        hit("10.0.0.1:80", "*.example.org")
    );
}

#[test]
fn the_longest_wildcard_wins() {
    let (_d, _w, t) = table(&[
        ("*.org", "10.0.0.1:80"),
        ("*.example.org", "10.0.0.2:80"),
        ("*.sub.example.org", "10.0.0.3:80"),
    ]);
    assert_eq!(
        answer(&t, "www.sub.example.org"),
        hit("10.0.0.3:80", "*.sub.example.org")
    );
    assert_eq!(
        answer(&t, "sub.example.org"),
        hit("10.0.0.2:80", "*.example.org")
    );
    assert_eq!(
        answer(&t, "www.example.org"),
        hit("10.0.0.2:80", "*.example.org")
    );
    assert_eq!(answer(&t, "example.org"), hit("10.0.0.1:80", "*.org"));
    assert_eq!(answer(&t, "org"), None);
}

#[test]
fn an_asterisk_matches_several_labels_but_not_the_bare_name() {
    let (_d, _w, t) = table(&[("*.example.org", "10.0.0.1:80")]);
    assert_eq!(
        answer(&t, "a.b.c.www.example.org"),
        hit("10.0.0.1:80", "*.example.org")
    );
    assert_eq!(answer(&t, "example.org"), None);
    assert_eq!(answer(&t, "www.example.com"), None);
    assert_eq!(answer(&t, "wwwexample.org"), None);
}

#[test]
fn the_dot_form_covers_the_name_and_its_subdomains() {
    let (_d, w, t) = table(&[(".example.org", "10.0.0.1:80")]);
    assert_eq!(answer(&t, "example.org"), hit("10.0.0.1:80", "example.org"));
    assert_eq!(
        answer(&t, "www.example.org"),
        hit("10.0.0.1:80", "*.example.org")
    );
    assert_eq!(w.len(), 2, "stored as example.org and *.example.org");
}

#[test]
fn the_default_entry_comes_last() {
    let (_d, _w, t) = table(&[
        ("*", "10.0.0.9:80"),
        ("*.example.org", "10.0.0.1:80"),
        ("www.example.org", "10.0.0.2:80"),
    ]);
    assert_eq!(
        answer(&t, "www.example.org"),
        hit("10.0.0.2:80", "www.example.org")
    );
    assert_eq!(
        answer(&t, "a.example.org"),
        hit("10.0.0.1:80", "*.example.org")
    );
    assert_eq!(answer(&t, "example.org"), hit("10.0.0.9:80", "*"));
    assert_eq!(answer(&t, "localhost"), hit("10.0.0.9:80", "*"));
    assert_eq!(t.verify().unwrap().patterns, 2);
}

/// The names nginx calls invalid (`www.*.example.org`, `w*.example.org`) and the forms set-backend
/// does not take (a trailing asterisk, several asterisks) are refused with what is accepted.
#[test]
fn invalid_patterns_are_refused() {
    for bad in [
        "www.*.example.org",
        "w*.example.org",
        "mail.*",
        "*.*.org",
        "**",
        "*example.org",
    ] {
        assert_eq!(Host::parse_keys(bad), Err(HostError::BadWildcard), "{bad}");
    }
}

/// The header's pattern count follows inserts and deletes, so a table whose patterns are all
/// gone answers misses without walking.
#[test]
fn the_pattern_count_follows_the_writes() {
    let (_d, mut w, t) = table(&[("www.example.org", "10.0.0.2:80")]);
    assert_eq!(t.stats().patterns, 0);
    let wildcard = Host::parse("*.example.org").unwrap();
    let default = Host::parse("*").unwrap();
    let b = Backend::parse("10.0.0.1:80").unwrap();
    w.upsert(&wildcard, &b).unwrap();
    w.upsert(&default, &b).unwrap();
    w.upsert(&default, &Backend::parse("10.0.0.3:80").unwrap())
        .unwrap();
    assert_eq!(t.stats().patterns, 2);
    assert_eq!(
        answer(&t, "x.example.org"),
        hit("10.0.0.1:80", "*.example.org")
    );
    w.compact().unwrap();
    let t = Table::open(w.path()).unwrap();
    assert_eq!(t.stats().patterns, 2);
    assert!(w.delete(&wildcard).unwrap());
    assert!(w.delete(&default).unwrap());
    assert_eq!(t.stats().patterns, 0);
    assert_eq!(answer(&t, "x.example.org"), None);
    assert_eq!(t.verify().unwrap().patterns, 0);
}

/// `Match::key` names the entry for every kind of answer.
#[test]
fn the_match_names_the_entry() {
    assert_eq!(Match::Exact.key("a.example.org"), "a.example.org");
    assert_eq!(
        Match::Wildcard { dot: 1 }.key("a.example.org"),
        "*.example.org"
    );
    assert_eq!(Match::Default.key("a.example.org"), "*");
}

/// A wildcard is stored as its suffix (`.example.org` for `*.example.org`, `docs/FORMAT.md` §8):
/// a host that starts with a dot, which nginx lets through, is not taken for that key's own
/// name but walks to the wildcard (as nginx's `*.example.org` covers it); listing the table
/// shows the pattern as it was written.
#[test]
fn a_wildcard_is_stored_as_its_suffix_and_listed_as_written() {
    let (_d, _w, t) = table(&[("*.example.org", "10.0.0.1:80"), ("*", "10.0.0.2:80")]);
    assert_eq!(
        answer(&t, ".example.org"),
        hit("10.0.0.1:80", "*.example.org")
    );
    assert_eq!(answer(&t, ".org"), hit("10.0.0.2:80", "*"));
    assert_eq!(answer(&t, "example.org"), hit("10.0.0.2:80", "*"));
    let mut keys: Vec<String> = t.entries().into_iter().map(|(k, _)| k).collect();
    keys.sort();
    assert_eq!(keys, ["*", "*.example.org"]);
    assert_eq!(t.verify().unwrap().patterns, 2);
}
