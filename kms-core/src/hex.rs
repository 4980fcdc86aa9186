//! Lower-case hexadecimal, the one encoder for digests and MACs shown as text.

/// `bytes` as lower-case hex, two characters a byte.
pub(crate) fn encode(bytes: &[u8]) -> String {
    base16ct::lower::encode_string(bytes)
}

#[cfg(test)]
mod tests {
    #[test]
    fn encodes_lower_case_two_characters_a_byte() {
        assert_eq!(super::encode(&[0x00, 0x0f, 0xa5, 0xff]), "000fa5ff");
        assert_eq!(super::encode(&[]), "");
    }
}
