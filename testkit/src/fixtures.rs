//! Ready-made images for parity and sharing tests.

use crate::{ImageBuilder, LayerBuilder};

/// Tag of [`rich_image`].
pub const RICH_IMAGE_TAG: &str = "strata-test/rich:latest";
/// Tags of [`shared_base_images`].
pub const SHARED_IMAGE_TAGS: [&str; 2] =
    ["strata-test/shared-a:latest", "strata-test/shared-b:latest"];

/// Path of the file in [`rich_image`] that carries the xattr `user.test` = `"hello xattr"`.
pub const RICH_XATTR_PATH: &str = "etc/xattr-file";

/// Deterministic pseudo-random bytes (xorshift64*), so large files neither compress to nothing
/// nor change between runs.
pub fn pseudo_random_bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut state = seed | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        out.extend_from_slice(&state.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
    }
    out.truncate(len);
    out
}

/// A path longer than 255 bytes in total (each component below 255), ending in `file`.
pub fn rich_deep_path() -> String {
    let mut path = String::from("deep");
    for i in 0..4 {
        path.push('/');
        path.push_str(&i.to_string());
        path.push('-');
        path.push_str(&"d".repeat(60));
    }
    path.push_str("/file");
    path
}

/// A file name over 100 bytes (so it needs a GNU long name or PAX header).
pub fn rich_long_name() -> String {
    format!("usr/share/long-name-{}.txt", "x".repeat(100))
}

/// Three layers exercising what an importer must get right: whiteouts (of a file, a directory
/// and a hard link), an opaque directory, a directory replaced by a file and a file by a
/// directory, a symlink replaced by a file, hard links (same dir, across dirs, created in an
/// upper layer), symlinks (relative, absolute, dangling), a fifo, a character device,
/// setuid/setgid/sticky modes, several owners, unicode names, a name over 100 bytes, a path
/// over 255 bytes, an empty file, a 1 MiB file, the xattr `user.test` on
/// [`RICH_XATTR_PATH`], explicit mtimes, and an empty directory.
#[expect(
    clippy::too_many_lines,
    reason = "one fixture, read top to bottom layer by layer"
)]
pub fn rich_image() -> ImageBuilder {
    const T0: u64 = 1_600_000_000;
    const T1: u64 = 1_650_000_000;
    const T2: u64 = 1_690_000_000;

    let mut base = LayerBuilder::new();
    base.default_mtime(T0);
    base.dir("bin", 0o755)
        .file("bin/sh", b"#!/bin/true\n", 0o755)
        .symlink("bin/rel-link", "../usr/bin/tool")
        .dir("etc", 0o755)
        .file(
            "etc/passwd",
            b"root:x:0:0:root:/root:/bin/sh\nuser:x:1000:1000::/home/user:/bin/sh\n",
            0o644,
        )
        .file(
            "etc/group",
            b"root:x:0:\nmail:x:8:\ntty:x:5:\nusers:x:100:\nuser:x:1000:\n",
            0o644,
        )
        .file("etc/shadow", b"root:*:19000:0:99999:7:::\n", 0o640)
        .owner(0, 42)
        .file("etc/delete-me", b"deleted in layer 1\n", 0o644)
        .symlink("etc/abs-link", "/usr/bin/tool")
        .symlink("etc/dangling-link", "/nonexistent/target")
        .symlink("etc/becomes-file", "passwd")
        .dir("usr", 0o755)
        .dir("usr/bin", 0o755)
        .file("usr/bin/tool", b"tool binary\n", 0o755)
        .mtime(T0 + 1)
        .hardlink("usr/bin/tool-same-dir", "usr/bin/tool")
        .file("usr/bin/su", b"setuid\n", 0o4755)
        .file("usr/bin/wall", b"setgid\n", 0o2755)
        .owner(0, 5)
        .dir("usr/lib", 0o755)
        .hardlink("usr/lib/tool-other-dir", "usr/bin/tool")
        .char_dev("usr/lib/null-device", 1, 3)
        .dir("usr/share", 0o755)
        .dir("usr/share/doomed", 0o755)
        .file("usr/share/doomed/a", b"a", 0o644)
        .dir("usr/share/doomed/sub", 0o700)
        .file("usr/share/doomed/sub/b", b"b", 0o644)
        .dir("opt", 0o755)
        .dir("opt/old", 0o755)
        .file("opt/old/a", b"old a", 0o644)
        .dir("opt/old/sub", 0o755)
        .file("opt/old/sub/c", b"old c", 0o644)
        .dir("opt/dir-becomes-file", 0o755)
        .file("opt/dir-becomes-file/inner", b"inner", 0o644)
        .file("opt/file-becomes-dir", b"was a file", 0o644)
        .dir("var", 0o755)
        .dir("var/mail", 0o2775)
        .owner(0, 8)
        .fifo("var/fifo")
        .mode(0o640)
        .dir("tmp", 0o1777)
        .dir("home", 0o755)
        .dir("home/user", 0o750)
        .owner(1000, 1000)
        .file("home/user/.profile", b"export PS1='$ '\n", 0o644)
        .owner(1000, 1000)
        .dir("empty", 0o700)
        .mtime(T0 + 100);

    let mut middle = LayerBuilder::new();
    middle.default_mtime(T1);
    middle
        .dir("etc", 0o755)
        .whiteout("etc/delete-me")
        .file("etc/empty.conf", b"", 0o644)
        .file(RICH_XATTR_PATH, b"has an xattr\n", 0o644)
        .xattr("user.test", b"hello xattr")
        .dir("usr", 0o755)
        .dir("usr/share", 0o755)
        .whiteout("usr/share/doomed")
        .file(&rich_long_name(), b"long name\n", 0o644)
        .dir("usr/lib", 0o755)
        .file("usr/lib/big.bin", &pseudo_random_bytes(1, 1 << 20), 0o644)
        .dir("opt", 0o755)
        .dir("opt/old", 0o755)
        .mtime(T1 + 5)
        .opaque("opt/old")
        .file("opt/old/new", b"only this survives", 0o644)
        .file("opt/dir-becomes-file", b"now a file", 0o600)
        .dir("opt/file-becomes-dir", 0o751)
        .file("opt/file-becomes-dir/child", b"child", 0o644)
        .dir("home", 0o755)
        .dir("home/user", 0o750)
        .owner(1000, 1000)
        .file(
            "home/user/héllo wörld ✓.txt",
            "unicode ✓\n".as_bytes(),
            0o644,
        )
        .owner(1000, 1000)
        .dir("données", 0o755)
        .owner(65534, 65534)
        .file("données/日本語.txt", "日本語\n".as_bytes(), 0o644)
        .owner(65534, 65534)
        .file("données/removed-later", b"x", 0o644);
    let deep = rich_deep_path();
    let mut prefix = String::new();
    for part in deep.split('/').take(deep.split('/').count() - 1) {
        if !prefix.is_empty() {
            prefix.push('/');
        }
        prefix.push_str(part);
        middle.dir(&prefix, 0o755);
    }
    middle
        .file(&deep, b"deep file\n", 0o644)
        .owner(123_456, 654_321);

    let mut top = LayerBuilder::new();
    top.default_mtime(T2);
    top.dir("etc", 0o755)
        .file(
            "etc/passwd",
            b"root:x:0:0:root:/root:/bin/sh\nuser:x:1000:1000:changed:/home/user:/bin/sh\n",
            0o644,
        )
        .file("etc/becomes-file", b"was a symlink", 0o644)
        .dir("usr", 0o755)
        .dir("usr/bin", 0o755)
        .whiteout("usr/bin/tool-same-dir")
        .dir("var", 0o755)
        .file("var/h1", b"hard link made in the top layer", 0o644)
        .owner(1000, 100)
        .hardlink("var/h2", "var/h1")
        .dir("var/sticky", 0o1777)
        .dir("srv", 0o755)
        .dir("srv/shared", 0o2770)
        .owner(0, 100)
        .dir("données", 0o755)
        .owner(65534, 65534)
        .whiteout("données/removed-later");

    let mut image = ImageBuilder::new(
        vec![base.build(), middle.build(), top.build()],
        &[RICH_IMAGE_TAG],
    );
    image.env.push("STRATA_TEST=rich".into());
    image.entrypoint = Some(vec!["/bin/sh".into(), "-c".into()]);
    image.cmd = Some(vec!["echo hello".into()]);
    image.working_dir = "/home/user".into();
    image.user = "1000:1000".into();
    image.labels.insert("org.strata.test".into(), "rich".into());
    image
}

