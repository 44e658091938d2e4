//! The metadata value decoders on arbitrary bytes: they never panic, and
//! whatever they accept re-encodes to exactly the bytes they were given.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    keepsake::testkit::decoders::check_value_decoders(data);
});
