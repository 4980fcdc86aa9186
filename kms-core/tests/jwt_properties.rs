//! Property tests of access tokens (EdDSA JWTs) through the public API: what is issued
//! validates to exactly the claims issued, and any change to the token — one character of
//! its header, payload or signature, or a claim re-encoded under the old signature — is
//! refused.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests fail loudly"
)]

use std::sync::Arc;

use base64::Engine;
use kms_core::{
    AccessClaims, JwtError, JwtSettings, Kms, ManualClock, MasterKey, NewApp, NewToken, OsRandom,
    Timestamp,
};
use kms_store::MemoryStore;
use proptest::prelude::*;
use proptest::sample::Index;

const SCOPES: &[&str] = &[
    "app.read",
    "app.write",
    "token.read",
    "token.verify",
    "role.read",
    "audit.read",
];

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// What varies between issued tokens.
#[derive(Debug, Clone)]
struct Params {
    issuer: String,
    default_audience: String,
    audience: Option<String>,
    ttl: i64,
    now: i64,
    key_scopes: Vec<&'static str>,
    /// Indexes into `key_scopes`, repeats allowed; `None` asks for everything held.
    requested: Option<Vec<Index>>,
}

fn params() -> impl Strategy<Value = Params> {
    (
        "[a-z][a-z0-9.:/-]{0,20}",
        "[a-z][a-z0-9-]{0,15}",
        // Any printable characters but spaces, JSON's special ones included.
        proptest::option::of("[!-~\u{e9}\u{6f22}\u{1f600}]{1,24}"),
        60i64..86_400,
        1_600_000_000i64..2_500_000_000,
        proptest::sample::subsequence(SCOPES, 1..=4),
        proptest::option::of(proptest::collection::vec(any::<Index>(), 1..5)),
    )
        .prop_map(
            |(issuer, default_audience, audience, ttl, now, key_scopes, requested)| Params {
                issuer,
                default_audience,
                audience,
                ttl,
                now,
                key_scopes,
                requested,
            },
        )
}

struct Issued {
    kms: Kms,
    jwt: String,
    /// The audience to validate against.
    aud: String,
    expected: Expected,
}

/// The claims an issued token must carry; `jti` and `fid` are random, so only their shape
/// is known.
#[derive(Debug)]
struct Expected {
    iss: String,
    sub: String,
    aud: String,
    exp: i64,
    iat: i64,
    nbf: i64,
    /// `None` when everything held was asked for (the expansion is checked loosely).
    scope: Option<String>,
    /// The scope the token response reported.
    response_scope: String,
    key_scopes: Vec<&'static str>,
    app_id: String,
}

fn issue(p: &Params) -> Issued {
    let kms = Kms::builder(Arc::new(MemoryStore::new()))
        .clock(Arc::new(ManualClock::new(Timestamp::from_unix(p.now))))
        .hash_params(kms_core::dangerous::insecure_hash_params())
        .master_key(MasterKey::generate(&OsRandom).unwrap())
        .jwt_settings(JwtSettings {
            issuer: p.issuer.clone(),
            default_audience: p.default_audience.clone(),
            access_ttl_secs: p.ttl,
            ..Default::default()
        })
        .build()
        .unwrap();
    kms.initialize().unwrap();
    let op = kms.operator();
    let app = kms
        .create_app(
            &op,
            NewApp {
                name: "jwt".into(),
                ..Default::default()
            },
        )
        .unwrap();
    let key = kms
        .create_token(
            &op,
            &app.id,
            NewToken {
                name: "k".into(),
                scopes: p.key_scopes.iter().map(|s| s.to_string()).collect(),
                ..Default::default()
            },
        )
        .unwrap();
    let requested: Option<Vec<&str>> = p
        .requested
        .as_ref()
        .map(|r| r.iter().map(|i| *i.get(&p.key_scopes)).collect());
    let asked = requested.as_ref().map(|r| r.join(" "));
    let response = kms
        .issue_access_token(&key.token, asked.as_deref(), p.audience.as_deref(), None)
        .unwrap()
        .unwrap();
    let scope = requested.map(|r| {
        let mut unique: Vec<&str> = Vec::new();
        for s in r {
            if !unique.contains(&s) {
                unique.push(s);
            }
        }
        unique.join(" ")
    });
    if let Some(scope) = &scope {
        assert_eq!(&response.scope, scope);
    }
    let aud = p
        .audience
        .clone()
        .unwrap_or_else(|| p.default_audience.clone());
    Issued {
        kms,
        jwt: response.access_token,
        aud: aud.clone(),
        expected: Expected {
            iss: p.issuer.clone(),
            sub: key.info.id.clone(),
            aud,
            exp: p.now + p.ttl,
            iat: p.now,
            nbf: p.now,
            scope,
            response_scope: response.scope,
            key_scopes: p.key_scopes.clone(),
            app_id: app.id,
        },
    }
}

