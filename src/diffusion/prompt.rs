//! Prompts as AUTOMATIC1111 reads them, so a prompt copied from Civitai means here what it
//! means there: attention weights (`(word)` ×1.1, `[word]` ÷1.1, `(word:1.3)`, nesting
//! multiplies, unclosed brackets apply to the end, `\(` `\)` `\[` `\]` literal), `BREAK` to
//! start a new chunk, and prompts of any length encoded in chunks of 75 tokens (each framed by
//! its own start and end token and padded), never truncated. The weights are applied to the
//! text encoder's output per token, and each chunk is then rescaled so its mean is unchanged
//! (A1111's default "Original" emphasis); see [`Chunk`] and `pipeline::encode_prompt`.
//!
//! Deviation from A1111, on purpose: a `BREAK` inside brackets still breaks (A1111 turns it
//! into the word "break" with a negative weight there, an accident of its parser).

/// One piece of a parsed prompt.
#[derive(Clone, Debug, PartialEq)]
pub enum Piece {
    /// Text and its attention weight.
    Text(String, f32),
    /// `BREAK`: the next text starts a new chunk.
    Break,
}

/// A token of the prompt body, with its weight.
type Weighted = (u32, f32);

/// Prompt tokens per chunk of Stable Diffusion's text encoders (77 with the start and end
/// tokens); a model with a shorter context (Atelier Mini: 32) has shorter chunks.
pub const CHUNK_TOKENS: usize = 75;

/// How far back a chunk looks for a comma to break at, as A1111 does by default.
const COMMA_BACKTRACK: usize = 20;

/// Splits a prompt into weighted pieces with A1111's rules (`parse_prompt_attention`).
pub fn parse_attention(prompt: &str) -> Vec<Piece> {
    // Entries are (text, weight); a BREAK is a `None` text, untouched by brackets.
    let mut out: Vec<(Option<String>, f32)> = Vec::new();
    let mut round: Vec<usize> = Vec::new();
    let mut square: Vec<usize> = Vec::new();
    let multiply = |out: &mut Vec<(Option<String>, f32)>, from: usize, by: f32| {
        for entry in &mut out[from..] {
            if entry.0.is_some() {
                entry.1 *= by;
            }
        }
    };
    let push_text = |out: &mut Vec<(Option<String>, f32)>, text: &str| {
        for (i, part) in split_break(text).into_iter().enumerate() {
            if i > 0 {
                out.push((None, -1.0));
            }
            if !part.is_empty() {
                out.push((Some(part), 1.0));
            }
        }
    };
    let chars: Vec<char> = prompt.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        match c {
            '\\' => {
                // `\(` `\)` `\[` `\]` `\\` are the character itself; a lone `\` is dropped.
                match chars.get(i + 1) {
                    Some(&next @ ('(' | ')' | '[' | ']' | '\\')) => {
                        out.push((Some(next.to_string()), 1.0));
                        i += 2;
                    }
                    _ => i += 1,
                }
                continue;
            }
            '(' => round.push(out.len()),
            '[' => square.push(out.len()),
            ')' if !round.is_empty() => {
                let from = round.pop().unwrap_or(0);
                multiply(&mut out, from, 1.1);
            }
            ']' if !square.is_empty() => {
                let from = square.pop().unwrap_or(0);
                multiply(&mut out, from, 1.0 / 1.1);
            }
            ':' if !round.is_empty() => {
                if let Some((weight, len)) = weight_then_paren(&chars[i..]) {
                    let from = round.pop().unwrap_or(0);
                    multiply(&mut out, from, weight);
                    i += len;
                    continue;
                }
                push_text(&mut out, ":");
            }
            _ => {
                // A run of ordinary characters (a stray closer or colon is ordinary too).
                let start = i;
                i += 1;
                while i < chars.len() && !matches!(chars[i], '\\' | '(' | ')' | '[' | ']' | ':') {
                    i += 1;
                }
                let text: String = chars[start..i].iter().collect();
                push_text(&mut out, &text);
                continue;
            }
        }
        i += 1;
    }
    for from in round.into_iter().rev() {
        multiply(&mut out, from, 1.1);
    }
    for from in square.into_iter().rev() {
        multiply(&mut out, from, 1.0 / 1.1);
    }
    // Merge neighbours of exactly the same weight, as A1111 does.
    let mut pieces: Vec<Piece> = Vec::new();
    for (text, weight) in out {
        match (text, pieces.last_mut()) {
            (None, _) => pieces.push(Piece::Break),
            (Some(t), Some(Piece::Text(prev, w))) if *w == weight => prev.push_str(&t),
            (Some(t), _) => pieces.push(Piece::Text(t, weight)),
        }
    }
    if pieces.is_empty() {
        pieces.push(Piece::Text(String::new(), 1.0));
    }
    pieces
}

