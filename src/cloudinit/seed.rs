//! The NoCloud seed disk: a small FAT image labelled `CIDATA` holding the three documents.
//!
//! Written with the pure-Rust `fatfs` crate (no mkfs or mtools at run time) into a temporary
//! file beside the target, synced, then renamed into place, so a VM never sees half a seed.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use fatfs::{FatType, FileSystem, FormatVolumeOptions, FsOptions};
use sha2::{Digest, Sha256};

use super::{CloudInitError, Seed};

/// The volume label cloud-init looks for (it accepts `cidata` in either case).
pub const SEED_LABEL: &str = "CIDATA";

/// Smallest image size; FAT12 with room to spare for the documents.
const MIN_IMAGE_BYTES: u64 = 1024 * 1024;

const META_DATA: &str = "meta-data";
const USER_DATA: &str = "user-data";
const NETWORK_CONFIG: &str = "network-config";

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> CloudInitError + '_ {
    move |source| CloudInitError::SeedIo {
        path: path.to_owned(),
        source,
    }
}

/// Writes `seed` as a FAT image with label `CIDATA` at `path` (atomically replaced).
pub fn write_seed_image(path: &Path, seed: &Seed) -> Result<(), CloudInitError> {
    let tmp = temp_path(path);
    let result = write_image(&tmp, seed).and_then(|()| {
        std::fs::rename(&tmp, path).map_err(io_err(path))?;
        sync_parent(path)
    });
    if result.is_err() {
        // Best effort: the temporary file is ours and useless now.
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

fn temp_path(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.tmp-{}", std::process::id()))
}

fn sync_parent(path: &Path) -> Result<(), CloudInitError> {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io_err(dir)),
        _ => Ok(()),
    }
}

fn write_image(tmp: &Path, seed: &Seed) -> Result<(), CloudInitError> {
    let err = io_err(tmp);
    let payload = (seed.meta_data.len() + seed.user_data.len() + seed.network_config.len()) as u64;
    // Twice the payload rounded up to whole MiB leaves room for FAT overhead and clusters.
    let size = (payload * 2)
        .div_ceil(MIN_IMAGE_BYTES)
        .max(1)
        .saturating_mul(MIN_IMAGE_BYTES);
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(tmp)
        .map_err(io_err(tmp))?;
    let result = (|| {
        file.set_len(size)?;
        let mut label = [b' '; 11];
        label[..SEED_LABEL.len()].copy_from_slice(SEED_LABEL.as_bytes());
        let mut options = FormatVolumeOptions::new()
            .volume_label(label)
            .volume_id(volume_id(seed));
        if size <= 16 * MIN_IMAGE_BYTES {
            options = options.fat_type(FatType::Fat12);
        }
        fatfs::format_volume(&mut file, options)?;
        {
            let fs = FileSystem::new(&mut file, FsOptions::new())?;
            let root = fs.root_dir();
            for (name, text) in [
                (META_DATA, &seed.meta_data),
                (USER_DATA, &seed.user_data),
                (NETWORK_CONFIG, &seed.network_config),
            ] {
                let mut f = root.create_file(name)?;
                f.truncate()?;
                f.write_all(text.as_bytes())?;
                f.flush()?;
            }
            drop(root);
            fs.unmount()?;
        }
        file.sync_all()
    })();
    result.map_err(err)
}

/// A volume serial derived from the contents: the same seed gives the same image bytes
/// (apart from file times), a different seed a different serial.
fn volume_id(seed: &Seed) -> u32 {
    let mut h = Sha256::new();
    for part in [&seed.meta_data, &seed.user_data, &seed.network_config] {
        h.update((part.len() as u64).to_le_bytes());
        h.update(part.as_bytes());
    }
    let d = h.finalize();
    u32::from_le_bytes([d[0], d[1], d[2], d[3]])
}

/// Reads the three documents back from a seed image (for tests and diagnostics).
pub fn read_seed_image(path: &Path) -> Result<Seed, CloudInitError> {
    let mut file = File::open(path).map_err(io_err(path))?;
    let fs = FileSystem::new(&mut file, FsOptions::new()).map_err(io_err(path))?;
    let root = fs.root_dir();
    let read = |name: &'static str| -> Result<String, CloudInitError> {
        let mut f = root.open_file(name).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => CloudInitError::SeedMissing {
                path: path.to_owned(),
                file: name,
            },
            _ => io_err(path)(e),
        })?;
        let mut s = String::new();
        f.read_to_string(&mut s).map_err(io_err(path))?;
        Ok(s)
    };
    Ok(Seed {
        meta_data: read(META_DATA)?,
        user_data: read(USER_DATA)?,
        network_config: read(NETWORK_CONFIG)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Seed {
        Seed {
            meta_data: "instance-id: i-1\nlocal-hostname: alice\n".into(),
            user_data: "#cloud-config\nhostname: alice\n".into(),
            network_config: "version: 2\n".into(),
        }
    }

    #[test]
    fn round_trip_and_label() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("seed.img");
        let seed = sample();
        write_seed_image(&path, &seed).expect("write");
        assert_eq!(read_seed_image(&path).expect("read"), seed);

        let mut f = File::open(&path).expect("open");
        let fs = FileSystem::new(&mut f, FsOptions::new()).expect("fat");
        assert_eq!(fs.volume_label(), SEED_LABEL);
        assert_eq!(
            fs.read_volume_label_from_root_dir().expect("root label"),
            Some(SEED_LABEL.to_owned())
        );
        assert_eq!(fs.fat_type(), FatType::Fat12);
        drop(fs);
        assert_eq!(
            std::fs::metadata(&path).expect("stat").len(),
            MIN_IMAGE_BYTES
        );
        // Only the image is left: the temporary file was renamed.
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .expect("readdir")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("seed.img")]);
    }

    #[test]
    fn rewrite_replaces_and_big_payload_grows_image() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("seed.img");
        write_seed_image(&path, &sample()).expect("write");
        let mut big = sample();
        big.user_data = format!("#cloud-config\n# {}\n", "x".repeat(3 * 1024 * 1024));
        write_seed_image(&path, &big).expect("rewrite");
        assert_eq!(read_seed_image(&path).expect("read"), big);
        assert!(std::fs::metadata(&path).expect("stat").len() >= 6 * MIN_IMAGE_BYTES);
    }

    #[test]
    fn missing_directory_is_an_error_and_leaves_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("nope").join("seed.img");
        assert!(matches!(
            write_seed_image(&path, &sample()),
            Err(CloudInitError::SeedIo { .. })
        ));
        assert!(matches!(
            read_seed_image(&path),
            Err(CloudInitError::SeedIo { .. })
        ));
    }
}
