//! The SentencePiece tokenizer of a GGUF file (`tokenizer.ggml.model = "llama"`), as llama.cpp
//! runs it, so that a prompt gives the same token ids here and there.
//!
//! llama.cpp's SPM tokenizer (src/llama-vocab.cpp, `llm_tokenizer_spm_session`): the text is cut
//! at special tokens first; each remaining fragment has its spaces replaced by U+2581 and is split
//! into characters; adjacent pieces are merged, highest vocabulary score first (ties: leftmost),
//! while their concatenation is a vocabulary entry; a character outside the vocabulary becomes its
//! UTF-8 bytes' `<0xXX>` tokens. No crate implements
//! this exact procedure from GGUF metadata (the `tokenizers` crate wants a tokenizer.json and runs
//! a different algorithm for these vocabularies), hence this file.

use crate::gguf::GgufFile;
use crate::LlmError;
use candle_core::quantized::gguf_file::Value;
use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashMap};

/// A token id.
pub type TokenId = u32;

/// U+2581, SentencePiece's visible space.
const SPACE: &str = "\u{2581}";

/// The most tokens a vocabulary may have.
const MAX_VOCAB: usize = 1 << 22;

/// GGUF `tokenizer.ggml.token_type` values (llama.cpp's `llama_token_type`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenKind {
    Normal,
    Unknown,
    Control,
    UserDefined,
    Unused,
    Byte,
}

impl TokenKind {
    fn from_gguf(v: i64) -> Option<Self> {
        Some(match v {
            1 => Self::Normal,
            2 => Self::Unknown,
            3 => Self::Control,
            4 => Self::UserDefined,
            5 => Self::Unused,
            6 => Self::Byte,
            _ => return None,
        })
    }
}

/// A SentencePiece vocabulary with llama.cpp's encoding and decoding.
pub struct Tokenizer {
    pieces: Vec<String>,
    scores: Vec<f32>,
    kinds: Vec<TokenKind>,
    ids: HashMap<String, TokenId>,
    bytes: [Option<TokenId>; 256],
    /// Control, user-defined and unknown tokens, longest text first (llama.cpp's order).
    specials: Vec<TokenId>,
    bos: TokenId,
    eos: TokenId,
    unknown: Option<TokenId>,
    add_bos: bool,
    add_space_prefix: bool,
    max_piece_bytes: usize,
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer")
            .field("vocabulary", &self.pieces.len())
            .field("bos", &self.bos)
            .field("eos", &self.eos)
            .finish()
    }
}

impl Tokenizer {
    /// Reads the vocabulary from a GGUF file's `tokenizer.ggml.*` metadata.
    pub fn from_gguf(file: &GgufFile<'_>) -> Result<Self, LlmError> {
        let model = file.string("tokenizer.ggml.model")?;
        if model != "llama" {
            return Err(LlmError::Tokenizer(format!(
                "tokenizer.ggml.model {:?} is not supported (this engine reads SentencePiece, \"llama\")",
                crate::gguf::shorten(model)
            )));
        }
        let pieces = file.array("tokenizer.ggml.tokens", |v| match v {
            Value::String(s) => Some(s.clone()),
            _ => None,
        })?;
        let n = pieces.len();
        if n == 0 || n > MAX_VOCAB {
            return Err(LlmError::Tokenizer(format!(
                "{n} tokens (1..={MAX_VOCAB} accepted)"
            )));
        }
        let scores = file.array("tokenizer.ggml.scores", |v| match *v {
            Value::F32(s) if s.is_finite() => Some(s),
            _ => None,
        })?;
        let kinds = file.array("tokenizer.ggml.token_type", |v| match *v {
            Value::I32(t) => TokenKind::from_gguf(t.into()),
            Value::U32(t) => TokenKind::from_gguf(t.into()),
            _ => None,
        })?;
        if scores.len() != n || kinds.len() != n {
            return Err(LlmError::Tokenizer(format!(
                "{n} tokens but {} scores and {} token types",
                scores.len(),
                kinds.len()
            )));
        }
        let id =
            |key: &str| -> Result<TokenId, LlmError> { Ok(file.count(key, 0..=n - 1)? as TokenId) };
        let bos = id("tokenizer.ggml.bos_token_id")?;
        let eos = id("tokenizer.ggml.eos_token_id")?;
        let unknown = if file.has("tokenizer.ggml.unknown_token_id") {
            Some(id("tokenizer.ggml.unknown_token_id")?)
        } else {
            None
        };
        let flag_or = |key: &str, default: bool| {
            if file.has(key) {
                file.flag(key)
            } else {
                Ok(default)
            }
        };
        // llama.cpp's defaults for SPM vocabularies.
        let add_bos = flag_or("tokenizer.ggml.add_bos_token", true)?;
        let add_space_prefix = flag_or("tokenizer.ggml.add_space_prefix", true)?;
        Ok(Self::new(
            pieces,
            scores,
            kinds,
            Specials {
                bos,
                eos,
                unknown,
                add_bos,
                add_space_prefix,
            },
        ))
    }