/// `:1.3)` at the start of `chars` (spaces allowed around the number): the weight and how
/// many characters it takes. A malformed number is not a weight (the text stays literal).
fn weight_then_paren(chars: &[char]) -> Option<(f32, usize)> {
    let mut i = 1;
    while chars.get(i).is_some_and(|c| c.is_whitespace()) {
        i += 1;
    }
    let start = i;
    while chars
        .get(i)
        .is_some_and(|c| c.is_ascii_digit() || matches!(c, '.' | '+' | '-'))
    {
        i += 1;
    }
    let number: String = chars[start..i].iter().collect();
    while chars.get(i).is_some_and(|c| c.is_whitespace()) {
        i += 1;
    }
    if chars.get(i) != Some(&')') {
        return None;
    }
    let weight: f32 = number.parse().ok().filter(|w: &f32| w.is_finite())?;
    Some((weight, i + 1))
}

/// Splits on the whole word `BREAK` (and the whitespace around it).
fn split_break(text: &str) -> Vec<String> {
    let mut parts = Vec::new();
    let mut rest = text;
    loop {
        let found = rest.match_indices("BREAK").find(|(at, _)| {
            let before = rest[..*at].chars().next_back();
            let after = rest[at + 5..].chars().next();
            !before.is_some_and(is_word_char) && !after.is_some_and(is_word_char)
        });
        match found {
            Some((at, _)) => {
                parts.push(rest[..at].trim_end().to_owned());
                rest = rest[at + 5..].trim_start();
            }
            None => {
                parts.push(rest.to_owned());
                return parts;
            }
        }
    }
}

