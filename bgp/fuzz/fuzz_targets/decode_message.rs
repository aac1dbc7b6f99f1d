//! Arbitrary bytes through framing and decoding under both session contexts; decoded UPDATEs
//! are encoded and decoded again. The logic lives in `margay_bgp::wire::fuzz_one` so the unit
//! tests run it on the BIRD fixtures without nightly.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    margay_bgp::wire::fuzz_one(data);
});
