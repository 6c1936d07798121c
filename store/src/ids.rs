//! Identifiers that must not be mixed up: content digests, layer chain ids, cache ids and
//! image references. Each is built only through a checking constructor.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

/// Why a string is not a valid identifier.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IdError {
    #[error("invalid digest {0:?}: expected sha256:<64 lowercase hex>")]
    Digest(String),
    #[error("invalid id {0:?}: expected 64 lowercase hex characters")]
    Hex(String),
    #[error("invalid reference {0:?}: {1}")]
    Reference(String, &'static str),
}

/// Serde for a 32-byte id: its display string in human-readable formats (JSON), the raw
/// bytes otherwise (the database).
macro_rules! bytes32_serde {
    ($ty:ident) => {
        impl Serialize for $ty {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                if s.is_human_readable() {
                    s.collect_str(self)
                } else {
                    self.0.serialize(s)
                }
            }
        }

        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                if d.is_human_readable() {
                    String::deserialize(d)?
                        .parse()
                        .map_err(serde::de::Error::custom)
                } else {
                    <[u8; 32]>::deserialize(d).map(Self)
                }
            }
        }
    };
}

/// A sha256 content digest, `sha256:<64 hex>`. JSON shows the string; the database stores
/// the 32 bytes.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Digest([u8; 32]);

bytes32_serde!(Digest);

impl Digest {
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }
    pub fn of(data: &[u8]) -> Self {
        Self(Sha256::digest(data).into())
    }
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
    /// The 64 lowercase hex characters, without the `sha256:` prefix.
    pub fn hex(&self) -> String {
        HexDigits(&self.0).to_string()
    }
    /// Parses 64 lowercase hex characters without the algorithm prefix.
    pub fn from_hex(s: &str) -> Result<Self, IdError> {
        parse_hex32(s)
            .map(Self)
            .ok_or_else(|| IdError::Hex(s.to_owned()))
    }
}

/// 32 bytes as 64 lowercase hex digits, formatted on the stack: ids are written for every row
/// of a listing and every metric label, where `hex::encode`'s `String` built a char at a time
/// was an eighth of the daemon's time answering `system df`.
struct HexDigits<'a>(&'a [u8; 32]);

impl fmt::Display for HexDigits<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        let mut out = [0u8; 64];
        for (pair, byte) in out.chunks_exact_mut(2).zip(self.0) {
            pair[0] = DIGITS[usize::from(byte >> 4)];
            pair[1] = DIGITS[usize::from(byte & 0xf)];
        }
        f.write_str(std::str::from_utf8(&out).map_err(|_| fmt::Error)?)
    }
}

fn parse_hex32(s: &str) -> Option<[u8; 32]> {
    if s.len() != 64
        || !s
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return None;
    }
    let mut out = [0u8; 32];
    hex::decode_to_slice(s, &mut out).ok()?;
    Some(out)
}

impl FromStr for Digest {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, IdError> {
        s.strip_prefix("sha256:")
            .and_then(parse_hex32)
            .map(Self)
            .ok_or_else(|| IdError::Digest(s.to_owned()))
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", HexDigits(&self.0))
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

macro_rules! digest_newtype {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        pub struct $name(pub Digest);

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(&self.0, f)
            }
        }
        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), self.0)
            }
        }
        impl FromStr for $name {
            type Err = IdError;
            fn from_str(s: &str) -> Result<Self, IdError> {
                s.parse().map(Self)
            }
        }
    };
}

digest_newtype!(
    /// sha256 of a layer's uncompressed tar stream.
    DiffId
);
digest_newtype!(
    /// Identity of a layer in its position: `ChainID(L0) = DiffID(L0)`,
    /// `ChainID(n) = sha256(ChainID(n-1) + " " + DiffID(n))`.
    ChainId
);
digest_newtype!(
    /// sha256 of an image's config JSON, as Docker computes image ids.
    ImageId
);

impl ChainId {
    /// The chain id of `diff` stacked on `parent`.
    pub fn extend(parent: Option<ChainId>, diff: DiffId) -> ChainId {
        match parent {
            None => ChainId(diff.0),
            Some(p) => ChainId(Digest::of(format!("{} {}", p.0, diff.0).as_bytes())),
        }
    }

