//! Round trips of whole streams through encoder, toy model and decoder.

use std::sync::Arc;

use llmpack_frame::{Codec, FRAME_HEADER_LEN, FrameHeader};
use proptest::prelude::*;

use crate::toy::{ToyPredictor, markov};
use crate::*;

fn vocab() -> Arc<dyn Vocabulary> {
    Arc::new(ByteVocab::default())
}

/// Encodes each lane's frames (all lanes batched together), decodes them on a
/// separate predictor, and returns the frames. Panics on any mismatch.
fn round_trip(lanes: &[Vec<Vec<u8>>], cfg: &StreamConfig, primer: &[u8]) -> Vec<Vec<EncodedFrame>> {
    let v = vocab();
    let mut tx = ToyPredictor::new(v.vocab_size());
    let mut encs: Vec<StreamEncoder> = (0..lanes.len())
        .map(|i| StreamEncoder::new(i as u64, cfg.clone(), v.clone(), primer))
        .collect();
    let rounds = lanes.iter().map(Vec::len).max().unwrap_or(0);
    let mut coded: Vec<Vec<EncodedFrame>> = vec![Vec::new(); lanes.len()];
    for r in 0..rounds {
        let mut active: Vec<&mut StreamEncoder> = Vec::new();
        for (i, e) in encs.iter_mut().enumerate() {
            if let Some(f) = lanes[i].get(r) {
                e.push(f.clone());
                active.push(e);
            }
        }
        drive(&mut tx, &mut active, &mut |_| {}).unwrap();
        for (i, e) in encs.iter_mut().enumerate() {
            if lanes[i].get(r).is_some() {
                coded[i].push(e.take_frame().expect("frame finished"));
            }
        }
    }
    let mut rx = ToyPredictor::new(v.vocab_size());
    let mut decs: Vec<StreamDecoder> = (0..lanes.len())
        .map(|i| StreamDecoder::new(100 + i as u64, cfg, v.clone(), primer))
        .collect();
    for r in 0..rounds {
        let mut active: Vec<&mut StreamDecoder> = Vec::new();
        for (i, d) in decs.iter_mut().enumerate() {
            if let Some(f) = coded[i].get(r) {
                // Through the wire format, as a receiver would see it.
                let mut wire = Vec::new();
                f.write_to(&mut wire);
                let mut buf = &wire[..];
                let h = FrameHeader::decode(&mut buf).unwrap();
                d.push(h, buf.to_vec());
                active.push(d);
            }
        }
        drive(&mut rx, &mut active, &mut |_| {}).unwrap();
        for (i, d) in decs.iter_mut().enumerate() {
            if let Some(f) = lanes[i].get(r) {
                let out = d.take_output().expect("output").expect("decodes");
                assert_eq!(&out, f, "lane {i} frame {r}");
                assert!(coded[i][r].wire_len() <= f.len() + FRAME_HEADER_LEN);
            }
        }
    }
    // The decoder asks only what it needs: the encoder's last fed tokens are
    // stepped lazily, when (if ever) a later lm frame needs them.
    assert!(rx.answered.0 <= tx.answered.0 && rx.answered.1 <= tx.answered.1);
    coded
}

fn text(n: usize, seed: u64) -> Vec<u8> {
    let words = [
        "the ", "tunnel ", "carries ", "bytes ", "over ", "a ", "slow ", "link ", "and ", "model\n",
    ];
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::new();
    while out.len() < n {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(words[(x % 10) as usize].as_bytes());
    }
    out.truncate(n);
    out
}

#[test]
fn text_goes_lm_and_shrinks() {
    let cfg = StreamConfig {
        zstd_level: 19,
        ..StreamConfig::default()
    };
    let frames = vec![markov(3000, 1), markov(3000, 2), markov(3000, 3)];
    let coded = round_trip(&[frames], &cfg, b"");
    for f in &coded[0][1..] {
        assert_eq!(f.header.codec, Codec::Lm);
        assert_eq!(f.header.tokens, 3000);
        assert!(f.payload.len() < 3000 / 4, "{}", f.payload.len());
    }
}

