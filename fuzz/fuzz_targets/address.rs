//! Addresses: parsing never panics; what parses prints to text that parses to the same
//! address; RFC 7247 conversions never panic and produce parseable addresses.
#![no_main]

use cpim::address::{im_to_jid, jid_to_im, jid_to_sip, sip_to_jid};
use cpim::{Address, ImScheme};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else { return };
    let Ok(a) = Address::parse(s) else { return };
    assert_eq!(Address::parse(&a.to_string()).as_ref(), Ok(&a));
    match &a {
        Address::Sip(u) => {
            if let Ok(j) = sip_to_jid(u) {
                assert_eq!(Address::parse(&j.to_string()), Ok(Address::Xmpp(j.clone())));
            }
        }
        Address::Im(u) => {
            let _ = im_to_jid(u);
        }
        Address::Xmpp(j) => {
            if let Ok(u) = jid_to_sip(j, false, true) {
                let back = Address::parse(&u.to_string()).expect("generated SIP URI parses");
                assert_eq!(back, Address::Sip(u));
            }
            let _ = jid_to_im(j, ImScheme::Im);
        }
    }
});