    fn new(
        pieces: Vec<String>,
        scores: Vec<f32>,
        kinds: Vec<TokenKind>,
        specials: Specials,
    ) -> Self {
        let mut ids = HashMap::with_capacity(pieces.len());
        for (i, p) in pieces.iter().enumerate() {
            // A duplicated piece maps to its last id, as in llama.cpp's `token_to_id`.
            ids.insert(p.clone(), i as TokenId);
        }
        let mut bytes = [None; 256];
        for (b, slot) in bytes.iter_mut().enumerate() {
            *slot = ids.get(&format!("<0x{b:02X}>")).copied();
        }
        let mut special_ids: Vec<TokenId> = (0..pieces.len() as TokenId)
            .filter(|&i| {
                matches!(
                    kinds[i as usize],
                    TokenKind::Control | TokenKind::UserDefined | TokenKind::Unknown
                ) && !pieces[i as usize].is_empty()
            })
            .collect();
        // Longest first; llama.cpp's sort is not stable, ties keep id order here.
        special_ids.sort_by_key(|&i| std::cmp::Reverse(pieces[i as usize].len()));
        let max_piece_bytes = pieces.iter().map(String::len).max().unwrap_or(1).max(1);
        Self {
            max_piece_bytes,
            pieces,
            scores,
            kinds,
            ids,
            bytes,
            specials: special_ids,
            bos: specials.bos,
            eos: specials.eos,
            unknown: specials.unknown,
            add_bos: specials.add_bos,
            add_space_prefix: specials.add_space_prefix,
        }
    }

    /// How many tokens the vocabulary has.
    pub fn vocabulary_size(&self) -> usize {
        self.pieces.len()
    }

    /// The beginning-of-sequence token.
    pub fn bos(&self) -> TokenId {
        self.bos
    }

    /// The end-of-sequence token.
    pub fn eos(&self) -> TokenId {
        self.eos
    }

    /// Whether the model expects a beginning-of-sequence token first.
    pub fn adds_bos(&self) -> bool {
        self.add_bos
    }

    /// The longest text a token stands for, in bytes.
    pub fn max_piece_bytes(&self) -> usize {
        self.max_piece_bytes
    }

    /// The id of a token by its exact text (e.g. `<end_of_turn>`).
    pub fn token(&self, text: &str) -> Option<TokenId> {
        self.ids.get(text).copied()
    }

    /// Encodes `text`. With `parse_special`, the text of control tokens (`<start_of_turn>`)
    /// becomes those tokens; without, only user-defined tokens do (llama.cpp's
    /// `tokenize(..., parse_special)`). No BOS is added: chat templates write their own.
    pub fn encode(&self, text: &str, parse_special: bool) -> Vec<TokenId> {
        let mut out = Vec::new();
        let mut previous_special = true;
        for fragment in self.partition(text, parse_special) {
            match fragment {
                Fragment::Token(id) => {
                    out.push(id);
                    previous_special = true;
                }
                Fragment::Text(raw) => {
                    let mut escaped = String::with_capacity(raw.len() + 4);
                    if self.add_space_prefix && previous_special {
                        escaped.push_str(SPACE);
                    }
                    escaped.push_str(&raw.replace(' ', SPACE));
                    self.encode_fragment(&escaped, &mut out);
                    previous_special = false;
                }
            }
        }
        out
    }

