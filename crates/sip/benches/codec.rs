//! SIP codec hot paths: a received MESSAGE through the front end and the translation
//! (bytes → broker submission), a `message/cpim` MESSAGE, and the outbound MESSAGE
//! (envelope → bytes).
//!
//! Run: `cargo bench -p cpim-sip --bench codec`.

#![allow(clippy::disallowed_methods)] // tests wait with deadlines and measure

use criterion::{criterion_group, criterion_main, Criterion, Throughput};

use cpim::event::{Event, Message};
use cpim::Address;
use cpim_broker::envelope::{Envelope, MessageId};
use cpim_broker::Identity;
use cpim_sip::translate::{message_inbound, message_out, OutboundOptions};
use cpim_sip::wire::{check_request, frame, Framed, OutRequest};

fn request(content_type: &str, body: &str) -> Vec<u8> {
    format!(
        "MESSAGE sip:bob@xmpp.test SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK776sgdkse\r\n\
         Max-Forwards: 70\r\nFrom: \"Alice\" <sip:alice@sip.test>;tag=49583\r\nTo: <sip:bob@xmpp.test>\r\n\
         Call-ID: asd88asd77a@192.0.2.1\r\nCSeq: 1 MESSAGE\r\nContent-Type: {content_type}\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

fn inbound(bytes: &[u8]) -> usize {
    let Framed::Message(raw) = frame(bytes) else {
        panic!("frames")
    };
    let view = check_request(&raw, false).expect("valid");
    let i = message_inbound(&view, 0).expect("translates");
    i.event.size_hint()
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("sip");
    group.throughput(Throughput::Elements(1));
    let text = request(
        "text/plain; charset=UTF-8",
        "Watson, come here. I want to see you.",
    );
    group.bench_function("inbound_text_message", |b| b.iter(|| inbound(&text)));
    let cpim_body = "From: <sip:alice@sip.test>\r\nTo: <sip:bob@xmpp.test>\r\n\
                     DateTime: 2026-11-25T10:00:00Z\r\nNS: imdn <urn:ietf:params:imdn>\r\n\
                     imdn.Message-ID: 34jk324j\r\nimdn.Disposition-Notification: positive-delivery\r\n\
                     \r\nContent-Type: text/plain\r\n\r\nWatson, come here.";
    let cpim = request("message/cpim", cpim_body);
    group.bench_function("inbound_cpim_message", |b| b.iter(|| inbound(&cpim)));
    let envelope = Envelope {
        id: MessageId(0xab),
        event: Event::Message(Message::text("Art thou not Romeo, and a Montague?")),
        from: Address::parse("sip:juliet@xmpp.test").expect("address"),
        to: Address::parse("sip:romeo@sip.test").expect("address"),
        sender: Identity::new("juliet", "xmpp.test"),
        recipient: Identity::new("romeo", "sip.test"),
        origin: "xmpp".into(),
        destination: "sip".into(),
        origin_from: Address::parse("juliet@xmpp.test").expect("address"),
        origin_to: Address::parse("romeo@sip.gw.xmpp.test").expect("address"),
        protocol_ids: Vec::new(),
        hops: 69,
        received_at_ms: 0,
    };
    group.bench_function("outbound_message_bytes", |b| {
        b.iter(|| {
            let out = message_out(&envelope, &OutboundOptions::default())
                .expect("writes")
                .expect("a MESSAGE");
            OutRequest {
                method: "MESSAGE",
                uri: &out.to,
                via_transport: "UDP",
                via_sent_by: "127.0.0.1:5060",
                branch: "z9hG4bKbench",
                from: &out.from,
                to: &out.to,
                call_id: "bench@gw",
                cseq: 1,
                max_forwards: 69,
                headers: &out.headers,
                body: Some((&out.content_type, &out.body)),
            }
            .to_bytes()
            .len()
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
