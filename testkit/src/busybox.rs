//! An image with a real userland (Debian's static busybox), for tests that run commands in
//! containers.

use crate::{ImageBuilder, LayerBuilder};

/// Where Debian's `busybox-static` installs the binary.
pub const BUSYBOX: &str = "/bin/busybox";

/// Applets linked in the busybox image's `/bin`.
pub const BUSYBOX_APPLETS: &[&str] = &[
    "sh", "cat", "echo", "ls", "rm", "mkdir", "touch", "id", "stat", "test", "true", "false",
    "sleep", "wc", "dd", "cp", "mv", "readlink",
];

/// A two-layer image: busybox with applet symlinks, `/etc/passwd` with `root` and `app`
/// (uid 1000), and a second layer with `/data/lower.txt`, `/data/delete-me` and
/// `/etc/motd` for copy-up tests. Tagged `tag`.
///
/// # Panics
/// If busybox is not installed (`apt-get install busybox-static`; `.ci/run` does).
pub fn busybox_image(tag: &str) -> ImageBuilder {
    let busybox = std::fs::read(BUSYBOX).unwrap_or_else(|e| {
        panic!("reading {BUSYBOX}: {e}: install busybox-static (`.ci/run` does)")
    });
    let mut base = LayerBuilder::new();
    base.dir("bin", 0o755).file("bin/busybox", &busybox, 0o755);
    for applet in BUSYBOX_APPLETS {
        base.symlink(&format!("bin/{applet}"), "busybox");
    }
    base.dir("etc", 0o755)
        .file(
            "etc/passwd",
            b"root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000:app:/home/app:/bin/sh\n",
            0o644,
        )
        .file(
            "etc/group",
            b"root:x:0:\napp:x:1000:\nstaff:x:50:app\n",
            0o644,
        )
        .dir("tmp", 0o1777)
        .dir("home", 0o755)
        .dir("home/app", 0o755)
        .owner(1000, 1000);
    let mut data = LayerBuilder::new();
    data.dir("data", 0o755)
        .file("data/lower.txt", b"from the image\n", 0o644)
        .file("data/delete-me", b"bye\n", 0o644)
        .dir("etc", 0o755)
        .file("etc/motd", b"welcome\n", 0o644);
    let mut image = ImageBuilder::new(vec![base.build(), data.build()], &[tag]);
    image.env = vec!["PATH=/bin".into(), "IMAGE_ENV=1".into()];
    image.cmd = Some(vec!["sh".into()]);
    image.working_dir = "/".into();
    image
}
