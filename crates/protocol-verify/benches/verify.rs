//! Cost of [`Verifier::verify`] against a bare HMAC-SHA256 computation over
//! the same bytes, for a typical (1 KiB) and a large (64 KiB) webhook body.

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, Throughput};
use hmac::{Hmac, Mac};
use protocol_verify::{Verifier, sign};
use sha2::Sha256;

const SECRET: &[u8] = b"whsec_test_protocol_secret";
const SIZES: [(usize, &str); 2] = [(1024, "1KiB"), (64 * 1024, "64KiB")];

fn body(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8).collect()
}

fn verify(c: &mut Criterion) {
    let verifier = Verifier::new([SECRET]).unwrap();
    let mut group = c.benchmark_group("verify");
    for (len, name) in SIZES {
        let body = body(len);
        let header = sign(SECRET, &body);
        group.throughput(Throughput::Bytes(len as u64));
        group.bench_with_input(BenchmarkId::from_parameter(name), &body, |b, body| {
            b.iter(|| verifier.verify(black_box(Some(header.as_str())), black_box(body)))
        });
    }
    group.finish();
}

/// What verification costs at the least: key the HMAC, hash the body,
/// compare with the (already decoded) expected digest.
fn baseline(c: &mut Criterion) {
    let mut group = c.benchmark_group("baseline");
    for (len, name) in SIZES {
        let body = body(len);
        let expected = hex::decode(sign(SECRET, &body)).unwrap();
        group.throughput(Throughput::Bytes(len as u64));
        group.bench_with_input(BenchmarkId::from_parameter(name), &body, |b, body| {
            b.iter(|| {
                let mut mac = Hmac::<Sha256>::new_from_slice(black_box(SECRET)).unwrap();
                mac.update(black_box(body));
                mac.finalize().into_bytes().as_slice() == black_box(expected.as_slice())
            })
        });
    }
    group.finish();
}

// What `criterion_group!`/`criterion_main!` expand to, minus the undocumented
// `pub fn` they generate (which the workspace's `missing_docs` lint rejects).
fn main() {
    let mut c = Criterion::default().configure_from_args();
    verify(&mut c);
    baseline(&mut c);
    c.final_summary();
}
