//! Images are built here, tagged by content, and an unchanged binary is never rebuilt.

use poolchaos::images;

fn image_id(reference: &str) -> String {
    let out = std::process::Command::new("docker")
        .args(["image", "inspect", "--format", "{{.Id}}", reference])
        .output()
        .expect("docker runs");
    assert!(out.status.success(), "{reference} exists");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Claim: a second `ensure` right after the first builds nothing: same tags, same image ids, and every image
/// reported as already there. This is how `poolchaos images` shows that nothing was rebuilt (it prints
/// `up to date` for each image).
#[test]
fn ensuring_images_twice_rebuilds_nothing() {
    let root = images::workspace_root();
    let first = images::ensure(&root).expect("images build");
    let ids: Vec<String> = first.iter().map(|i| image_id(&i.reference())).collect();
    let second = images::ensure(&root).expect("images are ensured again");
    assert_eq!(
        first.iter().map(|i| &i.tag).collect::<Vec<_>>(),
        second.iter().map(|i| &i.tag).collect::<Vec<_>>()
    );
    assert!(
        second.iter().all(|i| !i.built),
        "nothing rebuilt: {second:?}"
    );
    let again: Vec<String> = second.iter().map(|i| image_id(&i.reference())).collect();
    assert_eq!(ids, again, "the same images");
    for image in &second {
        assert_eq!(
            image.tag,
            images::content_tag(
                &std::fs::read(images::static_binary(&root, image.spec)).unwrap(),
                image.spec.dockerfile
            ),
            "the tag is the content hash of the binary and its Dockerfile"
        );
    }
}

/// Claim: both images are `FROM scratch` around a static binary: the binary runs with no loader at all.
#[test]
fn the_binaries_are_static() {
    let root = images::workspace_root();
    images::ensure(&root).expect("images build");
    for spec in images::ALL {
        let path = images::static_binary(&root, spec);
        let bytes = std::fs::read(&path).unwrap();
        assert!(
            !has_interpreter(&bytes),
            "{} asks for a dynamic loader",
            path.display()
        );
        let out = std::process::Command::new("docker")
            .args(["run", "--rm", "--label", "org.poolchaos.test=images"])
            .arg(format!("{}:latest", spec.repository))
            .arg(if spec.binary == "poolnode" {
                "version"
            } else {
                "--version"
            })
            .output()
            .expect("docker runs");
        assert!(
            out.status.success(),
            "{} runs in its scratch image: {}",
            spec.repository,
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// Whether an ELF64 file has a PT_INTERP program header, i.e. needs a dynamic loader (a static one has none).
fn has_interpreter(elf: &[u8]) -> bool {
    assert_eq!(&elf[..4], b"\x7fELF", "an ELF file");
    let u16_at = |o: usize| u16::from_le_bytes([elf[o], elf[o + 1]]) as usize;
    let phoff = u64::from_le_bytes(elf[0x20..0x28].try_into().unwrap()) as usize;
    let (phentsize, phnum) = (u16_at(0x36), u16_at(0x38));
    (0..phnum).any(|i| {
        let at = phoff + i * phentsize;
        u32::from_le_bytes(elf[at..at + 4].try_into().unwrap()) == 3
    })
}
