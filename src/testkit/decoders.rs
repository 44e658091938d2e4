//! The metadata value decoders, reachable from outside the crate for the
//! `value_decoders` fuzz target.

/// Decodes `bytes` as every kind of metadata value (user, album, file, blob,
/// per-user blob, segment and damage records, and plain integers) and checks
/// that every decoding that succeeds is exact: the value re-encodes to
/// `bytes`. Panics on a violation, never on the input alone.
///
/// ```
/// keepsake::testkit::decoders::check_value_decoders(&[1, 0, 0, 0, 0, 0, 0, 0, 0]);
/// ```
pub fn check_value_decoders(bytes: &[u8]) {
    crate::meta::records::check_decoders(bytes);
}
