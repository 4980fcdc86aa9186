//! `Kms::validate_access_token` (and introspection, which decodes the same way) over one
//! real access token issued once per process. The first byte picks a mode: `'0'` the rest
//! is a whole JWT; `'1'` (u16 position, byte) edits of the real token; `'2'` / `'3'` the
//! next byte (`'0'`..`'2'`) picks header, payload or signature of the real token and the
//! rest replaces it, as raw text or base64url-encoded. Nothing may panic, the real token must validate, and no
//! other string may: a changed header or payload (the signature input) must never be
//! accepted, and neither may another encoding of the signature.

use std::sync::{Arc, OnceLock};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use kms_core::{Caller, Kms, ManualClock, MasterKey, NewApp, NewToken, OsRandom, Timestamp};
use kms_store::MemoryStore;

struct Fixture {
    kms: Kms,
    operator: Caller,
    jwt: String,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        // A clock that stands still keeps the token valid however long the fuzzer runs.
        let clock = Arc::new(ManualClock::new(Timestamp::from_unix(1_800_000_000)));
        let kms = Kms::builder(Arc::new(MemoryStore::new()))
            .clock(clock)
            .hash_params(kms_core::dangerous::insecure_hash_params())
            .master_key(MasterKey::generate(&OsRandom).expect("master key"))
            .build()
            .expect("kms builds");
        kms.initialize().expect("initialize");
        let operator = kms.operator();
        let app = kms
            .create_app(
                &operator,
                NewApp {
                    name: "fuzz".into(),
                    token_prefix: None,
                    ..Default::default()
                },
            )
            .expect("app");
        let key = kms
            .create_token(
                &operator,
                &app.id,
                NewToken {
                    name: "svc".into(),
                    scopes: vec!["app.read".into(), "token.read".into()],
                    ..Default::default()
                },
            )
            .expect("api key");
        let jwt = kms
            .issue_access_token(&key.token, None, None, None)
            .expect("issue")
            .expect("the api key is accepted")
            .access_token;
        assert!(kms.validate_access_token(&jwt, None).is_ok());
        Fixture { kms, operator, jwt }
    })
}

pub(crate) fn run(data: &[u8]) {
    let f = fixture();
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    // Modes and part numbers count from ASCII '0' so text seeds stay readable.
    let candidate = match mode.wrapping_sub(b'0') % 4 {
        // The bytes are the whole token.
        0 => String::from_utf8_lossy(rest).into_owned(),
        // (position: u16, byte) edits of the real token.
        1 => {
            let mut bytes = f.jwt.clone().into_bytes();
            for edit in rest.chunks_exact(3) {
                let pos = usize::from(u16::from_be_bytes([edit[0], edit[1]])) % bytes.len();
                bytes[pos] = edit[2];
            }
            String::from_utf8_lossy(&bytes).into_owned()
        }
        // One part (header, payload or signature) replaced by raw text.
        2 => splice(&f.jwt, rest, |b| String::from_utf8_lossy(b).into_owned()),
        // One part replaced by the base64url of the bytes: forged headers and claims that
        // decode cleanly, carried with the real signature.
        _ => splice(&f.jwt, rest, |b| URL_SAFE_NO_PAD.encode(b)),
    };
    check(f, &candidate);
}

fn splice(jwt: &str, rest: &[u8], encode: impl Fn(&[u8]) -> String) -> String {
    let Some((&which, body)) = rest.split_first() else {
        return jwt.to_owned();
    };
    let mut parts: Vec<String> = jwt.split('.').map(str::to_owned).collect();
    let i = usize::from(which.wrapping_sub(b'0')) % parts.len();
    parts[i] = encode(body);
    parts.join(".")
}

fn check(f: &Fixture, candidate: &str) {
    let accepted = f.kms.validate_access_token(candidate, None).is_ok();
    let active = f
        .kms
        .introspect(&f.operator, candidate)
        .ok()
        .and_then(|i| serde_json::to_value(i).ok())
        .is_some_and(|v| v["active"] == serde_json::Value::Bool(true));
    if candidate == f.jwt {
        assert!(accepted && active, "the real token was refused");
        return;
    }
    let signed = |t: &str| t.rsplit_once('.').map(|(input, _)| input.to_owned());
    let same_input = signed(candidate) == signed(&f.jwt);
    assert!(
        !accepted || same_input,
        "validate accepted a token whose signature input changed: {candidate:?}"
    );
    assert!(
        !active || same_input,
        "introspection accepted a token whose signature input changed: {candidate:?}"
    );
    assert!(
        !accepted && !active,
        "a different encoding of the signature was accepted: {candidate:?}"
    );
}
