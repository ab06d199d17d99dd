//! Range coder and frequency-table build at the real model's vocabulary size
//! (49152): the per-token CPU work around each model step.

use constriction::stream::queue::{DefaultRangeDecoder, DefaultRangeEncoder};
use constriction::stream::{Decode, Encode};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use llmpack_codec::FreqTable;
use std::hint::black_box;

const VOCAB: usize = 49152;

/// Logits shaped like a language model's: a few likely tokens, a long tail.
fn logits(seed: u64) -> Vec<f32> {
    let mut x = seed | 1;
    (0..VOCAB)
        .map(|i| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let noise = f32::from(u16::try_from(x % 1000).unwrap()) / 100.0;
            if i % 997 == 0 {
                20.0 + noise
            } else {
                noise - 5.0
            }
        })
        .collect()
}

fn tables(c: &mut Criterion) {
    let l = logits(7);
    let mut t = FreqTable::uniform(VOCAB);
    let mut g = c.benchmark_group("freq_table");
    g.throughput(Throughput::Elements(1));
    let small: Vec<f32> = logits(7)[..4096].to_vec();
    g.bench_function("fill_from_logits_4096", |b| {
        b.iter(|| t.fill_from_logits(black_box(&small)));
    });
    g.bench_function("fill_from_logits_49152", |b| {
        b.iter(|| t.fill_from_logits(black_box(&l)))
    });
    g.finish();
}

fn coder(c: &mut Criterion) {
    let tabs: Vec<FreqTable> = (0..16)
        .map(|s| {
            let mut t = FreqTable::uniform(VOCAB);
            t.fill_from_logits(&logits(s));
            t
        })
        .collect();
    let symbols: Vec<usize> = (0..4096).map(|i| (i * 997 + (i % 3)) % VOCAB).collect();
    let mut g = c.benchmark_group("range_coder");
    g.throughput(Throughput::Elements(symbols.len() as u64));
    g.bench_function("encode_4096_tokens", |b| {
        b.iter(|| {
            let mut e = DefaultRangeEncoder::new();
            for (i, &s) in symbols.iter().enumerate() {
                e.encode_symbol(s, &tabs[i % 16]).unwrap();
            }
            black_box(e.into_compressed().unwrap())
        })
    });
    let mut e = DefaultRangeEncoder::new();
    for (i, &s) in symbols.iter().enumerate() {
        e.encode_symbol(s, &tabs[i % 16]).unwrap();
    }
    let words = e.into_compressed().unwrap();
    g.bench_function("decode_4096_tokens", |b| {
        b.iter(|| {
            let mut d = DefaultRangeDecoder::from_compressed(words.clone()).unwrap();
            for i in 0..symbols.len() {
                black_box(d.decode_symbol(&tabs[i % 16]).unwrap());
            }
        })
    });
    g.finish();
}

criterion_group!(benches, tables, coder);
criterion_main!(benches);
