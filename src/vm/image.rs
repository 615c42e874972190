//! Guest images: an image directory holds `manifest.json` plus the files it names.
//!
//! [`Image::load`] resolves the directory (it is usually the `default` symlink) to its real path
//! first, so a VM built on it keeps pointing at the same files when the symlink later moves to
//! a newer build. Validation is cheap (names, presence, sizes); hashing every file is a separate,
//! explicit [`Image::verify_hashes`] because it reads the whole disk.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::argv::Boot;
use super::VmError;

/// How the guest is started.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BootMode {
    /// Direct kernel boot: QEMU loads `kernel`/`initrd` with `cmdline` (fastest).
    Kernel,
    /// The firmware boots the disk's own boot loader.
    Firmware,
}

/// One file of the image as recorded at build time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEntry {
    pub sha256: String,
    pub size: u64,
}

/// One installed package, for reports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Package {
    pub name: String,
    pub version: String,
}

/// The contents of `manifest.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageManifest {
    pub name: String,
    pub boot: BootMode,
    pub disk: String,
    #[serde(default)]
    pub kernel: Option<String>,
    #[serde(default)]
    pub initrd: Option<String>,
    #[serde(default)]
    pub cmdline: Option<String>,
    #[serde(default)]
    pub has_nginx: bool,
    #[serde(default)]
    pub files: BTreeMap<String, FileEntry>,
    #[serde(default)]
    pub packages: Vec<Package>,
    #[serde(default)]
    pub built_at: Option<String>,
    #[serde(default)]
    pub recipe_hash: Option<String>,
}

/// Why an image directory's manifest, or the files it names, cannot be used. Carried by
/// [`VmError::ManifestInvalid`], which adds the directory.
///
/// [`ImageManifest::validate`] reports the first four (rules on the manifest alone);
/// [`Image::load`] adds [`Unreadable`](Self::Unreadable) and
/// [`SizeMismatch`](Self::SizeMismatch), [`Image::verify_hashes`] adds
/// [`HashMismatch`](Self::HashMismatch).
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("manifest has an empty name")]
    EmptyName,
    /// `what` is the manifest field (`disk`, `kernel`, `initrd`, `files entry`).
    #[error("{what} {name:?} is not a plain file name")]
    NotPlainName { what: &'static str, name: String },
    #[error("boot is \"kernel\" but no kernel is named")]
    NoKernel,
    #[error("boot is \"kernel\" but the cmdline is empty")]
    EmptyCmdline,
    #[error("{name}")]
    Unreadable {
        name: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{name} has {actual} bytes, the manifest says {expected}")]
    SizeMismatch {
        name: String,
        actual: u64,
        expected: u64,
    },
    #[error("{name}: sha256 {actual} does not match the manifest")]
    HashMismatch { name: String, actual: String },
}

impl ImageManifest {
    /// Checks the manifest on its own (no file access): file names are plain names inside the
    /// image directory and kernel boot names a kernel and a command line.
    pub fn validate(&self) -> Result<(), ManifestError> {
        if self.name.is_empty() {
            return Err(ManifestError::EmptyName);
        }
        check_name("disk", &self.disk)?;
        for (what, v) in [("kernel", &self.kernel), ("initrd", &self.initrd)] {
            if let Some(n) = v {
                check_name(what, n)?;
            }
        }
        if self.boot == BootMode::Kernel {
            if self.kernel.is_none() {
                return Err(ManifestError::NoKernel);
            }
            match &self.cmdline {
                Some(c) if !c.trim().is_empty() => {}
                _ => return Err(ManifestError::EmptyCmdline),
            }
        }
        for name in self.files.keys() {
            check_name("files entry", name)?;
        }
        Ok(())
    }
}

/// Accepts only a plain file name: no separators, not `.`/`..`, not empty.
fn check_name(what: &'static str, name: &str) -> Result<(), ManifestError> {
    if name.is_empty() || name == "." || name == ".." || name.contains('/') || name.contains('\0') {
        return Err(ManifestError::NotPlainName {
            what,
            name: name.to_owned(),
        });
    }
    Ok(())
}

/// A loaded, validated image at its real (symlink-free) directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Image {
    pub dir: PathBuf,
    pub manifest: ImageManifest,
}