    /// Chain ids of every prefix of `diffs`, bottom layer first.
    pub fn chain(diffs: &[DiffId]) -> Vec<ChainId> {
        let mut out = Vec::with_capacity(diffs.len());
        let mut parent = None;
        for d in diffs {
            let c = ChainId::extend(parent, *d);
            out.push(c);
            parent = Some(c);
        }
        out
    }
}

/// A random 64-hex identifier naming a directory under `overlay2/` (layers, containers).
/// JSON shows the hex; the database stores the 32 bytes.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CacheId([u8; 32]);

bytes32_serde!(CacheId);

impl CacheId {
    /// A fresh random id from the kernel's CSPRNG.
    pub fn random() -> Self {
        let mut b = [0u8; 32];
        // getrandom only fails when the kernel has no entropy source at all, which a Linux
        // host running overlayfs does not lack.
        getrandom::fill(&mut b).expect("getrandom(2) failed");
        Self(b)
    }
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }
    pub fn hex(&self) -> String {
        self.to_string()
    }
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl FromStr for CacheId {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, IdError> {
        parse_hex32(s)
            .map(Self)
            .ok_or_else(|| IdError::Hex(s.to_owned()))
    }
}

impl fmt::Display for CacheId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        HexDigits(&self.0).fmt(f)
    }
}

impl fmt::Debug for CacheId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CacheId({})", HexDigits(&self.0))
    }
}

/// `repository:tag`, normalised like Docker's familiar names (`ubuntu` means `ubuntu:latest`).
/// JSON shows `repo:tag`; the database stores the two strings.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ImageRef {
    repository: String,
    tag: String,
}

impl ImageRef {
    pub fn repository(&self) -> &str {
        &self.repository
    }
    pub fn tag(&self) -> &str {
        &self.tag
    }
}

impl FromStr for ImageRef {
    type Err = IdError;
    /// Docker's grammar, simplified to what a local store needs: path components of
    /// `[a-z0-9]+([._-][a-z0-9]+)*` separated by `/` (the first may be a registry host with a
    /// port), then an optional `:tag` of `[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`. Digests are not
    /// references here.
    fn from_str(s: &str) -> Result<Self, IdError> {
        let bad = |why| IdError::Reference(s.to_owned(), why);
        if s.is_empty() || s.len() > 255 {
            return Err(bad("must be 1 to 255 characters"));
        }
        if s.contains('@') {
            return Err(bad("digest references are not supported"));
        }
        let (repo, tag) = match s.rfind(':') {
            Some(i) if !s[i + 1..].contains('/') => (&s[..i], &s[i + 1..]),
            _ => (s, "latest"),
        };
        let tag_ok = !tag.is_empty()
            && tag.len() <= 128
            && tag
                .bytes()
                .next()
                .is_some_and(|b| b.is_ascii_alphanumeric() || b == b'_')
            && tag
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
        if !tag_ok {
            return Err(bad("tag must match [A-Za-z0-9_][A-Za-z0-9_.-]{0,127}"));
        }
        let mut components = repo.split('/').peekable();
        let mut first = true;
        while let Some(c) = components.next() {
            let is_host = first
                && components.peek().is_some()
                && (c.contains('.') || c.contains(':') || c == "localhost");
            first = false;
            if is_host {
                let (host, port) = c.split_once(':').unwrap_or((c, "0"));
                let ok = !port.is_empty()
                    && port.bytes().all(|b| b.is_ascii_digit())
                    && host.split('.').all(|label| {
                        !label.is_empty()
                            && !label.starts_with('-')
                            && label
                                .bytes()
                                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                    });
                if !ok {
                    return Err(bad("invalid registry host"));
                }
                continue;
            }
            if !valid_path_component(c) {
                return Err(bad(
                    "repository path components must be lowercase [a-z0-9] separated by '.', '_', '__' or '-'",
                ));
            }
        }
        Ok(Self {
            repository: repo.to_owned(),
            tag: tag.to_owned(),
        })
    }
}

