//! Byte-faithful tokenization.
//!
//! A vocabulary maps every token id to the exact bytes it stands for, and
//! cuts any byte string (invalid UTF-8, NULs, literal special-token text
//! included) into tokens whose bytes concatenate back to the input. Decoding
//! is concatenation of [`Vocabulary::token_bytes`] (with one escape for
//! bytes that have no token of their own); it never goes through a text
//! decoder, so it cannot lose bytes.

/// A token vocabulary that can represent every byte string.
pub trait Vocabulary: Send + Sync {
    /// Number of token ids (the model's logit rows must be this many).
    fn vocab_size(&self) -> usize;

    /// The bytes token `id` stands for, or `None` for ids that never appear
    /// in coded data (special tokens, out-of-range ids).
    fn token_bytes(&self, id: u32) -> Option<&[u8]>;

    /// Appends tokens whose bytes concatenate to exactly `data`.
    fn tokenize(&self, data: &[u8], out: &mut Vec<u32>);

    /// The token every model context starts with.
    fn bos(&self) -> u32;

    /// For vocabularies that lack some single-byte tokens: the token that
    /// announces an escaped byte. The token after it stands for the byte
    /// [`Vocabulary::escaped_byte`] gives. `None`: every byte has a token.
    fn escape_token(&self) -> Option<u32> {
        None
    }

    /// The byte that token `id`, following [`Vocabulary::escape_token`],
    /// stands for; `None` if `id` cannot follow an escape.
    fn escaped_byte(&self, id: u32) -> Option<u8> {
        let _ = id;
        None
    }
}

/// The 256-token vocabulary `id == byte`, plus one start token (id 256).
/// Used by tests and by models that work on raw bytes.
#[derive(Debug, Clone)]
pub struct ByteVocab {
    bytes: Vec<[u8; 1]>,
}

impl Default for ByteVocab {
    fn default() -> Self {
        ByteVocab {
            bytes: (0..=255u8).map(|b| [b]).collect(),
        }
    }
}

impl Vocabulary for ByteVocab {
    fn vocab_size(&self) -> usize {
        257
    }

    fn token_bytes(&self, id: u32) -> Option<&[u8]> {
        self.bytes.get(id as usize).map(|b| &b[..])
    }

    fn tokenize(&self, data: &[u8], out: &mut Vec<u32>) {
        out.extend(data.iter().map(|&b| u32::from(b)));
    }

    fn bos(&self) -> u32 {
        256
    }
}