impl Image {
    /// Reads and validates `dir/manifest.json`; every named file must exist and, when the
    /// manifest records a size, have that size.
    pub fn load(dir: &Path) -> Result<Image, VmError> {
        let real = std::fs::canonicalize(dir).map_err(|source| VmError::ManifestRead {
            path: dir.to_path_buf(),
            source,
        })?;
        let path = real.join("manifest.json");
        let text = std::fs::read(&path).map_err(|source| VmError::ManifestRead {
            path: path.clone(),
            source,
        })?;
        let manifest: ImageManifest = serde_json::from_slice(&text)
            .map_err(|source| VmError::ManifestParse { path, source })?;
        let invalid = |source: ManifestError| VmError::ManifestInvalid {
            dir: real.clone(),
            source,
        };
        manifest.validate().map_err(invalid)?;
        let mut names = vec![manifest.disk.as_str()];
        names.extend(manifest.kernel.as_deref());
        names.extend(manifest.initrd.as_deref());
        for name in names {
            let meta = std::fs::metadata(real.join(name)).map_err(|source| {
                invalid(ManifestError::Unreadable {
                    name: name.to_owned(),
                    source,
                })
            })?;
            if let Some(entry) = manifest.files.get(name) {
                if entry.size != meta.len() {
                    return Err(invalid(ManifestError::SizeMismatch {
                        name: name.to_owned(),
                        actual: meta.len(),
                        expected: entry.size,
                    }));
                }
            }
        }
        Ok(Image {
            dir: real,
            manifest,
        })
    }

    /// The base disk (qcow2) that overlays are backed by.
    pub fn disk_path(&self) -> PathBuf {
        self.dir.join(&self.manifest.disk)
    }

    /// The boot part of a [`super::VmSpec`] for this image.
    pub fn boot(&self) -> Boot {
        match self.manifest.boot {
            BootMode::Firmware => Boot::Firmware,
            BootMode::Kernel => Boot::Kernel {
                kernel: self
                    .dir
                    .join(self.manifest.kernel.as_deref().unwrap_or("vmlinuz")),
                initrd: self.manifest.initrd.as_ref().map(|i| self.dir.join(i)),
                cmdline: self.manifest.cmdline.clone().unwrap_or_default(),
            },
        }
    }

