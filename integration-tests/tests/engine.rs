//! The engines that batch any set of lanes in one call, on real graphs: the
//! default model (`gqa`: an in-place KV buffer with per-row lengths) and a
//! small random-weight recurrent model (`state`,
//! `integration-tests/fixtures/recurrent`, made by `tools/make_fixtures.py`).
//!
//! What lossless coding needs from them: each row's logits are the same
//! bits whichever lanes share the call, whatever their context lengths, so a
//! frame encoded in one batch composition decodes in another.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use llmpack_codec::{
    LaneId, LmParams, Policy, Predictor, Request, StreamConfig, StreamDecoder, StreamEncoder,
    Vocabulary, drive,
};
use llmpack_frame::Codec;
use llmpack_model::{Contract, ModelDir, OnnxPredictor};

mod real_model;
use real_model::{load, sample};

fn default_dir() -> PathBuf {
    llmpack_model::find_in_project("models/default").expect("models/default is in the repository")
}

fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/recurrent")
}

fn ask(p: &mut OnnxPredictor, batch: &[(LaneId, Request)]) -> Vec<Vec<u32>> {
    let mut out = vec![Vec::new(); batch.len()];
    p.predict(batch, &mut |i, l| {
        out[i] = l.iter().map(|x| x.to_bits()).collect()
    })
    .unwrap();
    out
}

/// Five lanes primed with contexts of different lengths, then stepped in
/// changing compositions and orders: every answer equals, bit for bit, the
/// same lane's answer when it ran alone.
fn any_composition_gives_the_same_bits(path: &Path) {
    let (dir, vocab, mut p) = load(path);
    assert!(p.batches_any_lanes());
    let text = sample("prose.txt", 4000);
    let mut all = vec![vocab.bos()];
    vocab.tokenize(&text, &mut all);
    let lens = [3usize, 17, 40, 90, 200];
    let ctx: Vec<Vec<u32>> = lens
        .iter()
        .enumerate()
        .map(|(i, &n)| all[i * 7..i * 7 + n].to_vec())
        .collect();
    let steps = 6;
    let next = |lane: usize, k: usize| all[300 + lane * 11 + k];
    // Alone: one lane at a time, each through its prime and steps.
    let mut alone = Vec::new();
    for (i, c) in ctx.iter().enumerate() {
        let lane = 100 + i as u64;
        let mut seq = ask(&mut p, &[(lane, Request::Prime { tokens: c.clone() })]);
        for k in 0..steps {
            seq.extend(ask(&mut p, &[(lane, Request::Step { token: next(i, k) })]));
        }
        p.release(lane);
        alone.push(seq);
    }
    // Together: primes in one batch, then steps in changing compositions.
    let primes: Vec<(LaneId, Request)> = ctx
        .iter()
        .enumerate()
        .map(|(i, c)| (i as u64, Request::Prime { tokens: c.clone() }))
        .collect();
    for (i, got) in ask(&mut p, &primes).into_iter().enumerate() {
        assert_eq!(got, alone[i][0], "prime of lane {i}");
    }
    let mut done = [0usize; 5];
    let compositions: [&[usize]; 9] = [
        &[0, 1, 2, 3, 4],
        &[4, 0],
        &[1, 3, 2],
        &[3],
        &[2, 4, 1, 0],
        &[0, 1, 2, 3, 4],
        &[1, 4],
        &[3, 0, 2],
        &[4, 3, 2, 1, 0],
    ];
    let calls_before = p.stats().calls;
    for lanes in compositions {
        let batch: Vec<(LaneId, Request)> = lanes
            .iter()
            .map(|&i| {
                (
                    i as u64,
                    Request::Step {
                        token: next(i, done[i]),
                    },
                )
            })
            .collect();
        let got = ask(&mut p, &batch);
        for (&i, g) in lanes.iter().zip(got) {
            done[i] += 1;
            assert_eq!(
                g, alone[i][done[i]],
                "{}: lane {i} (context {}) step {} in batch {lanes:?}",
                dir.manifest.model.name, lens[i], done[i]
            );
        }
    }
    assert_eq!(
        p.stats().calls - calls_before,
        compositions.len() as u64,
        "one model call per batch, whatever the context lengths"
    );
    assert!(
        p.stats().gathers > 0,
        "the compositions made lanes move (the arrangement was exercised)"
    );
    for i in 0..5 {
        p.release(i);
    }
    assert_eq!(p.live_lanes(), 0);
}

#[test]
fn default_model_batches_any_lanes_bit_for_bit() {
    let dir = ModelDir::open(&default_dir()).unwrap();
    assert_eq!(dir.manifest.onnx.contract, Contract::Gqa);
    any_composition_gives_the_same_bits(&default_dir());
}

#[test]
fn recurrent_model_batches_any_lanes_bit_for_bit() {
    let dir = ModelDir::open(&fixture_dir()).unwrap();
    assert_eq!(dir.manifest.onnx.contract, Contract::State);
    any_composition_gives_the_same_bits(&fixture_dir());
}