impl Issued {
    fn validate(&self, jwt: &str) -> Result<AccessClaims, JwtError> {
        self.kms.validate_access_token(jwt, Some(&self.aud))
    }

    fn parts(&self) -> [&str; 3] {
        let v: Vec<&str> = self.jwt.split('.').collect();
        assert_eq!(v.len(), 3, "{}", self.jwt);
        [v[0], v[1], v[2]]
    }
}

fn check_claims(c: &AccessClaims, e: &Expected) -> Result<(), TestCaseError> {
    prop_assert_eq!(&c.iss, &e.iss);
    prop_assert_eq!(&c.sub, &e.sub);
    prop_assert_eq!(&c.aud, &e.aud);
    prop_assert_eq!((c.exp, c.iat, c.nbf), (e.exp, e.iat, e.nbf));
    prop_assert_eq!(&c.app_id, &e.app_id);
    prop_assert_eq!(&c.scope, &e.response_scope);
    match &e.scope {
        Some(scope) => prop_assert_eq!(&c.scope, scope),
        None => {
            let held: Vec<&str> = c.scope.split(' ').collect();
            for s in &e.key_scopes {
                prop_assert!(held.contains(s), "{} not in {}", s, c.scope);
            }
        }
    }
    prop_assert_eq!(c.jti.len(), 22);
    prop_assert!(c.jti.chars().all(|ch| ch.is_ascii_alphanumeric()));
    prop_assert!(c.fid.starts_with("fam_"), "{}", c.fid);
    Ok(())
}

/// Characters a tampered position may get: the base64url alphabet and a few that are not
/// in it.
const REPLACEMENTS: &[char] = &[
    'A', 'B', 'Q', 'Z', 'a', 'b', 'g', 'w', 'z', '0', '1', '9', '-', '_', '.', '=', '+', '/', ' ',
    '\u{e9}', '\0',
];

/// `jwt` with the character at `pos` replaced by the first of `REPLACEMENTS` from `pick`
/// on that differs from it.
fn replace_char(jwt: &str, pos: usize, pick: usize) -> String {
    let chars: Vec<char> = jwt.chars().collect();
    let new = (0..REPLACEMENTS.len())
        .map(|k| REPLACEMENTS[(pick + k) % REPLACEMENTS.len()])
        .find(|c| *c != chars[pos])
        .unwrap();
    let mut out: String = chars[..pos].iter().collect();
    out.push(new);
    out.extend(&chars[pos + 1..]);
    out
}