    /// Cuts `text` at the special tokens, longest first (llama.cpp's `tokenizer_st_partition`).
    fn partition<'t>(&self, text: &'t str, parse_special: bool) -> Vec<Fragment<'t>> {
        let mut fragments = vec![Fragment::Text(text)];
        for &id in &self.specials {
            let kind = self.kinds[id as usize];
            if !parse_special && matches!(kind, TokenKind::Control | TokenKind::Unknown) {
                continue;
            }
            let needle = self.pieces[id as usize].as_str();
            let mut next = Vec::with_capacity(fragments.len());
            for fragment in fragments {
                let Fragment::Text(mut rest) = fragment else {
                    next.push(fragment);
                    continue;
                };
                while let Some(at) = rest.find(needle) {
                    if at > 0 {
                        next.push(Fragment::Text(&rest[..at]));
                    }
                    next.push(Fragment::Token(id));
                    rest = &rest[at + needle.len()..];
                }
                if !rest.is_empty() {
                    next.push(Fragment::Text(rest));
                }
            }
            fragments = next;
        }
        fragments
    }

    /// SentencePiece BPE over one fragment (spaces already escaped).
    fn encode_fragment(&self, text: &str, out: &mut Vec<TokenId>) {
        // One symbol per character: its byte range, in a doubly linked list of live symbols.
        let mut symbols: Vec<Symbol> = text
            .char_indices()
            .map(|(start, c)| Symbol {
                start,
                len: c.len_utf8(),
                prev: None,
                next: None,
            })
            .collect();
        let count = symbols.len();
        for (i, s) in symbols.iter_mut().enumerate() {
            s.prev = i.checked_sub(1);
            s.next = (i + 1 < count).then_some(i + 1);
        }
        let mut queue = BinaryHeap::new();
        let candidate = |left: Option<usize>, right: Option<usize>, symbols: &[Symbol]| {
            let (left, right) = (left?, right?);
            let start = symbols[left].start;
            let len = symbols[left].len + symbols[right].len;
            let id = *self.ids.get(&text[start..start + len])?;
            Some(Bigram {
                score: self.scores[id as usize],
                left,
                right,
                len,
            })
        };
        queue.extend((1..count).filter_map(|i| candidate(Some(i - 1), Some(i), &symbols)));
        while let Some(b) = queue.pop() {
            let (l, r) = (&symbols[b.left], &symbols[b.right]);
            if l.len == 0 || r.len == 0 || l.len + r.len != b.len {
                continue; // stale: one side merged since
            }
            let right_next = r.next;
            symbols[b.left].len = b.len;
            symbols[b.right].len = 0;
            symbols[b.left].next = right_next;
            if let Some(n) = right_next {
                symbols[n].prev = Some(b.left);
            }
            let prev = symbols[b.left].prev;
            queue.extend(candidate(prev, Some(b.left), &symbols));
            queue.extend(candidate(Some(b.left), right_next, &symbols));
        }
        // Every merge made a vocabulary entry, so a final symbol is a token or a single
        // character outside the vocabulary, which goes out as its bytes (llama.cpp's
        // `resegment`).
        let mut at = (count > 0).then_some(0);
        while let Some(i) = at {
            let s = &symbols[i];
            let piece = &text[s.start..s.start + s.len];
            if let Some(&id) = self.ids.get(piece) {
                out.push(id);
            } else {
                for b in piece.bytes() {
                    if let Some(id) = self.bytes[b as usize].or(self.unknown) {
                        out.push(id);
                    }
                }
            }
            at = s.next;
        }
    }

    /// Appends the bytes of `id` as text (llama.cpp's `token_to_piece`): spaces unescaped, byte
    /// tokens as their byte, control tokens only when `special`.
    pub fn decode_into(&self, id: TokenId, special: bool, out: &mut Vec<u8>) {
        let Some(piece) = self.pieces.get(id as usize) else {
            return;
        };
        match self.kinds[id as usize] {
            TokenKind::Normal => out.extend_from_slice(piece.replace(SPACE, " ").as_bytes()),
            TokenKind::UserDefined => out.extend_from_slice(piece.as_bytes()),
            TokenKind::Control | TokenKind::Unknown if special => {
                out.extend_from_slice(piece.as_bytes())
            }
            TokenKind::Byte => {
                // `<0xXX>`: the byte is in the name (no search over the byte table per token).
                if let Some(b) = piece
                    .strip_prefix("<0x")
                    .and_then(|h| h.strip_suffix('>'))
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                {
                    out.push(b);
                }
            }
            _ => {}
        }
    }

    /// The text of `ids` (lossy where a multi-byte character is cut).
    pub fn decode(&self, ids: &[TokenId]) -> String {
        let mut bytes = Vec::new();
        for &id in ids {
            self.decode_into(id, false, &mut bytes);
        }
        String::from_utf8_lossy(&bytes).into_owned()
    }
}