/// Two images sharing their first two layers (about 2 MiB between them) and differing in the
/// third, tagged [`SHARED_IMAGE_TAGS`].
pub fn shared_base_images() -> (ImageBuilder, ImageBuilder) {
    let mut l0 = LayerBuilder::new();
    l0.dir("usr", 0o755)
        .dir("usr/lib", 0o755)
        .file("usr/lib/base.bin", &pseudo_random_bytes(10, 1 << 20), 0o644)
        .dir("etc", 0o755)
        .file("etc/os-release", b"ID=strata-test\n", 0o644);
    let mut l1 = LayerBuilder::new();
    l1.dir("usr", 0o755).dir("usr/share", 0o755).file(
        "usr/share/common.bin",
        &pseudo_random_bytes(11, 1 << 20),
        0o644,
    );
    let (l0, l1) = (l0.build(), l1.build());
    let top = |name: &str, seed: u64| {
        let mut l = LayerBuilder::new();
        l.dir("app", 0o755).file(
            &format!("app/{name}"),
            &pseudo_random_bytes(seed, 64 * 1024),
            0o755,
        );
        l.build()
    };
    let a = ImageBuilder::new(
        vec![l0.clone(), l1.clone(), top("a", 12)],
        &[SHARED_IMAGE_TAGS[0]],
    );
    let b = ImageBuilder::new(vec![l0, l1, top("b", 13)], &[SHARED_IMAGE_TAGS[1]]);
    (a, b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::TreeSnapshot;

    #[test]
    fn rich_image_layers_parse_and_cover_the_hard_cases() {
        let image = rich_image();
        assert_eq!(image.layers.len(), 3);
        let middle = TreeSnapshot::from_tar(image.layers[1].as_slice()).expect("layer 1");
        assert!(rich_deep_path().len() > 255);
        assert!(middle.nodes.contains_key(&rich_deep_path()));
        assert!(middle.nodes.contains_key(&rich_long_name()));
        assert_eq!(middle.nodes["usr/lib/big.bin"].size, 1 << 20);
        assert_eq!(
            middle.nodes[RICH_XATTR_PATH].xattrs["user.test"],
            b"hello xattr"
        );
        assert!(middle.nodes.contains_key("opt/old/.wh..wh..opq"));
        let base = TreeSnapshot::from_tar(image.layers[0].as_slice()).expect("layer 0");
        assert_eq!(base.nodes["usr/bin/tool"].hardlinks.len(), 3);
    }

    #[test]
    fn shared_images_share_exactly_two_chain_ids() {
        let (a, b) = shared_base_images();
        let (ca, cb) = (a.chain_ids(), b.chain_ids());
        assert_eq!(ca[..2], cb[..2]);
        assert_ne!(ca[2], cb[2]);
    }
}
