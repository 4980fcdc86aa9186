//! `kms_core::token_format::parse`: never panics; whatever it accepts is exactly
//! `<prefix>_<id><secret><checksum>` within the format's limits; and every single-character
//! change of an accepted token is rejected by the checksum.

use kms_core::token_format::{self, TokenPrefix, CHECKSUM_LEN, ID_LEN, MAX_TOKEN_LEN, SECRET_LEN};

pub(crate) fn run(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let Ok(parsed) = token_format::parse(&text) else {
        return;
    };
    assert!(text.len() <= MAX_TOKEN_LEN, "accepted {} bytes", text.len());
    assert!(
        text.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'_'),
        "accepted a character outside [A-Za-z0-9_]: {text:?}"
    );
    assert!(TokenPrefix::parse(parsed.prefix()).is_ok());
    assert_eq!(parsed.lookup_id().len(), ID_LEN);
    assert_eq!(parsed.secret().len(), SECRET_LEN);
    let body = format!(
        "{}_{}{}",
        parsed.prefix(),
        parsed.lookup_id(),
        parsed.secret()
    );
    assert!(
        text.starts_with(&body) && text.len() == body.len() + CHECKSUM_LEN,
        "the parts do not recompose the token"
    );
    assert!(!format!("{parsed:?}").contains(parsed.secret()));

    // CRC32 catches every single-byte change, and the base62 checksum encodes it injectively.
    let bytes = text.as_bytes();
    for pos in 0..bytes.len() {
        let mut changed = bytes.to_vec();
        changed[pos] = match bytes[pos] {
            b'_' => continue,
            b'z' => b'0',
            b'9' => b'A',
            b'Z' => b'a',
            c => c + 1,
        };
        let changed = String::from_utf8_lossy(&changed);
        assert!(
            token_format::parse(&changed).is_err(),
            "a change at byte {pos} went unnoticed: {changed:?}"
        );
    }
}