    /// Hashes every file listed under `files` and compares with the manifest. Reads the whole
    /// disk image, so call it once per image, not per VM.
    pub fn verify_hashes(&self) -> Result<(), VmError> {
        for (name, entry) in &self.manifest.files {
            let path = self.dir.join(name);
            let mut f = std::fs::File::open(&path).map_err(|source| VmError::Io {
                what: "opening",
                path: path.clone(),
                source,
            })?;
            let mut hasher = Sha256::new();
            let mut buf = vec![0u8; 1 << 20];
            loop {
                let n = f.read(&mut buf).map_err(|source| VmError::Io {
                    what: "reading",
                    path: path.clone(),
                    source,
                })?;
                if n == 0 {
                    break;
                }
                hasher.update(&buf[..n]);
            }
            let got = hex::encode(hasher.finalize());
            if !got.eq_ignore_ascii_case(&entry.sha256) {
                return Err(VmError::ManifestInvalid {
                    dir: self.dir.clone(),
                    source: ManifestError::HashMismatch {
                        name: name.clone(),
                        actual: got,
                    },
                });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Why [`manifest`] rejected a document: it does not parse, or it breaks a rule.
    #[derive(Debug, thiserror::Error)]
    enum TestManifestError {
        #[error("parsing")]
        Parse(#[from] serde_json::Error),
        #[error("validating")]
        Invalid(#[from] ManifestError),
    }

    fn manifest(json: &str) -> Result<ImageManifest, TestManifestError> {
        let m: ImageManifest = serde_json::from_str(json)?;
        m.validate()?;
        Ok(m)
    }

    const KERNEL: &str = r#"{"name":"img","boot":"kernel","disk":"disk.qcow2","kernel":"vmlinuz",
        "initrd":"initrd.img","cmdline":"root=/dev/vda console=ttyS0","has_nginx":true,
        "files":{"disk.qcow2":{"sha256":"00","size":3}},"packages":[{"name":"nginx","version":"1"}],
        "built_at":"2024-01-01T00:00:00Z","recipe_hash":"abc"}"#;

    #[test]
    fn parses_kernel_manifest() {
        let m = manifest(KERNEL).expect("valid");
        assert_eq!(m.boot, BootMode::Kernel);
        assert_eq!(m.kernel.as_deref(), Some("vmlinuz"));
        assert!(m.has_nginx);
        assert_eq!(m.files["disk.qcow2"].size, 3);
    }

    #[test]
    fn validation_table() {
        let cases: &[(&str, Result<(), &str>)] = &[
            (r#"{"name":"a","boot":"firmware","disk":"d.qcow2"}"#, Ok(())),
            (
                r#"{"name":"a","boot":"kernel","disk":"d.qcow2","cmdline":"x"}"#,
                Err("boot is \"kernel\" but no kernel is named"),
            ),
            (
                r#"{"name":"a","boot":"kernel","disk":"d","kernel":"k","cmdline":"  "}"#,
                Err("boot is \"kernel\" but the cmdline is empty"),
            ),
            (
                r#"{"name":"a","boot":"firmware","disk":"../etc/shadow"}"#,
                Err("disk \"../etc/shadow\" is not a plain file name"),
            ),
            (
                r#"{"name":"a","boot":"firmware","disk":"d","kernel":".."}"#,
                Err("kernel \"..\" is not a plain file name"),
            ),
            (
                r#"{"name":"","boot":"firmware","disk":"d"}"#,
                Err("manifest has an empty name"),
            ),
        ];
        for (json, want) in cases {
            let m: ImageManifest = serde_json::from_str(json).expect("parses");
            let got = m.validate().map_err(|e| e.to_string());
            assert_eq!(got, want.map_err(String::from), "{json}");
        }
    }

    #[test]
    fn unknown_boot_mode_is_a_parse_error() {
        let err = manifest(r#"{"name":"a","boot":"pxe","disk":"d"}"#).expect_err("pxe");
        assert!(matches!(err, TestManifestError::Parse(_)), "{err:?}");
    }

    #[test]
    fn rules_have_their_own_variants() {
        let m: ImageManifest = serde_json::from_str(
            r#"{"name":"a","boot":"firmware","disk":"d","files":{"x/y":{"sha256":"00","size":1}}}"#,
        )
        .expect("parses");
        let err = m.validate().expect_err("files entry with a slash");
        assert!(
            matches!(&err, ManifestError::NotPlainName { what: "files entry", name } if name == "x/y"),
            "{err:?}"
        );
        assert_eq!(
            err.to_string(),
            "files entry \"x/y\" is not a plain file name"
        );
    }

    #[test]
    fn load_checks_files_and_resolves_symlinks() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let real = tmp.path().join("build-1");
        std::fs::create_dir(&real).expect("mkdir");
        std::fs::write(real.join("manifest.json"), KERNEL).expect("write");
        // Missing files are reported.
        let canonical = std::fs::canonicalize(&real).expect("canonical");
        let err = Image::load(&real).expect_err("disk missing");
        assert!(
            matches!(
                &err,
                VmError::ManifestInvalid {
                    source: ManifestError::Unreadable { name, .. },
                    ..
                } if name == "disk.qcow2"
            ),
            "{err:?}"
        );
        let prefix = format!("image {}: disk.qcow2: ", canonical.display());
        let chain = crate::error_chain(&err);
        assert!(chain.starts_with(&prefix), "{chain}");
        std::fs::write(real.join("disk.qcow2"), b"abc").expect("write");
        std::fs::write(real.join("vmlinuz"), b"k").expect("write");
        std::fs::write(real.join("initrd.img"), b"i").expect("write");
        let link = tmp.path().join("default");
        std::os::unix::fs::symlink(&real, &link).expect("symlink");
        let img = Image::load(&link).expect("loads");
        let real = std::fs::canonicalize(&real).expect("canonical");
        assert_eq!(img.dir, real);
        assert_eq!(img.disk_path(), real.join("disk.qcow2"));
        assert_eq!(
            img.boot(),
            Boot::Kernel {
                kernel: real.join("vmlinuz"),
                initrd: Some(real.join("initrd.img")),
                cmdline: "root=/dev/vda console=ttyS0".into(),
            }
        );
        // A size mismatch is caught.
        std::fs::write(real.join("disk.qcow2"), b"abcd").expect("write");
        let err = Image::load(&link).expect_err("size mismatch");
        assert_eq!(
            crate::error_chain(&err),
            format!(
                "image {}: disk.qcow2 has 4 bytes, the manifest says 3",
                real.display()
            )
        );
        // The hash check reads the files.
        std::fs::write(real.join("disk.qcow2"), b"abc").expect("write");
        let err = Image::load(&link)
            .expect("loads")
            .verify_hashes()
            .expect_err("hash mismatch");
        assert!(
            matches!(
                &err,
                VmError::ManifestInvalid {
                    source: ManifestError::HashMismatch { name, .. },
                    ..
                } if name == "disk.qcow2"
            ),
            "{err:?}"
        );
        assert!(
            crate::error_chain(&err).ends_with("disk.qcow2: sha256 ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad does not match the manifest"),
            "{err}"
        );
    }
}
