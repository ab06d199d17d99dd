//! The real model through the library API: the determinism facts the codec
//! relies on, and lossless round trips of awkward inputs.

use std::path::PathBuf;
use std::sync::Arc;

use llmpack_codec::{
    LaneId, Policy, Predictor, Request, StreamConfig, StreamDecoder, StreamEncoder, Vocabulary,
    drive,
};
use llmpack_frame::Codec;
use llmpack_model::{HfVocab, ModelDir, OnnxPredictor};

mod real_model;
use real_model::sample;

fn model_dir() -> ModelDir {
    let path: PathBuf = llmpack_model::find_in_project("models/smollm2-135m")
        .expect("models/smollm2-135m not found: run scripts/setup.sh first");
    ModelDir::open(&path).expect("model directory is valid")
}

fn load() -> (ModelDir, Arc<HfVocab>, OnnxPredictor) {
    real_model::load(&model_dir().path)
}

/// Runs one batch and returns each request's logits.
fn ask(p: &mut OnnxPredictor, batch: &[(LaneId, Request)]) -> Vec<Vec<f32>> {
    let mut out = vec![Vec::new(); batch.len()];
    p.predict(batch, &mut |i, l| out[i] = l.to_vec()).unwrap();
    out
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

#[test]
fn batched_steps_equal_single_steps_bit_for_bit() {
    let (_dir, vocab, mut p) = load();
    let texts = [
        "The quick brown fox",
        "fn main() { let x",
        "{\"name\": \"Alice\",",
    ];
    let ctx: Vec<Vec<u32>> = texts
        .iter()
        .map(|t| {
            let mut v = vec![vocab.bos()];
            vocab.tokenize(t.as_bytes(), &mut v);
            v.truncate(5);
            v
        })
        .collect();
    let next = [[11u32, 12, 13], [21, 22, 23], [31, 32, 33]];
    // Each lane alone.
    let mut alone = Vec::new();
    for (i, c) in ctx.iter().enumerate() {
        let lane = 100 + i as u64;
        let mut seq = vec![ask(&mut p, &[(lane, Request::Prime { tokens: c.clone() })]).remove(0)];
        for &t in &next[i] {
            seq.push(ask(&mut p, &[(lane, Request::Step { token: t })]).remove(0));
        }
        alone.push(seq);
    }
    // The same lanes batched, with the composition changing: all three,
    // then two (a gather), then the third catches up, then all three again.
    let primes: Vec<(LaneId, Request)> = ctx
        .iter()
        .enumerate()
        .map(|(i, c)| (i as u64, Request::Prime { tokens: c.clone() }))
        .collect();
    let got = ask(&mut p, &primes);
    for i in 0..3 {
        assert_eq!(bits(&got[i]), bits(&alone[i][0]), "prime of lane {i}");
    }
    let step = |k: usize, lanes: &[usize]| -> Vec<(LaneId, Request)> {
        lanes
            .iter()
            .map(|&i| (i as u64, Request::Step { token: next[i][k] }))
            .collect()
    };
    let got = ask(&mut p, &step(0, &[0, 1, 2]));
    for i in 0..3 {
        assert_eq!(bits(&got[i]), bits(&alone[i][1]), "first step of lane {i}");
    }
    let got = ask(&mut p, &step(1, &[0, 1]));
    assert_eq!(bits(&got[0]), bits(&alone[0][2]));
    assert_eq!(bits(&got[1]), bits(&alone[1][2]));
    let got = ask(&mut p, &step(1, &[2]));
    assert_eq!(bits(&got[0]), bits(&alone[2][2]));
    let got = ask(&mut p, &step(2, &[2, 0, 1]));
    assert_eq!(bits(&got[0]), bits(&alone[2][3]));
    assert_eq!(bits(&got[1]), bits(&alone[0][3]));
    assert_eq!(bits(&got[2]), bits(&alone[1][3]));
    assert!(
        p.stats().gathers >= 2,
        "the composition changes were exercised"
    );
}

#[test]
fn awkward_inputs_round_trip_with_the_real_model() {
    let (_dir, vocab, mut p) = load();
    let vocab: Arc<dyn Vocabulary> = vocab;
    // Halves of 1200 bytes: above the 512 bytes up to which `auto` tries the
    // model whatever zstd says.
    let random = llmpack_codec::toy::random_bytes(2400, 1);
    let mut mixed =
        b"caf\xc3\xa9 \xff\xfe\xc0\x80 NUL\x00 <|endoftext|><|im_start|> \x04\x06\x1d ok\n"
            .to_vec();
    mixed.extend(0..=255u8);
    mixed.extend_from_slice("emoji 🦀 and tabs\t\r\n".as_bytes());
    let inputs: Vec<(&str, Vec<u8>, Policy)> = vec![
        ("prose", sample("prose.txt", 1200), Policy::Auto),
        ("code", sample("code.py", 1200), Policy::Auto),
        ("json", sample("data.json", 1200), Policy::Auto),
        ("binary", random, Policy::Auto),
        ("mixed", mixed, Policy::Lm),
    ];
    // Two frames per input, all inputs coded as lanes of one batch.
    let mut encs: Vec<StreamEncoder> = inputs
        .iter()
        .enumerate()
        .map(|(i, (_, _, policy))| {
            let cfg = StreamConfig {
                policy: *policy,
                ..StreamConfig::default()
            };
            StreamEncoder::new(i as u64, cfg, vocab.clone(), b"")
        })
        .collect();
    let mut decs: Vec<StreamDecoder> = (0..inputs.len())
        .map(|i| {
            StreamDecoder::new(
                1000 + i as u64,
                &StreamConfig::default(),
                vocab.clone(),
                b"",
            )
        })
        .collect();
    for half in 0..2 {
        for (e, (_, data, _)) in encs.iter_mut().zip(&inputs) {
            let mid = data.len() / 2;
            e.push(if half == 0 {
                data[..mid].to_vec()
            } else {
                data[mid..].to_vec()
            });
        }
        let mut refs: Vec<&mut StreamEncoder> = encs.iter_mut().collect();
        drive(&mut p, &mut refs, &mut |_| {}).unwrap();
        let frames: Vec<_> = encs.iter_mut().map(|e| e.take_frame().unwrap()).collect();
        for (d, f) in decs.iter_mut().zip(&frames) {
            d.push(f.header, f.payload.clone());
        }
        let mut refs: Vec<&mut StreamDecoder> = decs.iter_mut().collect();
        drive(&mut p, &mut refs, &mut |_| {}).unwrap();
        for ((d, f), (name, data, _)) in decs.iter_mut().zip(&frames).zip(&inputs) {
            let mid = data.len() / 2;
            let want = if half == 0 {
                &data[..mid]
            } else {
                &data[mid..]
            };
            let got = d
                .take_output()
                .unwrap()
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(got, want, "{name} half {half}");
            match *name {
                "binary" => {
                    assert_eq!(f.header.codec, Codec::Raw, "{name}");
                    assert_eq!(
                        f.header.tokens, 0,
                        "auto never ran the model on random frames over 512 bytes"
                    );
                }
                "mixed" => assert!(f.header.tokens > 0, "mixed input went through the model"),
                _ => {
                    assert_eq!(f.header.codec, Codec::Lm, "{name}");
                    assert!(
                        f.payload.len() * 8 < want.len() * 2,
                        "{name}: {} bytes for {}",
                        f.payload.len(),
                        want.len()
                    );
                }
            }
        }
    }
}

#[test]
fn tokenizer_is_byte_faithful() {
    let dir = model_dir();
    let m = &dir.manifest.model;
    let vocab = HfVocab::load(&dir.tokenizer_path(), m.vocab_size, m.bos_token_id).unwrap();
    let decode = |tokens: &[u32]| -> Vec<u8> {
        let mut out = Vec::new();
        let mut esc = false;
        for &t in tokens {
            if esc {
                out.push(vocab.escaped_byte(t).expect("stand-in after escape"));
                esc = false;
            } else if Some(t) == vocab.escape_token() {
                esc = true;
            } else {
                out.extend_from_slice(vocab.token_bytes(t).expect("token has bytes"));
            }
        }
        out
    };
    let mut cases: Vec<Vec<u8>> = vec![
        (0..=255u8).collect(),
        b"<|endoftext|> literal special tokens <|im_end|>".to_vec(),
        b"\xff\xfe invalid \xc3 utf-8 \xe2\x82 truncated \xf0\x9f\xa6".to_vec(),
        "unicode: Grüße, 日本語, 🦀, digits 1234567890"
            .as_bytes()
            .to_vec(),
        vec![0; 40],
        Vec::new(),
    ];
    let mut x = 1u64;
    for n in [1, 7, 300] {
        cases.push(
            (0..n)
                .map(|_| {
                    x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
                    x.to_le_bytes()[7]
                })
                .collect(),
        );
    }
    for c in &cases {
        let mut t = Vec::new();
        vocab.tokenize(c, &mut t);
        assert!(t.iter().all(|&id| (id as usize) < vocab.vocab_size()));
        assert_eq!(&decode(&t), c);
    }
    // Ordinary text uses real BPE merges, not byte fallback.
    let mut t = Vec::new();
    vocab.tokenize(
        b"The receiver regenerates the exact bytes with the same model.",
        &mut t,
    );
    assert!(t.len() < 16, "{} tokens", t.len());
}