fn valid_path_component(c: &str) -> bool {
    let b = c.as_bytes();
    if b.is_empty() || !b[0].is_ascii_alphanumeric() || !b[b.len() - 1].is_ascii_alphanumeric() {
        return false;
    }
    let mut run = 0usize;
    let mut prev_sep = 0u8;
    for &ch in b {
        if ch.is_ascii_lowercase() || ch.is_ascii_digit() {
            run = 0;
            continue;
        }
        if !matches!(ch, b'.' | b'_' | b'-') {
            return false;
        }
        run += 1;
        // Allowed separators: '.', '_', '__', or any run of '-'.
        let ok = match (run, ch) {
            (1, _) => true,
            (2, b'_') => prev_sep == b'_',
            (_, b'-') => prev_sep == b'-',
            _ => false,
        };
        if !ok {
            return false;
        }
        prev_sep = ch;
    }
    true
}

#[derive(Serialize, Deserialize)]
struct ImageRefParts {
    repository: String,
    tag: String,
}

impl Serialize for ImageRef {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            s.collect_str(self)
        } else {
            ImageRefParts {
                repository: self.repository.clone(),
                tag: self.tag.clone(),
            }
            .serialize(s)
        }
    }
}

impl<'de> Deserialize<'de> for ImageRef {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        if d.is_human_readable() {
            String::deserialize(d)?
                .parse()
                .map_err(serde::de::Error::custom)
        } else {
            let p = ImageRefParts::deserialize(d)?;
            Ok(Self {
                repository: p.repository,
                tag: p.tag,
            })
        }
    }
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.repository, self.tag)
    }
}

impl fmt::Debug for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ImageRef({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_id_matches_docker_definition() {
        let a: DiffId = "sha256:1111111111111111111111111111111111111111111111111111111111111111"
            .parse()
            .unwrap();
        let b: DiffId = "sha256:2222222222222222222222222222222222222222222222222222222222222222"
            .parse()
            .unwrap();
        let chain = ChainId::chain(&[a, b]);
        assert_eq!(chain[0].0, a.0);
        let expected = Digest::of(format!("{a} {b}").as_bytes());
        assert_eq!(chain[1].0, expected);
    }

    #[test]
    fn json_shows_ids_as_strings() {
        let d = Digest::of(b"x");
        assert_eq!(
            serde_json::to_string(&DiffId(d)).unwrap(),
            format!("\"{d}\"")
        );
        let back: DiffId = serde_json::from_str(&format!("\"{d}\"")).unwrap();
        assert_eq!(back.0, d);
        let r: ImageRef = "a/b:c".parse().unwrap();
        assert_eq!(serde_json::to_string(&r).unwrap(), "\"a/b:c\"");
    }

    #[test]
    fn ids_print_as_lowercase_hex_and_parse_back() {
        let empty = Digest::of(b"");
        assert_eq!(
            empty.to_string(),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(empty.hex(), empty.to_string()["sha256:".len()..]);
        let id = CacheId::from_bytes(std::array::from_fn(|i| {
            [0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef][i % 8]
        }));
        assert_eq!(id.hex(), "0123456789abcdef".repeat(4));
        assert_eq!(format!("{id:?}"), format!("CacheId({})", id.hex()));
        assert_eq!(id.hex().parse::<CacheId>().unwrap(), id);
        assert_eq!(empty.to_string().parse::<Digest>().unwrap(), empty);
    }

    #[test]
    fn digest_rejects_uppercase_short_and_unknown_algorithms() {
        for bad in [
            "sha256:ABCD",
            "sha512:00",
            "00",
            &format!("sha256:{}", "A".repeat(64)),
        ] {
            assert!(bad.parse::<Digest>().is_err(), "{bad}");
        }
    }

    #[test]
    fn references_normalise_and_validate_like_docker() {
        let cases = [
            ("ubuntu", Some("ubuntu:latest")),
            ("ubuntu:22.04", Some("ubuntu:22.04")),
            ("localhost:5000/a/b:v1", Some("localhost:5000/a/b:v1")),
            ("registry.example/x__y:t", Some("registry.example/x__y:t")),
            ("Ubuntu", None),
            ("a..b", None),
            ("a:", None),
            ("a:-x", None),
            ("../etc", None),
            ("a/", None),
            ("a@sha256:00", None),
            ("", None),
        ];
        for (input, want) in cases {
            let got = input.parse::<ImageRef>().ok().map(|r| r.to_string());
            assert_eq!(got.as_deref(), want, "{input}");
        }
    }
}