#[test]
fn random_bytes_go_raw_without_the_model() {
    let mut x = 7u64;
    let data: Vec<u8> = (0..5000)
        .map(|_| {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            x.to_le_bytes()[7]
        })
        .collect();
    let coded = round_trip(&[vec![data]], &StreamConfig::default(), b"");
    let f = &coded[0][0];
    assert_eq!(f.header.codec, Codec::Raw);
    assert_eq!(
        f.header.tokens, 0,
        "auto skips the model for incompressible data"
    );
    assert_eq!(f.wire_len(), 5000 + FRAME_HEADER_LEN);
}

#[test]
fn small_window_reprimes_identically() {
    let cfg = StreamConfig {
        lm: Some(LmParams {
            window: 40,
            keep: 10,
        }),
        policy: Policy::Lm,
        ..StreamConfig::default()
    };
    let frames: Vec<Vec<u8>> = (0..5).map(|i| markov(500, i)).collect();
    round_trip(&[frames.clone(), frames], &cfg, b"primer text ");
}

#[test]
fn every_policy_round_trips() {
    for policy in [Policy::Auto, Policy::Lm, Policy::Zstd, Policy::Raw] {
        let cfg = StreamConfig {
            policy,
            zstd_level: 1,
            ..StreamConfig::default()
        };
        let frames = vec![
            text(2000, 9),
            b"\x00\xff<|endoftext|>\xc3\x28".to_vec(),
            Vec::new(),
            text(100, 4),
        ];
        let coded = round_trip(&[frames], &cfg, b"");
        let used_model = coded[0].iter().any(|f| f.header.tokens > 0);
        assert_eq!(used_model, policy.uses_model(), "{policy:?}");
    }
}

#[test]
fn corrupt_lm_payload_is_an_error_not_a_panic() {
    let cfg = StreamConfig::default();
    let coded = round_trip(&[vec![markov(4000, 5)]], &cfg, b"");
    let f = &coded[0][0];
    assert_eq!(f.header.codec, Codec::Lm);
    for flip in [0usize, 5, f.payload.len() / 2, f.payload.len() - 1] {
        let mut payload = f.payload.clone();
        payload[flip] ^= 0x40;
        let v = vocab();
        let mut rx = ToyPredictor::new(v.vocab_size());
        let mut d = StreamDecoder::new(0, &cfg, v, b"");
        d.push(f.header, payload);
        drive(&mut rx, &mut [&mut d], &mut |_| {}).unwrap();
        let err = d.take_output().unwrap().unwrap_err();
        assert!(
            matches!(err, DecodeError::Checksum { .. } | DecodeError::Corrupt(_)),
            "{err}"
        );
    }
}

#[test]
fn mismatched_model_is_caught_by_the_checksum() {
    let cfg = StreamConfig::default();
    let coded = round_trip(&[vec![markov(4000, 6)]], &cfg, b"");
    assert_eq!(coded[0][0].header.codec, Codec::Lm);
    let v = vocab();
    let mut rx = ToyPredictor::new(v.vocab_size());
    rx.perturb = 4.0;
    let mut d = StreamDecoder::new(0, &cfg, v, b"");
    d.push(coded[0][0].header, coded[0][0].payload.clone());
    drive(&mut rx, &mut [&mut d], &mut |_| {}).unwrap();
    assert!(d.take_output().unwrap().is_err());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]
    #[test]
    fn arbitrary_streams_round_trip(
        frames in proptest::collection::vec(
            prop_oneof![
                proptest::collection::vec(any::<u8>(), 0..700),
                (0u64..1000, 0usize..1500).prop_map(|(s, n)| text(n, s)),
                (0u64..1000, 0usize..1500).prop_map(|(s, n)| markov(n, s)),
            ],
            1..5),
        policy in prop_oneof![Just(Policy::Auto), Just(Policy::Lm), Just(Policy::Zstd)],
        window in 8u32..200,
    ) {
        let cfg = StreamConfig {
            policy,
            zstd_level: 1,
            lm: Some(LmParams { window, keep: window / 3 }),
            ..StreamConfig::default()
        };
        round_trip(&[frames.clone(), frames], &cfg, b"hi");
    }

    #[test]
    fn arbitrary_payloads_never_panic(
        payload in proptest::collection::vec(any::<u8>(), 0..300),
        codec in 0u8..3,
        orig_len in 0u32..400,
        tokens in 0u32..400,
        lanes in 1u8..5,
    ) {
        let header = FrameHeader {
            codec: Codec::from_byte(codec).unwrap(),
            orig_len,
            payload_len: u32::try_from(payload.len()).unwrap(),
            tokens: tokens.min(orig_len),
            checksum: 0,
        };
        let v = vocab();
        let mut rx = ToyPredictor::new(v.vocab_size());
        let cfg = StreamConfig { lanes, ..StreamConfig::default() };
        let mut d = StreamDecoder::new(0, &cfg, v, b"");
        d.push(header, payload);
        drive(&mut rx, &mut [&mut d], &mut |_| {}).unwrap();
        prop_assert!(d.take_output().is_some());
    }
}

