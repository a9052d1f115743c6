//! The example plugins behave as documented, whatever the batch size.

use hone_plugin_host::{Limits, PluginError, PluginFilter, Verdict, digest_of};

use crate::common::{load, load_with, plugins_dir, shared_cache, wasm};

fn drop(reason: &str) -> Verdict {
    Verdict::Drop(reason.into())
}

#[test]
fn min_words_drops_documents_below_the_threshold() {
    let mut f = load("min_words", r#"{"min_words": 3}"#).unwrap();
    assert_eq!((f.name(), f.version()), ("min-words", "0.1.0"));
    let v = f.filter(&["one two three", "one two", "", "  spaced   out\twords\n here "]).unwrap();
    assert_eq!(
        v,
        [Verdict::Keep, drop("fewer than 3 words"), drop("fewer than 3 words"), Verdict::Keep]
    );
}

#[test]
fn min_words_rejects_a_bad_config_at_load() {
    let e = load("min_words", r#"{"min_word": 3}"#).err().expect("a typo must be rejected");
    assert!(matches!(e, PluginError::Config { .. }), "{e}");
    let msg = e.to_string();
    assert!(msg.contains("min-words") && msg.contains("unknown field `min_word`"), "{msg}");
    let e = load("min_words", "{}").err().expect("the threshold is required");
    assert!(e.to_string().contains("missing field `min_words`"), "{e}");
}

#[test]
fn pii_redact_rewrites_emails_and_phone_numbers() {
    let mut f = load("pii_redact", "{}").unwrap();
    let docs = [
        "Write to jane.doe+news@mail.example.com. Thanks!",
        "Call +1 (555) 123-4567 or 555-987-6543 today",
        "UK office: +44 20 7946 0958.",
        "Nothing personal here.",
        "Ünïcode nåme: ø@exämple.com stays, bob@example.org does not",
    ];
    let v = f.filter(&docs).unwrap();
    assert_eq!(
        v,
        [
            Verdict::Rewrite("Write to [EMAIL]. Thanks!".into()),
            Verdict::Rewrite("Call [PHONE] or [PHONE] today".into()),
            Verdict::Rewrite("UK office: [PHONE].".into()),
            Verdict::Keep,
            Verdict::Rewrite("Ünïcode nåme: ø@exämple.com stays, [EMAIL] does not".into()),
        ]
    );
}

#[test]
fn pii_redact_leaves_dates_isbns_and_bare_numbers() {
    let mut f = load("pii_redact", "{}").unwrap();
    let docs = [
        "On 2023-01-05 at 10.30",
        "ISBN 978-3-16-148410-0",
        "order 5551234567",
        "a@b",
        "x@y.z1",
        "call 555-123-4567x",
    ];
    assert_eq!(f.filter(&docs).unwrap(), vec![Verdict::Keep; docs.len()]);
}

#[test]
fn pii_redact_config_picks_what_and_how() {
    let mut f = load("pii_redact", r#"{"phones": false, "email_token": "<e>"}"#).unwrap();
    let v = f.filter(&["mail a@example.com or call 555-123-4567"]).unwrap();
    assert_eq!(v, [Verdict::Rewrite("mail <e> or call 555-123-4567".into())]);
    let e = load("pii_redact", r#"{"phones": false, "emails": false}"#).err().unwrap();
    assert!(e.to_string().contains("would do nothing"), "{e}");
}

#[test]
fn lang_id_keeps_the_configured_languages() {
    let en = "The cat sat on the mat and it was happy with what it had.";
    let fr = "Le chat est sur le tapis et il est très content de ce qu'il a.";
    let de = "Die Katze ist auf der Matte und sie ist mit dem zufrieden, was sie hat.";
    let noise = "xq zzv 1234 qwerty asdf";
    let mut f = load("lang_id", "{}").unwrap();
    assert_eq!(
        f.filter(&[en, fr, de, noise]).unwrap(),
        [Verdict::Keep, drop("language fr"), drop("language de"), drop("no known language")]
    );
    let mut f = load("lang_id", r#"{"languages": ["en", "fr"]}"#).unwrap();
    assert_eq!(
        f.filter(&[en, fr, de]).unwrap(),
        [Verdict::Keep, Verdict::Keep, drop("language de")]
    );
    let e = load("lang_id", r#"{"languages": ["xx"]}"#).err().unwrap();
    assert!(e.to_string().contains("unknown language `xx`"), "{e}");
}

#[test]
fn verdicts_do_not_depend_on_the_batch_size() {
    let docs: Vec<String> = (0..300)
        .map(|i| match i % 4 {
            0 => format!("user{i}@example.com wrote {i} words"),
            1 => "short".to_string(),
            2 => format!("call 555-{:03}-{:04} now please", i % 1000, i),
            _ => "the quick brown fox jumps over the lazy dog".to_string(),
        })
        .collect();
    let docs: Vec<&str> = docs.iter().map(String::as_str).collect();
    let run = |batch_size| {
        let mut f =
            load_with("pii_redact", "{}", Limits { batch_size, ..Limits::default() }).unwrap();
        f.filter(&docs).unwrap()
    };
    let one = run(1);
    assert_eq!(one.iter().filter(|v| matches!(v, Verdict::Rewrite(_))).count(), 150);
    assert_eq!(run(64), one);
    assert_eq!(run(1000), one);
}

#[test]
fn digest_is_blake3_of_the_wasm_and_needs_no_compile() {
    let path = wasm("min_words");
    let bytes = std::fs::read(&path).unwrap();
    let expected = *blake3::hash(&bytes).as_bytes();
    assert_eq!(digest_of(&path).unwrap(), expected);
    let f = load("min_words", r#"{"min_words": 1}"#).unwrap();
    assert_eq!(f.digest(), expected);
}

#[test]
fn a_crate_directory_is_built_and_loaded() {
    // Built already by the shared guest build, so cargo finds it up to date.
    crate::common::guests();
    let dir = plugins_dir().join("examples/min-words");
    assert_eq!(digest_of(&dir).unwrap(), digest_of(&wasm("min_words")).unwrap());
    let mut f =
        PluginFilter::load(&dir, r#"{"min_words": 2}"#, Limits::default(), shared_cache()).unwrap();
    assert_eq!(f.path(), wasm("min_words"));
    assert_eq!(f.filter(&["a b", "a"]).unwrap(), [Verdict::Keep, drop("fewer than 2 words")]);
}