/// Encodes three inputs as lanes of one batch, decodes each frame alone and
/// then alongside unrelated work: byte-exact every time.
fn frames_decode_in_another_composition(path: &Path, inputs: [Vec<u8>; 3]) {
    let (dir, vocab, mut p) = load(path);
    let vocab: Arc<dyn Vocabulary> = vocab;
    let cfg = StreamConfig {
        policy: Policy::Lm,
        lm: Some(LmParams::within(dir.manifest.model.context_length)),
        ..StreamConfig::default()
    };
    // Without zstd, frames go `lm` wherever the model beats raw bytes.
    let mut encs: Vec<StreamEncoder> = (0..3)
        .map(|i| {
            let mut e = StreamEncoder::new(i, cfg.clone(), vocab.clone(), b"");
            e.set_zstd(false);
            e
        })
        .collect();
    for (e, d) in encs.iter_mut().zip(&inputs) {
        e.push(d.clone());
    }
    let mut refs: Vec<&mut StreamEncoder> = encs.iter_mut().collect();
    drive(&mut p, &mut refs, &mut |_| {}).unwrap();
    let frames: Vec<_> = encs.iter_mut().map(|e| e.take_frame().unwrap()).collect();
    for f in &frames {
        assert_eq!(f.header.codec, Codec::Lm);
    }
    // Each alone.
    for (i, (f, want)) in frames.iter().zip(&inputs).enumerate() {
        let mut d = StreamDecoder::new(50 + i as u64, &cfg, vocab.clone(), b"");
        d.push(f.header, f.payload.clone());
        drive(&mut p, &mut [&mut d], &mut |_| {}).unwrap();
        assert_eq!(&d.take_output().unwrap().unwrap(), want, "frame {i} alone");
        p.release(50 + i as u64);
    }
    // In reverse order, all at once, next to a decoder of the first frame
    // that starts later (a lane at another context length).
    let mut decs: Vec<StreamDecoder> = (0..4)
        .map(|i| StreamDecoder::new(60 + i as u64, &cfg, vocab.clone(), b""))
        .collect();
    for (d, f) in decs.iter_mut().zip(frames.iter().rev()) {
        d.push(f.header, f.payload.clone());
    }
    {
        let mut refs: Vec<&mut StreamDecoder> = decs[..3].iter_mut().collect();
        for _ in 0..2 {
            // Two rounds by hand before the late one joins.
            let mut batch = Vec::new();
            let mut owners = Vec::new();
            for (k, d) in refs.iter_mut().enumerate() {
                d.poll_requests(&mut |lane, r| {
                    batch.push((lane, r));
                    owners.push(k);
                });
            }
            p.predict(&batch, &mut |i, l| {
                refs[owners[i]].handle_prediction(batch[i].0, l);
            })
            .unwrap();
        }
    }
    decs[3].push(frames[0].header, frames[0].payload.clone());
    let mut refs: Vec<&mut StreamDecoder> = decs.iter_mut().collect();
    drive(&mut p, &mut refs, &mut |_| {}).unwrap();
    let want = [&inputs[2], &inputs[1], &inputs[0], &inputs[0]];
    for (k, (d, w)) in decs.iter_mut().zip(want).enumerate() {
        assert_eq!(&d.take_output().unwrap().unwrap(), w, "decoder {k}");
    }
}

#[test]
fn default_model_frames_decode_in_another_batch_composition() {
    let inputs = [
        sample("prose.txt", 900),
        sample("code.py", 1500),
        sample("data.json", 600),
    ];
    frames_decode_in_another_composition(&default_dir(), inputs);
}

#[test]
fn recurrent_model_frames_decode_in_another_batch_composition() {
    // The fixture's weights are random: repeats (which the match model
    // predicts) make its frames smaller than raw bytes, so `lm` frames are
    // what gets decoded.
    let phrase = |s: &str, n: usize| s.repeat(n).into_bytes();
    let inputs = [
        phrase("the receiver regenerates the exact bytes; ", 12),
        phrase("{\"id\": 17, \"ok\": true}\n", 20),
        phrase("GET /index.html HTTP/1.1\r\n", 15),
    ];
    frames_decode_in_another_composition(&fixture_dir(), inputs);
}

/// Bad requests are errors, never panics, and the predictor goes on.
#[test]
fn bad_requests_fail_cleanly_and_the_predictor_goes_on() {
    let (dir, _vocab, mut p) = load(&default_dir());
    let kv_len = dir.manifest.onnx.kv_len.unwrap() as usize;
    let mut ignore = |_: usize, _: &[f32]| {};
    assert!(
        p.predict(&[(7, Request::Step { token: 1 })], &mut ignore)
            .is_err()
    );
    let long = vec![5u32; kv_len + 1];
    assert!(
        p.predict(&[(7, Request::Prime { tokens: long })], &mut ignore)
            .is_err()
    );
    assert!(
        p.predict(&[(7, Request::Prime { tokens: vec![] })], &mut ignore)
            .is_err()
    );
    // A full buffer: the next step is refused.
    let full = vec![5u32; kv_len];
    p.predict(&[(8, Request::Prime { tokens: full })], &mut ignore)
        .unwrap();
    assert!(
        p.predict(&[(8, Request::Step { token: 3 })], &mut ignore)
            .is_err()
    );
    // Two requests for one lane in one batch.
    p.predict(&[(9, Request::Prime { tokens: vec![0, 5] })], &mut ignore)
        .unwrap();
    let dup = [
        (9, Request::Step { token: 3 }),
        (9, Request::Step { token: 4 }),
    ];
    assert!(p.predict(&dup, &mut ignore).is_err());
    // Still serving.
    p.release(12345);
    p.predict(&[(9, Request::Step { token: 3 })], &mut ignore)
        .unwrap();
    p.release(8);
    p.release(9);
    p.release(7);
    assert_eq!(p.live_lanes(), 0);
}
