//! RFC 2047 encoded words (`=?charset?B|Q?text?=`) in header values:
//! decoded into text, any charset the Encoding Standard knows; a word that
//! does not decode stays as written. White space between two adjacent
//! encoded words is dropped, as the RFC says.

/// `value` with its encoded words decoded.
pub fn decode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    let mut rest = value;
    // White space seen since the last encoded word, held until we know
    // whether another encoded word follows it.
    let mut gap = String::new();
    let mut after_word = false;
    while !rest.is_empty() {
        if let Some(start) = rest.find("=?") {
            let (before, from) = rest.split_at(start);
            if let Some((decoded, len)) = word(from) {
                if !(after_word && before.chars().all(char::is_whitespace)) {
                    out.push_str(&gap);
                    out.push_str(before);
                }
                gap.clear();
                out.push_str(&decoded);
                rest = &from[len..];
                after_word = true;
                continue;
            }
            // Not an encoded word: keep "=?" as text and go on after it.
            out.push_str(&gap);
            gap.clear();
            out.push_str(before);
            out.push_str("=?");
            rest = &from[2..];
            after_word = false;
            continue;
        }
        out.push_str(&gap);
        out.push_str(rest);
        break;
    }
    out
}

/// The encoded word at the start of `s`: its text and its length.
fn word(s: &str) -> Option<(String, usize)> {
    let inner = s.strip_prefix("=?")?;
    let (written, after) = inner.split_once('?')?;
    let (encoding, after) = after.split_once('?')?;
    let end = after.find("?=")?;
    let text = &after[..end];
    if text.contains(char::is_whitespace) || written.is_empty() || written.contains(char::is_whitespace) {
        return None;
    }
    let len = 2 + written.len() + 1 + encoding.len() + 1 + end + 2;
    // RFC 2231's language suffix: `charset*lang`.
    let charset = written.split('*').next().unwrap_or(written);
    let bytes = match encoding {
        "B" | "b" => {
            use base64::Engine as _;
            base64::engine::general_purpose::STANDARD
                .decode(text)
                .or_else(|_| base64::engine::general_purpose::STANDARD_NO_PAD.decode(text.trim_end_matches('=')))
                .ok()?
        }
        "Q" | "q" => q_decode(text)?,
        _ => return None,
    };
    let encoding = encoding_rs::Encoding::for_label(charset.as_bytes())?;
    let (decoded, _, _) = encoding.decode(&bytes);
    Some((decoded.into_owned(), len))
}

/// The Q encoding: `_` a space, `=XX` a byte.
fn q_decode(text: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len());
    let b = text.as_bytes();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'_' => out.push(b' '),
            b'=' => {
                let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 2;
            }
            c => out.push(c),
        }
        i += 1;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoded_words_decode_and_text_around_them_stays() {
        assert_eq!(decode("plain text"), "plain text");
        assert_eq!(decode("=?utf-8?q?caf=C3=A9?= au lait"), "café au lait");
        assert_eq!(decode("=?UTF-8?B?SGVsbG8=?= =?UTF-8?B?IFdvcmxk?="), "Hello World");
        assert_eq!(decode("Re: =?ISO-8859-1?Q?Gr=FC=DFe?="), "Re: Grüße");
        assert_eq!(decode("=?koi8-r?b?8NLJ18XU?="), "Привет");
        assert_eq!(decode("=?en*utf-8?q?x?="), "=?en*utf-8?q?x?=", "an unknown charset stays");
        assert_eq!(decode("a =?bogus"), "a =?bogus");
        assert_eq!(decode("=?utf-8?q?a?= b =?utf-8?q?c?="), "a b c");
        assert_eq!(decode("=?us-ascii*en?q?hi?="), "hi");
    }
}