proptest! {
    /// A decoder without a model (`zstd` policy, or a receiver that switched
    /// the model off) refuses any `lm` frame, whatever its token count,
    /// and never asks the predictor for anything.
    #[test]
    fn model_less_decoder_never_panics(
        payload in proptest::collection::vec(any::<u8>(), 0..300),
        codec in 0u8..3,
        orig_len in 0u32..400,
        tokens in 0u32..400,
    ) {
        let header = FrameHeader {
            codec: Codec::from_byte(codec).unwrap(),
            orig_len,
            payload_len: u32::try_from(payload.len()).unwrap(),
            tokens: tokens.min(orig_len),
            checksum: 0,
        };
        let cfg = StreamConfig { policy: Policy::Zstd, lm: None, ..StreamConfig::default() };
        let v = vocab();
        let mut rx = ToyPredictor::new(v.vocab_size());
        let mut d = StreamDecoder::new(0, &cfg, v, b"");
        d.push(header, payload);
        let step = drive(&mut rx, &mut [&mut d], &mut |_| {}).unwrap();
        prop_assert_eq!(step.requests, 0);
        let out = d.take_output();
        prop_assert!(out.is_some());
        if header.codec == Codec::Lm {
            prop_assert!(matches!(out, Some(Err(DecodeError::NeedsModel))));
        }
    }
}

/// A byte vocabulary without tokens for bytes >= 0xF0, escaped through
/// token 256 with stand-in bytes 0x00.. (like SmolLM2's, which lacks 21 bytes).
struct SparseVocab(ByteVocab);

impl Vocabulary for SparseVocab {
    fn vocab_size(&self) -> usize {
        258
    }
    fn token_bytes(&self, id: u32) -> Option<&[u8]> {
        if id >= 0xF0 {
            return None;
        }
        self.0.token_bytes(id)
    }
    fn tokenize(&self, data: &[u8], out: &mut Vec<u32>) {
        for &b in data {
            if b >= 0xF0 {
                out.extend([256, u32::from(b - 0xF0)]);
            } else {
                out.push(u32::from(b));
            }
        }
    }
    fn bos(&self) -> u32 {
        257
    }
    fn escape_token(&self) -> Option<u32> {
        Some(256)
    }
    fn escaped_byte(&self, id: u32) -> Option<u8> {
        (id < 0x10).then(|| 0xF0 + u8::try_from(id).expect("< 16"))
    }
}

#[test]
fn escaped_bytes_round_trip() {
    for lanes in [1, 4] {
        escaped_bytes_round_trip_on(lanes);
    }
}

fn escaped_bytes_round_trip_on(lanes: u8) {
    let v: Arc<dyn Vocabulary> = Arc::new(SparseVocab(ByteVocab::default()));
    let cfg = StreamConfig {
        policy: Policy::Lm,
        lanes,
        ..StreamConfig::default()
    };
    let mut data = markov(2000, 11);
    data.extend((0..=255u8).rev());
    data.extend(markov(500, 12));
    let mut tx = ToyPredictor::new(v.vocab_size());
    let mut e = StreamEncoder::new(1, cfg.clone(), v.clone(), b"");
    e.push(data.clone());
    drive(&mut tx, &mut [&mut e], &mut |_| {}).unwrap();
    let f = e.take_frame().unwrap();
    assert_eq!(f.header.codec, Codec::Lm);
    assert_eq!(f.header.tokens as usize, data.len() + 16, "16 escapes");
    let mut rx = ToyPredictor::new(v.vocab_size());
    let mut d = StreamDecoder::new(2, &cfg, v, b"");
    d.push(f.header, f.payload);
    drive(&mut rx, &mut [&mut d], &mut |_| {}).unwrap();
    assert_eq!(d.take_output().unwrap().unwrap(), data);
}

