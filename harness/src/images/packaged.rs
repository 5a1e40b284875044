//! Images of subjects the project did not write, made from packages installed on the host: the binaries, the
//! libraries they load at run time, every shared library in the `ldd` closure of each and the dynamic loader,
//! put `FROM scratch` at the paths they have on the host. Tagged by content like the workspace's images, so an
//! unchanged package and configuration reuse the image.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest, Sha256};

use super::{docker_build, image_exists, tempdir, ImageError};
use crate::subject::PackagedImage;

const DOCKERFILE: &str = "FROM scratch\nCOPY rootfs/ /\n";

/// Makes the image of `spec` unless one with the same content exists; returns its `repository:tag`.
pub fn ensure_packaged(spec: &PackagedImage) -> Result<String, ImageError> {
    let files = collect(spec)?;
    let mut hash = Sha256::new();
    for (inside, content) in &files {
        hash.update(inside.to_string_lossy().as_bytes());
        hash.update((content.len() as u64).to_le_bytes());
        hash.update(content);
    }
    for directory in &spec.directories {
        hash.update(b"dir:");
        hash.update(directory.to_string_lossy().as_bytes());
    }
    hash.update(DOCKERFILE.as_bytes());
    let reference = format!("{}:{}", spec.repository, hex::encode(&hash.finalize()[..8]));
    if image_exists(&reference)? {
        return Ok(reference);
    }
    eprintln!(
        "poolchaos: building image {reference} ({} files)",
        files.len()
    );
    let context = tempdir("packaged").map_err(ImageError::Context)?;
    let result = build(
        &context,
        &files,
        &spec.directories,
        &reference,
        &spec.repository,
    );
    let _ = std::fs::remove_dir_all(&context);
    result.map(|()| reference)
}

/// Every file of the image: path inside → content.
fn collect(spec: &PackagedImage) -> Result<BTreeMap<PathBuf, Vec<u8>>, ImageError> {
    let missing = |path: &Path, e: std::io::Error| ImageError::Build {
        reference: spec.repository.clone(),
        detail: format!(
            "read {} ({e}): install the Debian package{} {} (`apt-get install {}`)",
            path.display(),
            if spec.packages.len() == 1 { "" } else { "s" },
            spec.packages.join(", "),
            spec.packages.join(" ")
        ),
    };
    let mut files = BTreeMap::new();
    let mut add = |inside: &Path, from: &Path| -> Result<(), ImageError> {
        if !files.contains_key(inside) {
            let content = std::fs::read(from).map_err(|e| missing(from, e))?;
            files.insert(inside.to_path_buf(), content);
        }
        Ok(())
    };
    for object in spec.binaries.iter().chain(&spec.libraries) {
        add(object, object)?;
        for library in closure(object).map_err(|detail| ImageError::Build {
            reference: spec.repository.clone(),
            detail,
        })? {
            add(&library, &library)?;
        }
    }
    for file in &spec.host_files {
        add(file, file)?;
    }
    for (inside, local) in &spec.files {
        add(inside, local)?;
    }
    Ok(files)
}

/// The shared libraries `ldd` lists for `object`, the dynamic loader among them: the whole closure, as the
/// loader resolves it on this host.
fn closure(object: &Path) -> Result<Vec<PathBuf>, String> {
    let out = Command::new("ldd")
        .arg(object)
        .output()
        .map_err(|e| format!("run ldd (part of libc-bin) on {}: {e}", object.display()))?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        return Err(format!(
            "ldd {} failed: {}{}",
            object.display(),
            text.trim(),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    libraries_of(object, &text)
}

/// Parses `ldd` output: `name => /path (0x…)` and `/path (0x…)` lines; a `not found` is an error.
fn libraries_of(object: &Path, ldd: &str) -> Result<Vec<PathBuf>, String> {
    let mut libraries = Vec::new();
    for line in ldd.lines().map(str::trim) {
        if line.contains("not found") {
            return Err(format!(
                "{} needs a library that is not installed: {line}",
                object.display()
            ));
        }
        let path = match line.split_once("=>") {
            Some((_, rest)) => rest.trim(),
            None => line,
        };
        let path = path.split(" (").next().unwrap_or("").trim();
        if path.starts_with('/') {
            libraries.push(PathBuf::from(path));
        }
    }
    Ok(libraries)
}

fn build(
    context: &Path,
    files: &BTreeMap<PathBuf, Vec<u8>>,
    directories: &[PathBuf],
    reference: &str,
    repository: &str,
) -> Result<(), ImageError> {
    use std::os::unix::fs::PermissionsExt;
    let rootfs = context.join("rootfs");
    for directory in directories {
        let at = rootfs.join(directory.strip_prefix("/").unwrap_or(directory));
        std::fs::create_dir_all(at).map_err(ImageError::Context)?;
    }
    for (inside, content) in files {
        let at = rootfs.join(inside.strip_prefix("/").unwrap_or(inside));
        if let Some(dir) = at.parent() {
            std::fs::create_dir_all(dir).map_err(ImageError::Context)?;
        }
        std::fs::write(&at, content).map_err(ImageError::Context)?;
        std::fs::set_permissions(&at, std::fs::Permissions::from_mode(0o755))
            .map_err(ImageError::Context)?;
    }
    std::fs::write(context.join("Dockerfile"), DOCKERFILE).map_err(ImageError::Context)?;
    docker_build(context, reference, repository)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ldd_output_gives_every_library_and_the_loader() {
        let ldd = "\tlinux-vdso.so.1 (0x00007ffd)\n\
                   \tlibsrdb1.so.1 => /usr/lib/x86_64-linux-gnu/kamailio/libsrdb1.so.1 (0x00007f)\n\
                   \tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f)\n\
                   \t/lib64/ld-linux-x86-64.so.2 (0x00007f)\n";
        let libraries = libraries_of(Path::new("/usr/sbin/x"), ldd).unwrap();
        assert_eq!(
            libraries,
            vec![
                PathBuf::from("/usr/lib/x86_64-linux-gnu/kamailio/libsrdb1.so.1"),
                PathBuf::from("/lib/x86_64-linux-gnu/libc.so.6"),
                PathBuf::from("/lib64/ld-linux-x86-64.so.2"),
            ]
        );
        let e = libraries_of(Path::new("/usr/sbin/x"), "\tlibfoo.so.1 => not found\n").unwrap_err();
        assert!(e.contains("libfoo.so.1"), "{e}");
    }

    #[test]
    fn a_file_that_is_not_installed_names_the_package_to_install() {
        let spec = PackagedImage {
            repository: "poolchaos/none".into(),
            packages: vec!["no-such-package".into()],
            binaries: vec![PathBuf::from("/usr/sbin/no-such-binary-here")],
            libraries: vec![],
            host_files: vec![],
            files: BTreeMap::new(),
            directories: vec![],
        };
        let e = collect(&spec).unwrap_err().to_string();
        assert!(e.contains("apt-get install no-such-package"), "{e}");
    }
}
