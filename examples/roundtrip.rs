//! Compress and restore a buffer with a model directory, through the library
//! API: one encoder and one decoder lane, the ONNX predictor answering their
//! requests.
//!
//! ```text
//! cargo run --release -p llmpack-examples --example roundtrip -- [MODEL_DIR] [FILE]
//! ```
//! Defaults: `models/smollm2-135m` and a built-in paragraph.

use std::sync::Arc;

use anyhow::{Context, Result, bail};
use llmpack_codec::{StreamConfig, StreamDecoder, StreamEncoder, Vocabulary, drive};
use llmpack_model::{HfVocab, ModelDir, OnnxPredictor};

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let dir = match args.next() {
        Some(d) => d.into(),
        None => llmpack_model::find_in_project("models/smollm2-135m")
            .context("models/smollm2-135m not found; run scripts/setup.sh or pass MODEL_DIR")?,
    };
    let data = match args.next() {
        Some(f) => std::fs::read(&f).with_context(|| format!("reading {f}"))?,
        None => b"A tunnel must deliver every byte exactly. The model's next-token \
                  distribution drives a range coder; the receiver runs the same model \
                  on the same context and reads the tokens back out of the code word."
            .to_vec(),
    };

    let model = ModelDir::open(&dir)?;
    llmpack_model::init_runtime(None)?;
    let m = &model.manifest.model;
    let vocab: Arc<dyn Vocabulary> = Arc::new(HfVocab::load(
        &model.tokenizer_path(),
        m.vocab_size,
        m.bos_token_id,
    )?);
    let mut predictor = OnnxPredictor::load(&model, 2)?;
    let cfg = StreamConfig::default();

    // Sender side: one frame (frames can be up to 1 MiB; pack uses 16 KiB).
    let mut enc = StreamEncoder::new(1, cfg.clone(), vocab.clone(), b"");
    enc.push(data.clone());
    drive(&mut predictor, &mut [&mut enc], &mut |_| {})?;
    let frame = enc.take_frame().context("frame finished")?;
    println!(
        "{} bytes -> {} bytes ({} codec, {} tokens, {:.3} bits/byte incl. header)",
        data.len(),
        frame.wire_len(),
        frame.header.codec,
        frame.header.tokens,
        8.0 * frame.wire_len() as f64 / data.len() as f64
    );

    // Receiver side: same model, same config, its own context.
    let mut dec = StreamDecoder::new(2, &cfg, vocab, b"");
    dec.push(frame.header, frame.payload);
    drive(&mut predictor, &mut [&mut dec], &mut |_| {})?;
    let restored = dec.take_output().context("frame finished")??;
    if restored != data {
        bail!("round trip differs");
    }
    println!("restored byte-exact");
    Ok(())
}