/// Frames sent with zstd switched off go raw, stay in the zstd history on
/// both ends (the next zstd frame refers back into them), and decode
/// exactly; zstd's work is counted only while it runs.
#[test]
fn zstd_switched_off_goes_raw_and_keeps_the_history() {
    let cfg = StreamConfig {
        policy: Policy::Zstd,
        lm: None,
        ..StreamConfig::default()
    };
    let v = vocab();
    let mut enc = StreamEncoder::new(0, cfg.clone(), v.clone(), b"");
    let mut dec = StreamDecoder::new(1, &cfg, v, b"");
    let frames = [text(6000, 1), text(6000, 2), text(6000, 2)];
    let mut work = Vec::new();
    for (i, data) in frames.iter().enumerate() {
        enc.set_zstd(i != 1);
        assert_eq!(enc.sends_raw(true), i == 1, "frame {i}");
        enc.push(data.clone());
        work.push(enc.zstd_work().0);
        let f = enc.take_frame().expect("model-free frames finish at once");
        let want = if i == 1 { Codec::Raw } else { Codec::Zstd };
        assert_eq!(f.header.codec, want, "frame {i}");
        if i == 1 {
            assert_eq!(&f.payload, data, "a raw payload is the bytes");
        }
        if i == 2 {
            // The same bytes as the raw frame 1: zstd finds them in its
            // history and codes them as one long match.
            assert!(f.payload.len() < 200, "{} bytes", f.payload.len());
        }
        dec.push(f.header, f.payload);
        let out = dec.take_output().expect("output").expect("decodes");
        assert_eq!(&out, data, "frame {i}");
    }
    assert_eq!(work, vec![6000, 6000, 12000]);
}

#[test]
fn context_rule_stays_within_the_trained_context() {
    // A 512-token model gets a 512-token window keeping a quarter; a model
    // trained on more keeps the default rule.
    assert_eq!(
        LmParams::within(512),
        LmParams {
            window: 512,
            keep: 128
        }
    );
    assert_eq!(LmParams::within(8192), LmParams::default());
    let tiny = LmParams::within(64);
    assert_eq!((tiny.window, tiny.keep), (64, 16));
    assert!(tiny.validate(8).is_ok());
}

/// A model that is sure of the wrong thing: all its mass on byte 0.
struct Contrary;

impl Predictor for Contrary {
    fn vocab_size(&self) -> usize {
        256
    }

    fn predict(
        &mut self,
        batch: &[(LaneId, Request)],
        answer: &mut dyn FnMut(usize, &[f32]),
    ) -> Result<(), PredictError> {
        let mut logits = vec![0.0f32; 256];
        logits[0] = 30.0;
        for i in 0..batch.len() {
            answer(i, &logits);
        }
        Ok(())
    }

    fn release(&mut self, _lane: LaneId) {}
}

#[test]
fn auto_gives_up_on_a_losing_model_at_the_first_checkpoint() {
    // zstd shrinks this text a lot; the model makes every byte cost ~40 bits.
    let data = text(12_000, 5);
    let mut enc = StreamEncoder::new(1, StreamConfig::default(), vocab(), b"");
    enc.push(data.clone());
    drive(&mut Contrary, &mut [&mut enc], &mut |_| {}).unwrap();
    let f = enc.take_frame().expect("frame finished");
    assert_eq!(f.header.codec, Codec::Zstd);
    // It stopped at the 2 KiB checkpoint, not at the end of the frame.
    assert!(
        (2048..2100).contains(&(f.header.tokens as usize)),
        "fed {} tokens",
        f.header.tokens
    );
    let mut dec = StreamDecoder::new(2, &StreamConfig::default(), vocab(), b"");
    dec.push(f.header, f.payload);
    drive(&mut Contrary, &mut [&mut dec], &mut |_| {}).unwrap();
    assert_eq!(dec.take_output().expect("output").expect("decodes"), data);
}