fn is_word_char(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// One encoder pass: `framing.body + 2` ids (start, body, end, padding) and a weight per id.
#[derive(Clone, Debug, PartialEq)]
pub struct Chunk {
    pub ids: Vec<u32>,
    pub weights: Vec<f32>,
}

/// The special tokens a chunk is framed with.
#[derive(Clone, Copy, Debug)]
pub struct Framing {
    pub bos: u32,
    pub eos: u32,
    pub pad: u32,
    /// Prompt tokens per chunk: the encoder's context less the start and end tokens.
    pub body: usize,
}

impl Chunk {
    fn framed(body: &[Weighted], framing: Framing) -> Self {
        let mut ids = Vec::with_capacity(framing.body + 2);
        let mut weights = Vec::with_capacity(framing.body + 2);
        ids.push(framing.bos);
        weights.push(1.0);
        for &(id, w) in body {
            ids.push(id);
            weights.push(w);
        }
        ids.push(framing.eos);
        weights.push(1.0);
        ids.resize(framing.body + 2, framing.pad);
        weights.resize(framing.body + 2, 1.0);
        Self { ids, weights }
    }

    /// The chunk of an empty prompt (what a shorter prompt is padded with).
    pub fn empty(framing: Framing) -> Self {
        Self::framed(&[], framing)
    }

    /// Whether any weight is not 1 (then emphasis applies).
    pub fn is_weighted(&self) -> bool {
        self.weights.iter().any(|&w| w != 1.0)
    }
}

/// Tokenizes the pieces (each on its own, so a bracket is a word boundary) and lays them out in
/// chunks of `framing.body` tokens: a full chunk breaks at its last comma when that is at most 20
/// tokens back, as A1111 does; `BREAK` closes a chunk. At least one chunk.
pub fn chunks(
    pieces: &[Piece],
    framing: Framing,
    tokenize: &mut dyn FnMut(&str) -> Result<Vec<u32>, String>,
    comma: Option<u32>,
) -> Result<Vec<Chunk>, String> {
    let mut out = Vec::new();
    let mut current: Vec<Weighted> = Vec::new();
    let mut last_comma: Option<usize> = None;
    let close =
        |out: &mut Vec<Chunk>, current: &mut Vec<Weighted>, last_comma: &mut Option<usize>| {
            out.push(Chunk::framed(current, framing));
            current.clear();
            *last_comma = None;
        };
    for piece in pieces {
        let (text, weight) = match piece {
            Piece::Break => {
                close(&mut out, &mut current, &mut last_comma);
                continue;
            }
            Piece::Text(text, weight) => (text, *weight),
        };
        if !weight.is_finite() {
            return Err(format!(
                "an attention weight in the prompt is out of range (near “{}”)",
                text.chars().take(40).collect::<String>()
            ));
        }
        for id in tokenize(text)? {
            if current.len() == framing.body {
                let near = |&p: &usize| Some(id) != comma && framing.body - p <= COMMA_BACKTRACK;
                match last_comma.filter(near) {
                    // Move what follows the comma to the next chunk.
                    Some(p) => {
                        let moved = current.split_off(p + 1);
                        close(&mut out, &mut current, &mut last_comma);
                        current = moved;
                    }
                    None => close(&mut out, &mut current, &mut last_comma),
                }
            }
            if Some(id) == comma {
                last_comma = Some(current.len());
            }
            current.push((id, weight));
        }
    }
    if !current.is_empty() || out.is_empty() {
        close(&mut out, &mut current, &mut last_comma);
    }
    Ok(out)
}

/// What the prompt box shows: prompt tokens and the room the chunks give
/// (`83 / 150`: two chunks in use).
pub fn token_count(chunks: &[Chunk], framing: Framing) -> (usize, usize) {
    let used: usize = chunks
        .iter()
        .map(|c| {
            c.ids[1..]
                .iter()
                .position(|&id| id == framing.eos)
                .unwrap_or(framing.body)
        })
        .sum();
    (used, chunks.len() * framing.body)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(pieces: &[Piece]) -> Vec<(String, f32)> {
        pieces
            .iter()
            .map(|p| match p {
                Piece::Text(t, w) => (t.clone(), *w),
                Piece::Break => ("BREAK".into(), -1.0),
            })
            .collect()
    }

    fn close(got: &[(String, f32)], want: &[(&str, f32)]) {
        assert_eq!(got.len(), want.len(), "{got:?} vs {want:?}");
        for ((gt, gw), (wt, ww)) in got.iter().zip(want) {
            assert_eq!(gt, wt, "{got:?}");
            assert!((gw - ww).abs() < 1e-4, "{gt}: {gw} vs {ww}");
        }
    }

    #[test]
    fn parses_like_a1111() {
        let cases: Vec<(&str, Vec<(&str, f32)>)> = vec![
            (
                "a (red:1.5) [cat]",
                vec![("a ", 1.0), ("red", 1.5), (" ", 1.0), ("cat", 1.0 / 1.1)],
            ),
            (
                "a (((house:1.3)) [on] a (hill:0.5), sun, (((sky))).",
                vec![
                    ("a ", 1.0),
                    ("house", 1.573),
                    (" ", 1.1),
                    ("on", 1.0),
                    (" a ", 1.1),
                    ("hill", 0.55),
                    (", sun, ", 1.1),
                    ("sky", 1.4641),
                    (".", 1.1),
                ],
            ),
            ("(unbalanced", vec![("unbalanced", 1.1)]),
            ("\\(literal\\]", vec![("(literal]", 1.0)]),
            ("a ((cat)", vec![("a ", 1.0), ("cat", 1.21)]),
            ("(a:1.2)(b:1.2)", vec![("ab", 1.2)]),
            ("a (cat:0.5:1)", vec![("a cat:0.5", 1.0)]),
            (
                "a cat BREAK a dog",
                vec![("a cat", 1.0), ("BREAK", -1.0), ("a dog", 1.0)],
            ),
            ("(cat) BREAKdog", vec![("cat", 1.1), (" BREAKdog", 1.0)]),
            ("C:\\path", vec![("C:path", 1.0)]),
            (
                "a (b:1.2.3) c",
                vec![("a ", 1.0), ("b:1.2.3", 1.1), (" c", 1.0)],
            ),
            ("", vec![("", 1.0)]),
            (
                "plain text, no brackets",
                vec![("plain text, no brackets", 1.0)],
            ),
            ("stray) closer]", vec![("stray) closer]", 1.0)]),
        ];
        for (prompt, want) in cases {
            close(&text(&parse_attention(prompt)), &want);
        }
    }

    #[test]
    fn break_inside_brackets_still_breaks() {
        close(
            &text(&parse_attention("(a BREAK b)")),
            &[("a", 1.1), ("BREAK", -1.0), ("b", 1.1)],
        );
    }

    const FRAME: Framing = Framing {
        bos: 1000,
        eos: 1001,
        pad: 1001,
        body: CHUNK_TOKENS,
    };

    /// One id per word; "," is 9.
    fn words(text: &str) -> Result<Vec<u32>, String> {
        Ok(text
            .replace(',', " , ")
            .split_whitespace()
            .map(|w| if w == "," { 9 } else { w.len() as u32 })
            .collect())
    }

    #[test]
    fn chunks_are_framed_padded_and_broken_at_a_near_comma() {
        let c = chunks(&parse_attention("aa (bbb:2)"), FRAME, &mut words, Some(9)).unwrap();
        assert_eq!(c.len(), 1);
        assert_eq!(&c[0].ids[..4], &[1000, 2, 3, 1001]);
        assert_eq!(c[0].ids.len(), 77);
        assert!(c[0].ids[4..].iter().all(|&id| id == 1001));
        assert_eq!(&c[0].weights[..4], &[1.0, 1.0, 2.0, 1.0]);
        assert_eq!(token_count(&c, FRAME), (2, 75));
        // 58 words, a comma, 30 words: all fits after backtracking at the comma.
        let long = format!("{}, {}", "a ".repeat(58), "bb ".repeat(30));
        let c = chunks(&parse_attention(&long), FRAME, &mut words, Some(9)).unwrap();
        assert_eq!(c.len(), 2);
        assert_eq!(token_count(&c, FRAME), (89, 150));
        assert_eq!(c[0].ids[59], 9, "the first chunk ends at the comma");
        assert_eq!(c[0].ids[60], 1001);
        // 50 words, a comma, 30 words: the comma is 25 back, too far: a hard break.
        let long = format!("{}, {}", "a ".repeat(50), "bb ".repeat(30));
        let c = chunks(&parse_attention(&long), FRAME, &mut words, Some(9)).unwrap();
        assert_eq!(token_count(&c, FRAME), (81, 150));
        assert_eq!(c[0].ids[76], 1001);
        assert_eq!(c[0].ids[75], 2);
        // BREAK makes a chunk per part; an empty prompt is one empty chunk.
        let c = chunks(&parse_attention("a BREAK bb"), FRAME, &mut words, Some(9)).unwrap();
        assert_eq!(c.len(), 2);
        let c = chunks(&parse_attention(""), FRAME, &mut words, Some(9)).unwrap();
        assert_eq!(c, vec![Chunk::empty(FRAME)]);
    }

    #[test]
    fn never_truncates() {
        let prompt = "word ".repeat(1000);
        let c = chunks(&parse_attention(&prompt), FRAME, &mut words, Some(9)).unwrap();
        assert_eq!(token_count(&c, FRAME).0, 1000);
        assert_eq!(c.len(), 1000usize.div_ceil(CHUNK_TOKENS));
    }
}
