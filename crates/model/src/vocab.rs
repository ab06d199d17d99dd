//! Byte-faithful tokenization over a byte-level BPE `tokenizer.json`.
//!
//! Text tokenizers take `&str` and their byte-level decoders replace invalid
//! UTF-8, so neither direction is used as is:
//! - every token id maps to its exact bytes through the byte-level alphabet
//!   (GPT-2's byte ↔ character table), and decoding concatenates them;
//! - input is cut into valid UTF-8 runs and invalid bytes; runs go through
//!   the BPE tokenizer with special-token matching off (literal
//!   `<|endoftext|>` is text), invalid bytes become the single-byte tokens.
//!   A run whose tokens do not reproduce it exactly (a normaliser at work)
//!   falls back to single-byte tokens. Bytes the vocabulary has no token
//!   for are sent as an escape token followed by a stand-in byte's token.

use std::collections::HashMap;
use std::path::Path;

use llmpack_codec::Vocabulary;

use crate::{Error, Result};

/// A byte-level BPE vocabulary loaded from `tokenizer.json`.
pub struct HfVocab {
    tokenizer: tokenizers::Tokenizer,
    /// Bytes of every ordinary token; empty for special tokens.
    bytes: Vec<Vec<u8>>,
    /// The token of each single byte, or `None` for bytes the vocabulary
    /// lacks (those are escaped).
    byte_token: [Option<u32>; 256],
    /// Escape token, and the byte each stand-in byte's token brings back.
    escape: Option<u32>,
    unescape: [Option<u8>; 256],
    /// Stand-in byte for each byte without a token.
    stand_in: [u8; 256],
    vocab_size: usize,
    bos: u32,
}

impl std::fmt::Debug for HfVocab {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HfVocab")
            .field("vocab_size", &self.vocab_size)
            .field("bos", &self.bos)
            .finish()
    }
}

/// GPT-2's table from bytes to the printable characters byte-level BPE uses.
fn byte_alphabet() -> [char; 256] {
    let mut table = ['\0'; 256];
    let mut n = 0u32;
    for b in 0..=255u8 {
        let printable = matches!(b, b'!'..=b'~' | 0xA1..=0xAC | 0xAE..=0xFF);
        table[b as usize] = if printable {
            char::from(b)
        } else {
            n += 1;
            char::from_u32(255 + n).expect("below the surrogate range")
        };
    }
    table
}

impl HfVocab {
    /// Loads `path`; `vocab_size` is the model's logit count and `bos` its
    /// start token.
    pub fn load(path: &Path, vocab_size: usize, bos: u32) -> Result<Self> {
        let bad = |why: String| Error::Tokenizer {
            path: path.to_path_buf(),
            why,
        };
        if !path.exists() {
            return Err(Error::Io {
                path: path.to_path_buf(),
                source: std::io::ErrorKind::NotFound.into(),
                hint: crate::MODEL_HINT,
            });
        }
        let mut tokenizer =
            tokenizers::Tokenizer::from_file(path).map_err(|e| bad(e.to_string()))?;
        tokenizer.set_encode_special_tokens(true);
        let alphabet = byte_alphabet();
        let char_byte: HashMap<char, u8> = (0..=255u8).map(|b| (alphabet[b as usize], b)).collect();
        let mut bytes = vec![Vec::new(); vocab_size];
        let special: std::collections::HashSet<u32> = tokenizer
            .get_added_tokens_decoder()
            .keys()
            .copied()
            .collect();
        for (text, id) in tokenizer.get_vocab(false) {
            let slot = bytes.get_mut(id as usize).ok_or_else(|| {
                bad(format!(
                    "token id {id} is outside the model's {vocab_size} logits"
                ))
            })?;
            if special.contains(&id) {
                continue;
            }
            let b: Option<Vec<u8>> = text.chars().map(|c| char_byte.get(&c).copied()).collect();
            if let Some(b) = b {
                *slot = b;
            }
        }
        let mut byte_token = [None; 256];
        for b in 0..=255u8 {
            let s = alphabet[b as usize].to_string();
            byte_token[b as usize] = tokenizer
                .token_to_id(&s)
                .filter(|id| bytes.get(*id as usize).is_some_and(|v| v == &[b]));
        }
        if bos as usize >= vocab_size {
            return Err(bad(format!("start token {bos} is outside the vocabulary")));
        }
        // Bytes without a token of their own (SmolLM2 lacks 21, e.g. 0xC0,
        // 0xFF) are sent as [escape, token of a stand-in byte]: the k-th
        // missing byte borrows the k-th byte that has a token.
        let missing: Vec<u8> = (0..=255u8)
            .filter(|b| byte_token[*b as usize].is_none())
            .collect();
        let present: Vec<u8> = (0..=255u8)
            .filter(|b| byte_token[*b as usize].is_some())
            .collect();
        let mut unescape = [None; 256];
        let mut stand_in = [0u8; 256];
        let escape = if missing.is_empty() {
            None
        } else {
            if present.len() < missing.len() {
                return Err(bad("fewer than half the bytes have tokens; LLMPack needs a byte-level BPE tokenizer".into()));
            }
            let mut specials: Vec<u32> = special
                .iter()
                .copied()
                .filter(|&id| id != bos && (id as usize) < vocab_size)
                .collect();
            specials.sort_unstable();
            let esc = *specials.first().ok_or_else(|| {
                bad("bytes without tokens and no spare special token to escape them".into())
            })?;
            for (&m, &p) in missing.iter().zip(&present) {
                stand_in[m as usize] = p;
                unescape[p as usize] = Some(m);
            }
            Some(esc)
        };
        Ok(HfVocab {
            tokenizer,
            bytes,
            byte_token,
            escape,
            unescape,
            stand_in,
            vocab_size,
            bos,
        })
    }