struct Specials {
    bos: TokenId,
    eos: TokenId,
    unknown: Option<TokenId>,
    add_bos: bool,
    add_space_prefix: bool,
}

enum Fragment<'t> {
    Text(&'t str),
    Token(TokenId),
}

#[derive(Clone, Copy)]
struct Symbol {
    start: usize,
    len: usize,
    prev: Option<usize>,
    next: Option<usize>,
}

/// A candidate merge; the heap pops the highest score, then the leftmost.
struct Bigram {
    score: f32,
    left: usize,
    right: usize,
    len: usize,
}

impl PartialEq for Bigram {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Bigram {}
impl PartialOrd for Bigram {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Bigram {
    fn cmp(&self, other: &Self) -> Ordering {
        self.score
            .total_cmp(&other.score)
            .then_with(|| other.left.cmp(&self.left))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vocab(entries: &[(&str, f32, TokenKind)]) -> Tokenizer {
        let mut pieces: Vec<String> = entries.iter().map(|e| e.0.to_string()).collect();
        let mut scores: Vec<f32> = entries.iter().map(|e| e.1).collect();
        let mut kinds: Vec<TokenKind> = entries.iter().map(|e| e.2).collect();
        for b in 0..=255u8 {
            pieces.push(format!("<0x{b:02X}>"));
            scores.push(0.0);
            kinds.push(TokenKind::Byte);
        }
        Tokenizer::new(
            pieces,
            scores,
            kinds,
            Specials {
                bos: 0,
                eos: 1,
                unknown: None,
                add_bos: true,
                add_space_prefix: false,
            },
        )
    }

    #[test]
    fn merges_by_score_and_falls_back_to_bytes() {
        use TokenKind::*;
        let t = vocab(&[
            ("<bos>", 0.0, Control),
            ("<eos>", 0.0, Control),
            ("a", -1.0, Normal),
            ("b", -1.0, Normal),
            ("c", -1.0, Normal),
            ("ab", -5.0, Normal),
            ("bc", -2.0, Normal),
            ("abc", -3.0, Normal),
            ("\u{2581}", -1.0, Normal),
            ("<turn>", 0.0, Control),
        ]);
        // "bc" scores higher than "ab", so abc = a + bc, then "abc" merges.
        assert_eq!(t.encode("abc", false), vec![7]);
        // "ab" alone: merged.
        assert_eq!(t.encode("ab", false), vec![5]);
        // A space becomes U+2581; an unknown character its UTF-8 bytes.
        let e_acute = "é".as_bytes();
        assert_eq!(
            t.encode("a é", false),
            vec![2, 8, 10 + e_acute[0] as TokenId, 10 + e_acute[1] as TokenId]
        );
        // Control tokens only with parse_special.
        assert_eq!(t.encode("a<turn>b", true), vec![2, 9, 3]);
        assert_ne!(t.encode("a<turn>b", false), vec![2, 9, 3]);
        assert_eq!(t.decode(&[2, 8, 3, 9]), "a b");
        // Byte tokens decode to their bytes, which join into the character.
        assert_eq!(t.decode(&t.encode("a é", false)), "a é");
        let mut raw = Vec::new();
        t.decode_into(9, true, &mut raw);
        assert_eq!(raw, b"<turn>");
    }

    #[test]
    fn a_merge_not_in_the_vocabulary_is_taken_apart() {
        use TokenKind::*;
        // "xy" merges; "xyz" is not an entry, so "z" stays apart.
        let t = vocab(&[
            ("<bos>", 0.0, Control),
            ("<eos>", 0.0, Control),
            ("x", -1.0, Normal),
            ("y", -1.0, Normal),
            ("xy", -1.0, Normal),
            ("z", -1.0, Normal),
        ]);
        assert_eq!(t.encode("xyz", false), vec![4, 5]);
        assert_eq!(t.encode("", false), Vec::<TokenId>::new());
    }
}