/// Which claim to change, and how.
#[derive(Debug, Clone)]
enum ClaimEdit {
    /// Replace a string claim's value with a different string.
    Str(&'static str, String),
    /// Add a non-zero amount to a number claim.
    Num(&'static str, i64),
    Remove(&'static str),
    Add(String, String),
    /// The same claims, serialized differently (pretty-printed).
    Reformat,
}

fn claim_edit() -> impl Strategy<Value = ClaimEdit> {
    let strings = ["iss", "sub", "aud", "jti", "scope", "app_id", "fid"];
    let numbers = ["exp", "iat", "nbf"];
    let all = [
        "iss", "sub", "aud", "exp", "iat", "nbf", "jti", "scope", "app_id", "fid",
    ];
    prop_oneof![
        4 => (proptest::sample::select(strings.to_vec()), ".{0,12}")
            .prop_map(|(k, v)| ClaimEdit::Str(k, v)),
        2 => (proptest::sample::select(numbers.to_vec()), (-1_000_000i64..1_000_000)
            .prop_filter("non-zero", |d| *d != 0))
            .prop_map(|(k, d)| ClaimEdit::Num(k, d)),
        1 => proptest::sample::select(all.to_vec()).prop_map(ClaimEdit::Remove),
        1 => ("[a-z]{1,8}", ".{0,8}")
            .prop_filter("a new claim", move |(k, _)| !all.contains(&k.as_str()))
            .prop_map(|(k, v)| ClaimEdit::Add(k, v)),
        1 => Just(ClaimEdit::Reformat),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    /// issue -> validate gives back exactly the claims issued, and the payload says the
    /// same when decoded by hand.
    #[test]
    fn issued_claims_validate_to_themselves(p in params()) {
        let t = issue(&p);
        let claims = t.validate(&t.jwt).unwrap();
        check_claims(&claims, &t.expected)?;
        let raw: AccessClaims = serde_json::from_slice(&B64.decode(t.parts()[1]).unwrap()).unwrap();
        prop_assert_eq!(&raw, &claims);
        // Validating twice gives the same answer (nothing is consumed).
        prop_assert_eq!(t.validate(&t.jwt).unwrap(), claims);
    }

    /// One character of the header, payload or signature replaced by another: refused.
    #[test]
    fn any_single_character_change_is_rejected(
        p in params(),
        changes in proptest::collection::vec((0usize..3, any::<Index>(), any::<usize>()), 1..16),
    ) {
        let t = issue(&p);
        let parts = t.parts();
        for (part, at, pick) in changes {
            let start: usize = parts[..part].iter().map(|s| s.chars().count() + 1).sum();
            let pos = start + at.index(parts[part].chars().count());
            let tampered = replace_char(&t.jwt, pos, pick);
            prop_assert_ne!(&tampered, &t.jwt);
            let r = t.validate(&tampered);
            prop_assert!(r.is_err(), "accepted with {:?} at {} (part {}): {:?}", tampered, pos, part, r);
            if part == 2 {
                // The header still names the key; only the signature can refuse it.
                prop_assert!(
                    matches!(r, Err(JwtError::BadSignature | JwtError::Malformed)),
                    "{:?}", r
                );
            }
        }
        // The control: the untouched token still validates.
        prop_assert!(t.validate(&t.jwt).is_ok());
    }

    /// The payload re-encoded with one claim changed (or removed, added, or merely
    /// reformatted), under the old header and signature: refused as a bad signature.
    #[test]
    fn a_changed_claim_under_the_old_signature_is_rejected(p in params(), edit in claim_edit()) {
        let t = issue(&p);
        let [h64, c64, s64] = t.parts();
        let mut claims: serde_json::Value = serde_json::from_slice(&B64.decode(c64).unwrap()).unwrap();
        let obj = claims.as_object_mut().unwrap();
        let payload = match &edit {
            ClaimEdit::Str(k, v) => {
                let old = obj[*k].as_str().unwrap().to_owned();
                let new = if *v == old { format!("{v}x") } else { v.clone() };
                obj.insert(k.to_string(), new.into());
                serde_json::to_vec(&claims).unwrap()
            }
            ClaimEdit::Num(k, d) => {
                let old = obj[*k].as_i64().unwrap();
                obj.insert(k.to_string(), (old + d).into());
                serde_json::to_vec(&claims).unwrap()
            }
            ClaimEdit::Remove(k) => {
                obj.remove(*k).unwrap();
                serde_json::to_vec(&claims).unwrap()
            }
            ClaimEdit::Add(k, v) => {
                obj.insert(k.clone(), v.clone().into());
                serde_json::to_vec(&claims).unwrap()
            }
            ClaimEdit::Reformat => serde_json::to_vec_pretty(&claims).unwrap(),
        };
        let forged = format!("{h64}.{}.{s64}", B64.encode(&payload));
        prop_assert_ne!(&forged, &t.jwt);
        prop_assert_eq!(t.validate(&forged), Err(JwtError::BadSignature), "{:?}", edit);
        prop_assert!(t.validate(&t.jwt).is_ok());
    }
}

/// Every position of one token, each replaced by a character not there, and each deleted:
/// all refused. (The property tests above sample positions; this covers them all once.)
#[test]
fn every_position_of_a_token_is_covered() {
    let t = issue(&Params {
        issuer: "kms".into(),
        default_audience: "kms".into(),
        audience: None,
        ttl: 900,
        now: 1_800_000_000,
        key_scopes: vec!["app.read", "token.read"],
        requested: None,
    });
    let n = t.jwt.chars().count();
    assert!(n > 200, "{}", t.jwt);
    for pos in 0..n {
        for pick in [pos, pos + 7] {
            let tampered = replace_char(&t.jwt, pos, pick);
            assert!(t.validate(&tampered).is_err(), "{tampered}");
        }
        let mut deleted: String = t.jwt.chars().take(pos).collect();
        deleted.extend(t.jwt.chars().skip(pos + 1));
        assert!(t.validate(&deleted).is_err(), "{deleted}");
    }
    for extra in ["A", ".", "="] {
        assert!(t.validate(&format!("{}{extra}", t.jwt)).is_err());
        assert!(t.validate(&format!("{extra}{}", t.jwt)).is_err());
    }
    assert!(t.validate(&t.jwt).is_ok());
}