    fn tokenize_text(&self, text: &str, out: &mut Vec<u32>) {
        let start = out.len();
        if let Ok(enc) = self.tokenizer.encode_fast(text, false) {
            let ids = enc.get_ids();
            let mut ok = true;
            let mut at = 0usize;
            for &id in ids {
                match self.bytes.get(id as usize) {
                    Some(b) if !b.is_empty() && text.as_bytes()[at..].starts_with(b) => {
                        at += b.len()
                    }
                    _ => {
                        ok = false;
                        break;
                    }
                }
            }
            if ok && at == text.len() {
                out.extend_from_slice(ids);
                return;
            }
        }
        out.truncate(start);
        for b in text.bytes() {
            self.push_byte(b, out);
        }
    }

    /// Appends the token(s) of one byte.
    fn push_byte(&self, b: u8, out: &mut Vec<u32>) {
        match (self.byte_token[b as usize], self.escape) {
            (Some(t), _) => out.push(t),
            (None, Some(esc)) => {
                out.push(esc);
                let p = self.stand_in[b as usize];
                out.push(self.byte_token[p as usize].expect("stand-ins have tokens"));
            }
            (None, None) => unreachable!("escape exists whenever a byte lacks a token"),
        }
    }

    /// Whether `b` must be escaped rather than given to the BPE tokenizer.
    fn lacks_token(&self, b: u8) -> bool {
        self.byte_token[b as usize].is_none()
    }
}

impl Vocabulary for HfVocab {
    fn vocab_size(&self) -> usize {
        self.vocab_size
    }

    fn token_bytes(&self, id: u32) -> Option<&[u8]> {
        self.bytes
            .get(id as usize)
            .filter(|b| !b.is_empty())
            .map(Vec::as_slice)
    }

    fn tokenize(&self, data: &[u8], out: &mut Vec<u32>) {
        let mut rest = data;
        while !rest.is_empty() {
            let (valid, bad) = match std::str::from_utf8(rest) {
                Ok(_) => (rest.len(), 0),
                Err(e) => (
                    e.valid_up_to(),
                    e.error_len().unwrap_or(rest.len() - e.valid_up_to()),
                ),
            };
            // Valid text, cut again at bytes the vocabulary lacks (ASCII
            // control bytes only: the others are never valid UTF-8).
            let mut text = &rest[..valid];
            while !text.is_empty() {
                let cut = text
                    .iter()
                    .position(|&b| self.lacks_token(b))
                    .unwrap_or(text.len());
                if cut > 0 {
                    let s = std::str::from_utf8(&text[..cut]).expect("ASCII cut of valid UTF-8");
                    self.tokenize_text(s, out);
                }
                if cut < text.len() {
                    self.push_byte(text[cut], out);
                    text = &text[cut + 1..];
                } else {
                    text = &[];
                }
            }
            for &b in &rest[valid..valid + bad] {
                self.push_byte(b, out);
            }
            rest = &rest[valid + bad..];
        }
    }

    fn bos(&self) -> u32 {
        self.bos
    }

    fn escape_token(&self) -> Option<u32> {
        self.escape
    }

    fn escaped_byte(&self, id: u32) -> Option<u8> {
        let b = self.bytes.get(id as usize).filter(|v| v.len() == 1)?[0];
        self.unescape[b as usize]
    }
}
