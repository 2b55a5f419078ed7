//! Writes that never leave a half-written file: the bytes go to `<name>.tmp` beside the target, are
//! synced, and replace the target by a rename. A crash leaves the old file or the new one, plus at
//! worst a stale `.tmp`.

use std::io::Write;
use std::path::{Path, PathBuf};

/// The temporary file a write of `path` goes through (`<path>.tmp`).
pub fn tmp_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".tmp");
    PathBuf::from(name)
}

/// Writes `bytes` to `path` atomically.
pub fn write(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = tmp_path(path);
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_the_file_and_leaves_no_tmp() {
        let dir = std::env::temp_dir().join(format!("groupwise-atomic-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("a.json");
        write(&path, b"one").unwrap();
        write(&path, b"two").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"two");
        assert!(!tmp_path(&path).exists());
        // A write into a missing directory fails and leaves nothing behind.
        assert!(write(&dir.join("missing/b.json"), b"x").is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
