use super::*;

fn store(tag: &str) -> (ObjectStore, PathBuf) {
    let dir = std::env::temp_dir().join(format!("wisp-obj-{tag}-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    (
        ObjectStore::open(&dir.join("objects"), &dir.join("objects.db")).unwrap(),
        dir,
    )
}

fn put(s: &ObjectStore, ns: &Namespace, b: &str, k: &str, data: &[u8]) -> ObjectMeta {
    let mut w = s.writer().unwrap();
    w.write(data).unwrap();
    s.commit(
        ns,
        b,
        k,
        w.finish().unwrap(),
        "text/plain",
        &BTreeMap::new(),
    )
    .unwrap()
}

#[test]
fn objects_list_and_replace() {
    let (s, dir) = store("list");
    let ns = Namespace::new("default").unwrap();
    assert!(s.create_bucket(&ns, "photos").unwrap());
    assert!(!s.create_bucket(&ns, "photos").unwrap());
    assert!(check_bucket("Bad_Name").is_err());
    for bad in ["192.168.5.4", "a.-b", "a-.b", "a..b"] {
        assert!(check_bucket(bad).is_err(), "{bad}");
    }
    assert!(check_bucket("my.bucket-1").is_ok());
    let m = put(&s, &ns, "photos", "a.txt", b"hello");
    assert_eq!(m.etag, "\"5d41402abc4b2a76b9719d911017c592\"");
    for k in ["in/1.jpg", "in/2.jpg", "in/sub/3.jpg", "out/1.png", "z"] {
        put(&s, &ns, "photos", k, k.as_bytes());
    }
    let l = s.list(&ns, "photos", "", Some("/"), None, 1000).unwrap();
    let keys: Vec<_> = l.objects.iter().map(|m| m.key.as_str()).collect();
    assert_eq!(keys, ["a.txt", "z"]);
    assert_eq!(l.common_prefixes, ["in/", "out/"]);
    let l = s.list(&ns, "photos", "in/", Some("/"), None, 1000).unwrap();
    assert_eq!(l.objects.len(), 2);
    assert_eq!(l.common_prefixes, ["in/sub/"]);
    // Pages of 2.
    let mut all = Vec::new();
    let mut after = None;
    loop {
        let l = s
            .list(&ns, "photos", "", None, after.as_deref(), 2)
            .unwrap();
        all.extend(l.objects.into_iter().map(|m| m.key));
        match l.next_after {
            Some(a) => after = Some(a),
            None => break,
        }
    }
    assert_eq!(all.len(), 6);
    // Replacing keeps one blob.
    put(&s, &ns, "photos", "a.txt", b"bye");
    let (m, c) = s.open_read(&ns, "photos", "a.txt").unwrap();
    let Content::File(mut f) = c else {
        panic!("a committed blob is a file")
    };
    let mut got = String::new();
    io::Read::read_to_string(&mut f, &mut got).unwrap();
    assert_eq!((m.size, got.as_str()), (3, "bye"));
    let blobs: usize = fs::read_dir(dir.join("objects/blobs"))
        .unwrap()
        .flatten()
        .map(|d| fs::read_dir(d.path()).unwrap().count())
        .sum();
    assert_eq!(blobs, 6);
    assert!(matches!(
        s.delete_bucket(&ns, "photos"),
        Err(ObjectError::BucketNotEmpty(_))
    ));
    // Other namespaces see nothing.
    let other = Namespace::new("other").unwrap();
    assert!(matches!(
        s.head(&other, "photos", "a.txt"),
        Err(ObjectError::NoSuchBucket(_))
    ));
    let _ = fs::remove_dir_all(dir);
}

#[test]
fn small_objects_live_in_the_database() {
    let (s, dir) = store("inline");
    let ns = Namespace::new("default").unwrap();
    s.create_bucket(&ns, "small").unwrap();
    // A file-backed object replaced by a small one: its file goes.
    put(&s, &ns, "small", "k", b"from a file");
    let m = s
        .put_inline(
            &ns,
            "small",
            "k",
            b"tiny".to_vec(),
            "text/plain",
            &BTreeMap::new(),
        )
        .unwrap();
    assert_eq!(m.etag, format!("\"{}\"", hex::encode(Md5::digest(b"tiny"))));
    let (_, c) = s.open_read(&ns, "small", "k").unwrap();
    assert!(matches!(c, Content::Inline(ref b) if b == b"tiny"));
    let files: usize = fs::read_dir(dir.join("objects/blobs"))
        .unwrap()
        .flatten()
        .map(|d| fs::read_dir(d.path()).unwrap().count())
        .sum();
    assert_eq!(files, 0);
    assert_eq!(
        s.list(&ns, "small", "", None, None, 10)
            .unwrap()
            .objects
            .len(),
        1
    );
    assert!(matches!(
        s.put_inline(&ns, "nope", "k", vec![], "x", &BTreeMap::new()),
        Err(ObjectError::NoSuchBucket(_))
    ));
    // And back to a file.
    put(&s, &ns, "small", "k", b"a file again");
    assert!(matches!(
        s.open_read(&ns, "small", "k").unwrap().1,
        Content::File(_)
    ));
    assert_eq!(s.delete(&ns, "small", "k").unwrap().unwrap().size, 12);
    let _ = fs::remove_dir_all(dir);
}

#[test]
fn multipart_and_crash_leftovers() {
    let (s, dir) = store("mp");
    let ns = Namespace::new("default").unwrap();
    s.create_bucket(&ns, "big").unwrap();
    let id = s
        .create_upload(
            &ns,
            "big",
            "f.bin",
            "application/octet-stream",
            &BTreeMap::new(),
        )
        .unwrap();
    let up = s.upload(&ns, "big", "f.bin", &id).unwrap();
    let mut etags = Vec::new();
    // Every part but the last is at least MIN_PART_SIZE.
    for (n, data) in [
        (1u32, vec![1u8; MIN_PART_SIZE as usize]),
        (2, vec![2u8; 10]),
    ] {
        let mut w = s.writer().unwrap();
        w.write(&data).unwrap();
        etags.push((n, s.put_part(&up, n, w.finish().unwrap(), None).unwrap()));
    }
    let m = s
        .complete_upload(&up, &etags, &mut |_| {}, |_, _| Ok(()))
        .unwrap();
    assert_eq!(m.size, MIN_PART_SIZE + 10);
    assert!(m.etag.ends_with("-2\""), "{}", m.etag);
    assert!(matches!(
        s.upload(&ns, "big", "f.bin", &id),
        Err(ObjectError::NoSuchUpload(_))
    ));
    // A temp file and an unreferenced blob, as a crash leaves them.
    fs::write(dir.join("objects/tmp/partial"), b"half").unwrap();
    fs::create_dir_all(dir.join("objects/blobs/ff")).unwrap();
    fs::write(dir.join("objects/blobs/ff/ff00"), b"orphan").unwrap();
    drop(s);
    let s = ObjectStore::open(&dir.join("objects"), &dir.join("objects.db")).unwrap();
    assert!(!dir.join("objects/tmp/partial").exists());
    assert!(!dir.join("objects/blobs/ff/ff00").exists());
    assert_eq!(
        s.head(&ns, "big", "f.bin").unwrap().size,
        MIN_PART_SIZE + 10
    );
    let _ = fs::remove_dir_all(dir);
}