/// A stream of 4 lanes codes long frames as segments stepped together and
/// short ones on one lane; model-free frames that fed the model (here: random
/// bytes the model cannot shrink under `lm`) keep every lane in step, so the
/// next model frame still decodes. Decoding alone, not beside the encoder's
/// batch partners, gives the same bytes.
#[test]
fn one_frame_codes_on_several_lanes() {
    let cfg = StreamConfig {
        policy: Policy::Lm,
        lanes: 4,
        ..StreamConfig::default()
    };
    let frames = vec![
        markov(5000, 1),
        markov(300, 2),
        crate::toy::random_bytes(3000, 3),
        markov(9000, 4),
        markov(1500, 5),
    ];
    let coded = round_trip(
        &[frames.clone(), vec![markov(700, 9), markov(6000, 8)]],
        &cfg,
        b"hi",
    );
    let c = &coded[0];
    assert_eq!(c[0].header.codec, Codec::Lm);
    assert_eq!(c[0].payload[0], 4, "5000 tokens: 4 segments");
    assert_eq!(c[1].payload[0], 1, "300 tokens: one segment");
    assert_eq!(c[2].header.codec, Codec::Raw);
    assert_eq!(c[2].header.tokens, 3000, "the model saw every token");
    assert_eq!(c[3].header.codec, Codec::Lm);
    assert_eq!(c[4].payload[0], 2, "1500 tokens: 2 segments");
    // The same frames decoded on their own predictor, stream alone.
    let v = vocab();
    let mut rx = ToyPredictor::new(v.vocab_size());
    let mut d = StreamDecoder::new(7, &cfg, v, b"hi");
    for (f, want) in c.iter().zip(&frames) {
        d.push(f.header, f.payload.clone());
        drive(&mut rx, &mut [&mut d], &mut |_| {}).unwrap();
        assert_eq!(&d.take_output().unwrap().unwrap(), want);
    }
    assert_eq!(d.used_lanes().len(), 4);
}

/// A frame the model loses on stops at the first checkpoint after a whole
/// lockstep round: 2048 tokens fed, 512 on each of 4 lanes; it decodes.
#[test]
fn several_lanes_give_up_in_step() {
    let cfg = StreamConfig {
        lanes: 4,
        ..StreamConfig::default()
    };
    let data = text(12_000, 5);
    let mut enc = StreamEncoder::new(1, cfg.clone(), vocab(), b"");
    enc.push(data.clone());
    drive(&mut Contrary, &mut [&mut enc], &mut |_| {}).unwrap();
    let f = enc.take_frame().expect("frame finished");
    assert_eq!(f.header.codec, Codec::Zstd);
    assert_eq!(f.header.tokens, 2048);
    let mut dec = StreamDecoder::new(2, &cfg, vocab(), b"");
    dec.push(f.header, f.payload);
    drive(&mut Contrary, &mut [&mut dec], &mut |_| {}).unwrap();
    assert_eq!(dec.take_output().expect("output").expect("decodes"), data);
}

/// Both ends must agree on the lanes: a segmented frame on a one-lane
/// decoder, or with more segments than the decoder has lanes, is an error.
#[test]
fn segment_tables_are_checked() {
    let cfg4 = StreamConfig {
        policy: Policy::Lm,
        lanes: 4,
        ..StreamConfig::default()
    };
    let v = vocab();
    let mut tx = ToyPredictor::new(v.vocab_size());
    let mut e = StreamEncoder::new(1, cfg4.clone(), v.clone(), b"");
    let data = markov(5000, 3);
    e.push(data);
    drive(&mut tx, &mut [&mut e], &mut |_| {}).unwrap();
    let f = e.take_frame().unwrap();
    assert_eq!(f.payload[0], 4);
    for lanes in [1, 2] {
        let cfg = StreamConfig {
            lanes,
            ..cfg4.clone()
        };
        let mut rx = ToyPredictor::new(v.vocab_size());
        let mut d = StreamDecoder::new(2, &cfg, v.clone(), b"");
        d.push(f.header, f.payload.clone());
        drive(&mut rx, &mut [&mut d], &mut |_| {}).unwrap();
        assert!(d.take_output().unwrap().is_err(), "{lanes} lanes");
    }
}
