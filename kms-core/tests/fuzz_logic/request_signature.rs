//! `kms_core::request_signing`: `RequestVerifier::verify` on requests, secrets and signatures
//! built from the fuzz bytes with `arbitrary`. Nothing may panic; a request signed with
//! `sign_request` verifies once inside the window and is then a replay; a forged signature
//! never spends the nonce; and a signature never verifies for a request that differs from
//! the signed one in anything the server acts on (method up to case, path, the set of query
//! pairs, timestamp, nonce, body).

use arbitrary::Unstructured;
use kms_core::request_signing::{sign_request, RequestVerifier, SignatureError, SignedRequest};
use kms_core::Timestamp;

const NOW: i64 = 1_800_000_000;
const WINDOW: i64 = 300;
const NONCE_CHARS: &[u8] = b"abcXYZ019-_";

pub(crate) fn run(data: &[u8]) {
    // Running out of bytes only ends the case early.
    let _ = check(&mut Unstructured::new(data));
}

#[derive(Debug, Clone)]
struct Request {
    method: String,
    path: String,
    query: String,
    timestamp: i64,
    nonce: String,
    body: Vec<u8>,
}

impl Request {
    fn signed(&self) -> SignedRequest<'_> {
        SignedRequest {
            method: &self.method,
            path: &self.path,
            query: &self.query,
            timestamp: self.timestamp,
            nonce: &self.nonce,
            body: &self.body,
        }
    }

    /// Whether the server would act on `self` exactly as on `other`.
    fn same_as(&self, other: &Request) -> bool {
        let pairs = |q: &str| {
            let mut v: Vec<String> = q
                .split('&')
                .filter(|p| !p.is_empty())
                .map(str::to_owned)
                .collect();
            v.sort();
            v
        };
        self.method.eq_ignore_ascii_case(&other.method)
            && self.path == other.path
            && pairs(&self.query) == pairs(&other.query)
            && self.timestamp == other.timestamp
            && self.nonce == other.nonce
            && self.body == other.body
    }
}

fn nonce(u: &mut Unstructured<'_>) -> arbitrary::Result<String> {
    if u.ratio(1u8, 4u8)? {
        return u.arbitrary();
    }
    let len = u.int_in_range(8..=24usize)?;
    (0..len)
        .map(|_| Ok(char::from(NONCE_CHARS[u.choose_index(NONCE_CHARS.len())?])))
        .collect()
}

fn timestamp(u: &mut Unstructured<'_>) -> arbitrary::Result<i64> {
    if u.ratio(1u8, 8u8)? {
        u.arbitrary()
    } else {
        Ok(NOW + u.int_in_range(-2 * WINDOW..=2 * WINDOW)?)
    }
}

fn request(u: &mut Unstructured<'_>) -> arbitrary::Result<Request> {
    let methods = ["GET", "post", "PUT", "DELETE"];
    Ok(Request {
        method: if u.ratio(1u8, 4u8)? {
            u.arbitrary()?
        } else {
            methods[u.choose_index(methods.len())?].to_owned()
        },
        path: u.arbitrary()?,
        query: u.arbitrary()?,
        timestamp: timestamp(u)?,
        nonce: nonce(u)?,
        body: u.arbitrary()?,
    })
}

/// Another request: one field replaced, or text moved across the method/path/query
/// boundaries, the places where a canonical form could be ambiguous.
fn mutate(u: &mut Unstructured<'_>, r: &Request) -> arbitrary::Result<Request> {
    let mut m = r.clone();
    match u.int_in_range(0..=7u8)? {
        0 => m.method = u.arbitrary()?,
        1 => m.path = u.arbitrary()?,
        2 => m.query = u.arbitrary()?,
        3 => m.timestamp = timestamp(u)?,
        4 => m.nonce = nonce(u)?,
        5 => m.body = u.arbitrary()?,
        _ => {
            let joined = format!("{}\n{}\n{}", r.method, r.path, r.query);
            let cuts: Vec<usize> = joined.match_indices('\n').map(|(i, _)| i).collect();
            if cuts.len() >= 2 {
                let a = cuts[u.choose_index(cuts.len())?];
                let b = cuts[u.choose_index(cuts.len())?];
                let (a, b) = (a.min(b), a.max(b));
                if a < b {
                    m.method = joined[..a].to_owned();
                    m.path = joined[a + 1..b].to_owned();
                    m.query = joined[b + 1..].to_owned();
                }
            }
        }
    }
    Ok(m)
}

fn check(u: &mut Unstructured<'_>) -> arbitrary::Result<()> {
    let now = Timestamp::from_unix(NOW);
    let secret: Vec<u8> = u.arbitrary()?;
    let r = request(u)?;
    let sig = sign_request(&secret, &r.signed());
    assert_eq!(sig.len(), 64, "signatures are 32 bytes of hex");

    // Whatever signature text arrives, only the right MAC is accepted.
    let verifier = RequestVerifier::new(WINDOW, 1_000);
    let presented: String = u.arbitrary()?;
    if verifier
        .verify("k", &secret, &r.signed(), &presented, now)
        .is_ok()
    {
        assert_eq!(
            presented.to_ascii_lowercase(),
            sig,
            "a forged signature verified"
        );
    }

    // The right signature: accepted once when nonce and time are acceptable, then a replay.
    let verifier = RequestVerifier::new(WINDOW, 1_000);
    let nonce_ok = (8..=128).contains(&r.nonce.len())
        && r.nonce
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    let fields_ok = [&r.method, &r.path, &r.query]
        .iter()
        .all(|f| !f.chars().any(char::is_control));
    let nonce_ok = nonce_ok && fields_ok;
    let fresh = (NOW - r.timestamp).abs() <= WINDOW;
    let first = verifier.verify("k", &secret, &r.signed(), &sig, now);
    let expected = if r.nonce.is_empty() {
        Err(SignatureError::Missing)
    } else if !nonce_ok {
        Err(SignatureError::Malformed)
    } else if !fresh {
        Err(SignatureError::Stale)
    } else {
        Ok(())
    };
    assert_eq!(first, expected, "{r:?}");
    if first.is_ok() {
        assert_eq!(
            verifier.verify("k", &secret, &r.signed(), &sig, now),
            Err(SignatureError::Replayed)
        );
        // Nonces are per signer.
        assert_eq!(
            verifier.verify("other", &secret, &r.signed(), &sig, now),
            Ok(())
        );
    }

    // A forged request never spends the nonce of the real one.
    let verifier = RequestVerifier::new(WINDOW, 1_000);
    let other = mutate(u, &r)?;
    let forged = verifier.verify("k", &secret, &other.signed(), &sig, now);
    if forged.is_ok() {
        assert!(
            other.same_as(&r),
            "a signature for {r:?} verified for a different request {other:?}"
        );
    } else if !other.same_as(&r) {
        assert_eq!(
            verifier.verify("k", &secret, &r.signed(), &sig, now),
            expected
        );
    }

    // Another secret never verifies.
    let mut wrong = secret.clone();
    wrong.push(1);
    assert!(RequestVerifier::new(WINDOW, 1_000)
        .verify("k", &wrong, &r.signed(), &sig, now)
        .is_err());
    Ok(())
}
